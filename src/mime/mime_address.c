/*
 * mime_address — see mime_address.h. A recursive-descent parser over mime_lex:
 * address-list = address *("," address); address = group / mailbox;
 * mailbox = name-addr / addr-spec (RFC 5322 §3.4), plus the obsolete forms
 * of §4.4 (routes, dots in odd places, missing parts). The recovery rules
 * mirror Dovecot's message-address parser so ENVELOPEs match.
 *
 * SECURITY: untrusted input; no recursion deeper than one group; the number
 * of entries is capped at MIME_ADDRESS_MAX.
 */
#include "mime/mime_address.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/util.h"
#include "mime/mime_lex.h"

struct actx {
	struct mime_lex lx;
	struct buf str;	    /* scratch for the item being read */
	struct buf comment; /* last comment seen by the lexer */
	struct mime_address cur;
	struct mime_address *head;
	struct mime_address **tail;
	unsigned int count;
	int fill;
};

#define AT_END(c) ((c)->lx.p >= (c)->lx.end)
#define CUR(c) (*(c)->lx.p)

static void
set_field(char **field, const char *s, size_t n)
{
	free(*field);
	*field = xstrndup(s, n);
}

static void
set_field_buf(char **field, const struct buf *b)
{
	set_field(field, buf_str(b), b->len);
}

static void
clear_cur(struct actx *c)
{
	free(c->cur.name);
	free(c->cur.route);
	free(c->cur.mailbox);
	free(c->cur.host);
	c->cur.name = c->cur.route = c->cur.mailbox = c->cur.host = NULL;
	c->cur.invalid = 0;
}

static void
add_address(struct actx *c)
{
	if (c->count >= MIME_ADDRESS_MAX) {
		clear_cur(c);
		return;
	}
	struct mime_address *a = xmalloc(sizeof(*a));
	*a = c->cur;
	a->next = NULL;
	memset(&c->cur, 0, sizeof(c->cur));
	*c->tail = a;
	c->tail = &a->next;
	c->count++;
}

/* Local parts with dots anywhere ("a..b", ".a", "a.") are common enough to
 * accept (obs-local-part is generous too). */
static int
nonstrict_dot_atom(struct actx *c, struct buf *out)
{
	int r = -1;

	do {
		while (!AT_END(c) && CUR(c) == '.') {
			(void)buf_putc(out, '.');
			c->lx.p++;
			if (AT_END(c))
				return 0;
			r = 1;
		}
		if (!AT_END(c) && CUR(c) == '@')
			break;
		r = mime_lex_atom(&c->lx, out);
	} while (r > 0 && CUR(c) == '.');
	return r;
}

static int
parse_local_part(struct actx *c)
{
	int r;

	buf_reset(&c->str);
	if (CUR(c) == '"')
		r = mime_lex_quoted(&c->lx, &c->str);
	else
		r = nonstrict_dot_atom(c, &c->str);
	if (r < 0)
		return -1;
	set_field_buf(&c->cur.mailbox, &c->str);
	return r;
}

static int
parse_domain(struct actx *c)
{
	int r;

	buf_reset(&c->str);
	if ((r = mime_lex_domain(&c->lx, &c->str)) < 0)
		return -1;
	set_field_buf(&c->cur.host, &c->str);
	return r;
}

/* obs-domain-list = "@" domain *(*(CFWS / ",") [CFWS] "@" domain) */
static int
parse_domain_list(struct actx *c)
{
	int r;

	buf_reset(&c->str);
	for (;;) {
		if (AT_END(c))
			return 0;
		if (CUR(c) != '@')
			break;
		if (c->str.len > 0)
			(void)buf_putc(&c->str, ',');
		(void)buf_putc(&c->str, '@');
		if ((r = mime_lex_domain(&c->lx, &c->str)) <= 0)
			return r;
		while (mime_lex_skip(&c->lx) > 0 && CUR(c) == ',')
			c->lx.p++;
	}
	set_field_buf(&c->cur.route, &c->str);
	return 1;
}

/* "<" [route ":"] [local-part ["@" domain]] ">" */
static int
parse_angle_addr(struct actx *c)
{
	c->lx.p++; /* '<' */
	if (mime_lex_skip(&c->lx) <= 0)
		return -1;
	if (CUR(c) == '@') {
		if (parse_domain_list(c) > 0 && CUR(c) == ':') {
			c->lx.p++;
		} else {
			if (c->fill)
				set_field(&c->cur.route, "INVALID_ROUTE", 13);
			if (AT_END(c))
				return -1;
		}
		if (mime_lex_skip(&c->lx) <= 0)
			return -1;
	}
	if (CUR(c) != '>') {
		if (parse_local_part(c) <= 0)
			return -1;
		if (CUR(c) == '@' && parse_domain(c) <= 0)
			return -1;
	}
	if (CUR(c) != '>')
		return -1;
	c->lx.p++;
	return mime_lex_skip(&c->lx);
}

static int
parse_name_addr(struct actx *c)
{
	buf_reset(&c->str);
	if (mime_lex_phrase(&c->lx, &c->str) <= 0 || CUR(c) != '<')
		return -1;
	if (c->str.len > 0)
		set_field_buf(&c->cur.name, &c->str);
	if (parse_angle_addr(c) < 0) {
		if (c->fill)
			set_field(&c->cur.host, "SYNTAX_ERROR", 12);
		c->cur.invalid = 1;
	}
	return AT_END(c) ? 0 : 1;
}

static int
parse_addr_spec(struct actx *c)
{
	int r, r2 = -2, quoted = CUR(c) == '"';

	buf_reset(&c->comment);
	r = parse_local_part(c);
	if (r <= 0)
		c->cur.invalid = 1;
	if (r != 0 && !AT_END(c) && CUR(c) == '@') {
		r2 = parse_domain(c);
		if (r2 <= 0)
			r = r2;
	}
	if (c->comment.len > 0) {
		/* "user@host (Real Name)" */
		set_field_buf(&c->cur.name, &c->comment);
	} else if (r2 == -2) {
		/* a word without @domain: more words make it a display name */
		(void)buf_putc(&c->str, ' ');
		size_t before = c->str.len;
		(void)mime_lex_phrase(&c->lx, &c->str);
		if (c->str.len != before) {
			free(c->cur.mailbox);
			c->cur.mailbox = NULL;
			set_field_buf(&c->cur.name, &c->str);
		} else if (!quoted) {
			set_field(&c->cur.host, "", 0);
		}
		c->cur.invalid = 1;
		r = -1;
	}
	return r;
}

static void
add_fixed_address(struct actx *c)
{
	if (c->cur.mailbox == NULL) {
		set_field(&c->cur.mailbox, c->fill ? "MISSING_MAILBOX" : "", c->fill ? 15 : 0);
		c->cur.invalid = 1;
	}
	if (c->cur.host == NULL || c->cur.host[0] == '\0') {
		set_field(&c->cur.host, c->fill ? "MISSING_DOMAIN" : "", c->fill ? 14 : 0);
		c->cur.invalid = 1;
	}
	add_address(c);
}

static int
parse_mailbox(struct actx *c)
{
	const unsigned char *start = c->lx.p;
	int r;

	if ((r = parse_name_addr(c)) < 0) {
		c->lx.p = start;
		r = parse_addr_spec(c);
		if (c->cur.invalid && c->cur.name == NULL && c->cur.mailbox != NULL &&
		    c->cur.host == NULL) {
			/* a lone quoted string is a name, not a mailbox */
			c->cur.name = c->cur.mailbox;
			c->cur.mailbox = NULL;
		}
	}
	if (r < 0)
		c->cur.invalid = 1;
	add_fixed_address(c);
	return r;
}

/* group = display-name ":" [mailbox-list / CFWS] ";" [CFWS] */
static int
parse_group(struct actx *c)
{
	int r;

	buf_reset(&c->str);
	if (mime_lex_phrase(&c->lx, &c->str) <= 0 || CUR(c) != ':')
		return -1;
	/* from here on it is a group, whatever follows */
	c->lx.p++;
	if ((r = mime_lex_skip(&c->lx)) <= 0)
		c->cur.invalid = 1;
	set_field_buf(&c->cur.mailbox, &c->str);
	add_address(c);

	if (r > 0 && CUR(c) != ';') {
		for (;;) {
			(void)parse_mailbox(c); /* broken members are kept, repaired */
			if (AT_END(c) || CUR(c) != ',')
				break;
			c->lx.p++;
			if (mime_lex_skip(&c->lx) <= 0) {
				r = -1;
				break;
			}
		}
	}
	if (r >= 0) {
		if (AT_END(c) || CUR(c) != ';') {
			r = -1;
		} else {
			c->lx.p++;
			r = mime_lex_skip(&c->lx);
		}
	}
	if (r < 0)
		c->cur.invalid = 1;
	add_address(c); /* the group end marker */
	return r == 0 ? 0 : 1;
}

static int
parse_address(struct actx *c)
{
	const unsigned char *start = c->lx.p;
	int r;

	if ((r = parse_group(c)) < 0) {
		c->lx.p = start;
		clear_cur(c);
		r = parse_mailbox(c);
	}
	return r;
}

static void
parse_address_list(struct actx *c)
{
	int r;

	while (c->count < MIME_ADDRESS_MAX) {
		if (parse_address(c) == 0)
			break;
		if (AT_END(c) || CUR(c) != ',')
			break;
		c->lx.p++;
		if ((r = mime_lex_skip(&c->lx)) <= 0) {
			if (r < 0)
				add_fixed_address(c); /* ends with garbage */
			break;
		}
	}
}

struct mime_address *
mime_address_parse(const char *s, size_t len, int fill_missing)
{
	struct actx c;

	memset(&c, 0, sizeof(c));
	buf_init(&c.str, 0);
	buf_init(&c.comment, 0);
	mime_lex_init(&c.lx, s, len, &c.comment);
	c.tail = &c.head;
	c.fill = fill_missing;
	if (mime_lex_skip(&c.lx) > 0)
		parse_address_list(&c);
	clear_cur(&c);
	buf_free(&c.str);
	buf_free(&c.comment);
	return c.head;
}

void
mime_address_free(struct mime_address **list)
{
	struct mime_address *a = *list, *next;

	for (; a != NULL; a = next) {
		next = a->next;
		free(a->name);
		free(a->route);
		free(a->mailbox);
		free(a->host);
		free(a);
	}
	*list = NULL;
}
