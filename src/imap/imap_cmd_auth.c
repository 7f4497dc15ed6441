/*
 * imap_cmd_auth — the commands of any state and of login: CAPABILITY,
 * NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE PLAIN (SASL-IR, continuation,
 * "*" cancel), ID, ENABLE, NAMESPACE and IDLE.
 *
 * A login looks the user up on the loop (accounts.db is read-only here),
 * then verifies the password and opens the account's store on the worker
 * pool; a failure is answered after auth.fail_delay. Unknown users pay for
 * a hash too, so timing does not tell them apart. A client address locked
 * out (auth/lockout) is refused before any of that.
 *
 * SECURITY: passwords are accepted only over TLS unless
 * allow_plaintext_auth is set; they are copied only into the job, wiped
 * after the check and never logged. The authorization identity of PLAIN
 * must be empty or the user itself.
 */
#include "imap/imap_cmd.h"

#include "auth/accounts.h"
#include "auth/lockout.h"
#include "auth/password.h"
#include "core/config.h"
#include "core/log.h"
#include "core/tls.h"
#include "smtp/smtp_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#define AUTH_FAILS_MAX 3 /* failed logins before BYE */
#define CRED_MAX 255

/* A hash for unknown users, so they cost as much as known ones. */
#define DUMMY_HASH "$y$j9T$0123456789abcdefghijk.$HZFaqNlR2sYnFAJ.QaWPQgKyJb5IoHXk9x4tw4eROn4"

void
imap_cmd_capability(struct imap_sess *s, const struct imap_arg *args)
{
	struct buf b = BUF_INIT(0);

	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "CAPABILITY takes no arguments");
		return;
	}
	buf_puts(&b, "* CAPABILITY ");
	imap_capabilities(s, &b);
	buf_puts(&b, "\r\n");
	imap_write_buf(s, &b);
	buf_free(&b);
	imap_done(s, "OK", "CAPABILITY completed");
}

void
imap_cmd_noop(struct imap_sess *s, const struct imap_arg *args)
{
	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "NOOP takes no arguments");
		return;
	}
	imap_done(s, "OK", "NOOP completed");
}

void
imap_log_logout(struct imap_sess *s, const char *why)
{
	if (s->logout_logged || s->user == NULL || s->c == NULL)
		return;
	s->logout_logged = true;
	char esc[200];
	log_msg(LL_INFO, s->c->id,
		"logout user=%s client=[%s] reason=\"%s\" commands=%u duration=%.3fs", s->user,
		s->c->peer_ip, log_esc(esc, sizeof(esc), why), s->ncmds,
		(double)(util_now_ms() - s->login_ms) / 1000.0);
}

void
imap_cmd_logout(struct imap_sess *s, const struct imap_arg *args)
{
	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "LOGOUT takes no arguments");
		return;
	}
	imap_puts(s, "* BYE Logging out\r\n");
	imap_log_logout(s, "LOGOUT");
	imap_done(s, "OK", "LOGOUT completed");
	imap_set_state(s, IS_LOGOUT);
	s->c->no_linger = 1;	/* the client ended it: nothing follows to linger for */
	if (s->hold == 0)
		imap_finish_conn(s);
}

void
imap_cmd_starttls(struct imap_sess *s, const struct imap_arg *args)
{
	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "STARTTLS takes no arguments");
		return;
	}
	if (s->c->tls) {
		imap_done(s, "BAD", "TLS is already active");
		return;
	}
	if (s->c->kind != LISTEN_IMAP || !tls_server_available()) {
		imap_done(s, "NO", "[CANNOT] STARTTLS is not available");
		return;
	}
	SSL *ssl = tls_server_ssl();
	if (ssl == NULL) {
		imap_done(s, "NO", "[UNAVAILABLE] TLS is not available now");
		return;
	}
	imap_done(s, "OK", "Begin TLS negotiation now");
	/* Pipelined plaintext after the command is dropped by conn_starttls(). */
	if (conn_starttls(s->c, ssl) < 0) {
		log_msg(LL_ERROR, s->c->id, "STARTTLS setup failed");
		imap_bye(s, "[UNAVAILABLE] TLS setup failed");
		return;
	}
	/* RFC 9051 §6.2.1: forget everything learned before TLS. */
	imap_session_tls_started(s);
}

/* ---- login ---- */

struct login_job {
	struct imap_job j;
	char user[CRED_MAX + 1];
	char pass[CRED_MAX + 1];
	char *hash;
	int64_t quota;
	const char *method;
	const char *data_dir;
	struct store *st; /* opened on success */
	char err[256];
	bool ok;
	bool locked; /* refused: the client's address is locked out */
	/* the client, for the lockout when the session is gone by the answer */
	char sid[sizeof(((struct conn *)0)->id)];
	char peer_ip[INET6_ADDRSTRLEN];
	char key[UTIL_CLIENT_KEY_MAX];
	uint64_t fp; /* the credentials, for the lockout (the password is wiped) */
};

static void
login_work(struct imap_job *jj)
{
	struct login_job *j = (struct login_job *)jj;
	struct buf err = BUF_INIT(0);

	j->ok = j->hash && password_verify(j->pass, j->hash);
	util_wipe(j->pass, sizeof(j->pass));
	if (j->ok) {
		j->st = store_pool_get(j->data_dir, j->user, &err);
		if (j->st == NULL)
			xsnprintf(j->err, sizeof(j->err), "%.200s", buf_str(&err));
	}
	buf_free(&err);
	j->j.delay = !j->ok;
}

/*
 * The accounts database failed: the server's fault, so [UNAVAILABLE]
 * (RFC 5530), as Dovecot says, and no failure counted. [AUTHENTICATIONFAILED]
 * would make clients drop a good password or ask the user again.
 */
static void
login_tempfail(struct imap_sess *s, const char *user, const char *method)
{
	char esc[300];

	log_msg(LL_ERROR, s->c->id, "login user=%s method=%s client=[%s]: accounts database error",
		log_esc_also(esc, sizeof(esc), user, " "), method, s->c->peer_ip);
	imap_done(s, "NO", "[UNAVAILABLE] Temporary authentication failure, try again later");
}

/*
 * Too many failed logins from the client's address (auth/lockout): refused
 * without a check, so a right password is refused too. [UNAVAILABLE] (RFC
 * 5530): the login cannot be done now, for a reason that is not the
 * credentials, so clients keep the password and try later, and the answer
 * is the same for every user. [LIMIT] is for limits of the data model
 * (flags, message sizes); [AUTHENTICATIONFAILED] would say the password is
 * wrong. It counts toward this session's own limit, not toward the lockout.
 */
static void
login_locked(struct imap_sess *s, const char *user, const char *method)
{
	char esc[300];

	log_msg(LL_WARN, s->c->id, "auth failed user=%s method=%s client=[%s] reason=locked",
		log_esc_also(esc, sizeof(esc), user, " "), method, s->c->peer_ip);
	imap_done(s, "NO",
		  "[UNAVAILABLE] Too many authentication failures from this address, "
		  "try again later");
	if (++s->auth_fails >= AUTH_FAILS_MAX)
		imap_bye(s, "Too many failed logins.");
}

/* A failure is counted at once, not after the delay (lockout_login_settle()). */
static void
login_settle(struct imap_sess *s, struct imap_job *jj)
{
	struct login_job *j = (struct login_job *)jj;

	j->locked = lockout_login_settle(s->srv->lockout, j->sid, j->peer_ip, j->key, j->fp, j->ok);
	if (j->locked) {
		j->ok = false;
		j->j.delay = false;
	}
}

static void
login_done(struct imap_sess *s, struct imap_job *jj)
{
	struct login_job *j = (struct login_job *)jj;
	char esc[300], tlsd[128];

	if (j->locked) {
		login_locked(s, j->user, j->method);
		return;
	}

	/* Checked against a hash read before: the user may be gone (or made anew) since. */
	if (j->ok) {
		int same = accounts_user_same(s->srv->accounts, j->user, j->hash);
		if (same < 0) {
			login_tempfail(s, j->user, j->method);
			return;
		}
		j->ok = same == 1;
	}
	if (j->ok && j->st) {
		struct buf b = BUF_INIT(0);
		s->st = j->st;
		j->st = NULL;
		store_id_of(s->st, &s->store_id);
		s->user = xstrdup(j->user);
		imap_reg_add(s);
		s->quota = j->quota;
		s->login_ms = util_now_ms();
		s->ncmds = 0;
		s->bad = 0;
		imap_set_state(s, IS_AUTH);
		event_del(s->login_timer);
		imap_apply_limits(s);
		imap_timeouts(s);
		log_msg(LL_INFO, s->c->id, "login user=%s method=%s client=[%s] tls=%s", s->user,
			j->method, s->c->peer_ip, tls_describe(s->c->ssl, tlsd, sizeof(tlsd)));
		buf_puts(&b, "[CAPABILITY ");
		imap_capabilities(s, &b);
		buf_puts(&b, "] Logged in");
		imap_done(s, "OK", "%s", buf_str(&b));
		buf_free(&b);
		return;
	}
	if (j->ok) {
		log_msg(LL_ERROR, s->c->id, "login user=%s: cannot open the mailbox store: %s",
			j->user, j->err);
		imap_done(s, "NO", "[UNAVAILABLE] Mailbox store unavailable, try again later");
		return;
	}
	log_msg(LL_WARN, s->c->id, "auth failed user=%s method=%s client=[%s]",
		log_esc_also(esc, sizeof(esc), j->user, " "), j->method, s->c->peer_ip);
	imap_done(s, "NO", "[AUTHENTICATIONFAILED] Authentication failed.");
	if (++s->auth_fails >= AUTH_FAILS_MAX)
		imap_bye(s, "Too many failed logins.");
}

static void
login_free(struct imap_job *jj)
{
	struct login_job *j = (struct login_job *)jj;

	if (j->hash) {
		util_wipe(j->hash, strlen(j->hash));
		free(j->hash);
	}
	store_pool_give(&j->st);
	util_wipe(j, sizeof(*j));
	free(j);
}

/* Start the password check for user/pass (both checked for NUL and length). */
static void
imap_login_start(struct imap_sess *s, const char *user, size_t ulen, const char *pass, size_t plen,
		 const char *method)
{
	struct login_job *j = xcalloc(1, sizeof(*j));
	struct buf norm = BUF_INIT(0), err = BUF_INIT(0);
	struct account_user u = {0};
	bool valid = ulen > 0 && ulen <= CRED_MAX && plen > 0 && plen <= CRED_MAX &&
		     memchr(user, '\0', ulen) == NULL && memchr(pass, '\0', plen) == NULL;
	int found = 0;

	if (lockout_login_check(s->srv->lockout, s->c->peer_ip, s->c->ip_key) != LOCKOUT_OPEN) {
		char name[CRED_MAX + 1];
		xsnprintf(name, sizeof(name), "%.*s", (int)(ulen < 64 ? ulen : 64), user);
		login_locked(s, name, method);
		free(j);
		return;
	}
	j->method = method;
	memcpy(j->sid, s->c->id, sizeof(j->sid));
	memcpy(j->peer_ip, s->c->peer_ip, sizeof(j->peer_ip));
	memcpy(j->key, s->c->ip_key, sizeof(j->key));
	j->data_dir = s->srv->cfg->data_dir;
	j->quota = s->srv->cfg->user_quota;
	if (valid) {
		memcpy(j->pass, pass, plen);
		memcpy(j->user, user, ulen);
		j->fp = lockout_fingerprint(s->srv->lockout, user, ulen, pass, plen);
		if (accounts_normalise(j->user, 0, &norm, &err) == 0) {
			xsnprintf(j->user, sizeof(j->user), "%s", buf_str(&norm));
			found = accounts_user_get(s->srv->accounts, norm.data, &u);
			if (found == 1) {
				j->hash = u.hash;
				u.hash = NULL;
				if (u.quota >= 0)
					j->quota = u.quota;
				accounts_user_free(&u);
			}
		}
	} else {
		xsnprintf(j->user, sizeof(j->user), "%.*s", (int)(ulen < 64 ? ulen : 64), user);
	}
	buf_free(&norm);
	buf_free(&err);
	if (found < 0) {
		/* Nothing to check the password against. */
		login_tempfail(s, j->user, method);
		login_free(&j->j);
		return;
	}
	if (j->hash == NULL)
		j->hash = xstrdup(DUMMY_HASH);
	if (!valid)
		j->pass[0] = '\0'; /* verifies against nothing */
	j->j.work = login_work;
	j->j.done = login_done;
	j->j.free = login_free;
	j->j.settle = login_settle;
	j->j.auth = true;
	imap_job_run(s, &j->j);
}

void
imap_cmd_login(struct imap_sess *s, const struct imap_arg *args)
{
	const char *user, *pass;
	size_t ulen, plen;

	if (!imap_arg_astring(&args[0], &user, &ulen) ||
	    !imap_arg_astring(&args[1], &pass, &plen) || !imap_arg_is_eol(&args[2])) {
		imap_done(s, "BAD", "Syntax: LOGIN user password");
		return;
	}
	if (!imap_auth_allowed(s)) {
		imap_done(s, "NO",
			  "[PRIVACYREQUIRED] Plaintext authentication is disabled; "
			  "use STARTTLS first");
		return;
	}
	imap_login_start(s, user, ulen, pass, plen, "LOGIN");
}

/* A PLAIN response (base64); starts the login or finishes the command. */
static void
imap_sasl_plain(struct imap_sess *s, const char *b64, size_t len)
{
	struct smtp_sasl_plain p;
	struct smtp_error e;

	if (smtp_sasl_plain_decode(b64, len, &p, &e) < 0) {
		imap_done(s, e.code == SMTP_ERR_SASL_AUTHZID ? "NO" : "BAD",
			  e.code == SMTP_ERR_BASE64 ? "Invalid base64 in the AUTHENTICATE response"
			  : e.code == SMTP_ERR_SASL_AUTHZID
			      ? "[AUTHORIZATIONFAILED] Cannot act as another user"
			      : "Malformed PLAIN response: authzid NUL authcid NUL password");
		return;
	}
	imap_login_start(s, p.authcid, strlen(p.authcid), p.passwd, strlen(p.passwd), "PLAIN");
	smtp_sasl_plain_wipe(&p);
}

void
imap_cmd_authenticate(struct imap_sess *s, const struct imap_arg *args)
{
	const char *mech, *ir;
	size_t irlen;

	if (!imap_arg_atom(&args[0], &mech)) {
		imap_done(s, "BAD", "Syntax: AUTHENTICATE mechanism [initial-response]");
		return;
	}
	if (!imap_arg_is_eol(&args[1]) &&
	    (!imap_arg_astring(&args[1], &ir, &irlen) || !imap_arg_is_eol(&args[2]))) {
		imap_done(s, "BAD", "Syntax: AUTHENTICATE mechanism [initial-response]");
		return;
	}
	if (strcasecmp(mech, "PLAIN") != 0) {
		imap_done(s, "NO", "[CANNOT] Unsupported authentication mechanism");
		return;
	}
	if (!imap_auth_allowed(s)) {
		imap_done(s, "NO",
			  "[PRIVACYREQUIRED] Plaintext authentication is disabled; "
			  "use STARTTLS first");
		return;
	}
	if (!imap_arg_is_eol(&args[1])) {
		/* SASL-IR (RFC 4959): "=" is an empty initial response. */
		if (irlen == 1 && ir[0] == '=')
			irlen = 0;
		imap_sasl_plain(s, ir, irlen);
		return;
	}
	imap_puts(s, "+ \r\n");
	s->flags |= SF_SASL;
	imap_parser_read_line(s->parser);
}

void
imap_cmd_sasl_line(struct imap_sess *s, const char *line, size_t len)
{
	s->flags &= ~SF_SASL;
	if (len == 1 && line[0] == '*') {
		imap_done(s, "BAD", "Authentication cancelled");
		return;
	}
	imap_sasl_plain(s, line, len);
}

/* ---- ID, ENABLE, NAMESPACE ---- */

void
imap_cmd_id(struct imap_sess *s, const struct imap_arg *args)
{
	const struct imap_arg *list;
	size_t n;
	struct buf l = BUF_INIT(0);

	if (imap_arg_is_nil(&args[0]) && imap_arg_is_eol(&args[1])) {
		n = 0;
	} else if (!imap_arg_list(&args[0], &list, &n) || !imap_arg_is_eol(&args[1]) ||
		   n % 2 != 0 || n > 60) {
		imap_done(s, "BAD",
			  "Syntax: ID NIL or ID (\"field\" \"value\" ...), at most 30 pairs");
		return;
	} else {
		for (size_t i = 0; i < n; i += 2) {
			const char *k, *v;
			size_t kl, vl;
			if (!imap_arg_string(&list[i], &k, &kl) ||
			    !imap_arg_nstring(&list[i + 1], &v, &vl) || kl > 30 || vl > 1024) {
				imap_done(s, "BAD",
					  "ID: fields are strings (at most 30 octets), "
					  "values strings or NIL (at most 1024)");
				buf_free(&l);
				return;
			}
			if (i > 0)
				buf_putc(&l, ' ');
			log_escape(&l, k, kl, 30);
			buf_putc(&l, '=');
			if (v)
				log_escape(&l, v, vl, 60);
			else
				buf_puts(&l, "NIL");
		}
	}
	if (l.len > 0)
		log_msg(LL_INFO, s->c->id, "client id %s", buf_str(&l));
	buf_free(&l);
	imap_puts(s, "* ID (\"name\" \"surat\" \"vendor\" \"surat\")\r\n");
	imap_done(s, "OK", "ID completed");
}

void
imap_cmd_enable(struct imap_sess *s, const struct imap_arg *args)
{
	struct buf b = BUF_INIT(0);
	const char *name;

	if (imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "Syntax: ENABLE capability...");
		return;
	}
	buf_puts(&b, "* ENABLED");
	for (; !imap_arg_is_eol(args); args++) {
		unsigned bit = 0;
		if (!imap_arg_atom(args, &name)) {
			buf_free(&b);
			imap_done(s, "BAD", "ENABLE takes capability names (atoms)");
			return;
		}
		if (strcasecmp(name, "IMAP4rev2") == 0)
			bit = EN_REV2;
		else if (strcasecmp(name, "CONDSTORE") == 0)
			bit = EN_CONDSTORE;
		else if (strcasecmp(name, "QRESYNC") == 0)
			bit = EN_QRESYNC | EN_CONDSTORE;
		else if (strcasecmp(name, "UTF8=ACCEPT") == 0)
			bit = EN_UTF8;
		if (bit == 0 || (s->enabled & bit) == bit)
			continue;
		s->enabled |= bit;
		buf_putc(&b, ' ');
		buf_puts(&b, bit == EN_REV2	   ? "IMAP4rev2"
			     : bit == EN_CONDSTORE ? "CONDSTORE"
			     : bit == EN_UTF8	   ? "UTF8=ACCEPT"
						   : "QRESYNC");
	}
	buf_puts(&b, "\r\n");
	imap_write_buf(s, &b);
	buf_free(&b);
	imap_apply_limits(s);
	imap_done(s, "OK", "ENABLE completed");
}

void
imap_cmd_namespace(struct imap_sess *s, const struct imap_arg *args)
{
	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "NAMESPACE takes no arguments");
		return;
	}
	imap_puts(s, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
	imap_done(s, "OK", "NAMESPACE completed");
}

/* ---- IDLE (RFC 2177) ---- */

void
imap_cmd_idle(struct imap_sess *s, const struct imap_arg *args)
{
	if (!imap_arg_is_eol(args)) {
		imap_done(s, "BAD", "IDLE takes no arguments");
		return;
	}
	imap_puts(s, "+ idling\r\n");
	s->flags |= SF_IDLE;
	s->idle_ticks = 0;
	imap_parser_read_line(s->parser);
	imap_timeouts(s);
	imap_session_idle_timer(s, true);
	/* Whatever is pending goes out now; more as it happens. */
	if (imap_sel_poll(s) == 0)
		imap_sel_flush(s, true);
	/* Idling holds no store handle: a change borrows one to poll. */
	imap_store_return(s);
}

void
imap_cmd_idle_line(struct imap_sess *s, const char *line, size_t len)
{
	s->flags &= ~SF_IDLE;
	imap_session_idle_timer(s, false);
	imap_timeouts(s);
	/* For the report at the end (the command's own handle went back at its start). */
	imap_store_take(s);
	/* A report held back while the client did not read goes out before the reply. */
	if (s->flags & SF_IDLE_LATE) {
		s->flags &= ~SF_IDLE_LATE;
		if (imap_sel_poll(s) == 0)
			imap_sel_flush(s, true);
	}
	if (len == 4 && strncasecmp(line, "DONE", 4) == 0)
		imap_done(s, "OK", "IDLE terminated");
	else
		imap_done(s, "BAD", "IDLE: expected DONE");
}
