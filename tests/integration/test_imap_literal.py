"""LITERAL+ after login and LITERAL- before it (RFC 7888)."""
import socket
import time

from conftest import KINDS


def rd(sock, until, timeout=20):
    sock.settimeout(timeout)
    data = b""
    while until not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def login(s):
    c = socket.create_connection(("127.0.0.1", s.port("imap")), timeout=20)
    greeting = rd(c, b"\r\n")
    assert b"LITERAL-" in greeting and b"LITERAL+" not in greeting
    c.sendall(b"a LOGIN alice@example.test alice-pw\r\n")
    reply = rd(c, b"a OK")
    assert b"a OK" in reply
    return c, reply


def test_literal_plus_after_login(make_surat):
    s = make_surat({"allow_plaintext_auth": "yes", "imap.max_literal": "64K"},
                   kinds=tuple(KINDS) + ("imap",))
    s.add_domain("example.test")
    s.add_user("alice@example.test", "alice-pw")
    c, reply = login(s)
    c.sendall(b"b CAPABILITY\r\n")
    caps = rd(c, b"b OK")
    assert b" LITERAL+" in caps and b"LITERAL-" not in caps
    # A 40,000-octet message sent without waiting for a continuation.
    msg = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 500
    c.sendall(b"c APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    reply = rd(c, b"c ")
    assert b"+ " not in reply.split(b"c ")[0]
    assert b"c OK" in reply and b"APPENDUID" in reply, reply
    # Over imap.max_literal: swallowed whole, NO [TOOBIG], session still usable.
    big = b"y" * (70 * 1024)
    c.sendall(b"d APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
    reply = rd(c, b"d ")
    assert b"d NO [TOOBIG]" in reply, reply
    c.sendall(b"e NOOP\r\n")
    assert b"e OK" in rd(c, b"e OK")
    c.sendall(b"f LOGOUT\r\n")
    rd(c, b"f OK")
    c.close()
    uids = s.messages("alice@example.test")
    assert len(uids) == 1
    assert s.message("alice@example.test", uids[0]) == msg


def test_literal_minus_before_login(make_surat):
    s = make_surat({"allow_plaintext_auth": "yes"}, kinds=tuple(KINDS) + ("imap",))
    c = socket.create_connection(("127.0.0.1", s.port("imap")), timeout=20)
    rd(c, b"\r\n")
    # Over 4096 octets without synchronising before login: refused, swallowed.
    c.sendall(b"a LOGIN {5000+}\r\n" + b"z" * 5000 + b" pw\r\n")
    reply = rd(c, b"a ")
    assert b"a BAD" in reply or b"a NO" in reply, reply
    assert b"TOOBIG" in reply
    c.sendall(b"b NOOP\r\n")
    assert b"b OK" in rd(c, b"b OK")
    c.close()
