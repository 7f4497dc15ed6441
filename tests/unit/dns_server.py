#!/usr/bin/python3
"""Tiny authoritative DNS server for tests/unit/test_dns.c.

Serves a fixed zone under "example." (RFC 2606: never a real name; unlike "test." it is not one of
libunbound's default local zones, which would answer NXDOMAIN itself) plus a few
reverse names, over UDP on 127.0.0.1 only. Run with Debian's /usr/bin/python3,
which has python3-dnslib.

    dns_server.py PORT

Prints "READY <port>" on stdout once it listens. It exits when its stdin
reaches EOF (the test holds the other end of a pipe, so the server dies with
the test even when the test crashes) or after LIFETIME seconds at the latest.

Special names:
  servfail.example   answered with SERVFAIL
  timeout.example    never answered
  slow.example       A answered after SLOW_SECONDS
  badtxt.example     TXT with malformed rdata (a string length past the end)
Any other name under example. that is not in the zone gets NXDOMAIN; a name in
the zone asked for a type it does not have gets NODATA; both carry an SOA in
the authority section (negative TTL = min(SOA TTL, MINIMUM) = 30 s).

SECURITY: test code. Listens on 127.0.0.1 only, never sends a query of its
own, and answers only from the fixed zone below.
"""

import heapq
import os
import select
import socket
import sys
import time

from dnslib import (AAAA, MX, PTR, QTYPE, RCODE, RD, RR, SOA, TLSA, TXT, A,
                    DNSRecord)

LIFETIME = 120
SLOW_SECONDS = 0.3
TTL = 300

TLSA_DATA = bytes(range(32))

ZONE = {
    "mx.example.": [
        (QTYPE.MX, MX("mx2.mx.example.", 20)),
        (QTYPE.MX, MX("MX1.Mx.Example.", 10)),
        (QTYPE.MX, MX("mx3.mx.example.", 30)),
        (QTYPE.MX, MX("mx0.mx.example.", 10)),
    ],
    "nullmx.example.": [
        (QTYPE.MX, MX(".", 0)),
        (QTYPE.A, A("192.0.2.1")),
    ],
    "aonly.example.": [
        (QTYPE.A, A("198.18.0.10")),
        (QTYPE.A, A("198.18.0.11")),
    ],
    "v6.example.": [
        (QTYPE.AAAA, AAAA("2001:db8::1")),
        (QTYPE.AAAA, AAAA("2001:db8::2")),
    ],
    "txt.example.": [
        (QTYPE.TXT, TXT([b"v=spf1 ", b"include:spf.example ", b"-all"])),
        (QTYPE.TXT, TXT([b"caf\xc3\xa9 ", b"", b"\xff\x00\x80 end"])),
    ],
    "_25._tcp.mx1.mx.example.": [
        (QTYPE.TLSA, TLSA(3, 1, 1, TLSA_DATA)),
    ],
    "10.0.18.198.in-addr.arpa.": [
        (QTYPE.PTR, PTR("AOnly.example.")),
    ],
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.2."
     "ip6.arpa."): [
        (QTYPE.PTR, PTR("v6.example.")),
    ],
    "ttl2.example.": [
        (QTYPE.A, A("192.0.2.98"), 2),
    ],
    "ttl0.example.": [
        (QTYPE.A, A("192.0.2.99"), 0),
    ],
    "slow.example.": [
        (QTYPE.A, A("192.0.2.50")),
    ],
    "badtxt.example.": [
        (QTYPE.TXT, RD(b"\x05ab")),
    ],
    "one.example.": [(QTYPE.A, A("192.0.2.101"))],
    "two.example.": [(QTYPE.A, A("192.0.2.102"))],
    "three.example.": [(QTYPE.A, A("192.0.2.103"))],
}

SOA_RR = RR("example.", QTYPE.SOA, ttl=45,
            rdata=SOA("ns.example.", "hostmaster.example.",
                      (1, 3600, 600, 86400, 30)))


def answer(request):
    """Return the reply to send, or None to stay silent."""
    reply = request.reply()
    q = request.q
    name = str(q.qname).lower()
    if not name.endswith("."):
        name += "."
    if name == "timeout.example.":
        return None
    if name == "servfail.example.":
        reply.header.rcode = RCODE.SERVFAIL
        return reply
    if not (name.endswith(".example.") or name.endswith(".arpa.")):
        reply.header.rcode = RCODE.REFUSED
        return reply
    reply.header.aa = 1
    records = ZONE.get(name)
    if records is None:
        reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(SOA_RR)
        return reply
    found = False
    for rec in records:
        rtype, rdata = rec[0], rec[1]
        ttl = rec[2] if len(rec) > 2 else TTL
        if rtype == q.qtype:
            reply.add_answer(RR(q.qname, rtype, ttl=ttl, rdata=rdata))
            found = True
    if not found:
        reply.add_auth(SOA_RR)
    return reply


def main():
    port = int(sys.argv[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sys.stdout.write("READY %d\n" % sock.getsockname()[1])
    sys.stdout.flush()
    deadline = time.monotonic() + LIFETIME
    delayed = []  # heap of (when, seq, bytes, addr)
    seq = 0
    stdin = sys.stdin.fileno()
    while time.monotonic() < deadline:
        now = time.monotonic()
        while delayed and delayed[0][0] <= now:
            _, _, data, addr = heapq.heappop(delayed)
            sock.sendto(data, addr)
        wait = deadline - now
        if delayed:
            wait = min(wait, max(0.0, delayed[0][0] - now))
        ready, _, _ = select.select([sock, stdin], [], [], wait)
        if stdin in ready:
            if not os.read(stdin, 4096):
                return
        if sock not in ready:
            continue
        packet, addr = sock.recvfrom(65535)
        try:
            request = DNSRecord.parse(packet)
        except Exception:
            continue
        reply = answer(request)
        if reply is None:
            continue
        data = reply.pack()
        if str(request.q.qname).lower().rstrip(".") == "slow.example":
            seq += 1
            heapq.heappush(delayed, (now + SLOW_SECONDS, seq, data, addr))
        else:
            sock.sendto(data, addr)


if __name__ == "__main__":
    main()
