/*
 * main — the surat binary: the daemon (`serve`) and the admin CLI.
 *
 *   surat [-c FILE] serve | check-config | domain ... | user ... | alias ...
 *                   | queue ... | mailbox ...
 *
 * Exit status: 0 success, 1 runtime error, 2 usage error; every error is one
 * line on stderr naming what was wrong. The CLI works beside a running
 * daemon: the databases are SQLite in WAL mode and the spool is plain files.
 *
 * SECURITY: passwords are read from standard input, never from argv, and
 * wiped after hashing.
 */
#include "auth/accounts.h"
#include "auth/lockout.h"
#include "auth/password.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/server.h"
#include "core/tls.h"
#include "core/util.h"
#include "core/worker.h"
#include "dns/dns.h"
#include "queue/queue.h"
#include "queue/queue_remote.h"
#include "queue/queue_spool.h"
#include "smtp/smtp_server.h"
#include "smtp/smtp_proto.h"
#include "smtp/ratelimit.h"
#include "imap/imap_session.h"
#include "mime/mime_meta.h"
#include "pop3/pop3_server.h"
#include "store/store.h"

#include <dirent.h>
#include <event2/event.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/surat/surat.conf"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static const char *prog = "surat";
/* The command being run, once known: its usage errors point at its --help. */
static const char *help_cmd;

/* The help texts keep their layout, tab-indented like the rest, not re-flowed. */
/* clang-format off */
static const char usage_text[] =
	"usage: surat [-c FILE] COMMAND [ARGS]\n"
	"\n"
	"  serve                        run the mail server in the foreground\n"
	"  check-config                 read the config file and report errors\n"
	"  domain add|del|list          manage the local domains\n"
	"  user add|del|list|passwd|quota  manage mail users\n"
	"  alias add|del|list           manage aliases (address or @domain catch-all)\n"
	"  queue list|show|delete|flush inspect and manage the mail queue\n"
	"  mailbox list|show|sweep      see what is in a user's mailboxes\n"
	"\n"
	"  -c FILE   config file (default " DEFAULT_CONFIG ")\n"
	"Run 'surat COMMAND --help' for the arguments of a command.\n";

struct cmd_help {
	const char *cmd;
	const char *text;
};

static const struct cmd_help helps[] = {
	{"serve", "usage: surat [-c FILE] serve\n"
		  "Run the daemon in the foreground: bind every listen.* address, drop\n"
		  "privileges to run_as, serve until SIGTERM/SIGINT (graceful stop).\n"
		  "SIGHUP reloads the TLS certificate and key.\n"},
	{"check-config", "usage: surat [-c FILE] check-config\n"
			 "Read the config file; print 'ok' or the first error with file:line.\n"
			 "Also loads tls.cert and tls.key (and checks that they match), checks\n"
			 "that data_dir is or can be made a writable directory, opens\n"
			 "relayhost.password_file and looks up run_as, as serve does at start.\n"},
	{"domain", "usage: surat domain add DOMAIN | del DOMAIN | list\n"
		   "Local domains are those surat receives mail for. del takes the\n"
		   "domain's own aliases with it; it refuses while the domain has\n"
		   "users, or while aliases of other domains point into it.\n"},
	{"user", "usage: surat user add ADDRESS [--quota SIZE] [--hash HASH]\n"
		 "       surat user passwd ADDRESS [--hash HASH]\n"
		 "       surat user quota ADDRESS SIZE|unlimited|default\n"
		 "       surat user del ADDRESS\n"
		 "       surat user list [DOMAIN]\n"
		 "add and passwd read the password from standard input (one line of\n"
		 "UTF-8, at most 255 octets, stored SASLprep'd as RFC 4013 asks),\n"
		 "unless --hash gives a ready crypt(3) hash ($y$, $6$, $5$ or $2b$).\n"
		 "del moves the user's mail to DATA_DIR/deleted/ADDRESS.TIME, and names\n"
		 "the aliases that still name the user. A quota SIZE of 0 or 'unlimited'\n"
		 "is no limit for the user; 'default' follows user.quota of the config.\n"},
	{"alias", "usage: surat alias add SOURCE TARGET [TARGET...]\n"
		  "       surat alias del SOURCE [TARGET]\n"
		  "       surat alias list\n"
		  "SOURCE is an address of a local domain, or @domain for a catch-all;\n"
		  "a TARGET is any address, local or remote. add adds to the TARGETs\n"
		  "SOURCE has already (it replaces none); del without TARGET removes\n"
		  "them all.\n"},
	{"queue", "usage: surat queue list | show ID | delete ID | flush\n"
		  "flush asks the running daemon to retry deferred mail now.\n"
		  "delete refuses (exit 1) a message being delivered at that moment;\n"
		  "try again once the attempt is over.\n"},
	{"mailbox", "usage: surat mailbox list ADDRESS | show ADDRESS MAILBOX [UID]\n"
		    "       surat mailbox sweep ADDRESS\n"
		    "show without UID lists the messages; with UID prints that message.\n"
		    "sweep moves the user's message files that no message names (a\n"
		    "crash can leave some) into the store's " STORE_ORPHANS_DIR "/ directory, and\n"
		    "removes delivery dedup keys older than 30 days; it reads every\n"
		    "message file name of the user, and is safe while the daemon runs (a\n"
		    "message being stored is never taken for one).\n"},
};
/* clang-format on */

/*
 * One error line on stderr: "surat: " what fmt makes, then tail. The line
 * is escaped as a whole (log_escape_text()): it echoes what the admin
 * typed or the config file holds, and a raw control or stray byte there
 * garbles the terminal. Text surat itself writes is printable UTF-8 and
 * passes as it is.
 */
static void error_vline(const char *tail, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);

static void
error_vline(const char *tail, const char *fmt, va_list ap)
{
	struct buf raw = BUF_INIT(0), line = BUF_INIT(0);

	buf_vprintf(&raw, fmt, ap);
	buf_printf(&line, "%s: ", prog);
	log_escape_text(&line, buf_str(&raw));
	fprintf(stderr, "%s%s\n", buf_str(&line), tail);
	buf_free(&raw);
	buf_free(&line);
}

static void error_line(const char *fmt, ...) PRINTF_LIKE(1, 2);

static void
error_line(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_vline("", fmt, ap);
	va_end(ap);
}

static int
usage_error(const char *fmt, ...) PRINTF_LIKE(1, 2);

static int
usage_error(const char *fmt, ...)
{
	char tail[128];
	va_list ap;
	/* 'surat --help' lists the commands, not a command's arguments. */
	snprintf(tail, sizeof(tail), " (see '%s %s%s--help')", prog, help_cmd ? help_cmd : "",
		 help_cmd ? " " : "");
	va_start(ap, fmt);
	error_vline(tail, fmt, ap);
	va_end(ap);
	return EXIT_USAGE;
}

static int
runtime_error(const char *fmt, ...) PRINTF_LIKE(1, 2);

static int
runtime_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_vline("", fmt, ap);
	va_end(ap);
	return EXIT_RUNTIME;
}

/*
 * rc, or 1 if what was printed did not all reach standard output: a list
 * or a message cut short by a full disk (`> file`) must not exit 0.
 */
static int
stdout_checked(int rc)
{
	if ((fflush(stdout) == EOF || ferror(stdout)) && rc == 0)
		rc = runtime_error("writing to standard output failed: %s", strerror(errno));
	return rc;
}

static int
wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	return 0;
}

static int
print_help(const char *cmd)
{
	for (size_t i = 0; i < ARRAY_LEN(helps); i++) {
		if (strcmp(helps[i].cmd, cmd) == 0) {
			fputs(helps[i].text, stdout);
			return 0;
		}
	}
	fputs(usage_text, stdout);
	return 0;
}

static int
load_config(const char *path, struct config *cfg)
{
	struct buf err = BUF_INIT(0);
	config_defaults(cfg);
	if (config_load(cfg, path, &err) < 0) {
		error_line("%s", buf_str(&err));
		buf_free(&err);
		config_free(cfg);
		return -1;
	}
	buf_free(&err);
	return 0;
}

static struct accounts *
open_accounts(const struct config *cfg)
{
	struct buf err = BUF_INIT(0);
	struct accounts *a = accounts_open(cfg->data_dir, &err);
	if (a == NULL)
		runtime_error("%s", buf_str(&err));
	buf_free(&err);
	return a;
}

/*
 * Read one line (the password) from stdin; no echo on a terminal. Only the
 * line's end (LF or CRLF) is taken off: a NUL or CR inside used to cut the
 * password short there, silently storing its first few characters. NULL
 * with *status set when there is none or it holds a NUL.
 */
static char *
read_password(int *status)
{
	struct termios old, noecho;
	int tty = isatty(0), c = EOF;
	char line[1024];
	size_t n = 0;

	if (tty) {
		fprintf(stderr, "Password: ");
		tcgetattr(0, &old);
		noecho = old;
		noecho.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(0, TCSAFLUSH, &noecho);
	}
	while (n < sizeof(line) - 1 && (c = getchar()) != EOF && c != '\n')
		line[n++] = (char)c;
	if (tty) {
		tcsetattr(0, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (n > 0 && line[n - 1] == '\r')
		n--;
	char *pw = NULL;
	if (n == 0)
		*status = runtime_error("no password given on standard input");
	else if (memchr(line, '\0', n) != NULL)
		*status = runtime_error("password refused: it contains a NUL byte");
	else
		pw = xstrndup(line, n);	/* longer than 1023 octets: refused by length */
	util_wipe(line, sizeof(line));
	return pw;
}

/* --hash HASH or a password from stdin, as a hash. NULL + message on error. */
static char *
get_hash(const char *given, int *status)
{
	if (given) {
		/* Else stored, and told all went well: no password ever logs in.
		 * The reason names the scheme and the part at fault: "damaged"
		 * alone left the admin to guess which of 100 characters. */
		struct buf why = BUF_INIT(0);
		if (!password_hash_check(given, &why)) {
			*status = usage_error("--hash: %s", buf_str(&why));
			buf_free(&why);
			return NULL;
		}
		buf_free(&why);
		return xstrdup(given);
	}
	char *pw = read_password(status);
	if (pw == NULL)
		return NULL;
	/* SASL PLAIN carries at most 255 octets (RFC 4616): a longer one could
	 * never log in over SMTP, IMAP AUTHENTICATE or POP3 AUTH. */
	if (strlen(pw) > SMTP_SASL_FIELD_MAX) {
		util_wipe(pw, strlen(pw));
		free(pw);
		*status = runtime_error("password longer than %d octets", SMTP_SASL_FIELD_MAX);
		return NULL;
	}
	const char *why;
	char *h = password_hash(pw, &why);
	util_wipe(pw, strlen(pw));
	free(pw);
	/* why names no character: the password must not reach a terminal or a log. */
	if (h == NULL && why != NULL)
		*status = runtime_error("password refused: %s", why);
	else if (h == NULL)
		*status = runtime_error("password hashing failed");
	return h;
}

static void
print_domain(const char *d, void *arg)
{
	printf("%s\n", d);
}

/*
 * 1 when sub is one of subs (NULL-terminated). Checked before data_dir is
 * opened: a mistyped subcommand is a usage error (2), and creates nothing.
 */
static int
known_sub(const char *sub, const char *const *subs)
{
	for (; *subs; subs++)
		if (strcmp(sub, *subs) == 0)
			return 1;
	return 0;
}

/*
 * Whether arg is an option, known or not: it begins with '-' (two of them,
 * or one and no '@': a local part may begin with '-', RFC 5322 atext, and
 * no option holds an '@'; nor a digit: "-5" is a bad number, refused as
 * one). Taken for an argument, 'user add -q 1G a@b' said "need exactly one
 * ADDRESS", naming nothing of what was wrong.
 */
static int
is_option(const char *arg)
{
	return arg[0] == '-' && arg[1] != '\0' &&
	       (arg[1] == '-' || (!isdigit((unsigned char)arg[1]) && strchr(arg, '@') == NULL));
}

/* The first of argv[0..argc) but argv[skip] that is_option(), or NULL. */
static const char *
option_in(int argc, char **argv, int skip)
{
	for (int i = 0; i < argc; i++)
		if (i != skip && is_option(argv[i]))
			return argv[i];
	return NULL;
}

static int
cmd_domain(struct config *cfg, int argc, char **argv)
{
	static const char *const subs[] = {"add", "del", "list", NULL};

	if (argc < 1)
		return usage_error("domain: missing subcommand (add, del, list)");
	if (!known_sub(argv[0], subs))
		return usage_error("domain: unknown subcommand '%s'", argv[0]);
	/* Arguments too before data_dir is opened: see known_sub(). */
	const char *opt = option_in(argc - 1, argv + 1, -1);
	if (opt != NULL)
		return usage_error("domain %s: unknown option '%s'", argv[0], opt);
	if (strcmp(argv[0], "list") == 0 && argc != 1)
		return usage_error("domain list takes no arguments");
	if (strcmp(argv[0], "list") != 0 && argc != 2)
		return usage_error("domain %s: need exactly one DOMAIN", argv[0]);
	struct accounts *a = open_accounts(cfg);
	if (a == NULL)
		return EXIT_RUNTIME;
	struct buf err = BUF_INIT(0);
	int rc = 0;
	if (strcmp(argv[0], "add") == 0 || strcmp(argv[0], "del") == 0) {
		if ((argv[0][0] == 'a' ? accounts_domain_add(a, argv[1], &err)
				       : accounts_domain_del(a, argv[1], &err)) < 0)
			rc = runtime_error("domain %s: %s", argv[0], buf_str(&err));
	} else if (strcmp(argv[0], "list") == 0) {
		if (accounts_domain_list(a, print_domain, NULL) < 0)
			rc = runtime_error("domain list: database error");
	}
	buf_free(&err);
	accounts_close(&a);
	return rc;
}

/* A quota as 'user list' prints it: a size, or "unlimited" (0). 0 or -1. */
static int
parse_quota(const char *s, int64_t *quota)
{
	if (strcmp(s, "unlimited") == 0) {
		*quota = 0;
		return 0;
	}
	return config_parse_size(s, quota);
}

static void
print_user(const struct account_user *u, void *arg)
{
	const struct config *cfg = arg;
	if (u->quota == 0)
		printf("%s quota=unlimited\n", u->address);	/* set to 0: no limit */
	else if (u->quota > 0)
		printf("%s quota=%lld\n", u->address, (long long)u->quota);
	else if (cfg->user_quota > 0)
		printf("%s quota=%lld (default)\n", u->address, (long long)cfg->user_quota);
	else
		printf("%s quota=unlimited\n", u->address);
}

/*
 * A deleted user's mailboxes go aside (store_account_retire()): kept, not
 * inherited. Aliases that name the user are told of: they now reach nobody
 * there (an alias of that one member refuses mail, 550 5.1.1), and the
 * admin had no word of it.
 */
static int
user_del_mail(struct accounts *a, const struct config *cfg, const char *address)
{
	struct buf addr = BUF_INIT(0), moved = BUF_INIT(0), err = BUF_INIT(0);
	struct buf naming = BUF_INIT(0);
	int rc = 0, r = -1;

	if (accounts_normalise(address, 0, &addr, &err) == 0 &&
	    accounts_aliases_naming(a, addr.data, &naming) > 0)
		error_line("note: aliases still name %s: %s (see 'surat alias del')", addr.data,
			   naming.data);
	buf_free(&naming);
	if (addr.len > 0)
		r = store_account_retire(cfg->data_dir, addr.data, &moved, &err);
	if (r < 0)
		rc = runtime_error("user del: %s deleted, but its mail was not moved aside: %s",
				   address, buf_str(&err));
	else if (r == 1)
		printf("%s's mail moved to %s (remove it when no longer needed)\n", addr.data,
		       moved.data);
	buf_free(&addr);
	buf_free(&moved);
	buf_free(&err);
	return rc;
}

/*
 * Before a password is asked for: all accounts_user_add() checks but the
 * hash (add: a well-formed address of a local domain, no user nor alias
 * yet), or that the user exists (passwd). Otherwise the admin types a
 * password only to learn of a typo, and input that is not there reads as
 * "no password given" instead of what is wrong. add and passwd check all
 * of it again. 0, or -1 with err set.
 */
static int
user_precheck(struct accounts *a, const char *sub, const char *address, struct buf *err)
{
	if (strcmp(sub, "add") == 0)
		return accounts_user_check(a, address, err);

	struct buf addr = BUF_INIT(0);
	struct account_user u = {0};
	int r = accounts_normalise(address, 0, &addr, err);
	int found = r == 0 ? accounts_user_get(a, addr.data, &u) : 0;

	if (found < 0) {
		/* Not "no such user": the lookup itself failed. */
		buf_printf(err, "accounts database error looking up %s", addr.data);
		r = -1;
	} else if (found == 1) {
		accounts_user_free(&u);
	} else if (r == 0) {
		buf_printf(err, "no such user %s", addr.data);
		r = -1;
	}
	buf_free(&addr);
	return r;
}

static int
cmd_user(struct config *cfg, int argc, char **argv)
{
	if (argc < 1)
		return usage_error("user: missing subcommand (add, del, list, passwd, quota)");
	static const char *const subs[] = {"add", "del", "list", "passwd", "quota", NULL};
	if (!known_sub(argv[0], subs))
		return usage_error("user: unknown subcommand '%s'", argv[0]);
	const char *sub = argv[0];
	const char *hash_opt = NULL;
	int64_t quota = -1;
	char *pos[4];
	int npos = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--hash") == 0 && i + 1 < argc) {
			hash_opt = argv[++i];
		} else if (strcmp(argv[i], "--quota") == 0 && i + 1 < argc) {
			if (parse_quota(argv[++i], &quota) < 0)
				return usage_error("--quota: bad size '%s' (e.g. 1G, 500M)", argv[i]);
		} else if (strcmp(argv[i], "--hash") == 0 || strcmp(argv[i], "--quota") == 0) {
			return usage_error("user %s: %s needs a value", sub, argv[i]);
		} else if (is_option(argv[i])) {
			return usage_error("user %s: unknown option '%s'", sub, argv[i]);
		} else if (npos < 4) {
			pos[npos++] = argv[i];
		} else {
			return usage_error("user %s: too many arguments", sub);
		}
	}
	/* An option the subcommand does not use would be ignored, and the admin
	 * told all went well: 'user passwd A --quota 1G' sets no quota. */
	if (quota >= 0 && strcmp(sub, "add") != 0)
		return usage_error("user %s: --quota is only for 'user add' ('user quota' sets it)",
				   sub);
	if (hash_opt && strcmp(sub, "add") != 0 && strcmp(sub, "passwd") != 0)
		return usage_error("user %s: --hash is only for 'user add' and 'user passwd'", sub);
	/* Before data_dir is opened: see known_sub(). */
	if (strcmp(sub, "quota") == 0 && npos != 2)
		return usage_error("user quota: need ADDRESS and SIZE (or 'default')");
	if (strcmp(sub, "list") == 0 && npos > 1)
		return usage_error("user list: at most one DOMAIN");
	if (strcmp(sub, "quota") != 0 && strcmp(sub, "list") != 0 && npos != 1)
		return usage_error("user %s: need exactly one ADDRESS", sub);
	/* (--quota was refused above: quota is -1 here, 'default'.) */
	if (strcmp(sub, "quota") == 0 && strcmp(pos[1], "default") != 0 &&
	    parse_quota(pos[1], &quota) < 0)
		return usage_error("user quota: bad size '%s'", pos[1]);
	if (hash_opt) {
		int rc = 0;
		char *h = get_hash(hash_opt, &rc);	/* only checks it: no password is read */
		if (h == NULL)
			return rc;
		free(h);
	}
	struct accounts *a = open_accounts(cfg);
	if (a == NULL)
		return EXIT_RUNTIME;
	struct buf err = BUF_INIT(0);
	int rc = 0;
	if (strcmp(sub, "add") == 0 || strcmp(sub, "passwd") == 0) {
		if (user_precheck(a, sub, pos[0], &err) < 0) {
			rc = runtime_error("user %s: %s", sub, buf_str(&err));
			goto out;
		}
		char *h = get_hash(hash_opt, &rc);
		if (h == NULL)
			goto out;
		int r = strcmp(sub, "add") == 0 ? accounts_user_add(a, pos[0], h, quota, &err)
						: accounts_user_passwd(a, pos[0], h, &err);
		util_wipe(h, strlen(h));
		free(h);
		if (r < 0)
			rc = runtime_error("user %s: %s", sub, buf_str(&err));
	} else if (strcmp(sub, "del") == 0) {
		if (accounts_user_del(a, pos[0], &err) < 0)
			rc = runtime_error("user del: %s", buf_str(&err));
		else
			rc = user_del_mail(a, cfg, pos[0]);
	} else if (strcmp(sub, "quota") == 0) {
		if (accounts_user_quota(a, pos[0], quota, &err) < 0)
			rc = runtime_error("user quota: %s", buf_str(&err));
	} else if (strcmp(sub, "list") == 0) {
		/* The domain as users store it: münchen.example or EXAMPLE.ORG
		 * name the same domain as xn--mnchen-3ya.example or example.org. */
		struct buf dom = BUF_INIT(0);
		if (npos && accounts_normalise_domain(pos[0], &dom, &err) < 0)
			rc = runtime_error("user list: %s", buf_str(&err));
		else if (npos && accounts_domain_exists(a, dom.data) != 1)
			rc = runtime_error("user list: no such domain %s", dom.data);
		else if (accounts_user_list(a, npos ? dom.data : NULL, print_user, cfg) < 0)
			rc = runtime_error("user list: database error");
		buf_free(&dom);
	}
out:
	buf_free(&err);
	accounts_close(&a);
	return rc;
}

static void
print_alias(const char *src, const char *dst, void *arg)
{
	printf("%s -> %s\n", src, dst);
}

/*
 * Each target is added on its own (accounts_alias_add()), so every one is
 * checked before the first goes in: a bad one late in the list, or one
 * already there or named twice, must not leave the alias half made while
 * the command reports failure. 0, or -1 with err set as
 * accounts_alias_add() would set it.
 */
static int
alias_check_targets(struct accounts *a, const char *source, int n, char **targets, struct buf *err)
{
	struct buf t = BUF_INIT(0), u = BUF_INIT(0);
	int r = 0;

	for (int i = 0; r == 0 && i < n; i++) {
		if (accounts_alias_check(a, source, targets[i], err) < 0) {
			r = -1;
			break;
		}
		buf_reset(&t);
		(void)accounts_normalise(targets[i], 0, &t, err);	/* (checked above) */
		for (int k = 0; r == 0 && k < i; k++) {
			buf_reset(&u);
			if (accounts_normalise(targets[k], 0, &u, err) == 0 &&
			    strcmp(u.data, t.data) == 0) {
				buf_printf(err, "target %s given twice", t.data);
				r = -1;
			}
		}
	}
	buf_free(&t);
	buf_free(&u);
	return r;
}

static int
cmd_alias(struct config *cfg, int argc, char **argv)
{
	static const char *const subs[] = {"add", "del", "list", NULL};

	if (argc < 1)
		return usage_error("alias: missing subcommand (add, del, list)");
	if (!known_sub(argv[0], subs))
		return usage_error("alias: unknown subcommand '%s'", argv[0]);
	/* Arguments too before data_dir is opened: see known_sub(). */
	const char *opt = option_in(argc - 1, argv + 1, -1);
	if (opt != NULL)
		return usage_error("alias %s: unknown option '%s'", argv[0], opt);
	if (strcmp(argv[0], "add") == 0 && argc < 3)
		return usage_error("alias add: need SOURCE and at least one TARGET");
	if (strcmp(argv[0], "del") == 0 && (argc < 2 || argc > 3))
		return usage_error("alias del: need SOURCE [TARGET]");
	if (strcmp(argv[0], "list") == 0 && argc != 1)
		return usage_error("alias list takes no arguments");
	struct accounts *a = open_accounts(cfg);
	if (a == NULL)
		return EXIT_RUNTIME;
	struct buf err = BUF_INIT(0);
	int rc = 0;
	if (strcmp(argv[0], "add") == 0) {
		if (alias_check_targets(a, argv[1], argc - 2, argv + 2, &err) < 0)
			rc = runtime_error("alias add: %s", buf_str(&err));
		for (int i = 2; rc == 0 && i < argc; i++)
			if (accounts_alias_add(a, argv[1], argv[i], &err) < 0)
				rc = runtime_error("alias add: %s", buf_str(&err));
	} else if (strcmp(argv[0], "del") == 0) {
		if (accounts_alias_del(a, argv[1], argc == 3 ? argv[2] : NULL, &err) < 0)
			rc = runtime_error("alias del: %s", buf_str(&err));
	} else if (strcmp(argv[0], "list") == 0) {
		if (accounts_alias_list(a, print_alias, NULL) < 0)
			rc = runtime_error("alias list: database error");
	}
	buf_free(&err);
	accounts_close(&a);
	return rc;
}

/*
 * 16 hex digits, and for a notice "-b" (bounce), "-d" (delay) or "-s"
 * (success; then up to 4 hex digits, as queue_spool.h says, as for a
 * bounce after a message's first).
 */
static int
valid_queue_id(const char *id)
{
	size_t n = strlen(id);
	if (n > QUEUE_ID_LEN || strspn(id, "0123456789abcdef") != 16)
		return 0;
	if (n == 16 || (n == 18 && id[16] == '-' && strchr("bds", id[17]) != NULL))
		return 1;
	/* A success notice of a later job, or a later bounce: its first recipient's index. */
	return id[16] == '-' && (id[17] == 's' || id[17] == 'b') &&
	       strspn(id + 18, "0123456789abcdef") == n - 18;
}

static void
fmt_time(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * Load queued message id from the spool dir: from the file named id, or else
 * from whichever file records it (a kept file written over, see
 * queue_spool.h; found by its envelope alone). 0 with name set to the file,
 * or -1 with err set.
 */
static int
load_queued(const char *dir, const char *id, struct spool_msg *m, struct buf *content,
	    struct buf *name, struct buf *err)
{
	buf_reset(name);
	if (spool_holds(dir, id, id) == 1) {
		buf_puts(name, id);
	} else {
		DIR *d = opendir(dir);
		struct dirent *de;
		while (d != NULL && name->len == 0 && (de = readdir(d)) != NULL)
			/* (A crash may leave a message under its file's earlier name.) */
			if ((spool_reused_name(de->d_name) || valid_queue_id(de->d_name)) &&
			    spool_holds(dir, de->d_name, id) == 1)
				buf_puts(name, de->d_name);
		if (d != NULL)
			closedir(d);
	}
	if (name->len == 0) {
		buf_printf(err, "not in %s", dir);
		return -1;
	}
	return spool_load(dir, name->data, id, m, content, err) < 0 ? -1 : 0;
}

/*
 * Unlink dir/name if it still holds queued message id, checked under the
 * file's lock: the daemon takes the same lock to free a kept file or to
 * write over it, so a message written there since it was read is never
 * the one removed. A delivery holds it shared while it runs: one still
 * running after a short wait makes this refuse, rather than say deleted
 * what is delivered next. 0, or an exit status.
 */
static int
delete_queued(const char *dir, const char *name, const char *id)
{
	char path[4096];
	struct stat a, b;
	int rc;

	if (xsnprintf(path, sizeof(path), "%s/%s", dir, name) < 0)
		return runtime_error("queue delete: path too long");
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return runtime_error("queue delete: open(%s) failed: %s", path, strerror(errno));
	int locked, tries = 0;
	while ((locked = flock(fd, LOCK_EX | LOCK_NB)) < 0 && errno == EWOULDBLOCK && ++tries < 10)
		usleep(20000);
	if (locked < 0 && errno == EWOULDBLOCK)
		rc = runtime_error("queue delete: %s is being delivered at this moment; %s", id,
				   "not deleted (try again)");
	else if (locked < 0)
		rc = runtime_error("queue delete: flock(%s) failed: %s", path, strerror(errno));
	else if (fstat(fd, &a) < 0 || stat(path, &b) < 0 || a.st_ino != b.st_ino ||
		 a.st_dev != b.st_dev || spool_holds(dir, name, id) != 1)
		rc = runtime_error("queue delete: %s is no longer queued (delivered meanwhile)", id);
	else if (unlink(path) < 0)
		rc = runtime_error("queue delete: unlink(%s) failed: %s", path, strerror(errno));
	else if (util_fsync_dir(dir) < 0)
		/* Else a power loss could bring it back, to be delivered. */
		rc = runtime_error("queue delete: %s unlinked, but fsync of %s failed: %s", id, dir,
				   strerror(errno));
	else {
		printf("deleted %s\n", id);
		rc = 0;
	}
	close(fd);
	return rc;
}

static void
print_queue_msg(const struct spool_msg *m, int verbose)
{
	char created[32], next[32];
	fmt_time(m->created, created, sizeof(created));
	printf("%s  %s  size=%llu  from=<%s>%s\n", m->id, created, (unsigned long long)m->size,
	       m->mail_from, m->is_notice ? "  (notice)" : "");
	for (size_t i = 0; i < m->nrcpts; i++) {
		const struct spool_rcpt *rc = &m->rcpts[i];
		printf("    <%s>  %s  %s  attempts=%u", rc->addr, rc->local == SPOOL_EXPANDED ? "alias" : rc->local ? "local" : "remote",
		       spool_status_name(rc->status), rc->attempts);
		if (rc->notice_owed)
			printf("  notice-owed");
		if (rc->status == RCPT_DEFERRED || rc->notice_owed) {
			fmt_time(rc->next_try, next, sizeof(next));
			printf("  next=%s", next);
		}
		if (rc->last_error && (verbose || rc->status != RCPT_DELIVERED))
			printf("  last=\"%s\"", rc->last_error);
		if (verbose && strcmp(rc->orig, rc->addr) != 0)
			printf("  rcpt-to=<%s>", rc->orig);
		printf("\n");
	}
	if (verbose) {
		printf("    client=[%s] helo=%s user=%s session=%s\n",
		       m->client_ip ? m->client_ip : "-", m->helo ? m->helo : "-",
		       m->auth_user ? m->auth_user : "-", m->session ? m->session : "-");
	}
}

/* Cut a path's trailing slashes ("/" stays). */
static void
strip_slashes(char *path)
{
	for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
		path[n - 1] = '\0';
}

/*
 * Make data_dir (mkdir -p). The directories above it that it makes get
 * 0755, whatever root's umask (027 or 077 on hardened systems): made 0750
 * or 0700 by root, they kept run_as out of a data_dir that was its own.
 * data_dir itself gets 0750 (less by the umask: it is run_as's).
 * 0, or -1 with errno set.
 */
static int
data_dir_make(const char *dir)
{
	char parent[4096];
	char *slash;

	if (mkdir(dir, 0750) == 0 || errno == EEXIST)
		return 0;
	if (errno != ENOENT)
		return -1;
	if (xsnprintf(parent, sizeof(parent), "%s", dir) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	/* "/var/lib/surat/": its parent is /var/lib, not data_dir itself. */
	strip_slashes(parent);
	if ((slash = strrchr(parent, '/')) != NULL && slash != parent) {
		*slash = '\0';
		if (util_mkdir_p_exact(parent, 0755) < 0)
			return -1;
	}
	return mkdir(dir, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

/*
 * One daemon per data_dir: data_dir/serve.lock, flock'ed for the daemon's
 * life (so a crash leaves no stale lock) and holding its pid. A second
 * serve on the same data_dir (another config, other ports) would take up
 * the same queue files and deliver each message twice. The descriptor,
 * or -1 with err set.
 */
static int
serve_lock(const struct config *cfg, struct buf *err)
{
	struct buf path = BUF_INIT(0);
	char pid[32] = "";
	int fd = -1;

	buf_printf(&path, "%s/serve.lock", cfg->data_dir);
	if (data_dir_make(cfg->data_dir) < 0 ||
	    (fd = open(path.data, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640)) < 0) {
		buf_printf(err, "cannot open %s: %s", path.data, strerror(errno));
	} else if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? strcspn(pid, "\n") : 0] = '\0';
		if (e == EWOULDBLOCK)
			buf_printf(err, "another surat serve (pid %s) runs on data_dir %s",
				   pid[0] ? pid : "?", cfg->data_dir);
		else
			buf_printf(err, "cannot lock %s: %s", path.data, strerror(e));
		close(fd);
		fd = -1;
	} else {
		int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
		if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
			log_warn("cannot write the pid to %s: %s", path.data, strerror(errno));
	}
	buf_free(&path);
	return fd;
}

/* Whether a daemon holds data_dir's serve.lock (serve_lock()). */
static int
serve_running(const struct config *cfg)
{
	struct buf path = BUF_INIT(0);
	int fd, held = 0;

	buf_printf(&path, "%s/serve.lock", cfg->data_dir);
	if ((fd = open(path.data, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) >= 0) {
		held = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
		close(fd);
	}
	buf_free(&path);
	return held;
}

static int
cmd_queue(struct config *cfg, int argc, char **argv)
{
	struct buf dir = BUF_INIT(0), err = BUF_INIT(0);
	struct accounts *a = NULL;	/* for notices: where their recipient is */
	int rc = 0, tried = 0;

	if (argc < 1)
		return usage_error("queue: missing subcommand (list, show, delete, flush)");
	queue_dir(cfg->data_dir, &dir);
	const char *opt = option_in(argc - 1, argv + 1, -1);
	if (opt != NULL) {
		rc = usage_error("queue %s: unknown option '%s'", argv[0], opt);
	} else if ((strcmp(argv[0], "list") == 0 || strcmp(argv[0], "flush") == 0) && argc != 1) {
		rc = usage_error("queue %s takes no arguments", argv[0]);
	} else if (strcmp(argv[0], "list") == 0) {
		DIR *d = opendir(dir.data);
		if (d == NULL) {
			if (errno != ENOENT)
				rc = runtime_error("opendir(%s) failed: %s", dir.data, strerror(errno));
			else
				printf("0 messages in the queue\n");	/* the daemon never ran */
			goto out;
		}
		struct dirent *de;
		size_t n = 0, bad = 0;
		while ((de = readdir(d)) != NULL) {
			/* What the daemon found damaged at start: never delivered, kept
			 * for the admin, who would not see it otherwise. */
			if (strncmp(de->d_name, ".corrupt.", 9) == 0) {
				printf("damaged spool file kept aside: %s/%s\n", dir.data, de->d_name);
				bad++;
				continue;
			}
			if (!valid_queue_id(de->d_name) && !spool_reused_name(de->d_name))
				continue;
			struct spool_msg m;
			buf_reset(&err);
			if (spool_load(dir.data, de->d_name, NULL, &m, NULL, &err) < 0)
				continue;	/* removed meanwhile, or still being written */
			if (m.is_notice && a == NULL && !tried++)
				a = open_accounts(cfg);
			if (m.is_notice && a != NULL)
				queue_notice_rcpt(a, &m);
			print_queue_msg(&m, 0);
			spool_msg_free(&m);
			n++;
		}
		closedir(d);
		printf("%zu message%s in the queue", n, n == 1 ? "" : "s");
		if (bad)
			printf(", %zu damaged file%s kept aside", bad, bad == 1 ? "" : "s");
		printf("\n");
	} else if (strcmp(argv[0], "show") == 0 || strcmp(argv[0], "delete") == 0) {
		if (argc != 2) {
			rc = usage_error("queue %s: need one queue ID", argv[0]);
			goto out;
		}
		if (!valid_queue_id(argv[1])) {
			rc = usage_error("queue %s: '%s' is not a queue ID (as 'queue list' shows them)",
					 argv[0], argv[1]);
			goto out;
		}
		struct spool_msg m;
		struct buf content = BUF_INIT(0), name = BUF_INIT(0);
		if (load_queued(dir.data, argv[1], &m, argv[0][0] == 's' ? &content : NULL, &name,
				&err) < 0) {
			rc = runtime_error("queue %s: no such message %s (%s)", argv[0], argv[1],
					   buf_str(&err));
			buf_free(&content);
			buf_free(&name);
			goto out;
		}
		if (argv[0][0] == 's') {
			if (m.is_notice && (a = open_accounts(cfg)) != NULL)
				queue_notice_rcpt(a, &m);
			print_queue_msg(&m, 1);
			printf("\n");
			fwrite(content.data, 1, content.len, stdout);
		} else {
			rc = delete_queued(dir.data, name.data, argv[1]);
		}
		buf_free(&content);
		buf_free(&name);
		spool_msg_free(&m);
	} else if (strcmp(argv[0], "flush") == 0) {
		struct buf path = BUF_INIT(0);
		buf_printf(&path, "%s/flush", dir.data);
		FILE *fp = fopen(path.data, "w");
		struct stat st;
		if (fp == NULL && errno == ENOENT && stat(dir.data, &st) < 0 && errno == ENOENT)
			/* As 'queue list' says: empty. It failed, exit 1, after setup. */
			printf("nothing to flush: no daemon has run on this data_dir, the queue is "
			       "empty\n");
		else if (fp == NULL)
			rc = runtime_error("queue flush: cannot create %s: %s", path.data,
					   strerror(errno));
		else {
			fclose(fp);
			if (serve_running(cfg))
				printf("flush requested; the daemon retries deferred mail within a "
				       "second\n");
			else
				printf("flush requested; no daemon runs on this data_dir: it retries "
				       "deferred mail as it starts\n");
		}
		buf_free(&path);
	} else {
		rc = usage_error("queue: unknown subcommand '%s'", argv[0]);
	}
out:
	accounts_close(&a);
	buf_free(&dir);
	buf_free(&err);
	return rc;
}

static int
print_message(struct store *st, const char *box, uint32_t uidvalidity, const char *uidstr)
{
	uint64_t uid, size;
	int fd;
	char chunk[65536];

	if (util_parse_u64(uidstr, strlen(uidstr), &uid) < 0 || uid == 0 || uid > UINT32_MAX)
		return usage_error("mailbox show: bad UID '%s'", uidstr);
	/* 0: no such message (a UID never given or expunged). */
	if (store_msg_open(st, box, uidvalidity, (uint32_t)uid, &fd, &size) <= 0)
		return runtime_error("mailbox show: %s UID %s: %s", box, uidstr, store_errstr(st));
	ssize_t n;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		fwrite(chunk, 1, (size_t)n, stdout);
	close(fd);
	return n < 0 ? runtime_error("mailbox show: read failed: %s", strerror(errno)) : 0;
}

static int
cmd_mailbox(struct config *cfg, int argc, char **argv)
{
	struct buf addr = BUF_INIT(0), err = BUF_INIT(0);
	struct store *st = NULL;
	int rc = 0;
	/* (Not the MAILBOX of show: "-drafts" may be one.) */
	const char *opt =
	    argc < 1 ? NULL : option_in(argc - 1, argv + 1, strcmp(argv[0], "show") == 0 ? 1 : -1);

	if (opt != NULL)
		return usage_error("mailbox %s: unknown option '%s'", argv[0], opt);
	if (argc < 2 || (strcmp(argv[0], "list") == 0 && argc != 2) ||
	    (strcmp(argv[0], "sweep") == 0 && argc != 2) ||
	    (strcmp(argv[0], "show") == 0 && argc != 3 && argc != 4))
		return usage_error(
		    "mailbox: usage: mailbox list ADDRESS | show ADDRESS MAILBOX [UID]"
		    " | sweep ADDRESS");
	if (strcmp(argv[0], "list") != 0 && strcmp(argv[0], "show") != 0 &&
	    strcmp(argv[0], "sweep") != 0)
		return usage_error("mailbox: unknown subcommand '%s'", argv[0]);
	struct accounts *a = open_accounts(cfg);
	if (a == NULL)
		return EXIT_RUNTIME;
	struct account_user u = {0};
	if (accounts_normalise(argv[1], 0, &addr, &err) < 0) {
		rc = runtime_error("mailbox: %s", buf_str(&err));
		goto out;
	}
	if (accounts_user_get(a, addr.data, &u) != 1) {
		rc = runtime_error("mailbox: no such user %s", addr.data);
		goto out;
	}
	accounts_user_free(&u);
	st = store_open(cfg->data_dir, addr.data, &err);
	if (st == NULL) {
		rc = runtime_error("mailbox: %s", buf_str(&err));
		goto out;
	}
	if (strcmp(argv[0], "sweep") == 0) {
		int moved = store_sweep(st);
		if (moved < 0)
			rc = runtime_error("mailbox sweep: %s", store_errstr(st));
		else if (moved == 0)
			printf("%s: no orphan message files\n", addr.data);
		else
			printf("%s: moved %d orphan message file%s to %s/" STORE_ORPHANS_DIR
			       " (look, then delete)\n",
			       addr.data, moved, moved == 1 ? "" : "s", store_root(st));
	} else if (strcmp(argv[0], "list") == 0) {
		struct store_mbox_info *list = NULL;
		size_t n = 0;
		if (store_mailbox_list(st, &list, &n) < 0) {
			rc = runtime_error("mailbox list: %s", store_errstr(st));
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			struct store_status ss;
			if (list[i].attrs & STORE_MBOX_NOSELECT) {
				printf("%-24s (no messages: \\Noselect)\n", list[i].name);
				continue;
			}
			if (store_mailbox_status(st, list[i].name, &ss) < 0)
				continue;
			printf("%-24s messages=%u unseen=%u size=%llu uidvalidity=%u uidnext=%u\n",
			       list[i].name, ss.messages, ss.unseen, (unsigned long long)ss.size,
			       ss.uidvalidity, ss.uidnext);
		}
		store_mailbox_list_free(&list, n);
	} else {
		struct store_mbox_view *v = NULL;
		if (store_mailbox_load(st, argv[2], &v) < 0) {
			rc = runtime_error("mailbox show: %s: %s", argv[2], store_errstr(st));
			goto out;
		}
		if (argc == 4) {
			rc = print_message(st, argv[2], v->uidvalidity, argv[3]);
			store_mbox_view_free(&v);
			goto out;
		}
		printf("%s: %zu messages, uidvalidity=%u uidnext=%u highestmodseq=%llu\n", argv[2],
		       v->count, v->uidvalidity, v->uidnext, (unsigned long long)v->highestmodseq);
		for (size_t i = 0; i < v->count; i++) {
			char when[32];
			fmt_time(v->msgs[i].internal_date, when, sizeof(when));
			printf("  uid=%u size=%llu date=%s flags=%s%s%s%s%s\n", v->msgs[i].uid,
			       (unsigned long long)v->msgs[i].size, when,
			       v->msgs[i].flags & STORE_F_SEEN ? "\\Seen " : "",
			       v->msgs[i].flags & STORE_F_ANSWERED ? "\\Answered " : "",
			       v->msgs[i].flags & STORE_F_FLAGGED ? "\\Flagged " : "",
			       v->msgs[i].flags & STORE_F_DELETED ? "\\Deleted " : "",
			       v->msgs[i].flags & STORE_F_DRAFT ? "\\Draft" : "");
		}
		store_mbox_view_free(&v);
	}
out:
	store_close(&st);
	accounts_close(&a);
	buf_free(&addr);
	buf_free(&err);
	return rc;
}

/* The protocol behind each listen.* key in this build; NULL: not built yet. */
static const struct proto_ops *const served[LISTEN_NKINDS] = {
	[LISTEN_SMTP] = &smtp_server_ops,
	[LISTEN_SUBMISSION] = &smtp_server_ops,
	[LISTEN_SUBMISSIONS] = &smtp_server_ops,
	[LISTEN_IMAP] = &imap_server_ops,
	[LISTEN_IMAPS] = &imap_server_ops,
	[LISTEN_POP3] = &pop3_server_ops,
	[LISTEN_POP3S] = &pop3_server_ops,
};

/*
 * serve, started as root, makes data_dir (the directories above it 0755)
 * and gives it to run_as, which must then reach it: search every directory
 * above it. existing is data_dir's nearest existing ancestor, or data_dir
 * (then its parent is checked). In a child, as run_as with its group only,
 * as server_priv_drop() leaves it.
 * 0, or -1 with err set.
 */
static int
check_run_as_reach(const char *run_as, const char *dir, const char *existing, struct buf *err)
{
	struct passwd *pw = getpwnam(run_as);
	char path[4096];
	int status;

	if (pw == NULL || pw->pw_uid == 0 || geteuid() != 0)
		return 0; /* (a bad run_as is check_start()'s to report) */
	if (xsnprintf(path, sizeof(path), "%s", existing) < 0)
		return 0;
	/* "/var/lib/surat/": its parent is /var/lib, not data_dir itself,
	 * which may still be root's 0750 until serve gives it to run_as. */
	strip_slashes(path);
	char *slash = strrchr(path, '/');
	if (strcmp(existing, dir) == 0 && slash != NULL)
		slash[slash == path] = '\0';
	/* A SIGCHLD ignored by whoever started us (kept across exec) reaps
	 * the child itself: waitpid() would fail with ECHILD. */
	struct sigaction dfl = {.sa_handler = SIG_DFL}, old;
	sigemptyset(&dfl.sa_mask);
	sigaction(SIGCHLD, &dfl, &old);
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		buf_printf(err, "fork failed: %s", strerror(errno));
		sigaction(SIGCHLD, &old, NULL);
		return -1;
	}
	if (pid == 0) {
		if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
		    setuid(pw->pw_uid) < 0)
			_exit(255);
		_exit(access(path, X_OK) == 0 ? 0 : errno & 0x7f);
	}
	int rc;
	while ((rc = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
		;
	if (rc < 0)
		buf_printf(err, "waitpid failed: %s", strerror(errno));
	sigaction(SIGCHLD, &old, NULL);
	if (rc < 0)
		return -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) == 255) {
		buf_printf(err, "run_as: cannot check data_dir as %s", run_as);
		return -1;
	}
	if (WEXITSTATUS(status) != 0) {
		buf_printf(err,
			   "data_dir: run_as %s cannot reach %s: %s (every directory above "
			   "data_dir must let %s search it)",
			   run_as, path, strerror(WEXITSTATUS(status)), run_as);
		return -1;
	}
	return 0;
}

/*
 * serve, started as root, gives data_dir to run_as with all it holds: a
 * data_dir that is not run_as's yet must hold only what surat makes
 * (server_data_dir_foreign()). 0, or -1 with err set.
 */
static int
data_dir_adoptable(const char *dir, const char *run_as, struct buf *err)
{
	struct passwd *pw = run_as != NULL && geteuid() == 0 ? getpwnam(run_as) : NULL;
	struct stat st;

	if (pw == NULL || lstat(dir, &st) < 0 ||
	    (st.st_uid == pw->pw_uid && st.st_gid == pw->pw_gid))
		return 0;
	return server_data_dir_foreign(dir, err) != 0 ? -1 : 0;
}

/*
 * The name of the kernel's file system path is on (proc, sysfs...), or
 * NULL. access(W_OK) says yes to root there, and check-config said ok to a
 * data_dir of /proc/surat that serve cannot make. (A read-only mount or
 * an immutable directory needs no test of its own: access() refuses root
 * those, EROFS and EPERM.)
 */
static const char *
kernel_fs(const char *path)
{
	static const struct {
		unsigned long magic;
		const char *name;
	} kfs[] = {
	    {PROC_SUPER_MAGIC, "proc"},	      {SYSFS_MAGIC, "sysfs"},
	    {CGROUP_SUPER_MAGIC, "cgroup"},   {CGROUP2_SUPER_MAGIC, "cgroup2"},
	    {DEBUGFS_MAGIC, "debugfs"},	      {TRACEFS_MAGIC, "tracefs"},
	    {SECURITYFS_MAGIC, "securityfs"}, {DEVPTS_SUPER_MAGIC, "devpts"},
	    {PSTOREFS_MAGIC, "pstore"},	      {BPF_FS_MAGIC, "bpf"},
	    {EFIVARFS_MAGIC, "efivarfs"},     {SELINUX_MAGIC, "selinuxfs"},
	    {BINFMTFS_MAGIC, "binfmt_misc"},  {NSFS_MAGIC, "nsfs"},
	};
	struct statfs sfs;

	if (statfs(path, &sfs) < 0)
		return NULL;
	for (size_t i = 0; i < ARRAY_LEN(kfs); i++)
		if ((unsigned long)sfs.f_type == kfs[i].magic)
			return kfs[i].name;
	return NULL;
}

/*
 * data_dir is a directory serve can write, or one it can make: its nearest
 * existing ancestor is a directory it can write in, on no kernel file
 * system; and run_as can reach it. 0, or -1 with err set.
 */
static int
check_data_dir(const char *dir, const char *run_as, struct buf *err)
{
	char path[4096];
	struct stat st;

	if (xsnprintf(path, sizeof(path), "%s", dir) < 0) {
		buf_printf(err, "data_dir: path too long");
		return -1;
	}
	while (stat(path, &st) < 0) {
		char *slash = strrchr(path, '/');	/* data_dir is absolute */
		if ((errno != ENOENT && errno != ENOTDIR) || slash == NULL) {
			buf_printf(err, "data_dir: stat(%s) failed: %s", path, strerror(errno));
			return -1;
		}
		slash[slash == path] = '\0';
	}
	if (!S_ISDIR(st.st_mode)) {
		buf_printf(err, "data_dir: %s is not a directory", path);
		return -1;
	}
	const char *kfs = kernel_fs(path);
	if (kfs != NULL) {
		buf_printf(
		    err,
		    "data_dir: %s is on the kernel's %s file system: no files can be kept there",
		    path, kfs);
		return -1;
	}
	if (access(path, W_OK | X_OK) < 0) {
		buf_printf(err, "data_dir: %s is not writable: %s", path, strerror(errno));
		return -1;
	}
	if (data_dir_adoptable(dir, run_as, err) < 0)
		return -1;
	return run_as ? check_run_as_reach(run_as, dir, path, err) : 0;
}

/*
 * What serve would refuse at start, found without starting it: the TLS
 * certificate and key (read, and matched to each other), data_dir, a
 * listener of a protocol not built, the smarthost's password file, the
 * run_as user. 0, or -1 with err set.
 */
static int
check_start(const struct config *cfg, struct buf *err)
{
	int rc = tls_init(cfg->tls_cert, cfg->tls_key, err);

	tls_shutdown();
	if (rc < 0 || check_data_dir(cfg->data_dir, cfg->run_as, err) < 0)
		return -1;
	for (int k = 0; k < LISTEN_NKINDS; k++)
		if (cfg->listen[k].n > 0 && served[k] == NULL) {
			buf_printf(err, "listen.%s: this protocol is not available in this build",
				   config_listen_names[k]);
			return -1;
		}
	if (cfg->relayhost_password_file) {
		/* Read as serve reads it: an empty file, or two lines, stop it too. */
		char *pw = queue_remote_password(cfg->relayhost_password_file, err);
		if (pw == NULL)
			return -1;
		util_wipe(pw, strlen(pw));
		free(pw);
	}
	if (cfg->run_as) {
		struct passwd *pw = getpwnam(cfg->run_as);
		if (pw == NULL || pw->pw_uid == 0) {
			buf_printf(err, "run_as: %s '%s'", pw ? "root is not allowed:" : "no such user",
				   cfg->run_as);
			return -1;
		}
	}
	return 0;
}

static int
cmd_check_config(const struct config *cfg, const char *path, int argc, char **argv)
{
	struct buf err = BUF_INIT(0);
	int rc = EXIT_USAGE;

	if (argc > 0 && option_in(argc, argv, -1) != NULL)
		return usage_error("check-config: unknown option '%s'", option_in(argc, argv, -1));
	if (argc > 0)
		return usage_error("check-config takes no arguments");
	/* An error of the config file, as the parse errors are: exit status 2. */
	if (check_start(cfg, &err) < 0)
		error_line("%s: %s", path, buf_str(&err));
	else {
		printf("%s: ok\n", path);
		rc = 0;
	}
	buf_free(&err);
	return rc;
}

/* Rows for accounts_kept_save(), and the clocks they are read against. */
struct kept {
	struct server *srv;
	int64_t now_wall, now_mono;
	const char *kind;	/* of the rows kept_add() adds now */
	size_t n, cap;
	const char **kinds;
	char **keys;
	int64_t *values, *ats;
};

static void
kept_add(struct kept *k, const char *key, int64_t value, int64_t at)
{
	if (k->n == k->cap) {
		k->cap = k->cap ? k->cap * 2 : 64;
		k->kinds = xrealloc(k->kinds, k->cap * sizeof(*k->kinds));
		k->keys = xrealloc(k->keys, k->cap * sizeof(*k->keys));
		k->values = xrealloc(k->values, k->cap * sizeof(*k->values));
		k->ats = xrealloc(k->ats, k->cap * sizeof(*k->ats));
	}
	k->kinds[k->n] = k->kind;
	k->keys[k->n] = xstrdup(key);
	k->values[k->n] = value;
	k->ats[k->n++] = at;
}

static void
ratelimit_kept(const char *key, int64_t used, void *arg)
{
	struct kept *k = arg;

	kept_add(k, key, used, k->now_wall);
}

static void
lockout_kept(const char *key, int64_t failures, int64_t age_ms, void *arg)
{
	struct kept *k = arg;

	kept_add(k, key, failures, k->now_wall - age_ms);
}

/* How long ago a row's wall-clock time was; -1 for one that cannot be (a
 * damaged row): it is skipped. A clock set back since gives 0. */
static int64_t
kept_age(const struct kept *k, int64_t at)
{
	if (at < 0)
		return -1;
	return at < k->now_wall ? k->now_wall - at : 0;
}

static void
ratelimit_taken_up(const char *key, int64_t used, int64_t at, void *arg)
{
	struct kept *k = arg;
	int64_t age = kept_age(k, at);

	if (age >= 0)
		ratelimit_restore(k->srv->ratelimit, key, used, age, k->now_mono);
}

static void
lockout_taken_up(const char *key, int64_t failures, int64_t at, void *arg)
{
	struct kept *k = arg;
	int64_t age = kept_age(k, at);

	if (age >= 0)
		lockout_restore(k->srv->lockout, key, failures, age, k->now_mono);
}

/*
 * The sending rate limit and the login lockout outlive a restart (a config
 * change is one): an account that had used its recipients has not got them
 * back by it, nor has a guesser his guesses. What passed while the daemon
 * was down (wall-clock time) counts as passed. A daemon killed rather than
 * stopped finds what it last wrote (struct kept_saver).
 */
static void
kept_load(struct server *srv)
{
	struct kept k = {.srv = srv, .now_wall = util_now_ms(), .now_mono = util_mono_ms()};

	if (accounts_kept_load(srv->accounts, "ratelimit", ratelimit_taken_up, &k) < 0 ||
	    accounts_kept_load(srv->accounts, "lockout", lockout_taken_up, &k) < 0)
		log_warn("cannot read the rate limit and lockout state kept by the last run");
}

/* The rows to keep now, into k (kept_clear() frees them). */
static void
kept_collect(struct server *srv, struct kept *k)
{
	memset(k, 0, sizeof(*k));
	k->srv = srv;
	k->now_wall = util_now_ms();
	k->now_mono = util_mono_ms();
	k->kind = "ratelimit";
	ratelimit_each(srv->ratelimit, k->now_mono, ratelimit_kept, k);
	k->kind = "lockout";
	lockout_each(srv->lockout, k->now_mono, lockout_kept, k);
}

static int
kept_write(struct accounts *a, const struct kept *k, struct buf *err)
{
	return accounts_kept_save(a, k->n, k->kinds, (const char *const *)k->keys, k->values,
				  k->ats, err);
}

static void
kept_clear(struct kept *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->keys[i]);
	free(k->kinds);
	free(k->keys);
	free(k->values);
	free(k->ats);
	memset(k, 0, sizeof(*k));
}

static void
kept_save(struct server *srv)
{
	struct kept k;
	struct buf err = BUF_INIT(0);

	kept_collect(srv, &k);
	if (kept_write(srv->accounts, &k, &err) < 0)
		log_error("cannot keep the rate limit and lockout state for the next run: %s",
			  buf_str(&err));
	kept_clear(&k);
	buf_free(&err);
}

/*
 * Between stops the state is written every state_save_interval as well, so
 * that a daemon killed or crashed rather than stopped loses at most that
 * much of it. The rows are taken on the loop (they live there) and written
 * by a worker, with an accounts handle of its own: the write may wait on
 * the database's lock, which the loop never does. One write at a time; a
 * stop waits for the one under way (the pool drains first), then writes
 * its own, the last word.
 */
struct kept_saver {
	struct server *srv;
	struct accounts *accounts;	/* the worker's: one job at a time */
	struct event *timer;
	struct kept k;			/* the rows being written */
	struct buf err;
	int busy, rc;
	size_t last_n;			/* rows the last write left (SIZE_MAX: unknown) */
};

static void
kept_saver_work(void *arg)
{
	struct kept_saver *ks = arg;

	ks->rc = kept_write(ks->accounts, &ks->k, &ks->err);
}

static void
kept_saver_done(void *arg)
{
	struct kept_saver *ks = arg;

	if (ks->rc < 0)
		log_error("cannot write the rate limit and lockout state: %s", buf_str(&ks->err));
	else
		ks->last_n = ks->k.n;
	kept_clear(&ks->k);
	buf_reset(&ks->err);
	ks->busy = 0;
}

static void
kept_saver_tick(evutil_socket_t fd, short what, void *arg)
{
	struct kept_saver *ks = arg;

	(void)fd;
	(void)what;
	if (ks->busy || ks->srv->stopping)
		return;
	kept_collect(ks->srv, &ks->k);
	/* Nothing to keep, and nothing kept to replace: no write. */
	if (ks->k.n == 0 && ks->last_n == 0) {
		kept_clear(&ks->k);
		return;
	}
	ks->busy = 1;
	worker_submit(ks->srv->pool, kept_saver_work, kept_saver_done, ks);
}

static int
cmd_serve(struct config *cfg)
{
	struct buf err = BUF_INIT(0);
	int rc = EXIT_RUNTIME;
	struct server *srv = NULL;
	struct queue_remote *qremote = NULL;
	/* What the last run left is not known: the first tick writes. */
	struct kept_saver ks = {.err = BUF_INIT(0), .last_n = SIZE_MAX};
	int lockfd = -1;

	log_init(cfg->log_level, cfg->log_syslog);
	if (tls_init(cfg->tls_cert, cfg->tls_key, &err) < 0) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	srv = server_new(cfg);
	for (int k = 0; k < LISTEN_NKINDS; k++)
		if (served[k] != NULL)
			server_register(srv, (enum listen_kind)k, served[k]);
	imap_server_init(srv);
	if (server_bind(srv, &err) < 0) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	/* Only now, with the config, TLS and ports known good, touch data_dir:
	 * not at all when it is someone else's (server_priv_drop() refuses). */
	if (data_dir_adoptable(cfg->data_dir, cfg->run_as, &err) < 0 ||
	    (lockfd = serve_lock(cfg, &err)) < 0) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	srv->accounts = accounts_open(cfg->data_dir, &err);
	if (srv->accounts == NULL) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	srv->lockout = lockout_new((unsigned)cfg->auth_lockout_failures,
				   cfg->auth_lockout_window * 1000, LOCKOUT_MAX_KEYS);
	/* Checked by the config parser: cannot fail here. */
	for (size_t i = 0; i < cfg->auth_lockout_exempt.n; i++)
		lockout_exempt_add(srv->lockout, cfg->auth_lockout_exempt.v[i]);
	srv->ratelimit = ratelimit_new((unsigned)cfg->submission_rate_limit,
				       cfg->submission_rate_window * 1000, RATELIMIT_MAX_KEYS);
	kept_load(srv);
	/* Before the privilege drop, as the loop's handle. */
	ks.srv = srv;
	ks.accounts = accounts_open(cfg->data_dir, &err);
	if (ks.accounts == NULL) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	srv->queue = queue_new(srv, &err);
	if (srv->queue == NULL) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	/* Before the privilege drop: it reads relayhost.password_file. */
	qremote = queue_remote_new(srv, &err);
	if (qremote == NULL) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	if (server_drop_privileges(srv, &err) < 0) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	/* After the drop: the resolver never needs root. */
	srv->dns = dns_new(srv->base, (const char *const *)cfg->dns_servers.v, cfg->dns_servers.n,
			   &err);
	if (srv->dns == NULL) {
		error_line("%s", buf_str(&err));
		goto out;
	}
	store_pool_set_max((size_t)cfg->store_cached_handles);
	store_pool_set_cache_memory(cfg->store_cache_memory);
	queue_start(srv->queue);
	log_info("surat started: hostname=%s data_dir=%s", cfg->hostname, cfg->data_dir);
	ks.timer = event_new(srv->base, -1, EV_PERSIST, kept_saver_tick, &ks);
	event_add(ks.timer, &(struct timeval){cfg->state_save_interval, 0});
	server_run(srv);
	event_free(ks.timer);
	kept_save(srv);
	rc = 0;
out:
	if (srv) {
		queue_remote_free(&qremote);
		queue_free(&srv->queue);
		dns_free(&srv->dns);
		accounts_close(&srv->accounts);
		imap_server_fini();
		/* (The lockout after the server: a password check it drains
		 * counts a failure there.) */
		struct lockout *lk = srv->lockout;
		struct ratelimit *rl = srv->ratelimit;
		server_free(&srv);
		lockout_free(&lk);
		ratelimit_free(&rl);
		store_pool_drain();
	}
	/* After the pool: a write under way has ended with it. */
	accounts_close(&ks.accounts);
	kept_clear(&ks.k);
	buf_free(&ks.err);
	if (lockfd >= 0)
		close(lockfd); /* last: no one else may have the queue before */
	tls_shutdown();
	buf_free(&err);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *config_path = DEFAULT_CONFIG;
	struct config cfg;
	int i = 1, rc;

	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "-c") == 0) {
			if (i + 1 >= argc)
				return usage_error("-c needs a FILE");
			config_path = argv[i + 1];
			i += 2;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage_text, stdout);
			return stdout_checked(0);
		} else {
			return usage_error("unknown option '%s'", argv[i]);
		}
	}
	if (i >= argc)
		return usage_error("missing COMMAND");
	const char *cmd = argv[i++];
	int sub_argc = argc - i;
	char **sub_argv = argv + i;
	static const char *const known[] = {"serve", "check-config", "domain", "user",
					    "alias", "queue", "mailbox"};
	int ok = 0;
	for (size_t k = 0; k < ARRAY_LEN(known); k++)
		if (strcmp(cmd, known[k]) == 0)
			ok = 1;
	if (!ok)
		return usage_error("unknown command '%s'", cmd);
	help_cmd = cmd;
	if (wants_help(sub_argc, sub_argv))
		return stdout_checked(print_help(cmd));
	if (load_config(config_path, &cfg) < 0)
		return strcmp(cmd, "check-config") == 0 ? EXIT_USAGE : EXIT_RUNTIME;
	log_init(cfg.log_level, 0);
	store_set_text_fn(mime_meta_text);
	if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "check-config") != 0 && geteuid() == 0 &&
	    cfg.run_as) {
		/* Admin commands run as the daemon's user, so every file they
		 * create in data_dir stays the daemon's to write. */
		struct buf err = BUF_INIT(0);
		data_dir_make(cfg.data_dir);
		if (server_priv_drop(cfg.run_as, cfg.data_dir, 0, &err) < 0) {
			rc = runtime_error("%s", buf_str(&err));
			buf_free(&err);
			config_free(&cfg);
			return rc;
		}
		buf_free(&err);
	} else if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "check-config") != 0 && cfg.run_as) {
		/* Anyone else meets data_dir's modes as an SQLite "unable to
		 * open database file", which does not say what is wrong. */
		struct passwd *pw = getpwnam(cfg.run_as);
		if (pw != NULL && pw->pw_uid != geteuid()) {
			rc = runtime_error("%s: run it as root or as run_as (%s), not as uid %ld: "
					   "data_dir %s is %s's",
					   cmd, cfg.run_as, (long)geteuid(), cfg.data_dir,
					   cfg.run_as);
			config_free(&cfg);
			return rc;
		}
	}
	if (strcmp(cmd, "check-config") == 0) {
		rc = cmd_check_config(&cfg, config_path, sub_argc, sub_argv);
	} else if (strcmp(cmd, "serve") == 0) {
		const char *opt = option_in(sub_argc, sub_argv, -1);
		if (opt != NULL)
			rc = usage_error("serve: unknown option '%s'", opt);
		else
			rc = sub_argc ? usage_error("serve takes no arguments") : cmd_serve(&cfg);
	} else if (strcmp(cmd, "domain") == 0) {
		rc = cmd_domain(&cfg, sub_argc, sub_argv);
	} else if (strcmp(cmd, "user") == 0) {
		rc = cmd_user(&cfg, sub_argc, sub_argv);
	} else if (strcmp(cmd, "alias") == 0) {
		rc = cmd_alias(&cfg, sub_argc, sub_argv);
	} else if (strcmp(cmd, "queue") == 0) {
		rc = cmd_queue(&cfg, sub_argc, sub_argv);
	} else {
		rc = cmd_mailbox(&cfg, sub_argc, sub_argv);
	}
	config_free(&cfg);
	return stdout_checked(rc);
}
