"""Inbound SMTP with real peers: Debian's Postfix and msmtp talk to surat.

1. Postfix as the sending MTA: a private instance (own config directory and
   queue, `postfix -c DIR`, no listener at all: mail is injected with its
   sendmail) routes example.test to surat's MX port with
   `smtp_tls_security_level = encrypt`. Plain, 8-bit and SMTPUTF8 mail, a
   message with one unknown recipient among good ones (only that one is
   bounced) and one over smtp.max_message_size (Postfix told to ignore the
   SIZE surat advertises, so that surat's own 552 at the end of the data is
   what it gets and bounces; surat keeps nothing). Postfix's bounces land in
   a maildir of its own domain (pf.test), where the tests read them.
2. Postfix as a submission client: relayhost = surat's submission port,
   STARTTLS required, SASL with alice's password. Her own From: is delivered;
   a From: she does not own gets 553 5.7.1 and Postfix bounces it.
3. msmtp as a MUA against submission (STARTTLS) and submissions (implicit
   TLS), AUTH PLAIN and LOGIN; a wrong password fails and queues nothing.

Everything stays on loopback. Postfix needs root (its master runs as root
and drops to the postfix user): without it those tests skip. Each instance is
started as `postfix start` ends (`master -w`, its queue made beforehand) and
stopped with `postfix -c DIR stop`; teardown fails if any process of it is
left.
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from test_smtp import bounded, queue_ids, split_stored, wait_queue_empty  # noqa: F401

TEST_LIMIT = 45     # per test (read by the `bounded` fixture)

ALICE, BOB = "alice@example.test", "bob@example.test"
UTF8_USER = "j\u00f6s\u00e9@example.test"
SENDER = "sender@pf.test"       # Postfix-side envelope sender; its bounces land here
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
PF_SENDMAIL = "/usr/sbin/sendmail"
MASTER = "/usr/lib/postfix/sbin/master"
TLS_DESC = re.compile(r"\(TLSv1\.[23]:[A-Z0-9_-]+\)")


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what())
        time.sleep(0.05)


def alive(pid):
    """pid runs (a zombie has ended: only its parent can reap it)."""
    if pid is None:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def user_surat(make_surat, extra=None):
    s = make_surat(extra)
    s.add_domain("example.test")
    s.add_user(ALICE, "alice-pw")
    s.add_user(BOB, "bob-pw")
    return s


# ---------------------------------------------------------------- Postfix

class Postfix:
    """A private Postfix: config, queue and maildirs under one temp dir,
    no inet service (the stock smtpd line is dropped), nothing chrooted."""

    def __init__(self, top, main_extra, files):
        self.dir = top
        self.conf = os.path.join(top, "conf")
        self.queue = os.path.join(top, "queue")
        self.data = os.path.join(top, "data")
        self.mail = os.path.join(top, "mail")
        self.logfile = os.path.join(top, "maillog")
        for d in (self.conf, self.queue, self.data, self.mail):
            os.makedirs(d)
        for d in (self.data, self.mail):
            shutil.chown(d, "postfix", "postfix")
        import pwd
        pw = pwd.getpwnam("postfix")
        files = dict(files)
        files.setdefault("vmailbox", "%s pf.test/sender/\n" % SENDER)
        for name, text in files.items():
            p = os.path.join(self.conf, name)
            with open(p, "w") as f:
                f.write(text)
            # Postfix's smtp reads its password map before dropping privileges.
            os.chmod(p, 0o600 if "sasl" in name else 0o644)
        main = """\
compatibility_level = 3.6
queue_directory = {q}
data_directory = {data}
mail_owner = postfix
myhostname = client.pf.test
mydomain = pf.test
myorigin = pf.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_bind_address = 127.0.0.1
mynetworks = 127.0.0.0/8
maillog_file = {log}
maillog_file_prefixes = {top}
alias_maps =
alias_database =
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtputf8_enable = yes
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
virtual_mailbox_domains = pf.test
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
{extra}
""".format(q=self.queue, data=self.data, log=self.logfile, top=top, mail=self.mail,
           conf=self.conf, uid=pw.pw_uid, gid=pw.pw_gid,
           extra=main_extra.replace("@CONF@", self.conf))
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(main)
        out = []
        with open("/etc/postfix/master.cf") as f:
            for line in f:
                fields = line.split()
                if line[:1] in ("#", " ", "\t") or len(fields) < 8:
                    out.append(line)
                elif fields[1] == "inet":
                    out.append("#" + line)      # no listener: mail comes in by sendmail
                else:
                    fields[4] = "n"             # chroot off: no copies of /etc needed
                    out.append(" ".join(fields) + "\n")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.writelines(out)
        # Postfix waits until a config file it loads is older than this
        # second (an editor may still be writing it): date them back.
        past = time.time() - 60
        for n in os.listdir(self.conf):
            os.utime(os.path.join(self.conf, n), (past, past))

    def run(self, *args):
        return subprocess.run([POSTFIX, "-c", self.conf] + list(args), capture_output=True,
                              text=True, timeout=30)

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def make_queue(self):
        """The queue directories as postfix-files lists them. `postfix start`
        would make them too, but its integrity checks cost seconds per start;
        with them in place `quick-start` skips those checks."""
        made = 0
        os.chmod(self.queue, 0o755)
        with open("/etc/postfix/postfix-files") as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) < 5 or parts[1] != "d" or \
                        not parts[0].startswith("$queue_directory/"):
                    continue
                d = os.path.join(self.queue, parts[0][len("$queue_directory/"):])
                os.makedirs(d, exist_ok=True)
                owner = "postfix" if parts[2] == "$mail_owner" else parts[2]
                group = "postdrop" if parts[3] == "$setgid_group" else \
                    (owner if parts[3] == "-" else parts[3])
                if owner == "root":
                    group = "root"
                shutil.chown(d, owner, group)
                os.chmod(d, int(parts[4], 8))
                made += 1
        assert made >= 10, "no queue directories in postfix-files"
        open(os.path.join(self.queue, "quick-start"), "w").close()

    def start(self):
        """What `postfix start` ends with (`master -w`: returns once the
        master is up). The postfix(1) wrapper itself costs about 2 s a call
        here, its checks more; `stop` still goes through it."""
        self.make_queue()
        r = subprocess.run([MASTER, "-c", self.conf, "-w"], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, MAIL_CONFIG=self.conf))
        assert r.returncode == 0, r.stdout + r.stderr + self.log()

    def stop(self):
        """Stop the master and make sure it is gone; killed (by pid) if not."""
        pid = self.master_pid()
        self.run("stop")
        deadline = time.time() + 10
        while (self.processes() or alive(pid)) and time.time() < deadline:
            time.sleep(0.05)
        left = self.processes()
        if alive(pid):
            left[pid] = "master"
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            raise AssertionError("left after `postfix stop`: %s\n%s" % (left, self.log()[-2000:]))

    def processes(self):
        """pid -> command line of the processes started with this config."""
        found = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if self.conf in cmd:
                found[int(d)] = cmd
        return found

    def sendmail(self, rcpts, body, sender=SENDER):
        r = subprocess.run([PF_SENDMAIL, "-C", self.conf, "-i", "-f", sender, "--"] + rcpts,
                           input=body, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr

    def log(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=20):
        rx = re.compile(pattern)
        return wait_for(lambda: rx.search(self.log()), timeout,
                        lambda: "/%s/ in postfix log:\n%s" % (pattern, self.log()[-4000:]))

    def queue_empty(self):
        r = subprocess.run(["/usr/sbin/postqueue", "-c", self.conf, "-p"], capture_output=True,
                           text=True, timeout=30)
        return "Mail queue is empty" in r.stdout

    def bounces(self):
        """Messages in sender@pf.test's maildir (Postfix's own bounces)."""
        out = []
        d = os.path.join(self.mail, "pf.test", "sender", "new")
        if os.path.isdir(d):
            for n in sorted(os.listdir(d)):
                with open(os.path.join(d, n), "rb") as f:
                    out.append(f.read())
        return out


@pytest.fixture
def make_postfix():
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master runs as root)")
    if not all(os.path.exists(p) for p in (POSTFIX, PF_SENDMAIL, MASTER)):
        pytest.skip("Debian's postfix is not installed (scripts/deps.sh)")
    made = []

    def make(main_extra="", files=()):
        # Postfix's daemons (user postfix) must reach it: not under pytest's 0700 tmp.
        top = tempfile.mkdtemp(prefix="surat-pfi-")
        os.chmod(top, 0o755)
        pf = Postfix(top, main_extra, dict(files))
        made.append(pf)
        pf.start()
        return pf

    yield make
    errors = []
    for pf in made:
        try:
            pf.stop()
        except AssertionError as e:
            errors.append(str(e))
        shutil.rmtree(pf.dir, ignore_errors=True)
    if errors:
        raise AssertionError("\n".join(errors))


def mx_postfix(make_postfix, s, extra=""):
    """Postfix routing example.test to surat's MX port, STARTTLS required."""
    return make_postfix("transport_maps = texthash:@CONF@/transport\n" + extra,
                        {"transport": "example.test smtp:[127.0.0.1]:%d\n" % s.port("smtp")})


def msg(subject, frm=SENDER, to=ALICE, extra=b"", body=b"hello from postfix\n"):
    return (("From: %s\nTo: %s\nSubject: %s\n" % (frm, to, subject)).encode() + extra +
            b"\n" + body)


def assert_received_chain(stored, proto):
    """surat's Received: on top (protocol word, TLS details), Postfix's own
    below it, unchanged."""
    _, received, rest = split_stored(stored)
    assert re.match(r"Received: from client\.pf\.test \(localhost \[127\.0\.0\.1\]\)\r\n"
                    r"\tby mx\.example\.test \(surat\) with %s\r\n" % proto, received), received
    assert TLS_DESC.search(received), received
    assert rest.startswith(b"Received: by client.pf.test (Postfix, from userid 0)"), rest[:300]
    return rest


def spool_files(s):
    spool = os.path.join(s.data_dir, "queue")
    return [os.path.relpath(os.path.join(d, f), spool) for d, _, fs in os.walk(spool) for f in fs]


def only_message(s, addr, settle_after):
    """addr's one message, once settle_after() says the sender is done:
    a second copy would be there by then."""
    s.wait_messages(addr, 1)
    settle_after()
    wait_queue_empty(s)
    uids = s.messages(addr)
    assert len(uids) == 1, uids
    return s.message(addr, uids[0])


# ---------------------------------------------------------------- 1. Postfix -> MX

def test_postfix_mx_starttls_delivers_once(make_surat, make_postfix):
    s = user_surat(make_surat)
    pf = mx_postfix(make_postfix, s)
    pf.sendmail([ALICE], msg("pf plain"))
    stored = only_message(s, ALICE, lambda: pf.wait_log(
        r"to=<alice@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d,.* status=sent "
        r"\(250 " % s.port("smtp")))
    log = pf.log()
    # STARTTLS, not a clear-text fallback (encrypt would defer instead).
    assert re.search(r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
                     r"TLSv1\.[23]" % s.port("smtp"), log), log
    rest = assert_received_chain(stored, "ESMTPS")
    assert b"\r\nSubject: pf plain\r\n" in rest
    assert rest.endswith(b"\r\n\r\nhello from postfix\r\n"), rest
    assert "status=bounced" not in log and "status=deferred" not in log, log
    wait_for(pf.queue_empty, 10, lambda: "postfix queue empty:\n" + pf.log())


def test_postfix_mx_8bit_and_smtputf8(make_surat, make_postfix):
    s = user_surat(make_surat)
    s.add_user(UTF8_USER, "utf8-pw")
    pf = mx_postfix(make_postfix, s)
    body8 = "Gr\u00fc\u00dfe aus K\u00f6ln \u2713\n".encode()
    pf.sendmail([ALICE], msg("eight bit", extra=b"MIME-Version: 1.0\n"
                             b"Content-Type: text/plain; charset=utf-8\n"
                             b"Content-Transfer-Encoding: 8bit\n", body=body8))
    subj = "caf\u00e9 \u00fcber"
    pf.sendmail([UTF8_USER], msg(subj, to=UTF8_USER, extra=b"MIME-Version: 1.0\n"
                                 b"Content-Type: text/plain; charset=utf-8\n"
                                 b"Content-Transfer-Encoding: 8bit\n",
                                 body=body8))
    pf.wait_log(r"to=<alice@example\.test>,.* status=sent")
    pf.wait_log(r"to=<j\u00f6s\u00e9@example\.test>,.* status=sent")
    stored = only_message(s, ALICE, lambda: None)
    rest = assert_received_chain(stored, "ESMTPS")
    # Passed through as 8-bit (surat offers 8BITMIME), never downgraded to QP.
    assert rest.endswith(b"\r\n\r\n" + body8.replace(b"\n", b"\r\n")), rest
    assert b"Content-Transfer-Encoding: 8bit\r\n" in rest
    # The UTF-8 mailbox forced SMTPUTF8: Postfix asked for it, surat recorded it.
    stored = only_message(s, UTF8_USER, lambda: None)
    dt, received, rest = split_stored(stored)
    assert dt == UTF8_USER
    assert " with UTF8SMTPS\r\n" in received, received
    assert TLS_DESC.search(received), received
    assert ("\r\nSubject: %s\r\n" % subj).encode() in rest, rest
    assert rest.endswith(b"\r\n\r\n" + body8.replace(b"\n", b"\r\n")), rest
    log = s.log()
    assert re.search(r"< MAIL FROM:<sender@pf\.test> .*BODY=8BITMIME", log), log
    assert re.search(r"< MAIL FROM:<sender@pf\.test> .*SMTPUTF8", log), log


def test_postfix_mx_unknown_recipient_bounced_alone(make_surat, make_postfix):
    s = user_surat(make_surat)
    pf = mx_postfix(make_postfix, s)
    pf.sendmail([ALICE, "nobody@example.test", BOB], msg("three rcpts", to=ALICE + ", " + BOB))
    pf.wait_log(r"to=<nobody@example\.test>,.* status=bounced \(host 127\.0\.0\.1"
                r"\[127\.0\.0\.1\] said: 550 5\.1\.1 ")
    for rcpt in (ALICE, BOB):
        pf.wait_log(r"to=<%s>,.* status=sent" % re.escape(rcpt))
    for rcpt in (ALICE, BOB):
        stored = only_message(s, rcpt, lambda: None)
        dt, _, rest = split_stored(stored)
        assert dt == rcpt
        assert b"\r\nSubject: three rcpts\r\n" in rest
    # Postfix's bounce names only the unknown recipient, with surat's reply.
    bounce = wait_for(pf.bounces, 15, lambda: "bounce:\n" + pf.log())
    assert len(bounce) == 1, bounce
    b = bounce[0].decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; nobody@example.test" in b, b
    assert re.search(r"Diagnostic-Code: smtp; 550 5\.1\.1 ", b), b
    assert "Final-Recipient: rfc822; alice@example.test" not in b
    assert "Final-Recipient: rfc822; bob@example.test" not in b
    assert "Subject: three rcpts" in b
    assert len(re.findall(r"status=bounced", pf.log())) == 1, pf.log()


def test_postfix_mx_oversize_refused_and_bounced(make_surat, make_postfix):
    s = user_surat(make_surat, {"smtp.max_message_size": "64K"})
    # Postfix honours the SIZE surat advertises and would bounce the message
    # itself, never sending it: told to ignore SIZE, it sends, and surat must
    # refuse it at the end of the data.
    pf = mx_postfix(make_postfix, s, "smtp_discard_ehlo_keywords = size\n")
    big = msg("too big", body=(b"x" * 76 + b"\n") * 1300)      # about 100 KB
    pf.sendmail([ALICE], big)
    pf.wait_log(r"to=<alice@example\.test>,.* status=bounced \(host 127\.0\.0\.1"
                r"\[127\.0\.0\.1\] said: 552 5\.3\.4 .*\(in reply to end of DATA command\)")
    bounce = wait_for(pf.bounces, 15, lambda: "bounce:\n" + pf.log())
    b = bounce[0].decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; alice@example.test" in b, b
    assert re.search(r"Diagnostic-Code: smtp; 552 5\.3\.4 ", b), b
    # surat kept nothing: no message, no spool file (no delivery has run
    # yet, so not even a recycled one).
    assert s.messages(ALICE) == []
    assert queue_ids(s) == []
    assert spool_files(s) == []
    # A small one afterwards still goes: the session was not poisoned.
    pf.sendmail([ALICE], msg("small after big"))
    pf.wait_log(r"to=<alice@example\.test>,.* status=sent")
    stored = only_message(s, ALICE, lambda: None)
    assert b"\r\nSubject: small after big\r\n" in stored
    assert queue_ids(s) == []


# ---------------------------------------------------------------- 2. Postfix -> submission

def sub_postfix(make_postfix, s):
    """Postfix relaying everything to surat's submission port as alice.
    Its bounces for alice come home to sender@pf.test (virtual alias), where
    the test reads them: through surat they would need a From: alice owns."""
    hop = "[127.0.0.1]:%d" % s.port("submission")
    return make_postfix(
        "relayhost = %s\n"
        "smtp_sasl_auth_enable = yes\n"
        "smtp_sasl_password_maps = texthash:@CONF@/sasl_passwd\n"
        "smtp_sasl_security_options = noanonymous\n"
        "smtp_sasl_tls_security_options = noanonymous\n"
        "virtual_alias_maps = texthash:@CONF@/valias\n" % hop,
        {"sasl_passwd": "%s %s:alice-pw\n" % (hop, ALICE),
         "valias": "%s %s\n" % (ALICE, SENDER)})


def test_postfix_submission_sasl(make_surat, make_postfix):
    s = user_surat(make_surat)
    pf = sub_postfix(make_postfix, s)
    port = s.port("submission")
    pf.sendmail([BOB], msg("own address", frm=ALICE, to=BOB), sender=ALICE)
    pf.wait_log(r"to=<bob@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d,.* "
                r"status=sent" % port)
    stored = only_message(s, BOB, lambda: None)
    _, received, rest = split_stored(stored)
    assert " with ESMTPSA\r\n" in received, received
    assert "authenticated" not in received, received
    assert TLS_DESC.search(received), received
    assert rest.startswith(b"Received: by client.pf.test (Postfix, from userid 0)"), rest[:200]
    assert re.search(r"< AUTH (PLAIN|LOGIN)", s.log()), s.log()
    assert re.search(r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d" % port,
                     pf.log())
    # A From: alice does not own: 553 5.7.1 after the data, Postfix bounces.
    pf.sendmail([BOB], msg("spoofed", frm="ceo@example.test", to=BOB), sender=ALICE)
    pf.wait_log(r"to=<bob@example\.test>,.* status=bounced \(host 127\.0\.0\.1"
                r"\[127\.0\.0\.1\] said: 553 5\.7\.1 .*\(in reply to end of DATA command\)")
    bounce = wait_for(pf.bounces, 15, lambda: "bounce:\n" + pf.log())
    b = bounce[0].decode("utf-8", "replace")
    assert re.search(r"Diagnostic-Code: smtp; 553 5\.7\.1 ", b), b
    assert "Subject: spoofed" in b
    wait_queue_empty(s)
    assert len(s.messages(BOB)) == 1
    assert "Subject: spoofed" not in s.message(BOB, s.messages(BOB)[0]).decode("utf-8", "replace")


# ---------------------------------------------------------------- 3. msmtp -> submission(s)

MSMTP = shutil.which("msmtp")


def msmtp(s, tmp_path, kind, mech, password="alice-pw", rcpt=BOB, body=None):
    """Run msmtp once against listener kind; returns (CompletedProcess, body)."""
    conf = tmp_path / ("msmtprc-%s-%s" % (kind, mech))
    conf.write_text("\n".join([
        "account default",
        "host 127.0.0.1",
        "port %d" % s.port(kind),
        "domain mua.example.test",
        "tls on",
        "tls_starttls %s" % ("on" if kind == "submission" else "off"),
        "tls_certcheck off",
        "auth %s" % mech,
        "user %s" % ALICE,
        "password %s" % password,
        "from %s" % ALICE,
        "timeout 20",
        ""]))
    conf.chmod(0o600)       # msmtp refuses a readable file that holds a password
    if body is None:
        body = ("From: Alice <%s>\nTo: %s\nSubject: msmtp %s %s\n\nsent by msmtp\n" %
                (ALICE, rcpt, kind, mech)).encode()
    r = subprocess.run([MSMTP, "-C", str(conf), "--", rcpt], input=body, capture_output=True,
                       timeout=30)
    return r, body


@pytest.mark.skipif(MSMTP is None, reason="msmtp is not installed (scripts/deps.sh)")
@pytest.mark.parametrize("kind", ["submission", "submissions"])
def test_msmtp_submits(make_surat, tmp_path, kind):
    s = user_surat(make_surat)
    for n, mech in enumerate(("plain", "login"), 1):
        r, _ = msmtp(s, tmp_path, kind, mech)
        assert r.returncode == 0, (mech, r.stderr)
        uids = s.wait_messages(BOB, n)
        assert len(uids) == n, uids
        stored = s.message(BOB, uids[-1])
        dt, received, rest = split_stored(stored)
        assert dt == BOB
        assert received.startswith("Received: from mua.example.test (localhost [127.0.0.1])\r\n"
                                   "\tby mx.example.test (surat) with ESMTPSA\r\n"), received
        assert TLS_DESC.search(received), received
        assert "authenticated" not in received, received
        assert ("\r\nSubject: msmtp %s %s\r\n" % (kind, mech)).encode() in rest
        assert rest.endswith(b"\r\n\r\nsent by msmtp\r\n"), rest
        # The mechanism asked for is the one used.
        assert s.log().count("< AUTH %s" % mech.upper()) == 1, s.log()
        # msmtp sends no Message-ID:/Date:; submission adds one of each.
        assert len(re.findall(rb"(?im)^Message-ID: ", rest)) == 1, rest
        assert len(re.findall(rb"(?im)^Date: ", rest)) == 1, rest
    wait_queue_empty(s)
    assert len(s.messages(BOB)) == 2


@pytest.mark.skipif(MSMTP is None, reason="msmtp is not installed (scripts/deps.sh)")
@pytest.mark.parametrize("kind", ["submission", "submissions"])
def test_msmtp_wrong_password_queues_nothing(make_surat, tmp_path, kind):
    s = user_surat(make_surat)
    for mech in ("plain", "login"):
        r, _ = msmtp(s, tmp_path, kind, mech, password="not-alice-pw")
        assert r.returncode != 0, (mech, r.stdout, r.stderr)
        err = r.stderr.decode("utf-8", "replace")
        assert re.search(r"authentication failed.*535", err, re.S | re.I), err
        assert s.log().count("< AUTH %s" % mech.upper()) == 1, s.log()
    assert s.log().count("auth failed user=alice@example.test") == 2, s.log()
    assert queue_ids(s) == []
    assert spool_files(s) == []
    assert s.messages(BOB) == []
    assert s.messages(ALICE) == []
