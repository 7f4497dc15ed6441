"""The SMTP client's name (smtp.reverse_lookup): the reverse DNS name of
its address, kept only when that name resolves back to the address
(forward-confirmed, as Postfix's client name), else "unknown". It is looked
up before the greeting and goes into our Received: (`from HELO (NAME [IP])`)
and the access log (`client=NAME[IP]`).

Every client here is on loopback, whose reverse zones libunbound answers
itself whatever dns.server says: 127.0.0.1 and ::1 are "localhost", which
has them back; 127.0.0.2 has no name (NXDOMAIN). A name that does not
resolve back, and a DNS that never answers (the greeting's 5 s bound),
cannot be set up from loopback; the code paths are the same failure branch.
"""
import re
import socket

from conftest import free_port, skip_unless_ipv6_loopback
from test_auth_lockout import Line
from test_smtp import (access_lines, bounded, make_populated, msg,  # noqa: F401
                       populated_data, split_stored, stored_one)


def send_from(port, src, body, host="127.0.0.1"):
    """One message to alice from a socket bound to src; returns the replies
    as (code, last line) pairs, the greeting first."""
    c = Line(port, src, host)

    def reply():
        line = c.smtp_reply()
        return int(line[:3]), line

    got = [reply()]
    for cmd in ("EHLO client.test", "MAIL FROM:<s@remote.test>",
                "RCPT TO:<alice@example.test>", "DATA"):
        c.send(cmd)
        got.append(reply())
    c.sock.sendall(body + b".\r\n")
    got.append(reply())
    c.send("QUIT")
    got.append(reply())
    c.close()
    return got


def received_and_client(s, n):
    """Our Received: of alice's n-th message and the access line's client=."""
    _, received, _ = split_stored(stored_one(s, "alice@example.test", n))
    lines = [l for l in access_lines(s) if "result=250" in l]
    assert len(lines) == n, lines
    return received, re.search(r" client=(\S+) ", lines[-1]).group(1)


def test_confirmed_name_and_unknown(make_populated):
    """127.0.0.1 is localhost both ways: named. 127.0.0.2 has no PTR:
    unknown. Each in the Received: and the access line alike."""
    s = make_populated()
    got = send_from(s.port("smtp"), "127.0.0.1", msg(subject="named"))
    assert [c for c, _ in got] == [220, 250, 250, 250, 354, 250, 221], got
    received, client = received_and_client(s, 1)
    assert received.startswith("Received: from client.test (localhost [127.0.0.1])\r\n"), received
    assert client == "localhost[127.0.0.1]"

    got = send_from(s.port("smtp"), "127.0.0.2", msg(subject="nameless"))
    assert [c for c, _ in got] == [220, 250, 250, 250, 354, 250, 221], got
    received, client = received_and_client(s, 2)
    assert received.startswith("Received: from client.test (unknown [127.0.0.2])\r\n"), received
    assert client == "unknown[127.0.0.2]"


def test_lookup_off(make_populated):
    """smtp.reverse_lookup = no: no lookup, every client is unknown."""
    s = make_populated({"smtp.reverse_lookup": "no"})
    send_from(s.port("smtp"), "127.0.0.1", msg(subject="off"))
    received, client = received_and_client(s, 1)
    assert received.startswith("Received: from client.test (unknown [127.0.0.1])\r\n"), received
    assert client == "unknown[127.0.0.1]"


def test_ipv6_client_named(make_populated):
    """::1 is localhost too; the Received: has it as an IPv6 literal."""
    skip_unless_ipv6_loopback()
    p6 = free_port()
    s = make_populated()
    with open(s.conf, "a") as f:
        f.write("listen.smtp = 127.0.0.1:%d, [::1]:%d\n" % (s.port("smtp"), p6))
    s.stop()
    s.start()
    send_from(p6, "::1", msg(subject="six"), host="::1")
    received, client = received_and_client(s, 1)
    assert received.startswith("Received: from client.test (localhost [IPv6:::1])\r\n"), received
    assert client == "localhost[::1]"


def test_commands_sent_before_the_greeting_are_answered_after_it(make_populated):
    """A client that does not wait for the greeting (the lookup holds it)
    gets the greeting first and then each reply in order, none lost. The
    first connection of a fresh daemon finds nothing cached."""
    s = make_populated()
    for i in range(3):
        sock = socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=20)
        sock.sendall(b"EHLO early.test\r\nMAIL FROM:<s@remote.test>\r\n"
                     b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
        f = sock.makefile("rb")
        codes = []
        while len(codes) < 5:
            line = f.readline()
            assert line.endswith(b"\r\n"), (codes, line)
            if line[3:4] == b" ":
                codes.append(int(line[:3]))
        assert codes == [220, 250, 250, 250, 354], codes
        sock.sendall(b"Subject: early %d\r\n\r\nx\r\n.\r\nQUIT\r\n" % i)
        assert f.readline().startswith(b"250 "), i
        assert f.readline().startswith(b"221 "), i
        sock.close()
    stored_one(s, "alice@example.test", 3)


def test_clients_gone_before_the_greeting(make_populated):
    """Clients that hang up (or reset) while their name is looked up: the
    lookup is dropped with the session (the sanitizers watch), and the
    daemon serves on. (The per-address limit is raised: the daemon may not
    have seen every hang-up when the last client comes.)"""
    s = make_populated({"max_connections_per_ip": "1000"})
    for i in range(100):
        sock = socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=20)
        if i % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        sock.sendall(b"EHLO gone.test\r\n")
        sock.close()
    got = send_from(s.port("smtp"), "127.0.0.1", msg(subject="after"))
    assert [c for c, _ in got] == [220, 250, 250, 250, 354, 250, 221], got
    stored_one(s, "alice@example.test")


def test_half_closed_before_the_greeting_is_answered(make_populated):
    """A script that sends its whole session and closes its half of the
    connection at once (`nc -N`), before the greeting: it is greeted and
    each command answered, the message queued, then the session ends. The
    first connection of a fresh daemon finds nothing cached."""
    s = make_populated()
    for i in range(3):
        sock = socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=20)
        sock.sendall(b"EHLO script.test\r\nMAIL FROM:<s@remote.test>\r\n"
                     b"RCPT TO:<alice@example.test>\r\nDATA\r\n"
                     b"Subject: scripted %d\r\n\r\nx\r\n.\r\nQUIT\r\n" % i)
        sock.shutdown(socket.SHUT_WR)
        f = sock.makefile("rb")
        codes = []
        while True:
            line = f.readline()
            if not line:
                break
            if line[3:4] == b" ":
                codes.append(int(line[:3]))
        sock.close()
        assert codes == [220, 250, 250, 250, 354, 250, 221], (i, codes)
    stored_one(s, "alice@example.test", 3)
    # Without QUIT: answered, then the end of its input ends the session
    # at once (not at smtp.command_timeout).
    sock = socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=5)
    sock.sendall(b"EHLO script.test\r\n")
    sock.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    sock.close()
    assert got.startswith(b"220 ") and b"\r\n250 " in got, got
