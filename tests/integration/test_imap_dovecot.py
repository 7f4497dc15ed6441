"""Differential test of surat's IMAP FETCH against Dovecot.

The 47 messages of CPython's email test corpus (libpython3.11-testsuite,
converted to CRLF) and a set of tricky messages of our own are APPENDed, with
the same flags and INTERNALDATE, to surat and to a private Dovecot started by
this module (own config and base_dir in a temp dir, IMAP on a free loopback
port, a passwd-file user, Maildir in the temp dir). Then, after one warm-up
`FETCH 1:* (BODYSTRUCTURE)` on both servers (for messages copied into a
Maildir Dovecot answers some in a canonical form once it has parsed them; for
APPENDed ones its first and later answers were found identical, the warm-up
keeps it that way), every message is asked each item of ITEMS in a FETCH of
its own, and the two answers (the untagged lines, sequence number normalised,
plus the status and response code of the tagged reply) must be identical byte
for byte. One combined FETCH per message also checks that the items come in
the same order. A server that drops the connection answers DISCONNECT.

A difference is allowed only if it is listed in DOCUMENTED (a deliberate,
RFC-justified difference, with the section; the test then pins surat's
answer) or in SURAT_BUGS (a real bug, reported to the owner: xfail).

Everything runs on loopback; every socket read and subprocess is bounded;
the fixtures stop both servers.
"""
import calendar
import glob
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import conftest

TIMEOUT = 30
DOVECOT = shutil.which("dovecot") or (os.path.exists("/usr/sbin/dovecot") and "/usr/sbin/dovecot")
CORPUS = "/usr/lib/python3.11/test/test_email/data"
DATE = "07-Feb-1994 21:52:25 -0800"
USER, PASSWORD = "alice@example.test", "alice-pw"


# ------------------------------------------------------------------ IMAP client

class Imap:
    """A small raw IMAP client: responses come back as the bytes the server sent,
    literals included (b'... {n}\\r\\n<n bytes>...'), without the final CRLF."""

    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.n = 0
        self.greeting = self.response()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed; buffered %r" % self.buf[-300:])
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n")
        ln, self.buf = self.buf[:i], self.buf[i + 2:]
        return ln

    def take(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def response(self):
        out = self.line()
        while True:
            m = re.search(rb"~?\{(\d+)\}$", out)
            if not m:
                return out
            out += b"\r\n" + self.take(int(m.group(1))) + self.line()

    def send(self, data):
        self.sock.sendall(data)

    def until(self, tag):
        untagged = []
        while True:
            r = self.response()
            if r.startswith(tag + b" "):
                return r, untagged
            untagged.append(r)

    def cmd(self, text):
        if isinstance(text, str):
            text = text.encode()
        self.n += 1
        tag = b"c%d" % self.n
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def ok(self, text):
        tagged, untagged = self.cmd(text)
        assert tagged.split(b" ")[1] == b"OK", (text, tagged, untagged)
        return untagged

    def append(self, box, msg, flags="", date=DATE):
        """APPEND with a synchronising literal (literal8 if the message has a NUL).
        Returns (tagged, untagged)."""
        self.n += 1
        tag = b"c%d" % self.n
        lit = b"~{%d}" % len(msg) if b"\0" in msg else b"{%d}" % len(msg)
        self.send(tag + b' APPEND "%s" (%s) "%s" %s\r\n' % (box.encode(), flags.encode(),
                                                            date.encode(), lit))
        r = self.response()
        if not r.startswith(b"+"):
            return r, []  # refused before the literal (e.g. empty message)
        self.send(msg + b"\r\n")
        return self.until(tag)

    def login(self, user=USER, password=PASSWORD):
        self.ok('LOGIN "%s" "%s"' % (user, password))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------ Dovecot

def dovecot_skip_reason():
    if not DOVECOT:
        return "dovecot not installed (Debian: dovecot-imapd)"
    if not os.path.exists("/usr/lib/dovecot/imap") and not glob.glob("/usr/lib*/dovecot/imap"):
        return "dovecot's imap binary not installed (Debian: dovecot-imapd)"
    return None


class Dovecot:
    """A private Dovecot: its own config, base_dir, log, passwd-file and Maildirs, all
    under one temp dir; IMAP (plaintext allowed) on a free loopback port.

    As root, Dovecot drops to the 'dovecot' user for its internal processes and mail is
    owned by that user too; otherwise everything runs as the current user."""

    def __init__(self, users):
        self.dir = tempfile.mkdtemp(prefix="surat-dovecot.")
        os.chmod(self.dir, 0o755)
        self.port = conftest.free_port()
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.proc = None
        root = os.geteuid() == 0
        if root:
            pw = pwd.getpwnam("dovecot")
            uid, gid, internal = pw.pw_uid, pw.pw_gid, None
        else:
            pw = pwd.getpwuid(os.geteuid())
            uid, gid, internal = pw.pw_uid, pw.pw_gid, pw.pw_name
        self.uid, self.gid = uid, gid
        lines = []
        for user, password in users:
            home = os.path.join(self.dir, "home", user)
            os.makedirs(home)
            lines.append("%s:{PLAIN}%s:%d:%d::%s::" % (user, password, uid, gid, home))
        for d, _, _ in os.walk(os.path.join(self.dir, "home")):
            os.chown(d, uid, gid)
        passwd = os.path.join(self.dir, "passwd")
        with open(passwd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(passwd, 0o644)
        extra = ""
        if internal:
            extra = ("default_internal_user = %s\ndefault_login_user = %s\n"
                     "default_internal_group = %s\n" % (internal, internal,
                                                         grp.getgrgid(gid).gr_name) +
                     "service anvil {\n  chroot =\n}\n")
        with open(self.conf, "w") as f:
            f.write("""base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
{extra}protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
{login_chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
""".format(d=self.dir, extra=extra, login_chroot="" if root else "  chroot =\n",
           uid=min(uid, 100) if root else uid, port=self.port, passwd=passwd))

    def start(self):
        # In the foreground (-F): the process is ours to wait for and to stop.
        self.errf = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.errf, stderr=self.errf)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("dovecot exited at start (%s):\n%s" %
                                     (self.proc.returncode, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                return self
            except OSError:
                if time.time() > deadline:
                    raise AssertionError("dovecot did not listen on %d:\n%s" %
                                         (self.port, self.log()))
                time.sleep(0.05)

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
            self.proc = None
            self.errf.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        out = ""
        for p in (os.path.join(self.dir, "stderr"), self.log_path):
            try:
                with open(p, "rb") as f:
                    out += f.read().decode("utf-8", "replace")[-4000:]
            except FileNotFoundError:
                pass
        return out

    def maildir(self, user):
        return os.path.join(self.dir, "home", user, "Maildir")

    def connect(self, user=USER, password=PASSWORD):
        c = Imap(self.port)
        c.login(user, password)
        return c


def start_dovecot(request, users=((USER, PASSWORD),)):
    reason = dovecot_skip_reason()
    if reason:
        pytest.skip(reason)
    d = Dovecot(users)
    request.addfinalizer(d.stop)
    return d.start()


def start_surat(request, tmp_path_factory, tls_files, users=((USER, PASSWORD),),
                kinds=("smtp", "imap")):
    """A surat with IMAP (plaintext login allowed) for any fixture scope; on teardown it
    must exit 0 and its log must be free of sanitizer reports."""
    d = str(tmp_path_factory.mktemp("surat"))
    s = conftest.Surat(d, tls_files, {"allow_plaintext_auth": "yes"}, kinds)

    def fin():
        if s.proc is not None:
            rc = s.stop()
            assert rc == 0, "surat exited with %s:\n%s" % (rc, s.log()[-3000:])
    request.addfinalizer(fin)
    s.start()
    domains = {u.split("@")[1] for u, _ in users}
    for dom in sorted(domains):
        s.add_domain(dom)
    for u, p in users:
        s.add_user(u, p)
    return s


# ------------------------------------------------------------------ messages

def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def corpus():
    out = []
    for path in sorted(glob.glob(os.path.join(CORPUS, "msg_*.txt"))):
        with open(path, "rb") as f:
            out.append((os.path.basename(path)[:-4], crlf(f.read())))
    return out


H = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
     b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n")
MV = b"MIME-Version: 1.0\r\n"


def own_messages():
    """Tricky messages of our own, CRLF unless the point is otherwise."""
    m = {}
    m["nested"] = crlf(H + MV + b"""Subject: nested multiparts
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: multipart/alternative; boundary=alt

--alt
Content-Type: text/plain; charset=utf-8

plain text
--alt
Content-Type: multipart/related; boundary="rel"; type="text/html"

--rel
Content-Type: text/html; charset=us-ascii
Content-ID: <html@x>

<p>html</p>
--rel
Content-Type: image/png
Content-Transfer-Encoding: base64
Content-ID: <img@x>
Content-Disposition: inline; filename="a.png"

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==
--rel--
--alt--
--outer
Content-Type: application/octet-stream; name=data.bin
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename=data.bin; size=3
Content-Description: some bytes
Content-Language: en, fr
Content-Location: http://example.test/data.bin
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

AAEC
--outer--
epilogue
""")
    m["rfc2231"] = crlf(H + MV + b"""Subject: RFC 2231 parameters
Content-Type: multipart/mixed; boundary=b1

--b1
Content-Type: text/plain; charset*=us-ascii'en'utf-8;
 title*0*=us-ascii'en'This%20is%20even%20more%20;
 title*1*=%2A%2A%2Afun%2A%2A%2A%20;
 title*2="isn't it!"
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.txt

text
--b1
Content-Type: application/x-stuff;
 title*2=third; title*0=first; title*1*=%20second%20
Content-Disposition: inline; filename*0="long"; filename*1="name.txt"

x
--b1
Content-Type: text/plain; name*=iso-8859-1''%E9t%E9.txt; name=plain.txt
Content-Disposition: attachment; FileName*0*=utf-8''a%C3%A9; FILENAME*1=b

y
--b1--
""")
    m["encoded_words"] = crlf(MV + b"""From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.test>
To: "=?iso-8859-1?Q?Andr=E9?= Pirard" <pirard@example.test>,
 =?US-ASCII*EN?Q?Keith_Moore?= <moore@example.test>
Subject: =?utf-8?b?w6nDqcOp?= =?utf-8?q?_and_more?= =?bogus?x?zz?=
Date: Mon, 7 Feb 1994 21:52:25 -0800
Message-ID: <ew@example.test>
In-Reply-To: <a@b> <c@d>
Content-Type: multipart/mixed; boundary="=?utf-8?q?b?="

--=?utf-8?q?b?=
Content-Type: text/plain; name="=?utf-8?q?caf=C3=A9.txt?="
Content-Disposition: attachment; filename="=?utf-8?q?caf=C3=A9.txt?="
Content-Description: =?utf-8?q?d=C3=A9scription?=

body
--=?utf-8?q?b?=--
""")
    m["bad_boundary_never"] = crlf(H + MV + b"""Subject: boundary never appears
Content-Type: multipart/mixed; boundary="nowhere"

--elsewhere
Content-Type: text/plain

text
--elsewhere--
""")
    m["bad_boundary_missing_param"] = crlf(H + MV + b"""Subject: no boundary parameter
Content-Type: multipart/mixed

--x
Content-Type: text/plain

text
--x--
""")
    m["bad_boundary_unclosed"] = crlf(H + MV + b"""Subject: no closing boundary
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain

one
--b
Content-Type: text/html

<b>two</b>
""")
    m["bad_boundary_prefix"] = crlf(H + MV + b"""Subject: boundary that is a prefix of the inner one
Content-Type: multipart/mixed; boundary=ab

--ab
Content-Type: multipart/alternative; boundary=abc

--abc
Content-Type: text/plain

inner
--abc--
--ab
Content-Type: text/plain

outer
--ab--
""")
    m["boundary_whitespace"] = crlf(H + MV + b"""Subject: boundary lines with trailing blanks
Content-Type: multipart/mixed; boundary="sp ace"

--sp ace \t
Content-Type: text/plain

one
--sp ace--  
after
""")
    m["multipart_empty"] = crlf(H + MV + b"""Subject: multipart without any part
Content-Type: multipart/mixed; boundary=b

--b--
""")
    m["eightbit"] = crlf(H + MV + b"""Subject: 8-bit parts
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

gr\xc3\xbc\xc3\x9fe \xe2\x82\xac
--b
Content-Type: application/octet-stream
Content-Transfer-Encoding: binary

\x01\x02\x7f\x80\xff\xfe binary bytes
--b
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

caf=E9 =
soft break=3D
--b
Content-Type: text/plain
Content-Transfer-Encoding: x-uuencode

begin 644 x
--b--
""")
    m["binary_nul"] = (H + MV + b"Subject: NUL bytes (literal8)\r\n"
                       b"Content-Type: application/octet-stream\r\n"
                       b"Content-Transfer-Encoding: binary\r\n\r\n"
                       b"a\0b\0\0c\r\n")
    m["base64_top"] = crlf(H + MV + b"""Subject: base64 text, not a multipart
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: BASE64

SGVsbG8gd29ybGQhCg==
""")
    m["eightbit_header"] = crlf(b"From: J\xc3\xb6rg <j@example.test>\r\n"
                                b"Subject: gr\xc3\xbc\xc3\x9fe \xe2\x82\xac\r\n"
                                b"To: \xc3\xa9@example.test\r\n\r\nbody\r\n")
    m["rfc822_in_multipart"] = crlf(H + MV + b"""Subject: forwarded
Content-Type: multipart/mixed; boundary=fw

--fw
Content-Type: text/plain

see attached
--fw
Content-Type: message/rfc822
Content-Disposition: attachment

From: Bob <bob@example.test>
Subject: the inner one
Date: Tue, 8 Feb 1994 10:00:00 +0000
Message-ID: <inner@example.test>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=in

--in
Content-Type: text/plain

inner plain
--in
Content-Type: text/html

<i>inner</i>
--in--
--fw
Content-Type: message/rfc822

Subject: inner with no body
--fw--
""")
    m["rfc822_top"] = crlf(H + MV + b"""Subject: message/rfc822 at the top
Content-Type: message/rfc822

From: Carol <carol@example.test>
Subject: wrapped
Content-Type: text/plain; charset=us-ascii

wrapped body
""")
    m["digest"] = crlf(H + MV + b"""Subject: digest
Content-Type: multipart/digest; boundary=d

--d

From: one@example.test
Subject: digest part one

one
--d
Content-Type: text/plain

explicitly text
--d--
""")
    m["empty_body"] = crlf(H + b"Subject: empty body\r\n\r\n")
    m["header_only_no_blank"] = H + b"Subject: header only, no blank line\r\n"
    m["header_unterminated"] = H + b"Subject: no CRLF at the very end"
    m["no_header"] = b"\r\nthis message has no header at all\r\nsecond line\r\n"
    m["no_header_text_first"] = b"just text, no colon on the first line\r\nmore\r\n"
    m["empty_multipart_part"] = crlf(H + MV + b"""Subject: an empty part
Content-Type: multipart/mixed; boundary=b

--b
--b

after empty header
--b--
""")
    m["ctype_odd"] = crlf(H + MV + b"""Subject: odd Content-Type values
Content-Type: Multipart/MIXED (comment); Boundary="B B"; foo=bar; foo=baz

--B B
Content-Type: text

no subtype
--B B
Content-Type: TEXT/HTML; CHARSET=UTF-8; format=flowed ; delsp="yes"

uppercase
--B B
Content-Type: ;; garbage

garbage
--B B
Content-Type: application/x-empty-param; a=; b=""; c

params
--B B
Content-Type: text/plain
Content-Type: text/html

twice
--B B
Content-type:text/plain;charset="us-ascii"
Content-transfer-encoding:   7BIT  (comment)

no space after colons
--B B--
""")
    m["folded_long"] = crlf(H + b"Subject: a folded\r\n\tsubject line that goes\r\n  on and on\r\n"
                            b"Message-ID:\r\n <folded@example.test>\r\n"
                            b"X-Long: " + b"x" * 1500 + b"\r\n\r\nbody\r\n")
    m["bare_lf"] = (b"From: a@example.test\nSubject: bare LF line ends\nContent-Type: text/plain\n"
                    b"\nline one\nline two\n")
    m["bare_cr_in_body"] = crlf(H + b"Subject: lone CR in the body\r\n\r\n") + b"a\rb\r\n"
    m["alternative_signed"] = crlf(H + MV + b"""Subject: signed
Content-Type: multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256;
 boundary="sig"

--sig
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: quoted-printable

signed=20text
--sig
Content-Type: application/pgp-signature; name="signature.asc"
Content-Description: OpenPGP digital signature
Content-Disposition: attachment; filename="signature.asc"

-----BEGIN PGP SIGNATURE-----
abc
-----END PGP SIGNATURE-----
--sig--
""")
    m["envelope_odd"] = crlf(b"""From: "Last, First" <first.last@example.test>, group: a@b.test, c@d.test;
Sender: <>
Reply-To: undisclosed-recipients:;
To: "quoted \\"name\\"" <q@example.test>, (comment) plain@example.test (Plain Name)
Cc: @route1,@route2:user@host.test
Bcc: "Mary Smith" <@a,@b:mary@x.test>
Subject:
Date: not a date
Message-ID: no-angle-brackets
In-Reply-To: <irt@example.test>

body
""")
    m["dup_headers"] = crlf(b"""From: first@example.test
From: second@example.test
Subject: first subject
Subject: second subject
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit
Content-Transfer-Encoding: base64

dup headers
""")
    m["deep_rfc822"] = crlf(H + MV + b"""Subject: message/rfc822 in message/rfc822
Content-Type: message/rfc822

Subject: level 1
MIME-Version: 1.0
Content-Type: message/rfc822

Subject: level 2
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=l2

--l2
Content-Type: text/plain

deepest
--l2
Content-Type: message/rfc822

Subject: level 3, in a part

three
--l2--
""")
    m["rfc822_base64"] = crlf(H + MV + b"""Subject: message/rfc822 with a base64 CTE (RFC 2046 5.2.1 forbids it)
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: message/rfc822
Content-Transfer-Encoding: base64

U3ViamVjdDogaW5uZXIKCmJvZHkK
--b--
""")
    m["zero_length"] = b""
    return sorted(m.items())


MESSAGES = corpus() + own_messages()
NAMES = [n for n, _ in MESSAGES]

# Each item in a FETCH of its own (the answer to the whole combined FETCH is also
# compared, for the order of the items). The first ones are those of the brief;
# the rest widen the net (whole parts, headers, BINARY content, missing parts).
ITEMS = ["BODYSTRUCTURE", "ENVELOPE", "BODY.PEEK[1.MIME]", "BINARY.SIZE[1]", "BODY",
         "RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (From Subject)]", "BODY.PEEK[TEXT]<0.100>",
         "INTERNALDATE", "BODY.PEEK[HEADER]", "BODY.PEEK[HEADER.FIELDS.NOT (To Date Received)]",
         "BODY.PEEK[1]", "BINARY.PEEK[1]", "BODY.PEEK[2]", "BODY.PEEK[1.HEADER]"]
COMBINED = ("BODYSTRUCTURE ENVELOPE BODY.PEEK[1.MIME] BINARY.SIZE[1] BODY RFC822.SIZE "
            "BODY.PEEK[HEADER.FIELDS (From Subject)] BODY.PEEK[TEXT]<0.100>")
# Messages Dovecot rewrites when they are APPENDed (it turns binary content with NULs
# into base64): they are also written byte for byte into a Dovecot Maildir folder.
VERBATIM = ["binary_nul"]


# ------------------------------------------------------------------ answers

def fetch_items(line):
    """The (name, raw value) pairs of one '* n FETCH (...)' response."""
    m = re.match(rb"\* \d+ FETCH \(", line)
    assert m and line.endswith(b")"), line
    s = line[m.end():-1]
    items, i = [], 0
    while i < len(s):
        if s[i:i + 1] == b" ":
            i += 1
            continue
        j, depth = i, 0
        while j < len(s) and (depth or s[j:j + 1] != b" "):
            c = s[j:j + 1]
            depth += c == b"["
            depth -= c == b"]"
            j += 1
        name = s[i:j]
        k = value_end(s, j + 1)
        items.append((name, s[j + 1:k]))
        i = k
    return items


def value_end(s, i):
    """Index just after the IMAP value starting at s[i]."""
    c = s[i:i + 1]
    if c == b"(":
        i += 1
        while s[i:i + 1] != b")":
            if s[i:i + 1] == b" ":
                i += 1
            else:
                i = value_end(s, i)
        return i + 1
    if c == b'"':
        i += 1
        while s[i:i + 1] != b'"':
            i += 2 if s[i:i + 1] == b"\\" else 1
        return i + 1
    m = re.compile(rb"~?\{(\d+)\}\r\n").match(s, i)
    if m:
        return m.end() + int(m.group(1))
    m = re.compile(rb"[^ ()]+").match(s, i)
    assert m, s[i:i + 50]
    return m.end()


def answer(tagged, untagged):
    """What is compared: the untagged responses, their sequence number replaced by '#'
    (the message is the same, its position may not be), and the tagged status with its
    response code, not its human-readable text."""
    parts = tagged.split(b" ", 2)
    status = parts[1]
    code = re.match(rb"\[[^\]]*\]", parts[2]) if len(parts) > 2 else None
    return tuple(re.sub(rb"^\* \d+ FETCH ", b"* # FETCH ", u) for u in untagged) + (
        status + (b" " + code.group(0) if code else b""),)


def item_value(ans, name):
    """The raw value of item `name` in an answer, or None."""
    for u in ans[:-1] if isinstance(ans, tuple) else ():
        if u.startswith(b"* # FETCH ("):
            for k, v in fetch_items(u.replace(b"* # FETCH", b"* 0 FETCH", 1)):
                if k == name:
                    return v
    return None


def string_value(v):
    """The bytes of an IMAP string value (quoted, literal or literal8)."""
    m = re.match(rb"~?\{(\d+)\}\r\n", v)
    if m:
        return v[m.end():]
    assert v[:1] == b'"', v
    return re.sub(rb"\\(.)", rb"\1", v[1:-1])


def ask(c, names, seq, out, reconnect):
    """Each item of ITEMS (and the combined FETCH) for each message in `names`."""
    for name in names:
        if name not in seq:
            continue
        n = seq[name]
        for item in ITEMS + ["ORDER"]:
            try:
                if item == "ORDER":
                    tagged, untagged = c.cmd("FETCH %d (%s)" % (n, COMBINED))
                    order = []
                    for u in untagged:
                        if re.match(rb"\* \d+ FETCH \(", u):
                            order += [k for k, _ in fetch_items(u)]
                    out[(name, item)] = (order, tagged.split(b" ")[1])
                else:
                    tagged, untagged = c.cmd("FETCH %d (%s)" % (n, item))
                    out[(name, item)] = answer(tagged, untagged)
            except (EOFError, ConnectionError):
                out[(name, item)] = ("DISCONNECT",)
                c.close()
                c = reconnect()
    return c


def collect(port, dovecot=None):
    """Append every message to INBOX, then ask each FETCH. Returns {(name, "APPEND"):
    status, (name, item): answer, (name, "ORDER"): ([item names], status)}. A server
    that drops the connection answers DISCONNECT; the next question goes to a new
    session. With `dovecot`, the VERBATIM messages are also written straight into its
    Maildir folder "Verbatim" and their answers come back as (name, item, "verbatim")."""
    def session(box="INBOX"):
        c = Imap(port)
        c.login()
        if box:
            c.ok("SELECT " + box)
        return c

    out = {}
    seq = {}
    c = session(None)
    for name, msg in MESSAGES:
        tagged, untagged = c.append("INBOX", msg, "$Diff")
        st = tagged.split(b" ")[1] if tagged.startswith(b"c") else b"REFUSED " + tagged[:40]
        out[(name, "APPEND")] = st
        if st == b"OK":
            seq[name] = len(seq) + 1
    c.ok("SELECT INBOX")
    c.ok("FETCH 1:* (BODYSTRUCTURE)")  # warm-up (see the module docstring)
    c = ask(c, NAMES, seq, out, session)
    c.ok("LOGOUT")
    c.close()
    if dovecot is not None:
        msgs = dict(MESSAGES)
        c = session(None)
        c.ok("CREATE Verbatim")
        c.ok("LOGOUT")
        c.close()
        cur = os.path.join(dovecot.maildir(USER), ".Verbatim", "cur")
        for i, name in enumerate(VERBATIM):
            path = os.path.join(cur, "%d.M%dP1.verbatim:2," % (1000000 + i, i))
            with open(path, "wb") as f:
                f.write(msgs[name])
            os.chown(path, dovecot.uid, dovecot.gid)
        c = session("Verbatim")
        c.ok("FETCH 1:* (BODYSTRUCTURE)")
        v = {}
        c = ask(c, VERBATIM, {n: i + 1 for i, n in enumerate(VERBATIM)}, v, lambda: session(
            "Verbatim"))
        c.ok("LOGOUT")
        c.close()
        out.update({k + ("verbatim",): a for k, a in v.items()})
    return out


@pytest.fixture(scope="module")
def answers(request, tmp_path_factory, tls_files):
    """Both servers' answers to everything, collected once for the module."""
    dc = start_dovecot(request)
    s = start_surat(request, tmp_path_factory, tls_files)
    return {"dovecot": collect(dc.port, dc), "surat": collect(s.port("imap"))}


# ------------------------------------------------------------------ expectations

def same_instant(d, s, name):
    """INTERNALDATE: the same moment (RFC 3501 section 2.3.3 and 6.3.11: the date-time
    given to APPEND SHOULD be kept), surat in the zone the client gave, Dovecot in its own
    local zone."""
    def instant(a):
        return internaldate_instant(string_value(item_value(a, b"INTERNALDATE")))
    assert string_value(item_value(s, b"INTERNALDATE")) == DATE.encode(), s
    assert instant(s) == instant(d), (d, s)


def internaldate_instant(v):
    """Seconds since the epoch of an IMAP date-time such as b'07-Feb-1994 21:52:25 -0800'."""
    v = v.decode().strip()
    t = calendar.timegm(time.strptime(v[-26:-6], "%d-%b-%Y %H:%M:%S"))
    z = v[-5:]
    return t - (-1 if z[0] == "-" else 1) * (int(z[1:3]) * 3600 + int(z[3:5]) * 60)


def verbatim(d, s, name, item, ans):
    """Dovecot converted the message when it was APPENDed; its answer for a byte-for-byte
    copy in its Maildir is the reference."""
    ref = ans["dovecot"][(name, item, "verbatim")]
    assert s == ref, "surat: %s\nDovecot (verbatim copy): %s" % (show(s), show(ref))


def binary_size_is_content_length(d, s, name, item, ans):
    """surat answers BINARY.SIZE[1] and BINARY[1], and the size is the length of what
    BINARY[1] sends (RFC 3516 section 4.2: the size of the section after removing any
    content-transfer-encoding), and of what Dovecot sends for BINARY[1] if it does."""
    s = ans["surat"][(name, "BINARY.SIZE[1]")]
    assert s[-1] == b"OK", s
    sz = int(item_value(s, b"BINARY.SIZE[1]"))
    content = item_value(ans["surat"][(name, "BINARY.PEEK[1]")], b"BINARY[1]")
    assert sz == len(string_value(content)), (sz, content)
    dcontent = ans["dovecot"][(name, "BINARY.PEEK[1]")]
    if item_value(dcontent, b"BINARY[1]") is not None:
        assert sz == len(string_value(item_value(dcontent, b"BINARY[1]"))), dcontent


def exact(*expected):
    def check(d, s, name, item, ans):
        assert s == expected, show(s)
    return check


WHOLE_MESSAGE_BINARY = (
    "RFC 3516 section 4.2/4.3: BINARY.SIZE[1] is the decoded size of part 1; UNKNOWN-CTE is "
    "for a part whose encoding cannot be decoded. Dovecot's BINARY.SIZE decodes every part "
    "of the message and fails if any one cannot be decoded (its BINARY[1] for the same part "
    "succeeds and matches surat's)")
LENIENT_BASE64 = (
    "RFC 2045 section 6.8: characters outside the base64 alphabet are ignored, and a "
    "robust decoder goes on after a short final quantum; surat decodes such parts, Dovecot "
    "refuses (NO [PARSE] 'Invalid data in MIME part') or drops the connection ('Base64 data "
    "ends prematurely' in its log)")

# Deliberate differences: (message, item) -> (justification with the RFC section, check).
# check(dovecot_answer, surat_answer, name, item, all_answers) raises if surat's answer is
# not the documented one. An entry whose message is None applies to every message.
DOCUMENTED = {
    (None, "INTERNALDATE"): (
        "RFC 3501 2.3.3/6.3.11: the APPEND date-time is kept; the zone it is shown in is "
        "the server's choice (surat keeps the client's, Dovecot uses its local zone)",
        lambda d, s, name, item, ans: same_instant(d, s, name)),
    # Dovecot rewrites binary content with NULs to base64 on APPEND (RFC 3516 section 4.4:
    # "The server MAY modify the CTE of the appended data"); surat keeps it as it came.
    # Compared with Dovecot's answers for a verbatim copy, they are the same byte for byte
    # (BODY[] sends each NUL as 0x80 in both, RFC 3501 section 4.3: no NUL in a literal).
    **{("binary_nul", item): ("RFC 3516 section 4.4: Dovecot re-encodes binary APPENDs "
                              "to base64; surat stores them as they came", verbatim)
       for item in ("BODYSTRUCTURE", "BODY.PEEK[1.MIME]", "BODY", "RFC822.SIZE",
                    "BODY.PEEK[TEXT]<0.100>", "BODY.PEEK[HEADER]", "BODY.PEEK[1]",
                    "BODY.PEEK[HEADER.FIELDS.NOT (To Date Received)]")},
    ("nested", "BINARY.SIZE[1]"): (
        "RFC 3516 section 4.2: Dovecot 2.3.19 says 451 for the multipart part 1 whose BINARY[1] "
        "it sends as 452 bytes; surat's size is the length of the content both send",
        binary_size_is_content_length),
    ("rfc822_base64", "BINARY.SIZE[1]"): (
        "RFC 3516 section 4.2: for a message/rfc822 part with a base64 CTE (which RFC 2046 "
        "section 5.2.1 forbids) both send BINARY[1] as the 30 bytes stored, Dovecot says "
        "BINARY.SIZE 0; surat's size is the length of what both send",
        binary_size_is_content_length),
    ("eightbit", "BINARY.SIZE[1]"): (WHOLE_MESSAGE_BINARY + " (part 4 is x-uuencode)",
                                     binary_size_is_content_length),
    ("msg_15", "BINARY.SIZE[1]"): (LENIENT_BASE64 + " (part 2, 'Some removed base64 encoded "
                                   "chars.', is not even in part 1)",
                                   binary_size_is_content_length),
    ("msg_39", "BINARY.SIZE[1]"): (LENIENT_BASE64 + " (the leaves of part 1 are base64 'XXX')",
                                   binary_size_is_content_length),
    ("msg_39", "BINARY.PEEK[1]"): (LENIENT_BASE64 + " (the leaves of part 1 are base64 'XXX')",
                                   binary_size_is_content_length),
    ("dup_headers", "BINARY.SIZE[1]"): (
        "RFC 2045 section 6 / RFC 3516 4.2: with two Content-Transfer-Encoding fields both "
        "servers' BODYSTRUCTURE says 7bit (the first), but Dovecot's BINARY decodes with the "
        "second (base64) and drops the connection; surat decodes as its BODYSTRUCTURE says",
        exact(b"* # FETCH (BINARY.SIZE[1] 13)", b"OK")),
    ("dup_headers", "BINARY.PEEK[1]"): (
        "as dup_headers BINARY.SIZE[1]",
        exact(b'* # FETCH (BINARY[1] {13}\r\ndup headers\r\n)', b"OK")),
}

# Real surat bugs, reported to the IMAP owner: (message, item) -> reason.
SURAT_BUGS = {
    # Fixed: fetch_header_fields() follows RFC 3501 6.4.5 (no blank line for a
    # message with neither a body nor one) as Dovecot does.
}


def documented(name, item):
    return DOCUMENTED.get((name, item)) or DOCUMENTED.get((None, item))


def cases():
    out = []
    for name in NAMES:
        for item in ["APPEND"] + ITEMS + ["ORDER"]:
            marks = []
            if (name, item) in SURAT_BUGS:
                marks.append(pytest.mark.xfail(reason=SURAT_BUGS[(name, item)]))
            out.append(pytest.param(name, item, marks=marks, id="%s-%s" % (name, item)))
    return out


def show(a):
    if isinstance(a, tuple) and a and isinstance(a[0], bytes):
        return "\n    ".join(repr(x) for x in a)
    return repr(a)


def canonical_order(ans):
    """The item order Dovecot uses for the combined FETCH when every item succeeds."""
    for (name, item), a in ans["dovecot"].items():
        if item == "ORDER" and a[1] == b"OK" and len(a[0]) == 8:
            return a[0]
    raise AssertionError("Dovecot answered no combined FETCH in full")


@pytest.mark.parametrize("name,item", cases())
def test_same_answer_as_dovecot(answers, name, item):
    d = answers["dovecot"].get((name, item))
    s = answers["surat"].get((name, item))
    if d is None and s is None:
        return  # neither server took the message: its APPEND answers were compared
    if item == "ORDER" and d != s and documented(name, "BINARY.SIZE[1]"):
        # Dovecot stopped at BINARY.SIZE[1] (a documented difference): the order is
        # compared with the one Dovecot uses for the other messages.
        assert s == (canonical_order(answers), b"OK"), s
        return
    doc = documented(name, item)
    if doc is not None and s != d:
        why, check = doc
        try:
            check(d, s, name, item, answers)
        except AssertionError as e:
            raise AssertionError("documented difference (%s) is no longer as documented: %s\n"
                                 "  dovecot: %s\n  surat:   %s" % (why, e, show(d), show(s)))
        return
    assert s == d, "%s %s differs:\n  dovecot: %s\n  surat:   %s" % (name, item, show(d), show(s))


def test_documented_entries_are_used():
    """Every DOCUMENTED or SURAT_BUGS entry names a message and an item of this test."""
    for name, item in list(DOCUMENTED) + list(SURAT_BUGS):
        assert name is None or name in NAMES, name
        assert item in ITEMS + ["ORDER"], item


def test_corpus_is_complete():
    """The CPython corpus is the point of the test: all 47 messages must be there."""
    assert len(corpus()) == 47, sorted(glob.glob(os.path.join(CORPUS, "msg_*.txt")))
