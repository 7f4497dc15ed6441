/*
 * smtp_proto — see smtp_proto.h. Hand-written recursive-descent parsers
 * over (pointer, length) pairs for RFC 5321 command lines, paths and
 * ESMTP parameters, one byte-driven state machine for DATA/BDAT content,
 * and the small codecs (xtext, base64, SASL PLAIN) the session needs.
 *
 * The DATA reader's one rule: a line ends only at CR LF. A bare CR or a
 * bare LF is content (recorded as an error so the message is refused),
 * never a line end, so the terminator can only be CR LF "." CR LF with a
 * real CR LF in front of the dot (or the DATA command's own CR LF).
 *
 * SECURITY: all input is peer data. No function reads past the length it
 * is given, copies go into fixed arrays after a length check or into
 * bounded bufs, and every malformed input is an error return, never an
 * assertion. Secrets (SASL PLAIN) are decoded into fixed arrays, never a
 * growing buffer, and wiped by the callers' wipe function.
 */
#include "smtp/smtp_proto.h"

#include <arpa/inet.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ */
/* Character classes (ASCII only, no locale). */

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

static int
is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned
hex_val(unsigned char c)
{
	if (is_digit(c))
		return (unsigned)(c - '0');
	if (c >= 'a' && c <= 'f')
		return (unsigned)(c - 'a' + 10);
	return (unsigned)(c - 'A' + 10);
}

static unsigned char
to_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* RFC 5322 atext. */
static int
is_atext(unsigned char c)
{
	return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* s[0..n) equals the ASCII literal lit, ignoring case. */
static int
ieq(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/*
 * Length of the well-formed UTF-8 sequence of one non-ASCII character at
 * p[0..n), or 0 if it is not one (overlong forms, surrogates, values past
 * U+10FFFF and truncated sequences are all refused).
 */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	if (c == 0xe0 && p[1] < 0xa0)
		return 0;
	if (c == 0xed && p[1] >= 0xa0)
		return 0;
	if (c == 0xf0 && p[1] < 0x90)
		return 0;
	if (c == 0xf4 && p[1] >= 0x90)
		return 0;
	return len;
}

/* All of p[0..n) is valid UTF-8 (ASCII included). */
static int
utf8_valid(const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		size_t k = utf8_len(p + i, n - i);
		if (k == 0)
			return 0;
		i += k;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* Errors */

static const struct {
	int reply;
	const char *enhanced;
	const char *text;
} err_table[] = {
    [SMTP_ERR_NONE] = {250, "2.0.0", "OK"},
    [SMTP_ERR_CMD_EMPTY] = {500, "5.5.2", "Error: empty command"},
    [SMTP_ERR_CMD_NUL] = {500, "5.5.2", "Error: NUL character in command"},
    [SMTP_ERR_CMD_CTRL] = {500, "5.5.2", "Error: control character in command"},
    [SMTP_ERR_CMD_8BIT] = {500, "5.5.2", "Error: 8-bit character in command"},
    [SMTP_ERR_CMD_UNKNOWN] = {500, "5.5.2", "Error: command not recognized"},
    [SMTP_ERR_CMD_SYNTAX] = {501, "5.5.4", "Syntax error in arguments"},
    [SMTP_ERR_PATH_SYNTAX] = {501, "5.1.3", "Syntax error in address"},
    [SMTP_ERR_PATH_NULL] = {553, "5.1.3", "Null address not allowed here"},
    [SMTP_ERR_PATH_TOO_LONG] = {501, "5.1.3", "Path too long"},
    [SMTP_ERR_PATH_LOCAL_TOO_LONG] = {501, "5.1.3", "Local part too long"},
    [SMTP_ERR_PATH_DOMAIN_TOO_LONG] = {501, "5.1.3", "Domain too long"},
    [SMTP_ERR_PATH_DOMAIN] = {501, "5.1.3", "Invalid domain in address"},
    [SMTP_ERR_PATH_NO_DOMAIN] = {501, "5.1.3", "Address must include a domain"},
    [SMTP_ERR_PATH_BAD_UTF8] = {501, "5.1.3", "Invalid UTF-8 in address"},
    [SMTP_ERR_PATH_UTF8] = {553, "5.6.7", "Non-ASCII address requires SMTPUTF8"},
    [SMTP_ERR_PARAM_SYNTAX] = {501, "5.5.4", "Syntax error in parameters"},
    [SMTP_ERR_PARAM_TOO_MANY] = {501, "5.5.4", "Too many parameters"},
    [SMTP_ERR_PARAM_DUPLICATE] = {501, "5.5.4", "Duplicate parameter"},
    [SMTP_ERR_PARAM_UNKNOWN] = {555, "5.5.4", "Unsupported parameter"},
    [SMTP_ERR_PARAM_VALUE] = {501, "5.5.4", "Invalid parameter value"},
    [SMTP_ERR_BASE64] = {501, "5.5.2", "Cannot decode base64 response"},
    [SMTP_ERR_SASL_SYNTAX] = {501, "5.5.2", "Malformed PLAIN response"},
    [SMTP_ERR_SASL_TOOLONG] = {500, "5.5.6", "Authentication exchange line is too long"},
    [SMTP_ERR_SASL_AUTHZID] = {535, "5.7.8", "Authentication credentials invalid"},
    [SMTP_ERR_SEQ_NO_MAIL] = {503, "5.5.1", "Bad sequence of commands: send MAIL first"},
    [SMTP_ERR_SEQ_NO_EHLO] = {503, "5.5.1", "Bad sequence of commands: BDAT needs EHLO"},
    [SMTP_ERR_SEQ_NO_RCPTS] = {554, "5.5.1", "No valid recipients"},
    [SMTP_ERR_DATA_TOO_BIG] = {552, "5.3.4", "Message size exceeds fixed limit"},
    [SMTP_ERR_DATA_BARE_LF] = {550, "5.6.0", "Message contains a bare LF, lines must end in CRLF"},
    [SMTP_ERR_DATA_BARE_CR] = {550, "5.6.0", "Message contains a bare CR, lines must end in CRLF"},
    [SMTP_ERR_DATA_LINE_TOO_LONG] = {550, "5.6.0",
				     "Message contains a line longer than 1000 octets"},
    [SMTP_ERR_DATA_NO_MEMORY] =
	{452, "4.3.1", "Insufficient system resources for the message now, try again later"},
};

void
smtp_error_set(struct smtp_error *err, enum smtp_err code)
{
	ASSERT((size_t)code < ARRAY_LEN(err_table));
	err->code = code;
	err->reply = err_table[code].reply;
	err->enhanced = err_table[code].enhanced;
	err->text = err_table[code].text;
}

/* Set err and return -1; text, if not NULL, replaces the standard text. */
static int
fail(struct smtp_error *err, enum smtp_err code, const char *text)
{
	smtp_error_set(err, code);
	if (text != NULL)
		err->text = text;
	return -1;
}

/* ------------------------------------------------------------------ */
/* Command lines */

enum arg_rule {
	ARG_NONE,     /* nothing may follow the verb */
	ARG_ANY,      /* optional free text */
	ARG_REQUIRED, /* some text must follow */
	ARG_MAIL,     /* FROM:<path> ... */
	ARG_RCPT,     /* TO:<path> ... */
	ARG_BDAT,     /* size [LAST] */
	ARG_AUTH,     /* mechanism [initial-response] */
};

static const struct cmd_def {
	const char *name;
	enum smtp_cmd cmd;
	enum arg_rule rule;
	const char *usage;
} cmd_table[] = {
    {"EHLO", SMTP_CMD_EHLO, ARG_REQUIRED, "Syntax: EHLO hostname"},
    {"HELO", SMTP_CMD_HELO, ARG_REQUIRED, "Syntax: HELO hostname"},
    {"MAIL", SMTP_CMD_MAIL, ARG_MAIL, "Syntax: MAIL FROM:<address>"},
    {"RCPT", SMTP_CMD_RCPT, ARG_RCPT, "Syntax: RCPT TO:<address>"},
    {"DATA", SMTP_CMD_DATA, ARG_NONE, "Syntax: DATA"},
    {"BDAT", SMTP_CMD_BDAT, ARG_BDAT, "Syntax: BDAT size [LAST]"},
    {"RSET", SMTP_CMD_RSET, ARG_NONE, "Syntax: RSET"},
    {"NOOP", SMTP_CMD_NOOP, ARG_ANY, "Syntax: NOOP"},
    {"QUIT", SMTP_CMD_QUIT, ARG_NONE, "Syntax: QUIT"},
    {"HELP", SMTP_CMD_HELP, ARG_ANY, "Syntax: HELP [topic]"},
    {"VRFY", SMTP_CMD_VRFY, ARG_REQUIRED, "Syntax: VRFY address"},
    {"EXPN", SMTP_CMD_EXPN, ARG_REQUIRED, "Syntax: EXPN list"},
    {"STARTTLS", SMTP_CMD_STARTTLS, ARG_NONE, "Syntax: STARTTLS"},
    {"AUTH", SMTP_CMD_AUTH, ARG_AUTH, "Syntax: AUTH mechanism [initial-response]"},
};

const char *
smtp_cmd_name(enum smtp_cmd cmd)
{
	for (size_t i = 0; i < ARRAY_LEN(cmd_table); i++)
		if (cmd_table[i].cmd == cmd)
			return cmd_table[i].name;
	return "UNKNOWN";
}

/* BDAT chunk-size [SP "LAST"]. */
static int
cmd_parse_bdat(const char *a, size_t n, struct smtp_cmdline *r)
{
	size_t i = 0;

	while (i < n && is_digit((unsigned char)a[i]))
		i++;
	if (i == 0 || util_parse_u64(a, i, &r->bdat_size) < 0)
		return -1;
	if (i == n)
		return 0;
	if (a[i] != ' ')
		return -1;
	while (i < n && a[i] == ' ')
		i++;
	if (!ieq(a + i, n - i, "LAST"))
		return -1;
	r->bdat_last = 1;
	return 0;
}

/* AUTH mechanism [SP initial-response]. */
static int
cmd_parse_auth(const char *a, size_t n, struct smtp_cmdline *r)
{
	size_t i = 0;

	/* RFC 4422 sasl-mech: 1*20 of upper-case letters, digits, '-', '_'. */
	while (i < n && (is_alnum((unsigned char)a[i]) || a[i] == '-' || a[i] == '_'))
		i++;
	if (i == 0 || i > 20 || (i < n && a[i] != ' '))
		return -1;
	r->auth_mech = a;
	r->auth_mech_len = i;
	while (i < n && a[i] == ' ')
		i++;
	if (i == n)
		return 0;
	/* The initial response: one token; bad base64 is the mechanism's
	 * 501 5.5.2 (RFC 4954 4), not a command syntax error, 8-bit octets
	 * included (controls never get here: smtp_cmd_parse refused them). */
	size_t s = i;
	while (i < n && (unsigned char)a[i] > ' ')
		i++;
	if (i != n)
		return -1;
	r->auth_ir = a + s;
	r->auth_ir_len = n - s;
	return 0;
}

int
smtp_line_is_bdat(const char *line, size_t len)
{
	if (len < 4 || strncasecmp(line, "BDAT", 4) != 0)
		return 0;
	if (len == 4)
		return 1;
	char c = (char)(line[4] | 0x20);	/* a letter in lower case */
	return !(c >= 'a' && c <= 'z') && !(line[4] >= '0' && line[4] <= '9');
}

int
smtp_cmd_parse(const char *line, size_t len, struct smtp_cmdline *r, struct smtp_error *err)
{
	const struct cmd_def *def = NULL;

	memset(r, 0, sizeof(*r));
	r->cmd = smtp_line_is_bdat(line, len) ? SMTP_CMD_BDAT : SMTP_CMD_UNKNOWN;
	r->arg = line;

	size_t vlen = 0;
	while (vlen < len && line[vlen] != ' ')
		vlen++;
	r->verb = line;
	r->verb_len = vlen;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c == 0)
			return fail(err, SMTP_ERR_CMD_NUL, NULL);
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return fail(err, SMTP_ERR_CMD_CTRL, NULL);
	}
	for (size_t i = 0; i < vlen; i++)
		if ((unsigned char)line[i] >= 0x80)
			return fail(err, SMTP_ERR_CMD_8BIT, NULL);

	/* Tolerate trailing blanks: some clients send "RSET " and mean RSET. */
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (len == 0)
		return fail(err, SMTP_ERR_CMD_EMPTY, NULL);
	if (vlen > len)
		r->verb_len = vlen = len;

	for (size_t i = 0; i < ARRAY_LEN(cmd_table); i++) {
		if (ieq(line, vlen, cmd_table[i].name)) {
			def = &cmd_table[i];
			break;
		}
	}
	if (def == NULL)
		return fail(err, SMTP_ERR_CMD_UNKNOWN, NULL);
	r->cmd = def->cmd;

	/* One SP separates the argument; more are tolerated, as Postfix does. */
	size_t i = vlen;
	while (i < len && line[i] == ' ')
		i++;
	const char *a = line + i;
	size_t n = len - i;
	r->arg = a;
	r->arg_len = n;

	switch (def->rule) {
	case ARG_NONE:
		if (n != 0)
			return fail(err, SMTP_ERR_CMD_SYNTAX, def->usage);
		break;
	case ARG_ANY:
		break;
	case ARG_REQUIRED:
		if (n == 0)
			return fail(err, SMTP_ERR_CMD_SYNTAX, def->usage);
		break;
	case ARG_MAIL:
	case ARG_RCPT: {
		const char *kw = def->rule == ARG_MAIL ? "FROM:" : "TO:";
		size_t kl = strlen(kw);
		if (n < kl || strncasecmp(a, kw, kl) != 0)
			return fail(err, SMTP_ERR_CMD_SYNTAX, def->usage);
		a += kl;
		n -= kl;
		/* "MAIL FROM: <a@b>" is common enough to accept. */
		while (n > 0 && *a == ' ') {
			a++;
			n--;
		}
		if (n == 0)
			return fail(err, SMTP_ERR_CMD_SYNTAX, def->usage);
		r->arg = a;
		r->arg_len = n;
		break;
	}
	case ARG_BDAT:
		if (cmd_parse_bdat(a, n, r) < 0)
			return fail(err, SMTP_ERR_CMD_SYNTAX, def->usage);
		break;
	case ARG_AUTH:
		if (cmd_parse_auth(a, n, r) < 0)
			return fail(err, SMTP_ERR_CMD_SYNTAX, def->usage);
		break;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Domains */

/* An LDH domain name, labels may hold UTF-8. 0, -1 (syntax) or -2 (bad UTF-8). */
static int
domain_name_check(const unsigned char *s, size_t n, int *utf8)
{
	size_t start = 0;
	int label_utf8 = 0;

	if (n == 0)
		return -1;
	for (size_t i = 0; i <= n;) {
		if (i == n || s[i] == '.') {
			size_t ll = i - start;
			if (ll == 0)
				return -1;
			/* A U-label's limit applies to its A-label: leave that to IDNA. */
			if (!label_utf8 && ll > 63)
				return -1;
			if (s[start] == '-' || s[i - 1] == '-')
				return -1;
			start = i + 1;
			label_utf8 = 0;
			i++;
			continue;
		}
		if (is_alnum(s[i]) || s[i] == '-') {
			i++;
			continue;
		}
		if (s[i] >= 0x80) {
			size_t k = utf8_len(s + i, n - i);
			if (k == 0)
				return -2;
			label_utf8 = 1;
			*utf8 = 1;
			i += k;
			continue;
		}
		return -1;
	}
	return 0;
}

/*
 * An IPv4 dotted quad: four Snum = 1*3DIGIT of 0..255 (RFC 5321 4.1.3, so
 * leading zeros are allowed), into a[0..4).
 */
static int
ipv4_parse(const char *s, size_t n, unsigned char a[4])
{
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		if (part > 0) {
			if (i >= n || s[i] != '.')
				return -1;
			i++;
		}
		unsigned v = 0;
		size_t d = 0;
		while (i < n && is_digit((unsigned char)s[i]) && d < 3) {
			v = v * 10 + (unsigned)(s[i] - '0');
			i++;
			d++;
		}
		if (d == 0 || v > 255)
			return -1;
		a[part] = (unsigned char)v;
	}
	return i == n ? 0 : -1;
}

int
smtp_addr_literal(const char *s, size_t n, int *family_r, unsigned char addr_r[16])
{
	if (n < 3 || s[0] != '[' || s[n - 1] != ']')
		return -1;
	s++;
	n -= 2;
	if (n > 5 && strncasecmp(s, "IPv6:", 5) == 0) {
		char tmp[INET6_ADDRSTRLEN];
		s += 5;
		n -= 5;
		if (n >= sizeof(tmp))
			return -1;
		for (size_t i = 0; i < n; i++)
			if (!is_hex((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
				return -1;
		memcpy(tmp, s, n);
		tmp[n] = '\0';
		/*
		 * An IPv4 tail (IPv6v4-full, IPv6v4-comp) is Snum too, which
		 * inet_pton(3) refuses with leading zeros: written plainly.
		 */
		char *v4 = memchr(tmp, '.', n) ? strrchr(tmp, ':') : NULL;
		if (v4 != NULL) {
			unsigned char q[4];
			v4++;
			if (ipv4_parse(v4, strlen(v4), q) < 0 ||
			    xsnprintf(v4, sizeof(tmp) - (size_t)(v4 - tmp), "%u.%u.%u.%u", q[0],
				      q[1], q[2], q[3]) < 0)
				return -1;
		}
		if (inet_pton(AF_INET6, tmp, addr_r) != 1)
			return -1;
		*family_r = AF_INET6;
		return 0;
	}
	if (ipv4_parse(s, n, addr_r) < 0)
		return -1;
	*family_r = AF_INET;
	return 0;
}

/* "[1.2.3.4]" or "[IPv6:...]" (the general tagged form is not supported). */
static int
addr_literal_check(const char *s, size_t n)
{
	unsigned char a[16];
	int family;

	return smtp_addr_literal(s, n, &family, a);
}

/* As smtp_domain_check, but -2 for bad UTF-8 so paths can say so. */
static int
domain_check(const char *s, size_t n, int *utf8)
{
	if (n > 0 && s[0] == '[')
		return addr_literal_check(s, n);
	return domain_name_check((const unsigned char *)s, n, utf8);
}

int
smtp_domain_check(const char *s, size_t len, int *has_utf8_r)
{
	int utf8 = 0;

	if (len > SMTP_DOMAIN_MAX || domain_check(s, len, &utf8) < 0)
		return -1;
	if (has_utf8_r != NULL)
		*has_utf8_r = utf8;
	return 0;
}

/*
 * The end of the domain starting at s[i] in a path: past ']' for a literal,
 * else at the next delimiter ('>' ',' ':' SP), so a stray byte inside the
 * name is reported as a bad domain rather than a bad path.
 */
static size_t
domain_span(const char *s, size_t len, size_t i)
{
	if (i < len && s[i] == '[') {
		while (i < len && s[i] != ']')
			i++;
		return i < len ? i + 1 : i;
	}
	while (i < len && s[i] != '>' && s[i] != ',' && s[i] != ':' && s[i] != ' ')
		i++;
	return i;
}

/* ------------------------------------------------------------------ */
/* Paths */

/* Set a path error, with the sender form of the enhanced code for a reverse-path. */
static int
path_fail(struct smtp_error *err, enum smtp_err code, unsigned flags)
{
	smtp_error_set(err, code);
	if ((flags & SMTP_PATH_REVERSE) && strcmp(err->enhanced, "5.1.3") == 0)
		err->enhanced = "5.1.7";
	return -1;
}

/* s[0..n) is a dot-string: atoms of atext (or UTF-8) separated by single dots. */
static int
dot_string_valid(const unsigned char *s, size_t n)
{
	size_t atom = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n;) {
		if (s[i] == '.') {
			if (atom == 0)
				return 0;
			atom = 0;
			i++;
			continue;
		}
		if (s[i] >= 0x80) {
			size_t k = utf8_len(s + i, n - i);
			if (k == 0)
				return 0;
			i += k;
		} else if (is_atext(s[i])) {
			i++;
		} else {
			return 0;
		}
		atom++;
	}
	return atom > 0;
}

/*
 * The local part at s[*ip]: a dot-string or a quoted string. Writes its
 * canonical form into out[0..outmax) and advances *ip.
 */
static int
parse_local(const char *s, size_t len, size_t *ip, char *out, size_t outmax, size_t *out_len,
	    int *utf8, enum smtp_err *e)
{
	unsigned char content[SMTP_PATH_MAX];
	size_t cl = 0;
	size_t i = *ip;
	int quoted = 0;

	if (i < len && s[i] == '"') {
		quoted = 1;
		i++;
		for (;;) {
			if (i >= len) {
				*e = SMTP_ERR_PATH_SYNTAX;
				return -1;
			}
			unsigned char c = (unsigned char)s[i];
			size_t k = 1;
			if (c == '"') {
				i++;
				break;
			}
			if (c == '\\') {
				/* quoted-pairSMTP: '\' followed by %d32-126. */
				if (i + 1 >= len || (unsigned char)s[i + 1] < 32 ||
				    (unsigned char)s[i + 1] > 126) {
					*e = SMTP_ERR_PATH_SYNTAX;
					return -1;
				}
				i++;
				c = (unsigned char)s[i];
			} else if (c >= 0x80) {
				k = utf8_len((const unsigned char *)s + i, len - i);
				if (k == 0) {
					*e = SMTP_ERR_PATH_BAD_UTF8;
					return -1;
				}
				*utf8 = 1;
			} else if (c < 32 || c == 127) {
				*e = SMTP_ERR_PATH_SYNTAX;
				return -1;
			}
			if (cl + k > sizeof(content)) {
				*e = SMTP_ERR_PATH_TOO_LONG;
				return -1;
			}
			memcpy(content + cl, s + i, k);
			cl += k;
			i += k;
		}
	} else {
		while (i < len) {
			unsigned char c = (unsigned char)s[i];
			size_t k = 1;
			if (c >= 0x80) {
				k = utf8_len((const unsigned char *)s + i, len - i);
				if (k == 0) {
					*e = SMTP_ERR_PATH_BAD_UTF8;
					return -1;
				}
				*utf8 = 1;
			} else if (c != '.' && !is_atext(c)) {
				break;
			}
			if (cl + k > sizeof(content)) {
				*e = SMTP_ERR_PATH_TOO_LONG;
				return -1;
			}
			memcpy(content + cl, s + i, k);
			cl += k;
			i += k;
		}
		if (!dot_string_valid(content, cl)) {
			*e = SMTP_ERR_PATH_SYNTAX;
			return -1;
		}
	}

	/* Canonical form: unquoted if it can be, else quoted with minimal escapes. */
	size_t o = 0;
	if (!quoted || dot_string_valid(content, cl)) {
		if (cl > outmax) {
			*e = SMTP_ERR_PATH_LOCAL_TOO_LONG;
			return -1;
		}
		memcpy(out, content, cl);
		o = cl;
	} else {
		if (o + 1 > outmax)
			goto too_long;
		out[o++] = '"';
		for (size_t j = 0; j < cl; j++) {
			if (content[j] == '"' || content[j] == '\\') {
				if (o + 1 > outmax)
					goto too_long;
				out[o++] = '\\';
			}
			if (o + 1 > outmax)
				goto too_long;
			out[o++] = (char)content[j];
		}
		if (o + 1 > outmax)
			goto too_long;
		out[o++] = '"';
	}
	if (o > SMTP_LOCAL_MAX)
		goto too_long;
	*out_len = o;
	*ip = i;
	return 0;
too_long:
	*e = SMTP_ERR_PATH_LOCAL_TOO_LONG;
	return -1;
}

/*
 * The domain at s[*ip] (a name or an address literal), copied in canonical
 * form (ASCII lowercased; "IPv6:" tag as written here) into out, which has
 * room for SMTP_DOMAIN_MAX + 1 bytes.
 */
static int
parse_domain(const char *s, size_t len, size_t *ip, char *out, size_t *out_len, int *utf8,
	     enum smtp_err *e)
{
	size_t i = *ip;
	size_t end = domain_span(s, len, i);
	size_t n = end - i;

	if (n > SMTP_DOMAIN_MAX) {
		*e = SMTP_ERR_PATH_DOMAIN_TOO_LONG;
		return -1;
	}
	int r = domain_check(s + i, n, utf8);
	if (r < 0) {
		*e = r == -2 ? SMTP_ERR_PATH_BAD_UTF8 : SMTP_ERR_PATH_DOMAIN;
		return -1;
	}
	for (size_t j = 0; j < n; j++)
		out[j] = (char)to_lower((unsigned char)s[i + j]);
	if (n > 6 && out[0] == '[' && strncmp(out + 1, "ipv6:", 5) == 0)
		memcpy(out + 1, "IPv6:", 5);
	out[n] = '\0';
	*out_len = n;
	*ip = end;
	return 0;
}

int
smtp_path_parse(const char *s, size_t len, unsigned flags, struct smtp_path *r, const char **rest_r,
		size_t *rest_len_r, struct smtp_error *err)
{
	char local[SMTP_PATH_MAX];
	char domain[SMTP_DOMAIN_MAX + 1];
	size_t llen = 0, dlen = 0;
	enum smtp_err e = SMTP_ERR_PATH_SYNTAX;
	int utf8 = 0;
	int routed = 0;
	size_t i = 1;

	memset(r, 0, sizeof(*r));
	if (len == 0 || s[0] != '<')
		return path_fail(err, SMTP_ERR_PATH_SYNTAX, flags);

	if (i < len && s[i] == '>') {
		if (!(flags & SMTP_PATH_REVERSE))
			return path_fail(err, SMTP_ERR_PATH_NULL, flags);
		r->is_null = 1;
		i++;
		goto rest;
	}

	/* A source route "@a,@b:" is checked and dropped (RFC 5321 §4.1.1.3). */
	if (i < len && s[i] == '@') {
		routed = 1;
		for (;;) {
			int route_utf8 = 0;
			i++;
			size_t end = domain_span(s, len, i);
			if (end - i > SMTP_DOMAIN_MAX)
				return path_fail(err, SMTP_ERR_PATH_DOMAIN_TOO_LONG, flags);
			int dr = domain_check(s + i, end - i, &route_utf8);
			if (dr < 0)
				return path_fail(
				    err, dr == -2 ? SMTP_ERR_PATH_BAD_UTF8 : SMTP_ERR_PATH_DOMAIN,
				    flags);
			/* A U-label in the route needs SMTPUTF8 like one in the mailbox. */
			utf8 |= route_utf8;
			i = end;
			if (i < len && s[i] == ',') {
				i++;
				if (i >= len || s[i] != '@')
					return path_fail(err, SMTP_ERR_PATH_SYNTAX, flags);
				continue;
			}
			if (i < len && s[i] == ':') {
				i++;
				break;
			}
			return path_fail(err, SMTP_ERR_PATH_SYNTAX, flags);
		}
	}

	if (parse_local(s, len, &i, local, sizeof(local), &llen, &utf8, &e) < 0)
		return path_fail(err, e, flags);

	if (i < len && s[i] == '>') {
		/* "<Postmaster>" alone; a source route needs a full mailbox. */
		if (!(flags & SMTP_PATH_FORWARD) || routed || !ieq(local, llen, "postmaster"))
			return path_fail(err, SMTP_ERR_PATH_NO_DOMAIN, flags);
		i++;
		if (i > SMTP_PATH_MAX)
			return path_fail(err, SMTP_ERR_PATH_TOO_LONG, flags);
		memcpy(r->addr, local, llen);
		r->addr[llen] = '\0';
		r->len = r->local_len = llen;
		goto rest;
	}
	if (i >= len || s[i] != '@')
		return path_fail(err, SMTP_ERR_PATH_SYNTAX, flags);
	i++;
	if (parse_domain(s, len, &i, domain, &dlen, &utf8, &e) < 0)
		return path_fail(err, e, flags);
	if (i >= len || s[i] != '>')
		return path_fail(err, SMTP_ERR_PATH_SYNTAX, flags);
	i++;
	/* The limit counts the path as sent, brackets included. */
	if (i > SMTP_PATH_MAX || llen + 1 + dlen >= sizeof(r->addr))
		return path_fail(err, SMTP_ERR_PATH_TOO_LONG, flags);
	memcpy(r->addr, local, llen);
	r->addr[llen] = '@';
	memcpy(r->addr + llen + 1, domain, dlen);
	r->addr[llen + 1 + dlen] = '\0';
	r->local_len = llen;
	r->len = llen + 1 + dlen;

rest:
	r->has_utf8 = utf8;
	if (i < len && s[i] != ' ')
		return path_fail(err, SMTP_ERR_PATH_SYNTAX, flags);
	while (i < len && s[i] == ' ')
		i++;
	*rest_r = s + i;
	*rest_len_r = len - i;
	return 0;
}

/* ------------------------------------------------------------------ */
/* ESMTP parameters */

int
smtp_params_parse(const char *s, size_t len, struct smtp_params *r, struct smtp_error *err)
{
	size_t i = 0;

	memset(r, 0, sizeof(*r));
	for (;;) {
		while (i < len && s[i] == ' ')
			i++;
		if (i >= len)
			break;
		if (r->n == SMTP_PARAMS_MAX)
			return fail(err, SMTP_ERR_PARAM_TOO_MANY, NULL);

		struct smtp_param p = {0};
		size_t ks = i;
		if (!is_alnum((unsigned char)s[i]))
			return fail(err, SMTP_ERR_PARAM_SYNTAX, NULL);
		while (i < len && (is_alnum((unsigned char)s[i]) || s[i] == '-'))
			i++;
		p.key = s + ks;
		p.key_len = i - ks;
		if (i < len && s[i] == '=') {
			size_t vs = ++i;
			while (i < len && s[i] != ' ') {
				unsigned char c = (unsigned char)s[i];
				if (c >= 33 && c <= 126 && c != '=') {
					i++;
					continue;
				}
				if (c >= 0x80) {
					size_t k = utf8_len((const unsigned char *)s + i, len - i);
					if (k == 0)
						return fail(err, SMTP_ERR_PARAM_SYNTAX,
							    "Invalid UTF-8 in parameters");
					r->has_utf8 = 1;
					i += k;
					continue;
				}
				return fail(err, SMTP_ERR_PARAM_SYNTAX, NULL);
			}
			if (i == vs)
				return fail(err, SMTP_ERR_PARAM_SYNTAX, NULL);
			p.value = s + vs;
			p.value_len = i - vs;
		} else if (i < len && s[i] != ' ') {
			return fail(err, SMTP_ERR_PARAM_SYNTAX, NULL);
		}
		for (size_t j = 0; j < r->n; j++)
			if (r->v[j].key_len == p.key_len &&
			    strncasecmp(r->v[j].key, p.key, p.key_len) == 0)
				return fail(err, SMTP_ERR_PARAM_DUPLICATE, NULL);
		r->v[r->n++] = p;
	}
	return 0;
}

const struct smtp_param *
smtp_params_find(const struct smtp_params *p, const char *key)
{
	for (size_t i = 0; i < p->n; i++)
		if (ieq(p->v[i].key, p->v[i].key_len, key))
			return &p->v[i];
	return NULL;
}

int
smtp_param_size(const char *v, size_t n, uint64_t *r)
{
	if (v == NULL || n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!is_digit((unsigned char)v[i]))
			return -1;
	/* RFC 1870: size-value is 1*20DIGIT. One past 2^64 - 1 is still a
	 * size, larger than any limit (552), not bad syntax. */
	if (util_parse_u64(v, n, r) < 0)
		*r = UINT64_MAX;
	return 0;
}

int
smtp_param_body(const char *v, size_t n, enum smtp_body *r)
{
	if (v == NULL)
		return -1;
	if (ieq(v, n, "7BIT"))
		*r = SMTP_BODY_7BIT;
	else if (ieq(v, n, "8BITMIME"))
		*r = SMTP_BODY_8BITMIME;
	else if (ieq(v, n, "BINARYMIME"))
		*r = SMTP_BODY_BINARYMIME;
	else
		return -1;
	return 0;
}

int
smtp_param_ret(const char *v, size_t n, enum smtp_ret *r)
{
	if (v == NULL)
		return -1;
	if (ieq(v, n, "FULL"))
		*r = SMTP_RET_FULL;
	else if (ieq(v, n, "HDRS"))
		*r = SMTP_RET_HDRS;
	else
		return -1;
	return 0;
}

int
smtp_param_notify(const char *v, size_t n, unsigned *r)
{
	unsigned bits = 0;
	size_t i = 0;

	if (v == NULL || n == 0)
		return -1;
	for (;;) {
		size_t s = i;
		unsigned bit;
		while (i < n && v[i] != ',')
			i++;
		if (ieq(v + s, i - s, "NEVER"))
			bit = SMTP_NOTIFY_NEVER;
		else if (ieq(v + s, i - s, "SUCCESS"))
			bit = SMTP_NOTIFY_SUCCESS;
		else if (ieq(v + s, i - s, "FAILURE"))
			bit = SMTP_NOTIFY_FAILURE;
		else if (ieq(v + s, i - s, "DELAY"))
			bit = SMTP_NOTIFY_DELAY;
		else
			return -1;
		if (bits & bit)
			return -1;
		bits |= bit;
		if (i == n)
			break;
		i++; /* ',' : an item must follow */
	}
	if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
		return -1;
	*r = bits;
	return 0;
}

/*
 * Check xtext s[0..n); with printable set, every decoded byte must also be
 * printable US-ASCII (0x20..0x7e) as RFC 3461 requires of ENVID and ORCPT.
 */
static int
xtext_check(const char *s, size_t n, int printable)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '+') {
			if (n - i < 3 || !is_hex((unsigned char)s[i + 1]) ||
			    !is_hex((unsigned char)s[i + 2]))
				return -1;
			unsigned d = hex_val((unsigned char)s[i + 1]) << 4 |
				     hex_val((unsigned char)s[i + 2]);
			if (printable && (d < 0x20 || d > 0x7e))
				return -1;
			i += 2;
			continue;
		}
		if (c < 33 || c > 126 || c == '=')
			return -1;
	}
	return 0;
}

int
smtp_xtext_decode(const char *s, size_t n, struct buf *out)
{
	if (xtext_check(s, n, 0) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '+') {
			c = (char)(hex_val((unsigned char)s[i + 1]) << 4 |
				   hex_val((unsigned char)s[i + 2]));
			i += 2;
		}
		if (buf_putc(out, c) < 0)
			return -1;
	}
	return 0;
}

int
smtp_xtext_encode(const char *s, size_t n, struct buf *out)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 33 && c <= 126 && c != '+' && c != '=') {
			if (buf_putc(out, (char)c) < 0)
				return -1;
		} else {
			char e[3] = {'+', hex[c >> 4], hex[c & 15]};
			if (buf_append(out, e, 3) < 0)
				return -1;
		}
	}
	return 0;
}

static int
param_is(const struct smtp_param *p, const char *key, unsigned ext, unsigned need)
{
	return (ext & need) && ieq(p->key, p->key_len, key);
}

int
smtp_mail_parse(const char *arg, size_t len, unsigned ext, struct smtp_mail *r,
		struct smtp_error *err)
{
	struct smtp_params ps;
	const char *rest;
	size_t rest_len;

	memset(r, 0, sizeof(*r));
	if (smtp_path_parse(arg, len, SMTP_PATH_REVERSE, &r->from, &rest, &rest_len, err) < 0)
		return -1;
	if (smtp_params_parse(rest, rest_len, &ps, err) < 0)
		return -1;
	for (size_t i = 0; i < ps.n; i++) {
		const struct smtp_param *p = &ps.v[i];
		if (param_is(p, "SIZE", ext, SMTP_EXT_SIZE)) {
			if (smtp_param_size(p->value, p->value_len, &r->size) < 0)
				return fail(err, SMTP_ERR_PARAM_VALUE, "Invalid SIZE value");
			r->has_size = 1;
		} else if (param_is(p, "BODY", ext, SMTP_EXT_8BITMIME)) {
			if (smtp_param_body(p->value, p->value_len, &r->body) < 0)
				return fail(err, SMTP_ERR_PARAM_VALUE, "Invalid BODY value");
			if (r->body == SMTP_BODY_BINARYMIME)
				return fail(err, SMTP_ERR_PARAM_UNKNOWN,
					    "BODY=BINARYMIME not supported");
		} else if (param_is(p, "SMTPUTF8", ext, SMTP_EXT_SMTPUTF8)) {
			if (p->value != NULL)
				return fail(err, SMTP_ERR_PARAM_VALUE, "SMTPUTF8 takes no value");
			r->smtputf8 = 1;
		} else if (param_is(p, "RET", ext, SMTP_EXT_DSN)) {
			if (smtp_param_ret(p->value, p->value_len, &r->ret) < 0)
				return fail(err, SMTP_ERR_PARAM_VALUE, "Invalid RET value");
		} else if (param_is(p, "ENVID", ext, SMTP_EXT_DSN)) {
			if (p->value == NULL || p->value_len > SMTP_ENVID_MAX ||
			    xtext_check(p->value, p->value_len, 1) < 0)
				return fail(err, SMTP_ERR_PARAM_VALUE, "Invalid ENVID value");
			memcpy(r->envid, p->value, p->value_len);
			r->envid[p->value_len] = '\0';
			r->has_envid = 1;
		} else if (param_is(p, "AUTH", ext, SMTP_EXT_AUTH)) {
			/* RFC 4954 §5: "<>" or an xtext mailbox; we ignore it. */
			if (p->value == NULL || (!ieq(p->value, p->value_len, "<>") &&
						 xtext_check(p->value, p->value_len, 0) < 0))
				return fail(err, SMTP_ERR_PARAM_VALUE, "Invalid AUTH value");
			r->has_auth = 1;
		} else {
			return fail(err, SMTP_ERR_PARAM_UNKNOWN, NULL);
		}
	}
	if (r->from.has_utf8 && !r->smtputf8)
		return path_fail(err, SMTP_ERR_PATH_UTF8, SMTP_PATH_REVERSE);
	return 0;
}

/*
 * Length of the EmbeddedUnicodeChar "\x{HEXPOINT}" (RFC 6533 3) at s[0..n):
 * 1 to 6 hex digits naming a scalar value other than NUL; 0 if none is.
 */
static size_t
embedded_char_len(const char *s, size_t n)
{
	uint32_t cp = 0;
	size_t i = 3;

	if (n < 5 || s[0] != '\\' || s[1] != 'x' || s[2] != '{')
		return 0;
	while (i < n && i < 9 && is_hex((unsigned char)s[i]))
		cp = cp << 4 | hex_val((unsigned char)s[i++]);
	if (i == 3 || i >= n || s[i] != '}' || cp == 0 || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return i + 1;
}

/*
 * An ORCPT address of type utf-8 (RFC 6533 3): utf-8-addr-unitext with
 * SMTPUTF8 (raw UTF-8 allowed), utf-8-addr-xtext without. A '\' only as
 * an EmbeddedUnicodeChar, and a '+' only as an xtext hexchar (tolerated:
 * the DSN decodes it): what we cannot decode, a strict next hop refuses.
 */
static int
orcpt_utf8_check(const char *a, size_t n, int smtputf8)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)a[i];
		size_t k = 1;
		if (c >= 0x80)
			k = smtputf8 ? utf8_len((const unsigned char *)a + i, n - i) : 0;
		else if (c == '\\')
			k = embedded_char_len(a + i, n - i);
		else if (c == '+')
			k = xtext_check(a + i, n - i < 3 ? n - i : 3, 1) == 0 ? 3 : 0;
		else if (c < 33 || c > 126 || c == '=')
			k = 0;
		if (k == 0)
			return -1;
		i += k;
	}
	return 0;
}

/* ORCPT=addr-type;xtext (RFC 3461 §4.2), utf-8 as RFC 6533 has it. */
static int
orcpt_parse(const char *v, size_t n, int smtputf8, struct smtp_rcpt *r)
{
	size_t t = 0;

	if (v == NULL || n > SMTP_ORCPT_MAX)
		return -1;
	while (t < n && v[t] != ';') {
		if (!is_atext((unsigned char)v[t]))
			return -1;
		t++;
	}
	if (t == 0 || t == n || t > SMTP_ADDRTYPE_MAX || t + 1 == n)
		return -1;
	const char *a = v + t + 1;
	size_t an = n - t - 1;
	if (ieq(v, t, "utf-8") ? orcpt_utf8_check(a, an, smtputf8) < 0 : xtext_check(a, an, 1) < 0)
		return -1;
	memcpy(r->orcpt_type, v, t);
	r->orcpt_type[t] = '\0';
	memcpy(r->orcpt, a, an);
	r->orcpt[an] = '\0';
	r->has_orcpt = 1;
	return 0;
}

int
smtp_rcpt_parse(const char *arg, size_t len, unsigned ext, int smtputf8, struct smtp_rcpt *r,
		struct smtp_error *err)
{
	struct smtp_params ps;
	const char *rest;
	size_t rest_len;

	memset(r, 0, sizeof(*r));
	if (smtp_path_parse(arg, len, SMTP_PATH_FORWARD, &r->to, &rest, &rest_len, err) < 0)
		return -1;
	if (r->to.has_utf8 && !smtputf8)
		return path_fail(err, SMTP_ERR_PATH_UTF8, SMTP_PATH_FORWARD);
	if (smtp_params_parse(rest, rest_len, &ps, err) < 0)
		return -1;
	for (size_t i = 0; i < ps.n; i++) {
		const struct smtp_param *p = &ps.v[i];
		if (param_is(p, "NOTIFY", ext, SMTP_EXT_DSN)) {
			if (smtp_param_notify(p->value, p->value_len, &r->notify) < 0)
				return fail(err, SMTP_ERR_PARAM_VALUE, "Invalid NOTIFY value");
		} else if (param_is(p, "ORCPT", ext, SMTP_EXT_DSN)) {
			if (orcpt_parse(p->value, p->value_len, smtputf8, r) < 0)
				return fail(err, SMTP_ERR_PARAM_VALUE, "Invalid ORCPT value");
		} else {
			return fail(err, SMTP_ERR_PARAM_UNKNOWN, NULL);
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* DATA and BDAT */

enum data_state {
	DS_BOL,	   /* at the start of a line: after CR LF, or the first line */
	DS_TEXT,   /* inside a line */
	DS_CR,	   /* after a CR inside a line (or at its start) */
	DS_DOT,	   /* DATA: a '.' at the start of a line */
	DS_DOT_CR, /* DATA: ".\r" at the start of a line */
	DS_DONE,
};

void
smtp_data_reader_init(struct smtp_data_reader *r, struct buf *out, enum smtp_data_mode mode)
{
	memset(r, 0, sizeof(*r));
	r->out = out;
	r->mode = mode;
	r->state = DS_BOL;
}

/*
 * Append message bytes. Past the limit, the part that fits is kept (so the
 * result does not depend on how the input was split) and TOO_BIG is set;
 * the size keeps counting.
 */
static void
data_emit(struct smtp_data_reader *r, const char *p, size_t n)
{
	struct buf *b = r->out;

	r->size += n;
	if (r->errors & SMTP_DATA_ERR_TOO_BIG)
		return;
	if (b->max != 0) {
		size_t room = b->len < b->max ? b->max - b->len : 0;
		if (n > room) {
			if (room > 0)
				(void)buf_append(b, p, room);
			r->errors |= SMTP_DATA_ERR_TOO_BIG;
			return;
		}
	}
	if (buf_append(b, p, n) < 0)
		r->errors |= SMTP_DATA_ERR_TOO_BIG;
}

/* n octets of line content (not a line end). */
static void
data_text(struct smtp_data_reader *r, const char *p, size_t n)
{
	r->line_len += n;
	if (r->line_len > SMTP_LINE_MAX - 2)
		r->errors |= SMTP_DATA_ERR_LINE_TOO_LONG;
	data_emit(r, p, n);
}

/* A CR LF was just emitted: close the line. */
static void
data_line_end(struct smtp_data_reader *r)
{
	if (!r->header_done) {
		if (r->line_len == 0) {
			r->header_done = 1;
		} else {
			r->header_lines++;
			r->header_len = r->size;
		}
	}
	r->line_len = 0;
	r->state = DS_BOL;
}

int
smtp_data_feed(struct smtp_data_reader *r, const char *p, size_t n, size_t *consumed_r)
{
	size_t i = 0;

	if (r->state == DS_DONE) {
		*consumed_r = 0;
		return 1;
	}
	while (i < n) {
		unsigned char c = (unsigned char)p[i];

		switch ((enum data_state)r->state) {
		case DS_BOL:
			if (c == '.' && r->mode == SMTP_DATA_MODE_DATA) {
				r->state = DS_DOT;
				i++;
				break;
			}
			r->state = DS_TEXT;
			__attribute__((fallthrough));
		case DS_TEXT: {
			/* The hot path: a run of ordinary bytes, ideally up to its CR LF. */
			size_t j = i;
			unsigned char hi = 0;
			int nul = 0;
			while (j < n) {
				unsigned char d = (unsigned char)p[j];
				if (d == '\r' || d == '\n')
					break;
				hi |= d;
				nul |= d == 0;
				j++;
			}
			if (hi & 0x80)
				r->has_8bit = 1;
			if (nul)
				r->has_nul = 1;
			if (j + 1 < n && p[j] == '\r' && p[j + 1] == '\n') {
				r->line_len += j - i;
				if (r->line_len > SMTP_LINE_MAX - 2)
					r->errors |= SMTP_DATA_ERR_LINE_TOO_LONG;
				data_emit(r, p + i, j - i + 2);
				data_line_end(r);
				i = j + 2;
				break;
			}
			if (j > i)
				data_text(r, p + i, j - i);
			i = j;
			if (i == n)
				break;
			if (p[i] == '\r') {
				r->state = DS_CR;
			} else {
				r->errors |= SMTP_DATA_ERR_BARE_LF;
				data_text(r, "\n", 1);
			}
			i++;
			break;
		}
		case DS_CR:
			if (c == '\n') {
				data_emit(r, "\r\n", 2);
				data_line_end(r);
				i++;
			} else {
				/* Bare CR: content, not a line end; c is looked at again as text.
				 */
				r->errors |= SMTP_DATA_ERR_BARE_CR;
				data_text(r, "\r", 1);
				r->state = DS_TEXT;
			}
			break;
		case DS_DOT:
			if (c == '\r') {
				r->state = DS_DOT_CR;
				i++;
			} else {
				/* The dot was stuffing (RFC 5321 §4.5.2): drop it. */
				r->state = DS_TEXT;
			}
			break;
		case DS_DOT_CR:
			if (c == '\n') {
				r->state = DS_DONE;
				r->done = 1;
				*consumed_r = i + 1;
				return 1;
			}
			/* ".\r" then not LF: the dot was stuffing, the CR is bare. */
			r->errors |= SMTP_DATA_ERR_BARE_CR;
			data_text(r, "\r", 1);
			r->state = DS_TEXT;
			break;
		case DS_DONE:
			PANIC("smtp_data_feed: bad state");
		}
	}
	*consumed_r = n;
	return 0;
}

void
smtp_data_finish(struct smtp_data_reader *r)
{
	if (r->mode != SMTP_DATA_MODE_BDAT || r->state == DS_DONE)
		return;
	if (r->state == DS_CR) {
		r->errors |= SMTP_DATA_ERR_BARE_CR;
		data_text(r, "\r", 1);
	}
	r->state = DS_DONE;
	r->done = 1;
}

int
smtp_data_error(const struct smtp_data_reader *r, struct smtp_error *err)
{
	if (r->errors & SMTP_DATA_ERR_TOO_BIG)
		return fail(err, SMTP_ERR_DATA_TOO_BIG, NULL);
	if (r->errors & SMTP_DATA_ERR_BARE_LF)
		return fail(err, SMTP_ERR_DATA_BARE_LF, NULL);
	if (r->errors & SMTP_DATA_ERR_BARE_CR)
		return fail(err, SMTP_ERR_DATA_BARE_CR, NULL);
	if (r->errors & SMTP_DATA_ERR_LINE_TOO_LONG)
		return fail(err, SMTP_ERR_DATA_LINE_TOO_LONG, NULL);
	return 0;
}

/* RFC 5322 2.2 field-name = 1*ftext, then (4.5.1, obsolete) WSP, then ':'. */
static int
is_field_start(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && (unsigned char)p[i] >= 33 && (unsigned char)p[i] <= 126 && p[i] != ':')
		i++;
	if (i == 0)
		return 0;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i < n && p[i] == ':';
}

size_t
smtp_data_header_end(const char *msg, size_t len, size_t *own_r)
{
	size_t i = 0, field = 0;

	*own_r = 0;
	if (len == 0 || !is_field_start(msg, len))
		return 0;
	for (;;) {
		const char *crlf = memmem(msg + i, len - i, "\r\n", 2);
		if (crlf == NULL) {	/* a last line with no CRLF (BDAT): still header */
			*own_r = len;
			return msg[i] == ' ' || msg[i] == '\t' ? field : i;
		}
		i = (size_t)(crlf - msg) + 2;
		*own_r = i;
		if (i == len || (msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n'))
			return i;	/* the end, or the empty line */
		if (msg[i] == ' ' || msg[i] == '\t')
			continue;	/* the field goes on */
		if (!is_field_start(msg + i, len - i))
			return i;	/* a line that is no field: the body starts */
		field = i;
	}
}

/* ------------------------------------------------------------------ */
/* Replies */

/* "C.S.D" with C the code's class (2, 4 or 5) and S, D 1..3 digits each. */
static int
enhanced_valid(int code, const char *e)
{
	int cls = code / 100;
	size_t i = 0;

	if ((cls != 2 && cls != 4 && cls != 5) || e[0] != '0' + cls || e[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (is_digit((unsigned char)e[i]) && d < 3) {
			i++;
			d++;
		}
		if (d == 0)
			return 0;
		if (part == 0 && e[i++] != '.')
			return 0;
	}
	return e[i] == '\0';
}

static int
reply_line(struct buf *out, int code, int last, const char *enh, const char *t, size_t n)
{
	char line[SMTP_REPLY_LINE_MAX];
	size_t elen = enh ? strlen(enh) : 0;
	size_t o;

	/* code, separator, [enhanced [SP]], text, CRLF */
	if (n > SMTP_REPLY_LINE_MAX || elen > SMTP_REPLY_LINE_MAX ||
	    4 + elen + (elen > 0 && n > 0) + n + 2 > SMTP_REPLY_LINE_MAX)
		return -1;
	line[0] = (char)('0' + code / 100);
	line[1] = (char)('0' + code / 10 % 10);
	line[2] = (char)('0' + code % 10);
	line[3] = last ? ' ' : '-';
	o = 4;
	if (elen > 0) {
		memcpy(line + o, enh, elen);
		o += elen;
		if (n > 0)
			line[o++] = ' ';
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];
		line[o++] = ((c < 0x20 && c != '\t') || c >= 0x7f) ? '?' : (char)c;
	}
	/* "250" CRLF, not "250 " CRLF; but an empty AUTH challenge is "334 "
	 * CRLF (RFC 4954 4: continue-req = "334" SP [base64] CRLF). */
	if (last && o == 4 && code != 334)
		o = 3;
	line[o++] = '\r';
	line[o++] = '\n';
	return buf_append(out, line, o);
}

static int
reply_check(int code, const char *enhanced)
{
	if (code < 200 || code > 599)
		return -1;
	if (enhanced != NULL && !enhanced_valid(code, enhanced))
		return -1;
	return 0;
}

int
smtp_reply_format(struct buf *out, int code, const char *enhanced, const char *text)
{
	size_t orig = out->len;

	if (reply_check(code, enhanced) < 0)
		return -1;
	if (text == NULL)
		text = "";
	size_t n = strlen(text);
	if (n > 0 && text[n - 1] == '\n')
		n--;
	size_t s = 0;
	for (;;) {
		const char *nl = memchr(text + s, '\n', n - s);
		size_t e = nl ? (size_t)(nl - text) : n;
		if (reply_line(out, code, nl == NULL, enhanced, text + s, e - s) < 0) {
			buf_truncate(out, orig);
			return -1;
		}
		if (nl == NULL)
			break;
		s = e + 1;
	}
	return 0;
}

int
smtp_reply_lines(struct buf *out, int code, const char *enhanced, const char *const *lines,
		 size_t n)
{
	size_t orig = out->len;

	if (n == 0 || reply_check(code, enhanced) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *t = lines[i] ? lines[i] : "";
		if (reply_line(out, code, i + 1 == n, enhanced, t, strlen(t)) < 0) {
			buf_truncate(out, orig);
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* AUTH */

static int
b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int
smtp_base64_decode(const char *s, size_t len, void *out, size_t outmax, size_t *len_r)
{
	unsigned char *o = out;
	size_t olen = 0;

	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)s[i + (size_t)k];
			if (c == '=') {
				/* Padding only in the last quantum's last two places. */
				if (i + 4 != len || k < 2)
					return -1;
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad > 0)
				return -1;
			v[k] = b64_val(c);
			if (v[k] < 0)
				return -1;
		}
		/* Canonical encoding only: the bits padding hides must be zero. */
		if ((pad == 1 && (v[2] & 0x3) != 0) || (pad == 2 && (v[1] & 0xf) != 0))
			return -1;
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		size_t nb = (size_t)(3 - pad);
		if (nb > outmax - olen)
			return -1;
		o[olen++] = (unsigned char)(w >> 16);
		if (nb > 1)
			o[olen++] = (unsigned char)(w >> 8);
		if (nb > 2)
			o[olen++] = (unsigned char)w;
	}
	*len_r = olen;
	return 0;
}

int
smtp_base64_encode(const void *p, size_t n, char *out, size_t outmax)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *in = p;
	size_t o = 0;

	/* The length must fit the int returned. */
	if (n > (size_t)INT_MAX / 4 * 3 - 3 || SMTP_BASE64_LEN(n) >= outmax)
		return -1;
	for (size_t i = 0; i < n; i += 3) {
		size_t rem = n - i;
		uint32_t w = (uint32_t)in[i] << 16;
		if (rem > 1)
			w |= (uint32_t)in[i + 1] << 8;
		if (rem > 2)
			w |= in[i + 2];
		out[o++] = tab[w >> 18 & 63];
		out[o++] = tab[w >> 12 & 63];
		out[o++] = rem > 1 ? tab[w >> 6 & 63] : '=';
		out[o++] = rem > 2 ? tab[w & 63] : '=';
	}
	out[o] = '\0';
	return (int)o;
}

void
smtp_sasl_plain_wipe(struct smtp_sasl_plain *r)
{
	util_wipe(r, sizeof(*r));
}

/* Copy a field of 1..255 (0..255 if may_be_empty) valid UTF-8 octets. */
static int
sasl_field(char *dst, const unsigned char *src, size_t n, int may_be_empty)
{
	if ((n == 0 && !may_be_empty) || n > SMTP_SASL_FIELD_MAX || !utf8_valid(src, n))
		return -1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

int
smtp_sasl_plain_parse(const void *msg, size_t len, struct smtp_sasl_plain *r,
		      struct smtp_error *err)
{
	const unsigned char *m = msg;

	memset(r, 0, sizeof(*r));
	const unsigned char *z1 = len > 0 ? memchr(m, 0, len) : NULL;
	if (z1 == NULL)
		return fail(err, SMTP_ERR_SASL_SYNTAX, NULL);
	size_t a = (size_t)(z1 - m);
	const unsigned char *z2 = memchr(z1 + 1, 0, len - a - 1);
	if (z2 == NULL)
		return fail(err, SMTP_ERR_SASL_SYNTAX, NULL);
	size_t b = (size_t)(z2 - m);
	/* The password may not contain a NUL either: memchr finds a third. */
	if (memchr(z2 + 1, 0, len - b - 1) != NULL || sasl_field(r->authzid, m, a, 1) < 0 ||
	    sasl_field(r->authcid, m + a + 1, b - a - 1, 0) < 0 ||
	    sasl_field(r->passwd, m + b + 1, len - b - 1, 0) < 0) {
		smtp_sasl_plain_wipe(r);
		return fail(err, SMTP_ERR_SASL_SYNTAX, NULL);
	}
	/* The same account in another ASCII case is the same identity. */
	if (r->authzid[0] != '\0' && strcasecmp(r->authzid, r->authcid) != 0) {
		smtp_sasl_plain_wipe(r);
		return fail(err, SMTP_ERR_SASL_AUTHZID, NULL);
	}
	return 0;
}

int
smtp_sasl_plain_decode(const char *b64, size_t len, struct smtp_sasl_plain *r,
		       struct smtp_error *err)
{
	unsigned char tmp[3 * (SMTP_SASL_FIELD_MAX + 1)];
	size_t n = 0;
	int ret;

	memset(r, 0, sizeof(*r));
	if (len > SMTP_BASE64_LEN(sizeof(tmp)))
		return fail(err, SMTP_ERR_SASL_TOOLONG, NULL);
	if (smtp_base64_decode(b64, len, tmp, sizeof(tmp), &n) < 0)
		ret = fail(err, SMTP_ERR_BASE64, NULL);
	else
		ret = smtp_sasl_plain_parse(tmp, n, r, err);
	util_wipe(tmp, sizeof(tmp));
	return ret;
}
