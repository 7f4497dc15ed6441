"""Local parts in Unicode NFC (RFC 6530 10.1, RFC 5198, PRECIS RFC 8265).

o + U+0308 and U+00F6 look alike and Unicode holds them equal: surat keeps
every address in NFC, so either spelling names the same user and alias at
`user`/`alias` commands, RCPT, AUTH and delivery. An accounts.db of an
older surat is upgraded at its first open (schema 2), the users' stores
moved with them; two rows NFC would make one stop it, named, untouched.
"""
import base64
import os
import smtplib
import sqlite3
import subprocess

import pytest

from test_smtp import Raw

NFD = "jo\u0308rg@example.test"
NFC = "j\u00f6rg@example.test"
LIST_NFD = "li\u0308st@example.test"
LIST_NFC = "l\u00efst@example.test"
PW = "nfc-pw"
HASH = subprocess.run(["openssl", "passwd", "-6", "-salt", "nfcsalt", PW], check=True,
                      capture_output=True, text=True).stdout.strip()


def add_user(s, addr, check=True):
    return s.cli("user", "add", addr, "--hash", HASH, check=check)


def send(s, rcpt):
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
        c.sendmail("s@remote.test", [rcpt], b"Subject: nfc\r\n\r\nhi\r\n",
                   mail_options=["SMTPUTF8"])


def store_dirs(s):
    return sorted(os.listdir(os.path.join(s.data_dir, "mail", "example.test")))


def auth_plain(s, user):
    r = Raw(s.port("submission"), timeout=10)
    try:
        r.greet()
        ir = base64.b64encode(b"\0" + user.encode() + b"\0" + PW.encode()).decode()
        c, _ = r.cmd("AUTH PLAIN " + ir)
        if c != 235:
            return c
        c, _ = r.cmd("MAIL FROM:<%s> SMTPUTF8" % (NFD if user == NFC else NFC))
        return 235 if c == 250 else c
    finally:
        r.close()


@pytest.mark.parametrize("added, used", [(NFD, NFC), (NFC, NFD)], ids=["nfd", "nfc"])
def test_one_user_in_either_spelling(make_surat, added, used):
    """Added in one spelling: the other is the same user to `user add`, to
    RCPT (delivered into the one mailbox), and to AUTH and the sender check."""
    s = make_surat(start=False, extra={"allow_plaintext_auth": "yes"},
                   kinds=("smtp", "submission"))
    s.add_domain("example.test")
    add_user(s, added)
    r = add_user(s, used, check=False)
    assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
    assert s.cli("user", "list").stdout == NFC + " quota=unlimited\n"
    s.start()
    send(s, used)
    send(s, added)
    s.wait_messages(used, 2)
    assert store_dirs(s) == ["j\u00f6rg"]
    assert auth_plain(s, used) == 235


def test_alias_in_either_spelling(make_surat):
    """Sources and targets, local and remote, are one mapping in either
    spelling; mail to the alias in the other reaches the user."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    add_user(s, NFC)
    s.cli("alias", "add", LIST_NFD, NFD)
    s.cli("alias", "add", LIST_NFD, "Jo\u0308rg@remote.test")
    for src, dst in ((LIST_NFC, NFC), (LIST_NFC, "J\u00f6rg@remote.test")):
        r = s.cli("alias", "add", src, dst, check=False)
        assert r.returncode == 1 and "already exists" in r.stderr, (dst, r.stderr)
    s.cli("alias", "del", LIST_NFC, "J\u00f6rg@remote.test")
    assert s.cli("alias", "list").stdout == "%s -> %s\n" % (LIST_NFC, NFC)
    s.start()
    send(s, LIST_NFC)
    s.wait_messages(NFD, 1)


def test_control_characters_refused_in_new_accounts(make_surat):
    """A C1 control (U+0080..U+009F) or a bidi control (U+202E reorders what
    follows: "admin<U+202E>moc.knab" shows as another name) in a local part
    is refused by `user add` and `alias add` (source and target), with the
    code point named and the address spelt out; other UTF-8 local parts
    still work."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    bad = [("\u0085", "U+0085, a C1 control"), ("\u009f", "U+009F, a C1 control"),
           ("\u202e", "U+202E, a bidirectional"), ("\u2066", "U+2066, a bidirectional"),
           ("\u200f", "U+200F, a bidirectional"), ("\u061c", "U+061C, a bidirectional")]
    for cp, why in bad:
        addr = "adm%sin@example.test" % cp
        for args in (("user", "add", addr, "--hash", HASH),
                     ("alias", "add", addr, NFC),
                     ("alias", "add", "team@example.test", "x%s@remote.test" % cp)):
            r = s.cli(*args, check=False)
            assert r.returncode == 1 and why in r.stderr, (args, r.returncode, r.stderr)
            assert cp not in r.stderr and "<U+%04X>" % ord(cp) in r.stderr, r.stderr
    assert s.cli("user", "list").stdout == ""
    assert s.cli("alias", "list").stdout == ""
    add_user(s, NFD)
    s.cli("alias", "add", "\u05e9\u05dc\u05d5\u05dd@example.test", NFC)
    assert s.cli("user", "list").stdout == NFC + " quota=unlimited\n"


def old_db(s, sql, args=()):
    """Change accounts.db behind surat's back, and mark it as an older
    surat's (schema 0, before local parts were kept in NFC)."""
    db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"))
    try:
        for q, a in zip(sql, args):
            db.execute(q, a)
        db.execute("PRAGMA user_version=0")
        db.commit()
    finally:
        db.close()


def test_upgrade_keeps_an_old_users_mail(make_surat):
    """A user, an alias and a store spelt decomposed by an older surat: at
    start all are respelt in NFC, the mail is still the user's, and mail in
    the usual spelling reaches the same mailbox."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    add_user(s, NFC)
    s.start()
    send(s, NFC)
    s.wait_messages(NFC, 1)
    assert s.stop() == 0
    old_db(s, ["UPDATE users SET address = ?", "INSERT INTO aliases VALUES(?, ?)"],
           [(NFD,), (LIST_NFD, NFD)])
    mail = os.path.join(s.data_dir, "mail", "example.test")
    os.rename(os.path.join(mail, "j\u00f6rg"), os.path.join(mail, "jo\u0308rg"))
    s.start()
    assert store_dirs(s) == ["j\u00f6rg"]
    assert s.cli("user", "list").stdout == NFC + " quota=unlimited\n"
    assert "accounts.db: upgraded to schema 2" in s.log()
    send(s, LIST_NFC)
    assert len(s.wait_messages(NFC, 2)) == 2


def test_upgrade_refuses_two_users_nfc_makes_one(make_surat):
    """Never merged: `serve` and the CLI refuse, naming both rows so that
    they read apart, and change nothing."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    add_user(s, NFC)
    old_db(s, ["INSERT INTO users SELECT ?, domain, hash, quota, created + 1 FROM users"],
           [(NFD,)])
    with pytest.raises(AssertionError, match="exited at start"):
        s.start()
    s.proc = None
    s.logf.close()
    r = s.cli("user", "list", check=False)
    for text in (s.log(), r.stderr):
        assert "user '%s' (jo<U+0308>rg@example.test) and user '%s' " \
               "(j<U+00F6>rg@example.test)" % (NFD, NFC) in text, text
    assert r.returncode == 1 and "never merges" in r.stderr
    db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert sorted(x[0] for x in db.execute("SELECT address FROM users")) == sorted([NFC, NFD])
    db.close()
