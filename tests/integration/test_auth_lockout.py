"""The auth lockout per client address (auth.lockout_failures in
auth.lockout_window): failed logins on any protocol count for the address,
and past the threshold every login from it is refused, even with the right
password, on SMTP AUTH, IMAP and POP3 alike, while other addresses log in.

Each test uses a small threshold and window. Clients are raw sockets bound
to a loopback source address (127.0.0.2 is another client than 127.0.0.1).
"""
import base64
import itertools
import os
import re
import socket
import sqlite3
import time

import pytest

from conftest import skip_unless_ipv6_loopback
from ports import free_port

ALICE, PW = "alice@example.test", "alice-pw"
KINDS = ("submission", "imap", "pop3")
_guesses = itertools.count()


def guess():
    """A wrong password not tried before: the same one again is not
    counted (a device retrying a stale password)."""
    return "guess%d" % next(_guesses)


def start(make_surat, **extra):
    conf = {"allow_plaintext_auth": "yes", "auth.lockout_failures": "3",
            "auth.lockout_window": "10s"}
    conf.update(extra)
    s = make_surat(extra=conf, kinds=KINDS)
    s.add_domain("example.test")
    s.add_user(ALICE, PW)
    return s


class Line:
    """A line-oriented client on a socket bound to src."""

    def __init__(self, port, src="127.0.0.1", host="127.0.0.1"):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.bind((src, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def smtp_reply(self):
        while True:
            line = self.line()
            if line[3:4] != "-":
                return line

    def close(self):
        self.sock.close()


def plain(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()


def smtp_auth(s, user, pw, src="127.0.0.1", host="127.0.0.1", port=None):
    c = Line(port or s.port("submission"), src, host)
    assert c.smtp_reply().startswith("220")
    c.send("EHLO client.test")
    assert c.smtp_reply().startswith("250")
    c.send("AUTH PLAIN " + plain(user, pw))
    r = c.smtp_reply()
    c.close()
    return r


def imap_login(s, user, pw, src="127.0.0.1", host="127.0.0.1", port=None):
    c = Line(port or s.port("imap"), src, host)
    assert c.line().startswith("* OK")
    c.send('a LOGIN "%s" "%s"' % (user, pw))
    while True:
        r = c.line()
        if r.startswith("a "):
            break
    c.close()
    return r[2:]


def pop3_login(s, user, pw, src="127.0.0.1"):
    c = Line(s.port("pop3"), src)
    assert c.line().startswith("+OK")
    c.send("USER " + user)
    assert c.line().startswith("+OK")
    c.send("PASS " + pw)
    r = c.line()
    c.close()
    return r


def all_locked(s, src="127.0.0.1", user=ALICE, pw=PW):
    """Every protocol refuses src's login as locked, with the protocol's
    temporary reply (never the one for a wrong password)."""
    r = smtp_auth(s, user, pw, src)
    assert r.startswith("454 4.7.0 Too many authentication failures from this address"), r
    r = imap_login(s, user, pw, src)
    assert r.startswith("NO [UNAVAILABLE] Too many authentication failures"), r
    r = pop3_login(s, user, pw, src)
    assert r.startswith("-ERR [SYS/TEMP] Too many authentication failures"), r


def other_mechanisms_locked(s):
    """SMTP AUTH LOGIN, IMAP AUTHENTICATE (initial response and
    continuation) and POP3 AUTH PLAIN are refused as locked too."""
    c = Line(s.port("submission"))
    c.smtp_reply()
    c.send("EHLO client.test")
    c.smtp_reply()
    c.send("AUTH LOGIN " + base64.b64encode(ALICE.encode()).decode())
    assert c.smtp_reply().startswith("334 ")
    c.send(base64.b64encode(PW.encode()).decode())
    r = c.smtp_reply()
    assert r.startswith("454 4.7.0 Too many authentication failures"), r
    c.close()
    c = Line(s.port("imap"))
    c.line()
    c.send("a AUTHENTICATE PLAIN " + plain(ALICE, PW))
    r = c.line()
    assert r.startswith("a NO [UNAVAILABLE] Too many"), r
    c.send("b AUTHENTICATE PLAIN")
    assert c.line().startswith("+")
    c.send(plain(ALICE, PW))
    r = c.line()
    assert r.startswith("b NO [UNAVAILABLE] Too many"), r
    c.close()
    c = Line(s.port("pop3"))
    c.line()
    c.send("AUTH PLAIN " + plain(ALICE, PW))
    r = c.line()
    assert r.startswith("-ERR [SYS/TEMP] Too many"), r
    c.close()


def all_open(s, src="127.0.0.1"):
    assert smtp_auth(s, ALICE, PW, src).startswith("235 "), src
    assert imap_login(s, ALICE, PW, src).startswith("OK "), src
    assert pop3_login(s, ALICE, PW, src).startswith("+OK"), src


def test_failures_lock_the_address_on_every_protocol(make_surat):
    """Three failures on submission, each in a new session (hanging up and
    reconnecting does not help): the right password is then refused on
    SMTP, IMAP and POP3 from that address, the same for an unknown user,
    while 127.0.0.2 still logs in everywhere."""
    s = start(make_surat)
    for _ in range(2):
        assert smtp_auth(s, ALICE, guess()).startswith("535 5.7.8")
    assert "auth lockout" not in s.log()
    assert smtp_auth(s, ALICE, guess()).startswith("535 5.7.8")
    all_locked(s)
    all_locked(s, user="nobody@example.test", pw="x")
    other_mechanisms_locked(s)
    all_open(s, "127.0.0.2")
    log = s.log()
    assert re.search(r"auth lockout client=\[127\.0\.0\.1\] failures=3 window=10s", log), log
    assert log.count("auth lockout") == 1   # refused attempts do not lock again
    assert "counted_as" not in log.split("auth lockout")[1].split("\n")[0]
    assert re.search(r"auth failed user=alice@example.test client=\[127\.0\.0\.1\] "
                     r"reason=locked", log)
    assert re.search(r"auth failed user=alice@example.test method=LOGIN "
                     r"client=\[127\.0\.0\.1\] reason=locked", log)
    assert re.search(r"pop3 auth failed user=alice@example.test method=USER "
                     r"client=\[127\.0\.0\.1\] reason=locked", log)
    assert PW not in log


def test_lock_ends_after_the_window(make_surat):
    """The lock lasts auth.lockout_window from the failure that made it;
    attempts refused meanwhile do not stretch it."""
    # The lock starts before locked_at; the check at +1.5 s must reach the
    # server inside the window however slow a loaded machine is: 1.5 s spare.
    s = start(make_surat, **{"auth.lockout_window": "3s"})
    for _ in range(3):
        assert imap_login(s, ALICE, guess()).startswith("NO [AUTHENTICATIONFAILED]")
    locked_at = time.time()
    all_locked(s)
    time.sleep(max(0, locked_at + 1.5 - time.time()))
    assert pop3_login(s, ALICE, PW).startswith("-ERR [SYS/TEMP]")
    time.sleep(max(0, locked_at + 3.2 - time.time()))
    all_open(s)


def test_lock_and_count_survive_a_restart(make_surat):
    """A restart (a config change is one) gives a guesser no new guesses:
    the daemon keeps the counts at its stop and takes them up at its start,
    less the time it was down."""
    s = start(make_surat, **{"auth.lockout_window": "1h"})
    for _ in range(3):
        assert smtp_auth(s, ALICE, guess()).startswith("535 5.7.8")
    assert smtp_auth(s, ALICE, guess(), "127.0.0.2").startswith("535 5.7.8")
    assert s.stop() == 0
    s.start()
    all_locked(s)
    # 127.0.0.2 had one failure: two more lock it, not three.
    assert imap_login(s, ALICE, guess(), "127.0.0.2").startswith("NO [AUTHENTICATIONFAILED]")
    assert imap_login(s, ALICE, guess(), "127.0.0.2").startswith("NO [AUTHENTICATIONFAILED]")
    all_locked(s, "127.0.0.2")
    all_open(s, "127.0.0.3")
    # Down for longer than the window (127.0.0.1's lock set back two hours): it has ended.
    assert s.stop() == 0
    db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"))
    with db:
        kept = dict(db.execute("SELECT key, value FROM kept WHERE kind = 'lockout'"))
        assert kept == {"127.0.0.1": 3, "127.0.0.2": 3}, kept
        db.execute("UPDATE kept SET at = at - 7200000 WHERE key = '127.0.0.1'")
    db.close()
    s.start()
    all_open(s)
    all_locked(s, "127.0.0.2")
    assert "cannot keep" not in s.log() and "cannot read" not in s.log()


def kept_rows(s, kind):
    db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"))
    try:
        return dict(db.execute("SELECT key, value FROM kept WHERE kind = ?", (kind,)))
    finally:
        db.close()


def test_a_killed_daemon_keeps_the_lock_it_last_wrote(make_surat):
    """A daemon killed (or crashed) rather than stopped has written its
    state every state_save_interval: a guesser gets no new guesses from a
    crash he can cause. The writes go on after the restart, each replacing
    the last."""
    s = start(make_surat, **{"auth.lockout_window": "1h", "state_save_interval": "1s"})
    for _ in range(3):
        assert smtp_auth(s, ALICE, guess()).startswith("535 5.7.8")

    def written(want):
        deadline = time.time() + 10
        while kept_rows(s, "lockout") != want:
            assert time.time() < deadline, kept_rows(s, "lockout")
            time.sleep(0.05)

    written({"127.0.0.1": 3})
    s.kill()
    s.start()
    all_locked(s)
    assert smtp_auth(s, ALICE, guess(), "127.0.0.2").startswith("535 5.7.8")
    written({"127.0.0.1": 3, "127.0.0.2": 1})
    assert s.stop() == 0
    assert "cannot write" not in s.log() and "cannot keep" not in s.log()


def test_stop_waits_for_the_password_checks_and_keeps_their_failures(make_surat):
    """A stop with password checks still running (grace 0: the sessions are
    closed at once) waits for them: their failures count, and are kept for
    the next run, rather than being lost or counted in a lockout already
    freed."""
    s = start(make_surat, **{"auth.lockout_failures": "100", "auth.lockout_window": "1h",
                             "shutdown_grace": "0s"})
    conns = []
    for _ in range(8):
        c = Line(s.port("submission"))
        assert c.smtp_reply().startswith("220")
        c.send("EHLO client.test")
        assert c.smtp_reply().startswith("250")
        conns.append(c)
    for c in conns:
        c.send("AUTH PLAIN " + plain(ALICE, guess()))
    time.sleep(0.05)        # read, and (some of them) being checked
    assert s.stop() == 0
    for c in conns:
        c.close()
    db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"))
    kept = dict(db.execute("SELECT key, value FROM kept WHERE kind = 'lockout'"))
    db.close()
    assert kept == {"127.0.0.1": 8}, kept


def test_a_good_login_does_not_reset_the_count(make_surat):
    """With one valid account an attacker could otherwise clear its count
    between guesses."""
    s = start(make_surat)
    for _ in range(2):
        assert pop3_login(s, ALICE, guess()).startswith("-ERR [AUTH]")
    assert smtp_auth(s, ALICE, PW).startswith("235 ")
    assert imap_login(s, ALICE, PW).startswith("OK ")
    assert smtp_auth(s, ALICE, guess()).startswith("535 ")
    all_locked(s)


def test_hanging_up_does_not_escape_the_count(make_surat):
    """A client that sends its guess and closes at once, without waiting
    for the answer (or auth.fail_delay), is counted all the same."""
    s = start(make_surat, **{"auth.fail_delay": "1s"})
    for _ in range(3):
        c = Line(s.port("imap"))
        assert c.line().startswith("* OK")
        c.send('a LOGIN "%s" "%s"' % (ALICE, guess()))
        c.close()
    deadline = time.time() + 10
    while "auth lockout" not in s.log():
        assert time.time() < deadline, s.log()[-3000:]
        time.sleep(0.02)
    t = time.time()
    assert smtp_auth(s, ALICE, PW).startswith("454 4.7.0")
    assert time.time() - t < 0.9    # refused at once, not after the delay


def test_syntax_errors_and_cancels_do_not_count(make_surat):
    """Only bad credentials count: a malformed or cancelled exchange never
    checked a password."""
    s = start(make_surat)
    c = Line(s.port("submission"))
    c.smtp_reply()
    c.send("EHLO client.test")
    c.smtp_reply()
    c.send("AUTH PLAIN !!!!")
    assert c.smtp_reply().startswith("501 ")
    c.send("AUTH PLAIN")
    assert c.smtp_reply().startswith("334")
    c.send("*")
    assert c.smtp_reply().startswith("501 ")
    c.close()
    c = Line(s.port("imap"))
    c.line()
    c.send("a LOGIN onlyone")
    assert c.line().startswith("a BAD")
    c.send("b AUTHENTICATE PLAIN")
    assert c.line().startswith("+")
    c.send("*")
    assert c.line().startswith("b BAD")
    c.send("c AUTHENTICATE PLAIN " + base64.b64encode(b"no nuls").decode())
    assert c.line().startswith("c BAD")
    c.close()
    c = Line(s.port("pop3"))
    c.line()
    c.send("AUTH PLAIN !!!!")
    assert c.line().startswith("-ERR")
    c.send("AUTH PLAIN")
    assert c.line().startswith("+")
    c.send("*")
    assert c.line().startswith("-ERR")
    c.close()
    all_open(s)
    assert "auth lockout" not in s.log()


def test_zero_failures_turns_it_off(make_surat):
    s = start(make_surat, **{"auth.lockout_failures": "0"})
    for _ in range(11):     # one past the default
        assert smtp_auth(s, ALICE, guess()).startswith("535 ")
    all_open(s)
    assert "auth lockout" not in s.log()


@pytest.mark.parametrize("prefix,key", [("64", "::/64"), ("128", "::1/128")])
def test_ipv6_client_counted_by_its_prefix(make_surat, prefix, key):
    """An IPv6 client counts under its max_connections_ipv6_prefix, as for
    the connection cap (one site holds a whole /64); the log names the key.
    IPv4 clients keep their own count."""
    skip_unless_ipv6_loopback()
    s = start(make_surat, max_connections_ipv6_prefix=prefix)
    p6, i6 = free_port(), free_port()
    with open(s.conf, "a") as f:
        f.write("listen.submission = 127.0.0.1:%d, [::1]:%d\n" % (s.port("submission"), p6))
        f.write("listen.imap = 127.0.0.1:%d, [::1]:%d\n" % (s.port("imap"), i6))
    s.stop()
    s.start()
    for _ in range(3):
        assert smtp_auth(s, ALICE, guess(), "::1", "::1", p6).startswith("535 ")
    r = imap_login(s, ALICE, PW, "::1", "::1", i6)
    assert r.startswith("NO [UNAVAILABLE]"), r
    assert re.search(r"auth lockout client=\[::1\] counted_as=%s failures=3" % re.escape(key),
                     s.log()), s.log()[-3000:]
    all_open(s)


def test_same_wrong_password_again_does_not_lock(make_surat):
    """A device retrying a stale password (the same user and password each
    time) is one failure, not one per retry, so it cannot lock out its
    NAT; the answer is still the failure. Distinct passwords do lock."""
    s = start(make_surat)
    for _ in range(3):
        assert smtp_auth(s, ALICE, "old-pw").startswith("535 5.7.8")
        assert imap_login(s, ALICE, "old-pw").startswith("NO [AUTHENTICATIONFAILED]")
        assert pop3_login(s, ALICE, "old-pw").startswith("-ERR [AUTH]")
    all_open(s)
    assert "auth lockout" not in s.log()
    # Another user with the same password is another mistake: counted.
    assert smtp_auth(s, "bob@example.test", "old-pw").startswith("535 5.7.8")
    assert imap_login(s, ALICE, guess()).startswith("NO [AUTHENTICATIONFAILED]")
    all_locked(s)
    assert "old-pw" not in s.log()


def test_exempt_address_is_never_locked(make_surat):
    """auth.lockout_exempt (a webmail on 127.0.0.1): failures from it are
    neither counted nor refused, while 127.0.0.2 is locked as before."""
    s = start(make_surat, **{"auth.lockout_exempt": "::1, 127.0.0.1/32"})
    for i in range(4):     # one past the threshold
        assert smtp_auth(s, ALICE, guess()).startswith("535 5.7.8")
        if i < 3:
            assert smtp_auth(s, ALICE, guess(), "127.0.0.2").startswith("535 5.7.8")
    all_open(s)
    all_locked(s, "127.0.0.2")
    log = s.log()
    assert "auth lockout client=[127.0.0.2]" in log
    assert "auth lockout client=[127.0.0.1]" not in log


def test_a_login_name_cannot_write_fields_into_the_log(make_surat):
    """A login name is the client's text: one holding a space and a fake
    client=[...] (what a fail2ban filter takes for the address to ban) is
    escaped, on every protocol, in the failure line and in the lockout's
    refusal line, so each has one client= field, the real one."""
    s = start(make_surat, **{"auth.lockout_failures": "1"})
    fake = "x client=[10.9.9.9] reason=locked"
    assert smtp_auth(s, fake, "pw1", "127.0.0.1").startswith("535 ")
    assert smtp_auth(s, fake, "pw2", "127.0.0.1").startswith("454 ")
    assert imap_login(s, fake, "pw1", "127.0.0.2").startswith("NO [AUTHENTICATIONFAILED]")
    assert imap_login(s, fake, "pw2", "127.0.0.2").startswith("NO [UNAVAILABLE]")

    def pop3_plain(pw):     # USER takes no space; SASL PLAIN does
        c = Line(s.port("pop3"), "127.0.0.3")
        assert c.line().startswith("+OK")
        c.send("AUTH PLAIN " + plain(fake, pw))
        r = c.line()
        c.close()
        return r
    assert pop3_plain("pw1").startswith("-ERR [AUTH]")
    assert pop3_plain("pw2").startswith("-ERR [SYS/TEMP]")
    lines = [l for l in s.log().splitlines() if "auth failed user=" in l]
    assert len(lines) == 6, lines
    for l in lines:
        fields = l.split()
        clients = [f for f in fields if f.startswith("client=")]
        assert len(clients) == 1 and re.fullmatch(r"client=\[127\.0\.0\.[123]\]", clients[0]), l
        assert "user=x\\x20client=[10.9.9.9]\\x20reason=locked" in fields, l
    assert sum(l.endswith(" reason=locked") for l in lines) == 3, lines
