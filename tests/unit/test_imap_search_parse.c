/*
 * test_imap_search_parse — unit tests for SEARCH program parsing: every
 * key, nesting, RETURN and CHARSET, MODSEQ, dates and each error path.
 * Commands go through the real imap_parser first, as in a session.
 *
 * SECURITY: test code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "imap/imap_parser.h"
#include "imap/imap_search_parse.h"

static const char *const opnames[] = {
    [IMAP_SK_ALL] = "ALL",
    [IMAP_SK_AND] = "AND",
    [IMAP_SK_OR] = "OR",
    [IMAP_SK_NOT] = "NOT",
    [IMAP_SK_SEQSET] = "SEQ",
    [IMAP_SK_UID] = "UID",
    [IMAP_SK_ANSWERED] = "ANSWERED",
    [IMAP_SK_DELETED] = "DELETED",
    [IMAP_SK_DRAFT] = "DRAFT",
    [IMAP_SK_FLAGGED] = "FLAGGED",
    [IMAP_SK_SEEN] = "SEEN",
    [IMAP_SK_RECENT] = "RECENT",
    [IMAP_SK_NEW] = "NEW",
    [IMAP_SK_OLD] = "OLD",
    [IMAP_SK_UNANSWERED] = "UNANSWERED",
    [IMAP_SK_UNDELETED] = "UNDELETED",
    [IMAP_SK_UNDRAFT] = "UNDRAFT",
    [IMAP_SK_UNFLAGGED] = "UNFLAGGED",
    [IMAP_SK_UNSEEN] = "UNSEEN",
    [IMAP_SK_KEYWORD] = "KEYWORD",
    [IMAP_SK_UNKEYWORD] = "UNKEYWORD",
    [IMAP_SK_BCC] = "BCC",
    [IMAP_SK_BODY] = "BODY",
    [IMAP_SK_CC] = "CC",
    [IMAP_SK_FROM] = "FROM",
    [IMAP_SK_SUBJECT] = "SUBJECT",
    [IMAP_SK_TEXT] = "TEXT",
    [IMAP_SK_TO] = "TO",
    [IMAP_SK_HEADER] = "HEADER",
    [IMAP_SK_BEFORE] = "BEFORE",
    [IMAP_SK_ON] = "ON",
    [IMAP_SK_SINCE] = "SINCE",
    [IMAP_SK_SENTBEFORE] = "SENTBEFORE",
    [IMAP_SK_SENTON] = "SENTON",
    [IMAP_SK_SENTSINCE] = "SENTSINCE",
    [IMAP_SK_LARGER] = "LARGER",
    [IMAP_SK_SMALLER] = "SMALLER",
    [IMAP_SK_MODSEQ] = "MODSEQ",
};

static void
dump_key(struct buf *b, const struct imap_search_key *k)
{
	buf_printf(b, "(%s", opnames[k->op]);
	if (k->field)
		buf_printf(b, " field=%s", k->field);
	if (k->str)
		buf_printf(b, " \"%s\"", k->str);
	switch (k->op) {
	case IMAP_SK_BEFORE:
	case IMAP_SK_ON:
	case IMAP_SK_SINCE:
	case IMAP_SK_SENTBEFORE:
	case IMAP_SK_SENTON:
	case IMAP_SK_SENTSINCE:
		buf_printf(b, " %04d-%02d-%02d/%lld", k->date.year, k->date.month, k->date.day,
			   (long long)k->date.days);
		break;
	case IMAP_SK_LARGER:
	case IMAP_SK_SMALLER:
		buf_printf(b, " %llu", (unsigned long long)k->number);
		break;
	case IMAP_SK_MODSEQ:
		if (k->modseq_flag)
			buf_printf(b, " flag=%s type=%d", k->modseq_flag, (int)k->modseq_type);
		buf_printf(b, " %llu", (unsigned long long)k->number);
		break;
	case IMAP_SK_SEQSET:
	case IMAP_SK_UID:
		buf_putc(b, ' ');
		imap_seqset_format(&k->set, b);
		break;
	default:
		break;
	}
	for (const struct imap_search_key *c = k->child; c != NULL; c = c->next) {
		buf_putc(b, ' ');
		dump_key(b, c);
	}
	buf_putc(b, ')');
}

/* Parse "t SEARCH <in>" and return the dumped program or "ERR <msg>"; caller frees. */
static char *
search(const char *in)
{
	struct imap_parser *p = imap_parser_new(NULL);
	struct buf line = BUF_INIT(0), out = BUF_INIT(0);
	size_t used, off = 0;
	int r;

	buf_printf(&line, "t SEARCH %s\r\n", in);
	while ((r = imap_parser_feed(p, line.data + off, line.len - off, &used)) ==
	       IMAP_PARSE_LITERAL) {
		off += used;
		imap_parser_literal_accept(p);
	}
	assert_int_equal(r, IMAP_PARSE_DONE);
	const struct imap_command *c = imap_parser_command(p);
	struct imap_search_program prog;
	const char *err = NULL;
	if (imap_search_parse(c->args, &prog, &err) < 0) {
		assert_non_null(err);
		assert_null(prog.root);
		buf_printf(&out, "ERR %s", err);
	} else {
		if (prog.esearch)
			buf_printf(&out, "RETURN %x ", prog.ret);
		if (prog.charset)
			buf_printf(&out, "CHARSET %s ", prog.charset);
		if (prog.uses_saved)
			buf_puts(&out, "SAVED ");
		if (prog.uses_modseq)
			buf_puts(&out, "MODSEQ ");
		dump_key(&out, prog.root);
	}
	imap_search_program_free(&prog);
	assert_null(prog.root);
	imap_parser_free(&p);
	buf_free(&line);
	return buf_steal(&out);
}

#define S(in, want)                                                                                \
	do {                                                                                       \
		char *got_ = search(in);                                                           \
		if (strcmp(got_, want) != 0)                                                       \
			fail_msg("SEARCH %s\n got: %s\nwant: %s", in, got_, want);                 \
		free(got_);                                                                        \
	} while (0)

static void
test_simple_keys(void **state)
{
	(void)state;
	S("ALL", "(AND (ALL))");
	S("answered deleted DRAFT Flagged SEEN RECENT NEW OLD",
	  "(AND (ANSWERED) (DELETED) (DRAFT) (FLAGGED) (SEEN) (RECENT) (NEW) (OLD))");
	S("UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN",
	  "(AND (UNANSWERED) (UNDELETED) (UNDRAFT) (UNFLAGGED) (UNSEEN))");
	S("KEYWORD $Junk UNKEYWORD NonJunk", "(AND (KEYWORD \"$Junk\") (UNKEYWORD \"NonJunk\"))");
	S("BCC a BODY \"b c\" CC {1}\r\nd FROM e SUBJECT f TEXT g TO h",
	  "(AND (BCC \"a\") (BODY \"b c\") (CC \"d\") (FROM \"e\") (SUBJECT \"f\") (TEXT \"g\") "
	  "(TO \"h\"))");
	S("HEADER Message-ID \"<x@y>\"", "(AND (HEADER field=Message-ID \"<x@y>\"))");
	S("HEADER X-A \"\"", "(AND (HEADER field=X-A \"\"))");
	/* field-name is an astring: any; those no field can have match nothing. */
	S("HEADER \"\" x", "(AND (HEADER field= \"x\"))");
	S("HEADER \"a:b\" {1}\r\nx", "(AND (HEADER field=a:b \"x\"))");
	S("HEADER \"a b\" x", "(AND (HEADER field=a b \"x\"))");
	S("LARGER 100 SMALLER 9223372036854775807",
	  "(AND (LARGER 100) (SMALLER 9223372036854775807))");
	S("1:3,5 UID 7:* $", "SAVED (AND (SEQ 1:3,5) (UID 7:*) (SEQ $))");
	S("*", "(AND (SEQ *))");
	S("NIL", "ERR unknown search key");
	S("SUBJECT NIL", "(AND (SUBJECT \"NIL\"))");
}

static void
test_dates(void **state)
{
	(void)state;
	S("SINCE 1-Feb-1994", "(AND (SINCE 1994-02-01/8797))");
	S("BEFORE \"01-jan-1970\" ON 31-DEC-1969",
	  "(AND (BEFORE 1970-01-01/0) (ON 1969-12-31/-1))");
	S("SENTBEFORE 29-Feb-2000 SENTON 29-Feb-2024 SENTSINCE 1-Mar-2100",
	  "(AND (SENTBEFORE 2000-02-29/11016) (SENTON 2024-02-29/19782) "
	  "(SENTSINCE 2100-03-01/47541))");
	S("SINCE 29-Feb-1900", "ERR invalid date");
	S("SINCE 29-Feb-2023", "ERR invalid date");
	S("SINCE 31-Apr-2023", "ERR invalid date");
	S("SINCE 0-Jan-2023", "ERR invalid date");
	S("SINCE 32-Jan-2023", "ERR invalid date");
	S("SINCE 001-Jan-2023", "ERR invalid date");
	S("SINCE 1-Jan-23", "ERR invalid date");
	S("SINCE 1-Jan-20233", "ERR invalid date");
	S("SINCE 1-Jan-0000", "ERR invalid date");
	S("SINCE 1-Foo-2023", "ERR invalid date");
	S("SINCE 1-Ja-2023", "ERR invalid date");
	S("SINCE -Jan-2023", "ERR invalid date");
	S("SINCE 1/Jan/2023", "ERR invalid date");
	S("SINCE 1-Jan-2O23", "ERR invalid date");
	S("SINCE 1-Jan", "ERR invalid date");
	S("SINCE", "ERR invalid date");
	S("SINCE (1-Jan-2023)", "ERR invalid date");

	struct imap_date d;
	assert_int_equal(imap_search_parse_date("9-Sep-9999", 10, &d), 0);
	assert_int_equal(d.year, 9999);
	assert_int_equal(imap_search_parse_date("1-Jan-0001", 10, &d), 0);
	assert_int_equal(d.days, -719162);
	assert_int_equal(imap_search_parse_date("", 0, &d), -1);
	assert_int_equal(imap_search_parse_date("1", 1, &d), -1);
	assert_int_equal(imap_search_parse_date("12", 2, &d), -1);
	assert_int_equal(imap_search_parse_date("1-", 2, &d), -1);
}

static void
test_nesting(void **state)
{
	(void)state;
	S("OR FROM a (SINCE 1-Feb-1994 NOT SEEN)",
	  "(AND (OR (FROM \"a\") (AND (SINCE 1994-02-01/8797) (NOT (SEEN)))))");
	S("NOT NOT OR OR ALL SEEN DRAFT 3",
	  "(AND (NOT (NOT (OR (OR (ALL) (SEEN)) (DRAFT)))) (SEQ 3))");
	S("((ALL) (SEEN))", "(AND (AND (AND (ALL)) (AND (SEEN))))");
	S("OR", "ERR missing search key");
	S("OR ALL", "ERR missing search key");
	S("NOT", "ERR missing search key");
	S("()", "ERR empty search key list");
	S("(ALL ())", "ERR empty search key list");

	/* 100 levels are fine, 101 are not (NOT chains live on one line). */
	struct buf b = BUF_INIT(0);
	for (int i = 0; i < 99; i++)
		buf_puts(&b, "NOT ");
	buf_puts(&b, "ALL");
	char *got = search(b.data);
	assert_int_equal(strncmp(got, "(AND (NOT (NOT", 14), 0);
	free(got);
	buf_reset(&b);
	for (int i = 0; i < 100; i++)
		buf_puts(&b, "NOT ");
	buf_puts(&b, "ALL");
	got = search(b.data);
	assert_string_equal(got, "ERR search program nested too deeply");
	free(got);
	buf_reset(&b);
	for (int i = 0; i < 3000; i++)
		buf_puts(&b, "OR ");
	buf_puts(&b, "ALL");
	got = search(b.data);
	assert_string_equal(got, "ERR search program nested too deeply");
	free(got);
	/* Long flat programs are fine. */
	buf_reset(&b);
	for (int i = 0; i < 3000; i++)
		buf_puts(&b, "SEEN ");
	buf_puts(&b, "ALL");
	got = search(b.data);
	assert_int_equal(strncmp(got, "(AND (SEEN) (SEEN)", 18), 0);
	free(got);
	buf_free(&b);
}

static void
test_return_charset(void **state)
{
	(void)state;
	S("RETURN (MIN MAX) ALL", "RETURN 3 (AND (ALL))");
	S("RETURN (all count SAVE) ALL", "RETURN 1c (AND (ALL))");
	S("RETURN () ALL", "RETURN 4 (AND (ALL))");
	S("CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa9t\xc3",
	  "CHARSET UTF-8 (AND (SUBJECT \"\xc3\xa9t\xc3\"))");
	S("RETURN (COUNT) CHARSET \"US-ASCII\" 1", "RETURN 8 CHARSET US-ASCII (AND (SEQ 1))");
	S("CHARSET UTF-8 RETURN (COUNT) 1", "ERR unknown search key");
	S("RETURN (FOO) ALL", "ERR unknown RETURN option");
	S("RETURN ((MIN)) ALL", "ERR invalid RETURN option");
	S("RETURN MIN ALL", "ERR RETURN options expected");
	S("RETURN", "ERR RETURN options expected");
	S("RETURN (MIN)", "ERR empty search key list");
	S("CHARSET", "ERR charset expected");
	S("CHARSET \"\" ALL", "ERR charset expected");
	S("CHARSET UTF-8", "ERR empty search key list");
	S("", "ERR empty search key list");
}

static void
test_modseq(void **state)
{
	(void)state;
	S("MODSEQ 620162338", "MODSEQ (AND (MODSEQ 620162338))");
	S("MODSEQ 0", "MODSEQ (AND (MODSEQ 0))");
	S("MODSEQ \"/flags/\\\\draft\" all 620162338",
	  "MODSEQ (AND (MODSEQ flag=\\draft type=0 620162338))");
	S("MODSEQ \"/flags/$Junk\" priv 5 MODSEQ \"/FLAGS/x\" SHARED 6",
	  "MODSEQ (AND (MODSEQ flag=$Junk type=1 5) (MODSEQ flag=x type=2 6))");
	S("MODSEQ 9223372036854775808", "ERR mod-sequence expected");
	S("MODSEQ", "ERR mod-sequence expected");
	S("MODSEQ x", "ERR mod-sequence expected");
	S("MODSEQ \"/flags/\" all 1", "ERR invalid MODSEQ entry name");
	S("MODSEQ \"/flag/x\" all 1", "ERR invalid MODSEQ entry name");
	S("MODSEQ \"/flags/a b\" all 1", "ERR invalid MODSEQ entry name");
	S("MODSEQ \"/flags/x\" some 1", "ERR invalid MODSEQ entry type");
	S("MODSEQ \"/flags/x\" (all) 1", "ERR MODSEQ entry type expected");
	S("MODSEQ \"/flags/x\" all", "ERR mod-sequence expected");
}

static void
test_errors(void **state)
{
	(void)state;
	S("FOO", "ERR unknown search key");
	S("\"ALL\"", "ERR search key expected");
	S("FROM", "ERR string expected");
	S("FROM (a)", "ERR string expected");
	S("FROM %", "ERR string expected");
	S("HEADER", "ERR header field name expected");
	S("HEADER (a) x", "ERR header field name expected");
	S("HEADER X", "ERR string expected");
	S("LARGER", "ERR number expected");
	S("LARGER -1", "ERR number expected");
	S("LARGER 1k", "ERR number expected");
	S("SMALLER 99999999999999999999", "ERR number expected");
	S("KEYWORD", "ERR keyword expected");
	S("KEYWORD \\Seen", "ERR keyword expected");
	S("KEYWORD \"x\"", "ERR keyword expected");
	S("KEYWORD a*", "ERR keyword expected");
	S("UID", "ERR sequence set expected");
	S("UID \"1\"", "ERR sequence set expected");
	S("UID 0", "ERR zero or leading zero in sequence set");
	S("UID 1:x", "ERR number expected in sequence set");
	S("1,", "ERR number expected in sequence set");
	S("4294967296", "ERR number out of range in sequence set");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_simple_keys), cmocka_unit_test(test_dates),
	    cmocka_unit_test(test_nesting),	cmocka_unit_test(test_return_charset),
	    cmocka_unit_test(test_modseq),	cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
