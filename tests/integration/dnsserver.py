"""A small authoritative DNS server for the outbound tests (python3-dnslib).

    dns = ZoneServer()            # listens on 127.0.0.1, a free UDP+TCP port
    dns.add("b.example", "MX", "10 mx.b.example")
    dns.add("mx.b.example", "A", "127.0.0.3")
    ... surat's config: dns.server = 127.0.0.1@<dns.port>
    dns.stop()

Names not in the zone get NXDOMAIN, names in it asked for a type they do
not have get NODATA; both carry an SOA whose minimum is 1 s, so surat's
resolver caches them only briefly. Use names under "example." (RFC 2606):
libunbound answers "test." itself as a local zone.

SECURITY: test code; listens on loopback only and answers only from the
zone it was given.
"""
import socket
import threading

from ports import free_port

from dnslib import AAAA, MX, QTYPE, RCODE, RR, SOA, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer

TTL = 1


def _free_port():
    # A port free for both UDP and TCP on 127.0.0.1.
    return free_port(udp=True)


def _norm(name):
    name = name.lower()
    return name if name.endswith(".") else name + "."


class _Resolver(BaseResolver):
    def __init__(self, server):
        self.server = server

    def resolve(self, request, handler):
        reply = request.reply()
        qname = str(request.q.qname).lower()
        qtype = request.q.qtype
        with self.server.lock:
            self.server.queries.append((qname, QTYPE[qtype]))
            records = list(self.server.zone.get(qname, []))
            if qname in self.server.failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
        if not records:
            reply.header.rcode = RCODE.NXDOMAIN
        for rtype, rdata in records:
            if rtype == qtype:
                reply.add_answer(RR(qname, rtype, rdata=rdata, ttl=TTL))
        if not reply.rr:
            reply.add_auth(RR("example.", QTYPE.SOA, ttl=TTL,
                              rdata=SOA("ns.example.", "hostmaster.example.",
                                        (1, 60, 60, 60, TTL))))
        return reply


class ZoneServer:
    def __init__(self):
        self.zone = {}
        self.failing = set()    # names answered SERVFAIL (a broken authority)
        self.queries = []
        self.lock = threading.Lock()
        self.port = _free_port()
        resolver = _Resolver(self)
        self.udp = DNSServer(resolver, address="127.0.0.1", port=self.port, logger=_Quiet())
        self.tcp = DNSServer(resolver, address="127.0.0.1", port=self.port, tcp=True,
                             logger=_Quiet())
        # serve_forever() polls for shutdown() every 0.5 s by default: every
        # test's teardown waited that long twice.
        for srv in (self.udp, self.tcp):
            threading.Thread(target=srv.server.serve_forever, args=(0.05,), daemon=True).start()

    def add(self, name, rtype, value):
        """add("x.example", "A", "127.0.0.2"); MX value "10 mx.x.example" ("0 ." is null MX)."""
        if rtype == "A":
            rr = (QTYPE.A, A(value))
        elif rtype == "AAAA":
            rr = (QTYPE.AAAA, AAAA(value))
        elif rtype == "MX":
            pref, host = value.split()
            rr = (QTYPE.MX, MX(host if host == "." else _norm(host), int(pref)))
        else:
            raise ValueError(rtype)
        with self.lock:
            self.zone.setdefault(_norm(name), []).append(rr)

    def servfail(self, name):
        """Answer every question about name with SERVFAIL from now on."""
        with self.lock:
            self.failing.add(_norm(name))

    def stop(self):
        for srv in (self.udp, self.tcp):
            srv.server.shutdown()
            srv.server.server_close()


class _Quiet:
    def __getattr__(self, name):
        return lambda *a, **k: None


if __name__ == "__main__":
    import time
    z = ZoneServer()
    z.add("a.example", "MX", "10 mx.a.example")
    z.add("mx.a.example", "A", "127.0.0.2")
    print("port", z.port)
    q = DNSRecord.question("a.example", "MX")
    print(DNSRecord.parse(q.send("127.0.0.1", z.port, timeout=2)))
    q = DNSRecord.question("nx.example", "MX")
    print(DNSRecord.parse(q.send("127.0.0.1", z.port, timeout=2)))
    time.sleep(0.1)
    z.stop()
