/*
 * imap_cmd_append — APPEND (RFC 9051 §6.3.12) with MULTIAPPEND (RFC 3502),
 * literal8 / UTF8 (RFC 3516, RFC 6855), APPENDLIMIT (RFC 7889), UIDPLUS's
 * APPENDUID (RFC 4315) and the quota (RFC 9208 OVERQUOTA).
 *
 * The size of each literal is checked before "+" is sent: against
 * imap.max_literal (the parser; NO [TOOBIG]), against the user's quota and
 * against the disk's free space less queue.min_free
 * (imap_append_literal_check; NO [OVERQUOTA]). That reserve is what lets
 * users still flag and expunge mail, and the queue deliver what SMTP took,
 * when the disk fills up. The message bytes are taken
 * over from the parser without a copy; the MIME metadata (ENVELOPE,
 * BODYSTRUCTURE, sort keys, full-text) is computed and the message stored
 * on the worker pool. A MULTIAPPEND is all or nothing: its messages are
 * stored in one transaction (and one flush).
 *
 * SECURITY: message bytes are stored as given and never interpreted here;
 * flags and dates are validated; the quota and the free space are checked
 * again on the worker right before storing, and the quota a last time inside
 * the transaction that stores (store_add_many_quota), which alone holds
 * against a delivery or another APPEND at the same moment.
 */
#include "imap/imap_cmd.h"
#include "imap/imap_search_parse.h"

#include "auth/accounts.h"
#include "core/config.h"
#include "core/log.h"
#include "mime/mime_meta.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define APPEND_MSGS_MAX 1000 /* messages in one MULTIAPPEND */

struct append_msg {
	struct buf data;
	uint32_t flags;
	char **keywords;
	size_t nkeywords;
	int64_t date; /* 0: now */
	int32_t tz;
	uint32_t uid; /* after storing */
};

struct append_job {
	struct imap_job j;
	char *mailbox;
	struct append_msg *msgs;
	size_t n;
	int64_t quota;
	int64_t min_free; /* config_min_free() */
	int rc;
	bool overquota;
	enum store_err err;
	char errmsg[256];
	uint32_t uidvalidity;
};

/* Whether storing add more bytes below dir would leave less than min_free. */
static bool
append_space_low(const char *dir, int64_t min_free, uint64_t add)
{
	if (min_free <= 0)
		return false;
	if (add > (uint64_t)(INT64_MAX - min_free))
		return true;
	return util_space_low(dir, min_free + (int64_t)add);
}

/*
 * Read for each command that needs it, not once at login: `surat user quota`
 * changes it for sessions already logged in, as for SMTP. On the loop, as
 * SMTP's RCPT and the login read the accounts: the handle is the loop's,
 * the statement a cached primary-key look-up, and in WAL mode the CLI's
 * write does not block it.
 */
int64_t
imap_quota_current(struct imap_sess *s)
{
	struct account_user u = {0};
	int r = accounts_user_get(s->srv->accounts, s->user, &u);

	if (r == 1)
		s->quota = u.quota >= 0 ? u.quota : s->srv->cfg->user_quota;
	else if (r == 0)
		s->quota = s->srv->cfg->user_quota; /* deleted meanwhile: as SMTP would */
	accounts_user_free(&u);
	return s->quota;
}

int
imap_append_literal_check(struct imap_sess *s, uint64_t size)
{
	const struct config *cfg = s->srv->cfg;
	uint64_t bytes = 0, msgs = 0;
	bool borrowed = s->st == NULL;
	char mail[PATH_MAX];
	int rc;

	xsnprintf(mail, sizeof(mail), "%s/mail", cfg->data_dir);
	if (append_space_low(mail, config_min_free(cfg), size))
		return -2;

	/*
	 * Before the command runs: the handle is borrowed for this check only,
	 * and only if one is idle (no opening on the loop; the worker checks again).
	 */
	if (imap_quota_current(s) <= 0 || !imap_store_take(s))
		return 0;
	rc = store_usage(s->st, &bytes, &msgs);
	if (borrowed)
		imap_store_return(s);
	if (rc < 0)
		return 0; /* checked again before storing */
	return bytes + size > (uint64_t)s->quota ? -1 : 0;
}

/* "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be " d"); 0 or -1. */
static int
imap_append_date(const char *s, size_t len, int64_t *t_r, int32_t *tz_r)
{
	struct imap_date d;
	const char *sp;
	int h, m, sec, zh, zm;

	if (len > 0 && s[0] == ' ') {
		s++;
		len--;
	}
	sp = memchr(s, ' ', len);
	if (sp == NULL || imap_search_parse_date(s, (size_t)(sp - s), &d) < 0)
		return -1;
	const char *t = sp + 1;
	size_t tl = len - (size_t)(t - s);
	if (tl != 14 || t[2] != ':' || t[5] != ':' || t[8] != ' ' || (t[9] != '+' && t[9] != '-'))
		return -1;
	for (size_t i = 0; i < 14; i++)
		if (i != 2 && i != 5 && i != 8 && i != 9 && (t[i] < '0' || t[i] > '9'))
			return -1;
	h = (t[0] - '0') * 10 + (t[1] - '0');
	m = (t[3] - '0') * 10 + (t[4] - '0');
	sec = (t[6] - '0') * 10 + (t[7] - '0');
	zh = (t[10] - '0') * 10 + (t[11] - '0');
	zm = (t[12] - '0') * 10 + (t[13] - '0');
	if (h > 23 || m > 59 || sec > 60 || zm > 59)
		return -1;
	int32_t tz = (int32_t)(zh * 60 + zm) * (t[9] == '-' ? -1 : 1);
	*t_r = d.days * 86400 + h * 3600 + m * 60 + sec - (int64_t)tz * 60;
	*tz_r = tz;
	return 0;
}

static void
append_msgs_free(struct append_msg *msgs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		buf_free(&msgs[i].data);
		for (size_t k = 0; k < msgs[i].nkeywords; k++)
			free(msgs[i].keywords[k]);
		free(msgs[i].keywords);
	}
	free(msgs);
}

bool
imap_quota_exceeded(struct store *st, int64_t quota, uint64_t add)
{
	uint64_t used = 0, nmsgs = 0;

	return quota > 0 && store_usage(st, &used, &nmsgs) == 0 && used + add > (uint64_t)quota;
}

void
imap_quota_text(const struct imap_sess *s, struct buf *out)
{
	buf_printf(out, "[OVERQUOTA] Quota exceeded (limit %lld bytes)", (long long)s->quota);
}

void
imap_done_overquota(struct imap_sess *s)
{
	struct buf t = BUF_INIT(0);

	imap_quota_text(s, &t);
	imap_done(s, "NO", "%s", buf_str(&t));
	buf_free(&t);
}

static void
append_work(struct imap_job *jj)
{
	struct append_job *j = (struct append_job *)jj;
	struct store *st = j->j.st;
	uint64_t total = 0;

	for (size_t i = 0; i < j->n; i++)
		total += j->msgs[i].data.len;
	if (append_space_low(store_root(st), j->min_free, total)) {
		j->rc = -1;
		j->err = STORE_ERR_NOSPACE;
		xsnprintf(j->errmsg, sizeof(j->errmsg),
			  "%s: less than queue.min_free would be left free", store_root(st));
		return;
	}
	if (imap_quota_exceeded(st, j->quota, total)) {
		j->rc = -1;
		j->overquota = true;
		return;
	}
	struct mime_meta *mm = xcalloc(j->n, sizeof(*mm));
	struct store_add_item *items = xcalloc(j->n, sizeof(*items));
	for (size_t i = 0; i < j->n; i++) {
		struct append_msg *am = &j->msgs[i];
		mime_meta_compute(buf_str(&am->data), am->data.len, &mm[i]);
		mm[i].meta.flags = am->flags;
		mm[i].meta.keywords = (const char *const *)am->keywords;
		mm[i].meta.nkeywords = am->nkeywords;
		mm[i].meta.internal_date = am->date;
		mm[i].meta.internal_tz = am->tz;
		items[i] = (struct store_add_item){
		    .msg = buf_str(&am->data), .len = am->data.len, .meta = &mm[i].meta};
	}
	/*
	 * MULTIAPPEND is all or nothing (RFC 3502 §6.3.11): one transaction,
	 * which holds the quota itself; the check above only saves writing
	 * files for nothing, as a delivery meanwhile may take the room.
	 */
	j->rc = store_add_many_quota(st, j->mailbox, items, j->n, j->quota, 0, &j->uidvalidity);
	if (j->rc < 0 && store_errcode(st) == STORE_ERR_OVERQUOTA) {
		j->overquota = true;
	} else if (j->rc < 0) {
		j->err = store_errcode(st);
		xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(st));
	}
	for (size_t i = 0; i < j->n; i++) {
		j->msgs[i].uid = items[i].uid;
		mime_meta_free(&mm[i]);
	}
	free(items);
	free(mm);
}

static void
append_done(struct imap_sess *s, struct imap_job *jj)
{
	struct append_job *j = (struct append_job *)jj;

	if (j->overquota) {
		imap_done_overquota(s);
		return;
	}
	if (j->rc < 0) {
		if (j->err == STORE_ERR_NOMAILBOX)
			imap_done(s, "NO", "[TRYCREATE] Mailbox does not exist");
		else
			imap_done_store(s, "APPEND", j->err, j->errmsg);
		return;
	}
	struct buf set = BUF_INIT(0);
	uint32_t *uids = xcalloc(j->n, sizeof(*uids));
	for (size_t i = 0; i < j->n; i++)
		uids[i] = j->msgs[i].uid;
	imap_seqset_format_list(uids, j->n, &set);
	free(uids);
	imap_done(s, "OK", "[APPENDUID %u %s] APPEND completed", j->uidvalidity, buf_str(&set));
	buf_free(&set);
}

static void
append_free(struct imap_job *jj)
{
	struct append_job *j = (struct append_job *)jj;

	append_msgs_free(j->msgs, j->n);
	free(j->mailbox);
	free(j);
}

void
imap_cmd_append(struct imap_sess *s, const struct imap_arg *args)
{
	struct buf name = BUF_INIT(0);
	const char *err = "Syntax: APPEND mailbox [(flags)] [date-time] literal";
	struct append_msg *msgs = NULL;
	size_t n = 0;
	const struct imap_arg *a;

	if (imap_mbox_arg(s, &args[0], &name, &err) < 0)
		goto bad;
	a = &args[1];
	while (!imap_arg_is_eol(a)) {
		const struct imap_arg *l, *data;
		size_t ln;
		const char *str;
		size_t slen;

		if (n >= APPEND_MSGS_MAX) {
			err = "Too many messages in one APPEND";
			goto bad;
		}
		msgs = xrealloc(msgs, (n + 1) * sizeof(*msgs));
		struct append_msg *am = &msgs[n++];
		memset(am, 0, sizeof(*am));
		if (imap_arg_list(a, &l, &ln)) {
			if (imap_flags_parse(l, ln, &am->flags, &am->keywords, &am->nkeywords,
					     &err) < 0)
				goto bad;
			a++;
		}
		if (a->type == IMAP_ARG_QUOTED) {
			if (!imap_arg_string(a, &str, &slen) ||
			    imap_append_date(str, slen, &am->date, &am->tz) < 0) {
				err = "Invalid date-time (dd-Mon-yyyy hh:mm:ss +zzzz)";
				goto bad;
			}
			a++;
		}
		data = a;
		if (imap_arg_atom(a, &str) && strcasecmp(str, "UTF8") == 0) {
			/* RFC 6855: UTF8 (literal8) */
			if (!imap_arg_list(&a[1], &l, &ln) || ln != 1 ||
			    l[0].type != IMAP_ARG_LITERAL8) {
				err = "Syntax: UTF8 (~{n}...)";
				goto bad;
			}
			data = &l[0];
			a++;
		}
		if (data->type != IMAP_ARG_LITERAL && data->type != IMAP_ARG_LITERAL8) {
			err = "The message must be a literal";
			goto bad;
		}
		if (data->type == IMAP_ARG_LITERAL && (data->flags & IMAP_ARGF_NUL)) {
			err = "NUL in a literal: use literal8 (~{n}, BINARY)";
			goto bad;
		}
		if (data->len == 0) {
			buf_free(&name);
			append_msgs_free(msgs, n);
			imap_done(s, "NO", "[CANNOT] Empty message");
			return;
		}
		if (!imap_parser_literal_steal(s->parser, data, &am->data)) {
			err = "The message must be a literal";
			goto bad;
		}
		a++;
	}
	if (n == 0)
		goto bad;
	struct append_job *j = xcalloc(1, sizeof(*j));
	j->mailbox = buf_steal(&name);
	j->msgs = msgs;
	j->n = n;
	j->quota = imap_quota_current(s);
	j->min_free = config_min_free(s->srv->cfg);
	j->j.work = append_work;
	j->j.done = append_done;
	j->j.free = append_free;
	imap_job_run(s, &j->j);
	return;
bad:
	buf_free(&name);
	append_msgs_free(msgs, n);
	imap_done(s, "BAD", "APPEND: %s", err);
}
