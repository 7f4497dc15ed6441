"""SMTP AUTH and STARTTLS against the RFCs, over raw loopback sockets.

What the other test_smtp*.py files do not pin down yet: RFC 4616 field
limits and NUL structure (C-string truncation of a password), RFC 4954
base64 strictness, the 500 5.5.6 reply for a response longer than the
mechanism's buffer, the AUTH= parameter of MAIL FROM without
authentication, authentication surviving RSET/EHLO/HELO, AUTH refused
inside a transaction without harming it, failed-AUTH disconnect policy,
RFC 3207 state reset (EHLO name forgotten, no STARTTLS re-advertised),
CVE-2011-0411 behind a queued message, plaintext after the 220 of
STARTTLS, RFC 8314 implicit TLS that never speaks in clear, and RFC 3463
codes on every reply of these paths.
"""
import base64
import re
import socket
import ssl
import time
import unicodedata

import pytest

from conftest import client_tls
from test_smtp import (Raw, bounded, make_populated, populated_data,  # noqa: F401
                       split_stored, stored_one, surat)
from test_smtp_edge import raw_reply_bytes, replies, silent

TEST_LIMIT = 30     # per test (read by the `bounded` fixture)

ALICE, BOB = "alice@example.test", "bob@example.test"


# ---------------------------------------------------------------- helpers

def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def plain(authz, user, pw):
    def enc(x):
        return x.encode() if isinstance(x, str) else x
    return b64(enc(authz) + b"\0" + enc(user) + b"\0" + enc(pw))


@pytest.fixture
def lenient(make_populated):
    """Many refused commands on purpose: the error limit must not end the session."""
    return make_populated(extra={"smtp.max_errors": "200"})


def tls465(s):
    r = Raw(s.port("submissions"), tls=True)
    r.greet()
    return r


def tls587(s, kind="submission"):
    r = Raw(s.port(kind))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    return r


def enh(text_line):
    m = re.match(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)", text_line)
    return m.group(0).strip() if m else None


def read_until_closed(sock, timeout=5.0):
    """(closed, bytes) read from a socket until EOF/reset or timeout."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return True, got
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return True, got
    except socket.timeout:
        return False, got
    return False, got


# ---------------------------------------------------------------- RFC 4616 (PLAIN)

def test_plain_and_login_accept_maximum_field_lengths(make_populated):
    """RFC 4616 2: authzid, authcid and passwd "MUST accept up to 255
    octets". A 254-octet address (the longest RFC 5321 allows) as authcid
    and authzid, with a 255-octet password: 235 with PLAIN (initial
    response and two-step) and with LOGIN."""
    s = make_populated()
    domain = "a" * 63 + "." + "b" * 63 + "." + "c" * 56 + ".test"
    user = "u" * 64 + "@" + domain
    assert len(user) == 254
    pw = "P" * 200 + "\u00e9" * 27 + "x"         # 255 octets of UTF-8
    assert len(pw.encode()) == 255
    s.add_domain(domain)
    s.add_user(user, pw)
    ir = plain(user, user, pw)
    r = tls465(s)
    r.expect("AUTH PLAIN " + ir, 235, "2.7.0")
    r.close()
    r = tls465(s)
    r.expect("AUTH PLAIN", 334)
    r.expect(plain("", user, pw), 235, "2.7.0")
    r.close()
    r = tls465(s)
    r.expect("AUTH LOGIN", 334)
    r.expect(b64(user), 334)
    r.expect(b64(pw), 235, "2.7.0")
    r.close()
    # One octet short is a wrong password, not a prefix match.
    r = tls465(s)
    r.expect("AUTH PLAIN " + plain("", user, pw[:-1]), 535, "5.7.8")
    r.close()


def test_plain_nul_structure_and_truncation(lenient):
    """RFC 4616 2: message = [authzid] NUL authcid NUL passwd, each field
    1*SAFE (no NUL; authcid and passwd not empty; valid UTF-8). Anything
    else is refused, and above all a password with a NUL inside is never
    read as the C string before it (alice-pw\\0junk is not alice-pw)."""
    r = tls465(lenient)
    bad = [
        b"alice@example.test",                                  # no NUL
        b"\0alice@example.test",                                # one NUL
        b"\0\0alice-pw",                                        # empty authcid
        b"\0alice@example.test\0",                              # empty passwd
        b"\0alice@example.test\0alice-pw\0",                    # trailing NUL
        b"\0alice@example.test\0alice-pw\0junk",                # NUL in passwd
        b"alice@example.test\0alice@example.test\0alice-pw\0",  # trailing NUL
        b"\0alice@example.test\0alice-pw\xff",                  # not UTF-8
        b"\0alice@example.test\xc0\0alice-pw",                  # not UTF-8
    ]
    got = []
    for m in bad:
        c, t = r.cmd("AUTH PLAIN " + b64(m))
        got.append((m, c, enh(t[-1])))
        r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    assert all(c in (501, 535) for _, c, _ in got), got
    assert all(e in ("5.5.2", "5.7.8") for _, _, e in got), got
    # LOGIN: a NUL in the user name or the password is not cut off either.
    for user, pw in ((b"alice@example.test", b"alice-pw\0junk"),
                     (b"alice@example.test\0junk", b"alice-pw")):
        r.expect("AUTH LOGIN", 334)
        c, t = r.cmd(b64(user))
        if c == 334:
            c, t = r.cmd(b64(pw))
        assert c in (501, 535), (user, pw, c, t)
        r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    r.auth(ALICE, "alice-pw")
    r.close()


def test_plain_authzid_naming_the_same_account(surat):
    """RFC 4616 2: the server verifies "that the authentication credentials
    permit the client to act as the (presented or derived) authorization
    identity". The authcid is matched without regard to case (ALICE@... logs
    in as alice@...), so an authzid naming that same account in another
    case is the client acting as itself, not as someone else; a different
    account stays refused."""
    r = tls465(surat)
    r.expect("AUTH PLAIN " + plain("", "ALICE@EXAMPLE.TEST", "alice-pw"), 235, "2.7.0")
    r.close()
    r = tls465(surat)
    r.expect("AUTH PLAIN " + plain(BOB, "ALICE@EXAMPLE.TEST", "alice-pw"), 535, "5.7.8")
    r.close()
    r = tls465(surat)
    c, t = r.cmd("AUTH PLAIN " + plain(ALICE, "ALICE@EXAMPLE.TEST", "alice-pw"))
    r.close()
    assert (c, enh(t[-1])) == (235, "2.7.0"), (c, t)


def test_base64_strictness(lenient):
    """RFC 4954 4: "servers ... MUST reject (and not ignore) any character
    not explicitly allowed by the BASE64 alphabet, and MUST reject any
    sequence ... that contains the pad character ('=') anywhere other than
    the end" -- "with a 501 reply (and an enhanced status code of 5.5.2)".
    bob's PLAIN message is 24 octets: its encoding has no padding, so a
    decoder that skipped junk or stopped at '=' would log him in."""
    good = plain("", BOB, "bob-pw")
    assert len(good) == 32 and "=" not in good
    r = tls465(lenient)
    continuation = [good[:16] + " " + good[16:],       # space inside
                    good + " ",                         # trailing space
                    good[:16] + "\t" + good[16:],       # tab inside
                    good + "=AAA",                      # pad, then more
                    "=AAA" + good,                      # pad first
                    good[:16] + "AA==" + good[16:],     # pad in the middle
                    good[:16] + "-_" + good[18:]]       # base64url alphabet
    got = []
    for line in continuation:
        r.expect("AUTH PLAIN", 334)
        c, t = r.cmd(line)
        got.append(("continuation", line, c, enh(t[-1])))
        r.expect("MAIL FROM:<bob@example.test>", 530, "5.7.0")
    for ir in (good + "=AAA", good[:16] + "AA==" + good[16:], good[:16] + "-_" + good[18:],
               good[:16] + "." + good[17:]):
        c, t = r.cmd("AUTH PLAIN " + ir)
        got.append(("initial", ir, c, enh(t[-1])))
        r.expect("MAIL FROM:<bob@example.test>", 530, "5.7.0")
    r.expect("AUTH PLAIN " + good, 235, "2.7.0")
    r.close()
    wrong = [g for g in got if (g[2], g[3]) != (501, "5.5.2")]
    assert not wrong, "want 501 5.5.2, got:\n" + "\n".join(map(repr, wrong))


def test_auth_response_longer_than_mechanism_buffer(lenient):
    """RFC 4954 4: "If, during an authentication exchange, the server
    receives a line that is longer than the server's authentication buffer,
    the server fails the AUTH command with the 500 reply. Servers using the
    enhanced status codes extension SHOULD return an enhanced status code
    of 5.5.6 in this case." (Also 6: "500 5.5.6 ... a [BASE64] response that
    is longer than the maximum buffer size available for the currently
    selected SASL mechanism".) PLAIN's buffer here holds 3 x 256 octets
    (1024 base64 characters), LOGIN's 255 octets per step: every response
    below is valid base64 on a line well under 12288 octets."""
    r = tls465(lenient)
    big_plain = plain("", ALICE, "x" * 900)              # valid base64, 1228 chars
    big_user = b64("u" * 400)                             # valid base64, 536 chars
    got = []

    def case(name, *lines):
        for line in lines[:-1]:
            c, t = r.cmd(line)
            assert c == 334, (name, c, t)
        c, t = r.cmd(lines[-1])
        got.append((name, c, enh(t[-1])))
        r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")

    case("PLAIN response", "AUTH PLAIN", big_plain)
    case("PLAIN initial response", "AUTH PLAIN " + big_plain)
    case("LOGIN user name", "AUTH LOGIN", big_user)
    case("LOGIN initial response", "AUTH LOGIN " + big_user)
    case("LOGIN password", "AUTH LOGIN", b64(ALICE), b64("p" * 400))
    r.auth(ALICE, "alice-pw")                             # and the session goes on
    r.close()
    wrong = [g for g in got if (g[1], g[2]) != (500, "5.5.6")]
    assert not wrong, "want 500 5.5.6, got:\n" + "\n".join(map(repr, wrong))


# ---------------------------------------------------------------- exchange state

def test_login_cancel_at_user_name_restarts_cleanly(surat):
    """RFC 4954 4: "*" cancels with 501; a later AUTH LOGIN starts over with
    the user name challenge, and nothing of the cancelled exchange (bob's
    name) survives. Lines inside the exchange are responses, never
    commands: QUIT, RSET and EHLO there are a password or refused data,
    and the session stays open."""
    r = tls465(surat)
    r.send(b"AUTH LOGIN\r\n")
    assert raw_reply_bytes(r) == b"334 VXNlcm5hbWU6\r\n"
    r.send(b"*\r\n")
    c, t = r.reply()
    assert c == 501, (c, t)
    r.expect("AUTH LOGIN", 334)
    r.expect(b64(BOB), 334)
    r.expect("*", 501)
    r.send(b"AUTH LOGIN\r\n")
    assert raw_reply_bytes(r) == b"334 VXNlcm5hbWU6\r\n"   # user name again
    r.expect(b64(BOB), 334)
    # "QUIT" and "RSET" are valid base64 (3 octets each): here they are a
    # password, answered 535 like any wrong one, and the session stays.
    r.send(b"QUIT\r\n")
    c, t = r.reply()
    assert (c, enh(t[-1])) == (535, "5.7.8"), (c, t)
    r.expect("AUTH PLAIN", 334)
    r.expect("RSET", 501, "5.5.2")                      # 3 octets, no NUL: not PLAIN
    r.expect("AUTH PLAIN", 334)
    r.expect("EHLO client.test", 501, "5.5.2")          # a space: not base64
    r.expect("MAIL FROM:<bob@example.test>", 530, "5.7.0")
    r.expect("AUTH LOGIN", 334)
    # Only alice's name from here on: the password is alice's, so 235.
    r.expect(b64(ALICE), 334)
    r.expect(b64("alice-pw"), 235, "2.7.0")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("QUIT", 221)
    r.close()


def test_authentication_survives_rset_ehlo_helo(surat):
    """RSET and a new EHLO/HELO reset the transaction (RFC 5321 4.1.4), not
    the authentication: MAIL needs no new AUTH, and a new AUTH is still
    "503" (RFC 4954 4: "After a successful AUTH command completes, a server
    MUST reject any further AUTH commands with a 503 reply")."""
    r = tls465(surat)
    r.auth(ALICE, "alice-pw")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RSET", 250)
    r.expect("EHLO client.test", 250)
    r.expect("AUTH PLAIN " + plain("", BOB, "bob-pw"), 503, "5.5.1")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("HELO client.test", 250)
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"From: alice@example.test\r\nSubject: after helo\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    _, received, _ = split_stored(stored_one(surat, BOB))
    assert "authenticated" not in received, received     # (submission.received_user = no)


def test_auth_refused_in_transaction_keeps_it(surat):
    """RFC 4954 4: "An AUTH command issued during a mail transaction MUST be
    rejected with a 503 reply" -- a rejected command, so the transaction it
    interrupted goes on, and authentication did not happen."""
    r = tls587(surat, "smtp")
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("AUTH PLAIN " + plain("", ALICE, "alice-pw"), 503, "5.5.1")
    r.expect("AUTH LOGIN", 503, "5.5.1")
    r.expect("RCPT TO:<friend@remote.test>", 554, "5.7.1")   # not authenticated
    r.expect("DATA", 354)
    r.send(b"Subject: kept\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("AUTH PLAIN " + plain("", ALICE, "alice-pw"), 235, "2.7.0")
    r.expect("QUIT", 221)
    r.close()
    _, received, rest = split_stored(stored_one(surat, ALICE))
    assert rest == b"Subject: kept\r\n\r\nx\r\n" and "authenticated" not in received


def test_mail_auth_parameter_without_authentication(surat):
    """RFC 4954 5: "servers that advertise support for this extension MUST
    support the AUTH parameter to the MAIL FROM command even when the client
    has not authenticated itself", and then "MUST behave as if the AUTH=<>
    parameter was supplied": AUTH=<> and an xtext mailbox are accepted on
    the MX port over TLS (where AUTH is advertised), and a claimed local
    identity gives no relaying and no "authenticated as"."""
    r = tls587(surat, "smtp")
    r.expect("MAIL FROM:<s@remote.test> AUTH=<>", 250, "2.1.0")
    r.expect("RSET", 250)
    r.expect("MAIL FROM:<alice@example.test> AUTH=alice@example.test", 250, "2.1.0")
    r.expect("RCPT TO:<friend@remote.test>", 554, "5.7.1")
    r.expect("RSET", 250)
    # The RFC's own example (5.1), "=" encoded as +3D.
    r.expect("MAIL FROM:<e=mc2@remote.test> AUTH=e+3Dmc2@remote.test", 250, "2.1.0")
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"Subject: auth param\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    _, received, _ = split_stored(stored_one(surat, ALICE))
    assert "authenticated" not in received and "ESMTPSA" not in received, received
    # After AUTH on submission the parameter is still taken (RFC 4954 5).
    r = tls465(surat)
    r.auth(ALICE, "alice-pw")
    r.expect("MAIL FROM:<alice@example.test> AUTH=<>", 250, "2.1.0")
    r.expect("QUIT", 221)
    r.close()


def test_three_failed_auths_before_any_disconnect(make_populated):
    """RFC 4954 9: "Servers MAY implement a policy whereby the connection is
    dropped after a number of failed authentication attempts. If they do so,
    they SHOULD NOT drop the connection until at least 3 attempts to
    authenticate have failed." Here smtp.max_errors = 2."""
    s = make_populated(extra={"smtp.max_errors": "2"})
    r = tls465(s)
    got = []
    for _ in range(3):
        try:
            c, t = r.cmd("AUTH PLAIN " + plain("", ALICE, "wrong"))
        except (EOFError, OSError) as e:
            got.append(("closed", repr(e)))
            break
        got.append((c, t[-1]))
        if c == 421:
            break
        if r.buf:
            got.append(("then", r.reply()))
    r.close()
    # Dropped at the third at the earliest (a 421 may follow it).
    assert [g[0] for g in got][:3] == [535, 535, 535], got


# ---------------------------------------------------------------- RFC 3207 (STARTTLS)

def test_starttls_forgets_ehlo_and_is_not_offered_again(surat):
    """RFC 3207 4.2: after the handshake the session is at its initial state
    ("The server MUST discard any knowledge obtained from the client, such
    as the argument to the EHLO command"): MAIL and AUTH before a new EHLO
    are 503; "The server MUST NOT return the STARTTLS extension in response
    to an EHLO command received after a TLS handshake has completed"; and
    the Received: header names the EHLO given over TLS, never the one before."""
    r = Raw(surat.port("submission"))
    assert r.reply()[0] == 220
    ehlo = r.expect("EHLO pre-tls.example", 250)
    assert "STARTTLS" in ehlo
    r.starttls()
    r.expect("MAIL FROM:<alice@example.test>", 503, "5.5.1")
    r.expect("AUTH PLAIN " + plain("", ALICE, "alice-pw"), 503, "5.5.1")
    r.expect("HELO helo-tls.example", 250)
    r.expect("AUTH PLAIN " + plain("", ALICE, "alice-pw"), 503, "5.5.1")   # HELO: no ESMTP
    ehlo = r.expect("EHLO post-tls.example", 250)
    assert not any(l.upper().startswith("STARTTLS") for l in ehlo), ehlo
    assert any(l.upper().startswith("AUTH ") and "PLAIN" in l.upper() for l in ehlo), ehlo
    r.expect("STARTTLS", 503, "5.5.1")
    r.auth(ALICE, "alice-pw")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"From: alice@example.test\r\nSubject: names\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    _, received, _ = split_stored(stored_one(surat, BOB))
    assert "post-tls.example" in received, received
    assert "pre-tls.example" not in received and "helo-tls" not in received, received


def test_starttls_injection_behind_a_queued_message(surat):
    """CVE-2011-0411 with STARTTLS read only after the end of a message (the
    session waits for the spool write first): the plaintext pipelined after
    it is still discarded, nothing answers it in clear or over TLS, and the
    injected transaction never happens."""
    r = Raw(surat.port("smtp"))
    r.greet()
    r.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [c for c, _ in replies(r, 3)] == [250, 250, 354]
    r.send(b"Subject: before tls\r\n\r\nx\r\n.\r\nSTARTTLS\r\n"
           b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
           b"Subject: injected\r\n\r\ny\r\n.\r\nNOOP\r\n")
    c, t = r.reply()
    assert c == 250, t
    c, t = r.reply()
    assert (c, enh(t[-1])) == (220, "2.0.0"), (c, t)
    assert silent(r, 0.4), r.buf                      # nothing more in clear
    r.sock = client_tls().wrap_socket(r.sock)
    r.send(b"EHLO client.test\r\n")
    c, t = r.reply()
    assert c == 250 and any(l.startswith("AUTH") for l in t), (c, t)
    r.expect("RCPT TO:<bob@example.test>", 503, "5.5.1")
    r.expect("DATA", 503, "5.5.1")
    r.expect("QUIT", 221)
    r.close()
    assert b"Subject: before tls" in stored_one(surat, ALICE)
    time.sleep(0.4)
    assert surat.messages(BOB) == []


def test_plaintext_after_starttls_reply_is_never_answered(surat):
    """RFC 3207 4: after "220 Ready to start TLS" only a TLS handshake may
    follow. A client (or a downgrading man in the middle) that goes on in
    clear gets no SMTP reply in clear and the connection ends."""
    r = Raw(surat.port("submission"))
    r.greet()
    r.expect("STARTTLS", 220, "2.0.0")
    r.send(b"EHLO client.test\r\nAUTH PLAIN " + plain("", ALICE, "alice-pw").encode() +
           b"\r\n")
    closed, got = read_until_closed(r.sock, 5)
    r.close()
    assert not re.search(rb"(^|\r\n)\d{3}[ -]", got), got
    assert closed, "still open after 5s, got %r" % got


# ---------------------------------------------------------------- RFC 8314

def test_implicit_tls_port_never_speaks_plaintext(surat):
    """RFC 8314 3.3: on the submissions port TLS starts at once; the server
    sends no plaintext greeting, answers no plaintext command, and ends a
    connection that does not start TLS."""
    sock = socket.create_connection(("127.0.0.1", surat.port("submissions")), timeout=5)
    try:
        sock.settimeout(0.5)
        try:
            first = sock.recv(100)
        except socket.timeout:
            first = b""
        assert first == b"", first
        sock.sendall(b"EHLO client.test\r\nAUTH PLAIN " +
                     plain("", ALICE, "alice-pw").encode() + b"\r\n")
        closed, got = read_until_closed(sock, 5)
    finally:
        sock.close()
    assert not re.search(rb"(^|\r\n)\d{3}[ -]", got), got
    assert closed, "still open after 5s, got %r" % got
    # A TLS client is served at once, TLS 1.2 or later (RFC 8314 4.1).
    ctx = client_tls()
    with socket.create_connection(("127.0.0.1", surat.port("submissions")), timeout=5) as raw:
        with ctx.wrap_socket(raw) as t:
            assert t.version() in ("TLSv1.2", "TLSv1.3"), t.version()
            t.settimeout(5)
            assert t.recv(4) == b"220 "


# ---------------------------------------------------------------- RFC 3463

def test_enhanced_codes_on_every_auth_and_starttls_reply(lenient):
    """RFC 2034 / RFC 3463: with ENHANCEDSTATUSCODES every 2xx/4xx/5xx reply
    carries a code whose class is the reply's first digit; 334 challenges
    carry base64 only (RFC 4954 4)."""
    s = lenient
    seen = []

    def run(r, line):
        c, t = r.cmd(line)
        seen.append((line[:40], c, t))
        return c, t

    r = Raw(s.port("submission"))
    r.greet()
    for line in ("AUTH PLAIN " + plain("", ALICE, "alice-pw"), "AUTH LOGIN",
                 "MAIL FROM:<alice@example.test>", "RCPT TO:<bob@example.test>",
                 "STARTTLS now"):
        run(r, line)
    run(r, "STARTTLS")
    r.sock = client_tls().wrap_socket(r.sock)
    for line in ("AUTH PLAIN " + plain("", ALICE, "alice-pw"), "EHLO client.test",
                 "AUTH XFOO", "AUTH PLAIN a b", "AUTH PLAIN", "*", "AUTH LOGIN", "*",
                 "AUTH PLAIN " + plain("", ALICE, "wrong"), "AUTH PLAIN abc",
                 "AUTH PLAIN " + plain(BOB, ALICE, "alice-pw"), "AUTH PLAIN =",
                 "AUTH PLAIN", "A" * 13000, "MAIL FROM:<alice@example.test>",
                 "AUTH PLAIN " + plain("", ALICE, "alice-pw"), "AUTH LOGIN", "STARTTLS",
                 "MAIL FROM:<alice@example.test> AUTH=<>", "AUTH PLAIN", "RSET", "QUIT"):
        run(r, line)
    r.close()
    r = tls465(s)
    run(r, "STARTTLS")
    r.close()
    bad = []
    for line, c, t in seen:
        if line.startswith("EHLO"):
            continue        # RFC 2034 3: no code on the EHLO reply
        if c == 334:
            if not all(re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", x) for x in t):
                bad.append((line, c, t))
            continue
        for x in t:
            e = enh(x)
            if e is None or int(e[0]) != c // 100:
                bad.append((line, c, t))
                break
    assert not bad, "\n".join(map(repr, bad))
    codes = [c for _, c, _ in seen]
    assert 235 in codes and 538 in codes and 535 in codes and 220 in codes, seen


# ---------------------------------------------------------------- accounts database errors

def test_accounts_database_error_is_temporary_not_bad_credentials(make_populated):
    """A failed account lookup is the server's fault: 454 4.7.0 (RFC 4954 6),
    [SYS/TEMP] (RFC 3206) and [UNAVAILABLE] (RFC 5530), as Postfix and
    Dovecot answer, never "credentials invalid", which makes clients drop
    or ask again for a good password; nor is it counted as a failure."""
    import imaplib
    import os
    import sqlite3
    s = make_populated(extra={"allow_plaintext_auth": "yes"},
                       kinds=("submission", "imap", "pop3"))
    smtp = Raw(s.port("submission"))
    smtp.greet()
    pop = socket.create_connection(("127.0.0.1", s.port("pop3")), timeout=10)
    popf = pop.makefile("rb")
    assert popf.readline().startswith(b"+OK")
    imap = imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=10)
    db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"), timeout=10,
                         isolation_level=None)
    db.execute("ALTER TABLE users RENAME TO users_away")
    try:
        for _ in range(3):   # never "too many failures"
            code, text = smtp.cmd("AUTH PLAIN " + plain("", ALICE, "alice-pw"))
            assert code == 454 and text[0].startswith("4.7.0"), (code, text)
            pop.sendall(b"USER %s\r\nPASS alice-pw\r\n" % ALICE.encode())
            assert popf.readline().startswith(b"+OK")
            r = popf.readline()
            assert r.startswith(b"-ERR [SYS/TEMP]"), r
            typ, data = imap._simple_command("LOGIN", ALICE, "alice-pw")
            assert typ == "NO" and b"[UNAVAILABLE]" in data[-1], (typ, data)
    finally:
        db.execute("ALTER TABLE users_away RENAME TO users")
    code, _ = smtp.cmd("AUTH PLAIN " + plain("", ALICE, "alice-pw"))
    assert code == 235
    pop.sendall(b"USER %s\r\nPASS alice-pw\r\n" % ALICE.encode())
    assert popf.readline().startswith(b"+OK")
    assert popf.readline().startswith(b"+OK Logged in")
    imap.login(ALICE, "alice-pw")
    assert "accounts database error" in s.log()
