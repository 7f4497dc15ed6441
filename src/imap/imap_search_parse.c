/*
 * imap_search_parse — see imap_search_parse.h. A recursive-descent parser
 * over the argument tree: one table maps each key name to its operator and
 * the shape of its operands, so adding a key is one line. Children hang off
 * their parent as a singly linked list, which keeps evaluation a plain walk.
 *
 * SECURITY: recursion is bounded by IMAP_SEARCH_MAX_DEPTH, siblings are
 * bounded by the parser's argument limit, and every operand is checked
 * (numbers in range, dates real, keywords real atoms) before a key is
 * built. Errors never leave a half-built program behind.
 */
#include "imap/imap_search_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"

enum sp_arg {
	SPA_NONE,
	SPA_ASTRING,
	SPA_DATE,
	SPA_NUMBER,
	SPA_KEYWORD,
	SPA_HEADER,
	SPA_SET,
	SPA_NOT,
	SPA_OR,
	SPA_MODSEQ,
};

static const struct {
	const char *name;
	enum imap_search_op op;
	enum sp_arg arg;
} sp_keys[] = {
    {"ALL", IMAP_SK_ALL, SPA_NONE},
    {"ANSWERED", IMAP_SK_ANSWERED, SPA_NONE},
    {"BCC", IMAP_SK_BCC, SPA_ASTRING},
    {"BEFORE", IMAP_SK_BEFORE, SPA_DATE},
    {"BODY", IMAP_SK_BODY, SPA_ASTRING},
    {"CC", IMAP_SK_CC, SPA_ASTRING},
    {"DELETED", IMAP_SK_DELETED, SPA_NONE},
    {"DRAFT", IMAP_SK_DRAFT, SPA_NONE},
    {"FLAGGED", IMAP_SK_FLAGGED, SPA_NONE},
    {"FROM", IMAP_SK_FROM, SPA_ASTRING},
    {"HEADER", IMAP_SK_HEADER, SPA_HEADER},
    {"KEYWORD", IMAP_SK_KEYWORD, SPA_KEYWORD},
    {"LARGER", IMAP_SK_LARGER, SPA_NUMBER},
    {"MODSEQ", IMAP_SK_MODSEQ, SPA_MODSEQ},
    {"NEW", IMAP_SK_NEW, SPA_NONE},
    {"NOT", IMAP_SK_NOT, SPA_NOT},
    {"OLD", IMAP_SK_OLD, SPA_NONE},
    {"ON", IMAP_SK_ON, SPA_DATE},
    {"OR", IMAP_SK_OR, SPA_OR},
    {"RECENT", IMAP_SK_RECENT, SPA_NONE},
    {"SEEN", IMAP_SK_SEEN, SPA_NONE},
    {"SENTBEFORE", IMAP_SK_SENTBEFORE, SPA_DATE},
    {"SENTON", IMAP_SK_SENTON, SPA_DATE},
    {"SENTSINCE", IMAP_SK_SENTSINCE, SPA_DATE},
    {"SINCE", IMAP_SK_SINCE, SPA_DATE},
    {"SMALLER", IMAP_SK_SMALLER, SPA_NUMBER},
    {"SUBJECT", IMAP_SK_SUBJECT, SPA_ASTRING},
    {"TEXT", IMAP_SK_TEXT, SPA_ASTRING},
    {"TO", IMAP_SK_TO, SPA_ASTRING},
    {"UID", IMAP_SK_UID, SPA_SET},
    {"UNANSWERED", IMAP_SK_UNANSWERED, SPA_NONE},
    {"UNDELETED", IMAP_SK_UNDELETED, SPA_NONE},
    {"UNDRAFT", IMAP_SK_UNDRAFT, SPA_NONE},
    {"UNFLAGGED", IMAP_SK_UNFLAGGED, SPA_NONE},
    {"UNKEYWORD", IMAP_SK_UNKEYWORD, SPA_KEYWORD},
    {"UNSEEN", IMAP_SK_UNSEEN, SPA_NONE},
};

struct sp_ctx {
	struct imap_search_program *prog;
	const char *err;
};

static const char *const sp_months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static bool
sp_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t
sp_days_from_civil(int y, int m, int d)
{
	int64_t yy = y - (m <= 2);
	int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
	int64_t yoe = yy - era * 400;
	int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int
imap_search_parse_date(const char *s, size_t len, struct imap_date *r)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	size_t i = 0;
	int day = 0, month = 0, year = 0;

	while (i < len && i < 2 && s[i] >= '0' && s[i] <= '9')
		day = day * 10 + (s[i++] - '0');
	if (i == 0 || i >= len || s[i] != '-')
		return -1;
	i++;
	if (len - i < 3)
		return -1;
	for (int m = 0; m < 12; m++) {
		if (strncasecmp(s + i, sp_months[m], 3) == 0) {
			month = m + 1;
			break;
		}
	}
	if (month == 0)
		return -1;
	i += 3;
	if (len - i != 5 || s[i] != '-')
		return -1;
	for (i++; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		year = year * 10 + (s[i] - '0');
	}
	if (year == 0)
		return -1;
	int dim = mdays[month - 1] + (month == 2 && sp_leap(year));
	if (day < 1 || day > dim)
		return -1;
	r->year = year;
	r->month = month;
	r->day = day;
	r->days = sp_days_from_civil(year, month, day);
	return 0;
}

static char *
sp_strdup(const char *s, size_t len)
{
	char *p = xmalloc(len + 1);

	if (len > 0)
		memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

static void
sp_key_free(struct imap_search_key *k)
{
	while (k != NULL) {
		struct imap_search_key *next = k->next;
		sp_key_free(k->child);
		free(k->str);
		free(k->field);
		free(k->modseq_flag);
		imap_seqset_free(&k->set);
		free(k);
		k = next;
	}
}

void
imap_search_program_free(struct imap_search_program *prog)
{
	sp_key_free(prog->root);
	free(prog->charset);
	memset(prog, 0, sizeof(*prog));
}

static struct imap_search_key *
sp_key_new(struct sp_ctx *c, enum imap_search_op op)
{
	struct imap_search_key *k = xcalloc(1, sizeof(*k));

	k->op = op;
	imap_seqset_init(&k->set);
	c->prog->nkeys++;
	return k;
}

/* Record the first error; returns false for the caller to pass on. */
static bool
sp_fail(struct sp_ctx *c, const char *err)
{
	if (c->err == NULL)
		c->err = err;
	return false;
}

static bool
sp_is_set_start(char ch)
{
	return (ch >= '0' && ch <= '9') || ch == '*' || ch == '$';
}

static bool
sp_parse_set(struct sp_ctx *c, const struct imap_arg *a, struct imap_search_key *k)
{
	const char *s, *err;

	if (!imap_arg_atom(a, &s) || a->flags & (IMAP_ARGF_BACKSLASH | IMAP_ARGF_SECTION))
		return sp_fail(c, "sequence set expected");
	if (imap_seqset_parse(&k->set, a->str, a->len, IMAP_SEQSET_ALLOW_SAVED, &err) < 0)
		return sp_fail(c, err);
	if (k->set.saved)
		c->prog->uses_saved = true;
	return true;
}

static struct imap_search_key *sp_parse_key(struct sp_ctx *c, const struct imap_arg **ap,
					    unsigned depth);

/* Parse keys up to EOL as the children of parent; at least one. */
static bool
sp_parse_children(struct sp_ctx *c, struct imap_search_key *parent, const struct imap_arg *a,
		  unsigned depth)
{
	struct imap_search_key **tail = &parent->child;

	if (imap_arg_is_eol(a))
		return sp_fail(c, "empty search key list");
	while (!imap_arg_is_eol(a)) {
		struct imap_search_key *k = sp_parse_key(c, &a, depth);
		if (k == NULL)
			return false;
		*tail = k;
		tail = &k->next;
	}
	return true;
}

/* MODSEQ ["/flags/<flag>" priv|shared|all] <mod-sequence-valzer> */
static bool
sp_parse_modseq(struct sp_ctx *c, const struct imap_arg **ap, struct imap_search_key *k)
{
	const struct imap_arg *a = *ap;
	const char *s;
	size_t n;

	c->prog->uses_modseq = true;
	if (imap_arg_string(a, &s, &n)) {
		if (n <= 7 || strncasecmp(s, "/flags/", 7) != 0 || memchr(s, '\0', n) != NULL)
			return sp_fail(c, "invalid MODSEQ entry name");
		for (size_t i = 7; i < n; i++)
			if (s[i] <= 0x20 || s[i] >= 0x7f)
				return sp_fail(c, "invalid MODSEQ entry name");
		k->modseq_flag = sp_strdup(s + 7, n - 7);
		a++;
		if (!imap_arg_atom(a, &s))
			return sp_fail(c, "MODSEQ entry type expected");
		if (strcasecmp(s, "priv") == 0)
			k->modseq_type = IMAP_SEARCH_MODSEQ_PRIV;
		else if (strcasecmp(s, "shared") == 0)
			k->modseq_type = IMAP_SEARCH_MODSEQ_SHARED;
		else if (strcasecmp(s, "all") == 0)
			k->modseq_type = IMAP_SEARCH_MODSEQ_ALL;
		else
			return sp_fail(c, "invalid MODSEQ entry type");
		a++;
	}
	if (!imap_arg_number(a, &k->number))
		return sp_fail(c, "mod-sequence expected");
	*ap = a + 1;
	return true;
}

static bool
sp_parse_operands(struct sp_ctx *c, const struct imap_arg **ap, enum sp_arg kind,
		  struct imap_search_key *k, unsigned depth)
{
	const struct imap_arg *a = *ap;
	const char *s;
	size_t n;

	switch (kind) {
	case SPA_NONE:
		return true;
	case SPA_ASTRING:
		if (!imap_arg_astring(a, &s, &n))
			return sp_fail(c, "string expected");
		k->str = sp_strdup(s, n);
		k->len = n;
		break;
	case SPA_DATE:
		if (!imap_arg_astring(a, &s, &n) || imap_search_parse_date(s, n, &k->date) < 0)
			return sp_fail(c, "invalid date");
		break;
	case SPA_NUMBER:
		if (!imap_arg_number(a, &k->number))
			return sp_fail(c, "number expected");
		break;
	case SPA_KEYWORD:
		if (!imap_arg_atom(a, &s) || a->flags != 0)
			return sp_fail(c, "keyword expected");
		k->str = sp_strdup(a->str, a->len);
		k->len = a->len;
		break;
	case SPA_HEADER:
		/*
		 * Any astring (RFC 9051 §9, RFC 3501 §9), compared with the text
		 * before a field's colon: "" finds only a malformed ": x" line and
		 * "a:b" nothing, as in Dovecot.
		 */
		if (!imap_arg_astring(a, &s, &n))
			return sp_fail(c, "header field name expected");
		k->field = sp_strdup(s, n);
		a++;
		if (!imap_arg_astring(a, &s, &n))
			return sp_fail(c, "string expected");
		k->str = sp_strdup(s, n);
		k->len = n;
		break;
	case SPA_SET:
		if (!sp_parse_set(c, a, k))
			return false;
		break;
	case SPA_NOT:
		k->child = sp_parse_key(c, &a, depth + 1);
		*ap = a;
		return k->child != NULL;
	case SPA_OR:
		k->child = sp_parse_key(c, &a, depth + 1);
		if (k->child == NULL)
			return false;
		k->child->next = sp_parse_key(c, &a, depth + 1);
		*ap = a;
		return k->child->next != NULL;
	case SPA_MODSEQ:
		return sp_parse_modseq(c, ap, k);
	}
	*ap = a + 1;
	return true;
}

/* One search key at *ap; advances *ap past it. NULL on error (c->err set). */
static struct imap_search_key *
sp_parse_key(struct sp_ctx *c, const struct imap_arg **ap, unsigned depth)
{
	const struct imap_arg *a = *ap;
	const struct imap_arg *list;
	struct imap_search_key *k;
	const char *s;

	if (depth > IMAP_SEARCH_MAX_DEPTH) {
		sp_fail(c, "search program nested too deeply");
		return NULL;
	}
	if (imap_arg_is_eol(a)) {
		sp_fail(c, "missing search key");
		return NULL;
	}
	if (imap_arg_list(a, &list, NULL)) {
		k = sp_key_new(c, IMAP_SK_AND);
		if (!sp_parse_children(c, k, list, depth + 1)) {
			sp_key_free(k);
			return NULL;
		}
		*ap = a + 1;
		return k;
	}
	if (!imap_arg_atom(a, &s)) {
		sp_fail(c, "search key expected");
		return NULL;
	}
	if (sp_is_set_start(s[0])) {
		k = sp_key_new(c, IMAP_SK_SEQSET);
		if (!sp_parse_set(c, a, k)) {
			sp_key_free(k);
			return NULL;
		}
		*ap = a + 1;
		return k;
	}
	for (size_t i = 0; i < ARRAY_LEN(sp_keys); i++) {
		if (strcasecmp(s, sp_keys[i].name) != 0)
			continue;
		k = sp_key_new(c, sp_keys[i].op);
		a++;
		if (!sp_parse_operands(c, &a, sp_keys[i].arg, k, depth)) {
			sp_key_free(k);
			return NULL;
		}
		*ap = a;
		return k;
	}
	sp_fail(c, "unknown search key");
	return NULL;
}

static bool
sp_parse_return(struct sp_ctx *c, const struct imap_arg *a)
{
	const struct imap_arg *list;
	const char *s;

	if (!imap_arg_list(a, &list, NULL))
		return sp_fail(c, "RETURN options expected");
	c->prog->esearch = true;
	if (imap_arg_is_eol(list)) {
		c->prog->ret = IMAP_SEARCH_RET_ALL;
		return true;
	}
	for (; !imap_arg_is_eol(list); list++) {
		if (!imap_arg_atom(list, &s))
			return sp_fail(c, "invalid RETURN option");
		if (strcasecmp(s, "MIN") == 0)
			c->prog->ret |= IMAP_SEARCH_RET_MIN;
		else if (strcasecmp(s, "MAX") == 0)
			c->prog->ret |= IMAP_SEARCH_RET_MAX;
		else if (strcasecmp(s, "ALL") == 0)
			c->prog->ret |= IMAP_SEARCH_RET_ALL;
		else if (strcasecmp(s, "COUNT") == 0)
			c->prog->ret |= IMAP_SEARCH_RET_COUNT;
		else if (strcasecmp(s, "SAVE") == 0)
			c->prog->ret |= IMAP_SEARCH_RET_SAVE;
		else
			return sp_fail(c, "unknown RETURN option");
	}
	return true;
}

int
imap_search_parse(const struct imap_arg *args, struct imap_search_program *prog, const char **err_r)
{
	struct sp_ctx c = {prog, NULL};
	const struct imap_arg *a = args;
	const char *s;
	size_t n;

	memset(prog, 0, sizeof(*prog));
	if (imap_arg_atom(a, &s) && strcasecmp(s, "RETURN") == 0) {
		if (!sp_parse_return(&c, a + 1))
			goto fail;
		a += 2;
	}
	if (imap_arg_atom(a, &s) && strcasecmp(s, "CHARSET") == 0) {
		if (!imap_arg_astring(a + 1, &s, &n) || n == 0) {
			sp_fail(&c, "charset expected");
			goto fail;
		}
		prog->charset = sp_strdup(s, n);
		a += 2;
	}
	prog->root = sp_key_new(&c, IMAP_SK_AND);
	if (!sp_parse_children(&c, prog->root, a, 1))
		goto fail;
	return 0;
fail:
	imap_search_program_free(prog);
	*err_r = c.err;
	return -1;
}
