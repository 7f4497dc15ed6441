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


def login(s, source=None):
    c = socket.create_connection(("127.0.0.1", s.port("imap")), timeout=20,
                                 source_address=(source, 0) if source else None)
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


BIG = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2500      # 2.5 MB


def literal_ceiling_surat(make_surat, memory):
    """A daemon with literals of 3 MB at most, memory of them in all, and alice."""
    s = make_surat({"allow_plaintext_auth": "yes", "imap.max_literal": "3M",
                    "imap.max_literal_memory": memory}, kinds=tuple(KINDS) + ("imap",))
    s.add_domain("example.test")
    s.add_user("alice@example.test", "alice-pw")
    return s


def test_literals_held_at_once_have_a_ceiling(make_surat):
    """A literal is held in memory until its command is done, and a client may
    send one of imap.max_literal on each connection: what all sessions were
    promised is capped by imap.max_literal_memory. One past it is refused for
    now (NO [UNAVAILABLE], before it is sent when synchronising; swallowed
    when not), and the room comes back when the command holding it is done."""
    s = literal_ceiling_surat(make_surat, "4M")
    a, _ = login(s)
    b, _ = login(s)
    a.sendall(b"c APPEND INBOX {%d}\r\n" % len(BIG))
    assert rd(a, b"\r\n").startswith(b"+ ")            # 2.5 MB promised to a
    b.sendall(b"d APPEND INBOX {%d}\r\n" % len(BIG))
    assert rd(b, b"\r\n") == b"d NO [UNAVAILABLE] Too much mail in memory now, try again later\r\n"
    b.sendall(b"e APPEND INBOX {%d+}\r\n" % len(BIG) + BIG + b"\r\n")
    assert b"e NO [UNAVAILABLE]" in rd(b, b"e NO")
    b.sendall(b"f NOOP\r\n")                            # the stream is still in step
    assert b"f OK" in rd(b, b"f OK")
    a.sendall(BIG + b"\r\n")
    assert b"c OK" in rd(a, b"c OK")
    # a's command is done: its room is free again.
    b.sendall(b"g APPEND INBOX {%d+}\r\n" % len(BIG) + BIG + b"\r\n")
    assert b"g OK" in rd(b, b"g OK")
    assert len(s.messages("alice@example.test")) == 2
    for c in (a, b):
        c.sendall(b"z LOGOUT\r\n")
        rd(c, b"z OK")
        c.close()


def test_one_client_holds_a_quarter_of_the_ceiling(make_surat):
    """One client address may be promised a quarter of imap.max_literal_memory
    (never less than imap.max_literal), so that one user's client with many
    connections cannot take the room of all: its next literal is refused for
    now while another address's is taken, and its room comes back when its
    command is done or its connection is gone."""
    s = literal_ceiling_surat(make_surat, "16M")
    a, _ = login(s)
    b, _ = login(s)
    c, _ = login(s, "127.0.0.2")
    a.sendall(b"a1 APPEND INBOX {%d}\r\n" % len(BIG))
    assert rd(a, b"\r\n").startswith(b"+ ")            # 2.5 of 127.0.0.1's 4 MB
    b.sendall(b"b1 APPEND INBOX {%d}\r\n" % len(BIG))
    assert rd(b, b"\r\n") == b"b1 NO [UNAVAILABLE] Too much mail in memory now, try again later\r\n"
    c.sendall(b"c1 APPEND INBOX {%d}\r\n" % len(BIG))
    assert rd(c, b"\r\n").startswith(b"+ ")            # another address: room
    c.sendall(BIG + b"\r\n")
    assert b"c1 OK" in rd(c, b"c1 OK")
    a.close()                                           # gone, its literal unsent
    deadline = time.time() + 10
    while True:
        b.sendall(b"b2 APPEND INBOX {%d}\r\n" % len(BIG))
        line = rd(b, b"\r\n")
        if line.startswith(b"+ ") or time.time() > deadline:
            break
        time.sleep(0.05)
    assert line.startswith(b"+ "), line
    b.sendall(BIG + b"\r\n")
    assert b"b2 OK" in rd(b, b"b2 OK")
    assert len(s.messages("alice@example.test")) == 2
    assert "from this client (4194304 per client)" in s.log()
    for x in (b, c):
        x.sendall(b"z LOGOUT\r\n")
        rd(x, b"z OK")
        x.close()
