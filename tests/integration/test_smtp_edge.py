"""SMTP in: adversarial edge cases of the protocol, over raw sockets.

What test_smtp.py and test_smtp_policy.py do not cover: RFC 2920 replies to
pipelined groups with errors inside, BDAT corner cases (RFC 3030), MAIL and
RCPT parameter syntax (RFC 5321, 1870, 3461, 6152), paths (source routes,
quoted local parts, address literals), bytes a command line may not hold,
line-length boundaries split across TCP segments, AUTH corner cases (RFC
4954), dot-stuffing and the end of DATA split across segments, and a client
that leaves in the middle of a message.
"""
import base64
import re
import socket
import threading
import time

import pytest

from test_smtp import (Raw, bounded, make_populated, populated_data, queue_ids,  # noqa: F401
                       split_stored, stored_one, surat)

TEST_LIMIT = 30     # per test (read by the `bounded` fixture)


# ---------------------------------------------------------------- helpers

@pytest.fixture
def lenient(make_populated):
    """A daemon whose error limit does not end the session while a test
    sends many refused commands on purpose."""
    return make_populated(extra={"smtp.max_errors": "100"})


def session(s, kind="smtp", tls=False):
    r = Raw(s.port(kind), tls=tls)
    r.greet()
    return r


def replies(r, n):
    """The next n replies as (code, last text line)."""
    out = []
    for _ in range(n):
        c, t = r.reply()
        out.append((c, t[-1]))
    return out


def codes(r, n):
    return [c for c, _ in replies(r, n)]


def raw_reply_bytes(r, timeout=5):
    """The raw bytes of the next reply line, CRLF included."""
    r.sock.settimeout(timeout)
    while b"\r\n" not in r.buf:
        chunk = r.sock.recv(65536)
        if not chunk:
            raise EOFError(r.buf)
        r.buf += chunk
    line, r.buf = r.buf.split(b"\r\n", 1)
    return line + b"\r\n"


def silent(r, wait=0.5):
    """True if the server sends nothing within wait seconds."""
    r.sock.settimeout(wait)
    try:
        chunk = r.sock.recv(65536)
    except socket.timeout:
        return r.buf == b""
    finally:
        r.sock.settimeout(10)
    r.buf += chunk
    return False


def nothing_delivered(s, addr="alice@example.test"):
    """Nothing accepted for addr: a marker sent now is its first message
    (deliveries to one mailbox keep the order of acceptance)."""
    r = session(s)
    r.expect("MAIL FROM:<marker@remote.test>", 250)
    r.expect("RCPT TO:<%s>" % addr, 250)
    r.expect("DATA", 354)
    r.send(b"Subject: marker\r\n\r\nmarker\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    stored = stored_one(s, addr)
    assert split_stored(stored)[2] == b"Subject: marker\r\n\r\nmarker\r\n"
    time.sleep(0.2)
    assert len(s.messages(addr)) == 1


def send_data(r, payload):
    """A whole DATA exchange after RCPT; returns the final reply."""
    r.expect("DATA", 354)
    r.send(payload)
    return r.reply()


# ---------------------------------------------------------------- RFC 2920

def test_pipelined_group_with_errors_in_the_middle(surat):
    """RFC 2920 3.1: every command of a group gets its own reply, in order,
    whatever failed before it; a failed MAIL makes RCPT and DATA fail too."""
    r = session(surat)
    r.send(b"MAIL FROM:<not-an-address\r\n"
           b"RCPT TO:<alice@example.test>\r\n"
           b"DATA\r\n"
           b"MAIL FROM:<s@remote.test>\r\n"
           b"RCPT TO:<victim@remote.test>\r\n"
           b"RCPT TO:<alice@example.test> FOO=bar\r\n"
           b"RCPT TO:<bob@example.test>\r\n"
           b"NOOP\r\n"
           b"RSET\r\n"
           b"DATA\r\n"
           b"NOOP\r\n")
    got = replies(r, 11)
    assert [c for c, _ in got] == [501, 503, 503, 250, 554, 555, 250, 250, 250, 503, 250], got
    enh = [t.split()[0] for _, t in got]
    assert enh == ["5.1.7", "5.5.1", "5.5.1", "2.1.0", "5.7.1", "5.5.4", "2.1.5", "2.0.0",
                   "2.0.0", "5.5.1", "2.0.0"], got
    assert silent(r)
    r.expect("QUIT", 221)
    r.close()
    time.sleep(0.3)
    assert queue_ids(surat) == []
    assert surat.messages("bob@example.test") == []


def test_pipelined_group_all_recipients_refused(surat):
    """RFC 2920 3.1: DATA after only refused RCPTs gets 503 or 554 (no 354),
    and the text the client sends next is then read as commands."""
    r = session(surat)
    r.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n"
           b"RCPT TO:<victim@remote.test>\r\nDATA\r\n")
    got = codes(r, 4)
    assert got[:3] == [250, 550, 554] and got[3] in (503, 554), got
    r.expect("RSET", 250, "2.0.0")
    r.expect("QUIT", 221)
    r.close()


def test_pipelined_messages_back_to_back(surat):
    """Two whole transactions and QUIT in one write: five replies each, in
    order, and both messages stored exactly (RFC 2920 3.1)."""
    r = session(surat)
    two = b"Subject: two\r\n\r\n2\r\n"
    r.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
           b"Subject: one\r\n\r\n1\r\n.\r\n"
           b"RSET\r\n"
           b"MAIL FROM:<b@remote.test>\r\nRCPT TO:<alice@example.test>\r\n" +
           b"BDAT %d LAST\r\n" % len(two) + two +
           b"QUIT\r\n")
    assert codes(r, 8) == [250, 250, 354, 250, 250, 250, 250, 250]
    assert r.reply()[0] == 221
    assert r.closed()
    uids = surat.wait_messages("alice@example.test", 2)
    got = sorted(split_stored(surat.message("alice@example.test", u))[2] for u in uids)
    assert got == [b"Subject: one\r\n\r\n1\r\n", two]


# ---------------------------------------------------------------- BDAT (RFC 3030)

def test_bdat_chunks_pipelined_in_one_write(surat):
    """RFC 3030 4.2: BDAT chunks may be pipelined; each gets its reply, and
    the chunks are joined without anything added."""
    r = session(surat)
    p1 = b"Subject: piped chunks\r\n\r\n"
    p2 = b"part two\r\n"
    r.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n" +
           b"BDAT %d\r\n" % len(p1) + p1 + b"BDAT %d\r\n" % len(p2) + p2 +
           b"BDAT 0 LAST\r\nNOOP\r\n")
    got = replies(r, 6)
    assert [c for c, _ in got] == [250] * 6, got
    assert all(re.match(r"2\.\d\.\d+ ", t) for _, t in got), got
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == p1 + p2


def test_bdat_0_last_alone_is_an_empty_message(surat):
    """RFC 3030 2: "BDAT 0 LAST" ends the message; alone it is an empty one."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("BDAT 0 LAST", 250, "2.0.0")
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == b""


def test_bdat_last_case_and_spaces(surat):
    """RFC 3030 2: end-marker "LAST" is case-insensitive (RFC 5321 2.4)."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    body = b"Subject: last\r\n\r\nx\r\n"
    r.send(b"bdat %d last\r\n" % len(body) + body)
    c, t = r.reply()
    assert c == 250, t
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == body


@pytest.mark.parametrize("cmd", ["DATA", "RCPT TO:<bob@example.test>"])
def test_data_or_rcpt_after_bdat_in_one_transaction(surat, cmd):
    """RFC 3030 2: DATA after BDAT in the same transaction gets 503, and so
    does a RCPT (the recipients all come before the first chunk): it adds no
    recipient. The first chunk is not lost and the transaction can still be
    ended by BDAT, for the recipients given before it."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    head = b"Subject: mixed\r\n\r\n"
    r.send(b"BDAT %d\r\n" % len(head) + head)
    assert r.reply()[0] == 250
    r.expect(cmd, 503, "5.5.1")
    r.send(b"BDAT 6 LAST\r\nbody\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == head + b"body\r\n"
    assert surat.messages("bob@example.test") == []


def test_rset_between_bdat_chunks_discards_them(surat):
    """RFC 3030 2 / RFC 5321 4.1.1.5: RSET after a chunk discards it; the next
    transaction may use DATA again."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"BDAT 9\r\nDISCARDED")
    assert r.reply()[0] == 250
    r.expect("RSET", 250, "2.0.0")
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    c, t = send_data(r, b"Subject: after rset\r\n\r\nkept\r\n.\r\n")
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == \
        b"Subject: after rset\r\n\r\nkept\r\n"


def test_bdat_after_all_rcpts_failed_pipelined(surat):
    """RFC 3030 2 / RFC 2920: BDAT LAST after every RCPT failed is refused
    (554), its octets are consumed and the next command is answered."""
    r = session(surat)
    r.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n"
           b"BDAT 9 LAST\r\nNOOP\r\nXYZNOOP\r\n")
    got = replies(r, 4)
    assert [c for c, _ in got] == [250, 550, 554, 250], got
    assert got[2][1].startswith("5.")
    assert silent(r)
    r.expect("QUIT", 221)
    r.close()
    time.sleep(0.3)
    assert queue_ids(surat) == []


def test_bdat_syntax_errors(lenient):
    """RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [SP end-marker]. Anything
    else leaves the chunk that follows unframed: its octets cannot be told
    from commands, so the server answers 421 and closes (RFC 5321 3.8)
    rather than run a message's content as SMTP. Nothing is queued."""
    for line in ("BDAT", "BDAT x", "BDAT -1", "BDAT +5", "BDAT 5 FIRST", "BDAT 5LAST",
                 "BDAT 5 LAST extra", "BDAT 99999999999999999999999 LAST"):
        r = session(lenient)
        r.expect("MAIL FROM:<s@remote.test>", 250)
        r.expect("RCPT TO:<alice@example.test>", 250)
        # What follows is what a client that thinks the line valid sends.
        r.send(line.encode() + b"\r\nRSET\r\n")
        c, t = r.reply()
        assert c == 421 and t[-1].startswith("4.5.4 mx.example.test Syntax: BDAT"), (line, c, t)
        assert r.closed(), line  # the RSET was never run: no 250 came
        r.close()
    # The same for a BDAT line refused before its syntax is looked at: too
    # long, a control octet or a NUL in it, or a TAB for the SP. The chunk
    # (here a RCPT) is never run as a command.
    chunk = b"RCPT TO:<bob@example.test>\r\n"
    for line, why in ((b"BDAT " + b"0" * 520 + b"%d LAST" % len(chunk), "Line too long"),
                      (b"BDAT %d LAST\x7f" % len(chunk), "Error: control character"),
                      (b"bdat %d\x00 LAST" % len(chunk), "Error: NUL"),
                      (b"BDAT\t%d LAST" % len(chunk), "Error: command not recognized")):
        r = session(lenient)
        r.expect("MAIL FROM:<s@remote.test>", 250)
        r.expect("RCPT TO:<alice@example.test>", 250)
        r.send(line + b"\r\n" + chunk)
        c, t = r.reply()
        assert c == 421 and t[-1].startswith("4.5.4 mx.example.test " + why), (line[:20], c, t)
        assert r.closed(), line[:20]
        r.close()
    # A well-formed BDAT still works.
    r = session(lenient)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"BDAT 3 LAST\r\nabc")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(lenient, "alice@example.test"))[2] == b"abc"


def test_bdat_after_helo_is_refused(surat):
    """After HELO no extension is in effect (RFC 5321 4.1.1.1) and CHUNKING
    was never offered (RFC 3030 2): BDAT is refused 503, its chunk still read
    and discarded so the session stays in step, and nothing is queued."""
    r = session(surat)
    r.expect("HELO c.test", 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"BDAT 6\r\nRSET\r\nBDAT 0 LAST\r\n")
    c, t = r.reply()
    assert c == 503 and t[-1] == "5.5.1 Bad sequence of commands: BDAT needs EHLO", (c, t)
    c, t = r.reply()
    assert c == 503 and t[-1].startswith("5.5.1"), (c, t)
    r.expect("NOOP", 250)  # in step: the chunk's "RSET" was data, not a command
    r.expect("QUIT", 221)
    r.close()
    time.sleep(0.3)
    assert queue_ids(surat) == []
    assert surat.messages("alice@example.test") == []


def test_bdat_crlf_split_across_chunks(surat):
    """A CR ending one chunk and the LF starting the next make one CRLF
    (chunks are a transport artefact, RFC 3030 2); a CR that ends the LAST
    chunk is a bare CR, refused like any other (550 5.6.0)."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    first = b"Subject: split\r\n\r\nab\r"
    r.send(b"BDAT %d\r\n" % len(first) + first)
    c, t = r.reply()
    # The octets the client sent so far, the held-back CR included.
    assert c == 250 and t[-1] == "2.0.0 %d octets received" % len(first), t
    r.send(b"BDAT 5 LAST\r\n\ncd\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    cr = b"Subject: cr\r\n\r\nx\r"
    r.send(b"BDAT %d LAST\r\n" % len(cr) + cr)
    c, t = r.reply()
    assert c == 550 and t[-1].startswith("5.6.0"), (c, t)
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == \
        b"Subject: split\r\n\r\nab\r\ncd\r\n"
    time.sleep(0.3)
    assert surat.messages("bob@example.test") == []


# ---------------------------------------------------------------- MAIL / RCPT parameters

def test_mail_parameter_syntax(lenient):
    """RFC 5321 4.1.1.11/4.2.3, RFC 1870 (SIZE), RFC 6152 (BODY), RFC 3461
    4.3/4.4 (RET, ENVID as xtext, at most 100 characters)."""
    r = session(lenient)
    bad = [
        ("SIZE=1 SIZE=2", 501),           # duplicate
        ("size=1 SIZE=1", 501),           # duplicate, keywords are case-insensitive
        ("FOO=bar", 555),                 # unknown: 555 (RFC 5321 4.1.1.11)
        ("X-TOKEN", 555),
        ("SIZE=abc", 501),                # RFC 1870 6: size-value = 1*20DIGIT
        ("SIZE=-1", 501),
        ("SIZE", 501),
        ("SIZE=", 501),
        ("BODY=9BIT", 501),
        ("BODY", 501),
        ("RET=ALL", 501),
        ("RET=FULL RET=HDRS", 501),
        ("ENVID=a+2", 501),               # truncated hexchar
        ("ENVID=a+zz", 501),              # not hex
        ("ENVID=" + "e" * 101, 501),      # over 100 characters
        ("SMTPUTF8=yes", 501),            # SMTPUTF8 takes no value (RFC 6531 3.4)
        ("SIZE=1  =x", 501),
        ("SIZE=1 " + " ".join("P%d=1" % i for i in range(16)), 501),
    ]
    for params, code in bad:
        c, t = r.cmd("MAIL FROM:<s@remote.test> " + params)
        assert c == code and t[-1].startswith("5.5.4"), (params, c, t)
    good = ["SIZE=0", "SIZE=00100", "BODY=7BIT", "body=8bitmime", "RET=hdrs",
            "ENVID=QQ+2B+3D.x", "ENVID=" + "e" * 100, "SMTPUTF8",
            "SIZE=10 BODY=8BITMIME RET=FULL ENVID=id1 SMTPUTF8"]
    for params in good:
        c, t = r.cmd("MAIL FROM:<s@remote.test> " + params)
        assert c == 250 and t[-1].startswith("2.1.0"), (params, c, t)
        r.expect("RSET", 250)
    # Multiple spaces between the path and the parameters, and trailing ones.
    r.expect("MAIL FROM:<s@remote.test>   SIZE=5   ", 250, "2.1.0")
    r.expect("QUIT", 221)
    r.close()


def test_rcpt_parameter_syntax(lenient):
    """RFC 3461 4.1 (NOTIFY: NEVER alone, or a list of SUCCESS/FAILURE/DELAY)
    and 4.2 (ORCPT=addr-type;xtext); MAIL-only parameters on RCPT are 555."""
    r = session(lenient)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    bad = [
        ("NOTIFY=", 501), ("NOTIFY", 501), ("NOTIFY=SOMETIMES", 501),
        ("NOTIFY=SUCCESS,,FAILURE", 501), ("NOTIFY=SUCCESS,", 501),
        ("NOTIFY=NEVER,DELAY", 501), ("NOTIFY=NEVER NOTIFY=NEVER", 501),
        ("ORCPT=rfc822", 501), ("ORCPT=rfc822;", 501), ("ORCPT=;a@b", 501),
        ("ORCPT=rfc822;a+zz", 501), ("ORCPT=rfc822;a+0A", 501),   # decoded CTL
        ("RET=FULL", 555), ("ENVID=x", 555), ("SIZE=1", 555), ("SMTPUTF8", 555),
        ("FOO=bar", 555),
    ]
    for params, code in bad:
        c, t = r.cmd("RCPT TO:<alice@example.test> " + params)
        assert c == code and t[-1].startswith("5.5.4"), (params, c, t)
    for params in ("NOTIFY=NEVER", "notify=success,failure,delay", "NOTIFY=DELAY",
                   "ORCPT=rfc822;alice+40example.test", "ORCPT=RFC822;x+2By@example.test",
                   "NOTIFY=FAILURE ORCPT=rfc822;bob@example.test"):
        c, t = r.cmd("RCPT TO:<alice@example.test> " + params)
        assert c == 250 and t[-1].startswith("2.1.5"), (params, c, t)
    r.expect("QUIT", 221)
    r.close()


def test_rcpt_with_longest_orcpt_fits_the_line_limit(surat):
    orcpt = "rfc822;" + "a" * 60 + "@" + ".".join(["b" * 60] * 7)
    orcpt += "." + "c" * (500 - len(orcpt) - 1)
    assert len(orcpt) == 500
    line = "RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=" + orcpt
    assert len(line) + 2 > 512
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    c, t = r.cmd(line)
    r.close()
    assert c == 250 and t[-1].startswith("2.1.5"), (c, t)


def test_mail_with_all_extension_parameters_under_512(surat):
    """A MAIL line with SIZE, BODY, RET, ENVID (100 characters) and SMTPUTF8
    that still fits 512 octets is accepted."""
    dom = "r" * 61 + "." + "r" * 61 + "." + "r" * 60 + ".test"
    path = "<%s@%s>" % ("s" * 64, dom)
    assert len(path) == 256                  # RFC 5321 4.5.3.1.3: the longest path
    line = "MAIL FROM:%s SIZE=12345 BODY=8BITMIME RET=HDRS SMTPUTF8 ENVID=%s" % (path,
                                                                             "e" * 100)
    assert 400 < len(line) + 2 <= 512
    r = session(surat)
    r.expect(line, 250, "2.1.0")
    r.close()


# ---------------------------------------------------------------- paths

def test_source_route_and_quoted_local_part_delivered(surat):
    """RFC 5321 4.1.1.3 / C: a source route is accepted and ignored; RFC 5321
    4.1.2: a quoted local part that is also a dot-string is the same mailbox."""
    r = session(surat)
    r.expect("MAIL FROM:<@hop1.remote.test,@hop2.remote.test:s@remote.test>", 250, "2.1.0")
    r.expect("RCPT TO:<@relay.remote.test:alice@example.test>", 250, "2.1.5")
    r.expect('RCPT TO:<"bob"@example.test>', 250, "2.1.5")
    c, t = send_data(r, b"Subject: routed\r\n\r\nx\r\n.\r\n")
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    a = stored_one(surat, "alice@example.test")
    b = stored_one(surat, "bob@example.test")
    assert split_stored(a)[0] == "alice@example.test"
    assert split_stored(b)[0] == "bob@example.test"
    assert split_stored(a)[2] == b"Subject: routed\r\n\r\nx\r\n"


def test_quoted_local_parts(lenient):
    """RFC 5321 4.1.2: Quoted-string with quoted-pairSMTP; "\\i" is "i"."""
    r = session(lenient)
    r.expect("MAIL FROM:<\"john smith\"@remote.test>", 250, "2.1.0")
    r.expect('RCPT TO:<"al\\ice"@example.test>', 250, "2.1.5")
    r.expect('RCPT TO:<"no body"@example.test>', 550, "5.1.1")
    r.expect('RCPT TO:<"unterminated@example.test>', 501, "5.1.3")
    r.expect('RCPT TO:<"a\\\x7f"@example.test>', 500, "5.5.2")   # DEL: not in a command
    r.expect("QUIT", 221)
    r.close()


def test_address_literals(lenient):
    """RFC 5321 4.1.3: IPv4 and IPv6 address literals are valid domains;
    malformed ones are syntax errors; literals are never relayed to."""
    r = Raw(lenient.port("smtp"))
    assert r.reply()[0] == 220
    r.expect("EHLO [127.0.0.1]", 250)
    r.expect("EHLO [IPv6:::1]", 250)
    r.expect("EHLO [IPv6:2001:db8::ffff:1.2.3.4]", 250)
    for bad in ("[1.2.3]", "[300.1.1.1]", "[IPv6:1.2.3.4]", "[IPv6:zz::1]", "[1.2.3.4",
                "[tag:content]"):
        c, t = r.cmd("EHLO " + bad)
        assert c == 501 and t[-1].startswith("5.5.4"), (bad, c, t)
    r.expect("MAIL FROM:<s@[192.0.2.1]>", 250, "2.1.0")
    r.expect("RSET", 250)
    r.expect("MAIL FROM:<s@[IPv6:2001:db8::1]>", 250, "2.1.0")
    r.expect("RCPT TO:<alice@[IPv6:::1]>", 554, "5.7.1")
    r.expect("RCPT TO:<alice@[IPv6:zz]>", 501, "5.1.3")
    r.expect("RCPT TO:<alice@[999.0.0.1]>", 501, "5.1.3")
    r.expect("QUIT", 221)
    r.close()


def test_path_syntax_errors(lenient):
    """RFC 5321 4.1.2 (dot-string, domain) and 4.5.3.1.1 (local part at most 64
    octets): 501 with X.1.7 for the sender, X.1.3 for a recipient (RFC 3463)."""
    r = session(lenient)
    for path in ("<s@remote.test.>", "<s..x@remote.test>", "<.s@remote.test>",
                 "<s@remote.test>x", "<s@-remote.test>", "<postmaster>", "<s@>", "<@>",
                 "<" + "s" * 65 + "@remote.test>", "<s@remote.test"):
        c, t = r.cmd("MAIL FROM:" + path)
        assert c == 501 and t[-1].startswith("5.1.7"), (path, c, t)
    r.expect("MAIL FROM:<" + "s" * 64 + "@remote.test>", 250, "2.1.0")
    for path in ("<alice@example.test.>", "<alice..x@example.test>", "<.alice@example.test>",
                 "<alice@example.test>x", "<" + "a" * 65 + "@example.test>",
                 "<@example.test>", "<alice@example.test"):
        c, t = r.cmd("RCPT TO:" + path)
        assert c == 501 and t[-1].startswith("5.1.3"), (path, c, t)
    r.expect("QUIT", 221)
    r.close()


# ---------------------------------------------------------------- command bytes

def test_8bit_and_control_bytes_in_commands(lenient):
    """RFC 5321 2.3.1/4.1.1: commands are US-ASCII; without SMTPUTF8 an
    8-bit address is refused; NUL and CTLs are refused; the session goes on."""
    r = session(lenient)
    for line, code, enh in ((b"NO\xc3\xa9OP", 500, "5.5.2"),
                            (b"NOOP\x00", 500, "5.5.2"),
                            (b"NOOP \x00x", 500, "5.5.2"),
                            (b"NOOP\x01", 500, "5.5.2"),
                            (b"MAIL FROM:<a\x00@remote.test>", 500, "5.5.2"),
                            (b"HELO \xff", 501, "5.5.4")):
        r.send(line + b"\r\n")
        c, t = r.reply()
        assert c == code and t[-1].startswith(enh), (line, c, t)
    r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    for line, code, enh in ((b"RCPT TO:<caf\xe9@example.test>", 501, "5.1.3"),
                            (b"RCPT TO:<caf\xc3\xa9@example.test>", 553, "5.6.7"),
                            (b"RCPT TO:<alice@example.test> ORCPT=rfc822;\xc3\xa9@x", 501,
                             "5.5.4")):
        r.send(line + b"\r\n")
        c, t = r.reply()
        assert c == code and t[-1].startswith(enh), (line, c, t)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("QUIT", 221)
    r.close()


def test_lower_case_and_trailing_spaces(surat):
    """RFC 5321 2.4: verbs and parameter keywords are case-insensitive;
    trailing blanks are tolerated."""
    r = Raw(surat.port("smtp"))
    assert r.reply()[0] == 220
    r.expect("ehlo client.test ", 250)
    r.expect("mail from:<s@remote.test> size=30 body=7bit ", 250, "2.1.0")
    r.expect("rcpt to:<alice@example.test>  ", 250, "2.1.5")
    r.expect("NoOp  ", 250, "2.0.0")
    c, t = send_data(r, b"Subject: lc\r\n\r\nx\r\n.\r\n")
    assert c == 250, t
    r.expect("quit ", 221, "2.0.0")
    assert r.closed()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == \
        b"Subject: lc\r\n\r\nx\r\n"


# ---------------------------------------------------------------- line length

def test_command_line_513_octets_refused(surat):
    """RFC 5321 4.5.3.1.4: 512 octets with CRLF; 513 may be refused (500,
    4.5.3.1.10); a 512-octet line split across segments is fine."""
    r = session(surat)
    line = "NOOP " + "c" * 506
    assert len(line) + 2 == 513
    r.expect(line, 500, "5.5.2")
    ok = b"NOOP " + b"d" * 505 + b"\r\n"
    assert len(ok) == 512
    for cut in (1, 200, 509):
        r.send(ok[:cut])
        time.sleep(0.15)
        r.send(ok[cut:])
        c, t = r.reply()
        assert c == 250, (cut, c, t)
    r.expect("QUIT", 221)
    r.close()


def test_command_line_512_octets_split_between_cr_and_lf(surat):
    r = session(surat)
    ok = b"NOOP " + b"d" * 505 + b"\r\n"
    assert len(ok) == 512
    r.send(ok[:-1])
    time.sleep(0.3)
    r.send(ok[-1:])
    c, t = r.reply()
    r.close()
    assert c == 250, (c, t)


def test_overlong_line_split_between_cr_and_lf_spares_the_next_command(surat):
    """An overlong line whose CR and LF come in two segments is one 500, and
    the command after it is answered on its own (no reply is lost)."""
    r = session(surat)
    r.send(b"NOOP " + b"d" * 600 + b"\r")
    time.sleep(0.3)
    r.send(b"\nNOOP\r\n")
    c, t = r.reply()
    assert c == 500 and t[-1].startswith("5.5.2"), (c, t)
    c, t = r.reply()
    r.close()
    assert c == 250, (c, t)


def test_long_command_in_many_segments(surat):
    """A command line arriving a few octets at a time is one command."""
    r = session(surat)
    line = b"MAIL FROM:<" + b"s" * 60 + b"@" + b".".join([b"r" * 50] * 3) + b".test> SIZE=1\r\n"
    for i in range(0, len(line), 37):
        r.send(line[i:i + 37])
        time.sleep(0.01)
    c, t = r.reply()
    assert c == 250, t
    r.close()


def test_bare_lf_does_not_end_a_command(surat):
    r = session(surat)
    r.send(b"NOOP\nNOOP\r\n")
    c, t = r.reply()
    assert c == 500, (c, t)
    assert silent(r)
    r.close()


# ---------------------------------------------------------------- HELO / EHLO / RSET ...

def test_helo_ehlo_arguments(lenient):
    """RFC 5321 4.1.1.1: HELO/EHLO need a domain or address literal (501
    otherwise); a refused EHLO leaves the state as it was (4.1.4)."""
    r = Raw(lenient.port("smtp"))
    assert r.reply()[0] == 220
    for line in ("HELO", "HELO ", "EHLO ", "EHLO a.test b.test", "HELO bad_name",
                 "EHLO " + "x" * 64 + ".test"):
        c, t = r.cmd(line)
        assert c == 501 and t[-1].startswith("5.5.4"), (line, c, t)
    r.expect("MAIL FROM:<s@remote.test>", 503, "5.5.1")
    c, t = r.cmd("HELO client.test")
    assert c == 250 and len(t) == 1, t     # HELO: one line, no extensions
    r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("EHLO bad_name!", 501, "5.5.4")
    r.expect("HELO", 501, "5.5.4")
    # Still in the transaction.
    c, t = send_data(r, b"Subject: kept\r\n\r\nx\r\n.\r\n")
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(lenient, "alice@example.test"))[2] == \
        b"Subject: kept\r\n\r\nx\r\n"


def test_second_ehlo_resets_transaction(surat):
    """RFC 5321 4.1.4: an accepted EHLO (or HELO) later in the session resets
    the state exactly as RSET does."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("EHLO client.test", 250)
    r.expect("DATA", 503, "5.5.1")
    r.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
    r.expect("MAIL FROM:<s2@remote.test>", 250)      # not "nested MAIL"
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("HELO client.test", 250)
    r.expect("DATA", 503, "5.5.1")
    r.expect("MAIL FROM:<s3@remote.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    c, t = send_data(r, b"Subject: third\r\n\r\nx\r\n.\r\n")
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    stored_one(surat, "bob@example.test")
    time.sleep(0.3)
    assert surat.messages("alice@example.test") == []


def test_rset_noop_vrfy_help_quit_replies(lenient):
    """RFC 5321 4.1.1.5-10 and 4.3.2: RSET/QUIT/DATA take no argument (501);
    NOOP and HELP take optional text; VRFY needs one; NOOP, HELP and VRFY do
    not touch the transaction; RFC 2034: every 2xx/5xx carries a code."""
    r = session(lenient)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("RSET now", 501, "5.5.4")
    r.expect("QUIT now", 501, "5.5.4")
    r.expect("DATA now", 501, "5.5.4")
    r.expect("NOOP anything at all", 250, "2.0.0")
    r.expect("HELP", 214, "2.0.0")
    r.expect("HELP MAIL", 214, "2.0.0")
    r.expect("VRFY", 501, "5.5.4")
    c, t = r.cmd("VRFY alice@example.test")
    assert c == 252, (c, t)
    # The transaction survived all of that.
    c, t = send_data(r, b"Subject: survived\r\n\r\nx\r\n.\r\n")
    assert c == 250, t
    r.expect("RSET", 250, "2.0.0")
    r.expect("RSET", 250, "2.0.0")
    r.expect("QUIT", 221, "2.0.0")
    assert r.closed()
    assert b"Subject: survived" in stored_one(lenient, "alice@example.test")


def test_rset_and_noop_before_ehlo(surat):
    """RFC 5321 4.1.4: RSET, NOOP, HELP, QUIT are valid before EHLO; RSET
    does not stand in for it."""
    r = Raw(surat.port("smtp"))
    assert r.reply()[0] == 220
    r.expect("RSET", 250, "2.0.0")
    r.expect("NOOP", 250, "2.0.0")
    r.expect("HELP", 214, "2.0.0")
    r.expect("MAIL FROM:<s@remote.test>", 503, "5.5.1")
    r.expect("QUIT", 221, "2.0.0")
    assert r.closed()


def test_enhanced_codes_match_reply_class(lenient):
    """RFC 3463 2 / RFC 2034: the enhanced code's class equals the first digit
    of the reply, on every 2xx/4xx/5xx reply but the greeting and HELO/EHLO."""
    r = session(lenient)
    lines = ["NOOP", "RSET", "HELP", "VRFY x", "EXPN list", "FOO", "MAIL FROM:<bad",
             "RCPT TO:<alice@example.test>", "DATA", "MAIL FROM:<s@remote.test> FOO=1",
             "MAIL FROM:<s@remote.test>", "MAIL FROM:<s@remote.test>",
             "RCPT TO:<nobody@example.test>", "RCPT TO:<x@remote.test>",
             "RCPT TO:<alice@example.test>", "STARTTLS x", "AUTH PLAIN", "RSET", "QUIT"]
    r.send("".join(l + "\r\n" for l in lines))
    got = replies(r, len(lines))
    for line, (code, text) in zip(lines, got):
        if code // 100 in (2, 4, 5):
            m = re.match(r"^([245])\.\d{1,3}\.\d{1,3} ", text)
            assert m and int(m.group(1)) == code // 100, (line, code, text)
    r.close()


# ---------------------------------------------------------------- AUTH (RFC 4954)

def test_auth_command_syntax(lenient):
    r = session(lenient, "submissions", tls=True)
    r.expect("AUTH", 501, "5.5.4")
    r.expect("AUTH PLAIN a b", 501, "5.5.4")
    r.expect("AUTH " + "A" * 21, 501, "5.5.4")           # sasl-mech is 1*20 chars
    r.expect("AUTH XOAUTH9", 504, "5.5.4")
    # RFC 4954 4: a response that is not base64 -> 501 5.5.2.
    c, t = r.cmd("AUTH LOGIN !!")
    assert c == 501 and t[0] == "5.5.2 Bad base64 in AUTH LOGIN", (c, t)
    c, t = r.cmd("AUTH LOGIN =")                        # "=": an empty response
    assert c == 501 and t[0] == "5.5.2 AUTH LOGIN: empty user name", (c, t)
    r.expect("AUTH LOGIN", 334)
    c, t = r.cmd("")
    assert c == 501 and t[0] == "5.5.2 AUTH LOGIN: empty user name", (c, t)
    r.expect("AUTH LOGIN dXNlcg==", 334)                # "user", then no password
    c, t = r.cmd("=")
    assert c == 501 and t[0] == "5.5.2 AUTH LOGIN: empty password", (c, t)
    r.expect("AUTH PLAIN", 334)
    r.expect("", 501, "5.5.2")
    r.expect("AUTH PLAIN", 334)
    r.expect("AAAA=", 501, "5.5.2")
    # LOGIN with an initial response, cancelled at the password (RFC 4954 4: 501).
    r.expect("AUTH LOGIN " + base64.b64encode(b"alice@example.test").decode(), 334)
    r.expect("*", 501)
    r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    # Lower-case, pipelined LOGIN exchange.
    r.send("auth login\r\n%s\r\n%s\r\n" % (base64.b64encode(b"alice@example.test").decode(),
                                           base64.b64encode(b"alice-pw").decode()))
    assert codes(r, 3) == [334, 334, 235]
    r.expect("AUTH LOGIN", 503, "5.5.1")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("QUIT", 221)
    r.close()


def test_auth_before_ehlo_and_after_helo(surat):
    """RFC 4954 4: AUTH is an ESMTP command: before EHLO, or after HELO, 503."""
    r = Raw(surat.port("submissions"), tls=True)
    assert r.reply()[0] == 220
    ir = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
    r.expect("AUTH PLAIN " + ir, 503, "5.5.1")
    r.expect("HELO client.test", 250)
    r.expect("AUTH PLAIN " + ir, 503, "5.5.1")
    r.expect("EHLO client.test", 250)
    r.expect("AUTH PLAIN " + ir, 235, "2.7.0")
    r.close()


def test_auth_response_line_limit(surat):
    """RFC 4954 4: responses may be 12288 octets long: one that long is
    read (and refused as longer than PLAIN's buffer), one octet more is a
    too-long line; both 500 5.5.6."""
    r = session(surat, "submissions", tls=True)
    r.expect("AUTH PLAIN", 334)
    c, t = r.cmd("A" * 12286)
    assert c == 500 and t[-1] == "5.5.6 Bad AUTH PLAIN data: " \
        "Authentication exchange line is too long", (c, t)
    r.expect("AUTH PLAIN", 334)
    c, t = r.cmd("A" * 12287)
    assert c == 500 and t[-1] == "5.5.6 Authentication exchange line is too long", (c, t)
    r.auth("alice@example.test", "alice-pw")
    r.close()


def test_overlong_auth_line_read_in_pieces(surat):
    """An AUTH line over 12288 octets is 500 5.5.6 even when it arrives in
    pieces (the part after the first says nothing of what the line was);
    an overlong NOOP whose tail looks like AUTH stays 500 5.5.2."""
    r = session(surat, "submissions", tls=True)
    r.send(b"AUTH PLAIN " + b"A" * 14000)
    time.sleep(0.3)
    r.send(b"A" * 100 + b"\r\n")
    c, t = r.reply()
    assert c == 500 and t[-1].startswith("5.5.6 "), (c, t)
    r.send(b"AUTH PLAIN " + b"A" * 14000 + b"\r\n")
    c, t = r.reply()
    assert c == 500 and t[-1].startswith("5.5.6 "), (c, t)
    r.send(b"NOOP " + b"x" * 600)
    time.sleep(0.3)
    r.send(b"AUTH" + b"x" * 10 + b"\r\n")
    c, t = r.reply()
    assert c == 500 and t[-1] == "5.5.2 Line too long", (c, t)
    r.auth("alice@example.test", "alice-pw")
    r.close()


def test_auth_plain_empty_challenge(surat):
    r = session(surat, "submissions", tls=True)
    r.send(b"AUTH PLAIN\r\n")
    got = raw_reply_bytes(r)
    r.close()
    assert got == b"334 \r\n", got


def test_auth_login_challenges_are_base64(surat):
    """RFC 4954 4: each challenge is base64 only, after "334 "."""
    r = session(surat, "submissions", tls=True)
    r.send(b"AUTH LOGIN\r\n")
    assert raw_reply_bytes(r) == b"334 VXNlcm5hbWU6\r\n"
    r.send(base64.b64encode(b"alice@example.test") + b"\r\n")
    assert raw_reply_bytes(r) == b"334 UGFzc3dvcmQ6\r\n"
    r.send(base64.b64encode(b"alice-pw") + b"\r\n")
    assert raw_reply_bytes(r).startswith(b"235 2.7.0 ")
    r.close()


def test_refused_commands_out_of_sequence_count_as_errors(make_populated):
    """smtp.max_errors counts every bad command (as Postfix counts each
    command refused): AUTH after HELO or once authenticated, STARTTLS under
    TLS, DATA after BDAT (RFC 3030 2) and an AUTH the client cancels (RFC
    4954 4), a MAIL refused for its SIZE or, on submission, for a sender
    not the user's are refused again and again, else a client holds its
    session for ever with them (writing an access line each time)."""
    s = make_populated(extra={"smtp.max_errors": "3"})
    ir = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
    cases = (
        ("smtp", False, ["HELO client.test"], ["AUTH PLAIN"], 503),
        ("smtp", False, ["EHLO client.test", "MAIL FROM:<s@remote.test>",
                         "RCPT TO:<alice@example.test>", "BDAT 3\r\nx"], ["DATA"], 503),
        ("submissions", True, ["EHLO client.test"], ["STARTTLS"], 503),
        ("submissions", True, ["EHLO client.test", "AUTH PLAIN " + ir],
         ["AUTH PLAIN " + ir], 503),
        ("submissions", True, ["EHLO client.test"], ["AUTH PLAIN", "*"], 501),
        # A MAIL refused for what it asks: its size, a sender not the user's.
        ("smtp", False, ["EHLO client.test"], ["MAIL FROM:<s@remote.test> SIZE=999999999999"],
         552),
        ("submissions", True, ["EHLO client.test", "AUTH PLAIN " + ir],
         ["MAIL FROM:<ceo@remote.test>"], 553),
    )
    for kind, tls, pre, cmd, code in cases:
        r = Raw(s.port(kind), tls=tls)
        assert r.reply()[0] == 220
        for line in pre:
            c, t = r.cmd(line)
            assert c in (235, 250), (line, c, t)
        for i in range(3):
            for line in cmd[:-1]:
                assert r.cmd(line)[0] == 334
            c, t = r.cmd(cmd[-1])
            assert c == code, (kind, cmd, i, c, t)
        c, t = r.reply()
        assert c == 421 and t[-1].startswith("4.7.0 "), (kind, cmd, c, t)
        assert r.closed(), (kind, cmd)


# ---------------------------------------------------------------- DATA content

def test_quit_inside_data_is_content(surat):
    """RFC 5321 4.1.1.4: until <CRLF>.<CRLF> everything is mail data,
    commands included."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"Subject: quit inside\r\n\r\nQUIT\r\nRSET\r\n")
    assert silent(r, 0.5)
    r.send(b"QUIT\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == \
        b"Subject: quit inside\r\n\r\nQUIT\r\nRSET\r\nQUIT\r\n"


def test_dot_stuffing_removed(surat):
    """RFC 5321 4.5.2: the first character of a line that is a period is
    deleted, whatever follows it ('..' -> '.', '.x' -> 'x', '. ' -> ' ')."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    c, t = send_data(r, b"Subject: dots\r\n\r\n..\r\n...\r\n..x\r\n.x\r\n. \r\nmid.dle\r\n"
                        b"end.\r\n.\r\n")
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == \
        b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nx\r\n \r\nmid.dle\r\nend.\r\n"


def test_data_end_split_across_segments(surat):
    """The end of data and dot-stuffing work whatever the TCP segmenting:
    <CR><LF>.<CR><LF> cut into single octets."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    for part in (b"Subject: split end\r\n\r\nbody\r", b"\n.", b".x\r", b"\n", b".",
                 b"\r", b"\n"):
        r.send(part)
        time.sleep(0.05)
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == \
        b"Subject: split end\r\n\r\nbody\r\n.x\r\n"


def test_last_line_crlf_belongs_to_terminator(surat):
    """RFC 5321 4.1.1.4: the first CRLF of <CRLF>.<CRLF> ends the last line
    (or the DATA command): 'x.<CRLF>' is content, '<DATA CRLF>.<CRLF>' is an
    empty message."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    c, t = send_data(r, b"Subject: tail\r\n\r\nlast line.\r\n.\r\n")
    assert c == 250, t
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    c, t = send_data(r, b".\r\n")
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(surat, "alice@example.test"))[2] == \
        b"Subject: tail\r\n\r\nlast line.\r\n"
    assert split_stored(stored_one(surat, "bob@example.test"))[2] == b""


def test_dot_stuffed_line_of_1000_octets(surat):
    """RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with CRLF, not
    counting the leading dot doubled for transparency."""
    r = session(surat)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    line = b"." + b"y" * 997 + b"\r\n"         # 1000 octets once unstuffed
    c, t = send_data(r, b"Subject: long dot\r\n\r\n." + line + b".\r\n")
    assert c == 250, t
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    c, t = send_data(r, b"Subject: too long\r\n\r\n." + b"." + b"y" * 998 + b"\r\n.\r\n")
    assert c == 550 and t[-1].startswith("5.6.0"), (c, t)
    r.expect("QUIT", 221)
    r.close()
    stored = split_stored(stored_one(surat, "alice@example.test"))[2]
    assert stored == b"Subject: long dot\r\n\r\n" + line


# ---------------------------------------------------------------- leaving early

def test_close_mid_data_nothing_delivered(surat):
    """RFC 5321 4.1.1.4 / 6.1: without the final <CRLF>.<CRLF> and the 250
    nothing is accepted: a client that goes away mid-DATA (even right after
    the CRLF before the dot, or after the dot) leaves no message."""
    for tail in (b"partial body", b"body\r\n", b"body\r\n.", b"body\r\n.\r"):
        r = session(surat)
        r.expect("MAIL FROM:<gone@remote.test>", 250)
        r.expect("RCPT TO:<alice@example.test>", 250)
        r.expect("DATA", 354)
        r.send(b"Subject: gone\r\n\r\n" + tail)
        time.sleep(0.1)
        r.close()
    time.sleep(0.3)
    assert queue_ids(surat) == []
    nothing_delivered(surat)


def test_close_mid_bdat_nothing_delivered(surat):
    """RFC 3030 2: the message ends only with BDAT LAST: a client that leaves
    between chunks or inside the LAST chunk leaves no message."""
    r = session(surat)
    r.expect("MAIL FROM:<gone@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"BDAT 5\r\nhello")
    assert r.reply()[0] == 250
    r.close()
    r = session(surat)
    r.expect("MAIL FROM:<gone@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"BDAT 100 LAST\r\nonly part of it")
    time.sleep(0.1)
    r.close()
    time.sleep(0.3)
    assert queue_ids(surat) == []
    nothing_delivered(surat)


def test_quit_after_rcpt_nothing_delivered(surat):
    r = session(surat)
    r.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nQUIT\r\n")
    assert codes(r, 3) == [250, 250, 221]
    assert r.closed()
    nothing_delivered(surat)


def test_replies_sent_after_client_half_close(surat):
    """RFC 5321 4.1.1.10: the server answers QUIT before it closes; a client
    that sent everything and shut down its sending side still reads every
    reply, and the message is delivered once."""
    idle = session(surat)        # a second session: the spool write goes to a worker
    r = session(surat)
    r.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert codes(r, 3) == [250, 250, 354]
    r.send(b"Subject: half close\r\n\r\nx\r\n.\r\nQUIT\r\n")
    r.sock.shutdown(socket.SHUT_WR)
    c, t = r.reply()
    assert c == 250, t
    assert r.reply()[0] == 221
    assert r.closed()
    r.close()
    idle.close()
    assert b"Subject: half close" in stored_one(surat, "alice@example.test")


def test_half_close_after_a_long_pipeline_loses_no_reply(make_populated):
    """A client that pipelines more than the server's reply backlog, a message
    and QUIT last, shuts down its sending side and only then reads: the
    commands still held back when the end of its input arrives are answered
    and every reply is sent, the message's 250 among them (they were thrown
    away with the connection, and a client not told its message was queued
    sends it again)."""
    # Floods of EHLO: the junk-command limit is not what is tested here.
    s = make_populated({"log.level": "info", "smtp.max_junk_commands": "1000000"})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", s.port("smtp")))
    assert sock.recv(100).startswith(b"220 ")
    n = 30000       # 540 KB of EHLO, 5.5 MB of replies
    tail = (b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
            b"Subject: after the flood\r\n\r\nx\r\n.\r\nQUIT\r\n")

    def send():
        sock.sendall(b"EHLO client.test\r\n" * n + tail)
        sock.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    time.sleep(1.5)     # nothing read meanwhile: the backlog fills
    data = b""
    while True:
        part = sock.recv(1 << 20)
        if not part:
            break
        data += part
    t.join(10)
    sock.close()
    assert data.count(b"250 STARTTLS\r\n") == n, data.count(b"250 STARTTLS\r\n")
    end = data[data.rindex(b"250 STARTTLS\r\n") + 14:]
    assert re.match(rb"250 2\.1\.0 [^\r]*\r\n250 2\.1\.5 [^\r]*\r\n354 [^\r]*\r\n"
                    rb"250 2\.0\.0 Ok: queued as \w+\r\n221 2\.0\.0 Bye\r\n$", end), end
    assert b"Subject: after the flood" in stored_one(s, "alice@example.test")
