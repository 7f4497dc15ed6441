/*
 * store_mbox — mailbox operations: LIST, CREATE, DELETE, RENAME,
 * SUBSCRIBE, STATUS (RFC 9051 §6.3, RFC 6154 special-use).
 *
 * Superiors always exist as rows (CREATE and RENAME make missing ones,
 * DELETE of a mailbox with inferiors leaves it \Noselect), so "has
 * children" and the rename collision checks are plain range lookups on the
 * name index: the inferiors of "a" are the names in ["a/", "a0").
 *
 * SECURITY: every name passes store_name_norm() before it is used; the
 * names a rename derives are length-checked again.
 */
#include "store/store_private.h"

#include <stdlib.h>
#include <string.h>

static int
store_mbox_info_cmp(const void *a, const void *b)
{
	return strcmp(((const struct store_mbox_info *)a)->name,
		      ((const struct store_mbox_info *)b)->name);
}

static void
store_mbox_info_push(struct store_mbox_info **v, size_t *n, size_t *cap, const char *name,
		     unsigned attrs, unsigned use)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		*v = xrealloc(*v, *cap * sizeof(**v));
	}
	(*v)[*n].name = xstrdup(name);
	(*v)[*n].attrs = attrs;
	(*v)[*n].special_use = use;
	(*n)++;
}

int
store_mailbox_list(struct store *st, struct store_mbox_info **list_r, size_t *n_r)
{
	struct store_mbox_info *v = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s;
	int rc;

	store_clear_error(st);
	*list_r = NULL;
	*n_r = 0;
	if (store_begin(st, 0) < 0)
		return -1;
	if ((s = store_stmt(st, SQL_MBOX_LIST)) == NULL)
		goto fail;
	while ((rc = store_step(st, s)) == 1) {
		unsigned attrs = 0;
		if (sqlite3_column_int(s, 1))
			attrs |= STORE_MBOX_NOSELECT;
		if (sqlite3_column_int(s, 3))
			attrs |= STORE_MBOX_SUBSCRIBED;
		if (sqlite3_column_int(s, 4))
			attrs |= STORE_MBOX_HASCHILDREN;
		store_mbox_info_push(&v, &n, &cap, (const char *)sqlite3_column_text(s, 0), attrs,
				     (unsigned)sqlite3_column_int(s, 2));
	}
	if (rc < 0 || (s = store_stmt(st, SQL_MBOX_LIST_SUBONLY)) == NULL)
		goto fail;
	while ((rc = store_step(st, s)) == 1) {
		unsigned attrs =
		    STORE_MBOX_NONEXISTENT | STORE_MBOX_NOSELECT | STORE_MBOX_SUBSCRIBED;
		if (sqlite3_column_int(s, 1))
			attrs |= STORE_MBOX_HASCHILDREN;
		store_mbox_info_push(&v, &n, &cap, (const char *)sqlite3_column_text(s, 0), attrs,
				     0);
	}
	if (rc < 0 || store_commit(st) < 0)
		goto fail;
	if (n > 1)
		qsort(v, n, sizeof(*v), store_mbox_info_cmp);
	*list_r = v;
	*n_r = n;
	return 0;
fail:
	store_rollback(st);
	store_mailbox_list_free(&v, n);
	return -1;
}

void
store_mailbox_list_free(struct store_mbox_info **list, size_t n)
{
	if (*list == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free((*list)[i].name);
	free(*list);
	*list = NULL;
}

/* 1 if name has inferiors, 0 if not, -1 on error. */
static int
store_mbox_has_children(struct store *st, const char *name)
{
	sqlite3_stmt *s = store_stmt(st, SQL_MBOX_HAS_CHILD);
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	rc = store_step(st, s);
	if (rc == 1)
		sqlite3_reset(s);
	return rc;
}

/* Run a statement whose only parameter is a mailbox id. 0 or -1. */
static int
store_mbox_exec_id(struct store *st, enum store_sql id, int64_t mbox)
{
	sqlite3_stmt *s = store_stmt(st, id);

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, mbox);
	return store_exec(st, s);
}

int
store_mailbox_create(struct store *st, const char *raw, unsigned special_use)
{
	char name[STORE_NAME_MAX + 1];
	struct store_mbox_row row;
	int rc;

	store_clear_error(st);
	if (store_name_norm(st, raw, name) < 0)
		return -1;
	if (special_use & ~STORE_USE_MASK)
		return store_fail(st, STORE_ERR_INVALID, "unknown special-use attribute");
	if (store_begin(st, 1) < 0)
		return -1;
	if ((rc = store_mbox_get(st, name, &row)) < 0)
		goto fail;
	if (rc == 1 && !row.noselect) {
		store_fail(st, STORE_ERR_EXISTS, "mailbox %s already exists", name);
		goto fail;
	}
	if (rc == 1) {
		/* A \Noselect name becomes a mailbox again, under a new UIDVALIDITY. */
		uint32_t uidvalidity = 0;
		sqlite3_stmt *s;
		if (store_next_uidvalidity(st, &uidvalidity) < 0 ||
		    (s = store_stmt(st, SQL_MBOX_REVIVE)) == NULL)
			goto fail;
		sqlite3_bind_int64(s, 1, row.id);
		sqlite3_bind_int64(s, 2, uidvalidity);
		sqlite3_bind_int(s, 3, (int)special_use);
		if (store_exec(st, s) < 0 || store_mbox_exec_id(st, SQL_EXP_CLEAR, row.id) < 0)
			goto fail;
	} else if (store_mbox_make_parents(st, name) < 0 ||
		   store_mbox_insert(st, name, special_use, 0, NULL) < 0) {
		goto fail;
	}
	if (store_commit(st) < 0)
		return -1;
	store_notify(st, name);
	return 0;
fail:
	store_rollback(st);
	return -1;
}

/* Delete every message of a mailbox, collecting file names to unlink. 0 or -1. */
static int
store_mbox_clear(struct store *st, int64_t mbox, struct store_names *names)
{
	int64_t *ids = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s = store_stmt(st, SQL_MSG_ALL_FILES);
	int rc = -1;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, mbox);
	while ((rc = store_step(st, s)) == 1) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			ids = xrealloc(ids, cap * sizeof(*ids));
		}
		ids[n++] = sqlite3_column_int64(s, 0);
	}
	if (rc == 0)
		rc = store_mbox_exec_id(st, SQL_MSG_CLEAR, mbox);
	if (rc == 0)
		rc = store_files_release(st, ids, n, names);
	if (rc == 0)
		rc = store_mbox_exec_id(st, SQL_EXP_CLEAR, mbox);
	free(ids);
	return rc;
}

int
store_mailbox_delete(struct store *st, const char *raw)
{
	char name[STORE_NAME_MAX + 1];
	struct store_names names = {0};
	struct store_mbox_row row;
	int rc, children;

	store_clear_error(st);
	if (store_name_norm(st, raw, name) < 0)
		return -1;
	if (strcmp(name, "INBOX") == 0)
		return store_fail(st, STORE_ERR_CANNOT, "INBOX cannot be deleted");
	if (store_begin(st, 1) < 0)
		return -1;
	if ((rc = store_mbox_get(st, name, &row)) < 0)
		goto fail;
	if (rc == 0) {
		store_fail(st, STORE_ERR_NOMAILBOX, "no mailbox %s", name);
		goto fail;
	}
	if ((children = store_mbox_has_children(st, name)) < 0)
		goto fail;
	if (row.noselect && children) {
		store_fail(st, STORE_ERR_HASCHILDREN, "mailbox %s has inferiors", name);
		goto fail;
	}
	if (store_mbox_clear(st, row.id, &names) < 0)
		goto fail;
	/* RFC 9051 §6.3.5: inferiors survive; their superior stays as \Noselect. */
	if (store_mbox_exec_id(st, children ? SQL_MBOX_NOSELECT : SQL_MBOX_DELETE, row.id) < 0)
		goto fail;
	store_file_mark_dead(st, &names);
	if (store_commit(st) < 0) {
		store_names_free(&names);
		return -1;
	}
	store_file_unlink(st, &names);
	store_names_free(&names);
	store_notify(st, name);
	return 0;
fail:
	store_rollback(st);
	store_names_free(&names);
	return -1;
}

/*
 * Give a mailbox row a new name and a new UIDVALIDITY: a client may hold
 * state for an earlier mailbox of that name, and RFC 9051 §2.3.1.1 wants
 * the value seen under one name to only grow. UIDs and messages stay.
 * 0 or -1.
 */
static int
store_mbox_set_name(struct store *st, int64_t id, const char *name)
{
	uint32_t uidvalidity = 0;
	sqlite3_stmt *s;

	if (store_next_uidvalidity(st, &uidvalidity) < 0 ||
	    (s = store_stmt(st, SQL_MBOX_RENAME)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, uidvalidity);
	return store_exec(st, s);
}

/* Rename from's inferiors under to. In a write txn; 0 or -1. */
static int
store_mbox_rename_children(struct store *st, const char *from, const char *to)
{
	struct child {
		int64_t id;
		char *name;
	} *v = NULL;
	size_t n = 0, cap = 0, flen = strlen(from);
	sqlite3_stmt *s = store_stmt(st, SQL_MBOX_CHILDREN);
	struct store_mbox_row row;
	int rc = -1;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, from, -1, SQLITE_STATIC);
	while ((rc = store_step(st, s)) == 1) {
		const char *old = (const char *)sqlite3_column_text(s, 1);
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[n].id = sqlite3_column_int64(s, 0);
		v[n].name = xasprintf("%s%s", to, old + flen);
		n++;
	}
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (strlen(v[i].name) > STORE_NAME_MAX) {
			rc = store_fail(st, STORE_ERR_INVALID, "renamed inferior name too long");
			break;
		}
		int r = store_mbox_get(st, v[i].name, &row);
		if (r != 0)
			rc = r < 0 ? -1
				   : store_fail(st, STORE_ERR_EXISTS, "mailbox %s already exists",
						v[i].name);
	}
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = store_mbox_set_name(st, v[i].id, v[i].name);
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
	return rc;
}

int
store_mailbox_rename(struct store *st, const char *raw_from, const char *raw_to)
{
	char from[STORE_NAME_MAX + 1], to[STORE_NAME_MAX + 1];
	struct store_mbox_row src, dst;
	size_t flen;
	int rc;

	store_clear_error(st);
	if (store_name_norm(st, raw_from, from) < 0 || store_name_norm(st, raw_to, to) < 0)
		return -1;
	flen = strlen(from);
	/* INBOX is the exception: its inferiors do not move, so INBOX/old is fine. */
	if (strcmp(from, "INBOX") != 0 && strncmp(to, from, flen) == 0 &&
	    (to[flen] == '/' || to[flen] == '\0'))
		return store_fail(st, STORE_ERR_CANNOT,
				  "cannot rename %s to itself or under itself", from);
	if (store_begin(st, 1) < 0)
		return -1;
	if ((rc = store_mbox_get(st, from, &src)) < 0)
		goto fail;
	if (rc == 0) {
		store_fail(st, STORE_ERR_NOMAILBOX, "no mailbox %s", from);
		goto fail;
	}
	if ((rc = store_mbox_get(st, to, &dst)) < 0)
		goto fail;
	if (rc == 1) {
		store_fail(st, STORE_ERR_EXISTS, "mailbox %s already exists", to);
		goto fail;
	}
	if (strcmp(from, "INBOX") == 0) {
		/*
		 * RFC 9051 §6.3.6: INBOX's messages move to the new name and
		 * INBOX is left empty; its inferiors stay. Renaming the row moves
		 * the messages at no cost; the new empty INBOX gets a fresh
		 * UIDVALIDITY so no session mistakes it for the old one.
		 */
		if (store_mbox_set_name(st, src.id, to) < 0 ||
		    store_mbox_insert(st, "INBOX", 0, 0, NULL) < 0 ||
		    store_mbox_make_parents(st, to) < 0)
			goto fail;
	} else {
		sqlite3_stmt *s;
		if (store_mbox_rename_children(st, from, to) < 0 ||
		    store_mbox_set_name(st, src.id, to) < 0 || store_mbox_make_parents(st, to) < 0)
			goto fail;
		if ((s = store_stmt(st, SQL_SUB_RENAME)) == NULL)
			goto fail;
		sqlite3_bind_text(s, 1, from, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, to, -1, SQLITE_STATIC);
		if (store_exec(st, s) < 0)
			goto fail;
	}
	if (store_commit(st) < 0)
		return -1;
	store_notify(st, from);
	store_notify(st, to);
	return 0;
fail:
	store_rollback(st);
	return -1;
}

int
store_mailbox_subscribe(struct store *st, const char *raw, int subscribe)
{
	char name[STORE_NAME_MAX + 1];
	sqlite3_stmt *s;
	int64_t others = 0;

	store_clear_error(st);
	if (store_name_norm(st, raw, name) < 0)
		return -1;
	if (store_begin(st, 1) < 0)
		return -1;
	/* A subscription needs no mailbox, so the mailbox cap does not bound them. */
	if (subscribe && store_count(st, SQL_SUB_COUNT, name, &others) < 0)
		goto fail;
	if (others >= STORE_SUBSCRIPTIONS_MAX) {
		store_fail(st, STORE_ERR_LIMIT, "too many subscriptions (%d)",
			   STORE_SUBSCRIPTIONS_MAX);
		goto fail;
	}
	if ((s = store_stmt(st, subscribe ? SQL_SUB_ADD : SQL_SUB_DEL)) == NULL)
		goto fail;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	if (store_exec(st, s) < 0)
		goto fail;
	return store_commit(st);
fail:
	store_rollback(st);
	return -1;
}

int
store_mailbox_status(struct store *st, const char *raw, struct store_status *r)
{
	char name[STORE_NAME_MAX + 1];
	sqlite3_stmt *s;
	int rc, noselect;

	store_clear_error(st);
	if (store_name_norm(st, raw, name) < 0)
		return -1;
	if ((s = store_stmt(st, SQL_MBOX_STATUS)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	if ((rc = store_step(st, s)) < 0)
		return -1;
	if (rc == 0)
		return store_fail(st, STORE_ERR_NOMAILBOX, "no mailbox %s", name);
	r->messages = (uint32_t)sqlite3_column_int64(s, 0);
	r->unseen = (uint32_t)sqlite3_column_int64(s, 1);
	r->deleted = (uint32_t)sqlite3_column_int64(s, 2);
	r->uidnext = (uint32_t)sqlite3_column_int64(s, 3);
	r->uidvalidity = (uint32_t)sqlite3_column_int64(s, 4);
	r->size = (uint64_t)sqlite3_column_int64(s, 5);
	r->highestmodseq = (uint64_t)sqlite3_column_int64(s, 6);
	r->special_use = (unsigned)sqlite3_column_int(s, 7);
	noselect = sqlite3_column_int(s, 8);
	r->recent = (uint32_t)sqlite3_column_int64(s, 9);
	sqlite3_reset(s);
	if (noselect)
		return store_fail(st, STORE_ERR_NOSELECT, "mailbox %s is not selectable", name);
	return 0;
}

int
store_mailbox_modseq(struct store *st, const char *raw, uint32_t *uidvalidity_r,
		     uint64_t *highestmodseq_r)
{
	struct store_mbox_row row;

	store_clear_error(st);
	if (store_mbox_open(st, raw, 0, &row) < 0)
		return -1;
	if (uidvalidity_r != NULL)
		*uidvalidity_r = row.uidvalidity;
	if (highestmodseq_r != NULL)
		*highestmodseq_r = row.highestmodseq;
	return 0;
}
