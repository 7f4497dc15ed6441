/*
 * imap_fetch — FETCH attribute parsing and the per-message FETCH reply.
 * See imap_fetch.h for the contract; the notes here are about how.
 *
 * A request is a list of items in reply order: the "buffered" items
 * (those Dovecot writes into its line buffer: UID FLAGS INTERNALDATE
 * RFC822.SIZE MODSEQ SAVEDATE) are kept in front of the others, each group
 * in request order, which is the order Dovecot's replies have. Sections
 * are resolved the way Dovecot's imap-msgpart does, on the MIME module's
 * tree: part numbers walk multiparts, "1" of a single part is its body,
 * numbers after a message/rfc822 part go into the message it holds, and a
 * HEADER/TEXT/HEADER.FIELDS after a number only applies to message/rfc822
 * parts (otherwise the section exists but is empty). BINARY rebuilds the
 * selected entity with every base64/quoted-printable body decoded and the
 * header of each decoded part saying "Content-Transfer-Encoding: binary",
 * as Dovecot's binary stream does.
 *
 * The message file is mapped only when an item needs its bytes, and
 * parsed only when a section needs the MIME tree; ENVELOPE, BODY and
 * BODYSTRUCTURE come from the store's cache and are computed only when
 * the cache has none.
 *
 * SECURITY: attribute text is peer input and validated before anything is
 * allocated for it (part numbers are bounded nz-numbers, header lists are
 * atoms or quoted strings). Message bytes only ever leave as counted
 * literals. A mapping is read-only and private; message files are never
 * changed once stored, so the map cannot shrink under us.
 */
#include "imap/imap_fetch.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/nameidx.h"
#include "core/util.h"
#include "mime/mime.h"
#include "mime/mime_header.h"
#include "mime/mime_imap.h"

/* Part numbers one section may have; deeper than MIME nesting is pointless. */
/* Message files up to this size are read into memory, larger ones mapped. */
#define MSG_READ_MAX (256 * 1024)
#define FETCH_MAX_PATH 128
/* Header names in one HEADER.FIELDS list. */
#define FETCH_MAX_FIELDS 1000
/*
 * A header list is looked up once per field of the header, so through a
 * nameidx rather than a scan of up to FETCH_MAX_FIELDS names: a 2 MB
 * header of short fields against 1000 names held a worker 0.66 s, a minute
 * at the message size limit with ten lists in one FETCH.
 */

enum fetch_kind {
	FK_UID,
	FK_FLAGS,
	FK_FLAGS_SEEN, /* FLAGS added because the fetch sets \Seen; shown only if it did */
	FK_INTERNALDATE,
	FK_RFC822_SIZE,
	FK_MODSEQ,
	FK_SAVEDATE,
	FK_ENVELOPE,
	FK_BODY,
	FK_BODYSTRUCTURE,
	FK_RFC822,
	FK_RFC822_HEADER,
	FK_RFC822_TEXT,
	FK_SECTION, /* BODY[...], BINARY[...], BINARY.SIZE[...] */
};

enum sec_type {
	SEC_FULL,	/* [] */
	SEC_PART,	/* [1.2]: the part's body */
	SEC_MIME,	/* [1.2.MIME] */
	SEC_HEADER,	/* [HEADER], [1.2.HEADER] */
	SEC_FIELDS,	/* [HEADER.FIELDS (...)] */
	SEC_FIELDS_NOT, /* [HEADER.FIELDS.NOT (...)] */
	SEC_TEXT,	/* [TEXT], [1.2.TEXT] */
};

struct fetch_section {
	uint32_t *path;
	size_t npath;
	enum sec_type type;
	char **fields;
	size_t nfields;
	struct nameidx fidx; /* the fields by name */
	bool binary;	  /* BINARY[...] or BINARY.SIZE[...] */
	bool binary_size; /* BINARY.SIZE[...] */
	bool partial;
	uint64_t offset, count;
	char *name; /* as it appears in the reply: "BODY[1.MIME]<0>" */
};

struct fetch_item {
	enum fetch_kind kind;
	struct fetch_section *sec; /* FK_SECTION only */
};

struct imap_fetch_req {
	struct fetch_item *items;
	size_t n, cap;
	size_t nbuffered; /* items[0..nbuffered) are the buffered ones */
	bool sets_seen;
	bool have_flags;
	bool modseq;
	bool vanished;
	uint64_t changedsince;
};

static const char *const fetch_months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* --- requests --- */

static bool
fetch_kind_buffered(enum fetch_kind k)
{
	switch (k) {
	case FK_UID:
	case FK_FLAGS:
	case FK_FLAGS_SEEN:
	case FK_INTERNALDATE:
	case FK_RFC822_SIZE:
	case FK_MODSEQ:
	case FK_SAVEDATE:
		return true;
	default:
		return false;
	}
}

static void
fetch_section_free(struct fetch_section *sec)
{
	if (sec == NULL)
		return;
	free(sec->path);
	for (size_t i = 0; i < sec->nfields; i++)
		free(sec->fields[i]);
	free(sec->fields);
	nameidx_free(&sec->fidx);
	free(sec->name);
	free(sec);
}

/* Insert at position pos, shifting the rest. */
static void
fetch_req_insert(struct imap_fetch_req *req, size_t pos, enum fetch_kind kind,
		 struct fetch_section *sec)
{
	if (req->n == req->cap) {
		req->cap = req->cap ? req->cap * 2 : 8;
		req->items = xrealloc(req->items, req->cap * sizeof(*req->items));
	}
	memmove(&req->items[pos + 1], &req->items[pos], (req->n - pos) * sizeof(*req->items));
	req->items[pos].kind = kind;
	req->items[pos].sec = sec;
	req->n++;
}

/*
 * Add an item in reply order. Simple items are sent once however often
 * they are asked for (Dovecot drops duplicate handlers); sections are not
 * merged.
 */
static void
fetch_req_add(struct imap_fetch_req *req, enum fetch_kind kind, struct fetch_section *sec)
{
	if (kind != FK_SECTION) {
		for (size_t i = 0; i < req->n; i++)
			if (req->items[i].kind == kind)
				return;
	}
	if (fetch_kind_buffered(kind)) {
		fetch_req_insert(req, req->nbuffered, kind, sec);
		req->nbuffered++;
	} else {
		fetch_req_insert(req, req->n, kind, sec);
	}
}

void
imap_fetch_req_free(struct imap_fetch_req **req)
{
	if (*req == NULL)
		return;
	for (size_t i = 0; i < (*req)->n; i++)
		fetch_section_free((*req)->items[i].sec);
	free((*req)->items);
	free(*req);
	*req = NULL;
}

void
imap_fetch_req_set_uid(struct imap_fetch_req *req)
{
	for (size_t i = 0; i < req->n; i++) {
		if (req->items[i].kind == FK_UID) {
			memmove(&req->items[1], &req->items[0], i * sizeof(*req->items));
			req->items[0].kind = FK_UID;
			req->items[0].sec = NULL;
			return;
		}
	}
	fetch_req_insert(req, 0, FK_UID, NULL);
	req->nbuffered++;
}

int
imap_fetch_req_sets_seen(const struct imap_fetch_req *req)
{
	return req->sets_seen;
}

int
imap_fetch_req_wants_modseq(const struct imap_fetch_req *req)
{
	return req->modseq;
}

uint64_t
imap_fetch_req_changedsince(const struct imap_fetch_req *req)
{
	return req->changedsince;
}

int
imap_fetch_req_vanished(const struct imap_fetch_req *req)
{
	return req->vanished;
}

int
imap_fetch_req_wants_meta(const struct imap_fetch_req *req)
{
	for (size_t i = 0; i < req->n; i++) {
		enum fetch_kind k = req->items[i].kind;
		if (k == FK_ENVELOPE || k == FK_BODY || k == FK_BODYSTRUCTURE)
			return 1;
	}
	return 0;
}

int
imap_fetch_req_view_only(const struct imap_fetch_req *req)
{
	for (size_t i = 0; i < req->n; i++) {
		switch (req->items[i].kind) {
		case FK_UID:
		case FK_FLAGS:
		case FK_INTERNALDATE:
		case FK_RFC822_SIZE:
		case FK_MODSEQ:
			break;
		default:
			return 0;
		}
	}
	return 1;
}

/* --- section parsing --- */

static bool
fetch_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* ASTRING-CHAR of a header name written as an atom inside a section. */
static bool
fetch_is_atom_char(unsigned char c)
{
	return c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"' && c != '\\' &&
	       c != '%' && c != '*' && c != ']';
}

static void
fetch_buf_upper(struct buf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		buf_putc(b, c);
	}
}

/*
 * Parse the header list " (A "B" C)" at s[0..len) into sec->fields and
 * append its reply form (names upper-cased, single spaces, quoted names
 * stay quoted) to name.
 */
static int
fetch_parse_fields(const char *s, size_t len, struct fetch_section *sec, struct buf *name,
		   const char **err_r)
{
	size_t i = 0, cap = 0;

	while (i < len && s[i] == ' ')
		i++;
	if (i >= len || s[i] != '(') {
		*err_r = "Invalid BODY[..] parameter: Missing header list";
		return -1;
	}
	i++;
	buf_puts(name, " (");
	for (;;) {
		struct buf field = BUF_INIT(0);
		bool quoted = false;

		while (i < len && s[i] == ' ')
			i++;
		if (i < len && s[i] == ')' && sec->nfields > 0) {
			i++;
			break;
		}
		if (i < len && s[i] == '"') {
			quoted = true;
			for (i++; i < len && s[i] != '"'; i++) {
				if (s[i] == '\\' && i + 1 < len)
					i++;
				if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') {
					buf_free(&field);
					*err_r = "Invalid BODY[..] parameter: Bad header name";
					return -1;
				}
				buf_putc(&field, s[i]);
			}
			if (i >= len) {
				buf_free(&field);
				*err_r = "Invalid BODY[..] parameter: Unterminated header name";
				return -1;
			}
			i++;
		} else {
			while (i < len && fetch_is_atom_char((unsigned char)s[i]))
				buf_putc(&field, s[i++]);
		}
		/*
		 * header-fld-name is an astring, so "" is one; it names what a
		 * malformed ": x" line has before its colon, as in Dovecot.
		 */
		if ((field.len == 0 && !quoted) || sec->nfields >= FETCH_MAX_FIELDS) {
			buf_free(&field);
			*err_r = "Invalid BODY[..] parameter: Header list contains non-strings";
			return -1;
		}
		if (sec->nfields > 0)
			buf_putc(name, ' ');
		if (quoted) {
			buf_putc(name, '"');
			for (size_t k = 0; k < field.len; k++) {
				char c = field.data[k];
				if (c >= 'a' && c <= 'z')
					c = (char)(c - 'a' + 'A');
				if (c == '"' || c == '\\')
					buf_putc(name, '\\');
				buf_putc(name, c);
			}
			buf_putc(name, '"');
		} else {
			fetch_buf_upper(name, field.data, field.len);
		}
		if (sec->nfields == cap) {
			cap = cap ? cap * 2 : 4;
			sec->fields = xrealloc(sec->fields, cap * sizeof(*sec->fields));
		}
		sec->fields[sec->nfields++] = buf_steal(&field);
		if (i < len && s[i] == ')') {
			i++;
			break;
		}
		if (i >= len || s[i] != ' ') {
			*err_r = "Invalid BODY[..] parameter: Bad header list";
			return -1;
		}
	}
	if (i != len) {
		*err_r = "Invalid BODY[..] parameter: Data after header list";
		return -1;
	}
	buf_putc(name, ')');
	nameidx_init(&sec->fidx, sec->nfields);
	for (size_t k = 0; k < sec->nfields; k++) {
		uint32_t slot;
		if (nameidx_find(&sec->fidx, (const char *const *)sec->fields, sec->fields[k],
				 strlen(sec->fields[k]), &slot) < 0)
			nameidx_put(&sec->fidx, slot, k);
	}
	return 0;
}

/* Parse a section-spec s[0..len) into sec and append its reply form to name. */
static int
fetch_parse_section(const char *s, size_t len, struct fetch_section *sec, struct buf *name,
		    const char **err_r)
{
	size_t i = 0, cap = 0;
	const char *text;
	size_t tlen;

	while (i < len && fetch_is_digit(s[i])) {
		uint64_t n = 0;
		if (s[i] == '0') {
			*err_r = "Invalid BODY[..] section";
			return -1;
		}
		for (; i < len && fetch_is_digit(s[i]); i++) {
			n = n * 10 + (uint64_t)(s[i] - '0');
			if (n > UINT32_MAX) {
				*err_r = "Invalid BODY[..] section";
				return -1;
			}
		}
		if (sec->npath >= FETCH_MAX_PATH) {
			*err_r = "Invalid BODY[..] section: too deep";
			return -1;
		}
		if (sec->npath == cap) {
			cap = cap ? cap * 2 : 4;
			sec->path = xrealloc(sec->path, cap * sizeof(*sec->path));
		}
		sec->path[sec->npath++] = (uint32_t)n;
		if (i == len)
			break;
		if (s[i] != '.' || i + 1 == len) {
			*err_r = "Invalid BODY[..] section";
			return -1;
		}
		i++;
	}
	text = s + i;
	tlen = len - i;
	if (tlen == 0) {
		sec->type = sec->npath > 0 ? SEC_PART : SEC_FULL;
	} else if (tlen == 6 && strncasecmp(text, "HEADER", 6) == 0) {
		sec->type = SEC_HEADER;
	} else if (tlen == 4 && strncasecmp(text, "TEXT", 4) == 0) {
		sec->type = SEC_TEXT;
	} else if (tlen == 4 && strncasecmp(text, "MIME", 4) == 0 && sec->npath > 0) {
		sec->type = SEC_MIME;
	} else if (tlen > 17 && strncasecmp(text, "HEADER.FIELDS.NOT", 17) == 0 &&
		   (text[17] == ' ' || text[17] == '(')) {
		sec->type = SEC_FIELDS_NOT;
		fetch_buf_upper(name, s, i + 17);
		return fetch_parse_fields(text + 17, tlen - 17, sec, name, err_r);
	} else if (tlen > 13 && strncasecmp(text, "HEADER.FIELDS", 13) == 0 &&
		   (text[13] == ' ' || text[13] == '(')) {
		sec->type = SEC_FIELDS;
		fetch_buf_upper(name, s, i + 13);
		return fetch_parse_fields(text + 13, tlen - 13, sec, name, err_r);
	} else {
		*err_r = "Invalid BODY[..] section";
		return -1;
	}
	fetch_buf_upper(name, s, len);
	return 0;
}

/* One fetch-att atom into the request. */
static int
fetch_parse_att(struct imap_fetch_req *req, const struct imap_arg *arg, const char **err_r)
{
	static const struct {
		const char *name;
		enum fetch_kind kind;
	} simple[] = {
	    {"UID", FK_UID},
	    {"FLAGS", FK_FLAGS},
	    {"INTERNALDATE", FK_INTERNALDATE},
	    {"RFC822.SIZE", FK_RFC822_SIZE},
	    {"MODSEQ", FK_MODSEQ},
	    {"SAVEDATE", FK_SAVEDATE},
	    {"ENVELOPE", FK_ENVELOPE},
	    {"BODY", FK_BODY},
	    {"BODYSTRUCTURE", FK_BODYSTRUCTURE},
	    {"RFC822", FK_RFC822},
	    {"RFC822.HEADER", FK_RFC822_HEADER},
	    {"RFC822.TEXT", FK_RFC822_TEXT},
	};
	struct imap_fetch_att att;
	struct fetch_section *sec;
	struct buf name = BUF_INIT(0);

	if (imap_fetch_att_split(arg, &att) < 0) {
		*err_r = "Invalid fetch attribute";
		return -1;
	}
	if (!att.has_section) {
		if (att.has_partial) {
			*err_r = "Invalid fetch attribute: partial without section";
			return -1;
		}
		for (size_t i = 0; i < ARRAY_LEN(simple); i++) {
			if (strlen(simple[i].name) != att.name_len ||
			    strncasecmp(simple[i].name, att.name, att.name_len) != 0)
				continue;
			if (simple[i].kind == FK_FLAGS)
				req->have_flags = true;
			else if (simple[i].kind == FK_MODSEQ)
				req->modseq = true;
			else if (simple[i].kind == FK_RFC822 || simple[i].kind == FK_RFC822_TEXT)
				req->sets_seen = true;
			fetch_req_add(req, simple[i].kind, NULL);
			return 0;
		}
		*err_r = "Unknown fetch attribute";
		return -1;
	}

	sec = xcalloc(1, sizeof(*sec));
	if (att.name_len == 4 && strncasecmp(att.name, "BODY", 4) == 0) {
		req->sets_seen = true;
		buf_puts(&name, "BODY[");
	} else if (att.name_len == 9 && strncasecmp(att.name, "BODY.PEEK", 9) == 0) {
		buf_puts(&name, "BODY[");
	} else if (att.name_len == 6 && strncasecmp(att.name, "BINARY", 6) == 0) {
		req->sets_seen = true;
		sec->binary = true;
		buf_puts(&name, "BINARY[");
	} else if (att.name_len == 11 && strncasecmp(att.name, "BINARY.PEEK", 11) == 0) {
		sec->binary = true;
		buf_puts(&name, "BINARY[");
	} else if (att.name_len == 11 && strncasecmp(att.name, "BINARY.SIZE", 11) == 0) {
		sec->binary = true;
		sec->binary_size = true;
		buf_puts(&name, "BINARY.SIZE[");
	} else {
		fetch_section_free(sec);
		*err_r = "Unknown fetch attribute";
		return -1;
	}
	if (fetch_parse_section(att.section, att.section_len, sec, &name, err_r) < 0) {
		buf_free(&name);
		fetch_section_free(sec);
		return -1;
	}
	buf_putc(&name, ']');
	/* Dovecot ignores a partial on BINARY.SIZE rather than refusing it. */
	if (att.has_partial && !sec->binary_size) {
		sec->partial = true;
		sec->offset = att.partial_offset;
		sec->count = att.partial_len;
		buf_printf(&name, "<%llu>", (unsigned long long)sec->offset);
	}
	sec->name = buf_steal(&name);
	fetch_req_add(req, FK_SECTION, sec);
	return 0;
}

static int
fetch_parse_modifiers(struct imap_fetch_req *req, const struct imap_arg *mods, const char **err_r)
{
	const struct imap_arg *list;
	const char *s;
	bool changedsince = false;

	if (mods == NULL || imap_arg_is_eol(mods))
		return 0;
	if (!imap_arg_list(mods, &list, NULL)) {
		*err_r = "Invalid FETCH modifiers";
		return -1;
	}
	while (!imap_arg_is_eol(list)) {
		if (!imap_arg_atom(list, &s)) {
			*err_r = "FETCH modifiers contain non-atoms.";
			return -1;
		}
		if (strcasecmp(s, "CHANGEDSINCE") == 0) {
			uint64_t v;
			if (!imap_arg_number(list + 1, &v)) {
				*err_r = "Invalid CHANGEDSINCE modseq.";
				return -1;
			}
			req->changedsince = v;
			changedsince = true;
			req->modseq = true;
			fetch_req_add(req, FK_MODSEQ, NULL);
			list += 2;
		} else if (strcasecmp(s, "VANISHED") == 0) {
			req->vanished = true;
			list++;
		} else {
			*err_r = "Unknown FETCH modifier";
			return -1;
		}
	}
	if (req->vanished && !changedsince) {
		*err_r = "VANISHED used without CHANGEDSINCE";
		return -1;
	}
	return 0;
}

int
imap_fetch_parse(const struct imap_arg *atts, const struct imap_arg *modifiers, int rev2,
		 struct imap_fetch_req **req_r, const char **err_r)
{
	static const enum fetch_kind macro_all[] = {FK_FLAGS, FK_INTERNALDATE, FK_RFC822_SIZE,
						    FK_ENVELOPE};
	static const enum fetch_kind macro_fast[] = {FK_FLAGS, FK_INTERNALDATE, FK_RFC822_SIZE};
	static const enum fetch_kind macro_full[] = {FK_FLAGS, FK_INTERNALDATE, FK_RFC822_SIZE,
						     FK_ENVELOPE, FK_BODY};
	struct imap_fetch_req *req = xcalloc(1, sizeof(*req));
	const struct imap_arg *list;
	const char *s;

	/* rev2 changes replies (no \Recent; message/global), not the grammar we accept. */
	(void)rev2;
	*req_r = NULL;
	if (atts != NULL && atts->type == IMAP_ARG_ATOM && imap_arg_atom(atts, &s) &&
	    (strcasecmp(s, "ALL") == 0 || strcasecmp(s, "FAST") == 0 ||
	     strcasecmp(s, "FULL") == 0)) {
		const enum fetch_kind *m = macro_fast;
		size_t n = ARRAY_LEN(macro_fast);
		if (strcasecmp(s, "ALL") == 0) {
			m = macro_all;
			n = ARRAY_LEN(macro_all);
		} else if (strcasecmp(s, "FULL") == 0) {
			m = macro_full;
			n = ARRAY_LEN(macro_full);
		}
		for (size_t i = 0; i < n; i++)
			fetch_req_add(req, m[i], NULL);
		req->have_flags = true;
	} else if (atts != NULL && atts->type == IMAP_ARG_ATOM) {
		if (fetch_parse_att(req, atts, err_r) < 0)
			goto fail;
	} else if (imap_arg_list(atts, &list, NULL)) {
		if (imap_arg_is_eol(list)) {
			*err_r = "FETCH list is empty.";
			goto fail;
		}
		for (; !imap_arg_is_eol(list); list++) {
			if (list->type != IMAP_ARG_ATOM) {
				*err_r = "FETCH list contains non-atoms.";
				goto fail;
			}
			if (fetch_parse_att(req, list, err_r) < 0)
				goto fail;
		}
	} else {
		*err_r = "Invalid arguments.";
		goto fail;
	}
	if (fetch_parse_modifiers(req, modifiers, err_r) < 0)
		goto fail;
	if (req->sets_seen && !req->have_flags)
		fetch_req_add(req, FK_FLAGS_SEEN, NULL);
	*req_r = req;
	return 0;
fail:
	imap_fetch_req_free(&req);
	return -1;
}

/* --- message access --- */

int
imap_msg_map(struct store *st, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
	     struct imap_msg_map *m)
{
	struct stat sb;
	void *p;
	int fd, r;

	m->data = NULL;
	m->len = 0;
	m->mapped = false;
	r = store_msg_open(st, mailbox, uidvalidity, uid, &fd, NULL);
	if (r <= 0)
		return r;
	if (fstat(fd, &sb) < 0 || sb.st_size < 0 || (uint64_t)sb.st_size > SIZE_MAX) {
		close(fd);
		return -1;
	}
	if (sb.st_size == 0) {
		close(fd);
		return 1;
	}
	/*
	 * Most messages are small: reading one costs less than mapping it,
	 * whose munmap() makes every CPU running a thread of ours flush its
	 * TLB. Large ones are mapped, not copied.
	 */
	if (sb.st_size <= MSG_READ_MAX) {
		char *b = xmalloc((size_t)sb.st_size);
		ssize_t n = util_read_all(fd, b, (size_t)sb.st_size);
		close(fd);
		if (n != (ssize_t)sb.st_size) {
			free(b);
			return -1;
		}
		m->data = b;
		m->len = (size_t)n;
		m->mapped = false;
		return 1;
	}
	p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -1;
	m->data = p;
	m->len = (size_t)sb.st_size;
	m->mapped = true;
	return 1;
}

void
imap_msg_unmap(struct imap_msg_map *m)
{
	if (m->data != NULL && m->mapped)
		munmap((void *)m->data, m->len);
	else
		free((void *)m->data);
	m->data = NULL;
	m->len = 0;
}

int
imap_fetch_datetime(struct buf *out, int64_t t, int32_t tz_minutes)
{
	time_t tt = (time_t)(t + (int64_t)tz_minutes * 60);
	int a = tz_minutes < 0 ? -tz_minutes : tz_minutes;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL)
		return buf_puts(out, "01-Jan-1970 00:00:00 +0000");
	return buf_printf(out, "%02d-%s-%04d %02d:%02d:%02d %c%02d%02d", tm.tm_mday,
			  fetch_months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
			  tm.tm_sec, tz_minutes < 0 ? '-' : '+', a / 60, a % 60);
}

/* The parsed content of a message/global part (src), kept with the message. */
struct fetch_global {
	const struct mime_part *src;
	struct mime_part *tree;
};

/* What one imap_fetch_message() call has loaded of its message. */
struct fetch_msg {
	const struct imap_fetch_ctx *ctx;
	const struct store_msg *msg;
	struct imap_msg_map map;
	bool mapped;
	struct mime_part *root;
	struct fetch_global *globals; /* rev2: message/global contents parsed so far */
	size_t nglobals;
	struct store_msg_meta meta;
	bool meta_loaded;
	const struct store_msg_meta *metap;
	const char *err;
	bool fail; /* out reached its maximum */
	/*
	 * What is left of ctx->section_budget: the bytes body sections send,
	 * and those they decode or scan (BINARY, HEADER.FIELDS), whose output
	 * can be tiny (BINARY.SIZE) while each costs a pass over the part.
	 */
	bool bounded;
	uint64_t work_left;
};

static int
fm_map(struct fetch_msg *fm)
{
	int r;

	if (fm->mapped)
		return 0;
	r = imap_msg_map(fm->ctx->st, fm->ctx->mailbox, fm->ctx->uidvalidity, fm->msg->uid,
			 &fm->map);
	if (r <= 0) {
		fm->err = r == 0 ? IMAP_FETCH_ERR_EXPUNGED : IMAP_FETCH_ERR_STORE;
		return -1;
	}
	fm->mapped = true;
	return 0;
}

static int
fm_parse(struct fetch_msg *fm)
{
	if (fm->root != NULL)
		return 0;
	if (fm_map(fm) < 0)
		return -1;
	fm->root = mime_parse(fm->map.data != NULL ? fm->map.data : "", fm->map.len);
	return 0;
}

static int
fm_meta(struct fetch_msg *fm)
{
	int r;

	if (fm->metap != NULL)
		return 0;
	if (fm->ctx->meta != NULL && fm->ctx->meta->uid == fm->msg->uid) {
		fm->metap = fm->ctx->meta;
		return 0;
	}
	r = store_msg_meta(fm->ctx->st, fm->ctx->mailbox, fm->ctx->uidvalidity, fm->msg->uid,
			   &fm->meta);
	if (r <= 0) {
		fm->err = r == 0 ? IMAP_FETCH_ERR_EXPUNGED : IMAP_FETCH_ERR_STORE;
		return -1;
	}
	fm->meta_loaded = true;
	fm->metap = &fm->meta;
	return 0;
}

static void
fm_done(struct fetch_msg *fm)
{
	for (size_t i = 0; i < fm->nglobals; i++)
		mime_free(&fm->globals[i].tree);
	free(fm->globals);
	mime_free(&fm->root);
	if (fm->mapped)
		imap_msg_unmap(&fm->map);
	if (fm->meta_loaded)
		store_msg_meta_free(&fm->meta);
}

static void
fm_put(struct fetch_msg *fm, struct buf *out, const void *p, size_t n)
{
	if (!fm->fail && buf_append(out, p, n) < 0)
		fm->fail = true;
}

static void
fm_puts(struct fetch_msg *fm, struct buf *out, const char *s)
{
	fm_put(fm, out, s, strlen(s));
}

static void
fm_putc(struct fetch_msg *fm, struct buf *out, char c)
{
	fm_put(fm, out, &c, 1);
}

/* Append msg[0..n) as a literal; NULs become 0x80 unless binary (then literal8 if needed). */
static void
fm_literal(struct fetch_msg *fm, struct buf *out, const char *p, size_t n, bool binary, bool lit8)
{
	size_t start;

	if (fm->fail)
		return;
	if (buf_printf(out, "%s{%zu}\r\n", lit8 ? "~" : "", n) < 0) {
		fm->fail = true;
		return;
	}
	start = out->len;
	fm_put(fm, out, p, n);
	if (fm->fail || binary)
		return;
	for (char *q = out->data + start;
	     (q = memchr(q, '\0', (size_t)(out->data + out->len - q)));)
		*q++ = (char)0x80;
}

/* --- sections --- */

/* Spend n bytes of output, scanning or decoding; -1 (TOOBIG) past the budget. */
static int
fm_spend(struct fetch_msg *fm, uint64_t n)
{
	if (!fm->bounded)
		return 0;
	if (n > fm->work_left) {
		fm->err = IMAP_FETCH_ERR_TOOBIG;
		return -1;
	}
	fm->work_left -= n;
	return 0;
}

/*
 * The message inside p (message/rfc822; for rev2 also message/global, as
 * its BODYSTRUCTURE shows it: RFC 9051 6.4.5), or NULL. A message/global
 * content is parsed once and kept until the message is done, so that many
 * sections of a FETCH do not parse the same bytes again.
 */
static const struct mime_part *
fetch_inner_message(struct fetch_msg *fm, const struct mime_part *p)
{
	struct mime_part *g;

	if (p->flags & MIME_PART_MESSAGE)
		return p->children;
	if (!fm->ctx->rev2 || !(p->flags & MIME_PART_GLOBAL))
		return NULL;
	for (size_t i = 0; i < fm->nglobals; i++)
		if (fm->globals[i].src == p)
			return fm->globals[i].tree;
	g = mime_parse_global(p);
	fm->globals = xrealloc(fm->globals, (fm->nglobals + 1) * sizeof(*fm->globals));
	fm->globals[fm->nglobals].src = p;
	fm->globals[fm->nglobals++].tree = g;
	return g;
}

/* Dovecot's imap_msgpart_find() on our tree. NULL: no such part. */
static const struct mime_part *
fetch_find_part(struct fetch_msg *fm, const uint32_t *path, size_t n)
{
	const struct mime_part *part = fm->root;

	for (size_t i = 0; i < n && part != NULL; i++) {
		bool more = i + 1 < n;
		const struct mime_part *inner;
		if (part->flags & MIME_PART_MULTIPART) {
			const struct mime_part *c = part->children;
			for (uint32_t k = 1; k < path[i] && c != NULL; k++)
				c = c->next;
			part = c;
			if (part != NULL && more && (inner = fetch_inner_message(fm, part)) != NULL)
				part = inner;
		} else if (path[i] != 1) {
			part = NULL;
		} else if (more) {
			part = fetch_inner_message(fm, part);
		}
	}
	return part;
}

/* A byte range of the message. */
static void
fetch_range(const char **p_r, size_t *n_r, const char *msg, size_t off, size_t len)
{
	*p_r = msg + off;
	*n_r = len;
}

/* The message a HEADER/TEXT/HEADER.FIELDS section applies to, or NULL. */
static const struct mime_part *
fetch_section_message(struct fetch_msg *fm, const struct fetch_section *sec)
{
	const struct mime_part *p;

	if (sec->npath == 0)
		return fm->root;
	p = fetch_find_part(fm, sec->path, sec->npath);
	return p != NULL ? fetch_inner_message(fm, p) : NULL;
}

static bool
fetch_field_listed(const struct mime_field *f, const struct fetch_section *sec)
{
	uint32_t slot;

	return nameidx_find(&sec->fidx, (const char *const *)sec->fields, f->name, f->name_len,
			    &slot) >= 0;
}

/* Append the header fields of hdr[0..len) that are (not) listed, then an empty line. */
static int
fetch_header_fields(struct buf *out, const char *hdr, size_t len, const struct fetch_section *sec)
{
	struct mime_field f;
	size_t pos = 0;
	bool want = sec->type == SEC_FIELDS;
	/* hdr includes the empty line ending the header, when there is one. */
	bool has_blank = (len >= 1 && hdr[0] == '\n') || (len >= 2 && memcmp(hdr, "\r\n", 2) == 0) ||
			 (len >= 2 && memcmp(hdr + len - 2, "\n\n", 2) == 0) ||
			 (len >= 3 && memcmp(hdr + len - 3, "\n\r\n", 3) == 0);
	/* empty: a message with neither header nor body (an empty message/rfc822) */
	bool unterminated = len == 0 || hdr[len - 1] != '\n';

	while (mime_header_next(hdr, len, &pos, &f)) {
		bool listed = f.has_colon && fetch_field_listed(&f, sec);
		if (listed != want)
			continue;
		if (buf_append(out, hdr + f.off, f.len) < 0)
			return -1;
		if (want && (f.len == 0 || hdr[f.off + f.len - 1] != '\n')) {
			if (buf_append(out, "\r\n", 2) < 0)
				return -1;
		}
	}
	/*
	 * RFC 3501 6.4.5: the empty line is included, "except in the case of a
	 * message which has no body and no blank line". As Dovecot (our
	 * reference) does: HEADER.FIELDS ends with it unless the message stops
	 * inside its header or has none; HEADER.FIELDS.NOT returns the header as it is, so
	 * with the empty line only if the message had one.
	 */
	if (want ? unterminated : !has_blank)
		return 0;
	return buf_append(out, "\r\n", 2);
}

static bool
fetch_is_cte_field(const struct mime_field *f)
{
	return f->name_len == 25 && strncasecmp(f->name, "Content-Transfer-Encoding", 25) == 0;
}

/*
 * Append the BINARY form of part p (RFC 3516), header included or not:
 * base64 and quoted-printable bodies decoded (and their header saying so),
 * containers rebuilt around their decoded children. *converted is set when
 * anything was decoded. 0, -1 when out is full, -2 for an unknown encoding.
 */
static int
fetch_binary_part(struct buf *out, const struct mime_part *p, bool include_hdr, bool *converted)
{
	const char *msg = p->msg;
	enum mime_cte cte = mime_part_cte(p);
	/* a container's body is rebuilt from its children, never decoded: its
	 * header keeps the encoding it claims (RFC 2045 6.4 forbids base64 and
	 * quoted-printable there) */
	bool conv = (cte == MIME_CTE_BASE64 || cte == MIME_CTE_QP) && p->children == NULL;
	size_t end = p->body_off + p->body_len;

	if (cte == MIME_CTE_UNKNOWN)
		return -2;
	if (include_hdr) {
		if (conv) {
			const char *h = msg + p->hdr_off;
			struct mime_field f;
			size_t pos = 0, last = 0;
			while (mime_header_next(h, p->hdr_len, &pos, &f)) {
				if (!fetch_is_cte_field(&f) &&
				    buf_append(out, h + f.off, f.len) < 0)
					return -1;
				last = f.off + f.len;
			}
			if (buf_puts(out, "Content-Transfer-Encoding: binary\r\n") < 0 ||
			    buf_append(out, h + last, p->hdr_len - last) < 0)
				return -1;
		} else if (buf_append(out, msg + p->hdr_off, p->hdr_len) < 0) {
			return -1;
		}
	}
	if (p->children != NULL) {
		size_t copy = p->body_off;
		for (const struct mime_part *c = p->children; c != NULL; c = c->next) {
			if (c->hdr_off > copy && buf_append(out, msg + copy, c->hdr_off - copy) < 0)
				return -1;
			int r = fetch_binary_part(out, c, true, converted);
			if (r < 0)
				return r;
			copy = c->body_off + c->body_len;
		}
		if (end > copy && buf_append(out, msg + copy, end - copy) < 0)
			return -1;
		return 0;
	}
	if (p->body_len == 0)
		return 0;
	if (conv)
		*converted = true;
	return mime_part_decode(out, p);
}

/*
 * The bytes of a section: a range of the mapped message where it is one
 * (no copy), else built in data (header field lists; BINARY of bodies,
 * decoded). *lit8 tells whether BINARY must use literal8. 0, or -1 with
 * fm->err set.
 */
static int
fetch_section_data(struct fetch_msg *fm, const struct fetch_section *sec, struct buf *data,
		   const char **p_r, size_t *n_r, bool *decoded, bool *lit8)
{
	const struct mime_part *p = NULL, *m = NULL;
	bool converted = false;
	bool binary_body = sec->binary && (sec->type == SEC_FULL || sec->type == SEC_PART ||
					   sec->type == SEC_TEXT);
	int r = 0;

	*p_r = "";
	*n_r = 0;
	*decoded = false;
	*lit8 = false;
	if (fm_map(fm) < 0)
		return -1;
	if (sec->type == SEC_FULL && !binary_body) {
		*p_r = fm->map.data != NULL ? fm->map.data : "";
		*n_r = fm->map.len;
		return 0;
	}
	if (fm_parse(fm) < 0)
		return -1;
	switch (sec->type) {
	case SEC_FULL:
		if (fm_spend(fm, fm->map.len) < 0)
			return -1;
		r = fetch_binary_part(data, fm->root, true, &converted);
		break;
	case SEC_PART:
		p = fetch_find_part(fm, sec->path, sec->npath);
		if (p != NULL && binary_body) {
			if (fm_spend(fm, p->body_len) < 0)
				return -1;
			r = fetch_binary_part(data, p, false, &converted);
		} else if (p != NULL)
			fetch_range(p_r, n_r, p->msg, p->body_off, p->body_len);
		break;
	case SEC_MIME:
		p = fetch_find_part(fm, sec->path, sec->npath);
		if (p != NULL)
			fetch_range(p_r, n_r, p->msg, p->hdr_off, p->hdr_len);
		break;
	case SEC_TEXT:
		m = fetch_section_message(fm, sec);
		if (m != NULL && binary_body) {
			if (fm_spend(fm, m->body_len) < 0)
				return -1;
			r = fetch_binary_part(data, m, false, &converted);
		} else if (m != NULL)
			fetch_range(p_r, n_r, m->msg, m->body_off, m->body_len);
		break;
	case SEC_HEADER:
		m = fetch_section_message(fm, sec);
		if (m != NULL)
			fetch_range(p_r, n_r, m->msg, m->hdr_off, m->hdr_len);
		break;
	case SEC_FIELDS:
	case SEC_FIELDS_NOT:
		m = fetch_section_message(fm, sec);
		if (m != NULL) {
			if (fm_spend(fm, m->hdr_len) < 0)
				return -1;
			r = fetch_header_fields(data, m->msg + m->hdr_off, m->hdr_len, sec);
		}
		break;
	}
	if (r == -2) {
		fm->err = IMAP_FETCH_ERR_UNKNOWN_CTE;
		return -1;
	}
	if (r < 0) {
		fm->err = IMAP_FETCH_ERR_TOOBIG;
		return -1;
	}
	if (data->len > 0) {
		*p_r = data->data;
		*n_r = data->len;
	}
	if (binary_body) {
		*decoded = true;
		*lit8 = converted || (*n_r > 0 && memchr(*p_r, '\0', *n_r) != NULL);
	}
	return 0;
}

static int
fetch_write_section(struct fetch_msg *fm, struct buf *out, const struct fetch_section *sec)
{
	struct buf data = BUF_INIT(out->max);
	const char *p;
	size_t len, off = 0, n;
	bool decoded, lit8;

	if (fetch_section_data(fm, sec, &data, &p, &len, &decoded, &lit8) < 0) {
		buf_free(&data);
		return -1;
	}
	fm_puts(fm, out, sec->name);
	if (sec->binary_size) {
		if (!fm->fail && buf_printf(out, " %zu", len) < 0)
			fm->fail = true;
		buf_free(&data);
		return 0;
	}
	n = len;
	if (sec->partial) {
		if (sec->offset >= len) {
			n = 0;
		} else {
			off = (size_t)sec->offset;
			n = len - off;
			if (sec->count < n)
				n = (size_t)sec->count;
		}
	}
	if (fm_spend(fm, n) < 0) {
		buf_free(&data);
		return -1;
	}
	fm_putc(fm, out, ' ');
	fm_literal(fm, out, p + off, n, decoded, lit8);
	buf_free(&data);
	return 0;
}

/* --- items --- */

static void
fetch_write_flags(struct fetch_msg *fm, struct buf *out)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} sys[] = {
	    {STORE_F_ANSWERED, "\\Answered"}, {STORE_F_FLAGGED, "\\Flagged"},
	    {STORE_F_DELETED, "\\Deleted"},   {STORE_F_SEEN, "\\Seen"},
	    {STORE_F_DRAFT, "\\Draft"},
	};
	const struct imap_fetch_ctx *ctx = fm->ctx;
	bool first = true;

	fm_puts(fm, out, "FLAGS (");
	for (size_t i = 0; i < ARRAY_LEN(sys); i++) {
		if (!(fm->msg->flags & sys[i].bit))
			continue;
		if (!first)
			fm_putc(fm, out, ' ');
		fm_puts(fm, out, sys[i].name);
		first = false;
	}
	if (!ctx->rev2 && ctx->recent != NULL && ctx->recent->count > 0 &&
	    imap_seqset_contains(ctx->recent, fm->msg->uid)) {
		if (!first)
			fm_putc(fm, out, ' ');
		fm_puts(fm, out, "\\Recent");
		first = false;
	}
	if (fm->msg->keywords != NULL) {
		const char *k = fm->msg->keywords;
		while (*k != '\0') {
			size_t n;
			while (*k == ' ')
				k++;
			n = strcspn(k, " ");
			if (n == 0)
				break;
			if (!first)
				fm_putc(fm, out, ' ');
			fm_put(fm, out, k, n);
			first = false;
			k += n;
		}
	}
	fm_putc(fm, out, ')');
}

/* ENVELOPE, BODY or BODYSTRUCTURE: the cached text, or computed from the message. */
static int
fetch_write_structure(struct fetch_msg *fm, struct buf *out, enum fetch_kind kind)
{
	const char *cached;
	unsigned int bs_flags = 0;

	if (fm_meta(fm) < 0)
		return -1;
	switch (kind) {
	case FK_ENVELOPE:
		fm_puts(fm, out, "ENVELOPE ");
		cached = fm->metap->envelope;
		break;
	case FK_BODY:
		fm_puts(fm, out, "BODY ");
		cached = fm->metap->body;
		break;
	default:
		fm_puts(fm, out, "BODYSTRUCTURE ");
		cached = fm->metap->bodystructure;
		bs_flags = MIME_BS_EXTENDED;
		break;
	}
	/* The cache holds the IMAP4rev1 form; rev2 shows message/global's content. */
	if (cached != NULL && fm->ctx->rev2 && kind != FK_ENVELOPE &&
	    strcasestr(cached, "\"global\"") != NULL) {
		cached = NULL;
		bs_flags |= MIME_BS_GLOBAL;
	}
	if (cached != NULL) {
		fm_puts(fm, out, cached);
		return 0;
	}
	if (fm_parse(fm) < 0)
		return -1;
	if (fm->fail)
		return 0;
	if ((kind == FK_ENVELOPE ? mime_envelope(out, fm->root)
				 : mime_bodystructure(out, fm->root, bs_flags)) < 0)
		fm->fail = true;
	return 0;
}

/* RFC822, RFC822.HEADER, RFC822.TEXT. */
static int
fetch_write_rfc822(struct fetch_msg *fm, struct buf *out, enum fetch_kind kind)
{
	size_t hlen, off = 0, n;

	if (fm_map(fm) < 0)
		return -1;
	hlen = fm->map.len > 0 ? mime_header_block_len(fm->map.data, fm->map.len) : 0;
	n = fm->map.len;
	if (kind == FK_RFC822) {
		fm_puts(fm, out, "RFC822 ");
	} else if (kind == FK_RFC822_HEADER) {
		fm_puts(fm, out, "RFC822.HEADER ");
		n = hlen;
	} else {
		fm_puts(fm, out, "RFC822.TEXT ");
		off = hlen;
		n = fm->map.len - hlen;
	}
	fm_literal(fm, out, fm->map.data != NULL ? fm->map.data + off : "", n, false, false);
	return 0;
}

static bool
fetch_req_has(const struct imap_fetch_req *req, enum fetch_kind kind)
{
	for (size_t i = 0; i < req->nbuffered; i++)
		if (req->items[i].kind == kind)
			return true;
	return false;
}

/*
 * After FLAGS with a \Seen this FETCH set, under CONDSTORE: the UID and
 * MODSEQ that every report of a flag change carries (RFC 7162 3.1), unless
 * the request has them anyway.
 */
static void
fetch_write_seen_modseq(struct fetch_msg *fm, struct buf *out, const struct imap_fetch_req *req)
{
	if (!fetch_req_has(req, FK_UID) && buf_printf(out, " UID %u", fm->msg->uid) < 0)
		fm->fail = true;
	if (!fm->fail && !fetch_req_has(req, FK_MODSEQ) &&
	    buf_printf(out, " MODSEQ (%llu)", (unsigned long long)fm->msg->modseq) < 0)
		fm->fail = true;
}

int
imap_fetch_message(struct buf *out, const struct imap_fetch_ctx *ctx,
		   const struct imap_fetch_req *req, uint32_t seq, const struct store_msg *msg,
		   const char **err_r)
{
	struct fetch_msg fm;
	size_t start = out->len;
	bool first = true;
	int r = 0;

	memset(&fm, 0, sizeof(fm));
	fm.ctx = ctx;
	fm.msg = msg;
	fm.bounded = ctx->section_budget != 0;
	fm.work_left = ctx->section_budget;
	if (buf_printf(out, "* %u FETCH (", seq) < 0) {
		*err_r = IMAP_FETCH_ERR_TOOBIG;
		return -1;
	}
	for (size_t i = 0; i < req->n && r == 0 && !fm.fail; i++) {
		const struct fetch_item *it = &req->items[i];
		if (it->kind == FK_FLAGS_SEEN && !ctx->seen_changed)
			continue;
		if (!first)
			fm_putc(&fm, out, ' ');
		first = false;
		switch (it->kind) {
		case FK_UID:
			if (buf_printf(out, "UID %u", msg->uid) < 0)
				fm.fail = true;
			break;
		case FK_FLAGS:
		case FK_FLAGS_SEEN:
			fetch_write_flags(&fm, out);
			if (ctx->seen_changed && ctx->condstore)
				fetch_write_seen_modseq(&fm, out, req);
			break;
		case FK_INTERNALDATE:
			fm_puts(&fm, out, "INTERNALDATE \"");
			if (!fm.fail &&
			    imap_fetch_datetime(out, msg->internal_date, msg->internal_tz) < 0)
				fm.fail = true;
			fm_putc(&fm, out, '"');
			break;
		case FK_RFC822_SIZE:
			if (buf_printf(out, "RFC822.SIZE %llu", (unsigned long long)msg->size) < 0)
				fm.fail = true;
			break;
		case FK_MODSEQ:
			if (buf_printf(out, "MODSEQ (%llu)", (unsigned long long)msg->modseq) < 0)
				fm.fail = true;
			break;
		case FK_SAVEDATE:
			fm_puts(&fm, out, "SAVEDATE NIL");
			break;
		case FK_ENVELOPE:
		case FK_BODY:
		case FK_BODYSTRUCTURE:
			r = fetch_write_structure(&fm, out, it->kind);
			break;
		case FK_RFC822:
		case FK_RFC822_HEADER:
		case FK_RFC822_TEXT:
			r = fetch_write_rfc822(&fm, out, it->kind);
			break;
		case FK_SECTION:
			r = fetch_write_section(&fm, out, it->sec);
			break;
		}
	}
	fm_puts(&fm, out, ")\r\n");
	fm_done(&fm);
	if (r < 0 || fm.fail) {
		buf_truncate(out, start);
		*err_r = r < 0 ? fm.err : IMAP_FETCH_ERR_TOOBIG;
		return -1;
	}
	return 0;
}
