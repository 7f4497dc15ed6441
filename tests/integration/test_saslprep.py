"""SASLprep (RFC 4013) of passwords, as RFC 4616 and RFC 4954 ask for PLAIN.

A password is prepared when `surat user add` stores it and when a client
presents it, so it logs in however the client normalised its Unicode: a
no-break space or a plain one, a soft hyphen or none, NFD or NFC, fullwidth
letters or ASCII. Hashes stored before surat did this are of the raw
octets and keep working. Prohibited or unassigned characters are refused
when a password is set, with a message that says why; at login they are
only ever a wrong password. One daemon serves the whole module.
"""
import base64
import poplib
import subprocess

import pytest

import conftest
from conftest import BIN
from test_imap import RawImap
from test_smtp import Raw

TIMEOUT = 10
DOMAIN = "example.test"
USERS = {
    "nbsp": "pass\u00a0word",       # U+00A0 NO-BREAK SPACE -> U+0020
    "shy": "I\u00adX",              # U+00AD SOFT HYPHEN -> nothing
    "nfd": "caf\u0065\u0301",       # e + COMBINING ACUTE -> U+00E9 (NFC)
    "wide": "\uff30\uff37-\uff11",  # fullwidth "PW-1" -> ASCII (NFKC)
    "ascii": "two words!",
}


def addr(name):
    return "%s@%s" % (name, DOMAIN)


def cli_bytes(s, args, stdin):
    """The CLI with a password given as bytes (not through the locale)."""
    r = subprocess.run([BIN, "-c", s.conf] + list(args), input=stdin, capture_output=True,
                       timeout=60)
    err = r.stderr.decode("utf-8", "replace")
    s.check_sanitizer(err)
    return r.returncode, err


def raw_hashes(*pws):
    """sha512-crypt hashes of the raw octets, as surat stored them before SASLprep."""
    r = subprocess.run(["openssl", "passwd", "-6", "-salt", "saslprep", "-stdin"],
                       input=b"".join(pw.encode() + b"\n" for pw in pws),
                       capture_output=True, check=True, timeout=30)
    return r.stdout.decode().split()


@pytest.fixture(scope="module")
def srv(request, tmp_path_factory, tls_files):
    d = str(tmp_path_factory.mktemp("saslprep"))
    # One daemon for the whole module, whose tests fail logins from
    # 127.0.0.1 on purpose, together more than the lockout's threshold:
    # the later tests' good passwords would be refused.
    s = conftest.Surat(d, tls_files, {"allow_plaintext_auth": "yes",
                                      "auth.lockout_failures": "0"},
                       ("smtp", "submission", "imap", "pop3"))
    s.add_domain(DOMAIN)
    for name, pw in USERS.items():
        rc, err = cli_bytes(s, ["user", "add", addr(name)], pw.encode() + b"\n")
        assert rc == 0, (name, err)
    # Stored before SASLprep: the raw octets, one of them a prohibited TAB.
    old, oldtab = raw_hashes("pass\u00a0word", "tab\there")
    s.cli("user", "add", addr("old"), "--hash", old)
    s.cli("user", "add", addr("oldtab"), "--hash", oldtab)

    def fin():
        if s.proc is not None:
            rc = s.stop()
            assert rc == 0, "surat exited with %s:\n%s" % (rc, s.log()[-3000:])
    request.addfinalizer(fin)
    return s.start()


def smtp_plain(s, user, pw):
    """(code, last text line) of AUTH PLAIN on a fresh submission session."""
    r = Raw(s.port("submission"), timeout=TIMEOUT)
    try:
        r.greet()
        ir = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        c, t = r.cmd("AUTH PLAIN " + ir)
        return c, t[-1]
    finally:
        r.close()


OK = (235, "2.7.0 Authentication successful")
FAILED = (535, "5.7.8 Authentication credentials invalid")


def test_smtp_plain_accepts_the_saslprep_equivalent_form(srv):
    """RFC 4013 2: non-ASCII spaces map to U+0020, "commonly mapped to
    nothing" characters vanish, then NFKC. A password set one way logs in
    the other way, and the way it was set."""
    for name, other in (("nbsp", "pass word"), ("nbsp", "pass\u2003word"),
                        ("shy", "IX"), ("nfd", "caf\u00e9"),
                        ("wide", "PW-1")):
        assert smtp_plain(srv, addr(name), other) == OK, (name, other)
        assert smtp_plain(srv, addr(name), USERS[name]) == OK, name


def test_wrong_password_gets_the_usual_reply(srv):
    """Only the prepared form matters, and a password SASLprep refuses
    (a control character, right-to-left after left-to-right letters) is a
    wrong password like any other: 535 5.7.8, no other code, no crash."""
    for name, pw in (("nbsp", "pass\u00a0wort"), ("shy", "I-X"), ("nfd", "cafe"),
                     ("nbsp", "pass\u00a0word\x07"), ("nbsp", "pass word\u05d0"),
                     ("nbsp", "pass word\U0001F600")):
        assert smtp_plain(srv, addr(name), pw) == FAILED, (name, pw)


def test_ascii_password_is_unchanged(srv):
    assert smtp_plain(srv, addr("ascii"), "two words!") == OK
    assert smtp_plain(srv, addr("ascii"), "two words! ") == FAILED
    assert smtp_plain(srv, addr("ascii"), "Two words!") == FAILED


def test_hashes_of_raw_octets_keep_working(srv):
    """A hash stored before SASLprep is of the raw octets: those still log
    in (the prepared form is tried first, then the octets as sent), even
    when SASLprep refuses them."""
    assert smtp_plain(srv, addr("old"), "pass\u00a0word") == OK
    assert smtp_plain(srv, addr("old"), "pass word") == FAILED
    assert smtp_plain(srv, addr("oldtab"), "tab\there") == OK
    assert smtp_plain(srv, addr("oldtab"), "tab here") == FAILED


def test_imap_login_accepts_the_saslprep_equivalent_form(srv):
    c = RawImap(srv.port("imap"), timeout=TIMEOUT)
    try:
        tagged, _ = c.cmd('LOGIN "%s" "pass wort"' % addr("nbsp"))
        assert tagged.endswith("NO [AUTHENTICATIONFAILED] Authentication failed."), tagged
        c.login(addr("nbsp"), "pass word")
        c.ok("LOGOUT")
    finally:
        c.close()


def test_pop3_pass_accepts_the_saslprep_equivalent_form(srv):
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=TIMEOUT)
    p.user(addr("shy"))
    with pytest.raises(poplib.error_proto, match="Authentication failed"):
        p.pass_("I X")
    p.close()
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=TIMEOUT)
    try:
        p.user(addr("shy"))
        assert p.pass_("IX").startswith(b"+OK")
    finally:
        p.quit()


def test_cli_refuses_prohibited_and_unassigned_characters(srv):
    """RFC 4013 2.3 prohibits control characters; RFC 3454 7 keeps code
    points unassigned in Unicode 3.2 out of stored strings. The CLI says
    which, and stores nothing (nor prints the character: it is a secret).
    The other refusals (bidi, not UTF-8, nothing left) are unit tests."""
    for pw, why in ((b"bell\x07pw", "prohibits"), ("new \U0001F600".encode(), "unassigned")):
        rc, err = cli_bytes(srv, ["user", "add", addr("refused")], pw + b"\n")
        assert rc == 1, (pw, err)
        assert "password refused: " in err and why in err, (pw, err)
        assert pw.decode("utf-8", "replace") not in err
    assert addr("refused") not in srv.cli("user", "list").stdout
    rc, err = cli_bytes(srv, ["user", "passwd", addr("ascii")], b"bell\x07pw\n")
    assert rc == 1 and "prohibits" in err, err
    assert smtp_plain(srv, addr("ascii"), "two words!") == OK
