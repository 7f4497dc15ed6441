"""Real IMAP clients against surat: mbsync (isync) syncing both ways, curl."""
import os
import re
import shutil
import subprocess
import time

import pytest

from test_imap import MSG, append, connect, make_imap, send_mail

pytestmark = []


def maildir_files(path):
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(path, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in sorted(os.listdir(d))]
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


def norm(msg):
    """A message as mbsync keeps it in a maildir: LF line ends, its X-TUID header gone."""
    msg = msg.replace(b"\r\n", b"\n")
    return re.sub(rb"(?m)^X-TUID: [^\n]*\n", b"", msg)


def mbsync_config(tmp, port, cert, tls):
    local = os.path.join(tmp, "Mail")
    os.makedirs(local, exist_ok=True)
    cfg = os.path.join(tmp, "mbsyncrc")
    with open(cfg, "w") as f:
        f.write("IMAPAccount surat\n")
        f.write("Host %s\nPort %d\n" % ("localhost" if tls else "127.0.0.1", port))
        f.write("User alice@example.test\nPass alice-pw\n")
        if tls:
            f.write("SSLType IMAPS\nCertificateFile %s\n" % cert)
        else:
            f.write("SSLType None\nAuthMechs LOGIN\n")
        f.write("Timeout 20\n\n")
        f.write("IMAPStore remote\nAccount surat\n\n")
        f.write("MaildirStore local\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\n" %
                (local, local))
        f.write("Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n"
                "Expunge Both\nSyncState *\nCopyArrivalDate yes\n")
    return cfg, local


def run_mbsync(cfg):
    r = subprocess.run(["mbsync", "-c", cfg, "-a"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=os.path.dirname(cfg)))
    assert r.returncode == 0, "mbsync failed:\n%s\n%s" % (r.stdout, r.stderr)
    return r


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")
@pytest.mark.parametrize("tls", [True, False], ids=["imaps", "plain"])
def test_mbsync_both_ways(make_surat, tmp_path, tls_files, tls):
    s = make_imap(make_surat, {"allow_plaintext_auth": "yes"})
    bodies = [b"From: a@remote.test\r\nSubject: sync %d\r\n\r\nbody %d\r\n" % (i, i)
              for i in range(3)]
    for b in bodies:
        send_mail(s, "alice@example.test", b)
    s.wait_messages("alice@example.test", 3)
    c = connect(s)
    c.ok("CREATE Work")
    append(c, "Work", MSG, flags="\\Flagged")
    c.ok("LOGOUT")

    port = s.port("imaps") if tls else s.port("imap")
    cfg, local = mbsync_config(str(tmp_path), port, tls_files[0], tls)
    run_mbsync(cfg)
    # Down: the three INBOX messages and Work, byte for byte.
    files = maildir_files(os.path.join(local, "INBOX"))
    assert len(files) == 3, files
    stored = {norm(read(f)) for f in files}
    assert stored == {norm(s.message("alice@example.test", uid)) for uid in (1, 2, 3)}
    work = maildir_files(os.path.join(local, "Work"))
    assert len(work) == 1 and norm(read(work[0])) == norm(MSG)
    assert work[0].endswith("F") or ",F" in work[0] or "F" in work[0].split(":2,")[-1]

    # Up: a new local message, a local flag, a local deletion, a new folder.
    newmsg = b"From: me@example.test\r\nSubject: from the maildir\r\n\r\nwritten locally\r\n"
    with open(os.path.join(local, "INBOX", "new", "1700000000.1.localhost"), "wb") as f:
        f.write(newmsg)
    files = maildir_files(os.path.join(local, "INBOX"))
    seen_file = files[0]
    os.rename(seen_file, seen_file.split(":2,")[0] + ":2,S" if ":2," in seen_file else
              seen_file + ":2,S")
    files = maildir_files(os.path.join(local, "INBOX"))
    gone = files[1]
    os.rename(gone, gone.split(":2,")[0] + ":2,T" if ":2," in gone else gone + ":2,T")
    os.makedirs(os.path.join(local, "Later", "cur"))
    os.makedirs(os.path.join(local, "Later", "new"))
    os.makedirs(os.path.join(local, "Later", "tmp"))
    run_mbsync(cfg)

    c = connect(s)
    untagged = c.ok('LIST "" "*"')
    assert any(l.endswith(b'"Later"') for l in untagged), untagged
    c.ok("SELECT INBOX")
    untagged = c.ok("FETCH 1:* (UID FLAGS BODY.PEEK[])")
    bodies_now = [l for l in untagged if b" FETCH " in l]
    assert len(bodies_now) == 3, untagged  # 3 - 1 expunged + 1 appended
    assert any(newmsg in l.replace(b"X-TUID", b"") or b"written locally" in l for l in bodies_now)
    assert sum(1 for l in bodies_now if b"\\Seen" in l) >= 1
    c.ok("LOGOUT")
    # A third run changes nothing.
    r = run_mbsync(cfg)
    assert "error" not in r.stderr.lower()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_lists_and_fetches(make_surat):
    s = make_imap(make_surat, {"allow_plaintext_auth": "yes"})
    body = b"From: a@remote.test\r\nSubject: curl me\r\n\r\nfetched by curl\r\n"
    send_mail(s, "alice@example.test", body)
    s.wait_messages("alice@example.test", 1)
    base = "imap://127.0.0.1:%d" % s.port("imap")
    auth = ["-u", "alice@example.test:alice-pw"]
    r = subprocess.run(["curl", "-sS", "--max-time", "30", base + "/"] + auth,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b'"INBOX"' in r.stdout and b'"Sent"' in r.stdout, r.stdout
    r = subprocess.run(["curl", "-sS", "--max-time", "30", base + "/INBOX;UID=1"] + auth,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == s.message("alice@example.test", 1)
    # Over implicit TLS, with a custom command
    r = subprocess.run(["curl", "-sS", "-k", "--max-time", "30",
                        "imaps://127.0.0.1:%d/INBOX" % s.port("imaps"), "-X", "SEARCH ALL"] + auth,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"* SEARCH 1" in r.stdout, r.stdout
    # STARTTLS required: without it, curl cannot log in on the plain port
    s2 = make_imap(make_surat)
    r = subprocess.run(["curl", "-sS", "--max-time", "30",
                        "imap://127.0.0.1:%d/" % s2.port("imap")] + auth,
                       capture_output=True, timeout=60)
    assert r.returncode != 0
    r = subprocess.run(["curl", "-sS", "-k", "--ssl-reqd", "--max-time", "30",
                        "imap://127.0.0.1:%d/" % s2.port("imap")] + auth,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b'"INBOX"' in r.stdout
