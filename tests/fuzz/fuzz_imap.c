/*
 * fuzz_imap — libFuzzer target for the IMAP command parser, with the
 * sequence-set and modified UTF-7 helpers run on every atom and string it
 * produces.
 *
 * The first four bytes choose limits, UTF-8 mode, the chunking seed and the
 * literal policy; the rest is the client's byte stream. It is fed twice,
 * in random chunks and whole, and the two event logs must be identical (the
 * parser is incremental). Anything that parses as a sequence set or as
 * modified UTF-7 must format back to itself.
 *
 * SECURITY: test code; aborts on any broken invariant.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "imap/imap_parser.h"
#include "imap/imap_search_parse.h"
#include "imap/imap_seqset.h"
#include "imap/imap_utf7.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct cfg {
	struct imap_parser_limits lim;
	bool utf8;
	unsigned chunk_seed;
	unsigned policy;
};

static void
check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

static void
fuzz_seqset(const char *s, size_t len)
{
	struct imap_seqset p, r, p2;
	const char *err;
	struct buf b = BUF_INIT(0);

	imap_seqset_init(&p);
	imap_seqset_init(&r);
	imap_seqset_init(&p2);
	if (imap_seqset_parse(&p, s, len, IMAP_SEQSET_ALLOW_SAVED, &err) == 0) {
		/* a parsed set formats to something that parses to the same ranges */
		check(imap_seqset_format(&p, &b) == 0, "seqset format");
		check(imap_seqset_parse(&p2, b.data, b.len, IMAP_SEQSET_ALLOW_SAVED, &err) == 0,
		      "seqset reparse");
		check(p2.count == p.count && p2.saved == p.saved, "seqset reparse count");
		check(p.count == 0 || memcmp(p.r, p2.r, p.count * sizeof(*p.r)) == 0,
		      "seqset reparse ranges");
		uint32_t max = (uint32_t)len * 7;
		imap_seqset_resolve(&p, max, &p2, &r);
		uint64_t total = imap_seqset_count(&r);
		for (size_t i = 0; i < r.count; i++) {
			check(r.r[i].lo >= 1 && r.r[i].lo <= r.r[i].hi, "seqset range order");
			check(i == 0 || (uint64_t)r.r[i - 1].hi + 1 < r.r[i].lo, "seqset merged");
			check(imap_seqset_contains(&r, r.r[i].lo), "seqset contains lo");
			check(imap_seqset_contains(&r, r.r[i].hi), "seqset contains hi");
			check(!imap_seqset_contains(&r, r.r[i].lo - 1), "seqset gap below");
		}
		if (total < 4096) {
			struct imap_seqset_iter it;
			uint32_t n, prev = 0;
			uint64_t k = 0;
			imap_seqset_iter_init(&it);
			while (imap_seqset_iter_next(&r, &it, &n)) {
				check(n > prev, "seqset iter order");
				prev = n;
				k++;
			}
			check(k == total, "seqset iter count");
		}
		buf_reset(&b);
		check(imap_seqset_format(&r, &b) == 0, "seqset format resolved");
	}
	buf_free(&b);
	imap_seqset_free(&p);
	imap_seqset_free(&r);
	imap_seqset_free(&p2);
}

static void
fuzz_utf7(const char *s, size_t len)
{
	struct buf d = BUF_INIT(0), m = BUF_INIT(0), d2 = BUF_INIT(0);

	if (imap_utf7_decode(s, len, &d) == 0) {
		check(imap_utf7_utf8_valid(d.data ? d.data : "", d.len), "utf7 decode gives UTF-8");
		check(imap_utf7_encode(buf_str(&d), d.len, &m) == 0, "utf7 re-encode");
		check(m.len == len && memcmp(buf_str(&m), s, len) == 0, "utf7 canonical");
	}
	buf_reset(&m);
	if (imap_utf7_encode(s, len, &m) == 0) {
		check(imap_utf7_decode(buf_str(&m), m.len, &d2) == 0, "utf7 decode of encode");
		check(d2.len == len && memcmp(buf_str(&d2), s, len) == 0, "utf7 round trip");
	}
	buf_free(&d);
	buf_free(&m);
	buf_free(&d2);
}

static void
dump_args(struct buf *log, const struct imap_arg *a, bool helpers)
{
	for (; a->type != IMAP_ARG_EOL; a++) {
		buf_printf(log, " %d/%x:", (int)a->type, a->flags);
		if (a->type == IMAP_ARG_LIST) {
			check(a->list[a->len].type == IMAP_ARG_EOL, "list EOL");
			buf_putc(log, '(');
			dump_args(log, a->list, helpers);
			buf_putc(log, ')');
			continue;
		}
		check(a->str != NULL && a->str[a->len] == '\0', "arg NUL-terminated");
		buf_printf(log, "%zu:", a->len);
		buf_append(log, a->str, a->len);
		if (!helpers)
			continue;
		const char *s;
		size_t n;
		uint64_t v;
		struct imap_fetch_att fa;
		if (imap_arg_atom(a, &s)) {
			fuzz_seqset(a->str, a->len);
			(void)imap_arg_number(a, &v);
			if (imap_fetch_att_split(a, &fa) == 0 && fa.has_section)
				check(fa.section >= a->str &&
					  fa.section + fa.section_len <= a->str + a->len,
				      "fetch att section bounds");
		}
		if (imap_arg_astring(a, &s, &n))
			fuzz_utf7(s, n);
		(void)imap_arg_nstring(a, &s, &n);
		(void)imap_arg_list_mailbox(a, &s, &n);
	}
}

static void
fuzz_search_key(const struct imap_search_key *k, unsigned depth)
{
	check(depth <= IMAP_SEARCH_MAX_DEPTH + 1, "search depth");
	for (; k != NULL; k = k->next) {
		if (k->op == IMAP_SK_OR) {
			check(k->child != NULL && k->child->next != NULL &&
				  k->child->next->next == NULL,
			      "OR has two children");
		} else if (k->op == IMAP_SK_NOT) {
			check(k->child != NULL && k->child->next == NULL, "NOT has one child");
		} else if (k->op == IMAP_SK_AND) {
			check(k->child != NULL, "AND has children");
		} else {
			check(k->child == NULL, "leaf has no children");
		}
		check(k->str == NULL || k->str[k->len] == '\0', "search string terminated");
		fuzz_search_key(k->child, depth + 1);
	}
}

/* Every command's arguments as a search program (after UID and SEARCH, if present). */
static void
fuzz_search(const struct imap_command *cmd)
{
	const struct imap_arg *a = cmd->args;
	const char *s;
	struct imap_search_program prog;
	const char *err = NULL;

	if (strcasecmp(cmd->name, "UID") == 0 && imap_arg_atom(a, &s))
		a++;
	if (imap_search_parse(a, &prog, &err) == 0) {
		check(prog.root != NULL && prog.root->op == IMAP_SK_AND, "search root");
		fuzz_search_key(prog.root, 0);
	} else {
		check(err != NULL && prog.root == NULL, "search error");
	}
	imap_search_program_free(&prog);
}

/* Feed the stream; chunk sizes from seed (0: whole). The log records every event. */
static void
run(const struct cfg *c, const uint8_t *in, size_t len, unsigned seed, bool helpers,
    struct buf *log)
{
	struct imap_parser *p = imap_parser_new(&c->lim);
	size_t off = 0;

	imap_parser_set_utf8(p, c->utf8);
	while (off < len) {
		size_t n = len - off;
		if (seed != 0) {
			seed = seed * 1103515245u + 12345u;
			size_t want = 1 + (seed >> 16) % 17;
			if (want < n)
				n = want;
		}
		size_t used = 0;
		int r = imap_parser_feed(p, in + off, n, &used);
		check(used <= n, "used <= len");
		off += used;
		switch (r) {
		case IMAP_PARSE_MORE:
			check(used == n, "MORE consumes all");
			break;
		case IMAP_PARSE_DONE: {
			const struct imap_command *cmd = imap_parser_command(p);
			if (cmd == NULL) {
				size_t ll;
				const char *l = imap_parser_line(p, &ll);
				check(l != NULL && ll <= c->lim.max_line, "raw line");
				buf_printf(log, "LINE %zu:", ll);
				buf_append(log, l, ll);
				buf_putc(log, '\n');
				break;
			}
			buf_printf(log, "CMD %s %s %zu %llu", cmd->tag, cmd->name, cmd->count,
				   (unsigned long long)cmd->size);
			dump_args(log, cmd->args, helpers);
			buf_putc(log, '\n');
			if (helpers)
				fuzz_search(cmd);
			if ((c->policy & 4) && cmd->count > 0) {
				struct buf stolen;
				if (imap_parser_literal_steal(p, &cmd->args[cmd->count - 1],
							      &stolen))
					buf_free(&stolen);
			}
			if (strcasecmp(cmd->name, "IDLE") == 0 ||
			    strcasecmp(cmd->name, "AUTHENTICATE") == 0)
				imap_parser_read_line(p);
			break;
		}
		case IMAP_PARSE_LITERAL: {
			uint64_t size;
			bool sync, bin;
			imap_parser_literal_info(p, &size, &sync, &bin);
			check(size <= c->lim.max_literal, "literal within limit");
			buf_printf(log, "LIT %llu %d %d\n", (unsigned long long)size, sync, bin);
			if ((c->policy & 3) != 0 && size % (c->policy & 3) == 1)
				imap_parser_literal_reject(p);
			else
				imap_parser_literal_accept(p);
			break;
		}
		case IMAP_PARSE_ERROR: {
			const char *msg;
			enum imap_parse_error e = imap_parser_error(p, &msg);
			const char *tag = imap_parser_tag(p);
			check(e != IMAP_PERR_NONE && msg[0] != '\0', "error has a message");
			buf_printf(log, "ERR %d %s %d %s\n", (int)e, tag ? tag : "*",
				   imap_parser_error_fatal(p), msg);
			break;
		}
		default:
			check(false, "feed result");
		}
	}
	imap_parser_free(&p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t lines[] = {16, 64, 1024, 65536};
	static const uint64_t lits[] = {0, 8, 4096, 65536};
	struct cfg c;

	if (size < 4)
		return 0;
	memset(&c, 0, sizeof(c));
	c.lim.max_line = lines[data[0] & 3];
	c.lim.max_literal = lits[(data[0] >> 2) & 3] + 1;
	c.lim.max_nonsync = (data[0] & 0x10) ? 4 : 4096;
	c.lim.max_command = (data[0] & 0x20) ? 100 : 0;
	c.lim.max_args = (data[3] & 0x80) ? 5 : 0;
	c.lim.max_depth = (data[3] & 0x40) ? 3 : 0;
	c.utf8 = (data[0] & 0x40) != 0;
	c.chunk_seed = (unsigned)data[1] | 1u;
	c.policy = data[2];
	data += 4;
	size -= 4;

	struct buf whole = BUF_INIT(0), chunked = BUF_INIT(0);
	run(&c, data, size, 0, true, &whole);
	run(&c, data, size, c.chunk_seed, false, &chunked);
	/* The whole run also ran the helpers; compare only the parser's events. */
	struct buf whole2 = BUF_INIT(0);
	run(&c, data, size, 0, false, &whole2);
	check(whole2.len == chunked.len &&
		  memcmp(buf_str(&whole2), buf_str(&chunked), whole2.len) == 0,
	      "chunked parse differs from whole parse");
	buf_free(&whole);
	buf_free(&whole2);
	buf_free(&chunked);

	/* The raw bytes as a sequence set and a mailbox name, too. */
	if (size < 256) {
		fuzz_seqset((const char *)data, size);
		fuzz_utf7((const char *)data, size);
	}
	return 0;
}
