"""The access log: one `access` line per SMTP transaction, accepted or refused.

What an admin (an ISP tracing spam sent with a stolen password) must find in
it: time, session id, queue id, client IP and HELO name, authenticated user,
envelope sender, the recipients, size, Message-ID, Subject, the final reply
code, the duration and the TLS version -- on one line that a parser can split
unambiguously whatever the client sent.

The line, as smtp_access_log() (src/smtp/smtp_server.c) writes it after
log_msg()'s prefix:

  TIME info sid=SID access id=QID|- client=NAME[IP] helo=H user=U|- from=<A>
      rcpts=<A>,<A>|- size=N [msgid=M|- subject="S"] result=CODE [reason="R"]
      duration=N.NNNs tls=none|VERSION:CIPHER

Peer text goes through log_escape(): printable ASCII as is, '"', '\\' and
every other byte as \\xNN, cut with "..." (Subject at 100 bytes); a header
with several Message-ID or Subject fields has each (up to 4) in msgid= or
subject=, in order, an escaped LF (\\x0a) between them; a value
outside quotes has its spaces escaped too, and inside from=<> and rcpts=<>
its '<', '>' and ','. A line longer than 4 KiB is written whole; past
512 KiB of rcpts= the rest are counted, as one last <...+N>. A strict
parser (parse_access below) accepts exactly that grammar, the keys in that
order and each once, and decodes the escapes; the tests compare the decoded
values with what the client sent.

Decisions taken here (documented, and asserted):
- rcpts= lists the recipients as the client gave them (an alias is not
  expanded there); the expansion is in the `delivery id=QID rcpt=...` lines,
  tied by the queue id.
- A refused RCPT is not listed: rcpts= is who was given the message. A
  transaction in which every RCPT was refused still leaves its line when it
  ends (QUIT, RSET, hang-up): id=-, rcpts=-, result= the last refusal,
  reason="transaction not completed". Each refused RCPT has a line of its
  own, `rcpt refused client=[IP] from=<A> to=<R> reply="CODE ENH TEXT"`, where
  the address and the reason are found.
- A transaction that ends without a final reply (hang-up, RSET, EHLO) logs
  result=0 (no reply was given) or the last refusal code: of a RCPT or a
  BDAT chunk; of a DATA refused for want of recipients only if no RCPT was
  refused (the 554 follows from them); never of a command that failed
  without touching the transaction (EXPN, a nested MAIL, a typo).
- A MAIL refused for what it asks (553 sender not owned on submission, 552
  a declared SIZE over the limit, 452 no room for the queue, 530 no AUTH on
  submission) opens no
  transaction but is a message refused: its line has id=-, rcpts=-,
  size=0, the code and a reason. A MAIL refused for its syntax, or a DATA
  or a BDAT with no MAIL before it (503), is a command error, not a
  message: no line.
- A timeout or the error limit ends the transaction with a 421: that is its
  final reply code, and it needs its line like any other end.
"""
import re
import smtplib
import socket
import ssl
import time

import pytest

from conftest import client_tls, free_port
from test_smtp import (Raw, bounded, make_populated, msg,  # noqa: F401
                       populated_data, queue_ids, smtp, stored_one, submission, surat)

TEST_LIMIT = 30

# ---------------------------------------------------------------- the parser

ESC = r'(?:[!#-\[\]-~]|\\x[0-9a-f]{2})'          # one non-space char, escaped form
QESC = r'(?:[ !#-\[\]-~]|\\x[0-9a-f]{2})'        # the same, space allowed (quoted)
ADDR = r'<(?:(?![<>,])%s)*>' % ESC
GRAMMAR = [
    ("id", r"-|[0-9a-f]{16}", False),
    ("client", r"[A-Za-z0-9._-]+\[[0-9a-fA-F.:]+\]", False),
    ("helo", r"%s*" % ESC, False),
    ("user", r"-|%s+" % ESC, False),
    ("from", ADDR, False),
    ("rcpts", r"-|%s(?:,%s)*" % (ADDR, ADDR), False),
    ("size", r"\d+", False),
    ("msgid", r"-|%s+" % ESC, True),
    ("subject", r'"%s*"' % QESC, True),
    ("result", r"0|[2-5]\d\d", False),
    ("reason", r'"%s*"' % QESC, True),
    ("duration", r"\d+\.\d{3}s", False),
    ("tls", r"none|TLSv1(?:\.[0-3])?:[A-Za-z0-9_-]+", False),
]
PREFIX = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\w+) "
                    r"sid=([0-9a-f]{16}) access (.*)$")
TOKEN = re.compile(r'(\w+)=("%s*"|[^ "]*)' % QESC)


def unescape(v):
    if v.startswith('"') and v.endswith('"') and len(v) >= 2:
        v = v[1:-1]
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  v.encode()).decode("utf-8", "surrogateescape")


def parse_access(line):
    """The fields of one access line, decoded; AssertionError if the line
    does not follow the grammar exactly (so cannot be split one way only)."""
    m = PREFIX.match(line)
    assert m, "not an access line: %r" % line
    f = {"_time": m.group(1), "_level": m.group(2), "_sid": m.group(3), "_raw": line}
    rest, pos, toks = m.group(4), 0, []
    while pos < len(rest):
        t = TOKEN.match(rest, pos)
        assert t, "unparseable at %d: %r" % (pos, rest[pos:])
        toks.append((t.group(1), t.group(2)))
        pos = t.end()
        if pos < len(rest):
            assert rest[pos] == " ", "unparseable at %d: %r" % (pos, rest[pos:])
            pos += 1
    gi = 0
    for key, val in toks:
        while gi < len(GRAMMAR) and GRAMMAR[gi][0] != key:
            assert GRAMMAR[gi][2], "field %s missing or out of order in %r" % (GRAMMAR[gi][0],
                                                                              line)
            gi += 1
        assert gi < len(GRAMMAR), "unexpected or repeated field %s= in %r" % (key, line)
        assert re.fullmatch(GRAMMAR[gi][1], val), "bad %s=%r in %r" % (key, val, line)
        f[key] = val
        gi += 1
    for k, _, optional in GRAMMAR[gi:]:
        assert optional, "field %s missing in %r" % (k, line)
    assert ("msgid" in f) == ("subject" in f), line
    if f["rcpts"] == "-":
        f["rcpt_list"] = []
    else:
        f["rcpt_list"] = [unescape(a[1:-1]) for a in re.findall(ADDR, f["rcpts"])]
    f["from_addr"] = unescape(f["from"][1:-1])
    for k in ("helo", "user", "msgid", "subject", "reason"):
        if k in f:
            f[k] = unescape(f[k])
    for k in ("size", "result"):
        f[k] = int(f[k])
    f["duration_s"] = float(f["duration"][:-1])
    return f


def raw_access(s):
    """Every access line, parsed or not (an access line is one with the
    `access` word after the session id, at any level)."""
    return [l for l in s.log().splitlines() if PREFIX.match(l)]


def access(s, **match):
    """The parsed access lines whose decoded fields equal match."""
    out = []
    for l in raw_access(s):
        f = parse_access(l)
        if all(f.get(k) == v for k, v in match.items()):
            out.append(f)
    return out


def wait_access(s, n=1, timeout=8, **match):
    deadline = time.time() + timeout
    while True:
        got = access(s, **match)
        if len(got) >= n or time.time() > deadline:
            return got
        time.sleep(0.05)


def wait_raw(s, n=1, timeout=8):
    deadline = time.time() + timeout
    while len(raw_access(s)) < n and time.time() < deadline:
        time.sleep(0.05)
    return raw_access(s)


def final(s):
    """Stop the daemon (every session over, every line written): the lines."""
    assert s.stop() == 0
    return [parse_access(l) for l in raw_access(s)]


def one(lines, **match):
    got = [f for f in lines if all(f.get(k) == v for k, v in match.items())]
    assert len(got) == 1, (match, [f["_raw"] for f in lines])
    return got[0]


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def closed_route():
    return {"route.remote.test": "127.0.0.1:%d" % free_port()}


def raw_submission(s, user="alice@example.test", pw="alice-pw", helo="client.test"):
    r = Raw(s.port("submission"))
    r.greet(helo)
    r.starttls()
    r.expect("EHLO " + helo, 250)
    r.auth(user, pw)
    return r


def send_data(r, body, code=250):
    r.expect("DATA", 354)
    r.send(body + b".\r\n")
    c, t = r.reply()
    assert c == code, (c, t)
    return t


# ---------------------------------------------------------------- accepted

def test_mx_accepted_all_fields(surat):
    """MX, no AUTH: one line with every field; recipients as given (the
    alias unexpanded), the queue id tied to the delivery lines of every
    expanded recipient and to the stored Received: header."""
    surat.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    body = (b"From: Sender <s@remote.test>\r\nTo: team@example.test\r\n"
            b"Message-ID: <mx-1.abc@remote.test>\r\nSubject: quarterly numbers\r\n\r\n"
            b"body\r\n")
    t0 = time.time()
    r = Raw(surat.port("smtp"))
    r.greet("sender-host.remote.test")
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("RCPT TO:<team@example.test>", 250)
    time.sleep(0.6)
    t = send_data(r, body)
    qid = re.search(r"queued as ([0-9a-f]{16})", t[-1]).group(1)
    r.expect("QUIT", 221)
    r.close()
    t1 = time.time()
    stored = stored_one(surat, "alice@example.test")
    stored_one(surat, "bob@example.test")
    lines = final(surat)
    f = one(lines)
    assert f["_level"] == "info"
    assert iso(t0 - 1) <= f["_time"][:19] <= iso(t1 + 1), f["_raw"]
    assert f["id"] == qid
    assert f["client"] == "localhost[127.0.0.1]"
    assert f["helo"] == "sender-host.remote.test"
    assert f["user"] == "-"
    assert f["from_addr"] == "s@remote.test"
    assert f["rcpt_list"] == ["bob@example.test", "team@example.test"]
    assert f["size"] == len(body)
    assert f["msgid"] == "<mx-1.abc@remote.test>"
    assert f["subject"] == "quarterly numbers"
    assert f["result"] == 250 and "reason" not in f
    assert 0.6 <= f["duration_s"] < 5, f["duration"]
    assert f["tls"] == "none"
    # The queue id is in the stored copy's Received: and in each delivery line.
    assert re.search(rb"\bid %s\b" % qid.encode(), stored), stored[:400]
    log = surat.log()
    for rcpt in ("alice@example.test", "bob@example.test"):
        assert re.search(r"sid=%s delivery id=%s rcpt=%s status=sent" % (f["_sid"], qid, rcpt),
                         log), log[-2000:]


def test_submission_starttls_auth_queue_id(make_populated):
    """Submission, STARTTLS + AUTH: user=, the negotiated TLS version and
    cipher, and the queue id that `surat queue list` shows for the deferred
    remote copy; every recipient, remote and local."""
    s = make_populated(extra=closed_route())
    body = msg("to two places", frm="alice@example.test", to="far@remote.test",
               extra="Message-ID: <sub-1@example.test>\r\n")
    with submission(s) as c:
        version, cipher = c.sock.version(), c.sock.cipher()[0]
        assert c.sendmail("alice@example.test", ["far@remote.test", "bob@example.test"],
                          body) == {}
    stored_one(s, "bob@example.test")
    deadline = time.time() + 10
    while not queue_ids(s) and time.time() < deadline:
        time.sleep(0.1)
    ids = queue_ids(s)
    f = one(final(s))
    assert ids == [f["id"]], (ids, f["_raw"])
    show = s.cli("queue", "show", f["id"]).stdout
    assert "far@remote.test" in show and "user=alice@example.test" in show, show[:500]
    assert f["user"] == "alice@example.test"
    assert f["helo"] == "client.test"
    assert f["from_addr"] == "alice@example.test"
    assert f["rcpt_list"] == ["far@remote.test", "bob@example.test"]
    assert f["tls"] == "%s:%s" % (version, cipher)
    assert f["result"] == 250 and f["size"] == len(body)
    assert f["msgid"] == "<sub-1@example.test>" and f["subject"] == "to two places"


def test_implicit_tls_submissions(surat):
    ctx = client_tls()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with smtplib.SMTP_SSL("127.0.0.1", surat.port("submissions"), context=ctx,
                          timeout=10) as c:
        c.ehlo("tls12.client.test")
        c.login("bob@example.test", "bob-pw")
        version, cipher = c.sock.version(), c.sock.cipher()[0]
        assert version == "TLSv1.2"
        assert c.sendmail("bob@example.test", ["alice@example.test"],
                          msg("implicit", frm="bob@example.test",
                              extra="Message-ID: <tls12@example.test>\r\n")) == {}
    stored_one(surat, "alice@example.test")
    f = one(final(surat))
    assert f["tls"] == "TLSv1.2:" + cipher
    assert f["user"] == "bob@example.test" and f["helo"] == "tls12.client.test"
    assert f["result"] == 250 and f["id"] != "-" and f["subject"] == "implicit"
    assert f["msgid"] == "<tls12@example.test>"


def test_generated_message_id_logged(surat):
    with submission(surat) as c:
        assert c.sendmail("alice@example.test", ["bob@example.test"],
                          msg("no id from the mua", frm="alice@example.test")) == {}
    stored = stored_one(surat, "bob@example.test")
    mid = re.search(rb"(?m)^Message-ID: (<[^>\r\n]+>)\r$", stored).group(1).decode()
    f = one(final(surat))
    assert f["msgid"] == mid, (mid, f["_raw"])


def test_generated_message_id_logged_not_one_in_body(surat):
    """Content whose first line starts with white space has no header: a
    Message-ID: line in it is body, surat adds one, and that is logged."""
    r = raw_submission(surat)
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    send_data(r, b" indented\r\nMessage-ID: <in-body@client.test>\r\n\r\nx\r\n")
    r.close()
    stored = stored_one(surat, "bob@example.test")
    hdr = stored.split(b"\r\n\r\n")[0]
    mids = re.findall(rb"(?mi)^Message-ID:[ \t]*(<[^>\r\n]+>)\r$", hdr)
    assert len(mids) == 1 and mids[0] != b"<in-body@client.test>", hdr
    f = one(final(surat))
    assert f["msgid"] == mids[0].decode(), (mids, f["_raw"])


def test_no_header_fields_from_the_body(surat):
    """MX content whose first line starts with white space has no header:
    surat stores it all as body. A Message-ID: or Subject: line in it is
    not the message's, and the line must not name them (a sender would
    have the log show an id no copy of the message carries)."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    send_data(r, b" x\r\nMessage-ID: <fake@remote.test>\r\nSubject: fake\r\n\r\nbody\r\n")
    r.expect("QUIT", 221)
    r.close()
    stored = stored_one(surat, "alice@example.test")
    assert b"\r\n\r\n x\r\nMessage-ID: <fake@remote.test>\r\n" in stored, stored
    f = one(final(surat))
    assert f["result"] == 250 and f["msgid"] == "-" and f["subject"] == "", f["_raw"]


def test_no_subject_from_below_a_line_that_is_no_field(surat):
    """On submission a line that is no field ends the header: surat puts the
    empty line in before it, so a Subject: further down is body in every
    copy, and the line must not name it."""
    r = raw_submission(surat)
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    send_data(r, b"X-Note: n\r\nno field\r\nSubject: fake\r\n\r\nx\r\n")
    r.close()
    stored = stored_one(surat, "bob@example.test")
    assert b"\r\n\r\nno field\r\nSubject: fake\r\n" in stored, stored
    f = one(final(surat))
    assert f["result"] == 250 and f["subject"] == "", f["_raw"]
    assert f["msgid"] in stored.split(b"\r\n\r\n")[0].decode(), f["_raw"]


@pytest.mark.parametrize("how", ["data", "bdat"])
def test_generated_message_id_logged_empty_message(surat, how):
    """An empty message on submission (DATA then ".", or BDAT 0 LAST) is
    taken and given a Message-ID: the line names it like any other's."""
    r = raw_submission(surat)
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    if how == "data":
        send_data(r, b"")
    else:
        r.expect("BDAT 0 LAST", 250)
    r.close()
    stored = stored_one(surat, "bob@example.test")
    mid = re.search(rb"(?m)^Message-ID: (<[^>\r\n]+>)\r$", stored).group(1).decode()
    f = one(final(surat))
    assert f["result"] == 250 and f["size"] == 0, f["_raw"]
    assert f.get("msgid") == mid and f["subject"] == "", (mid, f["_raw"])


def test_partly_refused_rcpts(surat):
    """Refused RCPTs are not listed: rcpts= is exactly who got the message."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("RCPT TO:<nobody@example.test>", 550)
    r.expect("RCPT TO:<victim@elsewhere.test>", 554)
    r.expect("RCPT TO:<bob@example.test>", 250)
    send_data(r, msg("partly"))
    r.expect("QUIT", 221)
    r.close()
    f = one(final(surat))
    assert f["result"] == 250 and f["id"] != "-"
    assert f["rcpt_list"] == ["alice@example.test", "bob@example.test"]
    assert "nobody" not in f["_raw"] and "victim" not in f["_raw"]


# ---------------------------------------------------------------- refused at the end of data

def _spoofed(s):
    return raw_submission(s), "alice@example.test", ["bob@example.test"], \
        msg("spoof", frm="ceo@bank.test", to="bob@example.test"), 553, \
        "From: address ceo@bank.test not owned by user alice@example.test"


def _unparseable_from(s):
    return raw_submission(s), "alice@example.test", ["bob@example.test"], \
        msg("bad from", frm='"unbalanced <alice@example.test>', to="bob@example.test"), 553, \
        "From: header does not parse; the sender cannot be checked"


def _oversize(s):
    r = Raw(s.port("smtp"))
    r.greet()
    return r, "s@remote.test", ["alice@example.test"], \
        msg("big", body="y" * 78 + "\r\n") + (b"y" * 78 + b"\r\n") * 80, 552, None


def _hops(s):
    r = Raw(s.port("smtp"))
    r.greet()
    hops = "".join("Received: from h%d.test by h%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                   % (i, i + 1) for i in range(3))
    return r, "s@remote.test", ["alice@example.test"], \
        hops.encode() + msg("looping"), 554, "Too many hops: mail loop suspected"


def _bare_lf(s):
    r = Raw(s.port("smtp"))
    r.greet()
    return r, "s@remote.test", ["alice@example.test"], \
        b"Subject: bare lf\r\n\r\nline\nmore\r\n", 550, None


def _smuggle(s):
    r = Raw(s.port("smtp"))
    r.greet()
    return r, "s@remote.test", ["alice@example.test"], \
        (b"Subject: smuggler\r\n\r\nx\r\n.\nMAIL FROM:<admin@example.test>\r\n"
         b"RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: inner\r\n\r\ny\r\n"), 550, None


@pytest.mark.parametrize("case", [_spoofed, _unparseable_from, _oversize, _hops, _bare_lf,
                                  _smuggle], ids=lambda c: c.__name__.strip("_"))
def test_refused_at_end_of_data(make_populated, case):
    """Each refusal after the data: one line, no queue id, the code and the
    text the client got, the user, the Subject of what was refused; the
    session goes on and its next message has its own line."""
    s = make_populated(extra={"smtp.max_message_size": "4096", "smtp.max_hops": "3"})
    r, frm, rcpts, body, code, text = case(s)
    r.expect("MAIL FROM:<%s>" % frm, 250)
    for a in rcpts:
        r.expect("RCPT TO:<%s>" % a, 250)
    t = send_data(r, body, code)
    reply_text = t[-1].split(" ", 1)[1]
    if text is not None:
        assert reply_text == text
    # The session goes on: the next message is logged on its own.
    r.expect("MAIL FROM:<%s>" % frm, 250)
    r.expect("RCPT TO:<%s>" % rcpts[0], 250)
    send_data(r, msg("next one", frm=frm))
    r.expect("QUIT", 221)
    r.close()
    stored_one(s, rcpts[0])
    lines = final(s)
    assert len(lines) == 2, [f["_raw"] for f in lines]
    f, nxt = lines
    assert f["_sid"] == nxt["_sid"]
    assert f["id"] == "-" and f["result"] == code, f["_raw"]
    assert f["reason"] == reply_text, f["_raw"]
    assert f["from_addr"] == frm and f["rcpt_list"] == rcpts
    assert f["user"] == (frm if frm.endswith("example.test") else "-")
    if case is not _oversize:
        # As received, dot-unstuffed (a "." after CRLF is removed).
        assert f["size"] == len(body) - body.count(b"\r\n."), f["_raw"]
        assert f["subject"] == re.search(rb"Subject: ([^\r\n]*)", body).group(1).decode()
    assert nxt["result"] == 250 and nxt["subject"] == "next one" and nxt["id"] != "-"


# ---------------------------------------------------------------- refused before data

def test_each_refused_rcpt_has_its_line(surat):
    """Who was refused, and why, was in no line at info level: an admin
    asked about a relay attempt or a '550 no such user' found only
    result=554 reason="transaction not completed" and no address."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<guesser@remote.test>", 250)
    r.expect("RCPT TO:<nobody@example.test>", 550)
    r.expect("RCPT TO:<victim@elsewhere.test>", 554)
    r.expect("RCPT TO:<alice@example.test>", 250)
    # Refused by its syntax: the line names no address, not the last one.
    r.expect("RCPT <alice@example.test>", 501)
    send_data(r, msg("partly"))
    r.expect("QUIT", 221)
    r.close()
    assert surat.stop() == 0
    lines = [l for l in surat.log().splitlines() if " rcpt refused " in l]
    assert len(lines) == 3, lines
    assert " to=<" not in lines[2] and ' reply="501 ' in lines[2], lines
    assert lines[0].endswith('rcpt refused client=[127.0.0.1] from=<guesser@remote.test> '
                             'to=<nobody@example.test> '
                             'reply="550 5.1.1 <nobody@example.test>: Recipient address '
                             'rejected: no such user here"'), lines
    assert lines[1].endswith('from=<guesser@remote.test> to=<victim@elsewhere.test> '
                             'reply="554 5.7.1 <victim@elsewhere.test>: Relay access denied"'), lines


def test_refused_rcpt_lines_have_a_cap(make_populated):
    """452 past smtp.max_recipients counts toward no error limit for the
    first 1000: a client sending that many must not get a log line for
    each."""
    s = make_populated({"smtp.max_recipients": "1"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"".join(b"RCPT TO:<bob+%d@example.test>\r\n" % i for i in range(120)))
    for _ in range(120):
        assert r.reply()[0] == 452
    r.expect("QUIT", 221)
    r.close()
    assert s.stop() == 0
    lines = [l for l in s.log().splitlines() if " rcpt refused " in l]
    assert len(lines) == 100, len(lines)
    assert lines[-1].endswith("(the session's next ones are not logged)"), lines[-1]
    # The 452 names no address: the line does.
    assert ' to=<bob+99@example.test> reply="452 4.5.3 ' in lines[-1], lines[-1]
    assert "not logged" not in lines[-2]


@pytest.mark.parametrize("end", ["QUIT", "RSET", "hangup"])
def test_all_rcpts_refused(surat, end):
    """Nothing accepted: still one line when the transaction ends, so that
    an attempt to relay or to guess addresses is on record."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<guesser@remote.test>", 250)
    r.expect("RCPT TO:<nobody@example.test>", 550)
    r.expect("RCPT TO:<victim@elsewhere.test>", 554)
    r.expect("DATA", 554)
    if end == "hangup":
        r.close()
        wait_access(surat, from_addr="guesser@remote.test")
    else:
        r.expect(end, 221 if end == "QUIT" else 250)
        r.close()
    f = one(final(surat))
    assert f["id"] == "-" and f["from_addr"] == "guesser@remote.test"
    assert f["rcpts"] == "-" and f["size"] == 0 and "subject" not in f
    assert f["result"] == 554 and f["reason"] == "transaction not completed"


def test_rate_limited_rcpt_code_survives_pipelined_data(make_populated):
    """The stolen-password trace: an account past submission.rate_limit
    gets 450 at RCPT. A client that pipelines MAIL, RCPT and DATA also gets
    554 for the DATA (no valid recipients), which only follows from the
    450: the line must say 450, the refusal that tells why."""
    s = make_populated(extra={"submission.rate_limit": "1"})
    r = raw_submission(s)
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    send_data(r, msg("pays the only token", frm="alice@example.test"))
    r.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(3)] == [250, 450, 554]
    r.expect("QUIT", 221)
    r.close()
    lines = final(s)
    f = one(lines, id="-")
    assert f["result"] == 450 and f["rcpts"] == "-", f["_raw"]


def test_quota_refused_rcpt_code_survives_pipelined_data(surat):
    """The same for a RCPT refused by the quota check, whose reply comes
    from a worker job: 552 (SIZE= bigger than the whole quota), not the
    DATA's 554."""
    surat.cli("user", "quota", "alice@example.test", "1000")
    r = Raw(surat.port("smtp"))
    r.greet()
    r.send(b"MAIL FROM:<s@remote.test> SIZE=5000\r\nRCPT TO:<alice@example.test>\r\n"
           b"DATA\r\n")
    assert [r.reply()[0] for _ in range(3)] == [250, 552, 554]
    r.expect("QUIT", 221)
    r.close()
    f = one(final(surat))
    assert f["result"] == 552 and f["rcpts"] == "-", f["_raw"]


def test_stray_command_is_not_the_result(surat):
    """A command that fails in a transaction without touching it (EXPN, a
    nested MAIL) is not its result: abandoned with recipients accepted, the
    line says result=0 (no final reply), not 502 or 503."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("EXPN staff", 502)
    r.expect("MAIL FROM:<t@remote.test>", 503)
    r.expect("QUIT", 221)
    r.close()
    f = one(final(surat))
    assert f["result"] == 0 and f["reason"] == "transaction not completed", f["_raw"]


def test_refused_mail_has_its_line(surat):
    """A MAIL FROM refused on submission opens no transaction but has its
    access line: the account and the sender it tried to use."""
    r = raw_submission(surat)
    r.expect("MAIL FROM:<ceo@bank.test>", 553, "5.7.1")
    r.expect("MAIL FROM:<alice@example.test> SIZE=x", 501)   # syntax: no line
    r.expect("QUIT", 221)
    r.close()
    f = one(final(surat))
    assert (f["id"], f["user"], f["from_addr"], f["rcpts"], f["size"], f["result"]) == \
        ("-", "alice@example.test", "ceo@bank.test", "-", 0, 553), f["_raw"]
    assert f["reason"] == "sender not owned by the user" and "msgid" not in f, f["_raw"]
    assert f["tls"].startswith("TLSv1"), f["_raw"]


@pytest.mark.parametrize("tls", [False, True])
def test_mail_without_auth_on_submission_has_its_line(surat, tls):
    """A MAIL on submission without AUTH (a bot that found port 587 or 465,
    a client that lost its password) is a message refused, 530: its line
    names the sender it tried, user=- and the TLS it had."""
    if tls:
        r = Raw(surat.port("submissions"), tls=True)
        r.greet()
    else:
        r = Raw(surat.port("submission"))
        r.greet()
        r.starttls()
        r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<ceo@bank.test>", 530, "5.7.0")
    r.expect("MAIL FROM:<ceo@bank.test> SIZE=x", 530, "5.7.0")   # unparsed: no line
    r.expect("RCPT TO:<victim@remote.test>", 503, "5.5.1")
    r.expect("QUIT", 221)
    r.close()
    f = one(final(surat))
    assert (f["id"], f["user"], f["from_addr"], f["rcpts"], f["size"], f["result"]) == \
        ("-", "-", "ceo@bank.test", "-", 0, 530), f["_raw"]
    assert f["reason"] == "authentication required" and "msgid" not in f, f["_raw"]
    assert f["tls"].startswith("TLSv1"), f["_raw"]


def test_mail_without_auth_after_a_stray_chunk_has_a_clean_line(surat):
    """A BDAT with no MAIL before it (503) leaves its chunk read but opens
    no transaction; the 530 MAIL after it, on submission without AUTH, is
    a message refused of its own: size=0 and no Message-ID or Subject of
    that stray chunk, as any other MAIL refusal has."""
    r = Raw(surat.port("submission"))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    chunk = b"Message-ID: <stray@x>\r\nSubject: stray\r\n\r\nbody\r\n"
    assert r.ended(b"BDAT %d\r\n" % len(chunk) + chunk) == (503, "5.5.1")
    r.expect("MAIL FROM:<ceo@bank.test>", 530, "5.7.0")
    r.expect("QUIT", 221)
    r.close()
    f = one(final(surat))
    assert (f["from_addr"], f["size"], f["result"]) == ("ceo@bank.test", 0, 530), f["_raw"]
    assert "msgid" not in f and "subject" not in f, f["_raw"]


def test_mail_refused_for_its_size_has_its_line(make_populated):
    """A SIZE= over smtp.max_message_size is refused at MAIL (552): one line,
    and the session's next message has its own."""
    s = make_populated(extra={"smtp.max_message_size": "4096"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<big@remote.test> SIZE=5000", 552, "5.3.4")
    r.expect("MAIL FROM:<small@remote.test> SIZE=100", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    send_data(r, msg("small", frm="small@remote.test"))
    r.expect("QUIT", 221)
    r.close()
    stored_one(s, "alice@example.test")
    lines = final(s)
    f = one(lines, id="-")
    assert (f["from_addr"], f["user"], f["rcpts"], f["size"], f["result"]) == \
        ("big@remote.test", "-", "-", 0, 552), f["_raw"]
    assert f["reason"] == "declared SIZE over the limit", f["_raw"]
    assert one(lines, from_addr="small@remote.test")["result"] == 250


def test_refused_mail_line_cannot_be_forged(surat):
    """That line is the trace of a refused MAIL: a quoted local part must not
    put a field in it (spaces and <> escaped, as in any from=<>)."""
    frm = '"x> user=bob@example.test from=<ceo"@bank.test'
    r = raw_submission(surat)
    r.expect("MAIL FROM:<%s>" % frm, 553, "5.7.1")
    r.expect("QUIT", 221)
    r.close()
    f = one(final(surat))    # parse_access: the line splits one way only
    assert (f["user"], f["from_addr"], f["result"]) == ("alice@example.test", frm, 553), \
        f["_raw"]


# ---------------------------------------------------------------- unfinished transactions

def test_client_gone_mid_data(surat):
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<quitter@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    part = b"Message-ID: <half@remote.test>\r\nSubject: half a message\r\n\r\nsome"
    r.send(part)
    time.sleep(0.2)
    r.close()
    wait_access(surat, from_addr="quitter@remote.test")
    f = one(final(surat))
    assert f["id"] == "-" and f["result"] == 0, f["_raw"]
    assert f["reason"] == "transaction not completed"
    assert f["rcpt_list"] == ["alice@example.test"] and f["size"] == len(part)
    assert f["subject"] == "half a message" and f["msgid"] == "<half@remote.test>"
    assert surat.messages("alice@example.test") == []


@pytest.mark.parametrize("tls", [False, True])
def test_client_reset_with_replies_pending(surat, tls):
    """A client that pipelines MAIL and RCPT and resets the connection
    before reading the replies: the transaction opened still has its line,
    in clear and over TLS (whose replies go through a filter, so a write
    fails later than in clear)."""
    for i in range(5):
        r = Raw(surat.port("smtp"))
        r.greet()
        if tls:
            r.starttls()
            r.expect("EHLO client.test", 250)
        r.send(b"MAIL FROM:<reset%d@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
               b"RCPT TO:<bob@example.test>\r\n" % i)
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        r.sock.close()
    for i in range(5):
        wait_access(surat, from_addr="reset%d@remote.test" % i)
    lines = final(surat)
    for i in range(5):
        f = one(lines, from_addr="reset%d@remote.test" % i)
        assert f["id"] == "-" and f["reason"] == "transaction not completed", f["_raw"]


@pytest.mark.parametrize("where", ["data", "rcpt", "data-after-a-refusal"])
def test_timeout_mid_transaction_logged(make_populated, where):
    """A timeout ends the transaction with 421: that is its result, also
    when a RCPT was refused before (the last refusal is not the end)."""
    s = make_populated(extra={"smtp.command_timeout": "1s", "smtp.data_timeout": "1s"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<slow@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    if where == "data-after-a-refusal":
        r.expect("RCPT TO:<nobody@example.test>", 550, "5.1.1")
    if where.startswith("data"):
        r.expect("DATA", 354)
        r.send(b"Subject: slow\r\n\r\n")
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.4.2"), (c, t)
    assert r.closed()
    r.close()
    wait_access(s, timeout=2, from_addr="slow@remote.test")
    f = one(final(s), from_addr="slow@remote.test")
    # The 421 was the transaction's final reply: the line says so (0 would
    # read as a client that hung up).
    assert f["id"] == "-" and f["result"] == 421 and "reason" in f, f["_raw"]
    assert f["rcpt_list"] == ["alice@example.test"]
    if where.startswith("data"):
        assert f["size"] == len(b"Subject: slow\r\n\r\n") and f["subject"] == "slow", f["_raw"]


def test_error_limit_mid_transaction_logged(make_populated):
    s = make_populated(extra={"smtp.max_errors": "3"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<prober@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("RCPT TO:<a1@elsewhere.test>", 554)
    r.expect("RCPT TO:<a2@elsewhere.test>", 554)
    c, t = r.cmd("RCPT TO:<a3@elsewhere.test>")
    assert c == 554
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.7.0"), (c, t)
    assert r.closed()
    r.close()
    wait_access(s, timeout=2, from_addr="prober@remote.test")
    f = one(final(s), from_addr="prober@remote.test")
    assert f["id"] == "-" and f["result"] == 421, f["_raw"]
    assert f["rcpt_list"] == ["alice@example.test"]


@pytest.mark.parametrize("cmd", ["RSET", "EHLO again.test"])
def test_transaction_abandoned(surat, cmd):
    """RSET (or a new EHLO) after accepted RCPTs: the abandoned transaction
    has its line (result=0), the next one its own."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<first@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect(cmd, 250)
    r.expect("MAIL FROM:<second@remote.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    send_data(r, msg("second"))
    r.expect("QUIT", 221)
    r.close()
    stored_one(surat, "bob@example.test")
    lines = final(surat)
    assert [f["from_addr"] for f in lines] == ["first@remote.test", "second@remote.test"]
    a, b = lines
    assert a["id"] == "-" and a["result"] == 0 and a["reason"] == "transaction not completed"
    assert a["rcpt_list"] == ["alice@example.test"] and "subject" not in a
    assert b["id"] != "-" and b["result"] == 250 and b["rcpt_list"] == ["bob@example.test"]
    assert b["helo"] == ("again.test" if cmd.startswith("EHLO") else "client.test")


def test_starttls_mid_transaction_logged(surat):
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<before-tls@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.starttls()
    r.expect("EHLO client.test", 250)
    r.expect("QUIT", 221)
    r.close()
    lines = final(surat)
    one(lines, from_addr="before-tls@remote.test")


# ---------------------------------------------------------------- BDAT, pipelining

def test_bdat_accepted_and_refused(make_populated):
    s = make_populated(extra={"smtp.max_message_size": "4096"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<chunky@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    p1 = b"Message-ID: <bdat-1@remote.test>\r\nSubject: in chunks\r\n\r\n"
    p2 = b"part two\r\n"
    r.send(b"BDAT %d\r\n" % len(p1) + p1)
    assert r.reply()[0] == 250
    r.send(b"BDAT %d LAST\r\n" % len(p2) + p2)
    c, t = r.reply()
    assert c == 250, t
    qid = re.search(r"queued as ([0-9a-f]{16})", t[-1]).group(1)
    # Too big, in one LAST chunk: refused 552.
    r.expect("MAIL FROM:<chunky2@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    big = b"Subject: too big\r\n\r\n" + b"z" * 5000 + b"\r\n"
    r.send(b"BDAT %d LAST\r\n" % len(big) + big)
    c, t = r.reply()
    assert c == 552 and t[-1].startswith("5.3.4"), (c, t)
    r.expect("QUIT", 221)
    r.close()
    stored_one(s, "alice@example.test")
    lines = final(s)
    assert len(lines) == 2, [f["_raw"] for f in lines]
    a = one(lines, from_addr="chunky@remote.test")
    assert a["id"] == qid and a["result"] == 250 and a["size"] == len(p1) + len(p2)
    assert a["msgid"] == "<bdat-1@remote.test>" and a["subject"] == "in chunks"
    b = one(lines, from_addr="chunky2@remote.test")
    assert b["id"] == "-" and b["result"] == 552 and b["reason"].startswith("Message size")


def test_bdat_oversize_in_first_chunk(make_populated):
    """A size refusal in a non-LAST chunk (552), then the LAST chunk: the
    line must say why the message was refused."""
    s = make_populated(extra={"smtp.max_message_size": "4096"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<chunky@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    big = b"Subject: too big\r\n\r\n" + b"z" * 5000 + b"\r\n"
    r.send(b"BDAT %d\r\n" % len(big) + big)
    c1, t1 = r.reply()
    r.send(b"BDAT 2 LAST\r\nx\n")
    c2, t2 = r.reply()
    r.expect("QUIT", 221)
    r.close()
    f = one(final(s))
    assert c1 == 552, (c1, t1)
    assert f["id"] == "-" and f["result"] == c2 and c2 >= 500, (c2, t2, f["_raw"])
    assert "size" in f["reason"].lower(), f["_raw"]


def test_bdat_without_mail_no_line(surat):
    """BDAT with no MAIL opens no transaction (503), as DATA without MAIL:
    no line, rather than one with a null sender that reads as a bounce and
    a duration counted from an older MAIL, or from 1970."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.send(b"BDAT 5 LAST\r\nabc\r\n")
    assert r.reply()[0] == 503
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    send_data(r, msg("the only message"))
    r.send(b"BDAT 3\r\nabcBDAT 2 LAST\r\nde")
    assert [r.reply()[0] for _ in range(2)] == [503, 503]
    r.expect("QUIT", 221)
    r.close()
    lines = final(surat)
    assert [f["subject"] for f in lines] == ["the only message"], [f["_raw"] for f in lines]


@pytest.mark.parametrize("how", ["data", "bdat"])
def test_oversize_size_is_what_came(make_populated, how):
    """A message refused for its size: size= is the octets the client sent
    (unstuffed), not the part of them kept up to the limit, which would read
    as a message that fits."""
    s = make_populated(extra={"smtp.max_message_size": "4096"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<big@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    body = msg("big") + b"..stuffed\r\n" + b"y" * 78 * 128 + b"\r\n"
    if how == "data":
        send_data(r, body, 552)
        size = len(body) - body.count(b"\r\n.")
    else:
        half = len(body) // 2
        r.send(b"BDAT %d\r\n" % half + body[:half])
        assert r.reply()[0] in (250, 552)
        r.send(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
        assert r.reply()[0] == 552
        size = len(body)
    r.expect("QUIT", 221)
    r.close()
    f = one(final(s))
    assert f["result"] == 552 and f["size"] == size, (size, f["_raw"])


@pytest.mark.parametrize("shared", [False, True], ids=["lone", "shared"])
def test_pipelined_pair(surat, shared):
    """Two transactions pipelined in one session (with another session open,
    the messages go through a worker round instead of the loop): two lines,
    one per message, each with its own queue id and fields."""
    other = None
    if shared:
        other = Raw(surat.port("smtp"))
        other.greet("idle.test")
    r = Raw(surat.port("smtp"))
    r.greet()
    r.send(b"MAIL FROM:<p1@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(3)] == [250, 250, 354]
    r.send(msg("pipe one", extra="Message-ID: <p1@remote.test>\r\n") + b".\r\n" +
           b"MAIL FROM:<p2@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
           b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
    codes = [r.reply() for _ in range(4)]
    assert [c for c, _ in codes] == [250, 250, 250, 250], codes
    c, _ = r.reply()
    assert c == 354
    r.send(msg("pipe two", extra="Message-ID: <p2@remote.test>\r\n") + b".\r\nQUIT\r\n")
    c, t = r.reply()
    assert c == 250, t
    assert r.reply()[0] == 221
    r.close()
    if other:
        other.expect("QUIT", 221)
        other.close()
    stored_one(surat, "alice@example.test", 2)
    lines = final(surat)
    assert len(lines) == 2, [f["_raw"] for f in lines]
    a, b = one(lines, from_addr="p1@remote.test"), one(lines, from_addr="p2@remote.test")
    assert a["_sid"] == b["_sid"] and a["id"] != b["id"] and "-" not in (a["id"], b["id"])
    assert (a["subject"], a["msgid"], a["rcpt_list"]) == \
        ("pipe one", "<p1@remote.test>", ["alice@example.test"])
    assert (b["subject"], b["msgid"], b["rcpt_list"]) == \
        ("pipe two", "<p2@remote.test>", ["bob@example.test", "alice@example.test"])
    assert a["result"] == b["result"] == 250


# ---------------------------------------------------------------- sanitising

def test_subject_sanitised(surat):
    """Control bytes, quotes, backslashes, UTF-8 and folding: one physical
    line, the quoted value decodes back to the header's (unfolded) value,
    an encoded-word stays as sent; a long Subject is cut with "..."."""
    tricky = (b'a\x01b\x1b[31mred\x7f "quoted" back\\slash \xc3\xa9t\xc3\xa9 '
              b'=?UTF-8?B?w6l0w6k=?= end')
    long_subj = b"L" * 300
    cases = [tricky, b"folded first\r\n\tsecond fake=1 result=250", long_subj]
    with smtp(surat) as c:
        for subj in cases:
            body = b"From: s@remote.test\r\nSubject: " + subj + b"\r\n\r\nx\r\n"
            assert c.sendmail("s@remote.test", ["alice@example.test"], body) == {}
    stored_one(surat, "alice@example.test", 3)
    raws = raw_access(surat)
    lines = final(surat)
    assert len(lines) == 3
    for l in raws:
        assert all(0x20 <= ord(ch) < 0x7f for ch in l), repr(l)
    a, b, c_ = lines
    assert a["subject"].encode("utf-8", "surrogateescape") == tricky
    assert '\\x22quoted\\x22' in a["_raw"] and "back\\x5cslash" in a["_raw"]
    assert b["subject"] == "folded first\tsecond fake=1 result=250"
    assert b["result"] == 250
    assert c_["subject"].startswith("L" * 90) and c_["subject"].endswith("...")
    assert len(c_["subject"]) <= 110


def test_blank_continuation_lines_do_not_stall_the_daemon(surat):
    """A header of many continuation lines holding white space only (legal:
    obs-FWS, RFC 5322 4.2): the line's Subject and Message-ID are read on
    the event loop, and a search that scanned those lines again from each
    of them took quadratic time, holding every other client (seconds for
    a few tens of KB, hours for a message of smtp.max_message_size)."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    send_data(r, b"X-Pad: x\r\n" + b" \r\n" * 100000 + b"Subject: after the blanks\r\n"
              b"Message-ID: <blank.1@remote.test>\r\n\r\nbody\r\n")
    # The next client is greeted, and this one answered, at once.
    t0 = time.time()
    r2 = Raw(surat.port("smtp"), timeout=3)
    r2.greet()
    r.expect("NOOP", 250)
    assert time.time() - t0 < 3
    r2.close()
    r.expect("QUIT", 221)
    r.close()
    f = one(final(surat))
    assert f["result"] == 250 and f["subject"] == "after the blanks", f["_raw"]
    assert f["msgid"] == "<blank.1@remote.test>", f["_raw"]


def test_bare_cr_in_subject(surat):
    """A bare CR in the Subject: the message is refused (bare CR) and its
    line keeps the CR escaped, on one physical line."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    c = send_data(r, b"Subject: a\rinfo sid=0000000000000000 access id=forged\r\n\r\nx\r\n",
                  550)
    r.expect("QUIT", 221)
    r.close()
    lines = final(surat)
    f = one(lines)
    assert f["id"] == "-" and f["result"] == 550 and "bare CR" in f["reason"], (c, f["_raw"])
    assert f["subject"] == "a\rinfo sid=0000000000000000 access id=forged"
    assert "\\x0d" in f["_raw"]


def test_msgid_with_quotes(surat):
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["alice@example.test"],
                          msg("q", extra='Message-ID: <"odd\\id"@remote.test>\r\n')) == {}
    stored_one(surat, "alice@example.test")
    f = one(final(surat))
    assert f["msgid"] == '<"odd\\id"@remote.test>'


def test_msgid_empty_or_dash(surat):
    """msgid=- says the message has no Message-ID: an empty one is none (not
    a bare "msgid=" outside the grammar), and one that is "-" is escaped,
    or a message that has one would read as one that has not."""
    with smtp(surat) as c:
        for mid in ("", "-"):
            assert c.sendmail("s@remote.test", ["alice@example.test"],
                              msg("id %r" % mid, extra="Message-ID: %s\r\n" % mid)) == {}
    stored_one(surat, "alice@example.test", 2)
    raws = raw_access(surat)
    empty, dash = final(surat)
    assert " msgid=- " in empty["_raw"], raws
    assert " msgid=\\x2d " in dash["_raw"] and dash["msgid"] == "-", raws


def test_every_subject_and_message_id_logged(surat):
    """A header may name Subject: or Message-ID: twice (RFC 5322 3.6 allows
    one), and readers differ on which they show: surat's own IMAP ENVELOPE
    and Dovecot the last, others the first. The line lists them all, in
    order, each cut at its own limit, with an escaped LF between them (no
    value holds one), at most 4 (then "..."): the one a recipient saw is
    always found, and the admin sees there were several."""
    two = (b"Message-ID: <first.1@remote.test>\r\nSubject: invoice 7\r\nFrom: s@remote.test\r\n"
           b"Subject: URGENT: reset your password\r\nMessage-ID: <second.2@remote.test>\r\n"
           b"\r\nSubject: in the body\r\n")
    many = b"".join(b"Subject: %d%s\r\n" % (i, b"x" * 150) for i in range(6)) + b"\r\nx\r\n"
    with smtp(surat) as c:
        for body in (two, many):
            assert c.sendmail("s@remote.test", ["alice@example.test"], body) == {}
    stored_one(surat, "alice@example.test", 2)
    a, b = final(surat)
    assert a["subject"] == "invoice 7\nURGENT: reset your password", a["_raw"]
    assert a["msgid"] == "<first.1@remote.test>\n<second.2@remote.test>", a["_raw"]
    subjects = b["subject"].split("\n")
    assert len(subjects) == 5 and subjects[-1] == "...", b["_raw"]
    for i, v in enumerate(subjects[:4]):
        assert v.startswith("%dxxx" % i) and v.endswith("...") and len(v) <= 105, b["_raw"]


def test_msgid_with_spaces(surat):
    mid = "<a b> result=250 user=boss@example.test"
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["alice@example.test"],
                          msg("spaced", extra="Message-ID: %s\r\n" % mid)) == {}
    stored_one(surat, "alice@example.test")
    raws = raw_access(surat)
    assert len(raws) == 1, raws
    assert s_parse_ok(raws[0])["msgid"] == mid


def s_parse_ok(line):
    f = parse_access(line)
    assert f["user"] == "-" and f["result"] == 250, line
    return f


def test_helo_odd_bytes(surat):
    """A HELO name that is not a domain is refused (501) and not taken; a
    UTF-8 one is taken and logged escaped."""
    r = Raw(surat.port("smtp"))
    r.greet("first.test")
    for bad in (b"EHLO bad\x01name", b"EHLO a\" result=250", b"EHLO x\x1b[2J"):
        r.send(bad + b"\r\n")
        assert r.reply()[0] in (500, 501), bad
    r.send("EHLO bücher.test\r\n".encode())
    assert r.reply()[0] == 250
    r.expect("MAIL FROM:<s@remote.test> SMTPUTF8", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    send_data(r, msg("helo"))
    r.expect("QUIT", 221)
    r.close()
    raws = raw_access(surat)
    f = one(final(surat))
    assert f["helo"] == "bücher.test".encode().decode("utf-8")
    assert "helo=b\\xc3\\xbccher.test " in raws[0]


def test_utf8_user_escaped(surat):
    """An account name in UTF-8 (allowed: RFC 6531) is written escaped in
    user= like every other value: the line stays printable ASCII."""
    user = "jos\u00e9@example.test"
    surat.add_user(user, "jose-pw")
    r = raw_submission(surat, user=user, pw="jose-pw")
    r.expect("MAIL FROM:<%s> SMTPUTF8" % user, 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    send_data(r, msg("utf8 user", frm=user))
    r.close()
    stored_one(surat, "bob@example.test")
    raws = raw_access(surat)
    f = one(final(surat))
    assert all(0x20 <= ord(ch) < 0x7f for ch in raws[0]), repr(raws[0])
    assert f["user"] == user and f["from_addr"] == user, f["_raw"]
    # So is every other line that names the user (auth ok, delivery...).
    named = [ln for ln in surat.log().splitlines() if "jos" in ln]
    assert len(named) >= 3, named
    assert all(0x20 <= ord(ch) < 0x7f for ln in named for ch in ln), named


def test_quoted_sender_cannot_forge_fields(surat):
    frm = '"a> user=boss@example.test rcpts=<x@y>,<z"@remote.test'
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<%s>" % frm, 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    send_data(r, msg("quoted sender"))
    r.expect("QUIT", 221)
    r.close()
    stored_one(surat, "alice@example.test")
    raws = raw_access(surat)
    assert len(raws) == 1
    f = parse_access(raws[0])
    assert f["from_addr"] == frm and f["rcpt_list"] == ["alice@example.test"]


def test_quoted_recipient_cannot_forge_list(make_populated):
    s = make_populated(extra=closed_route())
    rcpt = '"john smith>,<ceo"@remote.test'
    r = raw_submission(s)
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<%s>" % rcpt, 250)
    send_data(r, msg("quoted rcpt", frm="alice@example.test"))
    r.expect("QUIT", 221)
    r.close()
    raws = wait_raw(s)
    lines = final(s)
    assert len(lines) == 1, raws
    assert lines[0]["rcpt_list"] == [rcpt], raws


def test_huge_recipient_list_keeps_the_line_whole(make_populated):
    """smtp.max_recipients goes up to 100000 and a submission client picks
    how long its recipients are: listed in full, the line would pass the
    1 MiB log_msg() writes whole and be cut at 4 KiB, result= and all.
    Past 512 KiB the list ends with <...+N> (N not listed: each has its
    delivery line)."""
    extra = closed_route()
    extra.update({"smtp.max_recipients": "5000", "submission.rate_limit": "0"})
    s = make_populated(extra=extra)
    dom = ".".join(["d" * 60] * 3) + ".remote.test"
    rcpts = ["%s%05d@%s" % ("r" * 50, i, dom) for i in range(4200)]
    r = raw_submission(s)
    r.send("MAIL FROM:<alice@example.test>\r\n" +
           "".join("RCPT TO:<%s>\r\n" % a for a in rcpts))
    assert {r.reply()[0] for _ in range(len(rcpts) + 1)} == {250}
    send_data(r, msg("to very many", frm="alice@example.test"))
    r.close()
    raws = wait_raw(s)
    assert len(raws) == 1
    f = parse_access(raws[0])
    assert f["result"] == 250 and f["subject"] == "to very many", raws[0][-300:]
    listed, more = f["rcpt_list"][:-1], f["rcpt_list"][-1]
    assert listed == rcpts[:len(listed)] and 512 * 1024 < len(raws[0]) < 600 * 1024
    assert more == "...+%d" % (len(rcpts) - len(listed)), more


def test_many_long_recipients_one_complete_line(make_populated):
    s = make_populated(extra=closed_route())
    rcpts = ["%s%02d@remote.test" % ("r" * 60, i) for i in range(100)]
    with submission(s) as c:
        assert c.sendmail("alice@example.test", rcpts,
                          msg("to many", frm="alice@example.test")) == {}
    raws = wait_raw(s)
    lines = final(s)
    assert len(lines) == 1, raws
    assert lines[0]["rcpt_list"] == rcpts and lines[0]["result"] == 250
