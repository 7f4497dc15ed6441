"""POP3: sessions against the running daemon with poplib, a raw socket
client, fetchmail and curl.

Covers: every command and every state error, CAPA before/after login and
TLS, STLS (with a pipelined command that must be dropped) and POP3S,
USER/PASS and AUTH PLAIN (initial response, continuation, cancel, bad
data), plaintext refusal, [AUTH] with the failure delay, [IN-USE], UIDL
stability, LIST sizes against RETR and the stored file, byte-exact
round-trip of dot lines, TOP 0/n, DELE + RSET, DELE + dropped connection,
DELE + QUIT (expunged, seen through `surat mailbox show`), pipelining, a
large message streamed, line and bad-command limits, the busy reply, the
log lines, a graceful stop with a session open, fetchmail with and without
--keep, and curl pop3://.

Messages reach the mailboxes through SMTP (smtplib to the smtp listener).
"""
import base64
import contextlib
import glob
import imaplib
import os
import re
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import time
import poplib

import pytest

from conftest import (KINDS, POPULATED, client_tls, pipelined_over_starttls,
                      rss_growth_while_flooding)

TIMEOUT = 10
POP_KINDS = tuple(KINDS) + ("pop3", "pop3s")
ALICE = "alice@example.test"
BOB = "bob@example.test"


# ---------------------------------------------------------------- helpers

@pytest.fixture
def srv(make_surat):
    """surat with smtp, pop3, pop3s; plaintext AUTH allowed (to test without TLS)."""
    return make_surat(extra={"allow_plaintext_auth": "yes"}, kinds=POP_KINDS,
                      populated=POPULATED)


@pytest.fixture
def strict(make_surat):
    """surat with the default: no credentials before TLS."""
    return make_surat(kinds=POP_KINDS, populated=POPULATED)


def make_msg(subject, body="Hello.\r\n", extra=""):
    return ("From: sender@remote.test\r\nTo: %s\r\nSubject: %s\r\n%s\r\n%s" %
            (ALICE, subject, extra, body)).encode()


def deliver(s, msgs, to=ALICE):
    """Send each message through SMTP and wait until all are in the INBOX."""
    before = len(s.messages(to))
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=TIMEOUT) as c:
        for m in msgs:
            c.sendmail("sender@remote.test", [to], m)
    return s.wait_messages(to, before + len(msgs))


def pop(s, user=ALICE, pw="alice-pw"):
    p = poplib.POP3("127.0.0.1", s.port("pop3"), timeout=TIMEOUT)
    p.user(user)
    p.pass_(pw)
    return p


class Raw:
    """A line-level POP3 client on a socket: sends bytes as given, reads
    status lines and multi-line bodies, always with a timeout."""

    def __init__(self, port, tls=False, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            self.sock = client_tls().wrap_socket(self.sock)
        self.buf = b""
        self.greeting = self.line()
        assert self.greeting.startswith(b"+OK"), self.greeting

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; unparsed: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def multi(self):
        """The raw bytes of a multi-line body up to and excluding '.\\r\\n'."""
        while True:
            if self.buf.startswith(b".\r\n"):
                self.buf = self.buf[3:]
                return b""
            i = self.buf.find(b"\r\n.\r\n")
            if i >= 0:
                body, self.buf = self.buf[:i + 2], self.buf[i + 5:]
                return body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed in a multi-line answer")
            self.buf += chunk

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.line()

    def ok(self, line):
        r = self.cmd(line)
        assert r.startswith(b"+OK"), (line, r)
        return r

    def err(self, line, text=None):
        r = self.cmd(line)
        assert r.startswith(b"-ERR "), (line, r)
        if text:
            assert text.encode() in r, (line, r)
        return r

    def login(self, user=ALICE, pw="alice-pw"):
        self.ok("USER " + user)
        return self.ok("PASS " + pw)

    def closed(self, timeout=TIMEOUT):
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def unstuff(body):
    return b"".join(l[1:] if l.startswith(b".") else l
                    for l in body.splitlines(keepends=True))


def plain(user, pw, authz=""):
    return base64.b64encode(("%s\0%s\0%s" % (authz, user, pw)).encode()).decode()


def uid_of(s, n, addr=ALICE):
    return s.messages(addr)[n - 1]


# ---------------------------------------------------------------- CAPA, TLS, login

def test_capa_plain_port(srv):
    r = Raw(srv.port("pop3"))
    assert b"surat" in r.greeting
    r.ok("CAPA")
    caps = r.multi().decode().split("\r\n")[:-1]
    for c in ("TOP", "UIDL", "USER", "SASL PLAIN", "RESP-CODES", "AUTH-RESP-CODE",
              "PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION surat", "STLS"):
        assert c in caps, (c, caps)
    r.login()
    r.ok("CAPA")
    caps = r.multi().decode().split("\r\n")[:-1]
    assert "TOP" in caps and "UIDL" in caps
    assert "STLS" not in caps and "USER" not in caps and "SASL PLAIN" not in caps
    r.ok("QUIT")
    assert r.closed()


def test_capa_pop3s_no_stls(srv):
    r = Raw(srv.port("pop3s"), tls=True)
    r.ok("CAPA")
    caps = r.multi().decode().split("\r\n")[:-1]
    assert "STLS" not in caps and "USER" in caps and "SASL PLAIN" in caps
    r.err("STLS", "Already using TLS")
    r.login()
    r.ok("QUIT")


def test_plaintext_auth_refused_before_tls(strict):
    deliver(strict, [make_msg("tls only")])
    r = Raw(strict.port("pop3"))
    r.ok("CAPA")
    caps = r.multi().decode().split("\r\n")[:-1]
    assert "STLS" in caps and "USER" not in caps and "SASL PLAIN" not in caps
    r.err("USER " + ALICE, "[AUTH] Plaintext authentication disallowed")
    r.err("PASS alice-pw", "[AUTH]")
    r.err("AUTH PLAIN " + plain(ALICE, "alice-pw"), "[AUTH]")
    r.close()
    # poplib with STLS works, and so does POP3S.
    p = poplib.POP3("127.0.0.1", strict.port("pop3"), timeout=TIMEOUT)
    p.stls(client_tls())
    assert "USER" in p.capa() and "STLS" not in p.capa()
    p.user(ALICE)
    p.pass_("alice-pw")
    assert p.stat()[0] == 1
    p.quit()
    p = poplib.POP3_SSL("127.0.0.1", strict.port("pop3s"), timeout=TIMEOUT, context=client_tls())
    p.user(ALICE)
    p.pass_("alice-pw")
    assert p.stat()[0] == 1
    assert p.retr(1)[1][-1] == b"Hello."
    p.quit()


def test_stls_drops_pipelined_and_resets(srv):
    r = Raw(srv.port("pop3"))
    r.ok("USER " + ALICE)
    # A command pipelined after STLS must never be run after the handshake.
    r.send("STLS\r\nPASS alice-pw\r\n")
    assert r.line().startswith(b"+OK")
    assert r.buf == b""
    r.sock = client_tls().wrap_socket(r.sock)
    r.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        r.sock.recv(100)
    r.sock.settimeout(TIMEOUT)
    # USER was forgotten with the plaintext session.
    r.err("PASS alice-pw", "Send USER first")
    r.err("STLS", "Already using TLS")
    r.ok("CAPA")
    assert b"STLS" not in r.multi()
    r.login()
    r.ok("QUIT")



def test_pipelining_over_stls_without_reading_is_held_back(make_surat, no_asan_quarantine):
    """A client that pipelines after STLS and never reads is held back at the
    reply backlog, as in plaintext: the TLS layer hands every reply on to the
    socket's buffer below it, where the backlog must not grow unseen (CAPA:
    6 octets in, some 140 out)."""
    srv = make_surat(extra={"log.level": "info"}, kinds=POP_KINDS, populated=POPULATED)
    r = Raw(srv.port("pop3"))
    r.ok("STLS")
    r.sock = client_tls().wrap_socket(r.sock)
    r.ok("CAPA")
    r.multi()
    flood = b"CAPA\r\n" * 450000      # 2.7 MB in, 60 MB of replies
    grown, sent = rss_growth_while_flooding(srv, r.sock, flood, 2.5)
    assert grown < 12 * 1024, "RSS grew by %d KiB (%d octets sent)" % (grown, sent)
    Raw(srv.port("pop3")).ok("QUIT")


def test_pipelined_backlog_over_stls_arrives_whole_then_close_notify(strict):
    """Pipelined past the reply backlog over STLS, then QUIT, read only
    afterwards: every reply arrives, in order, and the TLS stream ends with
    close_notify."""
    n = 5000        # some 700 KB of replies, past the 256 KiB backlog
    data, end = pipelined_over_starttls(strict.port("pop3"), b"+OK", b"STLS\r\n", b"+OK",
                                        b"CAPA\r\n" * n + b"QUIT\r\n")
    assert data.count(b"+OK Capability list follows\r\n") == n, data.count(b"+OK Cap")
    assert data.count(b"IMPLEMENTATION surat\r\n.\r\n") == n
    assert re.search(rb"IMPLEMENTATION surat\r\n\.\r\n\+OK [^\r]*\r\n$", data), data[-200:]
    assert end == "close_notify", end


def test_user_pass_wrong_and_unknown(srv):
    r = Raw(srv.port("pop3"))
    r.ok("USER " + ALICE)
    r.err("PASS wrong", "[AUTH] Authentication failed")
    # USER must be given again after a failed PASS.
    r.err("PASS alice-pw", "Send USER first")
    r.ok("USER nobody@example.test")
    r.err("PASS alice-pw", "[AUTH]")
    r.close()
    r = Raw(srv.port("pop3"))
    r.login()
    r.ok("QUIT")
    # Password with spaces: PASS takes the rest of the line.
    srv.add_user("carol@example.test", " spaced  pw ")
    r = Raw(srv.port("pop3"))
    r.ok("USER carol@example.test")
    r.ok("PASS  spaced  pw ")
    r.ok("QUIT")


def test_auth_failure_delay_and_limit(make_surat):
    s = make_surat(extra={"allow_plaintext_auth": "yes", "auth.fail_delay": "1s"},
                   kinds=POP_KINDS, populated=POPULATED)
    r = Raw(s.port("pop3"))
    for i in range(3):
        r.ok("USER " + ALICE)
        t = time.time()
        r.err("PASS nope", "[AUTH]")
        assert time.time() - t >= 0.9
    # The third failure ends the session.
    assert b"Too many authentication failures" in r.line()
    assert r.closed()
    log = s.log()
    assert "pop3 auth failed user=alice@example.test" in log
    assert "nope" not in log


def test_auth_plain(srv):
    r = Raw(srv.port("pop3"))
    # Initial response.
    r.ok("AUTH PLAIN " + plain(ALICE, "alice-pw"))
    r.ok("STAT")
    r.ok("QUIT")
    # Continuation, with authzid equal to the user.
    r = Raw(srv.port("pop3"))
    assert r.cmd("AUTH PLAIN") == b"+ "
    r.ok(plain(ALICE, "alice-pw", authz=ALICE))
    r.ok("QUIT")
    r = Raw(srv.port("pop3"))
    r.ok("AUTH")
    assert r.multi() == b"PLAIN\r\n"
    assert r.cmd("auth plain") == b"+ "
    r.err("*", "cancelled")
    r.err("AUTH PLAIN =", "Malformed")
    r.err("AUTH PLAIN !!!!", "base64")
    r.err("AUTH PLAIN " + plain(ALICE, "alice-pw", authz=BOB), "Authorization identity")
    r.close()
    r = Raw(srv.port("pop3"))
    r.err("AUTH LOGIN", "Unsupported SASL mechanism")
    r.err("AUTH PLAIN " + plain(ALICE, "bad"), "[AUTH] Authentication failed")
    assert r.cmd("AUTH PLAIN") == b"+ "
    r.err(plain(BOB, "bad"), "[AUTH]")
    r.ok("AUTH PLAIN " + plain(BOB, "bob-pw"))
    r.ok("QUIT")
    # poplib's own AUTH-less path and APOP refusal.
    r = Raw(srv.port("pop3"))
    r.err("APOP alice c4c9334bac560ecc979e58001b3e22fb", "APOP is not supported")
    r.close()
    assert "pop3 login user=bob@example.test method=PLAIN" in srv.log()


# ---------------------------------------------------------------- state errors and syntax

def test_state_errors_before_login(srv):
    # At most 4 bad commands per connection: the 5th closes it.
    cmds = ["STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1",
            "UIDL", "UIDL 1"]
    for i in range(0, len(cmds), 4):
        r = Raw(srv.port("pop3"))
        for c in cmds[i:i + 4]:
            r.err(c, "not valid before login")
        r.ok("QUIT")
    r = Raw(srv.port("pop3"))
    r.err("PASS x", "Send USER first")
    r.err("XYZZY", "Unknown command")
    r.err("", "Empty command")
    r.err("USER", "Syntax: USER name")
    r.err("STAT", "not valid before login")
    assert b"Too many bad commands" in r.line()
    assert r.closed()


def test_state_and_syntax_errors_after_login(srv):
    deliver(srv, [make_msg("one")])
    r = Raw(srv.port("pop3"))
    r.login()
    for c in ("USER x", "PASS x", "AUTH PLAIN", "STLS", "APOP a b"):
        r.err(c, "not valid after login")
    r.err("RETR", "Syntax: RETR msg")
    r.err("RETR 0", "Invalid message number")
    r.err("RETR x", "Invalid message number")
    r.err("RETR 99999999999", "Invalid message number")
    r.err("RETR 2", "No such message")
    r.err("TOP 1", "Syntax: TOP msg lines")
    r.err("TOP 1 x", "Invalid number of lines")
    r.err("TOP 2 0", "No such message")
    r.err("LIST 1 2", "Syntax: LIST [msg]")
    r.err("LIST 2", "No such message")
    r.err("UIDL 2", "No such message")
    r.err("DELE 2", "No such message")
    r.err("STAT x", "Syntax: STAT")
    r.err("NOOP x", "Syntax: NOOP")
    r.err("FOO", "Unknown command")
    r.err("RETR\t1", "Control characters")
    r.err("X" * 300, "too long")
    # Still usable after all that.
    assert r.ok("STAT") == b"+OK 1 %d" % srv_size(srv, 1)
    assert r.ok("NOOP") == b"+OK"
    r.ok("QUIT")


def srv_size(s, n, addr=ALICE):
    return len(s.message(addr, uid_of(s, n, addr)))


def test_bad_command_limit_after_login(srv):
    r = Raw(srv.port("pop3"))
    r.login()
    for i in range(20):
        r.err("BOGUS", "Unknown command")
    assert b"Too many bad commands" in r.line()
    assert r.closed()


def test_line_limit(srv):
    r = Raw(srv.port("pop3"))
    # 253 octets + CRLF is accepted (an unknown command); 254 is too long.
    r.err("X" * 253, "Unknown command")
    r.err("X" * 254, "Command line too long")
    # A huge line is swallowed to its end and reported once.
    r.send("Y" * 100000 + "\r\n")
    assert b"too long" in r.line()
    r.ok("QUIT")


def test_endless_line_is_not_buffered(make_surat, no_asan_quarantine):
    """16 MB without a line end: swallowed as it comes, not held in memory."""
    srv = make_surat(extra={"allow_plaintext_auth": "yes"}, kinds=POP_KINDS,
                     populated=POPULATED)
    r = Raw(srv.port("pop3"))
    before = srv.rss_kib()
    chunk = b"Z" * 65536
    for _ in range(256):
        r.send(chunk)
    r.send(b"\r\n")
    assert b"too long" in r.line()
    grew = srv.rss_kib() - before
    assert grew < 8 * 1024, "RSS grew by %d KiB" % grew
    r.ok("QUIT")


# ---------------------------------------------------------------- transaction commands

def test_commands(srv):
    msgs = [make_msg("m%d" % i, body="line %d\r\n" % i * (i + 1)) for i in range(3)]
    uids = deliver(srv, msgs)
    sizes = [len(srv.message(ALICE, u)) for u in uids]
    r = Raw(srv.port("pop3"))
    assert r.login() == b"+OK Logged in: 3 messages (%d octets)" % sum(sizes)
    assert r.ok("STAT") == b"+OK 3 %d" % sum(sizes)
    r.ok("LIST")
    assert r.multi() == b"".join(b"%d %d\r\n" % (i + 1, sz) for i, sz in enumerate(sizes))
    assert r.ok("LIST 2") == b"+OK 2 %d" % sizes[1]
    r.ok("UIDL")
    uidl = r.multi().decode().split("\r\n")[:-1]
    assert len(uidl) == 3 and len(set(u.split()[1] for u in uidl)) == 3
    assert r.ok("UIDL 3").decode() == "+OK " + uidl[2]
    for u in uidl:
        n, tag = u.split()
        assert re.fullmatch(r"[0-9a-f]+\.[0-9a-f]+", tag), tag
        assert len(tag) <= 70 and all(0x21 <= ord(ch) <= 0x7e for ch in tag)
    assert r.ok("NOOP") == b"+OK"
    assert r.ok("RETR 2") == b"+OK %d octets" % sizes[1]
    assert unstuff(r.multi()) == srv.message(ALICE, uids[1])
    assert r.ok("DELE 2") == b"+OK Message 2 deleted"
    r.err("DELE 2", "Message 2 is deleted")
    r.err("RETR 2", "deleted")
    r.err("LIST 2", "deleted")
    r.err("UIDL 2", "deleted")
    r.err("TOP 2 0", "deleted")
    assert r.ok("STAT") == b"+OK 2 %d" % (sizes[0] + sizes[2])
    r.ok("LIST")
    assert r.multi() == b"1 %d\r\n3 %d\r\n" % (sizes[0], sizes[2])
    r.ok("UIDL")
    assert r.multi().decode().split("\r\n")[:-1] == [uidl[0], uidl[2]]
    assert r.ok("RSET") == b"+OK Maildrop has 3 messages (%d octets)" % sum(sizes)
    assert r.ok("STAT") == b"+OK 3 %d" % sum(sizes)
    assert b"no messages deleted" in r.ok("QUIT")
    assert r.closed()
    assert srv.messages(ALICE) == uids


def test_list_sizes_match_retr(srv):
    body = "".join("line %d of a longer body\r\n" % i for i in range(200))
    uids = deliver(srv, [make_msg("a"), make_msg("b", body=body),
                         make_msg("c", body=".\r\n..\r\n.x\r\n")])
    p = pop(srv)
    listing = p.list()[1]
    assert len(listing) == 3
    for entry in listing:
        n, size = map(int, entry.split())
        resp, lines, octets = p.retr(n)
        data = b"".join(l + b"\r\n" for l in lines)
        assert len(data) == size == octets
        assert data == srv.message(ALICE, uids[n - 1])
    p.quit()


def imap_append(s, msgs):
    """APPEND each message to alice's INBOX as given (imaplib would turn a
    bare CR into CRLF), through a raw IMAP socket."""
    sock = socket.create_connection(("127.0.0.1", s.port("imap")), timeout=TIMEOUT)
    f = sock.makefile("rb")

    def tagged(tag):
        while True:
            line = f.readline()
            assert line, "IMAP connection closed"
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), line
                return

    sock.sendall(b"a LOGIN %s alice-pw\r\n" % ALICE.encode())
    tagged(b"a")
    for i, m in enumerate(msgs):
        sock.sendall(b"b%d APPEND INBOX {%d}\r\n" % (i, len(m)))
        assert f.readline().startswith(b"+")
        sock.sendall(m + b"\r\n")
        tagged(b"b%d" % i)
    sock.sendall(b"z LOGOUT\r\n")
    sock.close()


def test_sizes_exact_without_final_crlf(make_surat):
    """RFC 1939 11: STAT, LIST and RETR's "+OK n octets" give the octets
    RETR sends before the final ".", and fetchmail compares them. A
    message without a final CRLF (BDAT LAST, or IMAP APPEND of a literal
    without one) gets one before the "." line: it is counted. IMAP's
    RFC822.SIZE stays the size as stored."""
    s = make_surat(extra={"allow_plaintext_auth": "yes"},
                   kinds=POP_KINDS + ("imap",), populated=POPULATED)
    imap_append(s, [b"Subject: cr\r\n\r\nbare\rCR, one last\r",
                    b"Subject: headers only",
                    b"Subject: whole\r\n\r\nends in CRLF\r\n",
                    b"Subject: lf\n\nbare LF, stored as CRLF"])
    # BDAT LAST without a final CRLF.
    r = socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=TIMEOUT)
    f = r.makefile("rb")
    body = b"From: s@remote.test\r\nSubject: bdat\r\n\r\nno final CRLF"
    r.sendall(b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<%s>\r\n"
              b"BDAT %d LAST\r\n%s" % (ALICE.encode(), len(body), body))
    codes = []
    while len(codes) < 5:
        line = f.readline()
        if line[3:4] == b" ":
            codes.append(line[:3])
    assert codes == [b"220"] + [b"250"] * 4, codes
    r.sendall(b"QUIT\r\n")
    r.close()
    # The messages as stored, and IMAP's sizes: the octets as stored.
    c = imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=TIMEOUT)
    c.login(ALICE, "alice-pw")
    deadline = time.monotonic() + TIMEOUT
    while int(c.select("INBOX", readonly=True)[1][0]) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stored = []
    for part in c.fetch("1:5", "(RFC822.SIZE BODY.PEEK[])")[1]:
        if isinstance(part, tuple):
            assert int(re.search(rb"RFC822\.SIZE (\d+)", part[0]).group(1)) == len(part[1])
            stored.append(part[1])
    c.logout()
    assert stored[0].endswith(b"\r") and b"bare\rCR" in stored[0]
    assert stored[3].endswith(b"\r\n\r\nbare LF, stored as CRLF")
    p = Raw(s.port("pop3"))
    p.login()
    p.ok("LIST")
    listing = [tuple(map(int, l.split())) for l in p.multi().splitlines()]
    assert [n for n, _ in listing] == [1, 2, 3, 4, 5]
    total = 0
    for (n, size), data in zip(listing, stored):
        sent = data + (b"\r\n" if not data.endswith(b"\n") else b"")
        assert p.ok("LIST %d" % n) == b"+OK %d %d" % (n, size)
        assert p.ok("RETR %d" % n) == b"+OK %d octets" % size
        assert unstuff(p.multi()) == sent
        assert size == len(sent), (n, data)
        total += size
    assert p.ok("STAT") == b"+OK 5 %d" % total
    # TOP ends the lines it sends the same way.
    p.ok("TOP 2 0")
    assert p.multi() == b"Subject: headers only\r\n"
    p.ok("TOP 5 0")
    assert p.multi().endswith(b"Subject: bdat\r\n\r\n")
    p.ok("TOP 5 1")
    assert p.multi().endswith(b"\r\n\r\nno final CRLF\r\n")
    p.ok("QUIT")


def test_dot_lines_round_trip(srv):
    body = (".\r\n..\r\n...\r\n.leading dot\r\n..two dots\r\nmiddle . dot\r\n"
            " .space dot\r\n.\r\nlast line\r\n")
    uids = deliver(srv, [make_msg("dots", body=body)])
    stored = srv.message(ALICE, uids[0])
    assert stored.endswith(body.encode())
    r = Raw(srv.port("pop3"))
    r.login()
    r.ok("RETR 1")
    raw = r.multi()
    # Every line that starts with '.' was stuffed on the wire.
    for line in raw.split(b"\r\n"):
        assert not line.startswith(b".") or line.startswith(b".."), line
    assert unstuff(raw) == stored
    r.ok("QUIT")
    # And poplib agrees.
    p = pop(srv)
    assert b"".join(l + b"\r\n" for l in p.retr(1)[1]) == stored
    p.quit()


def test_top(srv):
    body = "body 1\r\n.body 2\r\nbody 3\r\n"
    uids = deliver(srv, [make_msg("top", body=body)])
    stored = srv.message(ALICE, uids[0])
    head, _ = stored.split(b"\r\n\r\n", 1)
    r = Raw(srv.port("pop3"))
    r.login()
    assert r.ok("TOP 1 0") == b"+OK Top of message 1 follows"
    assert r.multi() == head + b"\r\n\r\n"
    r.ok("TOP 1 2")
    assert r.multi() == head + b"\r\n\r\nbody 1\r\n..body 2\r\n"
    r.ok("TOP 1 3")
    assert unstuff(r.multi()) == stored
    r.ok("TOP 1 4294967295")
    assert unstuff(r.multi()) == stored
    r.ok("QUIT")
    p = pop(srv)
    lines = p.top(1, 1)[1]
    assert lines[-2:] == [b"", b"body 1"]
    p.quit()


def test_pipelining(srv):
    uids = deliver(srv, [make_msg("p1"), make_msg("p2")])
    r = Raw(srv.port("pop3"))
    r.send("USER %s\r\nPASS alice-pw\r\nSTAT\r\nRETR 1\r\nLIST\r\nBOGUS\r\nTOP 2 0\r\n"
           "UIDL 2\r\nDELE 1\r\nRETR 2\r\nSTAT\r\nRSET\r\nQUIT\r\n" % ALICE)
    assert r.line().startswith(b"+OK Send PASS")
    assert r.line().startswith(b"+OK Logged in: 2 messages")
    assert r.line().startswith(b"+OK 2 ")
    assert r.line().startswith(b"+OK")
    assert unstuff(r.multi()) == srv.message(ALICE, uids[0])
    assert r.line().startswith(b"+OK 2 messages")
    r.multi()
    assert r.line() == b"-ERR Unknown command"
    assert r.line().startswith(b"+OK Top of message 2")
    r.multi()
    assert r.line().startswith(b"+OK 2 ")
    assert r.line() == b"+OK Message 1 deleted"
    assert r.line().startswith(b"+OK")
    assert unstuff(r.multi()) == srv.message(ALICE, uids[1])
    assert r.line().startswith(b"+OK 1 ")
    assert r.line().startswith(b"+OK Maildrop has 2 messages")
    assert r.line().startswith(b"+OK Bye")
    assert r.closed()
    assert srv.messages(ALICE) == uids


# ~6 MB, many lines starting with a dot, across many 64 KiB chunks.
BIG_LINE = ".%s\r\n" % ("x" * 70)


def deliver_big(s):
    """The big message delivered to alice: its stored octets."""
    uids = deliver(s, [make_msg("big", body=BIG_LINE * 80000 + "end\r\n")])
    return s.message(ALICE, uids[0])


def retr_whole(r, stored, wait=0):
    """RETR 1 with a NOOP pipelined after it, read after wait seconds: the
    message arrives whole, dot-stuffed, and the NOOP is answered after it."""
    r.send("RETR 1\r\nNOOP\r\n")
    time.sleep(wait)
    assert r.line() == b"+OK %d octets" % len(stored)
    raw = r.multi()
    assert len(raw) == len(stored) + 80000
    assert unstuff(raw) == stored
    assert r.line() == b"+OK"


def test_large_message_streamed(srv):
    line = BIG_LINE
    stored = deliver_big(srv)
    r = Raw(srv.port("pop3"))
    r.login()
    retr_whole(r, stored)
    r.ok("TOP 1 3")
    assert unstuff(r.multi()) == stored.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + \
        (line * 3).encode()
    r.ok("QUIT")


def test_large_message_streamed_over_stls(strict):
    """After STLS, with the socket under the TLS layer bounded, a RETR read
    only after a second still arrives whole, and the command pipelined after
    it is answered after it."""
    stored = deliver_big(strict)
    r = Raw(strict.port("pop3"))
    r.ok("STLS")
    r.sock = client_tls().wrap_socket(r.sock)
    r.login()
    retr_whole(r, stored, wait=1.0)
    r.ok("QUIT")


# ---------------------------------------------------------------- UPDATE and locking

def test_dele_then_dropped_connection_deletes_nothing(srv):
    uids = deliver(srv, [make_msg("keep1"), make_msg("keep2")])
    r = Raw(srv.port("pop3"))
    r.login()
    r.ok("DELE 1")
    r.ok("DELE 2")
    r.close()
    time.sleep(0.3)
    assert srv.messages(ALICE) == uids
    # The lock went with the connection.
    p = pop(srv)
    assert p.stat()[0] == 2
    p.quit()
    assert re.search(r"pop3 disconnect user=alice@example.test deleted=0 "
                     r"discarded_deletions=2", srv.log())


def test_dele_then_quit_expunges(srv):
    uids = deliver(srv, [make_msg("q%d" % i) for i in range(4)])
    p = pop(srv)
    before = p.uidl()[1]
    p.dele(1)
    p.dele(3)
    resp = p.quit()
    assert b"2 messages deleted" in resp
    assert srv.messages(ALICE) == [uids[1], uids[3]]
    out = srv.cli("mailbox", "show", ALICE, "INBOX").stdout
    assert "uid=%d " % uids[0] not in out and "uid=%d " % uids[2] not in out
    p = pop(srv)
    after = p.uidl()[1]
    assert [a.split()[1] for a in after] == [before[1].split()[1], before[3].split()[1]]
    p.quit()
    assert re.search(r"pop3 logout user=alice@example.test deleted=2 kept=2", srv.log())
    assert re.search(r"pop3 login user=alice@example.test method=USER client=\[127\.0\.0\.1\]"
                     r" tls=no messages=4", srv.log())


def test_in_use(srv):
    deliver(srv, [make_msg("lock")])
    first = pop(srv)
    second = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=TIMEOUT)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto) as e:
        second.pass_("alice-pw")
    assert b"[IN-USE]" in e.value.args[0]
    # AUTH PLAIN too; another account is not affected.
    r = Raw(srv.port("pop3"))
    r.err("AUTH PLAIN " + plain(ALICE, "alice-pw"), "[IN-USE]")
    r.ok("AUTH PLAIN " + plain(BOB, "bob-pw"))
    r.ok("QUIT")
    # The wrong password still gets [AUTH], not [IN-USE].
    second.user(ALICE)
    with pytest.raises(poplib.error_proto) as e:
        second.pass_("wrong")
    assert b"[AUTH]" in e.value.args[0]
    first.quit()
    # Released at QUIT: the waiting session can log in now.
    second.user(ALICE)
    second.pass_("alice-pw")
    assert second.stat()[0] == 1
    second.quit()


def test_session_of_deleted_user_ends_and_leaves_kept_mail(srv):
    """`surat user del` while a POP3 session is open: its next command gets
    -ERR [SYS/PERM] and the session ends, as IMAP's does. Its DELE and QUIT
    must not expunge from the store moved aside for the admin, nor its lock
    keep a user made anew under the address out."""
    deliver(srv, [make_msg("one"), make_msg("two")])
    r = Raw(srv.port("pop3"))
    r.login()
    r.ok("DELE 1")
    srv.cli("user", "del", ALICE)
    r.err("DELE 2", "[SYS/PERM]")
    assert r.closed()
    kept = glob.glob(os.path.join(srv.data_dir, "deleted", ALICE + ".*", "index.db"))
    assert len(kept) == 1
    with contextlib.closing(sqlite3.connect(kept[0])) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    srv.add_user(ALICE, "new-pw")
    p = pop(srv, pw="new-pw")
    assert p.stat()[0] == 0
    p.quit()


def test_uidl_stable_across_sessions(srv):
    deliver(srv, [make_msg("u1"), make_msg("u2")])
    p = pop(srv)
    a = p.uidl()[1]
    p.quit()
    deliver(srv, [make_msg("u3")])
    p = pop(srv)
    b = p.uidl()[1]
    p.quit()
    assert b[:2] == a
    assert len(set(x.split()[1] for x in b)) == 3


def test_inbox_renamed_under_a_session(make_surat):
    """IMAP RENAME INBOX gives a new, empty INBOX whose UIDs start at 1
    again. A POP3 session of the old one must not expunge the new mail
    that has its DELE'd UIDs, and no UIDL may come back."""
    import imaplib
    s = make_surat(extra={"allow_plaintext_auth": "yes"}, kinds=POP_KINDS + ("imap",),
                   populated=POPULATED)
    c = imaplib.IMAP4("127.0.0.1", s.port("imap"))
    c.login(ALICE, "alice-pw")
    for sj in ("old-1", "old-2"):
        assert c.append("INBOX", None, None, make_msg(sj))[0] == "OK"
    r = Raw(s.port("pop3"))
    r.login()
    r.ok("UIDL")
    old = set(l.split()[1] for l in r.multi().splitlines())
    r.ok("DELE 1")
    assert c.rename("INBOX", "Old")[0] == "OK"
    for sj in ("new-1", "new-2"):
        assert c.append("INBOX", None, None, make_msg(sj))[0] == "OK"
    r.err("RETR 2", "[SYS/PERM]")
    r.err("QUIT", "[SYS/TEMP]")
    assert c.select("INBOX")[1] == [b"2"]
    assert b"Subject: new-1" in c.uid("FETCH", "1", "(BODY.PEEK[HEADER])")[1][0][1]
    assert c.select("Old")[1] == [b"2"]
    # The old mail moved back gets new UIDs, so new UIDLs: none is reused.
    assert c.uid("MOVE", "1:*", "INBOX")[0] == "OK"
    c.logout()
    p = pop(s)
    new = [l.split()[1] for l in p.uidl()[1]]
    p.quit()
    assert len(new) == 4 and len(set(new)) == 4 and not (set(new) & old), (old, new)


def test_snapshot_at_login(srv):
    deliver(srv, [make_msg("s1")])
    p = pop(srv)
    deliver(srv, [make_msg("s2")])
    # Mail that arrives during the session is not in this maildrop.
    assert p.stat()[0] == 1
    p.dele(1)
    p.quit()
    assert len(srv.messages(ALICE)) == 1
    p = pop(srv)
    assert p.stat()[0] == 1
    assert b"Subject: s2" in b"\r\n".join(p.retr(1)[1])
    p.quit()


def test_message_file_missing_on_disk_is_logged(srv):
    """A message whose file is lost (a damaged or partly restored store) is
    answered as one expunged meanwhile, but the admin must be told."""
    uids = deliver(srv, [make_msg("lost"), make_msg("kept")])
    files = glob.glob(os.path.join(srv.data_dir, "mail", "example.test", "alice", "msg", "*",
                                   "*"))
    lost = [f for f in files if b"Subject: lost" in open(f, "rb").read()]
    assert len(files) == 2 and len(lost) == 1
    os.unlink(lost[0])
    r = Raw(srv.port("pop3"))
    r.login()
    r.err("RETR 1", "removed")
    r.ok("RETR 2")
    assert b"Subject: kept" in r.multi()
    r.ok("QUIT")
    assert re.search(r"store alice@example.test: INBOX UID %d: message file \S+ is missing"
                     % uids[0], srv.log()), srv.log()[-2000:]


def test_busy_reply(make_surat):
    s = make_surat(extra={"allow_plaintext_auth": "yes", "max_connections_per_ip": "1"},
                   kinds=POP_KINDS, populated=POPULATED)
    # start()'s probes of the ports count until the daemon has seen them close.
    deadline = time.time() + 10
    while True:
        try:
            r = Raw(s.port("pop3"))
            break
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    c = socket.create_connection(("127.0.0.1", s.port("pop3")), timeout=TIMEOUT)
    data = b""
    while not data.endswith(b"\r\n"):
        d = c.recv(100)
        if not d:
            break
        data += d
    assert data == b"-ERR [SYS/TEMP] Too many connections\r\n"
    c.close()
    r.ok("QUIT")


def test_graceful_stop_with_session(srv):
    deliver(srv, [make_msg("stop")])
    r = Raw(srv.port("pop3"))
    r.login()
    r.ok("DELE 1")
    assert srv.stop() == 0
    assert b"[SYS/TEMP] Server shutting down" in r.line()
    assert r.closed()
    srv.start()
    # Not a QUIT: nothing was deleted.
    assert len(srv.messages(ALICE)) == 1


# ---------------------------------------------------------------- real clients

def fetchmail(s, tmp, keep, mode="stls"):
    home = os.path.join(tmp, "fm-home")
    os.makedirs(home, exist_ok=True)
    out = os.path.join(tmp, "fetched.mbox")
    rc = os.path.join(home, "fetchmailrc")
    if mode == "stls":
        port, ssl_opts = s.port("pop3"), "sslproto 'tls1.2+' no sslcertck"
    else:
        port, ssl_opts = s.port("pop3s"), "ssl no sslcertck"
    with open(rc, "w") as f:
        f.write('poll 127.0.0.1 service %d protocol pop3 timeout 20\n'
                '  user "%s" there with password "alice-pw" is "%s" here\n'
                '  %s %s fetchall mda "cat >> %s"\n'
                % (port, ALICE, os.environ.get("USER", "root"), ssl_opts,
                   "keep" if keep else "nokeep", out))
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=home, FETCHMAILHOME=home)
    r = subprocess.run(["fetchmail", "-f", rc, "--nodetach", "--nosyslog", "-v",
                        "--pidfile", os.path.join(home, "pid")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out, "rb") as f:
        return f.read(), r.stdout + r.stderr


def test_fetchmail_keep_then_delete(srv, tmp_path):
    subjects = ["fm-%d" % i for i in range(5)]
    deliver(srv, [make_msg(sj, body=".dotted\r\nplain\r\n") for sj in subjects])
    data, log = fetchmail(srv, str(tmp_path), keep=True)
    for sj in subjects:
        assert data.count(("Subject: %s\r\n" % sj).encode()) == 1 or \
            data.count(("Subject: %s\n" % sj).encode()) == 1, log
    assert b".dotted" in data
    assert len(srv.messages(ALICE)) == 5
    # Without --keep (over POP3S this time): all fetched, then the mailbox is empty.
    os.remove(os.path.join(str(tmp_path), "fetched.mbox"))
    data, log = fetchmail(srv, str(tmp_path), keep=False, mode="pop3s")
    for sj in subjects:
        assert ("Subject: %s" % sj).encode() in data, log
    assert srv.messages(ALICE) == []
    assert re.search(r"pop3 logout user=alice@example.test deleted=5 kept=0", srv.log())


def test_curl(srv):
    uids = deliver(srv, [make_msg("curl-1"), make_msg("curl-2", body=".dot\r\nx\r\n")])
    base = "pop3://127.0.0.1:%d/" % srv.port("pop3")
    # curl prefers SASL PLAIN with an initial response when it is offered.
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "-u", ALICE + ":alice-pw", base],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    sizes = [len(srv.message(ALICE, u)) for u in uids]
    assert r.stdout == b"1 %d\r\n2 %d\r\n" % tuple(sizes)
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "-u", ALICE + ":alice-pw",
                        base + "2"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == srv.message(ALICE, uids[1])
    # STLS with curl, then a custom command.
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--ssl-reqd", "-k", "-u",
                        ALICE + ":alice-pw", "-X", "UIDL", base],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2
    assert "method=PLAIN" in srv.log()
    assert srv.messages(ALICE) == uids


# ---------------------------------------------------------------- login_timeout

def capa_until_err(r, t0, limit=8):
    """Send CAPA every 0.5 s until an -ERR ends the session; returns that
    line and its time (from t0), after checking the close."""
    n = 0
    while time.monotonic() - t0 < limit:
        line = r.cmd("CAPA")
        if line.startswith(b"-ERR"):
            at = time.monotonic() - t0
            assert r.closed(), r.buf
            assert n >= 3, n
            return line, at
        assert line.startswith(b"+OK"), line
        r.multi()
        n += 1
        time.sleep(0.5)
    raise AssertionError("still open after %ds" % limit)


def test_login_timeout_ends_chatty_session(make_surat):
    # Each CAPA restarts the idle timer; login_timeout runs from the accept.
    s = make_surat(extra={"allow_plaintext_auth": "yes", "login_timeout": "2s"},
                   kinds=POP_KINDS, populated=POPULATED)
    t0 = time.monotonic()
    line, at = capa_until_err(Raw(s.port("pop3")), t0)
    assert line == b"-ERR Login timeout" and 1.8 <= at <= 4, (line, at)
    # Over implicit TLS the handshake counts too.
    t0 = time.monotonic()
    line, at = capa_until_err(Raw(s.port("pop3s"), tls=True), t0)
    assert line == b"-ERR Login timeout" and 1.8 <= at <= 4, (line, at)
    assert "pop3 login timeout client=[127.0.0.1]" in s.log()


def test_login_timeout_in_auth_and_password_check(make_surat):
    s = make_surat(extra={"allow_plaintext_auth": "yes", "login_timeout": "2s",
                          "auth.fail_delay": "2s"}, kinds=POP_KINDS, populated=POPULATED)
    t0 = time.monotonic()
    # Waiting for the AUTH PLAIN response line.
    a = Raw(s.port("pop3"))
    assert a.cmd("AUTH PLAIN") == b"+ "
    # A failed PASS answered (after auth.fail_delay) past the deadline: the
    # answer first, then the end.
    b = Raw(s.port("pop3"))
    b.ok("USER " + ALICE)
    time.sleep(1)
    b.send("PASS wrong\r\n")
    assert a.line() == b"-ERR Login timeout"
    assert time.monotonic() - t0 <= 4
    assert a.closed()
    assert b.line() == b"-ERR [AUTH] Authentication failed"
    assert b.line() == b"-ERR Login timeout"
    assert b.closed()


def test_login_timeout_spares_logged_in_session(make_surat):
    s = make_surat(extra={"allow_plaintext_auth": "yes", "login_timeout": "2s"},
                   kinds=POP_KINDS, populated=POPULATED)
    r = Raw(s.port("pop3"))
    r.login()
    time.sleep(3)
    r.ok("NOOP")
    r.ok("STAT")
    r.ok("QUIT")
    assert "login timeout" not in s.log()
