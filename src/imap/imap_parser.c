/*
 * imap_parser — see imap_parser.h. A byte-driven state machine: every byte
 * of a command line moves one state (so a command split anywhere parses the
 * same), literal data is copied in bulk into a buffer of its own. While a
 * command is read, arguments are kept as a flat array of nodes with parent
 * indices and their text in one struct buf as offsets (both may
 * reallocate); when the line ends they are laid out once into the
 * struct imap_arg tree the session walks.
 *
 * After an error the parser goes into skip mode: it discards to the end of
 * the line, and if that line ends with a non-synchronising literal header it
 * swallows exactly that many bytes and carries on skipping, so the next
 * command starts on a real command boundary.
 *
 * SECURITY: all input is hostile. No size a peer sends is trusted before it
 * has been checked against the limits; numbers are parsed overflow-safe;
 * nesting, argument count and buffered text are bounded.
 */
#include "imap/imap_parser.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/util.h"

#define DEF_MAX_LINE 65536
#define DEF_MAX_LITERAL ((uint64_t)1024 * 1024)
#define DEF_MAX_NONSYNC 4096
#define DEF_MAX_ARGS 4096
#define DEF_MAX_DEPTH 32
/* number64 of RFC 9051: 0 .. 2^63-1 */
#define LITERAL_SIZE_MAX ((uint64_t)INT64_MAX)
/* Text buffers larger than this are freed between commands. */
#define TEXT_KEEP ((size_t)64 * 1024)
/* Literal buffers start at most this big and grow as data arrives. */
#define LITERAL_PREALLOC ((uint64_t)1024 * 1024)

enum pmode {
	M_START,       /* between commands: skips empty lines */
	M_CMD,	       /* inside a command line */
	M_LIT_PENDING, /* literal header read; waiting for accept/reject */
	M_LIT_DATA,    /* copying literal data */
	M_RAW,	       /* reading one raw line */
	M_SKIP,	       /* discarding after an error */
	M_SKIP_LIT,    /* discarding the data of a non-synchronising literal */
};

enum pstate {
	PS_START,
	PS_START_CR,
	PS_TAG,
	PS_NAME,
	PS_ARGSEP, /* after SP or '(' : an argument, SP, ')' or the line end */
	PS_AFTER,  /* right after a quoted string, list or literal */
	PS_ATOM,
	PS_SECT,
	PS_SECT_QUOTED,
	PS_SECT_ESC,
	PS_QUOTED,
	PS_QUOTED_ESC,
	PS_TILDE,
	PS_LIT_OPEN,
	PS_LIT_PLUS,
	PS_LIT_CLOSE,
	PS_LIT_CR,
	PS_EOL_CR,
	PS_RAW,
};

/* Skip-mode tracker for a literal header at the end of the discarded line. */
enum skstate {
	SK_NONE,
	SK_BRACE,
	SK_PLUS,
	SK_CLOSE,
	SK_CLOSE_CR,
};

struct pnode {
	enum imap_arg_type type;
	unsigned flags;
	size_t off;    /* text offset; literal index for literals */
	size_t len;    /* bytes of text or literal */
	size_t parent; /* index + 1 of the enclosing list; 0 at top level */
	size_t nchild;
	size_t block; /* lists: where the children go in the args array */
	size_t fill;
};

struct imap_parser {
	struct imap_parser_limits lim;
	struct imap_parser_limits next_lim;
	bool utf8;

	enum pmode mode;
	enum pstate st;
	bool release;  /* drop the previous item at the next feed */
	bool raw_next; /* next item is a raw line */

	struct buf text;
	struct pnode *nodes;
	size_t nnodes, nodes_cap;
	size_t *stack; /* open lists, node indices */
	size_t depth, stack_cap;
	struct buf *lits;
	size_t nlits, lits_cap;
	struct imap_arg *args;
	size_t args_cap;
	struct imap_command cmd;

	size_t tag_off, name_off;
	bool have_tag, have_name, have_line, have_cmd;
	size_t line_len;
	size_t cur; /* node being read */
	size_t line_bytes;
	uint64_t cmd_bytes;
	int sect_depth;
	/*
	 * A literal header-fld-name inside BODY[HEADER.FIELDS (...)]: its data
	 * goes into the atom's text as a quoted string; a byte no header name
	 * can hold (CR, LF, NUL, 8-bit) marks it bad, reported after it.
	 */
	bool sect_lit, sect_lit_bad;

	/* literal header and data */
	uint64_t lit_size, lit_left;
	bool lit_digits, lit_overflow, lit_plus, lit_binary;

	/* UTF-8 validation inside a quoted string */
	unsigned u8_need;
	unsigned char u8_lo, u8_hi;

	/* skip mode */
	bool sk_literals;
	enum skstate sk;
	uint64_t sk_size;
	bool sk_digits, sk_overflow, sk_plus;

	enum imap_parse_error err;
	bool fatal;
	char errmsg[160];
};

static void
parser_apply_limits(struct imap_parser *p)
{
	struct imap_parser_limits l = p->next_lim;

	if (l.max_line == 0)
		l.max_line = DEF_MAX_LINE;
	if (l.max_literal == 0)
		l.max_literal = DEF_MAX_LITERAL;
	if (l.max_literal > LITERAL_SIZE_MAX)
		l.max_literal = LITERAL_SIZE_MAX;
	if (l.max_literal > SIZE_MAX - 1)
		l.max_literal = SIZE_MAX - 1;
	if (l.max_nonsync == 0)
		l.max_nonsync = DEF_MAX_NONSYNC;
	if (l.max_command == 0) {
		l.max_command = l.max_literal + l.max_line;
		if (l.max_command < l.max_literal)
			l.max_command = UINT64_MAX;
	}
	if (l.max_args == 0)
		l.max_args = DEF_MAX_ARGS;
	if (l.max_depth == 0)
		l.max_depth = DEF_MAX_DEPTH;
	p->lim = l;
	if (p->stack_cap < l.max_depth) {
		p->stack = xrealloc(p->stack, l.max_depth * sizeof(*p->stack));
		p->stack_cap = l.max_depth;
	}
}

struct imap_parser *
imap_parser_new(const struct imap_parser_limits *lim)
{
	struct imap_parser *p = xcalloc(1, sizeof(*p));

	if (lim != NULL)
		p->next_lim = *lim;
	parser_apply_limits(p);
	buf_init(&p->text, 0);
	p->mode = M_START;
	p->st = PS_START;
	return p;
}

static void
parser_free_literals(struct imap_parser *p)
{
	for (size_t i = 0; i < p->nlits; i++)
		buf_free(&p->lits[i]);
	p->nlits = 0;
}

void
imap_parser_free(struct imap_parser **pp)
{
	struct imap_parser *p = *pp;

	if (p == NULL)
		return;
	parser_free_literals(p);
	free(p->lits);
	buf_free(&p->text);
	free(p->nodes);
	free(p->stack);
	free(p->args);
	free(p);
	*pp = NULL;
}

void
imap_parser_set_limits(struct imap_parser *p, const struct imap_parser_limits *lim)
{
	memset(&p->next_lim, 0, sizeof(p->next_lim));
	if (lim != NULL)
		p->next_lim = *lim;
	if (p->mode == M_START && p->st == PS_START)
		parser_apply_limits(p);
}

void
imap_parser_set_utf8(struct imap_parser *p, bool on)
{
	p->utf8 = on;
}

/* Forget the previous item: text, nodes, literals, tag. */
static void
parser_clear(struct imap_parser *p)
{
	buf_reset(&p->text);
	p->nnodes = 0;
	p->depth = 0;
	parser_free_literals(p);
	memset(&p->cmd, 0, sizeof(p->cmd));
	p->have_tag = false;
	p->have_name = false;
	p->have_line = false;
	p->have_cmd = false;
	p->line_bytes = 0;
	p->cmd_bytes = 0;
	p->sect_lit = false;
	p->sect_lit_bad = false;
	p->err = IMAP_PERR_NONE;
	p->fatal = false;
	p->errmsg[0] = '\0';
	/* Keep a small text buffer for the next command, not a huge one. */
	if (p->text.cap > TEXT_KEEP)
		buf_free(&p->text);
}

static void parser_set_error(struct imap_parser *p, enum imap_parse_error e, const char *fmt, ...)
    PRINTF_LIKE(3, 4);

static void
parser_set_error(struct imap_parser *p, enum imap_parse_error e, const char *fmt, ...)
{
	va_list ap;

	p->err = e;
	va_start(ap, fmt);
	/* Messages are short and fixed; a cut one would still name the fault. */
	(void)vsnprintf(p->errmsg, sizeof(p->errmsg), fmt, ap);
	va_end(ap);
}

static void
parser_skip_reset(struct imap_parser *p)
{
	p->sk = SK_NONE;
	p->sk_size = 0;
	p->sk_digits = false;
	p->sk_overflow = false;
	p->sk_plus = false;
}

/*
 * One byte of a line being discarded. Returns 0, or -1 when the line ends
 * in a non-synchronising literal too large to even count (fatal).
 */
static int
parser_skip_byte(struct imap_parser *p, unsigned char c)
{
	if (c == '\n') {
		bool lit =
		    p->sk_literals && (p->sk == SK_CLOSE || p->sk == SK_CLOSE_CR) && p->sk_plus;
		bool overflow = p->sk_overflow;
		uint64_t n = p->sk_size;

		parser_skip_reset(p);
		p->mode = M_START;
		p->st = PS_START;
		if (!lit)
			return 0;
		if (overflow) {
			parser_set_error(p, IMAP_PERR_LITERAL_OVERFLOW,
					 "non-synchronising literal size out of range");
			p->fatal = true;
			return -1;
		}
		p->mode = M_SKIP_LIT;
		p->lit_left = n;
		return 0;
	}
	if (!p->sk_literals)
		return 0;
	switch (p->sk) {
	case SK_BRACE:
		if (c >= '0' && c <= '9') {
			unsigned d = (unsigned)(c - '0');
			if (p->sk_size > (LITERAL_SIZE_MAX - d) / 10)
				p->sk_overflow = true;
			else
				p->sk_size = p->sk_size * 10 + d;
			p->sk_digits = true;
			return 0;
		}
		if (c == '+' && p->sk_digits) {
			p->sk = SK_PLUS;
			p->sk_plus = true;
			return 0;
		}
		if (c == '}' && p->sk_digits) {
			p->sk = SK_CLOSE;
			return 0;
		}
		break;
	case SK_PLUS:
		if (c == '}') {
			p->sk = SK_CLOSE;
			return 0;
		}
		break;
	case SK_CLOSE:
		if (c == '\r') {
			p->sk = SK_CLOSE_CR;
			return 0;
		}
		break;
	case SK_NONE:
	case SK_CLOSE_CR:
		break;
	}
	parser_skip_reset(p);
	if (c == '{')
		p->sk = SK_BRACE;
	return 0;
}

/*
 * The command went wrong at byte c: record the error and discard the rest
 * of it, c included. Returns IMAP_PARSE_ERROR.
 */
static int parser_fail(struct imap_parser *p, unsigned char c, enum imap_parse_error e,
		       const char *fmt, ...) PRINTF_LIKE(4, 5);

static int
parser_fail(struct imap_parser *p, unsigned char c, enum imap_parse_error e, const char *fmt, ...)
{
	va_list ap;

	p->err = e;
	va_start(ap, fmt);
	/* Messages are short and fixed; a cut one would still name the fault. */
	(void)vsnprintf(p->errmsg, sizeof(p->errmsg), fmt, ap);
	va_end(ap);
	p->sk_literals = p->mode != M_RAW;
	p->mode = M_SKIP;
	parser_skip_reset(p);
	/* A second error from the same byte cannot happen: the line just began. */
	(void)parser_skip_byte(p, c);
	p->release = true;
	return IMAP_PARSE_ERROR;
}

static int
parser_syntax(struct imap_parser *p, unsigned char c, const char *what)
{
	return parser_fail(p, c, IMAP_PERR_SYNTAX, "%s", what);
}

/* ATOM-CHAR: any CHAR except atom-specials. */
static bool
is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '%':
	case '*':
	case '"':
	case '\\':
	case ']':
		return false;
	}
	return true;
}

/*
 * The text buffer has no maximum of its own: what goes in is bounded by
 * max_command, counted byte by byte before anything is appended (twice that
 * at most, as a literal in a section is stored with its quotes escaped).
 */
static void
parser_text_putc(struct imap_parser *p, unsigned char c)
{
	if (buf_putc(&p->text, (char)c) < 0)
		PANIC("unbounded buffer refused a byte");
}

/* Start a node of type t in the current list. 0, or -1 (too many). */
static int
parser_node_new(struct imap_parser *p, unsigned char c, enum imap_arg_type t)
{
	if (p->nnodes >= p->lim.max_args)
		return parser_fail(p, c, IMAP_PERR_TOO_MANY_ARGS, "too many arguments (limit %u)",
				   p->lim.max_args);
	if (p->nnodes == p->nodes_cap) {
		size_t cap = p->nodes_cap ? p->nodes_cap * 2 : 16;
		p->nodes = xrealloc(p->nodes, cap * sizeof(*p->nodes));
		p->nodes_cap = cap;
	}
	struct pnode *n = &p->nodes[p->nnodes];
	memset(n, 0, sizeof(*n));
	n->type = t;
	n->off = p->text.len;
	if (p->depth > 0) {
		n->parent = p->stack[p->depth - 1] + 1;
		p->nodes[p->stack[p->depth - 1]].nchild++;
	}
	p->cur = p->nnodes++;
	return 0;
}

/* NUL-terminate the text of the current node. */
static void
parser_node_end_text(struct imap_parser *p)
{
	struct pnode *n = &p->nodes[p->cur];

	n->len = p->text.len - n->off;
	parser_text_putc(p, '\0');
}

static int
parser_too_big(struct imap_parser *p, unsigned char c)
{
	return parser_fail(p, c, IMAP_PERR_COMMAND_TOO_BIG, "command too large (limit %llu bytes)",
			   (unsigned long long)p->lim.max_command);
}

static bool
is_fetch_section_name(const char *s, size_t n)
{
	static const char *const names[] = {"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK",
					    "BINARY.SIZE"};

	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (strlen(names[i]) == n && strncasecmp(s, names[i], n) == 0)
			return true;
	return false;
}

static int
parser_atom_end(struct imap_parser *p, unsigned char c)
{
	struct pnode *n = &p->nodes[p->cur];

	parser_node_end_text(p);
	if ((n->flags & IMAP_ARGF_BACKSLASH) && n->len < 2)
		return parser_syntax(p, c, "empty flag name");
	if (n->flags == 0 && n->len == 3 && strncasecmp(p->text.data + n->off, "NIL", 3) == 0)
		n->type = IMAP_ARG_NIL;
	return 0;
}

static int
parser_list_open(struct imap_parser *p, unsigned char c)
{
	if (p->depth >= p->lim.max_depth)
		return parser_fail(p, c, IMAP_PERR_TOO_DEEP, "lists nested too deeply (limit %u)",
				   p->lim.max_depth);
	if (parser_node_new(p, c, IMAP_ARG_LIST) < 0)
		return -1;
	p->stack[p->depth++] = p->cur;
	p->st = PS_ARGSEP;
	return 0;
}

static int
parser_list_close(struct imap_parser *p, unsigned char c)
{
	if (p->depth == 0)
		return parser_syntax(p, c, "unexpected ')'");
	p->depth--;
	p->st = PS_AFTER;
	return 0;
}

/* Lay the nodes out as the struct imap_arg tree and fill in p->cmd. */
static void
parser_build(struct imap_parser *p)
{
	size_t nlists = 0, ntop = 0;

	for (size_t i = 0; i < p->nnodes; i++) {
		if (p->nodes[i].type == IMAP_ARG_LIST)
			nlists++;
		if (p->nodes[i].parent == 0)
			ntop++;
	}
	size_t total = p->nnodes + nlists + 1;
	if (total > p->args_cap) {
		free(p->args);
		p->args = xcalloc(total, sizeof(*p->args));
		p->args_cap = total;
	}
	size_t next = ntop + 1, topfill = 0;
	for (size_t i = 0; i < p->nnodes; i++) {
		struct pnode *n = &p->nodes[i];
		if (n->type == IMAP_ARG_LIST) {
			n->block = next;
			next += n->nchild + 1;
		}
		n->fill = 0;
	}
	ASSERT(next == total);
	for (size_t i = 0; i < p->nnodes; i++) {
		struct pnode *n = &p->nodes[i];
		size_t at;
		if (n->parent == 0) {
			at = topfill++;
		} else {
			struct pnode *par = &p->nodes[n->parent - 1];
			at = par->block + par->fill++;
		}
		struct imap_arg *a = &p->args[at];
		memset(a, 0, sizeof(*a));
		a->type = n->type;
		a->flags = n->flags;
		switch (n->type) {
		case IMAP_ARG_LIST:
			a->list = &p->args[n->block];
			a->len = n->nchild;
			memset(&p->args[n->block + n->nchild], 0, sizeof(*a));
			break;
		case IMAP_ARG_LITERAL:
		case IMAP_ARG_LITERAL8:
			a->str = buf_str(&p->lits[n->off]);
			a->len = p->lits[n->off].len;
			break;
		default:
			a->str = p->text.data + n->off;
			a->len = n->len;
			break;
		}
	}
	memset(&p->args[ntop], 0, sizeof(p->args[ntop]));
	p->cmd.tag = p->text.data + p->tag_off;
	p->cmd.name = p->text.data + p->name_off;
	p->cmd.args = p->args;
	p->cmd.count = ntop;
	p->cmd.size = p->cmd_bytes;
	p->have_cmd = true;
}

/* The line ended (LF seen). */
static int
parser_end_line(struct imap_parser *p, unsigned char c)
{
	if (p->depth > 0)
		return parser_syntax(p, c, "unterminated list");
	parser_build(p);
	p->mode = M_START;
	p->st = PS_START;
	p->release = true;
	return IMAP_PARSE_DONE;
}

static void
parser_literal_header_begin(struct imap_parser *p, bool binary)
{
	p->lit_size = 0;
	p->lit_digits = false;
	p->lit_overflow = false;
	p->lit_plus = false;
	p->lit_binary = binary;
	p->st = PS_LIT_OPEN;
}

static int
parser_literal_start(struct imap_parser *p, unsigned char c, bool binary)
{
	if (parser_node_new(p, c, binary ? IMAP_ARG_LITERAL8 : IMAP_ARG_LITERAL) < 0)
		return -1;
	parser_literal_header_begin(p, binary);
	return 0;
}

/* The LF of a literal header. */
static int
parser_literal_header_end(struct imap_parser *p)
{
	uint64_t n = p->lit_size;
	uint64_t limit = p->lim.max_literal;
	enum imap_parse_error e = IMAP_PERR_NONE;

	p->line_bytes = 0;
	if (p->lit_overflow) {
		parser_set_error(p, IMAP_PERR_LITERAL_OVERFLOW, "literal size out of range");
		p->release = true;
		if (p->lit_plus) {
			/* The data follows at once and its length is unknowable. */
			p->fatal = true;
		}
		p->mode = M_START;
		p->st = PS_START;
		return IMAP_PARSE_ERROR;
	}
	if (n > limit) {
		e = IMAP_PERR_LITERAL_TOO_BIG;
		parser_set_error(p, e, "literal too large (limit %llu bytes)",
				 (unsigned long long)limit);
	} else if (p->lit_plus && n > p->lim.max_nonsync) {
		e = IMAP_PERR_NONSYNC_TOO_BIG;
		parser_set_error(p, e, "non-synchronising literal too large (limit %llu bytes)",
				 (unsigned long long)p->lim.max_nonsync);
	} else if (p->sect_lit && n > p->lim.max_line) {
		/* It becomes part of the section's text, which a line bounds. */
		e = IMAP_PERR_LITERAL_TOO_BIG;
		parser_set_error(p, e, "literal in a section too large (limit %zu bytes)",
				 p->lim.max_line);
	} else if (n > p->lim.max_command - p->cmd_bytes) {
		e = IMAP_PERR_COMMAND_TOO_BIG;
		parser_set_error(p, e, "command too large (limit %llu bytes)",
				 (unsigned long long)p->lim.max_command);
	}
	if (e != IMAP_PERR_NONE) {
		p->release = true;
		if (p->lit_plus) {
			p->mode = M_SKIP_LIT;
			p->lit_left = n;
			p->sk_literals = true;
		} else {
			p->mode = M_START;
			p->st = PS_START;
		}
		return IMAP_PARSE_ERROR;
	}
	p->mode = M_LIT_PENDING;
	return IMAP_PARSE_LITERAL;
}

/* Incremental UTF-8 check of one octet >= 0x80 in a quoted string. */
static bool
parser_utf8_byte(struct imap_parser *p, unsigned char c)
{
	if (p->u8_need > 0) {
		if (c < p->u8_lo || c > p->u8_hi)
			return false;
		p->u8_need--;
		p->u8_lo = 0x80;
		p->u8_hi = 0xbf;
		return true;
	}
	p->u8_lo = 0x80;
	p->u8_hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf) {
		p->u8_need = 1;
	} else if (c >= 0xe0 && c <= 0xef) {
		p->u8_need = 2;
		if (c == 0xe0)
			p->u8_lo = 0xa0;
		else if (c == 0xed)
			p->u8_hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		p->u8_need = 3;
		if (c == 0xf0)
			p->u8_lo = 0x90;
		else if (c == 0xf4)
			p->u8_hi = 0x8f;
	} else {
		return false;
	}
	return true;
}

static int
parser_atom_begin(struct imap_parser *p, unsigned char c, unsigned flags)
{
	if (parser_node_new(p, c, IMAP_ARG_ATOM) < 0)
		return -1;
	p->nodes[p->cur].flags = flags;
	p->st = PS_ATOM;
	return 0;
}

/* One byte that may begin an argument (state PS_ARGSEP). */
static int
parser_arg_start(struct imap_parser *p, unsigned char c)
{
	switch (c) {
	case ' ':
		return 0;
	case '\r':
		p->st = PS_EOL_CR;
		return 0;
	case '\n':
		return parser_end_line(p, c);
	case '(':
		return parser_list_open(p, c);
	case ')':
		return parser_list_close(p, c);
	case '"':
		if (parser_node_new(p, c, IMAP_ARG_QUOTED) < 0)
			return -1;
		p->u8_need = 0;
		p->st = PS_QUOTED;
		return 0;
	case '{':
		return parser_literal_start(p, c, false);
	case '~':
		p->st = PS_TILDE;
		return 0;
	case '\\':
		if (parser_atom_begin(p, c, IMAP_ARGF_BACKSLASH) < 0)
			return -1;
		parser_text_putc(p, c);
		return 0;
	}
	if (c >= 0x80)
		return parser_syntax(p, c, "8-bit character in atom");
	if (!is_atom_char(c) && c != '*' && c != '%' && c != ']')
		return parser_syntax(p, c, "invalid character");
	if (parser_atom_begin(p, c, 0) < 0)
		return -1;
	p->st = PS_ATOM;
	return -2; /* reprocess c as an atom byte */
}

/* One byte inside an atom. */
static int
parser_atom_byte(struct imap_parser *p, unsigned char c)
{
	struct pnode *n = &p->nodes[p->cur];

	switch (c) {
	case ' ':
		if (parser_atom_end(p, c) < 0)
			return -1;
		p->st = PS_ARGSEP;
		return 0;
	case ')':
		if (parser_atom_end(p, c) < 0)
			return -1;
		return parser_list_close(p, c);
	case '\r':
		if (parser_atom_end(p, c) < 0)
			return -1;
		p->st = PS_EOL_CR;
		return 0;
	case '\n':
		if (parser_atom_end(p, c) < 0)
			return -1;
		return parser_end_line(p, c);
	case '*':
	case '%':
		n->flags |= IMAP_ARGF_WILDCARD;
		break;
	case ']':
		n->flags |= IMAP_ARGF_RESP_SPECIAL;
		break;
	case '[':
		if (!(n->flags & (IMAP_ARGF_SECTION | IMAP_ARGF_BACKSLASH)) &&
		    is_fetch_section_name(p->text.data + n->off, p->text.len - n->off)) {
			n->flags |= IMAP_ARGF_SECTION;
			p->sect_depth = 0;
			p->st = PS_SECT;
		}
		break;
	default:
		if (c >= 0x80)
			return parser_syntax(p, c, "8-bit character in atom");
		if (!is_atom_char(c))
			return parser_syntax(p, c, "invalid character in atom");
		break;
	}
	parser_text_putc(p, c);
	return 0;
}

/* One byte between the brackets of BODY[...] and the like. */
static int
parser_sect_byte(struct imap_parser *p, unsigned char c)
{
	struct pnode *n = &p->nodes[p->cur];
	char prev;

	if (p->sect_lit_bad)
		return parser_syntax(p, c, "invalid header name in section literal");
	switch (p->st) {
	case PS_SECT:
		switch (c) {
		case ']':
			if (p->sect_depth != 0)
				return parser_syntax(p, c, "unbalanced parentheses in section");
			p->st = PS_ATOM;
			break;
		case '(':
			if (p->sect_depth != 0)
				return parser_syntax(p, c, "nested list in section");
			p->sect_depth++;
			n->flags |= IMAP_ARGF_SPECIALS;
			break;
		case ')':
			if (p->sect_depth == 0)
				return parser_syntax(p, c, "unexpected ')' in section");
			p->sect_depth--;
			break;
		case ' ':
			n->flags |= IMAP_ARGF_SPECIALS;
			break;
		case '"':
			n->flags |= IMAP_ARGF_SPECIALS;
			p->st = PS_SECT_QUOTED;
			break;
		case '\r':
		case '\n':
			return parser_syntax(p, c, "unterminated section");
		case '{':
			/*
			 * header-fld-name is an astring (RFC 9051 §9, RFC 3501 §9), so a
			 * literal may stand for a whole name in the header list.
			 */
			prev = p->text.data[p->text.len - 1];
			if (p->sect_depth != 1 || (prev != '(' && prev != ' '))
				return parser_syntax(p, c,
						     "literal in a section is not a header name");
			p->sect_lit = true;
			p->sect_lit_bad = false;
			parser_literal_header_begin(p, false);
			return 0;
		default:
			if (!is_atom_char(c))
				return parser_syntax(p, c, "invalid character in section");
			break;
		}
		break;
	case PS_SECT_QUOTED:
		if (c == '"')
			p->st = PS_SECT;
		else if (c == '\\')
			p->st = PS_SECT_ESC;
		else if (c == '\r' || c == '\n' || c == '\0' || c >= 0x80)
			return parser_syntax(p, c, "invalid quoted string in section");
		break;
	case PS_SECT_ESC:
		if (c != '"' && c != '\\')
			return parser_syntax(p, c, "invalid escape in quoted string");
		p->st = PS_SECT_QUOTED;
		break;
	default:
		PANIC("parser_sect_byte in state %d", (int)p->st);
	}
	parser_text_putc(p, c);
	return 0;
}

static int
parser_quoted_byte(struct imap_parser *p, unsigned char c)
{
	struct pnode *n = &p->nodes[p->cur];

	if (p->st == PS_QUOTED_ESC) {
		if (c != '"' && c != '\\')
			return parser_syntax(p, c, "invalid escape in quoted string");
		p->st = PS_QUOTED;
	} else if (c >= 0x80) {
		n->flags |= IMAP_ARGF_8BIT;
		if (p->utf8 && !parser_utf8_byte(p, c))
			return parser_syntax(p, c, "invalid UTF-8 in quoted string");
	} else if (p->u8_need > 0) {
		return parser_syntax(p, c, "invalid UTF-8 in quoted string");
	} else if (c == '"') {
		parser_node_end_text(p);
		p->st = PS_AFTER;
		return 0;
	} else if (c == '\\') {
		p->st = PS_QUOTED_ESC;
		return 0;
	} else if (c == '\r' || c == '\n') {
		return parser_syntax(p, c, "unterminated quoted string");
	} else if (c == '\0') {
		return parser_syntax(p, c, "NUL in quoted string");
	}
	parser_text_putc(p, c);
	return 0;
}

static int
parser_literal_header_byte(struct imap_parser *p, unsigned char c)
{
	switch (p->st) {
	case PS_LIT_OPEN:
		if (c >= '0' && c <= '9') {
			unsigned d = (unsigned)(c - '0');
			if (p->lit_size > (LITERAL_SIZE_MAX - d) / 10)
				p->lit_overflow = true;
			else
				p->lit_size = p->lit_size * 10 + d;
			p->lit_digits = true;
			return 0;
		}
		if (p->lit_digits && c == '+') {
			p->lit_plus = true;
			p->st = PS_LIT_PLUS;
			return 0;
		}
		if (p->lit_digits && c == '}') {
			p->st = PS_LIT_CLOSE;
			return 0;
		}
		return parser_syntax(p, c, "invalid literal size");
	case PS_LIT_PLUS:
		if (c != '}')
			return parser_syntax(p, c, "invalid literal size");
		p->st = PS_LIT_CLOSE;
		return 0;
	case PS_LIT_CLOSE:
		if (c == '\r') {
			p->st = PS_LIT_CR;
			return 0;
		}
		if (c == '\n')
			return parser_literal_header_end(p);
		return parser_syntax(p, c, "literal header not at end of line");
	case PS_LIT_CR:
		if (c == '\n')
			return parser_literal_header_end(p);
		return parser_syntax(p, c, "CR without LF");
	default:
		PANIC("parser_literal_header_byte in state %d", (int)p->st);
	}
}

/* One byte of a command line (mode M_CMD, or M_START when it begins one). */
static int
parser_cmd_byte(struct imap_parser *p, unsigned char c)
{
	int r;

	if (p->mode == M_START) {
		if (p->st == PS_START_CR) {
			p->st = PS_START;
			if (c == '\n')
				return 0;
			return parser_syntax(p, c, "CR without LF");
		}
		if (c == '\n')
			return 0;
		if (c == '\r') {
			p->st = PS_START_CR;
			return 0;
		}
		parser_clear(p);
		parser_apply_limits(p);
		p->mode = M_CMD;
		p->st = PS_TAG;
		p->tag_off = 0;
	}

	p->cmd_bytes++;
	if (p->cmd_bytes > p->lim.max_command)
		return parser_too_big(p, c);
	if (c != '\r' && c != '\n' && ++p->line_bytes > p->lim.max_line)
		return parser_fail(p, c, IMAP_PERR_LINE_TOO_LONG, "line too long (limit %zu bytes)",
				   p->lim.max_line);
again:
	switch (p->st) {
	case PS_TAG:
		if (c == ' ' || c == '\r' || c == '\n') {
			if (p->text.len == 0)
				return parser_syntax(p, c, "missing tag");
			parser_text_putc(p, '\0');
			p->have_tag = true;
			p->name_off = p->text.len;
			if (c != ' ')
				return parser_syntax(p, c, "missing command name");
			p->st = PS_NAME;
			return 0;
		}
		if ((!is_atom_char(c) && c != ']') || c == '+')
			return parser_syntax(p, c, "invalid character in tag");
		parser_text_putc(p, c);
		return 0;
	case PS_NAME:
		if (c == ' ' || c == '\r' || c == '\n') {
			if (p->text.len == p->name_off)
				return parser_syntax(p, c, "missing command name");
			parser_text_putc(p, '\0');
			p->have_name = true;
			if (c == ' ') {
				p->st = PS_ARGSEP;
				return 0;
			}
			if (c == '\r') {
				p->st = PS_EOL_CR;
				return 0;
			}
			return parser_end_line(p, c);
		}
		if (!is_atom_char(c))
			return parser_syntax(p, c, "invalid character in command name");
		parser_text_putc(p, c);
		return 0;
	case PS_ARGSEP:
		r = parser_arg_start(p, c);
		if (r == -2)
			goto again;
		return r;
	case PS_AFTER:
		switch (c) {
		case ' ':
			p->st = PS_ARGSEP;
			return 0;
		case ')':
			return parser_list_close(p, c);
		case '\r':
			p->st = PS_EOL_CR;
			return 0;
		case '\n':
			return parser_end_line(p, c);
		}
		return parser_syntax(p, c, "missing space between arguments");
	case PS_ATOM:
		return parser_atom_byte(p, c);
	case PS_SECT:
	case PS_SECT_QUOTED:
	case PS_SECT_ESC:
		return parser_sect_byte(p, c);
	case PS_QUOTED:
	case PS_QUOTED_ESC:
		return parser_quoted_byte(p, c);
	case PS_TILDE:
		if (c == '{')
			return parser_literal_start(p, c, true);
		if (parser_atom_begin(p, c, 0) < 0)
			return -1;
		parser_text_putc(p, '~');
		goto again;
	case PS_LIT_OPEN:
	case PS_LIT_PLUS:
	case PS_LIT_CLOSE:
	case PS_LIT_CR:
		return parser_literal_header_byte(p, c);
	case PS_EOL_CR:
		if (c != '\n')
			return parser_syntax(p, c, "CR without LF");
		return parser_end_line(p, c);
	case PS_START:
	case PS_START_CR:
	case PS_RAW:
		break;
	}
	PANIC("parser_cmd_byte in state %d", (int)p->st);
}

static int
parser_raw_byte(struct imap_parser *p, unsigned char c)
{
	if (c == '\n') {
		size_t n = p->text.len;
		if (n > 0 && p->text.data[n - 1] == '\r')
			n--;
		if (n > p->lim.max_line)
			return parser_fail(p, c, IMAP_PERR_LINE_TOO_LONG,
					   "line too long (limit %zu bytes)", p->lim.max_line);
		buf_truncate(&p->text, n);
		p->line_len = n;
		p->have_line = true;
		p->mode = M_START;
		p->st = PS_START;
		p->release = true;
		return IMAP_PARSE_DONE;
	}
	/* One more than the limit: room for the CR of CRLF. */
	if (p->text.len >= p->lim.max_line + 1)
		return parser_fail(p, c, IMAP_PERR_LINE_TOO_LONG, "line too long (limit %zu bytes)",
				   p->lim.max_line);
	parser_text_putc(p, c);
	return 0;
}

static void
parser_literal_done(struct imap_parser *p)
{
	p->mode = M_CMD;
	p->st = PS_AFTER;
	if (p->sect_lit) {
		parser_text_putc(p, '"');
		p->sect_lit = false;
		p->st = PS_SECT;
	}
}

/* Data of a literal in a section, kept in the atom's text as a quoted string. */
static size_t
parser_sect_literal_data(struct imap_parser *p, const unsigned char *d, size_t len)
{
	size_t n = len;

	if ((uint64_t)n > p->lit_left)
		n = (size_t)p->lit_left;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = d[i];
		/* RFC 5322 §2.2: a field name is printable US-ASCII. */
		if (c == '\r' || c == '\n' || c == '\0' || c >= 0x80) {
			p->sect_lit_bad = true;
			continue;
		}
		if (c == '"' || c == '\\')
			parser_text_putc(p, '\\');
		parser_text_putc(p, c);
	}
	p->lit_left -= n;
	p->cmd_bytes += n;
	return n;
}

/* Copy literal data; returns bytes used. */
static size_t
parser_literal_data(struct imap_parser *p, const unsigned char *d, size_t len)
{
	size_t n = len;
	struct pnode *node = &p->nodes[p->cur];
	struct buf *b = &p->lits[node->off];

	if ((uint64_t)n > p->lit_left)
		n = (size_t)p->lit_left;
	if (node->type == IMAP_ARG_LITERAL) {
		for (size_t i = 0; i < n; i++) {
			if (d[i] == '\0')
				node->flags |= IMAP_ARGF_NUL;
			else if (d[i] >= 0x80)
				node->flags |= IMAP_ARGF_8BIT;
		}
	} else if (memchr(d, '\0', n) != NULL) {
		node->flags |= IMAP_ARGF_NUL;
	}
	/* Cannot fail: the buffer's maximum is the literal's size. */
	if (buf_append(b, d, n) < 0)
		PANIC("literal buffer overflow");
	p->lit_left -= n;
	p->cmd_bytes += n;
	return n;
}

int
imap_parser_feed(struct imap_parser *p, const void *data, size_t len, size_t *used_r)
{
	const unsigned char *d = data;
	size_t i = 0;
	int r = IMAP_PARSE_MORE;

	if (p->mode == M_LIT_PENDING)
		PANIC("imap_parser_feed while a literal waits for accept/reject");
	if (p->release) {
		p->release = false;
		if (p->mode == M_START || p->mode == M_SKIP || p->mode == M_SKIP_LIT)
			parser_clear(p);
	}
	for (;;) {
		if (p->mode == M_LIT_DATA && p->lit_left == 0) {
			parser_literal_done(p);
			continue;
		}
		if (i >= len)
			break;
		if (p->mode == M_LIT_DATA) {
			if (p->sect_lit)
				i += parser_sect_literal_data(p, d + i, len - i);
			else
				i += parser_literal_data(p, d + i, len - i);
			continue;
		}
		if (p->mode == M_SKIP_LIT) {
			size_t n = len - i;
			if ((uint64_t)n > p->lit_left)
				n = (size_t)p->lit_left;
			i += n;
			p->lit_left -= n;
			if (p->lit_left == 0) {
				p->mode = M_SKIP;
				parser_skip_reset(p);
			}
			continue;
		}
		unsigned char c = d[i++];
		switch (p->mode) {
		case M_SKIP:
			if (parser_skip_byte(p, c) < 0) {
				p->release = true;
				r = IMAP_PARSE_ERROR;
			}
			break;
		case M_RAW:
			r = parser_raw_byte(p, c);
			break;
		case M_START:
			if (p->raw_next && p->st == PS_START) {
				/* Raw lines may be empty: no skipping of blank lines. */
				parser_clear(p);
				parser_apply_limits(p);
				p->raw_next = false;
				p->mode = M_RAW;
				r = parser_raw_byte(p, c);
				break;
			}
			r = parser_cmd_byte(p, c);
			break;
		case M_CMD:
			r = parser_cmd_byte(p, c);
			break;
		case M_LIT_PENDING:
		case M_LIT_DATA:
		case M_SKIP_LIT:
			PANIC("imap_parser_feed: bad mode %d", (int)p->mode);
		}
		if (r != IMAP_PARSE_MORE)
			break;
	}
	*used_r = i;
	return r;
}

const struct imap_command *
imap_parser_command(const struct imap_parser *p)
{
	return p->have_cmd ? &p->cmd : NULL;
}

void
imap_parser_read_line(struct imap_parser *p)
{
	if (p->mode != M_START || p->st != PS_START)
		PANIC("imap_parser_read_line in the middle of a command");
	p->raw_next = true;
}

const char *
imap_parser_line(const struct imap_parser *p, size_t *len_r)
{
	if (!p->have_line) {
		*len_r = 0;
		return NULL;
	}
	*len_r = p->line_len;
	return buf_str(&p->text);
}

const char *
imap_parser_tag(const struct imap_parser *p)
{
	return p->have_tag ? p->text.data + p->tag_off : NULL;
}

const char *
imap_parser_command_name(const struct imap_parser *p)
{
	return p->have_name ? p->text.data + p->name_off : NULL;
}

enum imap_parse_error
imap_parser_error(const struct imap_parser *p, const char **msg_r)
{
	if (msg_r != NULL)
		*msg_r = p->errmsg;
	return p->err;
}

bool
imap_parser_error_fatal(const struct imap_parser *p)
{
	return p->fatal;
}

void
imap_parser_literal_info(const struct imap_parser *p, uint64_t *size_r, bool *sync_r,
			 bool *binary_r)
{
	if (p->mode != M_LIT_PENDING)
		PANIC("imap_parser_literal_info without a waiting literal");
	*size_r = p->lit_size;
	*sync_r = !p->lit_plus;
	*binary_r = p->lit_binary;
}

void
imap_parser_literal_accept(struct imap_parser *p)
{
	if (p->mode != M_LIT_PENDING)
		PANIC("imap_parser_literal_accept without a waiting literal");
	if (p->sect_lit) {
		parser_text_putc(p, '"');
		p->lit_left = p->lit_size;
		p->mode = M_LIT_DATA;
		return;
	}
	if (p->nlits == p->lits_cap) {
		size_t cap = p->lits_cap ? p->lits_cap * 2 : 4;
		p->lits = xrealloc(p->lits, cap * sizeof(*p->lits));
		p->lits_cap = cap;
	}
	struct buf *b = &p->lits[p->nlits];
	/* The size was checked against max_literal, which fits in memory terms. */
	buf_init(b, (size_t)p->lit_size);
	if (p->lit_size > 0 && buf_grow(b, p->lit_size < LITERAL_PREALLOC ? (size_t)p->lit_size
									  : LITERAL_PREALLOC) < 0)
		PANIC("literal buffer");
	struct pnode *n = &p->nodes[p->cur];
	n->off = p->nlits++;
	n->len = (size_t)p->lit_size;
	if (p->lit_plus)
		n->flags |= IMAP_ARGF_NONSYNC;
	p->lit_left = p->lit_size;
	p->mode = M_LIT_DATA;
}

void
imap_parser_literal_reject(struct imap_parser *p)
{
	if (p->mode != M_LIT_PENDING)
		PANIC("imap_parser_literal_reject without a waiting literal");
	p->release = true;
	if (p->lit_plus) {
		p->mode = M_SKIP_LIT;
		p->lit_left = p->lit_size;
		p->sk_literals = true;
	} else {
		p->mode = M_START;
		p->st = PS_START;
	}
}

bool
imap_parser_literal_steal(struct imap_parser *p, const struct imap_arg *arg, struct buf *out)
{
	if (arg == NULL || !p->have_cmd)
		return false;
	if (arg < p->args || arg >= p->args + p->args_cap)
		return false;
	if (arg->type != IMAP_ARG_LITERAL && arg->type != IMAP_ARG_LITERAL8)
		return false;
	if (arg->flags & IMAP_ARGF_STOLEN)
		return false;
	struct imap_arg *a = &p->args[arg - p->args];
	buf_init(out, 0);
	if (a->len > 0) {
		size_t i;
		for (i = 0; i < p->nlits; i++)
			if (p->lits[i].data == a->str)
				break;
		if (i == p->nlits)
			PANIC("literal argument without its buffer");
		*out = p->lits[i];
		buf_init(&p->lits[i], 0);
	}
	a->str = "";
	a->len = 0;
	a->flags |= IMAP_ARGF_STOLEN;
	return true;
}

bool
imap_arg_is_eol(const struct imap_arg *a)
{
	return a == NULL || a->type == IMAP_ARG_EOL;
}

bool
imap_arg_is_nil(const struct imap_arg *a)
{
	return a != NULL && a->type == IMAP_ARG_NIL;
}

bool
imap_arg_atom(const struct imap_arg *a, const char **s_r)
{
	if (a == NULL || (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NIL))
		return false;
	*s_r = a->str;
	return true;
}

bool
imap_arg_string(const struct imap_arg *a, const char **s_r, size_t *len_r)
{
	if (a == NULL)
		return false;
	if (a->type != IMAP_ARG_QUOTED && a->type != IMAP_ARG_LITERAL)
		return false;
	if (a->flags & IMAP_ARGF_NUL)
		return false;
	*s_r = a->str;
	*len_r = a->len;
	return true;
}

bool
imap_arg_astring(const struct imap_arg *a, const char **s_r, size_t *len_r)
{
	if (a == NULL)
		return false;
	if (a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_NIL) {
		if (a->flags & (IMAP_ARGF_WILDCARD | IMAP_ARGF_BACKSLASH | IMAP_ARGF_SPECIALS))
			return false;
		*s_r = a->str;
		*len_r = a->len;
		return true;
	}
	return imap_arg_string(a, s_r, len_r);
}

bool
imap_arg_nstring(const struct imap_arg *a, const char **s_r, size_t *len_r)
{
	if (a != NULL && a->type == IMAP_ARG_NIL) {
		*s_r = NULL;
		*len_r = 0;
		return true;
	}
	return imap_arg_string(a, s_r, len_r);
}

bool
imap_arg_list_mailbox(const struct imap_arg *a, const char **s_r, size_t *len_r)
{
	if (a != NULL && a->type == IMAP_ARG_ATOM &&
	    !(a->flags & (IMAP_ARGF_BACKSLASH | IMAP_ARGF_SPECIALS))) {
		*s_r = a->str;
		*len_r = a->len;
		return true;
	}
	return imap_arg_astring(a, s_r, len_r);
}

bool
imap_arg_literal(const struct imap_arg *a, const char **s_r, size_t *len_r)
{
	if (a == NULL || (a->type != IMAP_ARG_LITERAL && a->type != IMAP_ARG_LITERAL8))
		return false;
	*s_r = a->str;
	*len_r = a->len;
	return true;
}

bool
imap_arg_list(const struct imap_arg *a, const struct imap_arg **list_r, size_t *count_r)
{
	if (a == NULL || a->type != IMAP_ARG_LIST)
		return false;
	*list_r = a->list;
	if (count_r != NULL)
		*count_r = a->len;
	return true;
}

bool
imap_arg_number(const struct imap_arg *a, uint64_t *r)
{
	uint64_t v;

	if (a == NULL || a->type != IMAP_ARG_ATOM)
		return false;
	if (util_parse_u64(a->str, a->len, &v) < 0 || v > (uint64_t)INT64_MAX)
		return false;
	*r = v;
	return true;
}

/* Digits s[0..n) as a number no larger than max; 0 or -1. */
static int
parse_bounded(const char *s, size_t n, uint64_t max, uint64_t *r)
{
	if (util_parse_u64(s, n, r) < 0 || *r > max)
		return -1;
	return 0;
}

int
imap_fetch_att_split(const struct imap_arg *a, struct imap_fetch_att *r)
{
	memset(r, 0, sizeof(*r));
	if (a == NULL || a->type != IMAP_ARG_ATOM)
		return -1;
	const char *s = a->str, *end = s + a->len;
	const char *br = memchr(s, '[', a->len);
	const char *lt = memchr(s, '<', a->len);

	if (lt != NULL && (br == NULL || lt < br)) {
		/* A partial needs a section before it. */
		return -1;
	}
	r->name = s;
	r->name_len = br ? (size_t)(br - s) : a->len;
	if (r->name_len == 0)
		return -1;
	if (br == NULL)
		return memchr(s, ']', a->len) == NULL ? 0 : -1;
	/* The closing bracket is the last ']' outside quotes. */
	const char *p = br + 1, *close = NULL;
	bool quoted = false;
	for (; p < end; p++) {
		if (quoted) {
			if (*p == '\\' && p + 1 < end)
				p++;
			else if (*p == '"')
				quoted = false;
		} else if (*p == '"') {
			quoted = true;
		} else if (*p == ']') {
			close = p;
			break;
		}
	}
	if (close == NULL)
		return -1;
	r->has_section = true;
	r->section = br + 1;
	r->section_len = (size_t)(close - br - 1);
	p = close + 1;
	if (p == end)
		return 0;
	if (*p != '<' || end[-1] != '>')
		return -1;
	const char *dot = memchr(p, '.', (size_t)(end - p));
	if (dot == NULL)
		return -1;
	uint64_t off, len;
	if (parse_bounded(p + 1, (size_t)(dot - p - 1), INT64_MAX, &off) < 0 ||
	    parse_bounded(dot + 1, (size_t)(end - 1 - dot - 1), INT64_MAX, &len) < 0 || len == 0)
		return -1;
	r->has_partial = true;
	r->partial_offset = off;
	r->partial_len = len;
	return 0;
}
