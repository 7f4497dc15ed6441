"""SMTP in: delivery through every listener, with real clients.

Covers: MX delivery read back byte-exact, STARTTLS + AUTH PLAIN/LOGIN on
submission, implicit TLS on submissions, SMTPUTF8, several recipients,
alias / catch-all / +tag, BDAT, pipelining, STARTTLS injection, AUTH
initial response and cancel, swaks on the three listeners, the headers
added on submission (and not on MX), the access log, the queue CLI and a
graceful stop with a client connected.

The raw-socket client (Raw) and the helpers here are used by the other
test_smtp*.py files too.
"""
import base64
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import (BIN, KINDS, Surat, client_tls, free_port, pipelined_over_starttls,
                      rss_growth_while_flooding, send_all_counted)

TIMEOUT = 10        # every socket operation
TEST_LIMIT = 90     # every test, whole


# ---------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def bounded(request):
    """Fail a test that runs longer than TEST_LIMIT (or its module's own)
    instead of hanging."""
    limit = getattr(request.module, "TEST_LIMIT", TEST_LIMIT)

    def expired(signum, frame):
        raise TimeoutError("test took longer than %ds" % limit)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def populated_data(tmp_path_factory, tls_files):
    """A data_dir with domain example.test and users alice and bob, made
    once: copying it is much cheaper than three CLI runs per test."""
    d = str(tmp_path_factory.mktemp("smtp-template"))
    t = Surat(d, tls_files)
    t.add_domain("example.test")
    t.add_user("alice@example.test", "alice-pw")
    t.add_user("bob@example.test", "bob-pw")
    return t.data_dir


@pytest.fixture
def make_populated(make_surat, populated_data):
    """Like make_surat, with example.test, alice and bob already there."""
    def make(extra=None, **kw):
        s = make_surat(extra=extra, start=False, **kw)
        shutil.copytree(populated_data, s.data_dir)
        return s.start()
    return make


@pytest.fixture
def surat(make_populated):
    """Overrides conftest's: the same daemon and users, made faster."""
    return make_populated()


# ---------------------------------------------------------------- helpers

class Raw:
    """A line-level SMTP client on a plain socket: sends bytes as given
    and reads whole (multi-line) replies, always with a timeout."""

    def __init__(self, port, tls=False, timeout=TIMEOUT, source=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        if tls:
            self.sock = client_tls().wrap_socket(self.sock)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; unparsed: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """(code, [text lines]) of the next reply."""
        lines = []
        while True:
            line = self._line()
            assert re.match(r"^\d{3}[ -]", line) or re.match(r"^\d{3}$", line), line
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def expect(self, line, code, enh=None):
        c, t = self.cmd(line)
        assert c == code, (line, c, t)
        if enh:
            assert t[-1].startswith(enh + " "), (line, c, t)
        return t

    def greet(self, name="client.test"):
        c, t = self.reply()
        assert c == 220, t
        return self.expect("EHLO " + name, 250)

    def starttls(self):
        self.expect("STARTTLS", 220, "2.0.0")
        assert self.buf == b""
        self.sock = client_tls().wrap_socket(self.sock)

    def auth(self, user, pw):
        ir = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        self.expect("AUTH PLAIN " + ir, 235, "2.7.0")

    def in_data(self, data, frm="s@remote.test", rcpt="alice@example.test"):
        """MAIL, RCPT and DATA, then data sent as it is (the dot is the caller's)."""
        self.expect("MAIL FROM:<%s>" % frm, 250)
        self.expect("RCPT TO:<%s>" % rcpt, 250)
        self.expect("DATA", 354)
        self.send(data)

    def ended(self, data):
        """Send data (a message's end, a BDAT chunk): (code, enhanced code) of the reply."""
        self.send(data)
        c, t = self.reply()
        return c, t[-1][:5]

    def bdat_last(self, body, frm="s@remote.test", rcpt="alice@example.test"):
        """MAIL, RCPT and body in one BDAT LAST: (code, enhanced code)."""
        self.expect("MAIL FROM:<%s>" % frm, 250)
        self.expect("RCPT TO:<%s>" % rcpt, 250)
        return self.ended(b"BDAT %d LAST\r\n" % len(body) + body)

    def closed(self, timeout=TIMEOUT):
        """True if the server closes the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def msg(subject="test", frm="sender@remote.test", to="alice@example.test", body="Hello.\r\n",
        extra=""):
    """A small RFC 5322 message as bytes, CRLF line ends."""
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n%s\r\n%s" %
            (frm, to, subject, extra, body)).encode()


# The fields submission adds to a message that has neither (RFC 6409 8.2, 8.3).
SUBMISSION_ADDED = (rb"Message-ID: <[0-9a-f]{32}@mx\.example\.test>\r\n"
                    rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n")


def submitted_end(body):
    """A pattern for how a stored or queued copy of body, submitted without
    Message-ID: or Date:, ends: both added at the end of its header, right
    before the empty line (search() it: it is anchored at the end)."""
    head, sep, tail = body.partition(b"\r\n\r\n")
    assert sep, body
    return re.compile(re.escape(head + b"\r\n") + SUBMISSION_ADDED + re.escape(b"\r\n" + tail) +
                      rb"\Z")


def split_stored(stored):
    """Split a stored message into (delivered_to, received, rest), past the
    Return-Path: of final delivery (RFC 5321 4.4). received is the whole
    Received: header with its continuation lines."""
    m = re.match(rb"Return-Path: <[^\r\n]*>\r\nDelivered-To: ([^\r\n]*)\r\n"
                 rb"(Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)", stored)
    assert m, stored[:300]
    return m.group(1).decode(), m.group(2).decode(), stored[m.end():]


def stored_one(s, addr, n=1):
    """The single newest message of addr once it has n messages."""
    uids = s.wait_messages(addr, n)
    assert len(uids) == n, uids
    return s.message(addr, uids[-1])


def queue_ids(s):
    r = s.cli("queue", "list")
    return re.findall(r"^([0-9a-f]{16}(?:-[bd]|-s[0-9a-f]*)?)\s", r.stdout, re.M)


def wait_queue_empty(s, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not queue_ids(s):
            return
        time.sleep(0.1)
    raise AssertionError("queue not empty:\n" + s.cli("queue", "list").stdout)


def access_lines(s):
    return [l for l in s.log().splitlines() if " access " in l or l.startswith("access ")]


def smtp(s, kind="smtp"):
    c = smtplib.SMTP("127.0.0.1", s.port(kind), timeout=TIMEOUT)
    c.ehlo("client.test")
    return c


def submission(s, user="alice@example.test", pw="alice-pw"):
    c = smtp(s, "submission")
    c.starttls(context=client_tls())
    c.ehlo("client.test")
    c.login(user, pw)
    return c


def swaks(*args, timeout=30):
    return subprocess.run(["swaks", "--timeout", "10", "--helo", "client.test"] + list(args),
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- delivery

def test_mx_delivery_byte_exact(surat):
    body = msg("byte exact", body="Line one.\r\n.leading dot\r\n..two dots\r\n\r\nend\r\n")
    with smtp(surat) as c:
        refused = c.sendmail("sender@remote.test", ["alice@example.test"], body)
        assert refused == {}
    stored = stored_one(surat, "alice@example.test")
    dt, received, rest = split_stored(stored)
    assert dt == "alice@example.test"
    assert rest == body
    assert received.startswith("Received: from client.test (localhost [127.0.0.1])")
    assert "by mx.example.test (surat) with ESMTP " in received
    assert "for <alice@example.test>" in received
    # MX: no Message-ID or Date of ours.
    assert b"Message-ID:" not in stored and b"Date:" not in stored
    assert surat.messages("bob@example.test") == []


def test_batched_delivery_keeps_arrival_order(surat):
    """Local deliveries to one mailbox are gathered into batches; UIDs still
    follow the order in which the messages were accepted."""
    n = 30
    with smtp(surat) as c:
        for i in range(n):
            assert c.sendmail("s@remote.test", ["alice@example.test"],
                              msg("order %02d" % i)) == {}
    uids = surat.wait_messages("alice@example.test", n)
    order = [int(re.search(rb"Subject: order (\d+)", surat.message("alice@example.test", u))
                 .group(1)) for u in sorted(uids)]
    assert order == list(range(n))


def test_batched_delivery_order_across_batches(make_populated):
    """Many more messages than one batch takes, from parallel connections:
    each connection's messages still get rising UIDs (each was acknowledged
    before the next was sent), so the oldest go first, batch after batch."""
    import concurrent.futures
    import imaplib
    surat = make_populated(kinds=KINDS + ("imaps",))
    conns, each = 8, 20     # 160 messages: three batches at least (64 at most each)

    def send(k):
        with smtp(surat) as c:
            for i in range(each):
                assert c.sendmail("s@remote.test", ["alice@example.test"],
                                  msg("par %d %02d" % (k, i))) == {}

    with concurrent.futures.ThreadPoolExecutor(conns) as ex:
        list(ex.map(send, range(conns)))
    surat.wait_messages("alice@example.test", conns * each, timeout=60)
    # The subjects in UID order, in one FETCH.
    m = imaplib.IMAP4_SSL("127.0.0.1", surat.port("imaps"), ssl_context=client_tls(),
                          timeout=TIMEOUT)
    m.login("alice@example.test", "alice-pw")
    m.select("INBOX", readonly=True)
    typ, data = m.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    m.logout()
    assert typ == "OK", data
    got = []
    for part in data:
        if isinstance(part, tuple):
            uid = int(re.search(rb"UID (\d+)", part[0]).group(1))
            got.append((uid, re.search(rb"Subject: par (\d+) (\d+)", part[1]).groups()))
    assert len(got) == conns * each, len(got)
    seen = {}
    for _, (k, i) in sorted(got):
        seen.setdefault(int(k), []).append(int(i))
    assert seen == {k: list(range(each)) for k in range(conns)}


def test_large_message_beside_small_ones(surat):
    """A message over 1 MiB is spooled in a job of its own, beside the rounds
    that write small ones: all arrive whole."""
    import concurrent.futures
    big = msg("big one", body=("b" * 998 + "\r\n") * 3000)     # about 3 MB

    def send(k):
        with smtp(surat) as c:
            if k == 0:
                assert c.sendmail("s@remote.test", ["bob@example.test"], big) == {}
            else:
                for i in range(5):
                    assert c.sendmail("s@remote.test", ["alice@example.test"],
                                      msg("small %d %d" % (k, i))) == {}

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(send, range(4)))
    surat.wait_messages("alice@example.test", 15)
    stored = stored_one(surat, "bob@example.test")
    assert stored.endswith(big)


def fts_counts(surat, user):
    """[queued for the full-text index, indexed] of user@example.test's mailbox;
    [0, 0] while it is being created."""
    import sqlite3
    db = os.path.join(surat.data_dir, "mail", "example.test", user, "index.db")
    if not os.path.exists(db):
        return [0, 0]
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return [con.execute("SELECT count(*) FROM %s" % t).fetchone()[0]
                for t in ("fts_pending", "fts_content")]
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise
        return [0, 0]
    finally:
        con.close()


def test_full_text_index_filled_when_deliveries_pause(surat):
    """Delivery only queues a message for the full-text index (unit test
    test_fts_idle); once the mailbox has had no delivery for a second, the
    daemon indexes it by itself, with no search to prompt it."""
    with smtp(surat) as c:
        for i in range(5):
            assert c.sendmail("s@remote.test", ["alice@example.test"],
                              msg("pause %d" % i, body="axolotl%d\r\n" % i)) == {}
    surat.wait_messages("alice@example.test", 5)

    def counts():
        return fts_counts(surat, "alice")

    assert sum(counts()) == 5       # queued or indexed, each message once
    deadline = time.time() + 15
    while counts() != [0, 5] and time.time() < deadline:
        time.sleep(0.2)
    assert counts() == [0, 5]


def test_full_text_index_waits_while_mail_comes_in(surat):
    """Mail first: while new messages keep coming in (here one every ~20 ms),
    the background indexer leaves even a mailbox idle for seconds alone (its
    page writes would slow acceptance); once the mail stops, it catches up
    by itself."""

    def counts():
        return fts_counts(surat, "alice")

    # Mail that never pauses still lets the indexer run after 10 s: a fresh
    # start, so that this test knows when that can first happen.
    surat.stop()
    started = time.monotonic()
    surat.start()
    # Three messages for alice, then mail for bob without a break until alice's
    # mailbox has been idle for 3 s, well past the indexer's 1 s: still not
    # indexed. A gap is measured from before the previous message's send.
    seen, delivered, max_gap = [], None, 0.0
    with smtp(surat) as c:
        for i in range(3):
            assert c.sendmail("s@remote.test", ["alice@example.test"],
                              msg("wait %d" % i, body="pangolin%d\r\n" % i)) == {}
        before_prev = time.monotonic()
        deadline = before_prev + 20
        while time.monotonic() < deadline:
            before = time.monotonic()
            assert c.sendmail("s@remote.test", ["bob@example.test"], msg("flow")) == {}
            now = time.monotonic()
            max_gap, before_prev = max(max_gap, now - before_prev), before
            seen.append(counts())
            if delivered is None and seen[-1][0] == 3:
                delivered = now
            if delivered is not None and now - delivered >= 3:
                break
            time.sleep(0.02)
    assert delivered is not None, seen
    flow_end = time.monotonic()
    deadline = time.time() + 15
    while counts() != [0, 3] and time.time() < deadline:
        time.sleep(0.2)
    assert counts() == [0, 3]
    if max_gap >= 0.2 or flow_end - started >= 9.5:
        pytest.skip("the test machine paused the mail for %.2f s, or the flow outlasted "
                    "the indexer's 10 s limit (%.1f s)" % (max_gap, flow_end - started))
    assert all(x[1] == 0 for x in seen), seen


def test_submission_starttls_auth_plain(surat):
    c = smtp(surat, "submission")
    assert c.has_extn("starttls")
    c.starttls(context=client_tls())
    c.ehlo("client.test")
    assert "PLAIN" in c.esmtp_features["auth"].split()
    c.user, c.password = "alice@example.test", "alice-pw"
    code, text = c.auth("PLAIN", c.auth_plain, initial_response_ok=True)
    assert code == 235 and text.startswith(b"2.7.0"), (code, text)
    body = msg("plain", frm="alice@example.test", to="bob@example.test")
    assert c.sendmail("alice@example.test", ["bob@example.test"], body) == {}
    c.quit()
    dt, received, rest = split_stored(stored_one(surat, "bob@example.test"))
    assert dt == "bob@example.test"
    assert submitted_end(body).search(rest), rest


def test_submission_starttls_auth_login(surat):
    c = smtp(surat, "submission")
    c.starttls(context=client_tls())
    c.ehlo("client.test")
    c.user, c.password = "bob@example.test", "bob-pw"
    code, text = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
    assert code == 235 and text.startswith(b"2.7.0"), (code, text)
    body = msg("login", frm="bob@example.test", to="alice@example.test")
    assert c.sendmail("bob@example.test", ["alice@example.test"], body) == {}
    c.quit()
    stored = stored_one(surat, "alice@example.test")
    assert submitted_end(body).search(stored), stored


def test_submission_wrong_password(surat):
    c = smtp(surat, "submission")
    c.starttls(context=client_tls())
    c.ehlo("client.test")
    with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
        c.login("alice@example.test", "wrong")
    assert ei.value.smtp_code == 535 and ei.value.smtp_error.startswith(b"5.7.8")
    # Unknown user: the same answer.
    with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
        c.login("nobody@example.test", "wrong")
    assert ei.value.smtp_code == 535 and ei.value.smtp_error.startswith(b"5.7.8")
    c.login("alice@example.test", "alice-pw")
    c.quit()


def test_submissions_implicit_tls(surat):
    with smtplib.SMTP_SSL("127.0.0.1", surat.port("submissions"), context=client_tls(),
                          timeout=TIMEOUT) as c:
        c.ehlo("client.test")
        assert not c.has_extn("starttls")
        assert "LOGIN" in c.esmtp_features["auth"].split()
        code, text = c.docmd("STARTTLS")
        assert code == 503 and text.startswith(b"5.5.1"), (code, text)
        c.login("alice@example.test", "alice-pw")
        body = msg("implicit", frm="alice@example.test", to="bob@example.test")
        assert c.sendmail("alice@example.test", ["bob@example.test"], body) == {}
    stored = stored_one(surat, "bob@example.test")
    assert submitted_end(body).search(stored), stored
    _, received, _ = split_stored(stored)
    assert "with ESMTPSA" in received


def test_smtputf8(surat):
    user = "jös\u00e9@example.test"
    surat.add_user(user, "utf8-pw")
    body = ("From: sender@remote.test\r\nTo: %s\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"
            "Gr\u00fc\u00dfe\r\n" % user).encode()
    with smtp(surat) as c:
        assert c.has_extn("smtputf8")
        assert c.sendmail("s\u00e9nder@remote.test", [user], body,
                          mail_options=["SMTPUTF8"]) == {}
    stored = stored_one(surat, user)
    dt, received, rest = split_stored(stored)
    assert dt == user
    assert rest == body
    assert "with UTF8SMTP " in received


def test_smtputf8_required_for_utf8_address(surat):
    user = "jös\u00e9@example.test"
    surat.add_user(user, "utf8-pw")
    r = Raw(surat.port("smtp"))
    r.greet()
    # Without SMTPUTF8 a UTF-8 path is refused (RFC 6531 3.4: 553 5.6.7).
    r.expect("MAIL FROM:<s\u00e9nder@remote.test>", 553, "5.6.7")
    r.expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
    r.expect("RCPT TO:<%s>" % user, 553, "5.6.7")
    r.expect("QUIT", 221)
    r.close()


def test_multi_recipient_one_copy_each(surat):
    surat.add_user("carol@example.test", "carol-pw")
    rcpts = ["alice@example.test", "bob@example.test", "carol@example.test",
             "Alice@Example.TEST"]
    body = msg("multi", to="alice@example.test, bob@example.test")
    with smtp(surat) as c:
        assert c.sendmail("sender@remote.test", rcpts, body) == {}
    for u in ("alice@example.test", "bob@example.test", "carol@example.test"):
        stored = stored_one(surat, u)
        dt, received, rest = split_stored(stored)
        assert dt == u
        assert rest == body
        # Several recipients: no "for <...>" naming one of them.
        assert "for <" not in received
    wait_queue_empty(surat)
    time.sleep(0.3)
    for u in ("alice@example.test", "bob@example.test", "carol@example.test"):
        assert len(surat.messages(u)) == 1, u


def test_alias_catchall_plus(surat):
    surat.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    surat.cli("alias", "add", "@example.test", "bob@example.test")
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["team@example.test"], msg("to team")) == {}
    a = stored_one(surat, "alice@example.test")
    b = stored_one(surat, "bob@example.test")
    assert a.endswith(msg("to team")) and b.endswith(msg("to team"))
    assert split_stored(a)[0] == "alice@example.test"
    assert split_stored(b)[0] == "bob@example.test"

    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["whoever@example.test"], msg("catch-all")) == {}
    b2 = stored_one(surat, "bob@example.test", 2)
    assert b2.endswith(msg("catch-all"))
    assert len(surat.messages("alice@example.test")) == 1

    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["alice+tag@example.test"], msg("tagged")) == {}
    a2 = stored_one(surat, "alice@example.test", 2)
    assert a2.endswith(msg("tagged"))
    assert split_stored(a2)[0] == "alice@example.test"
    # team + alice in one transaction: alice still gets one copy.
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["team@example.test", "alice@example.test"],
                          msg("dedup")) == {}
    stored_one(surat, "alice@example.test", 3)
    stored_one(surat, "bob@example.test", 3)
    wait_queue_empty(surat)
    assert len(surat.messages("alice@example.test")) == 3
    assert len(surat.messages("bob@example.test")) == 3


def test_plus_tag_without_catchall(surat):
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["bob+lists@example.test"], msg("tag")) == {}
    assert split_stored(stored_one(surat, "bob@example.test"))[0] == "bob@example.test"


# ---------------------------------------------------------------- raw protocol

def test_bdat_chunks(surat):
    r = Raw(surat.port("smtp"))
    ehlo = r.greet()
    assert "CHUNKING" in ehlo
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    part1 = b"From: s@remote.test\r\nSubject: bdat\r\n\r\n"
    part2 = b"line with\r\n.a dot that is not stuffed\r\n"
    r.send(b"BDAT %d\r\n" % len(part1) + part1)
    c, t = r.reply()
    assert c == 250, t
    r.send(b"BDAT %d\r\n" % len(part2) + part2)
    c, t = r.reply()
    assert c == 250, t
    r.send(b"BDAT 0 LAST\r\n")
    c, t = r.reply()
    assert c == 250 and t[-1].startswith("2.0.0"), t
    # A second one in the same session, one LAST chunk split across writes.
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    whole = b"Subject: bdat2\r\n\r\nbody\r\n"
    r.send(b"BDAT %d LAST\r\n" % len(whole) + whole[:5])
    time.sleep(0.1)
    r.send(whole[5:])
    c, t = r.reply()
    assert c == 250, t
    # DATA after BDAT in one transaction is refused; BDAT with no RCPT too.
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.send(b"BDAT 4 LAST\r\nabcd")
    c, t = r.reply()
    assert c == 554 and t[-1].startswith("5.5.1"), t
    r.expect("RSET", 250)
    r.expect("QUIT", 221)
    r.close()
    uids = surat.wait_messages("alice@example.test", 2)
    first = surat.message("alice@example.test", uids[0])
    second = surat.message("alice@example.test", uids[1])
    assert split_stored(first)[2] == part1 + part2
    assert split_stored(second)[2] == whole
    time.sleep(0.3)
    assert len(surat.messages("alice@example.test")) == 2


def test_pipelining(surat):
    r = Raw(surat.port("smtp"))
    assert "PIPELINING" in r.greet()
    body = b"Subject: piped\r\n\r\nbody\r\n"
    r.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
           b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(5)] == [250, 250, 550, 250, 354]
    r.send(body + b".\r\nMAIL FROM:<s2@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
           b"DATA\r\n")
    codes = [r.reply()[0] for _ in range(4)]
    assert codes == [250, 250, 250, 354], codes
    r.send(b"Subject: second\r\n\r\nx\r\n.\r\nNOOP\r\nQUIT\r\n")
    assert [r.reply()[0] for _ in range(3)] == [250, 250, 221]
    assert r.closed()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == body
    uids = surat.wait_messages("bob@example.test", 2)
    # Two queue entries may be delivered in either order.
    got = sorted(split_stored(surat.message("bob@example.test", u))[2] for u in uids)
    assert got == sorted([body, b"Subject: second\r\n\r\nx\r\n"])


def test_replies_wait_for_a_slow_reader(make_populated):
    """A client that pipelines far more than it reads: replies the kernel
    cannot take at once wait in the server, and all arrive, in order, while
    the session goes on (not only when it ends)."""
    # Floods of NOOP: the junk-command limit is not what is tested here.
    surat = make_populated({"smtp.max_junk_commands": "1000000"})
    n = 100000
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", surat.port("smtp")))
    sender = threading.Thread(target=sock.sendall,
                              args=(b"EHLO slow.test\r\n" + b"NOOP\r\n" * n,))
    sender.start()
    time.sleep(1.0)     # the server runs ahead while nothing is read
    data = b""
    while data.count(b"250 2.0.0 ") < n:
        chunk = sock.recv(65536)
        assert chunk, "closed after %d replies" % data.count(b"250 2.0.0 ")
        data += chunk
    sender.join(TIMEOUT)
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"220 ")
    assert lines[-1] == b"" and lines[-2].startswith(b"250 2.0.0 "), lines[-3:]
    sock.sendall(b"QUIT\r\n")
    assert sock.recv(65536).startswith(b"221 ")
    sock.close()


def test_pipelining_without_reading_is_held_back(make_populated):
    """A client that pipelines endlessly and never reads: past a bounded
    backlog of unsent replies the server stops reading, so TCP makes the
    client wait; the server's memory does not grow with what it sends."""
    # Floods of NOOP: the junk-command limit is not what is tested here.
    surat = make_populated({"smtp.max_junk_commands": "1000000"})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", surat.port("smtp")))
    sent = [0]
    chunk = b"NOOP\r\n" * 10000

    def flood():
        try:
            while sent[0] < 200 * len(chunk):      # 12 MB of commands, 28 MB of replies
                sent[0] += sock.send(chunk)
        except OSError:
            pass
    t = threading.Thread(target=flood)
    t.start()
    # The server stops reading once its unsent replies pass the limit; how soon
    # depends on how fast it gets through the NOOPs (slow under ASan on a busy
    # machine), so look for 2 s without progress within 30 s.
    stalled, deadline = False, time.time() + 30
    while not stalled and t.is_alive() and time.time() < deadline:
        before = sent[0]
        time.sleep(2.0)
        after = sent[0]
        stalled = t.is_alive() and after == before    # (kernel buffers hold a few MB)
    sock.shutdown(socket.SHUT_RDWR)     # wakes the flood blocked in send()
    sock.close()
    t.join(TIMEOUT)
    assert stalled, "the server went on reading: %d then %d bytes" % (before, after)
    with smtplib.SMTP("127.0.0.1", surat.port("smtp"), timeout=TIMEOUT) as c:
        assert c.noop()[0] == 250      # and it serves on


def test_pipelining_over_starttls_without_reading_is_held_back(make_populated,
                                                               no_asan_quarantine):
    """As above, after STARTTLS: the TLS layer hands every reply on to the
    socket's buffer at once, so the backlog must be looked for there too, or
    the server reads on and keeps every reply (EHLO: 18 octets in, some 190 out)."""
    # Floods of EHLO: the junk-command limit is not what is tested here.
    surat = make_populated({"log.level": "info", "smtp.max_junk_commands": "1000000"})
    r = Raw(surat.port("smtp"))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    flood = b"EHLO client.test\r\n" * 150000     # 2.7 MB in, 28 MB of replies
    # (2.5 s: old surat took about 1 s per MB here, ASan on)
    grown, sent = rss_growth_while_flooding(surat, r.sock, flood, 2.5)
    assert grown < 12 * 1024, "RSS grew by %d KiB (%d octets sent)" % (grown, sent)
    with smtplib.SMTP("127.0.0.1", surat.port("smtp"), timeout=TIMEOUT) as c:
        assert c.noop()[0] == 250


def test_pipelined_backlog_over_starttls_arrives_whole_then_close_notify(make_populated):
    """Pipelined past the reply backlog over STARTTLS, then QUIT, read only
    afterwards: every reply arrives, in order, and the TLS stream ends with
    close_notify, not cut where the socket buffer under the TLS layer is
    bounded."""
    # Floods of EHLO: the junk-command limit is not what is tested here.
    surat = make_populated({"log.level": "info", "smtp.max_junk_commands": "1000000"})
    n = 3000        # some 600 KB of replies
    data, end = pipelined_over_starttls(surat.port("smtp"), b"220 ", b"STARTTLS\r\n", b"220 ",
                                        b"EHLO client.test\r\n" * n + b"QUIT\r\n")
    assert data.count(b"250 AUTH PLAIN LOGIN\r\n") == n, data.count(b"250 AUTH")
    assert data.endswith(b"250 AUTH PLAIN LOGIN\r\n221 2.0.0 Bye\r\n"), data[-200:]
    assert end == "close_notify", end


def test_replies_to_one_read_of_pipelined_commands_are_bounded(make_populated,
                                                              no_asan_quarantine):
    """A client that stops reading, lets the server's input fill, then reads
    its backlog: the input held back is then worked through at once, and the
    replies kept for one send(2) must stop at the same backlog limit, not
    grow to all 256 KiB of EHLOs' replies (some 5 MB) on top of it."""
    # Floods of EHLO: the junk-command limit is not what is tested here.
    surat = make_populated({"log.level": "info", "smtp.max_junk_commands": "1000000"})
    sock = socket.create_connection(("127.0.0.1", surat.port("smtp")), timeout=TIMEOUT)
    assert sock.recv(100).startswith(b"220 ")
    base = surat.rss_kib()
    sent = [0]
    n = 60000
    t = threading.Thread(target=send_all_counted,
                         args=(sock, b"EHLO client.test\r\n" * n, sent), daemon=True)
    t.start()
    time.sleep(1.5)     # the server stops reading, its input fills
    peak, got, carry, last = base, 0, b"", b"250 STARTTLS\r\n"
    while got < n:
        data = sock.recv(1 << 20)
        assert data, "closed after %d replies" % got
        data = carry + data
        got += data.count(last)
        carry = data[1 - len(last):]
        peak = max(peak, surat.rss_kib())
    t.join(TIMEOUT)
    sock.close()
    assert peak - base < 10 * 1024, "RSS grew by %d KiB" % (peak - base)


def test_starttls_pipelined_command_discarded(surat):
    """CVE-2011-0411: plaintext sent after STARTTLS must not be read as if
    it came over TLS."""
    r = Raw(surat.port("submission"))
    r.greet()
    r.send(b"STARTTLS\r\nAUTH PLAIN " +
           base64.b64encode(b"\0alice@example.test\0alice-pw") + b"\r\nNOOP\r\n")
    c, t = r.reply()
    assert c == 220, t
    # Nothing more in clear.
    time.sleep(0.3)
    r.sock.settimeout(0.3)
    try:
        extra = r.sock.recv(100)
    except socket.timeout:
        extra = b""
    assert extra == b"" and r.buf == b""
    r.sock.settimeout(TIMEOUT)
    r.sock = client_tls().wrap_socket(r.sock)
    # The first answer in TLS is the one to our EHLO: no 235, no 250 NOOP.
    r.send(b"EHLO client.test\r\n")
    c, t = r.reply()
    assert c == 250, (c, t)
    assert any(x.startswith("AUTH") for x in t)
    # Not authenticated.
    r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    r.auth("alice@example.test", "alice-pw")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("QUIT", 221)
    r.close()


def test_starttls_resets_session(surat):
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.starttls()
    # RFC 3207: EHLO needed again, transaction forgotten.
    c, t = r.cmd("RCPT TO:<alice@example.test>")
    assert c == 503, (c, t)
    r.expect("EHLO client.test", 250)
    r.expect("STARTTLS", 503, "5.5.1")
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    c, t = r.cmd("Subject: tls mx\r\n\r\nx\r\n.")
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    stored = stored_one(surat, "alice@example.test")
    _, received, _ = split_stored(stored)
    assert "with ESMTPS" in received and "TLSv1.3" in received, received


def test_auth_plain_initial_response_and_cancel(surat):
    r = Raw(surat.port("submission"))
    r.greet()
    r.starttls()
    r.greet_again = r.expect("EHLO client.test", 250)
    # Cancel a PLAIN exchange.
    r.expect("AUTH PLAIN", 334)
    r.expect("*", 501, "5.0.0")
    # Cancel a LOGIN exchange at the password.
    r.expect("AUTH LOGIN", 334)
    r.expect(base64.b64encode(b"alice@example.test").decode(), 334)
    r.expect("*", 501, "5.0.0")
    # Still not authenticated.
    r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    # Bad base64 (RFC 4954 4: 501 5.5.2).
    r.expect("AUTH PLAIN abc", 501, "5.5.2")
    r.expect("AUTH PLAIN", 334)
    r.expect("not base64!", 501, "5.5.2")
    # Not even base64 characters: a syntax error of the command.
    c, t = r.cmd("AUTH PLAIN !!!!")
    assert c == 501, (c, t)
    # Empty initial response "=" is an empty message: refused, not a crash.
    r.expect("AUTH PLAIN =", 501, "5.5.2")
    # Two-step PLAIN.
    r.expect("AUTH PLAIN", 334)
    r.expect(base64.b64encode(b"\0alice@example.test\0alice-pw").decode(), 235, "2.7.0")
    r.expect("AUTH PLAIN " + base64.b64encode(b"\0alice@example.test\0alice-pw").decode(),
             503, "5.5.1")
    r.expect("QUIT", 221)
    r.close()
    # PLAIN with the initial response, and an authzid equal to the user.
    r = Raw(surat.port("submissions"), tls=True)
    r.greet()
    r.expect("AUTH PLAIN " + base64.b64encode(
        b"bob@example.test\0bob@example.test\0bob-pw").decode(), 235, "2.7.0")
    r.expect("MAIL FROM:<bob@example.test>", 250)
    r.expect("QUIT", 221)
    r.close()
    # An authzid naming someone else is refused.
    r = Raw(surat.port("submissions"), tls=True)
    r.greet()
    r.expect("AUTH PLAIN " + base64.b64encode(
        b"alice@example.test\0bob@example.test\0bob-pw").decode(), 535, "5.7.8")
    r.expect("MAIL FROM:<bob@example.test>", 530, "5.7.0")
    r.close()


def test_auth_pipelined_with_transaction(surat):
    """AUTH waits for the password check; what was pipelined after it is
    answered afterwards, in order."""
    r = Raw(surat.port("submissions"), tls=True)
    r.greet()
    ir = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
    r.send("AUTH PLAIN %s\r\nMAIL FROM:<alice@example.test>\r\n"
           "RCPT TO:<bob@example.test>\r\nDATA\r\n" % ir)
    assert [r.reply()[0] for _ in range(4)] == [235, 250, 250, 354]
    r.send(b"From: alice@example.test\r\nSubject: piped auth\r\n\r\nx\r\n.\r\nQUIT\r\n")
    assert [r.reply()[0] for _ in range(2)] == [250, 221]
    r.close()
    assert b"Subject: piped auth" in stored_one(surat, "bob@example.test")


def test_8bit_and_no_final_crlf(surat):
    body8 = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" \
            "Gr\u00fc\u00dfe aus K\u00f6ln\r\n".encode()
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["alice@example.test"], body8,
                          mail_options=["BODY=8BITMIME"]) == {}
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == body8
    # BDAT: a message need not end in CRLF; it is stored as sent.
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    whole = b"Subject: no crlf\r\n\r\nlast line"
    r.send(b"BDAT %d LAST\r\n" % len(whole) + whole)
    c, t = r.reply()
    assert c == 250, t
    r.close()
    assert split_stored(stored_one(surat, "bob@example.test"))[2] == whole


def test_auth_login_initial_response(surat):
    r = Raw(surat.port("submissions"), tls=True)
    r.greet()
    r.expect("AUTH LOGIN " + base64.b64encode(b"alice@example.test").decode(), 334)
    r.expect(base64.b64encode(b"alice-pw").decode(), 235, "2.7.0")
    r.expect("QUIT", 221)
    r.close()


# ---------------------------------------------------------------- swaks

def test_swaks_mx(surat):
    r = swaks("--server", "127.0.0.1:%d" % surat.port("smtp"), "--from", "s@remote.test",
              "--to", "alice@example.test", "--header", "Subject: swaks mx")
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"Subject: swaks mx" in stored_one(surat, "alice@example.test")


def test_swaks_mx_starttls(surat):
    r = swaks("--server", "127.0.0.1:%d" % surat.port("smtp"), "-tls", "--from",
              "s@remote.test", "--to", "bob@example.test", "--header", "Subject: swaks tls")
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"Subject: swaks tls" in stored_one(surat, "bob@example.test")


def test_swaks_submission(surat):
    r = swaks("--server", "127.0.0.1:%d" % surat.port("submission"), "-tls",
              "--auth", "LOGIN", "--auth-user", "alice@example.test",
              "--auth-password", "alice-pw", "--from", "alice@example.test",
              "--to", "bob@example.test", "--header", "Subject: swaks sub",
              "--header", "From: alice@example.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"Subject: swaks sub" in stored_one(surat, "bob@example.test")


def test_swaks_submissions(surat):
    r = swaks("--server", "127.0.0.1:%d" % surat.port("submissions"), "--tls-on-connect",
              "--auth", "PLAIN", "--auth-user", "bob@example.test",
              "--auth-password", "bob-pw", "--from", "bob@example.test",
              "--to", "alice@example.test", "--header", "Subject: swaks subs",
              "--header", "From: bob@example.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"Subject: swaks subs" in stored_one(surat, "alice@example.test")


def test_swaks_bad_password_fails(surat):
    r = swaks("--server", "127.0.0.1:%d" % surat.port("submissions"), "--tls-on-connect",
              "--auth", "PLAIN", "--auth-user", "bob@example.test",
              "--auth-password", "nope", "--from", "bob@example.test",
              "--to", "alice@example.test")
    assert r.returncode != 0
    assert "535 5.7.8" in r.stdout


# ---------------------------------------------------------------- headers

def test_received_names_the_account_only_when_asked(make_populated):
    """submission.received_user = yes: our Received: says which account sent
    it, `(authenticated as USER)`; by default (off, as Postfix's
    smtpd_sasl_authenticated_header) it does not, ESMTPSA alone says so."""
    s = make_populated(extra={"submission.received_user": "yes"})
    body = b"From: alice@example.test\r\nSubject: named\r\n\r\nhi\r\n"
    with submission(s) as c:
        assert c.sendmail("alice@example.test", ["bob@example.test"], body) == {}
    _, received, _ = split_stored(stored_one(s, "bob@example.test"))
    assert "with ESMTPSA" in received
    assert "\r\n\t(authenticated as alice@example.test) id " in received, received


def test_submission_headers_added(surat):
    body = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: bare\r\n\r\nhi\r\n"
    with submission(surat) as c:
        assert c.sendmail("alice@example.test", ["bob@example.test"], body) == {}
    stored = stored_one(surat, "bob@example.test")
    dt, received, rest = split_stored(stored)
    assert "with ESMTPSA" in received
    assert "TLSv1.3" in received
    assert "authenticated" not in received     # (submission.received_user = no)
    # Added at the end of the header, right before the empty line.
    head, tail = body.split(b"\r\n\r\n")
    assert rest.startswith(head + b"\r\n") and rest.endswith(b"\r\n" + tail), rest
    added = rest[len(head) + 2:len(rest) - len(tail) - 2].decode()
    assert re.search(r"^Message-ID: <[0-9a-f]+@mx\.example\.test>\r$", added, re.M), added
    assert re.search(r"^Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r$", added,
                     re.M), added
    assert len(added.splitlines()) == 2, added


def test_submission_headers_kept(surat):
    body = (b"From: alice@example.test\r\nTo: bob@example.test\r\n"
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <mine@client.test>\r\n"
            b"Subject: complete\r\n\r\nhi\r\n")
    with submission(surat) as c:
        assert c.sendmail("alice@example.test", ["bob@example.test"], body) == {}
    stored = stored_one(surat, "bob@example.test")
    _, _, rest = split_stored(stored)
    assert rest == body
    assert stored.count(b"Message-ID:") == 1 and stored.count(b"Date:") == 1


def test_submission_headers_kept_any_spelling(surat):
    # Field names are case-insensitive, and the obsolete syntax allows
    # white space before the colon: neither gets a second copy.
    body = (b"From: alice@example.test\r\nmessage-id: <mine2@client.test>\r\n"
            b"DATE : Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: spelled\r\n\r\nhi\r\n")
    with submission(surat) as c:
        assert c.sendmail("alice@example.test", ["bob@example.test"], body) == {}
    assert split_stored(stored_one(surat, "bob@example.test"))[2] == body


def test_mx_headers_not_added(surat):
    body = b"From: s@remote.test\r\nSubject: no ids\r\n\r\nhi\r\n"
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["bob@example.test"], body) == {}
    stored = stored_one(surat, "bob@example.test")
    _, received, rest = split_stored(stored)
    assert rest == body
    assert "with ESMTP " in received and "ESMTPS" not in received


# ---------------------------------------------------------------- access log

def test_access_log(surat):
    body = (b"From: alice@example.test\r\nTo: bob@example.test\r\n"
            b"Message-ID: <log-1@client.test>\r\nSubject: logged one\r\n\r\nhi\r\n")
    with submission(surat) as c:
        assert c.sendmail("alice@example.test", ["bob@example.test"], body) == {}
    stored_one(surat, "bob@example.test")
    lines = [l for l in access_lines(surat) if "result=250" in l]
    assert len(lines) == 1, access_lines(surat)
    l = lines[0]
    assert "client=localhost[127.0.0.1]" in l
    assert "user=alice@example.test" in l
    assert "from=<alice@example.test>" in l
    assert "rcpts=<bob@example.test>" in l
    assert "msgid=<log-1@client.test>" in l
    assert 'subject="logged one"' in l
    assert "tls=TLSv1.3" in l
    m = re.search(r"size=(\d+)", l)
    assert m and int(m.group(1)) == len(body), l
    qid = re.search(r"access id=([0-9a-f]{16}) ", l).group(1)
    assert qid in surat.log().split(l)[0] + l

    # A refused transaction leaves a line too.
    with smtp(surat) as c:
        c.mail("s@remote.test")
        code, _ = c.rcpt("nobody@example.test")
        assert code == 550
        c.rset()
    with smtp(surat) as c:
        c.mail("s@remote.test")
        c.rcpt("alice@example.test")
        code, _ = c.data(b"Subject: bare\nlf\r\n")
        assert code == 554 or code == 550
    deadline = time.time() + 5
    while time.time() < deadline:
        refused = [l for l in access_lines(surat) if "access id=-" in l]
        if len(refused) >= 2:
            break
        time.sleep(0.05)
    assert len(refused) >= 2, access_lines(surat)
    assert any("from=<s@remote.test>" in l and "result=550" in l for l in refused), refused
    assert any("rcpts=<alice@example.test>" in l and re.search(r"result=55\d", l)
               for l in refused), refused
    # Exactly one accepted line per message: still one.
    assert len([l for l in access_lines(surat) if "result=250" in l]) == 1


# ---------------------------------------------------------------- bounces

def test_bounce_for_mail_loop(surat):
    """A message that already went through alice's mailbox fails for good
    (5.4.6) and the sender gets an RFC 3464 report with the original."""
    body = (b"Delivered-To: alice@example.test\r\nFrom: bob@example.test\r\n"
            b"Subject: looping\r\nMessage-ID: <loop-1@example.test>\r\n\r\nround and round\r\n")
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<bob@example.test> RET=FULL ENVID=env+2Done", 250)
    r.expect("RCPT TO:<alice@example.test> NOTIFY=FAILURE ORCPT=rfc822;alice@example.test",
             250)
    r.expect("DATA", 354)
    r.send(body + b".\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    bounce = stored_one(surat, "bob@example.test")
    assert bounce.startswith(b"Return-Path: <>\r\nDelivered-To: bob@example.test\r\n")
    head, _, report = bounce.partition(b"\r\n\r\n")
    assert b"From: Mail Delivery System <MAILER-DAEMON@mx.example.test>" in head
    assert b"Content-Type: multipart/report; report-type=delivery-status;" in head
    assert b"Auto-Submitted: auto-replied" in head
    # ENVID is xtext on the wire; the report carries it decoded (RFC 3464 2.2.1).
    assert b"Original-Envelope-Id: env-one\r\n" in report, report
    assert b"Final-Recipient: rfc822; alice@example.test\r\n" in report
    assert b"Original-Recipient: rfc822;alice@example.test\r\n" in report
    assert b"Action: failed\r\nStatus: 5.4.6\r\n" in report
    # The original as queued: our Received: line, then what was sent.
    orig = report.split(b"Content-Type: message/rfc822\r\n\r\n", 1)[1]
    assert orig.startswith(b"Received: from client.test (localhost [127.0.0.1])"), orig[:100]
    assert split_stored(b"Return-Path: <x>\r\nDelivered-To: x\r\n" + orig)[2].startswith(body)
    wait_queue_empty(surat)
    assert surat.messages("alice@example.test") == []
    assert len(surat.messages("bob@example.test")) == 1


def test_no_bounce_for_notify_never_or_null_sender(surat):
    loop = b"Delivered-To: alice@example.test\r\nSubject: loop\r\n\r\nx\r\n"
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<bob@example.test>", 250)
    r.expect("RCPT TO:<alice@example.test> NOTIFY=NEVER", 250)
    r.expect("DATA", 354)
    r.send(loop + b".\r\n")
    assert r.reply()[0] == 250
    r.expect("MAIL FROM:<>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(loop + b".\r\n")
    assert r.reply()[0] == 250
    # RET=HDRS: the report carries only the header.
    r.expect("MAIL FROM:<bob@example.test> RET=HDRS", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(loop.replace(b"loop", b"hdrs only") + b".\r\n")
    assert r.reply()[0] == 250
    r.expect("QUIT", 221)
    r.close()
    wait_queue_empty(surat)
    uids = surat.messages("bob@example.test")
    assert len(uids) == 1, uids
    report = surat.message("bob@example.test", uids[0])
    assert b"Content-Type: text/rfc822-headers\r\n\r\n" in report
    assert b"Subject: hdrs only\r\n" in report
    assert b"\r\nx\r\n" not in report.split(b"text/rfc822-headers")[1]
    assert surat.messages("alice@example.test") == []


# ---------------------------------------------------------------- queue CLI

def test_queue_cli_deferred_remote(make_populated):
    # Mail for remote.test goes to a closed loopback port: deferred.
    surat = make_populated(extra={"route.remote.test": "127.0.0.1:%d" % free_port()})
    body = msg("to the outside", frm="alice@example.test", to="someone@remote.test")
    with submission(surat) as c:
        assert c.sendmail("alice@example.test", ["someone@remote.test"], body) == {}
    deadline = time.time() + 10
    while time.time() < deadline:
        out = surat.cli("queue", "list").stdout
        if "deferred" in out:
            break
        time.sleep(0.1)
    ids = queue_ids(surat)
    assert len(ids) == 1, out
    qid = ids[0]
    assert "1 message in the queue" in out, out
    # Deferred, with the reason (no outbound transport, or no DNS here).
    assert re.search(r"<someone@remote\.test>\s+remote\s+deferred\s+attempts=1\s+next=\S+\s+"
                     r'last="4\.\d\.\d+ ', out), out
    show = subprocess.run([BIN, "-c", surat.conf, "queue", "show", qid], capture_output=True,
                          timeout=30)
    assert show.returncode == 0, show.stderr
    show = show.stdout
    assert b"from=<alice@example.test>" in show
    assert b"user=alice@example.test" in show
    assert submitted_end(body).search(show), show
    r = surat.cli("queue", "show", "0123456789abcdef", check=False)
    assert r.returncode != 0
    r = surat.cli("queue", "show", "../../etc/passwd", check=False)
    assert r.returncode != 0
    assert surat.cli("queue", "delete", qid).stdout.strip() == "deleted " + qid
    assert queue_ids(surat) == []
    assert "0 messages in the queue" in surat.cli("queue", "list").stdout
    # The daemon notices at the next attempt and forgets the message.
    surat.cli("queue", "flush")
    deadline = time.time() + 10
    while time.time() < deadline and "spool file deleted" not in surat.log():
        time.sleep(0.1)
    assert "queue %s: spool file deleted; message dropped" % qid in surat.log()
    assert "cannot record state" not in surat.log()
    assert queue_ids(surat) == []
    # And still works.
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["alice@example.test"], msg("after")) == {}
    stored_one(surat, "alice@example.test")
    assert "panic" not in surat.log()


# ---------------------------------------------------------------- stop

def test_graceful_stop_idle_client(surat):
    r = Raw(surat.port("smtp"))
    r.greet()
    r2 = Raw(surat.port("submissions"), tls=True)
    r2.greet()
    t0 = time.time()
    surat.proc.send_signal(signal.SIGTERM)
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.3.2"), (c, t)
    assert r.closed()
    c, t = r2.reply()
    assert c == 421, (c, t)
    rc = surat.stop()    # already signalled: waits, checks sanitizers
    assert rc == 0
    assert time.time() - t0 < 5


def test_graceful_stop_inside_an_auth_exchange(make_populated):
    """A session waiting for a SASL response is between transactions: SIGTERM
    ends it at once with 421, not after shutdown_grace."""
    s = make_populated(extra={"shutdown_grace": "30s"})
    r = Raw(s.port("submissions"), tls=True)
    r.greet()
    r.expect("EHLO client.test", 250)
    r.expect("AUTH LOGIN", 334)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.3.2"), (c, t)
    assert r.closed()
    assert s.stop() == 0
    assert time.time() - t0 < 5


def test_graceful_stop_mid_transaction(surat):
    """A session in the middle of DATA may finish its message."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"Subject: during stop\r\n\r\n")
    surat.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    r.send(b"body\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, (c, t)
    c, t = r.reply()
    assert c == 421, (c, t)
    assert r.closed()
    assert surat.stop() == 0
    surat.start()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == \
        b"Subject: during stop\r\n\r\nbody\r\n"


def test_stop_during_auth_delay(make_populated):
    """SIGTERM while a failed AUTH waits out auth.fail_delay: the grace
    period ends the session and nothing leaks (LSan runs at exit)."""
    s = make_populated(extra={"auth.fail_delay": "3s", "shutdown_grace": "1s"})
    r = Raw(s.port("submissions"), tls=True)
    r.greet()
    r.send("AUTH PLAIN %s\r\n" % base64.b64encode(b"\0alice@example.test\0wrong").decode())
    time.sleep(0.5)
    t0 = time.time()
    assert s.stop() == 0
    assert time.time() - t0 < 5
    r.close()


def test_stop_grace_expires_mid_data(make_populated):
    """A client that never ends its DATA is cut off when shutdown_grace is
    over; nothing of its message is kept, and the daemon exits 0."""
    s = make_populated(extra={"shutdown_grace": "1s"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"Subject: never ends\r\n\r\nbody\r\n")
    time.sleep(0.2)
    t0 = time.time()
    assert s.stop() == 0
    assert time.time() - t0 < 5
    assert r.closed()
    assert b"250 " not in r.buf
    r.close()
    assert re.search(r"access id=- .*rcpts=<alice@example\.test>.*result=0 "
                     r"reason=\"transaction not completed\"", s.log()), access_lines(s)
    s.start()
    time.sleep(0.5)
    assert queue_ids(s) == []
    assert s.messages("alice@example.test") == []
