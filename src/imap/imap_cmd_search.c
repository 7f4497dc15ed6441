/*
 * imap_cmd_search — SEARCH and UID SEARCH (RFC 9051 §6.4.4, ESEARCH RFC
 * 4731, SEARCHRES RFC 5182, CONDSTORE MODSEQ RFC 7162), SORT and THREAD
 * (RFC 5256). Parsing is imap_search_parse's, evaluation imap_search's,
 * ordering imap_sort's; this file runs them on the worker pool against the
 * session's view and keeps the saved result ("$") as UIDs.
 *
 * In an IMAP4rev2 session every SEARCH answers with ESEARCH (RFC 9051
 * §7.3.4): a program without RETURN is treated as RETURN (ALL).
 *
 * SECURITY: the program is peer input, validated by the parser; while the
 * job runs the session does not touch the view it reads.
 */
#include "imap/imap_cmd.h"
#include "imap/imap_search.h"
#include "imap/imap_sort.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum search_kind { SK_SEARCH, SK_SORT, SK_THREAD };

struct search_job {
	struct imap_job j;
	enum search_kind kind;
	struct imap_search_program prog;
	struct imap_search_ctx ctx;
	char *mailbox;
	char *tag;
	bool uid;
	/* SORT: the criteria are copied as atoms (the parser's tree is gone by then) */
	struct imap_arg *criteria;
	size_t ncriteria;
	char *algorithm;
	struct buf out;
	struct imap_seqset saved;
	bool save;
	const char *err;
	char errmsg[256];
};

static void
search_work(struct imap_job *jj)
{
	struct search_job *j = (struct search_job *)jj;
	size_t n = j->ctx.view->count;
	unsigned char *match = xcalloc(n ? n : 1, 1);
	const char *err = NULL;
	int rc;

	j->ctx.st = j->j.st;
	rc = imap_search_eval(&j->ctx, &j->prog, match, &err);
	if (rc == 0) {
		switch (j->kind) {
		case SK_SEARCH:
			rc = imap_search_format(&j->out, &j->ctx, &j->prog, match, j->tag, j->uid,
						j->save ? &j->saved : NULL);
			if (rc < 0)
				err = "TOOBIG";
			break;
		case SK_SORT:
			rc = imap_sort(&j->out, &j->ctx, j->criteria, match, j->uid, &err);
			break;
		case SK_THREAD:
			rc = imap_thread(&j->out, &j->ctx, j->algorithm, match, j->uid, &err);
			break;
		}
	}
	if (rc < 0) {
		j->err = err ? err : IMAP_SEARCH_ERR_STORE;
		if (strcmp(j->err, IMAP_SEARCH_ERR_STORE) == 0)
			xsnprintf(j->errmsg, sizeof(j->errmsg), "%.200s", store_errstr(j->j.st));
	}
	free(match);
}

static void
search_done(struct imap_sess *s, struct imap_job *jj)
{
	struct search_job *j = (struct search_job *)jj;

	if (j->err != NULL) {
		buf_reset(&j->out);
		if (j->save) {
			/* RFC 5182 §2.1: a failed SAVE leaves "$" empty. */
			imap_seqset_clear(&s->saved);
			s->saved_valid = true;
		}
		if (strcmp(j->err, IMAP_SEARCH_ERR_BADCHARSET) == 0)
			imap_done(s, "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
		else if (strcmp(j->err, IMAP_SEARCH_ERR_STORE) == 0)
			imap_done_store(s, s->cmdname, STORE_ERR_INTERNAL, j->errmsg);
		else if (strcmp(j->err, "TOOBIG") == 0)
			imap_done(s, "NO", "[LIMIT] Result too large");
		else
			imap_done(s, "BAD", "%s: %s", s->cmdname, j->err);
		return;
	}
	imap_write_buf(s, &j->out);
	if (j->save) {
		imap_seqset_free(&s->saved);
		s->saved = j->saved;
		imap_seqset_init(&j->saved);
		s->saved_valid = true;
	}
	imap_done(s, "OK", "%s completed", s->cmdname);
}

static void
search_free(struct imap_job *jj)
{
	struct search_job *j = (struct search_job *)jj;

	imap_search_program_free(&j->prog);
	free(j->mailbox);
	free(j->tag);
	free(j->algorithm);
	if (j->criteria) {
		for (size_t i = 0; i < j->ncriteria; i++)
			free((char *)j->criteria[i].str);
		free(j->criteria);
	}
	buf_free(&j->out);
	imap_seqset_free(&j->saved);
	free(j);
}

static struct search_job *
search_job_new(struct imap_sess *s, enum search_kind kind)
{
	struct search_job *j = xcalloc(1, sizeof(*j));

	j->kind = kind;
	j->uid = s->uid;
	j->tag = xstrdup(s->tag ? s->tag : "*");
	imap_seqset_init(&j->saved);
	j->j.work = search_work;
	j->j.done = search_done;
	j->j.free = search_free;
	return j;
}

static void
search_start(struct imap_sess *s, struct search_job *j)
{
	j->mailbox = xstrdup(s->sel->name);
	j->ctx.mailbox = j->mailbox;
	j->ctx.uidvalidity = s->sel->view.uidvalidity;
	j->ctx.view = &s->sel->view;
	j->ctx.saved = s->saved_valid ? &s->saved : NULL;
	j->ctx.recent = (s->enabled & EN_REV2) ? NULL : &s->sel->recent;
	if (j->prog.uses_modseq)
		imap_enable_condstore(s);
	if (j->kind == SK_SEARCH && imap_search_view_only(&j->prog, j->ctx.view->count))
		imap_job_run_here(s, &j->j);
	else
		imap_job_run(s, &j->j);
}

/* The charset argument of SORT/THREAD: only UTF-8 and US-ASCII. */
static bool
search_charset_ok(const char *cs)
{
	return strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "US-ASCII") == 0;
}

void
imap_cmd_search(struct imap_sess *s, const struct imap_arg *args)
{
	struct search_job *j = search_job_new(s, SK_SEARCH);
	const char *err = NULL;

	if (imap_search_parse(args, &j->prog, &err) < 0) {
		search_free(&j->j);
		imap_done(s, "BAD", "%s: %s", s->cmdname, err ? err : "bad search program");
		return;
	}
	if ((s->enabled & EN_REV2) && !j->prog.esearch) {
		j->prog.esearch = true;
		j->prog.ret = IMAP_SEARCH_RET_ALL;
	}
	j->save = (j->prog.ret & IMAP_SEARCH_RET_SAVE) != 0;
	search_start(s, j);
}

/* Copy a SORT criteria list (atoms only) so it outlives the command. */
static int
sort_copy_criteria(struct search_job *j, const struct imap_arg *a)
{
	const struct imap_arg *l;
	size_t n;

	if (!imap_arg_list(a, &l, &n) || n == 0 || n > 64)
		return -1;
	j->criteria = xcalloc(n + 1, sizeof(*j->criteria));
	for (size_t i = 0; i < n; i++) {
		const char *w;
		if (!imap_arg_atom(&l[i], &w)) {
			j->ncriteria = i;
			return -1;
		}
		j->criteria[i].type = IMAP_ARG_ATOM;
		j->criteria[i].str = xstrdup(w);
		j->criteria[i].len = l[i].len;
		j->ncriteria = i + 1;
	}
	j->criteria[n].type = IMAP_ARG_EOL;
	return 0;
}

static void
imap_sort_thread(struct imap_sess *s, const struct imap_arg *args, enum search_kind kind)
{
	struct search_job *j = search_job_new(s, kind);
	const char *err = NULL;
	const char *cs, *alg;
	size_t cslen;

	if (kind == SK_SORT) {
		if (sort_copy_criteria(j, &args[0]) < 0) {
			err = "Syntax: SORT (criteria) charset search-keys";
			goto bad;
		}
	} else {
		if (!imap_arg_atom(&args[0], &alg)) {
			err = "Syntax: THREAD algorithm charset search-keys";
			goto bad;
		}
		j->algorithm = xstrdup(alg);
	}
	if (!imap_arg_astring(&args[1], &cs, &cslen) || imap_arg_is_eol(&args[2])) {
		err = "charset and search keys expected";
		goto bad;
	}
	if (imap_search_parse(&args[2], &j->prog, &err) < 0)
		goto bad;
	if (j->prog.esearch || j->prog.charset) {
		err = "RETURN and CHARSET belong to SEARCH, not here";
		goto bad;
	}
	if (!search_charset_ok(cs)) {
		search_free(&j->j);
		imap_done(s, "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
		return;
	}
	search_start(s, j);
	return;
bad:
	search_free(&j->j);
	imap_done(s, "BAD", "%s: %s", s->cmdname, err ? err : "syntax error");
}

void
imap_cmd_sort(struct imap_sess *s, const struct imap_arg *args)
{
	imap_sort_thread(s, args, SK_SORT);
}

void
imap_cmd_thread(struct imap_sess *s, const struct imap_arg *args)
{
	imap_sort_thread(s, args, SK_THREAD);
}
