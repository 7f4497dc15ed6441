/*
 * queue_local — see queue_local.h.
 *
 * The stored message is "Return-Path: <sender>" (RFC 5321 4.4: the final
 * delivery inserts it) and "Delivered-To: account", each with CRLF,
 * followed by the queued content. A Delivered-To: for the same account
 * already in the header means the message has come round in a loop: it is
 * bounced.
 *
 * SECURITY: header scanning is bounded by the header's end and by len.
 */
#include "queue/queue_local.h"
#include "auth/accounts.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "mime/mime_addr.h"
#include "mime/mime_meta.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Whether the address v[0..n) is account (normalised) in another spelling. */
static int
same_account(const char *v, size_t n, const char *account)
{
	char *addr = xstrndup(v, n);
	struct buf norm = BUF_INIT(0), err = BUF_INIT(0);
	int same = accounts_normalise(addr, 0, &norm, &err) == 0 && strcmp(norm.data, account) == 0;

	buf_free(&norm);
	buf_free(&err);
	free(addr);
	return same;
}

/*
 * Nonzero if the header of content has "Delivered-To: account" (in any
 * spelling). Each field is read as mime_addr finds the fields the
 * submission check reads: whole, folded onto continuation lines, with
 * white space before its colon (RFC 5322 3.2.2 and 4.5.8), as a peer may
 * have written it.
 */
static int
seen_delivered_to(const char *content, size_t len, const char *account)
{
	size_t alen = strlen(account), hlen = mime_addr_header_len(content, len), pos = 0;
	int seen = 0;
	struct buf v = BUF_INIT(0);

	while (!seen && mime_addr_field_next(content, hlen, &pos, "Delivered-To", &v) == 1) {
		const char *p = buf_str(&v);
		size_t vl = v.len;
		/* Dovecot's LMTP writes the address as a path: "<user@domain>". */
		if (vl >= 2 && p[0] == '<' && p[vl - 1] == '>')
			p++, vl -= 2;
		if (vl == alen && strncasecmp(p, account, alen) == 0)
			seen = 1;
		/* Written before local parts were kept in NFC (accounts.c). */
		else if (util_has_8bit(p, vl) && vl < 1024 && same_account(p, vl, account))
			seen = 1;
		buf_reset(&v);
	}
	buf_free(&v);
	return seen;
}

/* Whether account is a user now, read on this (worker) thread: 1, 0, or -1 with err set. */
static int
local_user_exists(const char *data_dir, const char *account, struct buf *err)
{
	struct account_user u = {0};
	struct accounts *a = accounts_open(data_dir, err);

	if (a == NULL)
		return -1;
	int r = accounts_user_get(a, account, &u);
	if (r < 0)
		buf_puts(err, "accounts database lookup failed");
	accounts_user_free(&u);
	accounts_close(&a);
	return r;
}

#define RETURN_PATH_FMT "Return-Path: <%s>\r\nDelivered-To: %s\r\n"

size_t
local_added_len(const char *return_path, const char *account)
{
	/* The format less its two %s. */
	return sizeof(RETURN_PATH_FMT) - 1 - 4 + (return_path ? strlen(return_path) : 0) +
	       strlen(account);
}

int
local_over_quota(const char *data_dir, const char *account, int64_t quota, uint64_t size,
		 uint64_t added)
{
	struct buf err = BUF_INIT(0);
	uint64_t bytes = 0, msgs = 0;

	if (quota <= 0)
		return 0;
	if (size > 0 && size + added > (uint64_t)quota)
		return 2;
	/* Size unknown (no SIZE=) is at least a byte: a mailbox exactly full takes nothing. */
	if (size == 0)
		size = 1;
	/*
	 * On a worker: a handle of the shared cache. A check makes nothing: an
	 * account that never had mail has no store, and uses no bytes.
	 */
	int gone = 0;
	struct store *st = store_pool_get_existing(data_dir, account, &gone, &err);
	buf_free(&err);
	if (st == NULL)
		return gone ? size + added > (uint64_t)quota : -1;
	int r = store_usage(st, &bytes, &msgs) < 0 ? -1 : bytes + size + added > (uint64_t)quota;
	store_pool_put(&st);
	return r;
}

/* it does not fit the quota: bounced if it never can, else deferred. */
static void
local_over(struct local_item *it, const char *account, size_t size, int64_t quota)
{
	if (size > (uint64_t)quota) {
		/* Bigger than the whole quota: no expunge makes room
		 * (RFC 3463 X.2.3, the per-mailbox size limit). */
		it->result = DELIVER_PERMFAIL;
		buf_printf(it->why,
			   "5.2.3 Message too big for the mailbox of %s: "
			   "%zu octets, its quota is %lld",
			   account, size, (long long)quota);
	} else {
		/* Temporary: the user may make room. */
		it->result = DELIVER_TEMPFAIL;
		buf_printf(it->why, "4.2.2 Mailbox full: %s is over its quota", account);
	}
}

void
local_deliver_many(const char *data_dir, const char *account, int64_t quota,
		   struct local_item *items, size_t n)
{
	struct buf err = BUF_INIT(0);
	struct store_add_item *adds = xcalloc(n ? n : 1, sizeof(*adds));
	struct buf *msgs = xcalloc(n ? n : 1, sizeof(*msgs));
	struct mime_meta *mms = xcalloc(n ? n : 1, sizeof(*mms));
	size_t *which = xcalloc(n ? n : 1, sizeof(*which));
	size_t nadd = 0;

	/*
	 * A handle from the shared pool: deliveries to an account come one
	 * batch at a time (the queue sees to that), so this is normally the
	 * warm handle the last batch gave back.
	 */
	int gone = 0;
	struct store *st = store_pool_get_existing(data_dir, account, &gone, &err);
	if (st == NULL && gone) {
		/*
		 * No store: the account's first delivery, or `surat user del`
		 * moved it aside after the queue looked the user up. A store is
		 * made only for a user that still is; else the mail would go
		 * into a mailbox nobody owns, that a user added later under
		 * the address would find. XXX the user may still go between
		 * this look and the store's making: a far narrower window.
		 */
		int u = local_user_exists(data_dir, account, &err);
		if (u == 0) {
			for (size_t i = 0; i < n; i++) {
				items[i].result = DELIVER_PERMFAIL;
				buf_puts(items[i].why, "5.1.1 No such user here");
			}
			goto out;
		}
		if (u == 1)
			st = store_pool_get(data_dir, account, &err);
	}
	if (st == NULL) {
		for (size_t i = 0; i < n; i++) {
			items[i].result = DELIVER_TEMPFAIL;
			buf_printf(items[i].why, "4.3.0 Mailbox unavailable: %s", buf_str(&err));
		}
		goto out;
	}
	/*
	 * The store's first look at the room, taken before the MIME parse: a
	 * message deferred for the quota is tried again and again, and costs
	 * no parse each time. The same rule as store_add_many_quota(): in
	 * order, each that fits takes its room, one delivered already under
	 * its dedup key takes none and is never refused; the transaction
	 * still decides for what is let through.
	 */
	uint64_t used = 0, room = 0;
	bool look = quota > 0 && store_usage(st, &used, NULL) == 0;
	if (look)
		room = used < (uint64_t)quota ? (uint64_t)quota - used : 0;
	for (size_t i = 0; i < n; i++) {
		struct local_item *it = &items[i];
		if (seen_delivered_to(it->content, it->len, account)) {
			it->result = DELIVER_PERMFAIL;
			buf_printf(it->why, "5.4.6 Mail loop: already delivered to %s", account);
			continue;
		}
		if (look &&
		    (it->dedup_key == NULL || store_delivered(st, it->dedup_key, NULL) == 0)) {
			/* The stored form is the added lines (CRLF) and the content. */
			size_t size = local_added_len(it->return_path, account) +
				      store_stored_size(it->content, it->len);
			if (size > room) {
				local_over(it, account, size, quota);
				continue;
			}
			room -= size;
		}
		struct buf *m = &msgs[nadd];
		buf_init(m, 0);
		buf_printf(m, RETURN_PATH_FMT, it->return_path ? it->return_path : "", account);
		buf_append(m, it->content, it->len);
		mime_meta_compute(m->data, m->len, &mms[nadd]);
		adds[nadd] = (struct store_add_item){.msg = m->data, .len = m->len,
						     .meta = &mms[nadd].meta,
						     .dedup_key = it->dedup_key};
		which[nadd++] = i;
	}
	/*
	 * The quota is held inside the transaction that adds the messages, so
	 * an IMAP APPEND or another delivery at the same time cannot take the
	 * same room: the usage never passes the quota. A run again after a
	 * crash finds an earlier delivery by its dedup key: no new usage.
	 */
	if (nadd > 0 && store_add_many_quota(st, "INBOX", adds, nadd, quota, 1, NULL) < 0) {
		int full = store_errcode(st) == STORE_ERR_NOSPACE;
		for (size_t k = 0; k < nadd; k++) {
			struct local_item *it = &items[which[k]];
			it->result = DELIVER_TEMPFAIL;
			buf_printf(it->why, "%s: %s",
				   full ? "4.3.1 Mail system full" : "4.3.0 Mailbox unavailable",
				   store_errstr(st));
		}
	} else {
		for (size_t k = 0; k < nadd; k++) {
			struct local_item *it = &items[which[k]];
			/* The size as stored (CRLF), which the quota counts. */
			if (adds[k].rc == 2) {
				local_over(it, account, adds[k].size, quota);
			} else {
				it->result = DELIVER_OK;
				buf_printf(it->why, "2.0.0 Delivered to INBOX uid %u%s",
					   adds[k].uid, adds[k].rc == 0 ? " (earlier)" : "");
			}
		}
	}
out:
	/* The pool closes a handle whose last call failed inside the store. */
	store_pool_put(&st);
	for (size_t k = 0; k < nadd; k++) {
		mime_meta_free(&mms[k]);
		buf_free(&msgs[k]);
	}
	free(adds);
	free(msgs);
	free(mms);
	free(which);
	buf_free(&err);
}

enum deliver_result
local_deliver(const char *data_dir, const char *account, const char *return_path,
	      const char *content, size_t len, const char *dedup_key, int64_t quota, int max_hops,
	      struct buf *why)
{
	struct local_item it = {return_path, content, len, dedup_key, DELIVER_TEMPFAIL, why};

	(void)max_hops;
	local_deliver_many(data_dir, account, quota, &it, 1);
	return it.result;
}
