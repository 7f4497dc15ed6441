/*
 * pop3_proto — see pop3_proto.h. A line framer over (pointer, length)
 * chunks, a table-driven command parser, and the RETR/TOP output filter,
 * which copies whole line spans (memchr for the LF) rather than byte by
 * byte and keeps just enough state (start of line, header or body, lines
 * left) to be fed any split of the message.
 *
 * SECURITY: all input is peer data. No function reads past the length it
 * is given; the framer copies into its fixed array only after checking
 * the room, and wipes a partial line it drops (it may be a password).
 */
#include "pop3/pop3_proto.h"
#include "core/buf.h"
#include "core/util.h"

#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ */
/* Line framer */

void
pop3_line_init(struct pop3_line *l)
{
	l->len = 0;
	l->overflow = 0;
	l->ready = 0;
	l->data[0] = '\0';
}

void
pop3_line_reset(struct pop3_line *l)
{
	util_wipe(l->data, sizeof(l->data));
	pop3_line_init(l);
}

static int
fail(struct pop3_error *err, enum pop3_err code, const char *text)
{
	err->code = code;
	err->text = text;
	return -1;
}

int
pop3_line_feed(struct pop3_line *l, const char *p, size_t n, size_t max, size_t *used_r,
	       struct pop3_error *err)
{
	if (l->ready) {
		/* The previous line was handed out: start the next one. */
		util_wipe(l->data, l->len + 1 < sizeof(l->data) ? l->len + 1 : sizeof(l->data));
		pop3_line_init(l);
	}
	if (max > POP3_AUTH_LINE_MAX)
		max = POP3_AUTH_LINE_MAX;
	if (max < 3)
		max = 3;

	const char *nl = n > 0 ? memchr(p, '\n', n) : NULL;
	size_t take = nl ? (size_t)(nl - p) : n;

	if (!l->overflow) {
		/* Room for the content and the CR before the LF: max - 1. */
		if (take > max - 1 - l->len) {
			util_wipe(l->data, l->len);
			l->len = 0;
			l->overflow = 1;
		} else {
			memcpy(l->data + l->len, p, take);
			l->len += take;
		}
	}
	if (nl == NULL) {
		*used_r = n;
		return 0;
	}
	*used_r = take + 1;
	l->ready = 1;
	if (!l->overflow && l->len > 0 && l->data[l->len - 1] == '\r')
		l->len--;
	if (l->overflow || l->len > max - 2) {
		util_wipe(l->data, l->len);
		l->len = 0;
		l->data[0] = '\0';
		return fail(err, POP3_ERR_TOO_LONG, "Command line too long (at most 255 octets)");
	}
	l->data[l->len] = '\0';
	return 1;
}

/* ------------------------------------------------------------------ */
/* Command lines */

struct pop3_cmd_def {
	const char *name;
	enum pop3_cmd cmd;
	unsigned min, max; /* argument count */
	const char *usage;
};

static const struct pop3_cmd_def pop3_cmds[] = {
    {"USER", POP3_CMD_USER, 1, 1, "Syntax: USER name"},
    {"PASS", POP3_CMD_PASS, 1, 1, "Syntax: PASS password"},
    {"STAT", POP3_CMD_STAT, 0, 0, "Syntax: STAT (no arguments)"},
    {"LIST", POP3_CMD_LIST, 0, 1, "Syntax: LIST [msg]"},
    {"RETR", POP3_CMD_RETR, 1, 1, "Syntax: RETR msg"},
    {"DELE", POP3_CMD_DELE, 1, 1, "Syntax: DELE msg"},
    {"NOOP", POP3_CMD_NOOP, 0, 0, "Syntax: NOOP (no arguments)"},
    {"RSET", POP3_CMD_RSET, 0, 0, "Syntax: RSET (no arguments)"},
    {"QUIT", POP3_CMD_QUIT, 0, 0, "Syntax: QUIT (no arguments)"},
    {"TOP", POP3_CMD_TOP, 2, 2, "Syntax: TOP msg lines"},
    {"UIDL", POP3_CMD_UIDL, 0, 1, "Syntax: UIDL [msg]"},
    {"CAPA", POP3_CMD_CAPA, 0, 0, "Syntax: CAPA (no arguments)"},
    {"STLS", POP3_CMD_STLS, 0, 0, "Syntax: STLS (no arguments)"},
    {"AUTH", POP3_CMD_AUTH, 0, 2, "Syntax: AUTH mechanism [initial-response]"},
    {"APOP", POP3_CMD_APOP, 2, 2, "Syntax: APOP name digest"},
};

const char *
pop3_cmd_name(enum pop3_cmd cmd)
{
	for (size_t i = 0; i < ARRAY_LEN(pop3_cmds); i++)
		if (pop3_cmds[i].cmd == cmd)
			return pop3_cmds[i].name;
	return "?";
}

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* A decimal number of at most 10 digits that fits 32 bits and is >= min. */
static int
parse_num(const char *s, size_t n, uint32_t min, uint32_t *r)
{
	uint64_t v = 0;

	if (n == 0 || n > 10)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > POP3_NUM_MAX || v < min)
		return -1;
	*r = (uint32_t)v;
	return 0;
}

/* RFC 4422 §3.1: a mechanism name is 1..20 of [A-Z0-9-_] (any case here). */
static int
mech_ok(const char *s, size_t n)
{
	if (n == 0 || n > POP3_MECH_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-' ||
		      c == '_'))
			return 0;
	}
	return 1;
}

int
pop3_cmd_parse(const char *line, size_t len, struct pop3_cmdline *r, struct pop3_error *err)
{
	const struct pop3_cmd_def *def = NULL;
	size_t i;

	memset(r, 0, sizeof(*r));
	err->code = POP3_ERR_NONE;
	err->text = NULL;
	if (len == 0)
		return fail(err, POP3_ERR_EMPTY, "Empty command");

	/* The verb: everything up to the first space. */
	for (i = 0; i < len && line[i] != ' '; i++)
		;
	r->verb = line;
	r->verb_len = i;
	for (size_t k = 0; k < ARRAY_LEN(pop3_cmds); k++) {
		size_t nl = strlen(pop3_cmds[k].name);
		if (nl == r->verb_len && strncasecmp(line, pop3_cmds[k].name, nl) == 0) {
			def = &pop3_cmds[k];
			r->cmd = def->cmd;
			break;
		}
	}

	/* No NUL or other control bytes anywhere (a password included). */
	for (size_t k = 0; k < len; k++) {
		unsigned char c = (unsigned char)line[k];
		if (c == '\0')
			return fail(err, POP3_ERR_NUL, "NUL bytes are not allowed in commands");
		if (c < 0x20 || c == 0x7f)
			return fail(err, POP3_ERR_CTRL,
				    "Control characters are not allowed in commands");
	}
	if (def == NULL)
		return fail(err, POP3_ERR_UNKNOWN, "Unknown command");

	if (def->cmd == POP3_CMD_PASS) {
		/* RFC 1939 §7: the password is the rest of the line, spaces and all. */
		if (i + 1 >= len)
			return fail(err, POP3_ERR_SYNTAX, def->usage);
		r->nargs = 1;
		r->arg[0] = line + i + 1;
		r->arg_len[0] = len - i - 1;
		return 0;
	}

	/* Other commands: space-separated words, trailing spaces ignored. */
	while (i < len) {
		while (i < len && line[i] == ' ')
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && line[i] != ' ')
			i++;
		if (r->nargs >= def->max || r->nargs >= ARRAY_LEN(r->arg))
			return fail(err, POP3_ERR_SYNTAX, def->usage);
		r->arg[r->nargs] = line + start;
		r->arg_len[r->nargs] = i - start;
		r->nargs++;
	}
	if (r->nargs < def->min)
		return fail(err, POP3_ERR_SYNTAX, def->usage);

	switch (def->cmd) {
	case POP3_CMD_LIST:
	case POP3_CMD_UIDL:
	case POP3_CMD_RETR:
	case POP3_CMD_DELE:
	case POP3_CMD_TOP:
		if (r->nargs >= 1 && parse_num(r->arg[0], r->arg_len[0], 1, &r->num[0]) < 0)
			return fail(err, POP3_ERR_NUMBER, "Invalid message number");
		if (def->cmd == POP3_CMD_TOP &&
		    parse_num(r->arg[1], r->arg_len[1], 0, &r->num[1]) < 0)
			return fail(err, POP3_ERR_NUMBER, "Invalid number of lines");
		break;
	case POP3_CMD_AUTH:
		if (r->nargs >= 1 && !mech_ok(r->arg[0], r->arg_len[0]))
			return fail(err, POP3_ERR_SYNTAX, def->usage);
		break;
	default:
		break;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* RETR / TOP output */

void
pop3_dot_init(struct pop3_dot *d, int top, uint64_t lines)
{
	memset(d, 0, sizeof(*d));
	d->bol = 1;
	d->top = top != 0;
	d->lines_left = lines;
}

int
pop3_dot_feed(struct pop3_dot *d, const char *p, size_t n, struct buf *out)
{
	size_t mark = out->len;
	uint64_t out0 = d->out;
	size_t i = 0;

	while (i < n) {
		if (d->done)
			break;
		if (d->bol) {
			if (d->top && d->in_body && d->lines_left == 0) {
				d->done = 1;
				break;
			}
			if (p[i] == '.') {
				if (buf_putc(out, '.') < 0)
					goto full;
				d->out++;
			}
			d->bol = 0;
		}
		const char *nl = memchr(p + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - p) + 1 : n;
		if (buf_append(out, p + i, end - i) < 0)
			goto full;
		d->out += end - i;
		if (nl == NULL) {
			d->line_len += end - i;
			d->last = p[end - 1];
		} else {
			size_t before = end - 1 - i; /* this chunk's bytes before the LF */
			char prev = before > 0 ? p[end - 2] : d->last;
			size_t line_len = d->line_len + before;
			int blank = line_len == 0 || (line_len == 1 && prev == '\r');
			if (!d->in_body) {
				if (blank)
					d->in_body = 1;
			} else if (d->top && d->lines_left > 0) {
				d->lines_left--;
			}
			d->line_len = 0;
			d->bol = 1;
			d->last = '\n';
		}
		i = end;
	}
	d->in += n;
	if (d->top && !d->done && d->bol && d->in_body && d->lines_left == 0)
		d->done = 1;
	return d->done ? 1 : 0;
full:
	buf_truncate(out, mark);
	d->out = out0;
	return -1;
}

int
pop3_dot_finish(struct pop3_dot *d, struct buf *out)
{
	size_t mark = out->len;

	if (d->out > 0 && d->last != '\n') {
		if (buf_append(out, "\r\n", 2) < 0)
			return -1;
		d->out += 2;
	}
	if (buf_append(out, ".\r\n", 3) < 0) {
		buf_truncate(out, mark);
		return -1;
	}
	d->out += 3;
	return 0;
}
