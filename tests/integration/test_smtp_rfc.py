"""SMTP in: conformance of the command layer to the RFCs, over raw sockets.

What the other test_smtp*.py files leave out: RFC 3030 after BDAT LAST,
RFC 1870 SIZE values of 20 digits, RFC 5321 4.4 Return-Path at final
delivery, the EHLO reply grammar (4.1.1.1, 4.2) at the 255-octet domain
limit (4.5.3.1.2) and 256-octet paths (4.5.3.1.3), what HELO leaves out
(RFC 1869 / 6152 / 6531 parameters), 500/501 for MAIL and RCPT forms,
SMTPUTF8 for U-label domains (RFC 6531 3.4), dot transparency on the first
line of DATA (4.5.2) and RFC 3463 on codes the other files do not check.
Both the MX listener and the submission listener (plaintext AUTH allowed
by config, so no TLS is needed) are driven where the rules are the same.
"""
import base64
import re

import pytest

from test_smtp import (Raw, bounded, make_populated, populated_data,  # noqa: F401
                       split_stored, stored_one)
from test_smtp_edge import silent

TEST_LIMIT = 20     # per test (read by the `bounded` fixture)
KINDS = ("smtp", "submission")


@pytest.fixture
def daemon(make_populated):
    """Errors do not end the session; AUTH PLAIN works without TLS on 587."""
    return make_populated(extra={"smtp.max_errors": "100", "allow_plaintext_auth": "yes"},
                          kinds=("smtp", "submission"))


def session(s, kind="smtp"):
    """Greeted (EHLO) and, on submission, authenticated as alice."""
    r = Raw(s.port(kind))
    c, t = r.reply()
    assert c == 220, t
    r.expect("EHLO client.test", 250)
    if kind == "submission":
        ir = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
        r.expect("AUTH PLAIN " + ir, 235, "2.7.0")
    return r


SENDER = {"smtp": "s@remote.test", "submission": "alice@example.test"}
RCPT = {"smtp": "alice@example.test", "submission": "bob@example.test"}


def body(kind, subject):
    return ("From: %s\r\nTo: x@example.test\r\nSubject: %s\r\n\r\nx\r\n" %
            (SENDER[kind], subject)).encode()


def enh_ok(code, text):
    """RFC 3463 2: the reply text starts with class.subject.detail, class
    being the reply's first digit."""
    m = re.match(r"^([245])\.(\d{1,3})\.(\d{1,3})( |$)", text)
    return bool(m) and int(m.group(1)) == code // 100


# ---------------------------------------------------------------- RFC 3030


@pytest.mark.parametrize("kind", KINDS)
def test_bdat_after_bdat_last_is_503(daemon, kind):
    """RFC 3030 2: "Any BDAT command sent after the BDAT LAST is illegal and
    MUST be replied to with a 503 "Bad sequence of commands" reply code."
    The chunk's octets must still be consumed (the session stays in sync)."""
    r = session(daemon, kind)
    r.expect("MAIL FROM:<%s>" % SENDER[kind], 250, "2.1.0")
    r.expect("RCPT TO:<%s>" % RCPT[kind], 250, "2.1.5")
    b = body(kind, "chunked")
    r.send(b"BDAT 0\r\n")                       # an empty chunk that is not the last
    c, t = r.reply()
    assert c == 250 and enh_ok(c, t[-1]), (c, t)
    r.send(b"BDAT %d LAST\r\n" % len(b) + b)
    c, t = r.reply()
    assert c == 250 and enh_ok(c, t[-1]), (c, t)
    # A chunk after the LAST one, in the same "transaction" as far as the
    # client is concerned: no MAIL came since.
    r.send(b"BDAT 5\r\nhello")
    c, t = r.reply()
    bdat_after_last = (c, t)
    r.send(b"BDAT 3 LAST\r\nabc")
    c2, t2 = r.reply()
    r.expect("RSET", 250, "2.0.0")
    r.expect("NOOP", 250, "2.0.0")
    assert silent(r, 0.3)
    r.expect("QUIT", 221, "2.0.0")
    r.close()
    assert stored_one(daemon, RCPT[kind])        # the first message, only
    assert bdat_after_last[0] == 503 and bdat_after_last[1][-1].startswith("5.5.1"), \
        bdat_after_last
    assert c2 // 100 == 5 and t2[-1].startswith("5."), (c2, t2)


# ---------------------------------------------------------------- RFC 1870


@pytest.mark.parametrize("kind", KINDS)
def test_size_of_twenty_digits_exceeds_the_limit(daemon, kind):
    """RFC 1870 5/6: size-value ::= 1*20DIGIT, so a 20-digit SIZE is
    well-formed; a value above the fixed maximum gets 552 (5.3.4, RFC 3463),
    not a syntax error. 2^64 and 10^20-1 are both above any limit."""
    r = session(daemon, kind)
    got = []
    for v in ("18446744073709551615", "18446744073709551616", "99999999999999999999"):
        c, t = r.cmd("MAIL FROM:<%s> SIZE=%s" % (SENDER[kind], v))
        got.append((v, c, t[-1]))
        if c == 250:
            r.expect("RSET", 250)
    # The refusal left no transaction behind (RFC 5321 4.1.4).
    r.expect("RCPT TO:<%s>" % RCPT[kind], 503, "5.5.1")
    r.expect("MAIL FROM:<%s> SIZE=0" % SENDER[kind], 250, "2.1.0")
    r.expect("QUIT", 221)
    r.close()
    bad = [g for g in got if not (g[1] == 552 and g[2].startswith("5.3.4 "))]
    assert not bad, bad


# ---------------------------------------------------------------- RFC 5321 4.4


@pytest.mark.parametrize("kind", KINDS)
def test_return_path_inserted_at_final_delivery(daemon, kind):
    """RFC 5321 4.4: "When the delivery SMTP server makes the "final
    delivery" of a message, it inserts a return-path line at the beginning
    of the mail data. This use of return-path is required; mail systems
    MUST support it." The null reverse-path gives Return-Path: <>."""
    for n, sender in enumerate((SENDER[kind], "")):
        r = session(daemon, kind)
        r.expect("MAIL FROM:<%s>" % sender, 250, "2.1.0")
        r.expect("RCPT TO:<%s>" % RCPT[kind], 250, "2.1.5")
        r.expect("DATA", 354)
        r.send(body(kind, "rp%d" % n) + b".\r\n")
        c, t = r.reply()
        assert c == 250 and t[-1].startswith("2.0.0"), (c, t)
        r.expect("QUIT", 221)
        r.close()
        stored = stored_one(daemon, RCPT[kind], n + 1)
        head = stored.split(b"\r\n\r\n", 1)[0]
        first_received = head.find(b"\r\nReceived:")
        assert first_received > 0, stored[:400]
        rp = re.findall(rb"(?mi)^Return-Path:[ \t]*(<[^>\r\n]*>)", head[:first_received + 2])
        assert rp == [b"<" + sender.encode() + b">"], stored[:400]


# ---------------------------------------------------------------- EHLO / HELO


def test_ehlo_reply_grammar_and_domain_limit(daemon):
    """RFC 5321 4.1.1.1 / 4.2: ehlo-ok-rsp is "250-" Domain [SP ehlo-greet]
    then "250-"/"250 " ehlo-line, every line with the same code; ehlo-keyword
    = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); 4.5.3.1.5: reply lines of at most
    512 octets with CRLF. 4.5.3.1.2: a domain of 255 octets is within the
    limit, so EHLO with one is accepted."""
    name255 = ".".join(["a" * 63] * 3 + ["b" * 61, "t"])
    assert len(name255) == 255
    r = Raw(daemon.port("smtp"))
    assert r.reply()[0] == 220
    for name in ("client.test", "[IPv6:2001:db8:0:0:0:0:0:1]", "[192.0.2.1]", name255):
        r.send("EHLO %s\r\n" % name)
        raw = []
        while True:
            while b"\r\n" not in r.buf:
                chunk = r.sock.recv(65536)
                assert chunk, r.buf
                r.buf += chunk
            line, r.buf = r.buf.split(b"\r\n", 1)
            raw.append(line)
            if line[3:4] != b"-":
                break
        assert all(len(l) + 2 <= 512 for l in raw), (name, [len(l) for l in raw])
        assert all(l[:3] == b"250" for l in raw), (name, raw)
        assert all(l[3:4] == b"-" for l in raw[:-1]) and raw[-1][3:4] in (b" ", b""), raw
        first = raw[0][4:].decode()
        assert first.split(" ")[0] == "mx.example.test", raw[0]
        kws = {}
        for l in raw[1:]:
            text = l[4:].decode()
            assert re.match(r"^[A-Za-z0-9][A-Za-z0-9-]*( [\x21-\x7e]+)*$", text), (name, text)
            kws[text.split(" ")[0].upper()] = text
        for k in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                  "CHUNKING"):
            assert k in kws, (name, kws)
        assert re.match(r"^SIZE( \d+)?$", kws["SIZE"]), kws["SIZE"]
    # HELO: one line, "250 SP Domain [SP textstring]" and nothing else.
    r.send("HELO %s\r\n" % name255)
    c, t = r.reply()
    assert c == 250 and len(t) == 1 and t[0].split(" ")[0] == "mx.example.test", (c, t)
    r.expect("QUIT", 221)
    r.close()


EHLO_ALWAYS = {"PIPELINING", "SIZE 12345", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
               "CHUNKING", "DSN"}


def ehlo_keywords(r, name="client.test"):
    """The EHLO reply's service lines, as a set (the greeting line left out)."""
    return set(r.expect("EHLO " + name, 250)[1:])


def test_ehlo_keywords_on_each_listener(make_populated):
    """The whole EHLO set, per listener and state: the seven extensions
    always, SIZE with smtp.max_message_size; STARTTLS until TLS is on (never
    on 465); AUTH only over TLS (allow_plaintext_auth is off), and no more
    once the session has authenticated."""
    s = make_populated(extra={"smtp.max_message_size": "12345"})
    auth = {"AUTH PLAIN LOGIN"}
    for kind in ("smtp", "submission"):
        r = Raw(s.port(kind))
        assert r.reply()[0] == 220
        assert ehlo_keywords(r) == EHLO_ALWAYS | {"STARTTLS"}, kind
        r.starttls()
        assert ehlo_keywords(r) == EHLO_ALWAYS | auth, kind
        r.auth("alice@example.test", "alice-pw")
        assert ehlo_keywords(r) == EHLO_ALWAYS, kind
        r.expect("QUIT", 221)
        r.close()
    r = Raw(s.port("submissions"), tls=True)
    assert r.reply()[0] == 220
    assert ehlo_keywords(r) == EHLO_ALWAYS | auth
    r.auth("alice@example.test", "alice-pw")
    assert ehlo_keywords(r) == EHLO_ALWAYS
    r.expect("QUIT", 221)
    r.close()


def test_helo_gives_no_service_extensions(daemon):
    """RFC 5321 4.1.1.1 / 2.2: after HELO no extension is in effect, so
    MAIL/RCPT parameters of BODY (RFC 6152), SMTPUTF8 (RFC 6531), SIZE
    (RFC 1870), DSN are not recognised: 555 (4.1.1.11); the plain command
    works; EHLO afterwards restores them."""
    r = Raw(daemon.port("smtp"))
    assert r.reply()[0] == 220
    r.expect("HELO client.test", 250)
    for params in ("BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8", "RET=HDRS", "ENVID=x"):
        c, t = r.cmd("MAIL FROM:<s@remote.test> " + params)
        assert c == 555 and t[-1].startswith("5.5.4"), (params, c, t)
    r.send("MAIL FROM:<s\u00e9@remote.test>\r\n".encode())
    c, t = r.reply()
    assert c in (553, 501, 555) and t[-1].startswith("5."), (c, t)
    r.expect("MAIL FROM:<s@remote.test>", 250, "2.1.0")
    c, t = r.cmd("RCPT TO:<alice@example.test> NOTIFY=NEVER")
    assert c == 555 and t[-1].startswith("5.5.4"), (c, t)
    r.expect("RCPT TO:<alice@example.test>", 250, "2.1.5")
    r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<s@remote.test> BODY=8BITMIME SMTPUTF8", 250, "2.1.0")
    r.expect("QUIT", 221)
    r.close()


# ---------------------------------------------------------------- paths


def test_path_of_exactly_256_octets(daemon):
    """RFC 5321 4.5.3.1.3: a path of 256 octets, brackets included, is
    within the limit; one over may be refused (501, "Path too long") or taken.
    4.5.3.1.1: a quoted local part of 64 octets, quotes included, is in it."""
    dom189 = ".".join(["r" * 60] * 3) + ".test"      # 60*3 + 2 + 5 = 187
    dom189 = "xy" + dom189                            # 189 octets
    path256 = "<%s@%s>" % ("s" * 64, dom189)
    assert len(path256) == 256
    r = session(daemon)
    r.expect("MAIL FROM:" + path256, 250, "2.1.0")
    c, t = r.cmd("RCPT TO:" + path256)                # parsed, then: not ours
    assert c == 554 and t[-1].startswith("5.7.1"), (c, t)
    c, t = r.cmd("RCPT TO:<%s@%s>" % ("s" * 64, "z" + dom189))    # 257
    assert c in (501, 554), (c, t)
    r.expect("RSET", 250)
    # Local-part = Quoted-string: the DQUOTEs count, 62 octets inside make 64.
    r.expect('MAIL FROM:<"%s"@remote.test>' % ("q" * 60 + " q"), 250, "2.1.0")
    r.expect("QUIT", 221)
    r.close()


def test_mail_rcpt_verb_forms_500_vs_501(daemon):
    """RFC 5321 4.2.4 / 4.3.2: a known verb with a bad argument is 501 (not
    500, which is for an unrecognised command); 501 leaves the state alone
    (4.1.4)."""
    r = session(daemon)
    for line in ("MAIL", "MAIL FROM", "MAIL FROM:", "MAIL TO:<s@remote.test>",
                 "MAIL FROM<s@remote.test>", "MAIL FROM:<s@remote.test", "MAIL FROM:<>x"):
        c, t = r.cmd(line)
        assert c == 501 and t[-1].startswith("5."), (line, c, t)
    r.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
    r.expect("MAIL FROM:<>", 250, "2.1.0")
    for line in ("RCPT", "RCPT TO", "RCPT TO:", "RCPT FROM:<alice@example.test>",
                 "RCPT TO<alice@example.test>"):
        c, t = r.cmd(line)
        assert c == 501 and t[-1].startswith("5."), (line, c, t)
    for line in ("MAILFROM:<>", "RCPTTO:<alice@example.test>", "XMAIL FROM:<>"):
        c, t = r.cmd(line)
        assert c == 500 and t[-1].startswith("5.5.2"), (line, c, t)
    r.expect("RCPT TO:<alice@example.test>", 250, "2.1.5")   # still in the transaction
    r.expect("QUIT", 221)
    r.close()


def test_postmaster_at_our_own_address_literal(daemon):
    """RFC 5321 4.5.1: postmaster MUST be accepted at every domain the server
    serves mail for, and RFC 1123 5.2.17 (which RFC 5321 updates, not
    replaces): "An SMTP MUST accept and recognize a domain literal for any
    of its own IP addresses." So postmaster@[the address the client reached
    us on] is <postmaster>, in any spelling of that literal; another
    address's literal, or another local part at ours, is still not a way
    to relay."""
    daemon.cli("alias", "add", "postmaster@example.test", "bob@example.test")
    r = session(daemon)
    r.expect("MAIL FROM:<s@remote.test>", 250, "2.1.0")
    got = []
    for path in ("<postmaster@[127.0.0.1]>", "<PostMaster@[127.0.0.1]>",
                 '<"postmaster"@[127.0.0.1]>', "<@relay.test:postmaster@[127.0.0.1]>",
                 "<postmaster@[IPv6:::ffff:127.0.0.1]>",
                 "<postmaster@[127.0.0.2]>", "<postmaster@[192.0.2.1]>",
                 "<postmaster@[IPv6:2001:db8::1]>", "<alice@[127.0.0.1]>",
                 "<postmaster@[0.0.0.0]>"):
        c, t = r.cmd("RCPT TO:" + path)
        got.append((path, c, t[-1].split()[0]))
    c, t = r.cmd("DATA")
    if c == 354:
        r.send(body("smtp", "to our literal") + b".\r\n")
        c, t = r.reply()
    r.expect("QUIT", 221)
    r.close()
    assert got == [("<postmaster@[127.0.0.1]>", 250, "2.1.5"),
                   ("<PostMaster@[127.0.0.1]>", 250, "2.1.5"),
                   ('<"postmaster"@[127.0.0.1]>', 250, "2.1.5"),
                   ("<@relay.test:postmaster@[127.0.0.1]>", 250, "2.1.5"),
                   ("<postmaster@[IPv6:::ffff:127.0.0.1]>", 250, "2.1.5"),
                   ("<postmaster@[127.0.0.2]>", 554, "5.7.1"),
                   ("<postmaster@[192.0.2.1]>", 554, "5.7.1"),
                   ("<postmaster@[IPv6:2001:db8::1]>", 554, "5.7.1"),
                   ("<alice@[127.0.0.1]>", 554, "5.7.1"),
                   ("<postmaster@[0.0.0.0]>", 554, "5.7.1")], got
    assert c == 250, (c, t)
    stored = stored_one(daemon, "bob@example.test")
    assert b"Subject: to our literal" in stored
    assert "rcpts=<postmaster@example.test>" in daemon.log()


def test_postmaster_at_our_literal_with_leading_zeros(daemon):
    """RFC 5321 4.1.3: Snum = 1*3DIGIT, so [127.000.000.001] is a valid
    literal for 127.0.0.1, and RFC 1123 5.2.17 makes postmaster at it ours
    like postmaster@[127.0.0.1]; it was refused as a relay attempt."""
    r = session(daemon)
    r.expect("MAIL FROM:<s@remote.test>", 250, "2.1.0")
    got = [(p, r.cmd("RCPT TO:" + p)[0])
           for p in ("<postmaster@[127.000.000.001]>", "<postmaster@[127.0.0.01]>",
                     "<postmaster@[127.000.000.002]>", "<alice@[127.000.000.001]>")]
    r.expect("QUIT", 221)
    r.close()
    assert got == [("<postmaster@[127.000.000.001]>", 250), ("<postmaster@[127.0.0.01]>", 250),
                   ("<postmaster@[127.000.000.002]>", 554),
                   ("<alice@[127.000.000.001]>", 554)], got


def test_ipv6_literal_with_leading_zeros_in_its_ipv4_part(daemon):
    """RFC 5321 4.1.3: IPv6v4-full and IPv6v4-comp end in an
    IPv4-address-literal, whose Snum = 1*3DIGIT allows leading zeros: such a
    literal is valid in EHLO and in a path (it was refused 501), and
    postmaster at it is ours when it names our address (RFC 1123 5.2.17)."""
    r = Raw(daemon.port("smtp"))
    assert r.reply()[0] == 220
    c, t = r.cmd("EHLO [IPv6:::ffff:192.000.002.001]")
    assert c == 250, (c, t)
    r.expect("MAIL FROM:<s@[IPv6:2001:db8::ffff:192.0.2.01]>", 250, "2.1.0")
    got = [(p, r.cmd("RCPT TO:" + p)[0])
           for p in ("<postmaster@[IPv6:::ffff:127.000.000.001]>",
                     "<postmaster@[IPv6:::FFFF:127.0.0.01]>",
                     "<postmaster@[IPv6:::ffff:127.0.0.0001]>")]
    r.expect("QUIT", 221)
    r.close()
    assert got == [("<postmaster@[IPv6:::ffff:127.000.000.001]>", 250),
                   ("<postmaster@[IPv6:::FFFF:127.0.0.01]>", 250),
                   ("<postmaster@[IPv6:::ffff:127.0.0.0001]>", 501)], got


# ---------------------------------------------------------------- RFC 6531


def test_u_label_domain_needs_smtputf8(daemon):
    """RFC 6531 3.4/3.5: a non-ASCII domain (U-label) anywhere in a path,
    the source route (A-d-l) included, without the SMTPUTF8 parameter is
    refused (553 5.6.7, or 501); with it, taken. A quoted local part with
    UTF-8 is no exception."""
    r = session(daemon)
    got = []
    for line in ("MAIL FROM:<s@b\u00fccher.test>", 'MAIL FROM:<"j\u00f6 s"@remote.test>',
                 "MAIL FROM:<@b\u00fccher.test:s@remote.test>"):
        r.send((line + "\r\n").encode())
        c, t = r.reply()
        got.append((line, c, t[-1]))
        if c == 250:
            r.expect("RSET", 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    for line in ("RCPT TO:<alice@b\u00fccher.test>", 'RCPT TO:<"\u00e4"@example.test>',
                 "RCPT TO:<@b\u00fccher.test:alice@example.test>"):
        r.send((line + "\r\n").encode())
        c, t = r.reply()
        got.append((line, c, t[-1]))
    r.expect("RSET", 250)
    for line in ("MAIL FROM:<s@b\u00fccher.test> SMTPUTF8",
                 "MAIL FROM:<@b\u00fccher.test:s@remote.test> SMTPUTF8"):
        r.send((line + "\r\n").encode())
        c, t = r.reply()
        assert c == 250 and t[-1].startswith("2.1.0"), (line, c, t)
        r.expect("RSET", 250)
    r.expect("QUIT", 221)
    r.close()
    bad = [g for g in got if not (g[1] in (553, 501) and g[2].startswith("5."))]
    assert not bad, bad


# ---------------------------------------------------------------- RFC 5321 4.5.2


def test_dot_transparency_on_the_first_line(daemon):
    """RFC 5321 4.5.2: the DATA command's CRLF counts, so a period at the very
    start of the data is a line-start period too: ".." -> "." and ".x" -> "x";
    a line "." there ends an empty message."""
    r = session(daemon)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"..Subject: first\r\n\r\n.x\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, (c, t)
    r.expect("QUIT", 221)
    r.close()
    assert split_stored(stored_one(daemon, "alice@example.test"))[2] == \
        b".Subject: first\r\n\r\nx\r\n"


# ---------------------------------------------------------------- RFC 4954


def test_auth_initial_response_with_8bit_octets_is_501_5_5_2(daemon):
    """RFC 4954 4: "If the server cannot BASE64 decode any client response,
    it MUST reject the AUTH command with a 501 reply (and an enhanced status
    code of 5.5.2)." An initial response holding octets above 127 is such a
    response (it was taken for bad command syntax, 5.5.4); the session goes
    on and a good AUTH still works."""
    r = Raw(daemon.port("submission"))
    assert r.reply()[0] == 220
    r.expect("EHLO client.test", 250)
    got = []
    for line in (b"AUTH PLAIN AGFsaWNl\xc3\xa9", b"AUTH LOGIN \xffYWxpY2U=",
                 b"AUTH PLAIN \x80"):
        r.send(line + b"\r\n")
        c, t = r.reply()
        got.append((line, c, t[-1][:5]))
    ir = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
    r.expect("AUTH PLAIN " + ir, 235, "2.7.0")
    r.expect("QUIT", 221)
    r.close()
    assert [(c, e) for _, c, e in got] == [(501, "5.5.2")] * 3, got


# ---------------------------------------------------------------- RFC 3463


def test_enhanced_codes_on_more_replies(daemon):
    """RFC 2034 / RFC 3463: after EHLO every 2xx/4xx/5xx reply (but HELO/EHLO)
    starts with class.subject.detail of the reply's class: the replies the
    other files do not look at (BDAT, end of DATA, SIZE, DATA after BDAT,
    line too long, 555)."""
    r = session(daemon)
    got = []

    def take(what):
        c, t = r.reply()
        got.append((what, c, t[-1]))

    r.send(b"MAIL FROM:<s@remote.test> SIZE=999999999999\r\n"); take("size")
    r.send(b"MAIL FROM:<s@remote.test> X=1\r\n"); take("555")
    r.send(b"X" * 600 + b"\r\n"); take("too long")
    r.send(b"MAIL FROM:<s@remote.test>\r\n"); take("mail")
    r.send(b"RCPT TO:<alice@example.test>\r\n"); take("rcpt")
    r.send(b"BDAT 4\r\nab\r\n"); take("bdat")
    r.send(b"DATA\r\n"); take("data after bdat")
    r.send(b"BDAT 0 LAST\r\n"); take("bdat last")
    r.send(b"BDAT 2 LAST\r\nab"); take("bdat without mail")
    r.send(b"RSET\r\n"); take("rset")
    r.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    take("mail"); take("rcpt")
    assert r.reply()[0] == 354
    r.send(b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n"); take("data refused")
    r.send(b"VRFY alice\r\n"); take("vrfy")
    r.send(b"QUIT\r\n"); take("quit")
    r.close()
    bad = [g for g in got if g[1] // 100 in (2, 4, 5) and not enh_ok(g[1], g[2])]
    assert not bad, bad
    codes = [g[1] for g in got]
    assert codes[:2] == [552, 555] and codes[2] == 500 and codes[6] == 503, got


def test_vrfy_enhanced_code_is_not_a_syntax_error(daemon):
    """RFC 3463 3.6: X.5.2 is "Syntax error ... This is useful only as a
    permanent error"; the 252 to a well-formed VRFY is not a syntax error
    (RFC 5321 3.5.3 suggests 252 for "cannot verify")."""
    r = session(daemon)
    c, t = r.cmd("VRFY alice@example.test")
    r.expect("QUIT", 221)
    r.close()
    assert c in (250, 251, 252, 550, 551, 553, 502), (c, t)
    assert enh_ok(c, t[-1]), (c, t)
    assert not re.match(r"^2\.5\.2 ", t[-1]), (c, t)
