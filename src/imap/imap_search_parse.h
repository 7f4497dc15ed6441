/*
 * imap_search_parse — turns the arguments of SEARCH / UID SEARCH into a
 * search program: an AST of search keys (RFC 9051 §6.4.4, the rev1 keys
 * NEW OLD RECENT, CONDSTORE's MODSEQ of RFC 7162, "$" of RFC 5182), the
 * CHARSET and the ESEARCH RETURN options (RFC 4731). Also IMAP dates
 * ("1-Feb-1994"). Evaluating a program against messages is imap_search's.
 *
 * The program owns copies of every string, so it outlives the parser's
 * command. Sequence sets are kept as parsed (with "*" and "$"): resolve them
 * when evaluating.
 *
 * SECURITY: the argument tree is peer input. Nesting of NOT, OR and
 * parentheses is capped, every number is range-checked, dates are
 * validated against the calendar; a malformed program is a clean error
 * with a message for the BAD reply.
 */
#ifndef SURAT_IMAP_SEARCH_PARSE_H
#define SURAT_IMAP_SEARCH_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap/imap_parser.h"
#include "imap/imap_seqset.h"

/* Deepest nesting of NOT / OR / ( ) accepted. */
#define IMAP_SEARCH_MAX_DEPTH 100

enum imap_search_op {
	IMAP_SK_ALL,
	IMAP_SK_AND,	/* all children match; "( ... )" and the top level */
	IMAP_SK_OR,	/* two children */
	IMAP_SK_NOT,	/* one child */
	IMAP_SK_SEQSET, /* message sequence numbers: set */
	IMAP_SK_UID,	/* UIDs: set */
	/* flags */
	IMAP_SK_ANSWERED,
	IMAP_SK_DELETED,
	IMAP_SK_DRAFT,
	IMAP_SK_FLAGGED,
	IMAP_SK_SEEN,
	IMAP_SK_RECENT, /* rev1 */
	IMAP_SK_NEW,	/* rev1: RECENT and not SEEN */
	IMAP_SK_OLD,	/* rev1: not RECENT */
	IMAP_SK_UNANSWERED,
	IMAP_SK_UNDELETED,
	IMAP_SK_UNDRAFT,
	IMAP_SK_UNFLAGGED,
	IMAP_SK_UNSEEN,
	IMAP_SK_KEYWORD,   /* str: the keyword */
	IMAP_SK_UNKEYWORD, /* str: the keyword */
	/* substring matches: str (bytes as sent, in the program's charset) */
	IMAP_SK_BCC,
	IMAP_SK_BODY,
	IMAP_SK_CC,
	IMAP_SK_FROM,
	IMAP_SK_SUBJECT,
	IMAP_SK_TEXT,
	IMAP_SK_TO,
	IMAP_SK_HEADER, /* field: the header name; str: the substring */
	/* dates: date (internal date for the first three, Date: header for SENT*) */
	IMAP_SK_BEFORE,
	IMAP_SK_ON,
	IMAP_SK_SINCE,
	IMAP_SK_SENTBEFORE,
	IMAP_SK_SENTON,
	IMAP_SK_SENTSINCE,
	/* sizes: number */
	IMAP_SK_LARGER,
	IMAP_SK_SMALLER,
	/* CONDSTORE: number is the mod-sequence; optional per-flag entry */
	IMAP_SK_MODSEQ,
};

enum imap_search_modseq_type {
	IMAP_SEARCH_MODSEQ_ALL = 0,
	IMAP_SEARCH_MODSEQ_PRIV,
	IMAP_SEARCH_MODSEQ_SHARED,
};

/* A calendar date; days counts from 1970-01-01 (negative before it). */
struct imap_date {
	int year, month, day; /* month 1..12 */
	int64_t days;
};

struct imap_search_key {
	enum imap_search_op op;
	struct imap_search_key *child; /* AND, OR, NOT: first child */
	struct imap_search_key *next;  /* next sibling */
	char *str;		       /* NUL-terminated copy; may hold 8-bit */
	size_t len;
	char *field;		/* HEADER: field name */
	uint64_t number;	/* LARGER, SMALLER: octets; MODSEQ: mod-sequence (0..2^63-1) */
	struct imap_date date;	/* date keys */
	struct imap_seqset set; /* SEQSET, UID: as parsed */
	char *modseq_flag;	/* MODSEQ: flag of "/flags/<flag>", or NULL */
	enum imap_search_modseq_type modseq_type;
};

/* imap_search_program.ret: RETURN options */
#define IMAP_SEARCH_RET_MIN 0x01u
#define IMAP_SEARCH_RET_MAX 0x02u
#define IMAP_SEARCH_RET_ALL 0x04u
#define IMAP_SEARCH_RET_COUNT 0x08u
#define IMAP_SEARCH_RET_SAVE 0x10u

struct imap_search_program {
	struct imap_search_key *root; /* AND of the top-level keys */
	char *charset;		      /* as given, or NULL */
	bool esearch;		      /* RETURN was given: answer with ESEARCH */
	unsigned ret;		      /* IMAP_SEARCH_RET_*; RETURN () means ALL */
	bool uses_saved;	      /* a set holds "$" */
	bool uses_modseq;	      /* MODSEQ appears: reply with (MODSEQ n) */
	size_t nkeys;
};

/*
 * Parse the arguments after the SEARCH keyword (args ends with EOL) into
 * prog. 0, or -1 with *err_r a static message for a BAD reply (prog is then
 * empty). Free with imap_search_program_free() either way. The charset is
 * not judged: the caller answers NO [BADCHARSET] to ones it lacks.
 */
int imap_search_parse(const struct imap_arg *args, struct imap_search_program *prog,
		      const char **err_r);
/* Free everything the program holds and empty it. */
void imap_search_program_free(struct imap_search_program *prog);

/* Parse an IMAP date "d-Mon-yyyy" (day 1 or 2 digits, month any case). 0 or -1. */
int imap_search_parse_date(const char *s, size_t len, struct imap_date *r);

#endif
