#!/usr/bin/python3
"""dovecot-oracle.py FILE... — Dovecot's ENVELOPE, BODY and BODYSTRUCTURE for
each message file: the differential oracle for src/mime.

Starts a private Dovecot in a temp dir (IMAP on a free loopback port, static
passdb, Maildir), copies each file byte for byte into the Maildir, asks over
IMAP exactly as a client would (after one warm-up FETCH, so that the answers
are Dovecot's steady state), prints what the server sent, and stops it.
Output, one block per file:
    == FILE
    ENVELOPE <value>
    BODY <value>
    BODYSTRUCTURE <value>
values as C string bodies (\\r, \\n, \\", \\\\, \\xNN escaped) so they can be
pasted into tests/unit/test_mime.c. Run as root (Dovecot drops to 'dovecot').
"""
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cstr(b):
    out = []
    for c in b:
        if c == 0x0D:
            out.append("\\r")
        elif c == 0x0A:
            out.append("\\n")
        elif c == 0x22:
            out.append('\\"')
        elif c == 0x5C:
            out.append("\\\\")
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append("\\x%02x\"\"" % c)
    return "".join(out)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        self.line()

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        i = self.buf.index(b"\r\n") + 2
        ln, self.buf = self.buf[:i], self.buf[i:]
        return ln

    def take(self, n):
        while len(self.buf) < n:
            self.buf += self.s.recv(65536)
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def response(self):
        """One full untagged/tagged response line, literals included."""
        out = b""
        while True:
            ln = self.line()
            out += ln
            m = re.search(rb"\{(\d+)\}\r\n$", ln)
            if not m:
                return out
            out += self.take(int(m.group(1)))

    def cmd(self, tag, text):
        self.s.sendall(tag + b" " + text + b"\r\n")
        got = []
        while True:
            r = self.response()
            if r.startswith(tag + b" "):
                if not r.startswith(tag + b" OK"):
                    raise RuntimeError(r)
                return got
            got.append(r)


def main():
    files = sys.argv[1:]
    t = tempfile.mkdtemp(prefix="surat-dovecot-oracle.")
    pw = pwd.getpwnam("dovecot")
    port = free_port()
    os.chmod(t, 0o755)
    md = os.path.join(t, "mail", "Maildir")
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(md, d))
    for i, f in enumerate(files):
        shutil.copyfile(f, os.path.join(md, "cur", "%d.M1P1.oracle:2,S" % (1000000 + i)))
    for root, dirs, fs in os.walk(os.path.join(t, "mail")):
        for n in dirs + fs:
            os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
    os.chown(os.path.join(t, "mail"), pw.pw_uid, pw.pw_gid)
    conf = os.path.join(t, "dovecot.conf")
    with open(conf, "w") as fh:
        fh.write(f"""base_dir = {t}/run
state_dir = {t}/state
log_path = {t}/log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
first_valid_uid = 100
mail_location = maildir:{md}
mail_max_userip_connections = 100
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={pw.pw_uid} gid={pw.pw_gid} home={t}/mail
}}
""")
    subprocess.run(["dovecot", "-c", conf], check=True)
    try:
        for _ in range(50):
            try:
                c = Conn(port)
                break
            except OSError:
                time.sleep(0.1)
        c.cmd(b"a", b"LOGIN oracle x")
        c.cmd(b"b", b"SELECT INBOX")
        # Warm up: Dovecot answers differently for a message it has parsed
        # before (e.g. a plain 7-bit text/plain message is cached as a flag
        # and shown in canonical form). Report that steady state.
        if files:
            c.cmd(b"w", b"FETCH 1:* (BODYSTRUCTURE)")
        # Maildir order is the order of the file names, i.e. of argv
        for i, f in enumerate(files):
            print("==", f)
            for item in (b"ENVELOPE", b"BODY", b"BODYSTRUCTURE"):
                r = c.cmd(b"c", b"FETCH %d (%s)" % (i + 1, item))
                resp = r[0]
                pre = b"* %d FETCH (%s " % (i + 1, item)
                assert resp.startswith(pre) and resp.endswith(b")\r\n"), resp
                print(item.decode(), cstr(resp[len(pre):-3]))
        c.cmd(b"z", b"LOGOUT")
    finally:
        subprocess.run(["dovecot", "-c", conf, "stop"], check=False)
        time.sleep(0.2)
        shutil.rmtree(t, ignore_errors=True)


if __name__ == "__main__":
    main()
