/*
 * mime_imap — see mime_imap.h. The envelope is read from the message's
 * header block when asked for (the last Date/Subject/Message-ID/In-Reply-To
 * field wins; address fields of the same name are concatenated, as Dovecot
 * does); the body structure comes from the parsed tree.
 *
 * SECURITY: output only through the quoting functions here; recursion
 * follows the tree, whose depth mime_parse() caps.
 */
#include "mime/mime_imap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/util.h"
#include "mime/mime.h"
#include "mime/mime_address.h"
#include "mime/mime_decode.h"
#include "mime/mime_header.h"

#define MAX_ESCAPES 4 /* past this a literal is shorter than a quoted string */

static int
literal(struct buf *out, const char *s, size_t n)
{
	if (buf_printf(out, "{%zu}\r\n", n) < 0)
		return -1;
	return buf_append(out, s, n);
}

int
mime_imap_nstring(struct buf *out, const char *s)
{
	unsigned int escapes = 0;
	size_t n, i;

	if (s == NULL)
		return buf_puts(out, "NIL");
	n = strlen(s);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			if (escapes++ < MAX_ESCAPES)
				continue;
			return literal(out, s, n);
		}
		if (c == '\r' || c == '\n' || c >= 0x80)
			return literal(out, s, n);
	}
	if (buf_putc(out, '"') < 0)
		return -1;
	for (i = 0; i < n; i++) {
		if ((s[i] == '"' || s[i] == '\\') && buf_putc(out, '\\') < 0)
			return -1;
		if (buf_putc(out, s[i]) < 0)
			return -1;
	}
	return buf_putc(out, '"');
}

/* nstring with CR and LF removed (a space kept between joined lines). */
static int
nstring_nolf(struct buf *out, const char *s)
{
	struct buf b = BUF_INIT(0);
	int r;

	if (s == NULL || strpbrk(s, "\r\n") == NULL)
		return mime_imap_nstring(out, s);
	for (size_t i = 0; s[i] != '\0'; i++) {
		if (s[i] != '\r' && s[i] != '\n') {
			(void)buf_putc(&b, s[i]);
		} else if (s[i + 1] != ' ' && s[i + 1] != '\t' && s[i + 1] != '\r' &&
			   s[i + 1] != '\n' && s[i + 1] != '\0') {
			(void)buf_putc(&b, ' ');
		}
	}
	r = mime_imap_nstring(out, buf_str(&b));
	buf_free(&b);
	return r;
}

static int
is_lwsp(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int
mime_imap_human(struct buf *out, const char *s, size_t n)
{
	size_t i, remove = 0, start;
	int last_lwsp = 1, prefix = 1, modify = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == 0) {
			last_lwsp = 0;
			modify = 1;
		} else if (is_lwsp(c)) {
			if (c != ' ')
				modify = 1;
			if (last_lwsp) {
				modify = 1;
				remove++;
			}
			last_lwsp = 1;
		} else {
			if (c == '"' || c == '\\' || c >= 0x80)
				modify = 1;
			last_lwsp = 0;
		}
		if (!last_lwsp)
			prefix = 0;
	}
	if (last_lwsp && n > 0 && !prefix) {
		modify = 1;
		remove++;
	}
	if (!modify) {
		if (buf_putc(out, '"') < 0 || buf_append(out, s, n) < 0)
			return -1;
		return buf_putc(out, '"');
	}
	if (n == remove)
		return buf_puts(out, "\"\"");
	if (buf_printf(out, "{%zu}\r\n", n - remove) < 0)
		return -1;
	start = out->len;
	last_lwsp = 1;
	prefix = 1;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int r = 0;
		if (c == 0) {
			r = buf_putc(out, (char)0x80);
			last_lwsp = 0;
		} else if (is_lwsp(c)) {
			if (!last_lwsp)
				r = buf_putc(out, ' ');
			last_lwsp = 1;
		} else {
			r = buf_putc(out, (char)c);
			last_lwsp = 0;
		}
		if (r < 0)
			return -1;
		if (!last_lwsp)
			prefix = 0;
	}
	if (last_lwsp && n > 0 && !prefix)
		buf_truncate(out, out->len - 1);
	return out->len - start == n - remove ? 0 : -1;
}

/* An address list with its end and length, so that appending a field does
 * not walk what earlier ones gave (a header may repeat a field 10^5 times). */
struct addr_list {
	struct mime_address *head;
	struct mime_address **tail; /* NULL while empty */
	size_t n;
};

struct envelope {
	char *date, *subject, *in_reply_to, *message_id;
	struct addr_list from, sender, reply_to, to, cc, bcc;
};

static void
replace_str(char **dst, const struct mime_field *f)
{
	struct buf b = BUF_INIT(0);

	(void)mime_header_unfold(&b, f, MIME_UNFOLD_NUL | MIME_UNFOLD_KEEP_BREAKS);
	free(*dst);
	*dst = buf_steal(&b);
}

static void
append_addresses(struct addr_list *list, const struct mime_field *f)
{
	struct buf b = BUF_INIT(0);

	if (list->tail == NULL)
		list->tail = &list->head;
	if (list->n < MIME_ADDRESS_MAX) {
		(void)mime_header_unfold(&b, f, MIME_UNFOLD_KEEP_BREAKS);
		*list->tail = mime_address_parse(buf_str(&b), b.len, 1);
		for (; *list->tail != NULL; list->tail = &(*list->tail)->next)
			list->n++;
	}
	buf_free(&b);
}

static void
envelope_read(struct envelope *e, const struct mime_part *msg)
{
	const char *hdr = msg->msg + msg->hdr_off;
	struct mime_field f;
	size_t pos = 0;

	memset(e, 0, sizeof(*e));
	while (mime_header_next(hdr, msg->hdr_len, &pos, &f)) {
		static const struct {
			const char *name;
			size_t off;
			int addr;
		} fields[] = {
		    {"Date", offsetof(struct envelope, date), 0},
		    {"Subject", offsetof(struct envelope, subject), 0},
		    {"In-Reply-To", offsetof(struct envelope, in_reply_to), 0},
		    {"Message-ID", offsetof(struct envelope, message_id), 0},
		    {"From", offsetof(struct envelope, from), 1},
		    {"Sender", offsetof(struct envelope, sender), 1},
		    {"Reply-To", offsetof(struct envelope, reply_to), 1},
		    {"To", offsetof(struct envelope, to), 1},
		    {"Cc", offsetof(struct envelope, cc), 1},
		    {"Bcc", offsetof(struct envelope, bcc), 1},
		};
		if (!f.has_colon)
			continue;
		for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
			size_t n = strlen(fields[i].name);
			/* C-string compare, as Dovecot: "From\0x" is From */
			if (strnlen(f.name, f.name_len) != n ||
			    strncasecmp(f.name, fields[i].name, n) != 0)
				continue;
			void *slot = (char *)e + fields[i].off;
			if (fields[i].addr)
				append_addresses(slot, &f);
			else
				replace_str(slot, &f);
			break;
		}
	}
}

static void
envelope_free(struct envelope *e)
{
	free(e->date);
	free(e->subject);
	free(e->in_reply_to);
	free(e->message_id);
	mime_address_free(&e->from.head);
	mime_address_free(&e->sender.head);
	mime_address_free(&e->reply_to.head);
	mime_address_free(&e->to.head);
	mime_address_free(&e->cc.head);
	mime_address_free(&e->bcc.head);
}

static int
write_addresses(struct buf *out, const struct mime_address *a)
{
	int r = 0;

	if (a == NULL)
		return buf_puts(out, "NIL");
	r |= buf_putc(out, '(');
	for (; a != NULL && r == 0; a = a->next) {
		r |= buf_putc(out, '(');
		if (a->name == NULL)
			r |= buf_puts(out, "NIL");
		else
			r |= mime_imap_human(out, a->name, strlen(a->name));
		r |= buf_putc(out, ' ');
		r |= mime_imap_nstring(out, a->route);
		r |= buf_putc(out, ' ');
		r |= mime_imap_nstring(out, a->mailbox);
		r |= buf_putc(out, ' ');
		r |= mime_imap_nstring(out, a->host);
		r |= buf_putc(out, ')');
	}
	r |= buf_putc(out, ')');
	return r < 0 ? -1 : 0;
}

int
mime_envelope(struct buf *out, const struct mime_part *msg)
{
	struct envelope e;
	int r = 0;

	envelope_read(&e, msg);
	r |= buf_putc(out, '(');
	r |= nstring_nolf(out, e.date);
	r |= buf_putc(out, ' ');
	if (e.subject == NULL)
		r |= buf_puts(out, "NIL");
	else
		r |= mime_imap_human(out, e.subject, strlen(e.subject));
	r |= buf_putc(out, ' ');
	r |= write_addresses(out, e.from.head);
	r |= buf_putc(out, ' ');
	/* RFC 3501: Sender and Reply-To default to From */
	r |= write_addresses(out, e.sender.head ? e.sender.head : e.from.head);
	r |= buf_putc(out, ' ');
	r |= write_addresses(out, e.reply_to.head ? e.reply_to.head : e.from.head);
	r |= buf_putc(out, ' ');
	r |= write_addresses(out, e.to.head);
	r |= buf_putc(out, ' ');
	r |= write_addresses(out, e.cc.head);
	r |= buf_putc(out, ' ');
	r |= write_addresses(out, e.bcc.head);
	r |= buf_putc(out, ' ');
	r |= nstring_nolf(out, e.in_reply_to);
	r |= buf_putc(out, ' ');
	r |= nstring_nolf(out, e.message_id);
	r |= buf_putc(out, ')');
	envelope_free(&e);
	return r < 0 ? -1 : 0;
}

static int
write_params(struct buf *out, const struct mime_param *p, size_t n, int text)
{
	int r = 0, seen_charset = 0;

	if (!text && n == 0)
		return buf_puts(out, "NIL");
	r |= buf_putc(out, '(');
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			r |= buf_putc(out, ' ');
		if (strcasecmp(p[i].name, "charset") == 0)
			seen_charset = 1;
		r |= mime_imap_nstring(out, p[i].name);
		r |= buf_putc(out, ' ');
		r |= mime_imap_nstring(out, p[i].value);
	}
	if (text && !seen_charset)
		r |=
		    buf_puts(out, n > 0 ? " \"charset\" \"us-ascii\"" : "\"charset\" \"us-ascii\"");
	r |= buf_putc(out, ')');
	return r < 0 ? -1 : 0;
}

/* disposition, language, location: common to every kind of part */
static int
write_ext_common(struct buf *out, const struct mime_part *p)
{
	int r = 0;

	r |= buf_putc(out, ' ');
	if (p->disposition == NULL) {
		r |= buf_puts(out, "NIL");
	} else {
		r |= buf_putc(out, '(');
		r |= mime_imap_nstring(out, p->disposition);
		r |= buf_putc(out, ' ');
		r |= write_params(out, p->disp_params, p->ndisp_params, 0);
		r |= buf_putc(out, ')');
	}
	r |= buf_putc(out, ' ');
	if (p->language == NULL) {
		r |= buf_puts(out, "NIL");
	} else {
		r |= buf_putc(out, '(');
		for (size_t i = 0; i < p->nlanguage; i++) {
			if (i > 0)
				r |= buf_putc(out, ' ');
			r |= mime_imap_nstring(out, p->language[i]);
		}
		r |= buf_putc(out, ')');
	}
	r |= buf_putc(out, ' ');
	r |= nstring_nolf(out, p->location);
	return r < 0 ? -1 : 0;
}

static int write_part(struct buf *out, const struct mime_part *p, unsigned int flags);

static int
write_multipart(struct buf *out, const struct mime_part *p, unsigned int flags)
{
	int ext = (flags & MIME_BS_EXTENDED) != 0, r = 0;

	if (p->children == NULL) {
		/* a multipart without parts is not allowed: show an empty one */
		r |= buf_puts(
		    out, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0");
		r |= buf_puts(out, ext ? " NIL NIL NIL NIL)" : ")");
	}
	for (const struct mime_part *c = p->children; c != NULL && r == 0; c = c->next) {
		r |= buf_putc(out, '(');
		r |= write_part(out, c, flags);
		r |= buf_putc(out, ')');
	}
	r |= buf_putc(out, ' ');
	r |= mime_imap_nstring(out, p->subtype ? p->subtype : "");
	if (!ext)
		return r < 0 ? -1 : 0;
	r |= buf_putc(out, ' ');
	r |= write_params(out, p->params, p->nparams, 0);
	r |= write_ext_common(out, p);
	return r < 0 ? -1 : 0;
}

static int
write_part(struct buf *out, const struct mime_part *p, unsigned int flags)
{
	int ext = (flags & MIME_BS_EXTENDED) != 0, r = 0, text = 0, msg = 0;
	const struct mime_part *inner = NULL;
	struct mime_part *global = NULL;

	if (p->flags & MIME_PART_MULTIPART)
		return write_multipart(out, p, flags);

	if ((p->flags & MIME_PART_GLOBAL) && (flags & MIME_BS_GLOBAL)) {
		/* RFC 9051 body-type-msg: "message" "global" must carry an
		 * envelope and a body; one too deep to parse is a leaf */
		global = mime_parse_global(p);
		msg = global != NULL;
		inner = global;
		r |= buf_puts(out,
			      msg ? "\"message\" \"global\"" : "\"application\" \"octet-stream\"");
	} else if (p->flags & MIME_PART_MESSAGE) {
		msg = 1;
		inner = p->children;
		r |= buf_puts(out, "\"message\" \"rfc822\"");
	} else if (p->type == NULL) {
		/* a digest entry beyond the limits is no longer a message */
		text = !(p->flags & MIME_PART_DEMOTED);
		r |=
		    buf_puts(out, text ? "\"text\" \"plain\"" : "\"application\" \"octet-stream\"");
	} else if (strcasecmp(p->type, "multipart") == 0 || (p->flags & MIME_PART_DEMOTED)) {
		/* a container kept as a leaf (limits, or no subtype) */
		r |= buf_puts(out, "\"application\" \"octet-stream\"");
	} else {
		text = strcasecmp(p->type, "text") == 0;
		r |= mime_imap_nstring(out, p->type);
		r |= buf_putc(out, ' ');
		r |= mime_imap_nstring(out, p->subtype ? p->subtype : "");
	}
	r |= buf_putc(out, ' ');
	r |= write_params(out, p->params, p->nparams, text);
	r |= buf_putc(out, ' ');
	r |= nstring_nolf(out, p->id);
	r |= buf_putc(out, ' ');
	r |= nstring_nolf(out, p->description);
	r |= buf_putc(out, ' ');
	if (p->encoding != NULL)
		r |= mime_imap_nstring(out, p->encoding);
	else
		r |= buf_puts(out, "\"7bit\"");
	r |= buf_printf(out, " %llu", (unsigned long long)p->body_vsize);
	if (text) {
		r |= buf_printf(out, " %llu", (unsigned long long)p->body_lines);
	} else if (msg && inner != NULL) {
		r |= buf_putc(out, ' ');
		r |= mime_envelope(out, inner);
		r |= buf_puts(out, " (");
		r |= write_part(out, inner, flags);
		r |= buf_printf(out, ") %llu", (unsigned long long)p->body_lines);
	}
	mime_free(&global);
	if (!ext || r < 0)
		return r < 0 ? -1 : 0;
	r |= buf_putc(out, ' ');
	r |= nstring_nolf(out, p->md5);
	r |= write_ext_common(out, p);
	return r < 0 ? -1 : 0;
}

/*
 * A message that is one plain 7-bit us-ascii text part: Dovecot remembers
 * just that fact and from then on answers with the canonical lower-case
 * form, which is therefore what its clients see.
 */
static int
is_plain_7bit(const struct mime_part *p)
{
	if (p->parent != NULL || p->children != NULL ||
	    (p->flags & (MIME_PART_MULTIPART | MIME_PART_MESSAGE | MIME_PART_DEMOTED)))
		return 0;
	if (p->type != NULL && strcasecmp(p->type, "text") != 0)
		return 0;
	if (p->subtype != NULL && strcasecmp(p->subtype, "plain") != 0)
		return 0;
	if (p->nparams > 1 ||
	    (p->nparams == 1 && (strcasecmp(p->params[0].name, "charset") != 0 ||
				 strcasecmp(p->params[0].value, "us-ascii") != 0)))
		return 0;
	if (p->encoding != NULL && strcasecmp(p->encoding, "7bit") != 0)
		return 0;
	return p->id == NULL && p->description == NULL && p->md5 == NULL &&
	       p->disposition == NULL && p->language == NULL && p->location == NULL;
}

int
mime_bodystructure(struct buf *out, const struct mime_part *p, unsigned int flags)
{
	int r = 0;

	if (is_plain_7bit(p)) {
		r |= buf_printf(
		    out,
		    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" %llu %llu%s)",
		    (unsigned long long)p->body_vsize, (unsigned long long)p->body_lines,
		    (flags & MIME_BS_EXTENDED) ? " NIL NIL NIL NIL" : "");
		return r < 0 ? -1 : 0;
	}
	r |= buf_putc(out, '(');
	mime_charset_scope_begin(); /* every part's file name: charsets bounded together */
	r |= write_part(out, p, flags);
	mime_charset_scope_end();
	r |= buf_putc(out, ')');
	return r < 0 ? -1 : 0;
}
