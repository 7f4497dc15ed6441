"""Outbound delivery: routing (MX, A fallback, null MX, NXDOMAIN, loops),
the SMTP client against surat itself, scripted peers and Postfix, retries,
bounces, delay notices and a crash in the middle of a delivery.

Everything is on loopback. A DNS server (dnsserver.py) serves the test
zones on 127.0.0.1; surat instances and peers sit on other loopback
addresses (Linux routes all of 127/8 to lo) and all listen for SMTP on the
same port number, which is every instance's outbound.port, so MX routing
works with one port.
"""
import os
import re
import shutil
import smtplib
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import Surat, client_tls
from dnsserver import ZoneServer
from ports import free_port

PW = "secret-pw"


def port_free_on(ips):
    """A TCP port free on every address in ips."""
    return free_port(ips)


class Node(Surat):
    """A surat on its own loopback address with its own domain."""

    def __init__(self, tmp, tls_files, ip, domain, smtp_port, dns_port, extra=None):
        self.dir = tmp
        self.ip = ip
        self.domain = domain
        self.data_dir = os.path.join(tmp, "data")
        self.conf = os.path.join(tmp, "surat.conf")
        self.log_path = os.path.join(tmp, "surat.log")
        self.ports = {"smtp": smtp_port, "submission": port_free_on([ip])}
        self.proc = None
        self.logf = None
        conf = {
            "hostname": "mx." + domain,
            "data_dir": self.data_dir,
            "tls.cert": tls_files[0],
            "tls.key": tls_files[1],
            "log.level": "debug",
            "auth.fail_delay": "0",
            "shutdown_grace": "5s",
            "listen.smtp": "%s:%d" % (ip, smtp_port),
            "listen.submission": "%s:%d" % (ip, self.ports["submission"]),
            "dns.server": "127.0.0.1@%d" % dns_port,
            "outbound.port": str(smtp_port),
            "queue.retry_interval": "1s",
            "queue.retry_max": "1s",
        }
        conf.update(extra or {})
        with open(self.conf, "w") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))

    def submit(self, sender, rcpts, body, mail_options=(), rcpt_options=()):
        with smtplib.SMTP(self.ip, self.ports["submission"], timeout=30) as c:
            c.starttls(context=client_tls())
            c.login(sender, PW)
            return c.sendmail(sender, rcpts, body, mail_options=list(mail_options),
                              rcpt_options=list(rcpt_options))

    def queue_list(self):
        return self.cli("queue", "list").stdout

    def wait_queue_empty(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = self.queue_list().strip()
            if out == "" or "empty" in out.lower() or out.startswith("0 "):
                return
            time.sleep(0.2)
        raise AssertionError("queue not empty:\n" + self.queue_list() + self.log()[-4000:])

    def wait_log(self, pattern, timeout=15, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return
            time.sleep(0.1)
        raise AssertionError("no %r in log:\n%s" % (pattern, self.log()[-6000:]))


def msg(sender, rcpt, subject, body="Hello.\r\n", extra=""):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n%s\r\n%s" %
            (sender, rcpt, subject, extra, body)).encode()


# ---------------------------------------------------------------------------
# A scripted SMTP peer


class Peer:
    """An SMTP server on ip:port whose answers the test chooses.

    rcpt(addr, n) -> reply line for RCPT TO (n counts transactions seen so far),
    data(txn) -> reply to the final dot; dot_delay seconds before that reply.
    """

    def __init__(self, ip, port, caps=None, rcpt=None, data=None, dot_delay=0,
                 tls_files=None, auth=None, greeting="220 peer.example ESMTP", ehlo=True,
                 implicit_tls=False, after_ehlo=None):
        self.ip, self.port = ip, port
        self.caps = caps if caps is not None else ["PIPELINING", "8BITMIME", "SIZE 10000000",
                                                   "DSN", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
        self.rcpt = rcpt or (lambda a, n: "250 2.1.5 ok")
        self.data = data or (lambda t: "250 2.0.0 queued")
        self.dot_delay = dot_delay
        self.auth = auth
        self.greeting = greeting
        self.ehlo = ehlo
        self.implicit_tls = implicit_tls
        # A line sent in the same write as the EHLO reply ("421 ..." closes).
        self.after_ehlo = after_ehlo
        self.ctx = None
        if tls_files:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*tls_files)
        self.lock = threading.Lock()
        self.txns = []
        self.lines = []
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.tls_used = False
        self.auth_seen = []
        self.dot_seen = threading.Event()
        peer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                peer.session(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((ip, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def session(self, sock):
        with self.lock:
            self.connections += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self._session(sock)
        finally:
            with self.lock:
                self.active -= 1

    def _session(self, sock):
        tls = False
        if self.implicit_tls:
            sock = self.ctx.wrap_socket(sock, server_side=True)
            tls = True
            with self.lock:
                self.tls_used = True
        rf = sock.makefile("rb")

        def send(line):
            sock.sendall(line.encode() + b"\r\n")

        if self.greeting is None:  # a peer that never greets
            while sock.recv(4096):
                pass
            return
        send(self.greeting)
        if not self.greeting.startswith("220"):
            return
        txn = None
        while True:
            raw = rf.readline(4096)
            if not raw:
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            with self.lock:
                self.lines.append(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO" and not self.ehlo:
                send("500 5.5.1 EHLO? never heard of it")
            elif verb == "EHLO":
                caps = list(self.caps)
                if self.ctx and not tls:
                    caps.append("STARTTLS")
                if self.auth and tls:
                    caps.append("AUTH PLAIN LOGIN")
                out = ["peer.example"] + caps
                reply = ["250%s%s" % ("-" if i < len(out) - 1 else " ", c)
                         for i, c in enumerate(out)]
                if self.after_ehlo:
                    sock.sendall(("\r\n".join(reply + [self.after_ehlo]) + "\r\n").encode())
                    if self.after_ehlo.startswith("421"):
                        return
                    continue
                for l in reply:
                    send(l)
            elif verb == "HELO":
                send("250 peer.example")
            elif verb == "STARTTLS" and self.ctx:
                send("220 2.0.0 go ahead")
                sock = self.ctx.wrap_socket(sock, server_side=True)
                rf = sock.makefile("rb")
                tls = True
                with self.lock:
                    self.tls_used = True
            elif verb == "AUTH":
                with self.lock:
                    self.auth_seen.append(line)
                send("235 2.7.0 ok")
            elif verb == "MAIL":
                txn = {"mail": line, "rcpts": [], "accepted": [], "data": None}
                send("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = re.search(r"<([^>]*)>", line).group(1)
                txn["rcpts"].append(line)
                with self.lock:
                    n = len(self.txns)
                r = self.rcpt(addr, n)
                if r.startswith("2"):
                    txn["accepted"].append(addr)
                send(r)
            elif verb == "DATA":
                send("354 go on")
                lines = []
                while True:
                    l = rf.readline(100000)
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    lines.append(l[1:] if l.startswith(b".") else l)
                txn["data"] = b"".join(lines)
                with self.lock:
                    self.txns.append(txn)
                self.dot_seen.set()
                if self.dot_delay:
                    time.sleep(self.dot_delay)
                try:
                    send(self.data(txn))
                except OSError:
                    return
                txn = None
            elif verb == "RSET":
                txn = None
                send("250 2.0.0 ok")
            elif verb == "QUIT":
                send("221 2.0.0 bye")
                return
            elif verb == "NOOP":
                send("250 ok")
            else:
                send("502 5.5.2 what")


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def dns():
    z = ZoneServer()
    yield z
    z.stop()


@pytest.fixture
def net(tmp_path, tls_files, dns, data_template):
    """Builds nodes and peers; stops them all at the end."""

    class Net:
        def __init__(self):
            self.nodes, self.peers = [], []
            self.port = port_free_on(["127.0.0.%d" % i for i in range(1, 10)])

        def node(self, ip, domain, extra=None, users=("alice", "bob"), start=True):
            d = tempfile.mkdtemp(dir=str(tmp_path))
            n = Node(d, tls_files, ip, domain, self.port, dns.port, extra)
            self.nodes.append(n)
            # The domain and users as `surat domain add` and `user add` make them.
            shutil.copytree(data_template(domain, [("%s@%s" % (u, domain), PW) for u in users]),
                            n.data_dir)
            dns.add(domain, "MX", "10 mx." + domain)
            dns.add("mx." + domain, "A", ip)
            if start:
                n.start()
            return n

        def peer(self, ip, **kw):
            p = Peer(ip, self.port, **kw)
            self.peers.append(p)
            return p

    net = Net()
    yield net
    errors = []
    for p in net.peers:
        p.stop()
    for n in net.nodes:
        if n.proc is not None:
            rc = n.stop()
            if rc != 0:
                errors.append("surat exited with %s:\n%s" % (rc, n.log()[-3000:]))
    if errors:
        raise AssertionError("\n".join(errors))


def inbox_text(node, addr, n, timeout=15):
    uids = node.wait_messages(addr, n, timeout=timeout)
    return [node.message(addr, u).decode("utf-8", "replace") for u in uids]


# ---------------------------------------------------------------------------
# surat to surat


def test_mail_between_two_instances_by_mx(net):
    a = net.node("127.0.0.2", "a.example")
    b = net.node("127.0.0.3", "b.example")
    a.submit("alice@a.example", ["bob@b.example"], msg("alice@a.example", "bob@b.example", "hi b"))
    texts = inbox_text(b, "bob@b.example", 1)
    assert "Subject: hi b" in texts[0]
    # b received it over TLS from a's client
    assert re.search(r"Received: from mx\.a\.example .*\n?.*ESMTPS", texts[0]) or "ESMTPS" in texts[0]
    a.wait_log(r"outbound id=\w+ rcpt=bob@b\.example host=mx\.b\.example ip=127\.0\.0\.3 "
               r"tls=TLSv1\.[23]\S* reply=\"250 [^\"]*\" delay=\d+s status=sent")
    a.wait_log(r"delivery id=\w+ rcpt=bob@b\.example status=sent "
               r"relay=mx\.b\.example\[127\.0\.0\.3\]:\d+ tls=TLSv1\.[23] ")
    a.wait_queue_empty()
    # and back
    b.submit("bob@b.example", ["alice@a.example"], msg("bob@b.example", "alice@a.example", "re"))
    texts = inbox_text(a, "alice@a.example", 1)
    assert "Subject: re" in texts[0]


def test_several_recipients_one_transaction_and_reuse(net):
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.4")
    # c.example is served by the peer
    _dns(net).add("c.example", "MX", "10 mx.c.example")
    _dns(net).add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example", "y@c.example"],
             msg("alice@a.example", "x@c.example", "two"))
    wait_for(lambda: len(p.txns) == 1)
    t = p.txns[0]
    assert sorted(t["accepted"]) == ["x@c.example", "y@c.example"]
    # a second message soon after reuses the connection, after RSET
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "again"))
    wait_for(lambda: len(p.txns) == 2)
    assert p.connections == 1
    assert "RSET" in p.lines
    # pipelining: MAIL and RCPT were in one write (the peer saw them before answering is
    # not observable here); the SIZE parameter was sent since the peer offers SIZE
    assert re.search(r"MAIL FROM:<alice@a\.example> SIZE=\d+", t["mail"])
    a.wait_queue_empty()


def test_reuse_without_pipelining_sends_every_rcpt(net):
    """A reused session to a peer without PIPELINING: the second
    transaction (after RSET, one command at a time) names its recipients
    too, from the first; it must not count on from the previous one."""
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.4", caps=["8BITMIME", "SIZE 10000000", "ENHANCEDSTATUSCODES"])
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example", "y@c.example"],
             msg("alice@a.example", "x@c.example", "first"))
    wait_for(lambda: len(p.txns) == 1)
    a.submit("alice@a.example", ["z@c.example"], msg("alice@a.example", "z@c.example", "second"))
    wait_for(lambda: len(p.txns) == 2)
    assert p.connections == 1
    assert p.txns[1]["accepted"] == ["z@c.example"]
    a.wait_log(r"outbound id=\w+ rcpt=z@c\.example .*status=sent")
    a.wait_queue_empty()


def test_many_recipients_at_one_destination_go_in_transactions_of_50(net):
    """120 recipients at one peer: three transactions of at most 50 (Postfix's
    default; a server must take 100, RFC 5321 4.5.3.1.8), not one that a peer
    with a limit of its own would answer with 452 for the rest."""
    a = net.node("127.0.0.2", "a.example", extra={"smtp.max_recipients": "200"})
    p = net.peer("127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    rcpts = ["r%03d@c.example" % i for i in range(120)]
    a.submit("alice@a.example", rcpts, msg("alice@a.example", rcpts[0], "many"))
    wait_for(lambda: sum(len(t["accepted"]) for t in p.txns) == 120,
             what="%d transactions" % len(p.txns))
    assert sorted(len(t["accepted"]) for t in p.txns) == [20, 50, 50], \
        [len(t["accepted"]) for t in p.txns]
    assert sorted(r for t in p.txns for r in t["accepted"]) == rcpts
    a.wait_queue_empty()


def limited_peer(net, refusal, limit, **peer):
    """A sending node and the MX of c.example, a peer that answers RCPT with
    refusal past limit recipients in a transaction."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    seen = {}

    def rcpt(addr, n):
        seen[n] = seen.get(n, 0) + 1
        return refusal if seen[n] > limit else "250 2.1.5 ok"

    p = net.peer("127.0.0.4", rcpt=rcpt, **peer)
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    return a, p


def test_452_past_the_peers_recipient_limit_goes_in_the_next_transaction(net):
    """RFC 5321 4.5.3.1.10: a server past its own recipient limit answers 452
    to the rest; 4.5.3.1.8: the client then sends them in another
    transaction. A peer that takes 3 per transaction gets 8 recipients in
    three transactions on one connection, not 3 now and 5 a retry interval
    later."""
    a, p = limited_peer(net, "452 4.5.3 Too many recipients", 3)
    rcpts = ["r%d@c.example" % i for i in range(8)]
    a.submit("alice@a.example", rcpts, msg("alice@a.example", rcpts[0], "limit"))
    wait_for(lambda: sum(len(t["accepted"]) for t in p.txns) == 8, timeout=10,
             what="%s\n%s" % (p.txns, a.queue_list()))
    assert sorted(len(t["accepted"]) for t in p.txns) == [2, 3, 3]
    assert sorted(r for t in p.txns for r in t["accepted"]) == rcpts
    assert p.connections == 1
    a.wait_queue_empty()
    assert a.messages("alice@a.example") == []


def test_552_to_rcpt_is_452_but_552_to_data_bounces(net):
    """RFC 5321 4.5.3.1.10: 552 to RCPT is the historical "too many
    recipients" and must be taken as 452: the rest go in the next
    transaction, nothing bounces. 552 to DATA (message too big) stays
    permanent."""
    def data(txn):
        big = any(r.startswith("RCPT TO:<big@") for r in txn["rcpts"])
        return "552 5.3.4 Message too big for me" if big else "250 2.0.0 queued"

    a, p = limited_peer(net, "552 5.5.3 Too many recipients", 2, data=data)
    rcpts = ["r%d@c.example" % i for i in range(5)]
    a.submit("alice@a.example", rcpts, msg("alice@a.example", rcpts[0], "limit"))
    wait_for(lambda: sum(len(t["accepted"]) for t in p.txns) == 5, timeout=10,
             what="%s\n%s" % (p.txns, a.queue_list()))
    assert sorted(len(t["accepted"]) for t in p.txns) == [1, 2, 2]
    assert p.connections == 1
    a.submit("alice@a.example", ["big@c.example"], msg("alice@a.example", "big@c.example", "b"))
    t = bounce_for(a, "alice@a.example")
    assert "Final-Recipient: rfc822; big@c.example" in t
    assert "Status: 5.3.4" in t and "Message too big for me" in t
    # the only notice: the recipients past the limit bounced nothing
    assert len(a.messages("alice@a.example")) == 1


# The dns fixture object is shared by net; tests reach it through this helper.
_DNS = {}


@pytest.fixture(autouse=True)
def _remember_dns(dns):
    _DNS["z"] = dns
    yield
    _DNS.pop("z", None)


def _dns(net=None):
    return _DNS["z"]


def wait_for(cond, timeout=15, what=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting %s" % what)


def test_mx_preference_fallback_when_preferred_is_down(net):
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.5")
    z = _dns()
    z.add("c.example", "MX", "20 mx2.c.example")
    z.add("c.example", "MX", "10 mx1.c.example")
    z.add("mx1.c.example", "A", "127.0.0.6")  # nothing listens there
    z.add("mx2.c.example", "A", "127.0.0.5")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "fb"))
    wait_for(lambda: len(p.txns) == 1)
    a.wait_log(r"connect to host mx1\.c\.example\[127\.0\.0\.6\] failed: Connection refused")
    a.wait_log(r"outbound id=\w+ rcpt=x@c\.example host=mx2\.c\.example ip=127\.0\.0\.5 .*status=sent")
    # mx1 was tried before mx2
    log = a.log()
    assert log.index("mx1.c.example[127.0.0.6]") < log.index("host=mx2.c.example")


def test_a_record_fallback_without_mx(net):
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.5")
    _dns().add("d.example", "A", "127.0.0.5")
    a.submit("alice@a.example", ["x@d.example"], msg("alice@a.example", "x@d.example", "a"))
    wait_for(lambda: len(p.txns) == 1)
    a.wait_log(r"host=d\.example ip=127\.0\.0\.5 .*status=sent")


def bounce_for(node, addr, timeout=15):
    texts = inbox_text(node, addr, 1, timeout=timeout)
    t = texts[-1]
    assert "multipart/report" in t and "report-type=delivery-status" in t, t
    return t


def test_null_mx_bounces_at_once(net):
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    _dns().add("e.example", "MX", "0 .")
    _dns().add("e.example", "A", "127.0.0.5")
    t0 = time.time()
    a.submit("alice@a.example", ["x@e.example"], msg("alice@a.example", "x@e.example", "n"))
    t = bounce_for(a, "alice@a.example")
    assert time.time() - t0 < 10
    assert "Status: 5.1.10" in t
    assert "null MX" in t
    a.wait_queue_empty()


def test_nxdomain_bounces(net):
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    a.submit("alice@a.example", ["x@nowhere.example"],
             msg("alice@a.example", "x@nowhere.example", "nx"))
    t = bounce_for(a, "alice@a.example")
    assert "Status: 5.1.2" in t
    assert "NXDOMAIN" in t
    assert "Final-Recipient: rfc822; x@nowhere.example" in t


def test_mx_hosts_that_all_do_not_exist_bounce_5_4_4_at_once(net):
    """MX records whose hosts are all NXDOMAIN (or have no address) will
    never lead anywhere: bounced 5.4.4 on the first attempt, as Postfix
    does, not deferred for queue.max_age. A host whose lookup failed for
    now (SERVFAIL), or one with an address, keeps it a deferral."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    z = _dns()
    z.add("c.example", "MX", "10 mx1.c.example")     # NXDOMAIN
    z.add("c.example", "MX", "20 mx2.c.example")     # NODATA
    z.add("mx2.c.example", "MX", "10 elsewhere.example")
    z.add("d.example", "MX", "10 mx1.d.example")     # NXDOMAIN
    z.add("d.example", "MX", "20 mx2.d.example")     # SERVFAIL
    z.servfail("mx2.d.example")
    z.add("e.example", "MX", "10 mx1.e.example")     # NXDOMAIN
    z.add("e.example", "MX", "20 mx2.e.example")
    z.add("mx2.e.example", "A", "127.0.0.6")        # nothing listens there
    t0 = time.time()
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "nx"))
    t = bounce_for(a, "alice@a.example")
    assert time.time() - t0 < 10
    assert "Final-Recipient: rfc822; x@c.example" in t
    assert "Status: 5.4.4" in t and "no MX host of c.example has an address" in t, t
    for d in ("d.example", "e.example"):
        a.submit("alice@a.example", ["y@" + d], msg("alice@a.example", "y@" + d, d))
        a.wait_log(r"delivery id=\w+ rcpt=y@%s status=deferred" % re.escape(d))
    assert "DNS lookup of the address of mx2.d.example failed" in a.log()
    assert len(a.messages("alice@a.example")) == 1


def test_mx_pointing_at_ourselves_is_a_loop(net):
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    z = _dns()
    z.add("loop.example", "MX", "10 mx.a.example")  # our hostname
    z.add("loop2.example", "MX", "10 other.loop2.example")
    z.add("other.loop2.example", "A", "127.0.0.2")  # our listener address
    a.submit("alice@a.example", ["x@loop.example"], msg("alice@a.example", "x@loop.example", "l"))
    t = bounce_for(a, "alice@a.example")
    assert "Status: 5.4.6" in t
    a.submit("alice@a.example", ["x@loop2.example"], msg("alice@a.example", "x@loop2.example", "l2"))
    texts = inbox_text(a, "alice@a.example", 2)
    assert "Status: 5.4.6" in texts[1]
    assert "loops back to myself" in texts[1]


def test_listener_on_a_mapped_address_is_ourselves(net):
    """listen.smtp on [::ffff:127.0.0.2] takes IPv4 127.0.0.2 too (dual
    stack): an MX at 127.0.0.2, or the literal in either form, is ourselves
    and bounces as a loop (5.4.6) instead of coming back to us as mail to
    relay. (A wildcard listener, all of 127.0.0.0/8, is test_queue_self's:
    a test binds no address but loopback ones.)"""
    port = port_free_on(["127.0.0.2"])
    a = net.node("127.0.0.2", "a.example", start=False,
                 extra={"queue.retry_interval": "1h",
                        "listen.smtp": "[::ffff:127.0.0.2]:%d" % port,
                        "outbound.port": str(port)})
    a.ports["smtp"] = port
    a.start()
    z = _dns()
    z.add("mapped.example", "MX", "10 mx.mapped.example")
    z.add("mx.mapped.example", "A", "127.0.0.2")
    rcpts = ["x@mapped.example", "x@[127.0.0.2]", "x@[IPv6:::ffff:127.0.0.2]"]
    for rc in rcpts:
        a.submit("alice@a.example", [rc], msg("alice@a.example", rc, "m"))
    texts = inbox_text(a, "alice@a.example", len(rcpts))
    loops = [rc for rc in rcpts for t in texts if "Final-Recipient: rfc822; " + rc in t and
             "Status: 5.4.6" in t and "loops back to myself" in t]
    assert loops == rcpts, texts
    assert "Relay access denied" not in a.log()


def test_ourselves_after_a_host_whose_lookup_failed_defers(net):
    """RFC 5321 5.1: we are the backup MX (by address) and the better host's
    address lookup fails for now (SERVFAIL): that is no mail loop, since the
    better host may be back later. The message is deferred, not bounced."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    _dns().add("c.example", "MX", "10 mx1.c.example")
    _dns().add("c.example", "MX", "20 backup.c.example")
    _dns().add("backup.c.example", "A", "127.0.0.2")
    _dns().servfail("mx1.c.example")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "b"))
    wait_for(lambda: "deferred" in a.queue_list(), timeout=30, what=a.queue_list())
    assert "last error: DNS lookup of the address of mx1.c.example failed" in a.queue_list()
    assert "loops back" not in a.log()
    assert a.messages("alice@a.example") == []   # no bounce


def test_ourselves_after_a_host_that_does_not_exist_defers(net):
    """We are the backup MX (by address, or by our hostname) and the better
    host does not exist (NXDOMAIN): no loop (we are not the best host) and
    no 5.4.4 (not every MX host lacks an address: we have one). The mail
    waits for the primary to be mended, as Postfix's "unable to find
    primary relay" (4.4.4) does, instead of bouncing on the first try."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    z = _dns()
    z.add("c.example", "MX", "10 mx1.c.example")      # NXDOMAIN
    z.add("c.example", "MX", "20 backup.c.example")
    z.add("backup.c.example", "A", "127.0.0.2")       # our listener address
    z.add("d.example", "MX", "10 mx1.d.example")      # NXDOMAIN
    z.add("d.example", "MX", "20 mx.a.example")       # our hostname
    a.submit("alice@a.example", ["x@c.example", "y@d.example"],
             msg("alice@a.example", "x@c.example", "backup"))
    a.wait_log(r"delivery id=\w+ rcpt=x@c\.example status=(deferred|bounced)")
    a.wait_log(r"delivery id=\w+ rcpt=y@d\.example status=(deferred|bounced)")
    log = a.log()
    assert "status=bounced" not in log, log[-3000:]
    assert "loops back" not in log
    assert re.search(r"rcpt=x@c\.example status=deferred .*reason=\"4\.4\.4 ", log)
    assert re.search(r"rcpt=y@d\.example status=deferred .*reason=\"4\.4\.4 ", log)
    assert a.messages("alice@a.example") == []   # no bounce


def test_ourselves_among_equal_mx_hosts_is_a_loop_whatever_the_order(net):
    """RFC 5321 5.1: finding our own address in the MX list discards it and
    every host of the same preference. Equal hosts are tried in random
    order, so each of five domains (us and a peer at preference 10) must
    bounce as a loop, none may reach the peer first."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4")
    z = _dns()
    z.add("me.eq.example", "A", "127.0.0.2")  # our listener address
    z.add("mxp.eq.example", "A", "127.0.0.4")
    for i in range(5):
        d = "eq%d.example" % i
        z.add(d, "MX", "10 me.eq.example")
        z.add(d, "MX", "10 mxp.eq.example")
        a.submit("alice@a.example", ["x@" + d], msg("alice@a.example", "x@" + d, "eq%d" % i))
    texts = inbox_text(a, "alice@a.example", 5)
    assert all("Status: 5.4.6" in t and "loops back to myself" in t for t in texts), texts
    assert p.connections == 0


def test_addresses_tried_per_attempt_are_limited(net):
    """RFC 5321 5.1 allows a limit on the addresses one attempt tries (as
    Postfix's smtp_mx_address_limit): a domain with many dead MX hosts,
    each of which may cost a connect or greeting timeout, must not hold
    a connection slot for all of them. Past outbound.address_limit the
    attempt ends, deferred with the last error."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h",
                                                  "outbound.address_limit": "2"})
    z = _dns()
    for i in range(4):
        z.add("c.example", "MX", "%d mx%d.c.example" % (10 * (i + 1), i))
        z.add("mx%d.c.example" % i, "A", "127.0.0.%d" % (6 + i))  # nothing listens
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "lim"))
    a.wait_log(r"delivery id=\w+ rcpt=x@c\.example status=deferred")
    log = a.log()
    assert re.findall(r"outbound dest=mx:c\.example: 4\.4\.1 connect to host mx(\d)", log) \
        == ["0", "1"], log
    assert "2 addresses tried, the limit" in log


def test_address_limit_makes_the_last_address_the_last_host(net):
    """With outbound.address_limit reached, the last address tried is the
    last host (docs/config.md; Postfix's final server): its 5xx greeting
    bounces. A worse host was still looked up first, and its NXDOMAIN
    took the place of that reply: a deferral naming a host never meant
    to be tried."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h",
                                                  "outbound.address_limit": "1"})
    p = net.peer("127.0.0.4", greeting="554 5.7.1 mx.d.example no mail from you")
    z = _dns()
    z.add("d.example", "MX", "10 mx.d.example")
    z.add("d.example", "MX", "20 nx.d.example")       # NXDOMAIN
    z.add("mx.d.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["y@d.example"], msg("alice@a.example", "y@d.example", "l1"))
    a.wait_log(r"delivery id=\w+ rcpt=y@d\.example status=(deferred|bounced)")
    log = a.log()
    assert re.search(r"rcpt=y@d\.example status=bounced .*554 5\.7\.1", log), log[-3000:]
    assert "nx.d.example" not in log
    assert p.connections == 1


def test_451_defers_then_succeeds_on_retry(net):
    a = net.node("127.0.0.2", "a.example")
    answers = ["451 4.3.0 try later"]

    def rcpt(addr, n):
        return answers.pop() if answers else "250 2.1.5 ok"

    p = net.peer("127.0.0.4", rcpt=rcpt)
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "r"))
    a.wait_log(r"rcpt=x@c\.example .*reply=\"451 4\.3\.0 try later\".*status=deferred")
    wait_for(lambda: len(p.txns) == 1)
    a.wait_log(r"delivery id=\w+ rcpt=x@c\.example status=sent .*attempt=2")
    a.wait_queue_empty()
    assert a.messages("alice@a.example") == []  # no bounce, no delay notice


def test_5xx_greeting_of_the_last_host_bounces(net):
    """A 5xx reply bounces (RFC 5321 4.2.1: permanent; 3.1: 554 in place of
    the greeting is "no SMTP service here"), the greeting's as much as a
    RCPT's, once no other host is left to try: not deferred for
    queue.max_age. The report names that host and what it said, as for a
    refused RCPT (RFC 3464 2.3.5, 2.3.6: Remote-MTA, Diagnostic-Code:
    smtp). A better host's 554 with the last one unreachable still
    defers: that host may be back later (Postfix does the same)."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4", greeting="554 5.7.1 mx.c.example no mail from you")
    z = _dns()
    z.add("c.example", "MX", "10 mx.c.example")
    z.add("mx.c.example", "A", "127.0.0.4")
    z.add("d.example", "MX", "10 mx.c.example")
    z.add("d.example", "MX", "20 backup.d.example")
    z.add("backup.d.example", "A", "127.0.0.6")  # nothing listens there
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "g"))
    t = bounce_for(a, "alice@a.example")
    assert "Final-Recipient: rfc822; x@c.example" in t
    assert "Status: 5.7.1" in t and "no mail from you" in t
    assert "\r\nRemote-MTA: dns; mx.c.example\r\n" in t, t
    assert "\r\nDiagnostic-Code: smtp; 554 5.7.1 mx.c.example no mail from you\r\n" in t, t
    a.submit("alice@a.example", ["y@d.example"], msg("alice@a.example", "y@d.example", "g2"))
    a.wait_log(r"delivery id=\w+ rcpt=y@d\.example status=deferred")
    assert p.connections == 2
    assert len(a.messages("alice@a.example")) == 1
    assert "x@c.example" not in a.queue_list()


def test_550_for_one_of_two_recipients(net):
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.4", rcpt=lambda addr, n: "550 5.1.1 <%s>: no such user" % addr
                 if addr.startswith("bad") else "250 2.1.5 ok")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["good@c.example", "bad@c.example"],
             msg("alice@a.example", "good@c.example", "half"))
    wait_for(lambda: len(p.txns) == 1)
    assert p.txns[0]["accepted"] == ["good@c.example"]
    t = bounce_for(a, "alice@a.example")
    assert "Final-Recipient: rfc822; bad@c.example" in t
    assert "Status: 5.1.1" in t
    assert "no such user" in t
    assert "Remote-MTA: dns; mx.c.example\r\n" in t
    assert "<bad@c.example>: host mx.c.example[127.0.0.4]:%d said: 550 5.1.1" % net.port in t
    assert "good@c.example" not in t.split("message/delivery-status")[1].split("--")[0]
    a.wait_queue_empty()
    assert len(a.messages("alice@a.example")) == 1


def test_max_age_bounces_and_delay_notice_once(net):
    a = net.node("127.0.0.2", "a.example", extra={"queue.delay_warning": "1s",
                                                  "queue.max_age": "3s"})
    net.peer("127.0.0.4", rcpt=lambda addr, n: "451 4.7.1 greylisted")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "old"))
    texts = inbox_text(a, "alice@a.example", 2, timeout=20)
    delay = [t for t in texts if "Action: delayed" in t]
    failed = [t for t in texts if "Action: failed" in t]
    assert len(delay) == 1 and len(failed) == 1, texts
    assert "Status: 4.7.1" in delay[0]
    assert "Status: 5.4.7" in failed[0]
    assert "greylisted" in failed[0]
    a.wait_queue_empty()
    time.sleep(1.5)
    assert len(a.messages("alice@a.example")) == 2


def test_size_and_8bit_checks_bounce_before_sending(net):
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4", caps=["PIPELINING", "SIZE 1000", "ENHANCEDSTATUSCODES"])
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"],
             msg("alice@a.example", "x@c.example", "big", body="x" * 60 + "\r\n" * 1 + ("y" * 70 + "\r\n") * 40))
    t = bounce_for(a, "alice@a.example")
    assert "Status: 5.3.4" in t
    # Our own finding, not a reply of the peer (RFC 3464 2.3.6).
    assert "Diagnostic-Code: X-surat; 5.3.4 Message size" in t
    a.submit("alice@a.example", ["x@c.example"],
             "From: <alice@a.example>\r\nSubject: 8bit\r\n\r\nGr\u00fc\u00dfe\r\n".encode(),
             mail_options=["BODY=8BITMIME"])
    texts = inbox_text(a, "alice@a.example", 2)
    assert "Status: 5.6.3" in texts[1]
    assert not any(l.startswith("MAIL") for l in p.lines)


def test_7bit_text_sent_as_8bitmime_goes_to_a_peer_without_8bitmime(net):
    """RFC 6152 forbids 8-bit octets to a peer that does not offer 8BITMIME;
    a sender's BODY=8BITMIME over plain ASCII needs no conversion, so the
    message goes there (without the parameter) instead of bouncing 5.6.3."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4", caps=["PIPELINING", "SIZE 100000", "ENHANCEDSTATUSCODES"])
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "7bit"),
             mail_options=["BODY=8BITMIME"])
    wait_for(lambda: len(p.txns) == 1)
    assert "BODY=" not in p.txns[0]["mail"]
    assert b"Subject: 7bit" in p.txns[0]["data"]
    a.wait_queue_empty()
    assert a.messages("alice@a.example") == []


def test_helo_fallback_and_smtputf8_check(net):
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4", ehlo=False)
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "old peer"))
    wait_for(lambda: len(p.txns) == 1)
    assert any(l.startswith("HELO mx.a.example") for l in p.lines)
    assert p.txns[0]["mail"] == "MAIL FROM:<alice@a.example>"
    # A message that needs SMTPUTF8 (a UTF-8 header) cannot go to a peer without
    # it: bounced, not mangled.
    a.submit("alice@a.example", ["x@c.example"],
             "From: <alice@a.example>\r\nSubject: gr\u00fc\u00df\r\n\r\nhi\r\n".encode(),
             mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    t = bounce_for(a, "alice@a.example")
    assert "Status: 5.6.7" in t and "SMTPUTF8" in t
    assert len(p.txns) == 1
    # RFC 6531 3.4: one sent with SMTPUTF8 that is all ASCII does not need it, and
    # goes without the parameter.
    a.submit("alice@a.example", ["y@c.example"],
             "From: <alice@a.example>\r\nSubject: ascii\r\n\r\nhi\r\n".encode(),
             mail_options=["SMTPUTF8"])
    wait_for(lambda: len(p.txns) == 2)
    assert p.txns[1]["mail"] == "MAIL FROM:<alice@a.example>"
    a.wait_queue_empty()
    assert len(a.messages("alice@a.example")) == 1


def test_smtputf8_only_in_the_transaction_whose_recipient_needs_it(net):
    """An SMTPUTF8 message with an ASCII header: the transaction for a UTF-8
    recipient says SMTPUTF8, the one for an ASCII recipient elsewhere does
    not (RFC 6531 3.4)."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4")
    for d in ("c.example", "d.example"):
        _dns().add(d, "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["j\u00fcrg@c.example", "y@d.example"],
             msg("alice@a.example", "y@d.example", "two"), mail_options=["SMTPUTF8"])
    wait_for(lambda: len(p.txns) == 2)
    mails = {t["accepted"][0]: t["mail"] for t in p.txns}
    assert mails["j\u00fcrg@c.example"].endswith(" SMTPUTF8")
    assert "SMTPUTF8" not in mails["y@d.example"]
    a.wait_queue_empty()


def test_utf8_orcpt_alone_does_not_need_smtputf8(net):
    """An ASCII message and recipient whose ORCPT is a UTF-8 address (an
    alias's, given by the sender's MTA): RFC 6533 3 sends that ORCPT to a
    peer without SMTPUTF8 as utf-8-addr-xtext ("\\x{FC}"), and a peer
    without DSN gets no ORCPT at all; neither needs SMTPUTF8 (RFC 6531
    3.4), so the message is delivered, not bounced 5.6.7."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    dsn = net.peer("127.0.0.4", caps=["PIPELINING", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES"])
    plain = net.peer("127.0.0.5", caps=["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"])
    for d, ip in (("c.example", "127.0.0.4"), ("d.example", "127.0.0.5")):
        _dns().add(d, "MX", "10 mx." + d)
        _dns().add("mx." + d, "A", ip)
    for rcpt in ("y@c.example", "z@d.example"):
        a.submit("alice@a.example", [rcpt], msg("alice@a.example", rcpt, "orcpt"),
                 mail_options=["SMTPUTF8"],
                 rcpt_options=["NOTIFY=FAILURE", "ORCPT=utf-8;j\u00fcrg@a.example"])
    wait_for(lambda: len(dsn.txns) == 1 and len(plain.txns) == 1,
             what=a.queue_list())
    assert "SMTPUTF8" not in dsn.txns[0]["mail"]
    assert dsn.txns[0]["rcpts"] == [
        "RCPT TO:<y@c.example> NOTIFY=FAILURE ORCPT=utf-8;j\\x{FC}rg@a.example"]
    assert plain.txns[0]["rcpts"] == ["RCPT TO:<z@d.example>"]
    a.wait_queue_empty()
    assert a.messages("alice@a.example") == []


def test_idn_domain_goes_as_a_label_to_a_peer_without_smtputf8(net):
    """An address whose only UTF-8 is its domain (user@b\u00fccher.example)
    has an ASCII form, the domain's A-label, which DNS was asked in too:
    to a peer without SMTPUTF8 the envelope goes so, with our Received:
    naming it so, instead of bouncing 5.6.7. A UTF-8 local part has no
    such form and still needs the extension."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4", caps=["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"])
    alabel = "xn--bcher-kva.example"
    _dns().add(alabel, "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    rcpt = "user@b\u00fccher.example"
    a.submit("alice@a.example", [rcpt], msg("alice@a.example", "user@" + alabel, "idn"),
             mail_options=["SMTPUTF8"])
    wait_for(lambda: len(p.txns) == 1, what="a transaction")
    t = p.txns[0]
    assert t["mail"] == "MAIL FROM:<alice@a.example>", t
    assert t["rcpts"] == ["RCPT TO:<user@%s>" % alabel], t
    assert b"for <user@%s>" % alabel.encode() in t["data"], t["data"]
    assert not any(b > 0x7f for b in t["data"]), t["data"]
    a.submit("alice@a.example", ["j\u00fcrg@b\u00fccher.example"],
             msg("alice@a.example", "user@" + alabel, "utf8 local part"),
             mail_options=["SMTPUTF8"])
    b = bounce_for(a, "alice@a.example")
    assert "Status: 5.6.7" in b
    assert len(p.txns) == 1


def test_destination_connection_limit(net):
    a = net.node("127.0.0.2", "a.example", extra={"outbound.destination_limit": "2"})
    p = net.peer("127.0.0.4", dot_delay=0.5)
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    for i in range(6):
        a.submit("alice@a.example", ["x%d@c.example" % i], msg("alice@a.example", "x@c.example", "m%d" % i))
    wait_for(lambda: len(p.txns) == 6, timeout=30)
    assert p.max_active <= 2
    assert p.connections <= 6
    a.wait_queue_empty()


def _gated_peer(net, ip):
    """A peer that holds every reply to the dot until gate is set."""
    gate = threading.Event()

    def data(txn):
        gate.wait(60)
        return "250 2.0.0 queued"

    return net.peer(ip, data=data), gate


def _submit_many(node, msgs):
    """msgs: [(rcpt, body bytes)], sent in one submission session."""
    with smtplib.SMTP(node.ip, node.ports["submission"], timeout=60) as c:
        c.starttls(context=client_tls())
        c.login("alice@a.example", PW)
        for rcpt, body in msgs:
            c.sendmail("alice@a.example", [rcpt], body)


def test_backlog_for_a_slow_destination_keeps_envelopes_not_messages_in_memory(
        net, no_asan_quarantine):
    # 24 messages of 1 MB wait behind one connection the peer holds at its
    # first dot: only the message being sent is read into memory, the others
    # wait as envelopes. (Read at hand-over, all 24 were in memory, twice.)
    a = net.node("127.0.0.2", "a.example", extra={"outbound.destination_limit": "1"})
    p, gate = _gated_peer(net, "127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    base = a.rss_kib()
    n, line = 24, b"y" * 998 + b"\r\n"
    big = [("x%d@c.example" % i,
            msg("alice@a.example", "x%d@c.example" % i, "big%d" % i).rstrip(b"\r\n") +
            b"\r\n" + line * 1000) for i in range(n)]
    try:
        _submit_many(a, big)
        assert p.dot_seen.wait(30)
        time.sleep(0.5)
        grown = a.rss_kib() - base
        assert grown < 15 * 1024, "RSS grew %d KiB with %d MB queued" % (grown, n)
    finally:
        gate.set()
    wait_for(lambda: len(p.txns) == n, timeout=60)
    subjects = sorted(int(re.search(rb"Subject: big(\d+)", t["data"]).group(1)) for t in p.txns)
    assert subjects == list(range(n))
    for t in p.txns:
        i = int(re.search(rb"Subject: big(\d+)", t["data"]).group(1))
        assert t["accepted"] == ["x%d@c.example" % i]
        assert t["data"].endswith(line * 1000)
    a.wait_queue_empty()


def test_session_lost_while_its_message_is_read_counts_as_a_try(net):
    # The peer ends every session right after its EHLO reply (one write), so
    # each session is lost while its connection waits for the content read
    # on a worker. Like any session lost before its transaction decided
    # anything, that is one of 3 tries, then the recipient is deferred: not
    # a new connection at once, for ever.
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4", after_ehlo="421 4.3.2 going away")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "lost"))
    a.wait_log(r"outbound id=\w+ rcpt=x@c\.example .*status=deferred", timeout=15)
    time.sleep(0.5)
    assert p.connections == 3, p.connections
    assert p.txns == []


def test_deleted_while_waiting_for_a_connection_is_never_sent(net):
    a = net.node("127.0.0.2", "a.example", extra={"outbound.destination_limit": "1"})
    p, gate = _gated_peer(net, "127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    try:
        for i in range(3):
            a.submit("alice@a.example", ["x%d@c.example" % i],
                     msg("alice@a.example", "x%d@c.example" % i, "wait%d" % i))
        assert p.dot_seen.wait(30)
        ids = re.findall(r"^(\w+) .*\n\s+<x2@c\.example>", a.queue_list(), re.M)
        assert len(ids) == 1, a.queue_list()
        waiting = ids
        assert a.cli("queue", "delete", waiting[0]).stdout.strip() == "deleted " + waiting[0]
    finally:
        gate.set()
    wait_for(lambda: len(p.txns) == 2, timeout=30)
    a.wait_log(r"queue %s: spool file deleted; message dropped" % waiting[0])
    a.wait_queue_empty()
    time.sleep(0.5)
    assert [t["accepted"] for t in p.txns] == [["x0@c.example"], ["x1@c.example"]]


def test_delete_of_a_message_being_sent_says_it_cannot(net):
    # Its transaction is under way (the peer holds the reply to the dot):
    # `surat queue delete` must not say "deleted" of a message the peer
    # then takes. It says it cannot, exits 1, and the message goes.
    a = net.node("127.0.0.2", "a.example")
    p, gate = _gated_peer(net, "127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    try:
        a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "busy"))
        assert p.dot_seen.wait(30)
        ids = re.findall(r"^(\w+) .*\n\s+<x@c\.example>", a.queue_list(), re.M)
        assert len(ids) == 1, a.queue_list()
        r = a.cli("queue", "delete", ids[0], check=False)
    finally:
        gate.set()
    assert r.returncode == 1, r
    assert "%s is being delivered at this moment; not deleted" % ids[0] in r.stderr, r
    a.wait_queue_empty()
    assert [t["accepted"] for t in p.txns] == [["x@c.example"]]


def test_one_message_to_several_domains(net):
    a = net.node("127.0.0.2", "a.example")
    b = net.node("127.0.0.3", "b.example")
    p = net.peer("127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["bob@b.example", "x@c.example", "alice@b.example", "bob@a.example"],
             msg("alice@a.example", "bob@b.example", "multi"))
    inbox_text(b, "bob@b.example", 1)
    inbox_text(b, "alice@b.example", 1)
    inbox_text(a, "bob@a.example", 1)
    wait_for(lambda: len(p.txns) == 1)
    assert p.txns[0]["accepted"] == ["x@c.example"]
    # b.example's two recipients went in one transaction
    assert len(re.findall(r"outbound id=\w+ rcpt=\w+@b\.example .*status=sent", a.log())) == 2
    assert len(re.findall(r"access id=\w+ .*rcpts=<\w+@b\.example>,<\w+@b\.example>", b.log())) == 1
    a.wait_queue_empty()


def test_greeting_timeout_defers(net):
    a = net.node("127.0.0.2", "a.example", extra={"outbound.command_timeout": "1s",
                                                  "queue.retry_interval": "1h"})
    net.peer("127.0.0.4", greeting=None)
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "slow"))
    a.wait_log(r"delivery id=\w+ rcpt=x@c\.example status=deferred .*timeout talking to host "
               r"mx\.c\.example\[127\.0\.0\.4\] \(state greeting\)", timeout=10)


def test_dsn_parameters_are_passed_on(net):
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "dsn"),
             mail_options=["RET=HDRS", "ENVID=abc+2B1"],
             rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x@c.example"])
    wait_for(lambda: len(p.txns) == 1)
    t = p.txns[0]
    assert "RET=HDRS" in t["mail"] and "ENVID=abc+2B1" in t["mail"]
    assert "NOTIFY=SUCCESS,FAILURE" in t["rcpts"][0]
    assert "ORCPT=rfc822;x@c.example" in t["rcpts"][0]


def test_ret_full_is_passed_on_and_no_ret_added(net):
    """RFC 3461 5.2.1: RET goes on to a DSN peer as it came, FULL as well as
    HDRS (without it the next hop may return only the header); none is added."""
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "full"),
             mail_options=["RET=FULL"])
    wait_for(lambda: len(p.txns) == 1)
    assert "RET=FULL" in p.txns[0]["mail"], p.txns[0]["mail"]
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "none"))
    wait_for(lambda: len(p.txns) == 2)
    assert "RET=" not in p.txns[1]["mail"], p.txns[1]["mail"]


def test_success_notice_relayed_by_a_peer_without_dsn(net):
    """RFC 3461 5.2.2: a recipient asking NOTIFY=SUCCESS that goes to a peer
    without DSN gets our "relayed" notice (nobody further on will report);
    one that goes to a peer with DSN gets none from us: the request went on."""
    a = net.node("127.0.0.2", "a.example")
    p1 = net.peer("127.0.0.4", caps=["PIPELINING", "8BITMIME", "SIZE 10000000",
                                     "ENHANCEDSTATUSCODES"])
    p2 = net.peer("127.0.0.5")
    for dom, ip in (("c.example", "127.0.0.4"), ("d.example", "127.0.0.5")):
        _dns().add(dom, "MX", "10 mx." + dom)
        _dns().add("mx." + dom, "A", ip)
    a.submit("alice@a.example", ["x@c.example", "y@d.example", "bob@a.example"],
             msg("alice@a.example", "x@c.example", "tell me"), rcpt_options=["NOTIFY=SUCCESS"])
    wait_for(lambda: len(p1.txns) == 1 and len(p2.txns) == 1)
    assert "NOTIFY" not in p1.txns[0]["rcpts"][0]
    assert "NOTIFY=SUCCESS" in p2.txns[0]["rcpts"][0]
    a.wait_queue_empty()
    # bob's delivery and x's relay end in two jobs: a notice each.
    texts = inbox_text(a, "alice@a.example", 2)
    reports = sorted(t.split("message/delivery-status", 1)[1].split("--", 1)[0] for t in texts)
    relayed = [r for r in reports if "Final-Recipient: rfc822; x@c.example" in r]
    delivered = [r for r in reports if "Final-Recipient: rfc822; bob@a.example" in r]
    assert len(relayed) == 1 and len(delivered) == 1, reports
    assert "Action: relayed" in relayed[0] and "Status: 2.0.0" in relayed[0]
    assert "Remote-MTA: dns; mx.c.example" in relayed[0]
    assert "bob@a.example" not in relayed[0]
    assert "Action: delivered" in delivered[0] and "x@c.example" not in delivered[0]
    assert all("y@d.example" not in r for r in reports)
    assert all("Subject: Successful Mail Delivery Report" in t for t in texts)
    time.sleep(0.5)
    assert len(a.messages("alice@a.example")) == 2


def test_relayed_notice_that_cannot_be_written_is_owed_not_lost(net):
    """A "relayed" success notice whose write fails (no file can be made in
    the queue directory, as on a full disk) is recorded owed: the recipient
    stays delivered, so the peer never gets the message twice; the owed
    notice survives a restart and is written at the next try."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h",
                                                  "outbound.address_limit": "2"})
    p = net.peer("127.0.0.4", caps=["PIPELINING", "8BITMIME", "SIZE 10000000",
                                    "ENHANCEDSTATUSCODES"])
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    qdir = os.path.join(a.data_dir, "queue")
    # Delivered spool files are kept for reuse: a new message can then be
    # accepted without making a file.
    for i in range(3):
        a.submit("alice@a.example", ["bob@a.example"], msg("alice@a.example", "bob@a.example",
                                                           "warm %d" % i))
    a.wait_queue_empty()
    assert any(n.startswith(".r") for n in os.listdir(qdir)), os.listdir(qdir)
    if subprocess.run(["chattr", "+i", qdir], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example",
                                                         "tell me later"),
                 rcpt_options=["NOTIFY=SUCCESS"])
        wait_for(lambda: len(p.txns) == 1)
        a.wait_log(r"cannot write notice")
        wait_for(lambda: re.search(r"<x@c\.example>\s+remote\s+delivered\s+attempts=1\s+"
                                   r"notice-owed\s+next=", a.queue_list()),
                 what="the owed notice in `queue list`")
    finally:
        subprocess.run(["chattr", "-i", qdir], check=True)
    a.stop()
    a.start()       # the owed notice is read back from the spool file
    assert re.search(r"<x@c\.example>\s+remote\s+delivered\s+attempts=1\s+notice-owed",
                     a.queue_list()), a.queue_list()
    a.cli("queue", "flush")
    a.wait_queue_empty()
    text = inbox_text(a, "alice@a.example", 1)[0]
    report = text.split("message/delivery-status", 1)[1].split("--", 1)[0]
    assert "Final-Recipient: rfc822; x@c.example" in report, report
    assert "Action: relayed" in report and "Status: 2.0.0" in report, report
    assert "Remote-MTA: dns; mx.c.example" in report, report
    time.sleep(0.5)
    assert len(p.txns) == 1             # sent once, never again
    assert len(a.messages("alice@a.example")) == 1


def test_relayed_notice_owed_when_the_spool_file_cannot_be_read(net):
    """The peer took the message, but the spool file cannot be read back to
    make the "relayed" notice (here: a byte of its content damaged while
    the peer was answering; bob's local delivery, from the content still in
    memory, came first, and after it the content is read from the file):
    the notice is owed, not dropped, and is written once the file reads
    again."""
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.4", caps=["PIPELINING", "8BITMIME", "SIZE 10000000",
                                    "ENHANCEDSTATUSCODES"], dot_delay=2)
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example", "bob@a.example"],
             msg("alice@a.example", "x@c.example", "damaged meanwhile"),
             rcpt_options=["NOTIFY=SUCCESS"])
    assert p.dot_seen.wait(15)
    qdir = os.path.join(a.data_dir, "queue")
    # The message's file (bob's notice, "ID-s1", quotes its header too).
    path = [os.path.join(qdir, n) for n in os.listdir(qdir) if "-" not in n and
            b"damaged meanwhile" in open(os.path.join(qdir, n), "rb").read()][0]
    with open(path, "r+b") as f:
        data = f.read()
        off = data.index(b"damaged meanwhile")
        f.seek(off)
        f.write(b"D")
    try:
        inbox_text(a, "alice@a.example", 1)     # bob's notice: the first job had the content
        a.wait_log(r"cannot read")
    finally:
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(b"d")
    # (Read again only after the 10 s pause a failed job takes, or a flush.)
    wait_for(lambda: re.search(r"<x@c\.example>\s+remote\s+delivered\s+attempts=1\s+"
                               r"notice-owed", a.queue_list()),
             what="the owed notice in `queue list`")
    a.cli("queue", "flush")
    a.wait_queue_empty()
    texts = inbox_text(a, "alice@a.example", 2)
    relayed = [t for t in texts if "Final-Recipient: rfc822; x@c.example" in t]
    assert len(relayed) == 1 and "Action: relayed" in relayed[0], texts
    assert len(p.txns) == 1


def test_notify_success_to_an_alias_of_several_reports_expanded(net):
    """RFC 3461 6.2.7.3: NOTIFY=SUCCESS,FAILURE to an alias of two members,
    one local and one behind a DSN peer: the sender gets one "expanded"
    report for the alias; the members go on with FAILURE only, so the peer
    is not asked for SUCCESS and bob's delivery is not reported."""
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.cli("alias", "add", "team@a.example", "bob@a.example", "x@c.example")
    a.submit("alice@a.example", ["team@a.example"], msg("alice@a.example", "team@a.example", "hi"),
             rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;team@a.example"])
    wait_for(lambda: len(p.txns) == 1)
    assert "NOTIFY=FAILURE" in p.txns[0]["rcpts"][0], p.txns[0]["rcpts"]
    a.wait_queue_empty()
    text = inbox_text(a, "alice@a.example", 1)[0]
    report = text.split("message/delivery-status", 1)[1].split("--", 1)[0]
    assert "Final-Recipient: rfc822; team@a.example" in report, report
    assert "Original-Recipient: rfc822;team@a.example" in report, report
    assert "Action: expanded" in report and "Status: 2.0.0" in report, report
    assert "bob@a.example" not in report and "x@c.example" not in report, report
    assert len(a.messages("bob@a.example")) == 1
    time.sleep(0.5)
    assert len(a.messages("alice@a.example")) == 1


def test_tls_required_defers_without_starttls(net):
    a = net.node("127.0.0.2", "a.example", extra={"outbound.tls": "require",
                                                  "queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "tls"))
    a.wait_log(r"delivery id=\w+ rcpt=x@c\.example status=deferred .*4\.7\.5")
    assert not any(l.startswith("MAIL") for l in p.lines)
    out = a.queue_list()
    assert "x@c.example" in out and "4.7.5" in out


def test_peer_closing_in_the_tls_handshake_gets_the_mail_in_clear(net):
    """Opportunistic TLS (outbound.tls = may): a peer that offers STARTTLS,
    says 220 and then closes the connection in the handshake failed TLS
    like one that sends an alert; the same address is tried again in clear
    at once, not deferred as if the host were down."""

    class ClosesInHandshake:
        def wrap_socket(self, sock, server_side=True):
            sock.recv(65536)  # the ClientHello
            sock.shutdown(socket.SHUT_RDWR)
            raise OSError("handshake refused")

    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    p = net.peer("127.0.0.4")
    p.ctx = ClosesInHandshake()
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "tls"))
    wait_for(lambda: len(p.txns) == 1)
    assert p.connections == 2 and "STARTTLS" in p.lines
    a.wait_log(r"outbound id=\w+ rcpt=x@c\.example .*tls=none .*status=sent")


def test_no_sni_for_a_peer_named_by_its_address(net, tls_files):
    """RFC 6066 3: the server_name is a DNS host name; a literal IP address
    is not permitted there. A route (or relayhost) given as an address gets
    no SNI at all; an MX host still gets its name."""
    names = []
    p = net.peer("127.0.0.4", tls_files=tls_files)
    p.ctx.sni_callback = lambda sslobj, name, ctx: names.append(name)
    a = net.node("127.0.0.2", "a.example",
                 extra={"route.routed.example": "127.0.0.4:%d" % net.port})
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@routed.example"], msg("alice@a.example", "x@routed.example", "r"))
    wait_for(lambda: len(p.txns) == 1)
    a.submit("alice@a.example", ["y@c.example"], msg("alice@a.example", "y@c.example", "mx"))
    wait_for(lambda: len(p.txns) == 2)
    assert p.tls_used
    assert "127.0.0.4" not in names, names
    assert "mx.c.example" in names, names


def test_relayhost_with_auth_over_tls(net, tls_files, tmp_path):
    pwfile = tmp_path / "relay.pw"
    pwfile.write_text("relay-secret\n")
    p = net.peer("127.0.0.4", tls_files=tls_files, auth=True)
    a = net.node("127.0.0.2", "a.example", extra={
        "relayhost": "127.0.0.4:%d" % net.port, "relayhost.user": "relayuser",
        "relayhost.password_file": str(pwfile)})
    a.submit("alice@a.example", ["x@anything.example", "y@other.example"],
             msg("alice@a.example", "x@anything.example", "relay"))
    wait_for(lambda: len(p.txns) == 1)
    assert p.tls_used
    import base64
    assert p.auth_seen == ["AUTH PLAIN " + base64.b64encode(b"\0relayuser\0relay-secret").decode()]
    assert sorted(p.txns[0]["accepted"]) == ["x@anything.example", "y@other.example"]
    assert "relay-secret" not in a.log()


def test_relayhost_without_auth_follows_outbound_tls(net):
    """TLS is required for the smarthost's password, not for the smarthost: one
    without AUTH and without STARTTLS (a LAN relay) takes the mail in clear
    under outbound.tls = may, as any peer would."""
    p = net.peer("127.0.0.4")   # no STARTTLS offered
    a = net.node("127.0.0.2", "a.example", extra={"relayhost": "127.0.0.4:%d" % net.port})
    a.submit("alice@a.example", ["x@anything.example"], msg("alice@a.example", "x@anything.example", "lan"))
    wait_for(lambda: len(p.txns) == 1)
    assert not p.tls_used and p.auth_seen == []
    a.wait_log(r"rcpt=x@anything\.example host=127\.0\.0\.4 ip=127\.0\.0\.4 tls=none .*status=sent")


def test_relayhost_on_port_465_uses_implicit_tls(net, tls_files, tmp_path):
    pwfile = tmp_path / "relay.pw"
    pwfile.write_text("pw465")
    p = Peer("127.0.0.4", 465, tls_files=tls_files, auth=True, implicit_tls=True)
    net.peers.append(p)
    a = net.node("127.0.0.2", "a.example", extra={
        "relayhost": "127.0.0.4:465", "relayhost.user": "u465",
        "relayhost.password_file": str(pwfile)})
    a.submit("alice@a.example", ["x@anything.example"], msg("alice@a.example", "x@anything.example", "465"))
    wait_for(lambda: len(p.txns) == 1)
    assert p.tls_used and len(p.auth_seen) == 1
    assert not any(l.upper().startswith("STARTTLS") for l in p.lines)
    a.wait_log(r"rcpt=x@anything\.example host=127\.0\.0\.4 ip=127\.0\.0\.4 tls=TLSv1\.[23]\S* .*status=sent")


def test_route_overrides_one_domain(net):
    p = net.peer("127.0.0.4")
    a = net.node("127.0.0.2", "a.example", extra={"route.routed.example": "127.0.0.4:%d" % net.port})
    a.submit("alice@a.example", ["x@routed.example"], msg("alice@a.example", "x@routed.example", "r"))
    wait_for(lambda: len(p.txns) == 1)
    a.wait_log(r"rcpt=x@routed\.example host=127\.0\.0\.4 ip=127\.0\.0\.4 .*status=sent")


def test_relayhost_takes_address_literals_and_a_route_beats_it(net):
    """relayhost takes all remote mail, a recipient at an address literal
    too (a host that may not send on port 25 itself may not reach
    [192.0.2.1] either; Postfix's relayhost takes it); route.DOMAIN still
    wins for its domain."""
    relay = net.peer("127.0.0.4")
    direct = net.peer("127.0.0.5")
    a = net.node("127.0.0.2", "a.example", extra={
        "relayhost": "127.0.0.4:%d" % net.port,
        "route.routed.example": "127.0.0.5:%d" % net.port})
    a.submit("alice@a.example", ["x@[127.0.0.5]"], msg("alice@a.example", "x@[127.0.0.5]", "lit"))
    wait_for(lambda: len(relay.txns) + len(direct.txns) == 1)
    assert relay.txns and relay.txns[0]["accepted"] == ["x@[127.0.0.5]"], direct.txns
    a.submit("alice@a.example", ["y@routed.example"], msg("alice@a.example", "y@routed.example", "r"))
    wait_for(lambda: len(direct.txns) == 1)
    assert direct.txns[0]["accepted"] == ["y@routed.example"]
    assert len(relay.txns) == 1
    a.wait_queue_empty()


def test_kill_during_delivery_delivers_at_most_once_more(net):
    p = net.peer("127.0.0.4", dot_delay=3)
    a = net.node("127.0.0.2", "a.example")
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "crash"))
    assert p.dot_seen.wait(15)
    a.kill()
    p.dot_delay = 0
    a.start()
    wait_for(lambda: len(p.txns) >= 2, timeout=20)
    a.wait_queue_empty()
    time.sleep(1)
    assert len(p.txns) == 2
    assert a.messages("alice@a.example") == []


def test_graceful_stop_waits_for_the_reply_to_the_dot(net):
    """SIGTERM while a peer has the message and is about to answer the final
    dot: the stop waits (shutdown_grace) for the reply and records it, so
    the restarted server does not send the message a second time."""
    a = net.node("127.0.0.2", "a.example")
    p = net.peer("127.0.0.4", dot_delay=2)
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "stop"))
    assert p.dot_seen.wait(15)
    assert a.stop() == 0
    assert re.search(r"delivery id=\w+ rcpt=x@c\.example status=sent", a.log())
    a.start()
    a.wait_queue_empty()
    time.sleep(2)
    assert len(p.txns) == 1


def test_result_recorded_while_another_destination_is_in_flight(net):
    """What one peer took is on disk at once (not at the queue's next tick),
    while the message's other destination is still being tried: a crash
    then does not send it to that peer again."""
    a = net.node("127.0.0.2", "a.example")
    p1 = net.peer("127.0.0.4")
    p2 = net.peer("127.0.0.5", dot_delay=5)
    for dom, ip in (("c.example", "127.0.0.4"), ("d.example", "127.0.0.5")):
        _dns().add(dom, "MX", "10 mx." + dom)
        _dns().add("mx." + dom, "A", ip)
    a.submit("alice@a.example", ["x@c.example", "y@d.example"],
             msg("alice@a.example", "x@c.example", "two peers"))
    a.wait_log(r"outbound id=\w+ rcpt=x@c\.example .*status=sent")
    qid = re.search(r"outbound id=(\w+) rcpt=x@c\.example", a.log()).group(1)
    assert "rcpt=y@d.example" not in a.log()        # still in flight
    deadline = time.time() + 0.6
    while "<x@c.example>  remote  delivered" not in a.cli("queue", "show", qid).stdout:
        assert time.time() < deadline, a.cli("queue", "show", qid).stdout
        time.sleep(0.02)
    a.kill()
    p2.dot_delay = 0
    a.start()
    a.wait_queue_empty(timeout=20)
    assert len(p1.txns) == 1
    assert a.messages("alice@a.example") == []


def test_deferred_message_in_reused_spool_file(net):
    """Delivered spool files are kept (hidden ".r" names) and the next messages
    are written over them in place. A message deferred in such a file keeps its
    state records there (not the last message's), shows in `queue list/show`,
    survives a crash, and is delivered once when the peer takes it."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    answers = {"n": 0}

    def rcpt(addr, n):
        answers["n"] += 1
        return "451 4.3.0 try later" if answers["n"] == 1 else "250 2.1.5 ok"

    p = net.peer("127.0.0.4", rcpt=rcpt)
    _dns().add("c.example", "MX", "10 mx.c.example")
    _dns().add("mx.c.example", "A", "127.0.0.4")
    for i in range(3):     # local mail: delivered, its file kept and reused
        a.submit("alice@a.example", ["bob@a.example"], msg("alice@a.example", "bob@a.example",
                                                            "local %d" % i))
    a.wait_messages("bob@a.example", 3)
    a.wait_queue_empty()
    qdir = os.path.join(a.data_dir, "queue")
    wait_for(lambda: [n for n in os.listdir(qdir) if n.startswith(".r")])
    kept = sorted(n for n in os.listdir(qdir) if n.startswith(".r"))
    for n in kept:
        with open(os.path.join(qdir, n), "rb") as f:
            assert f.read(1) == b"\0", n     # free

    a.submit("alice@a.example", ["x@c.example"], msg("alice@a.example", "x@c.example", "kept"))
    a.wait_log(r"delivery id=\w+ rcpt=x@c\.example status=deferred")
    qid = re.search(r"delivery id=(\w+) rcpt=x@c\.example status=deferred", a.log()).group(1)
    assert sorted(os.listdir(qdir)) == kept     # written over a kept file, no new name
    for _ in range(2):
        out = a.queue_list()
        assert qid in out and "deferred  attempts=1" in out, out
        assert "bob@a.example" not in out       # free files hold no message
        show = a.cli("queue", "show", qid).stdout
        assert "Subject: kept" in show and "451 4.3.0 try later" in show, show
        a.kill()                                # the deferral is on disk
        a.start()
        assert "1 messages taken up again" in a.log()
    a.cli("queue", "flush")
    a.wait_log(r"delivery id=%s rcpt=x@c\.example status=sent .*attempt=2" % qid)
    a.wait_queue_empty()
    time.sleep(0.5)
    assert len(p.txns) == 1
    assert a.messages("alice@a.example") == []     # no bounce, no delay notice
    assert sorted(os.listdir(qdir)) == kept


# ---------------------------------------------------------------------------
# Postfix


def have_postfix():
    return shutil.which("postfix") or os.path.exists("/usr/sbin/postfix")


class Postfix:
    def __init__(self, tmp, ip, port, domain, extra=""):
        self.dir = tmp
        self.conf = os.path.join(tmp, "conf")
        self.queue = os.path.join(tmp, "queue")
        self.data = os.path.join(tmp, "data")
        self.mail = os.path.join(tmp, "mail")
        self.log = os.path.join(tmp, "maillog")
        for d in (self.conf, self.queue, self.data, self.mail):
            os.makedirs(d, exist_ok=True)
        os.chmod(tmp, 0o755)
        shutil.chown(self.mail, "postfix", "postfix")
        shutil.chown(self.data, "postfix", "postfix")
        with open(os.path.join(self.conf, "vmailbox"), "w") as f:
            f.write("carol@%s %s/\n" % (domain, domain))
        import pwd
        pw = pwd.getpwnam("postfix")
        main = """
compatibility_level = 3.6
queue_directory = {q}
data_directory = {data}
mail_owner = postfix
myhostname = mx.{dom}
mydomain = {dom}
mydestination =
inet_interfaces = {ip}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {log}
maillog_file_prefixes = {tmp}
smtp_host_lookup = native
smtpd_tls_security_level = none
virtual_mailbox_domains = {dom}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
alias_maps =
alias_database =
disable_dns_lookups = yes
smtp_dns_support_level = disabled
{extra}
""".format(tmp=tmp, q=self.queue, data=self.data, dom=domain, ip=ip, log=self.log, mail=self.mail,
           conf=self.conf, uid=pw.pw_uid, gid=pw.pw_gid, extra=extra)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(main)
        with open("/etc/postfix/master.cf") as f:
            master = f.read()
        master = re.sub(r"(?m)^smtp\s+inet.*$", "%s:%d inet n - n - - smtpd" % (ip, port), master)
        master = re.sub(r"(?m)^postlog\s+unix-dgram.*$", "postlog unix-dgram n - n - 1 postlogd",
                        master)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(master)
        self.domain = domain

    def run(self, *args):
        return subprocess.run(["postfix", "-c", self.conf] + list(args), capture_output=True,
                              text=True, timeout=60)

    def start(self):
        r = self.run("start")
        assert r.returncode == 0, r.stderr + r.stdout

    def stop(self):
        self.run("stop")

    def maildir_messages(self):
        out = []
        base = os.path.join(self.mail, self.domain, "new")
        if os.path.isdir(base):
            for n in os.listdir(base):
                with open(os.path.join(base, n), "rb") as f:
                    out.append(f.read())
        return out

    def logtext(self):
        try:
            with open(self.log) as f:
                return f.read()
        except FileNotFoundError:
            return ""


@pytest.mark.skipif(not have_postfix() or os.geteuid() != 0, reason="needs postfix and root")
def test_postfix_interop_both_ways(net, tmp_path):
    # Postfix's daemons (user postfix) must reach its queue: not under pytest's 0700 tmp.
    d = tempfile.mkdtemp(prefix="surat-pf-")
    # Postfix accepts only interface addresses in inet_interfaces: 127.0.0.1.
    pf = Postfix(d, "127.0.0.1", net.port, "p.example",
                 extra="relayhost = [127.0.0.2]:%d\n" % net.port)
    pf.start()
    try:
        _dns().add("p.example", "MX", "10 mx.p.example")
        _dns().add("mx.p.example", "A", "127.0.0.1")
        a = net.node("127.0.0.2", "a.example")
        # surat -> postfix
        a.submit("alice@a.example", ["carol@p.example"], msg("alice@a.example", "carol@p.example", "to pf"))
        wait_for(lambda: pf.maildir_messages(), timeout=30,
                 what="postfix delivery:\n" + pf.logtext())
        m = pf.maildir_messages()[0].decode("utf-8", "replace")
        assert "Subject: to pf" in m
        a.wait_log(r"rcpt=carol@p\.example host=mx\.p\.example ip=127\.0\.0\.1 .*status=sent")
        # postfix -> surat (postfix relays everything to surat)
        with smtplib.SMTP("127.0.0.1", net.port, timeout=30) as c:
            c.sendmail("carol@p.example", ["bob@a.example"],
                       msg("carol@p.example", "bob@a.example", "from pf"))
        texts = inbox_text(a, "bob@a.example", 1, timeout=30)
        assert "Subject: from pf" in texts[0]
    finally:
        pf.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_flush_while_another_recipient_is_in_flight(net):
    """`surat queue flush` given while the message is being worked on (one
    recipient deferred, another's transaction still open) is not lost when that
    work ends: the deferred recipient is tried again at once, not after the
    retry interval."""
    a = net.node("127.0.0.2", "a.example", extra={"queue.retry_interval": "1h"})
    answers = ["451 4.3.0 try later"]
    p1 = net.peer("127.0.0.4", rcpt=lambda addr, n: answers.pop() if answers
                  else "250 2.1.5 ok")
    p2 = net.peer("127.0.0.5", dot_delay=3)
    for dom, ip in (("c.example", "127.0.0.4"), ("d.example", "127.0.0.5")):
        _dns().add(dom, "MX", "10 mx." + dom)
        _dns().add("mx." + dom, "A", ip)
    a.submit("alice@a.example", ["x@c.example", "y@d.example"],
             msg("alice@a.example", "x@c.example", "two"))
    a.wait_log(r"rcpt=x@c\.example .*status=deferred")
    assert p2.dot_seen.wait(15)
    assert "rcpt=y@d.example" not in a.log()        # still in flight
    a.cli("queue", "flush")
    a.wait_log(r"rcpt=y@d\.example .*status=sent")
    a.wait_log(r"rcpt=x@c\.example .*status=sent .*attempt=2", timeout=10)
    a.wait_queue_empty()
    assert len(p1.txns) == 1 and len(p2.txns) == 1
    assert a.messages("alice@a.example") == []      # no bounce, no delay notice
