"""Fixtures for the integration tests: each test gets a running surat.

A `surat` fixture writes a config into a temp dir, picks free loopback
ports, starts `surat serve`, waits until every listener accepts, and on
teardown stops it with SIGTERM, requires exit status 0 and fails the test
if a sanitizer (ASan/UBSan/LSan) reported anything.
"""
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SURAT_BIN", os.path.join(ROOT, "build", "asan", "surat"))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer", "panic at")

os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")


from ports import free_port  # noqa: E402  (re-exported for the tests)


@pytest.fixture
def no_asan_quarantine(monkeypatch):
    """Daemons started in this test hand freed memory back at once: AddressSanitizer's
    quarantine would otherwise keep every freed buffer, and RSS would measure it."""
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") +
                       ":quarantine_size_mb=0")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


# fill_mailbox(): room left for the headers surat adds to a message (the
# RCPT quota check counts them), not for a message with FILL_PAD in it.
FILL_ROOM = 1024
FILL_PAD = (b"X-Fill: " + b"p" * 700 + b"\r\n\t" + b"p" * 700 + b"\r\n")



def skip_unless_ipv6_loopback():
    """Skip the calling test where ::1 cannot be used (no IPv6, or a
    sandbox without it): a refused connection to it is the usable case."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.create_connection(("::1", 9), timeout=1).close()
    except ConnectionRefusedError:
        pass
    except OSError as e:
        pytest.skip("::1 unusable here: %s" % e)


def client_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def send_all_counted(sock, data, sent):
    """sendall() that counts what has gone (for a thread); stops at an error."""
    view = memoryview(data)
    try:
        while view:
            n = sock.send(view)
            sent[0] += n
            view = view[n:]
    except OSError:
        pass


def rss_growth_while_flooding(srv, sock, flood, secs):
    """Send flood on sock from a thread, never reading, for secs seconds:
    (how much srv's RSS grew in KiB, octets sent). Closes sock."""
    base = srv.rss_kib()
    sent = [0]
    t = threading.Thread(target=send_all_counted, args=(sock, flood, sent), daemon=True)
    t.start()
    time.sleep(secs)
    grown = srv.rss_kib() - base
    sock.close()
    t.join(30)
    return grown, sent[0]


def pipelined_over_starttls(port, greeting, starttls, ok, cmds, wait=1.0):
    """Connect, read the greeting (it starts with greeting), send starttls
    (its reply starts with ok), then over TLS pipeline cmds from a thread and
    read only after wait seconds, to the end of the stream: (data, end), end
    "close_notify" if the server ended TLS properly, else the error."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = sock.makefile("rb")
    assert f.readline().startswith(greeting)
    sock.sendall(starttls)
    assert f.readline().startswith(ok)
    ctx = client_tls()
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    tls = ctx.wrap_socket(sock, suppress_ragged_eofs=False)
    t = threading.Thread(target=tls.sendall, args=(cmds,), daemon=True)
    t.start()
    time.sleep(wait)
    data, end = b"", "close_notify"
    while True:
        try:
            part = tls.recv(65536)
        except ssl.SSLError as e:       # OpenSSL 3: UNEXPECTED_EOF_WHILE_READING
            end = str(e)
            break
        if not part:
            break
        data += part
    t.join(30)
    tls.close()
    return data, end


KINDS = ("smtp", "submission", "submissions")

# add_user(): password -> the hash `surat user add` made of it (per process).
_HASHES = {}


class Surat:
    ip = "127.0.0.1"  # where start() probes the listeners

    def __init__(self, tmp, tls_files, extra=None, kinds=KINDS):
        self.dir = tmp
        self.data_dir = os.path.join(tmp, "data")
        self.conf = os.path.join(tmp, "surat.conf")
        self.log_path = os.path.join(tmp, "surat.log")
        self.ports = {k: free_port() for k in kinds}
        self.proc = None
        self.logf = None
        lines = ["hostname = mx.example.test", "data_dir = " + self.data_dir,
                 "tls.cert = " + tls_files[0], "tls.key = " + tls_files[1],
                 "log.level = debug", "auth.fail_delay = 0", "shutdown_grace = 5s"]
        for k, p in self.ports.items():
            lines.append("listen.%s = 127.0.0.1:%d" % (k, p))
        for k, v in (extra or {}).items():
            lines.append("%s = %s" % (k, v))
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    # --- CLI ---
    def cli(self, *args, input=None, check=True):
        r = subprocess.run([BIN, "-c", self.conf] + list(args), input=input,
                           capture_output=True, text=True, timeout=60)
        self.check_sanitizer(r.stderr)
        if check and r.returncode != 0:
            raise AssertionError("surat %s failed (%d): %s" % (" ".join(args), r.returncode,
                                                                r.stderr))
        return r

    def add_domain(self, d):
        self.cli("domain", "add", d)

    def add_user(self, addr, password="secret-pw", quota=None):
        args = ["user", "add", addr]
        if quota:
            args += ["--quota", quota]
        cached = _HASHES.get(password)
        if cached:
            # The hash the CLI made of this same password for an earlier user:
            # the stored result is the same, without a yescrypt hash under ASan.
            self.cli(*(args + ["--hash", cached]))
            return
        self.cli(*args, input=password + "\n")
        h = self.stored_hash(addr)
        if h:
            _HASHES[password] = h

    def stored_hash(self, addr):
        """addr's hash in accounts.db (None where it cannot be read)."""
        import sqlite3
        try:
            db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data_dir, "accounts.db"),
                                 uri=True, timeout=10)
            try:
                row = db.execute("SELECT hash FROM users WHERE address = ?",
                                 (addr.lower(),)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return row[0] if row and row[0].startswith("$y$") else None

    def messages(self, addr, box="INBOX"):
        """UIDs in a mailbox, from the CLI."""
        r = self.cli("mailbox", "show", addr, box)
        uids = []
        for line in r.stdout.splitlines():
            line = line.strip()
            if line.startswith("uid="):
                uids.append(int(line.split()[0][4:]))
        return uids

    def message(self, addr, uid, box="INBOX"):
        r = subprocess.run([BIN, "-c", self.conf, "mailbox", "show", addr, box, str(uid)],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def fill_mailbox(self, addr, size=16384):
        """Make addr's mailbox full: a filler message of about size octets
        delivered over SMTP, then its quota set to its usage and FILL_ROOM.
        RCPT still takes mail for it (without SIZE=, a message of one octet
        with the headers surat adds fits), and delivery defers a message of
        more than FILL_ROOM (over quota: temporary; a message of FILL_PAD's
        size is) as long as it is not bigger than the whole quota (5.2.3:
        bounced at once)."""
        import smtplib
        n = len(self.messages(addr))
        body = b"Subject: filler\r\n\r\n" + (b"f" * 78 + b"\r\n") * (size // 80)
        with smtplib.SMTP("127.0.0.1", self.port("smtp"), timeout=30) as c:
            c.sendmail("filler@remote.test", [addr], body)
        self.wait_messages(addr, n + 1)
        out = self.cli("mailbox", "list", addr).stdout
        used = sum(int(x) for x in re.findall(r"size=(\d+)", out))
        assert used >= size, out
        self.cli("user", "quota", addr, str(used + FILL_ROOM))

    def wait_messages(self, addr, n, box="INBOX", timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            uids = self.messages(addr, box)
            if len(uids) >= n:
                return uids
            time.sleep(0.05)
        raise AssertionError("%s/%s has %d messages, wanted %d" %
                             (addr, box, len(self.messages(addr, box)), n))

    # --- daemon ---
    def start(self, preexec_fn=None):
        started = self.log().count("surat started:")
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "-c", self.conf, "serve"], stdout=self.logf,
                                     stderr=self.logf, preexec_fn=preexec_fn)
        deadline = time.time() + 20
        for port in self.ports.values():
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError("surat exited at start:\n" + self.log())
                try:
                    socket.create_connection((self.ip, port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise AssertionError("surat did not listen on %d:\n%s" %
                                             (port, self.log()))
                    time.sleep(0.01)    # every daemon start waits here: keep it short
        # The listeners are bound before the spool is read: a port answers before
        # the daemon has logged what it took up. "surat started" (info) comes after.
        with open(self.conf) as f:
            quiet = re.search(r"(?m)^\s*log\.(level\s*=\s*(warn|error)|syslog\s*=\s*yes)",
                              f.read())
        while not quiet and self.log().count("surat started:") <= started:
            if self.proc.poll() is not None:
                raise AssertionError("surat exited at start:\n" + self.log())
            if time.time() > deadline:
                raise AssertionError("surat did not log its start:\n" + self.log())
            time.sleep(0.005)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("surat did not stop on %s:\n%s" % (sig, self.log()[-3000:]))
        self.proc = None
        self.logf.close()
        self.check_sanitizer(self.log())
        return rc

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self.logf.close()

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def check_sanitizer(self, text):
        for m in SANITIZER_MARKERS:
            if m in text:
                raise AssertionError("sanitizer report:\n" + text[-6000:])

    def port(self, kind):
        return self.ports[kind]


# The usual accounts: domain example.test, users alice and bob.
POPULATED = ("example.test", (("alice@example.test", "alice-pw"), ("bob@example.test", "bob-pw")))


@pytest.fixture(scope="session")
def data_template(tmp_path_factory, tls_files):
    """data_template(domain, users): a data_dir made once per session by the
    CLI (`domain add`, `user add` for each (address, password)); copying it
    is much cheaper than those CLI runs for every daemon."""
    made = {}

    def get(domain, users):
        key = (domain, tuple(users))
        if key not in made:
            t = Surat(str(tmp_path_factory.mktemp("data-template")), tls_files)
            t.add_domain(domain)
            for addr, pw in users:
                t.add_user(addr, pw)
            made[key] = t.data_dir
        return made[key]
    return get


@pytest.fixture
def make_surat(tmp_path, tls_files, data_template):
    made = []

    def make(extra=None, kinds=KINDS, start=True, populated=None):
        """populated: (domain, ((address, password), ...)) to start with
        (POPULATED: example.test, alice and bob), as the CLI adds them."""
        d = tempfile.mkdtemp(dir=str(tmp_path))
        s = Surat(d, tls_files, extra, kinds)
        made.append(s)
        if populated:
            shutil.copytree(data_template(*populated), s.data_dir)
        if start:
            s.start()
        return s

    yield make
    errors = []
    for s in made:
        if s.proc is not None:
            rc = s.stop()
            if rc != 0:
                errors.append("surat exited with %s:\n%s" % (rc, s.log()[-3000:]))
    if errors:
        raise AssertionError("\n".join(errors))


@pytest.fixture
def surat(make_surat):
    """A running surat with domain example.test and users alice and bob."""
    return make_surat(populated=POPULATED)
