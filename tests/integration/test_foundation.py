"""The foundation: config errors, CLI, start/stop, TLS reload, caps, privileges."""
import fcntl
import os
import pwd
import re
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import time

import pytest

from conftest import (BIN, POPULATED, Surat, client_tls, free_port,
                      skip_unless_ipv6_loopback)


def run(*args, input=None):
    return subprocess.run([BIN] + list(args), input=input, capture_output=True, text=True,
                          timeout=60)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def test_help_and_usage(tmp_path):
    r = run("--help")
    assert r.returncode == 0 and "serve" in r.stdout and "alias" in r.stdout
    for cmd in ("serve", "user", "domain", "alias", "queue", "mailbox", "check-config"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout, cmd
    r = run("frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = run("-c")
    assert r.returncode == 2


def test_check_config_errors(tmp_path):
    good = write(str(tmp_path / "good.conf"), "hostname = a.example\ndata_dir = %s\n" % tmp_path)
    r = run("-c", good, "check-config")
    assert r.returncode == 0 and "ok" in r.stdout
    bad = write(str(tmp_path / "bad.conf"), "hostname = a.example\n\nfrobnicate = 3\n")
    r = run("-c", bad, "check-config")
    assert r.returncode == 2
    assert "bad.conf:3: unknown key 'frobnicate'" in r.stderr
    bad = write(str(tmp_path / "bad2.conf"), "queue.max_age = forever\n")
    r = run("-c", bad, "check-config")
    assert r.returncode == 2 and "bad2.conf:1: queue.max_age: bad duration" in r.stderr
    r = run("-c", str(tmp_path / "missing.conf"), "check-config")
    assert r.returncode == 2 and "missing.conf: cannot open" in r.stderr


def test_check_config_finds_what_serve_refuses(tmp_path, tls_files):
    """check-config says 'ok' only for a config serve would start with: the
    certificate and key are loaded and matched, the smarthost password file
    opened, run_as looked up; values only the daemon used to check are
    checked when read. Each error names the file (and line, and key)."""
    other_key = str(tmp_path / "other.key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", other_key], check=True, capture_output=True)
    base = "data_dir = %s\n" % (tmp_path / "data")
    tls = "tls.cert = %s\ntls.key = %%s\n" % tls_files[0]
    cases = [
        (tls % "/nonexistent.key", "c.conf: cannot load tls."),
        (tls % other_key, "c.conf: tls.key %s does not match tls.cert" % other_key),
        ("relayhost = smart.example:587\nrelayhost.user = u\n"
         "relayhost.password_file = /nonexistent.pw\n",
         "c.conf: relayhost.password_file: open(/nonexistent.pw) failed"),
        ("run_as = no-such-user-surat\n", "c.conf: run_as: no such user 'no-such-user-surat'"),
        ("data_dir = %s/c.conf/data\n" % tmp_path, "c.conf: data_dir: %s/c.conf is not a directory"
         % tmp_path),
        # access(W_OK) says yes to root there: serve could not make data_dir.
        ("data_dir = /proc/surat/data\n",
         "c.conf: data_dir: /proc is on the kernel's proc file system"),
        ("listen.http = 127.0.0.1:8080\n",
         "c.conf: listen.http: this protocol is not available in this build"),
        ("hostname =\n", "c.conf:2: hostname: bad host name ''"),
        ("relayhost = a:b:c\n", "c.conf:2: relayhost: bad value 'a:b:c'"),
        ("dns.server = resolver.example\n", "c.conf:2: dns.server: bad resolver"),
    ]
    conf = str(tmp_path / "c.conf")
    for text, want in cases:
        write(conf, base + text)
        r = run("-c", conf, "check-config")
        assert r.returncode == 2 and want in r.stderr and r.stdout == "", (text, r)
    write(conf, base + tls % tls_files[1])
    assert run("-c", conf, "check-config").returncode == 0
    r = run("-c", conf, "check-config", "now")
    assert r.returncode == 2 and "check-config takes no arguments" in r.stderr
    assert not (tmp_path / "data").exists()


def test_check_config_reads_the_smarthost_password_as_serve_does(tmp_path):
    """check-config only opened relayhost.password_file and said ok; serve
    reads it, and refuses to start on an empty one or one of two lines."""
    pw = tmp_path / "relay.pw"
    conf = str(tmp_path / "c.conf")
    write(conf, "data_dir = %s\nrelayhost = smart.example:587\nrelayhost.user = u\n"
          "relayhost.password_file = %s\n" % (tmp_path / "data", pw))
    for text in ("", "\n", "first\nsecond\n"):
        write(str(pw), text)
        r = run("-c", conf, "check-config")
        assert r.returncode == 2 and "want one line with the password" in r.stderr, (text, r)
        r = run("-c", conf, "serve")
        assert r.returncode == 1 and "want one line with the password" in r.stderr, (text, r)
    write(str(pw), "secret\r\n")
    r = run("-c", conf, "check-config")
    assert r.returncode == 0 and r.stdout.endswith("c.conf: ok\n"), r


def test_cli_usage_error_touches_nothing(tmp_path):
    """A mistyped subcommand is a usage error (2) before data_dir is opened:
    it creates no data_dir, and one that cannot be opened does not turn it
    into a runtime error (1)."""
    data = tmp_path / "data"
    conf = write(str(tmp_path / "c.conf"), "data_dir = %s\n" % data)
    blocked = write(str(tmp_path / "b.conf"), "data_dir = %s/sub\n" % conf)  # under a file
    for args in (["domain", "lsit"], ["alias", "ad", "a@b.test", "c@d.test"],
                 ["user", "remove", "a@b.test"]):
        for c in (conf, blocked):
            r = run("-c", c, *args)
            assert r.returncode == 2 and "unknown subcommand '%s'" % args[1] in r.stderr, r
    assert not data.exists()
    # Nor a known subcommand with the wrong arguments: "mkdir(...) failed",
    # exit 1, said nothing of what was wrong.
    for args, want in ((["domain", "add"], "need exactly one DOMAIN"),
                       (["domain", "list", "x.test"], "takes no arguments"),
                       (["user", "add"], "need exactly one ADDRESS"),
                       (["user", "del", "a@b.test", "c@d.test"], "need exactly one ADDRESS"),
                       (["user", "quota", "a@b.test"], "need ADDRESS and SIZE"),
                       (["user", "quota", "a@b.test", "1T"], "bad size '1T'"),
                       (["user", "list", "a.test", "b.test"], "at most one DOMAIN"),
                       (["user", "add", "a@b.test", "--hash", "$6$short"], "--hash"),
                       (["alias", "add", "a@b.test"], "need SOURCE and at least one TARGET"),
                       (["alias", "del"], "need SOURCE [TARGET]"),
                       (["alias", "list", "x"], "takes no arguments"),
                       # A single-dash option was taken for an argument.
                       (["user", "add", "-q", "1G", "a@b.test"], "user add: unknown option '-q'"),
                       (["user", "del", "a@b.test", "-f"], "user del: unknown option '-f'"),
                       (["domain", "add", "-x"], "domain add: unknown option '-x'"),
                       (["alias", "add", "a@b.test", "-v", "c@d.test"],
                        "alias add: unknown option '-v'"),
                       (["queue", "list", "-v"], "queue list: unknown option '-v'"),
                       (["mailbox", "list", "-v"], "mailbox list: unknown option '-v'"),
                       (["check-config", "-q"], "check-config: unknown option '-q'"),
                       (["serve", "-d"], "serve: unknown option '-d'")):
        for c in (conf, blocked):
            r = run("-c", c, *args, input="pw\n")
            assert r.returncode == 2 and want in r.stderr, (args, r)
    assert not data.exists()


def test_failed_start_leaves_nothing(tmp_path, tls_files):
    data = tmp_path / "data"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    conf = write(str(tmp_path / "s.conf"),
                 "data_dir = %s\nlisten.smtp = 127.0.0.1:%d\n" % (data, port))
    r = subprocess.run([BIN, "-c", conf, "serve"], capture_output=True, text=True, timeout=30)
    busy.close()
    assert r.returncode == 1
    assert "listen.smtp: bind(127.0.0.1:%d) failed" % port in r.stderr
    assert not data.exists()
    # A bad key: nothing starts either.
    conf = write(str(tmp_path / "s2.conf"), "data_dir = %s\nlisten.smtpp = 127.0.0.1:1\n" % data)
    r = subprocess.run([BIN, "-c", conf, "serve"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "unknown key 'listen.smtpp'" in r.stderr
    assert not data.exists()
    # A missing certificate.
    conf = write(str(tmp_path / "s3.conf"),
                 "data_dir = %s\ntls.cert = /nonexistent.pem\ntls.key = /nonexistent.key\n" % data)
    r = subprocess.run([BIN, "-c", conf, "serve"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot load tls.cert /nonexistent.pem" in r.stderr
    assert not data.exists()


def test_cli_domains_users_aliases(make_surat):
    s = make_surat(start=False)
    r = s.cli("user", "add", "x@nowhere.test", input="pw\n", check=False)
    assert r.returncode == 1 and "nowhere.test is not a local domain" in r.stderr
    s.add_domain("Example.TEST")
    assert s.cli("domain", "list").stdout.split() == ["example.test"]
    r = s.cli("domain", "add", "example.test", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = s.cli("domain", "add", "bad_domain-.test", check=False)
    assert r.returncode == 1 and "bad domain" in r.stderr
    s.add_user("A@example.test", "pw")
    assert "a@example.test quota=unlimited" in s.cli("user", "list").stdout
    r = s.cli("user", "add", "a@example.test", input="pw\n", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = s.cli("user", "add", "b@example.test", input="", check=False)
    assert r.returncode == 1 and "no password" in r.stderr
    r = s.cli("user", "add", "b@example.test", "--hash", "plaintext", check=False)
    assert r.returncode == 2
    r = s.cli("user", "add", "bad address@example.test", input="pw\n", check=False)
    assert r.returncode == 1 and "not allowed" in r.stderr
    # SASL PLAIN carries 255 octets at most: a longer password could never log in.
    r = s.cli("user", "add", "long@example.test", input="p" * 256 + "\n", check=False)
    assert r.returncode == 1 and "password longer than 255 octets" in r.stderr, r.stderr
    s.cli("user", "add", "long@example.test", input="p" * 255 + "\n")
    s.cli("user", "del", "long@example.test")
    r = s.cli("user", "add", check=False)
    assert r.returncode == 2
    s.cli("user", "quota", "a@example.test", "10M")
    assert "a@example.test quota=10485760" in s.cli("user", "list").stdout
    s.cli("alias", "add", "team@example.test", "a@example.test", "ext@remote.test")
    s.cli("alias", "add", "@example.test", "a@example.test")
    out = s.cli("alias", "list").stdout
    assert "team@example.test -> a@example.test" in out
    assert "team@example.test -> ext@remote.test" in out
    assert "@example.test -> a@example.test" in out
    r = s.cli("alias", "add", "a@example.test", "x@example.test", check=False)
    assert r.returncode == 1 and "is a user" in r.stderr
    r = s.cli("alias", "add", "x@other.test", "a@example.test", check=False)
    assert r.returncode == 1 and "not a local domain" in r.stderr
    s.cli("alias", "del", "team@example.test", "ext@remote.test")
    assert "ext@remote.test" not in s.cli("alias", "list").stdout
    r = s.cli("alias", "del", "nope@example.test", check=False)
    assert r.returncode == 1 and "no such alias" in r.stderr
    r = s.cli("domain", "del", "example.test", check=False)
    assert r.returncode == 1 and "still has users" in r.stderr
    s.cli("user", "del", "a@example.test")
    r = s.cli("user", "del", "a@example.test", check=False)
    assert r.returncode == 1 and "no such user" in r.stderr
    s.cli("domain", "del", "example.test")
    assert s.cli("domain", "list").stdout == ""


def test_cli_address_beginning_with_a_dash_is_no_option(make_surat):
    """A local part may begin with '-' (RFC 5322 atext): an argument with an
    '@' is an address, never an unknown option; a MAILBOX may begin with one."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    s.add_user("-alice@example.test", "pw")
    s.cli("alias", "add", "-team@example.test", "-alice@example.test")
    assert "-team@example.test -> -alice@example.test" in s.cli("alias", "list").stdout
    r = s.cli("mailbox", "show", "-alice@example.test", "-drafts", check=False)
    assert r.returncode == 1 and "unknown option" not in r.stderr, r
    s.cli("user", "del", "-alice@example.test")


def test_cli_alias_add_twice_is_an_error(make_surat):
    """An alias added again said nothing and exited 0, unlike a domain or
    user added again; a target named twice in one command, or one already
    there, stops the command before any of its targets goes in."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    s.cli("alias", "add", "team@example.test", "a@example.test", "Ext@remote.test")
    for args, want in (
            (["team@example.test", "a@example.test"],
             "alias team@example.test -> a@example.test already exists"),
            (["Team@Example.test", "A@EXAMPLE.TEST"], "already exists"),
            (["team@example.test", "ext@remote.test"], "already exists"),
            (["team@example.test", "b@example.test", "a@example.test"], "already exists"),
            (["team@example.test", "c@example.test", "C@example.test"],
             "target c@example.test given twice")):
        r = s.cli("alias", "add", *args, check=False)
        assert r.returncode == 1 and want in r.stderr, (args, r)
    assert s.cli("alias", "list").stdout == ("team@example.test -> Ext@remote.test\n"
                                             "team@example.test -> a@example.test\n")


def test_cli_domain_del_is_whole_or_nothing(make_surat):
    """`domain del` deleted the domain, then its aliases; when that second
    step failed it still exited 0, and the aliases came back with the domain
    when it was made again. Now a failure leaves both (the failure is made
    here with a trigger)."""
    import sqlite3
    s = make_surat(start=False)
    s.add_domain("gone.test")
    s.cli("alias", "add", "info@gone.test", "x@remote.test")
    db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"))
    db.execute("CREATE TRIGGER no_del BEFORE DELETE ON aliases "
               "BEGIN SELECT RAISE(ABORT, 'refused by test'); END")
    db.commit()
    r = s.cli("domain", "del", "gone.test", check=False)
    assert r.returncode == 1 and "refused by test" in r.stderr, r
    assert s.cli("domain", "list").stdout == "gone.test\n"
    db.execute("DROP TRIGGER no_del")
    db.commit()
    db.close()
    s.cli("domain", "del", "gone.test")
    s.add_domain("gone.test")
    assert s.cli("alias", "list").stdout == ""


def test_cli_output_that_cannot_be_written_is_an_error(make_surat):
    """A list or message written to a full disk (`> file`) was cut short
    and the command still exited 0."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    with open("/dev/full", "w") as full:
        for args in (["domain", "list"], ["alias", "--help"], ["--help"]):
            r = subprocess.run([BIN, "-c", s.conf] + args, stdout=full, stderr=subprocess.PIPE,
                               text=True, timeout=30)
            assert r.returncode == 1 and \
                "writing to standard output failed: No space left on device" in r.stderr, (args, r)


LONG_DOMAIN = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49])   # 241 octets


def test_cli_refuses_an_address_no_smtp_path_holds(make_surat):
    """A path is at most 256 octets with its brackets (RFC 5321 4.5.3.1.3):
    a user or alias of a longer address was made, and no RCPT could ever
    name it."""
    s = make_surat(start=False)
    s.add_domain(LONG_DOMAIN)
    s.add_domain("example.test")
    fits, too_long = "u" * 12 + "@" + LONG_DOMAIN, "v" * 13 + "@" + LONG_DOMAIN
    assert len(fits) == 254
    for args in (["user", "add", too_long], ["alias", "add", too_long, "a@example.test"],
                 ["alias", "add", "a@example.test", "b@example.test", too_long]):
        r = s.cli(*args, input="pw\n", check=False)
        assert r.returncode == 1 and "longer than 254 octets" in r.stderr, (args, r)
    assert s.cli("user", "list").stdout == "" and s.cli("alias", "list").stdout == ""
    s.add_user(fits)
    s.cli("alias", "add", "a@example.test", fits)


def test_cli_user_del_moves_a_long_address_mail_aside(make_surat):
    """`user del` of an address near the SMTP limit deleted the user, then
    failed to move its mail aside (the name with its time passed NAME_MAX):
    exit 1, and a user made again under the address got the old mail."""
    s = make_surat(start=False)
    s.add_domain(LONG_DOMAIN)
    addr = "u" * 12 + "@" + LONG_DOMAIN
    home = os.path.join(s.data_dir, "mail", LONG_DOMAIN, "u" * 12)
    for n in range(2):
        s.add_user(addr)
        s.cli("mailbox", "list", addr)     # makes its mailboxes
        assert os.path.isdir(home)
        r = s.cli("user", "del", addr, check=False)
        assert r.returncode == 0 and "mail moved to " in r.stdout, r
        assert not os.path.exists(home)
    assert len(os.listdir(os.path.join(s.data_dir, "deleted"))) == 2


def test_cli_user_list_domain_in_any_form(make_surat):
    """`user list DOMAIN` takes the domain as every other command does: in
    any case, with a trailing dot, as U-label or A-label. A domain that is
    not local is an error, not an empty list."""
    s = make_surat(start=False)
    s.add_domain("m\u00fcnchen.example")
    s.add_domain("example.test")
    s.add_user("hans@M\u00dcNCHEN.example", "pw")
    s.add_user("a@example.test", "pw")
    for d in ("m\u00fcnchen.example", "XN--MNCHEN-3YA.example", "xn--mnchen-3ya.example."):
        assert s.cli("user", "list", d).stdout == \
            "hans@xn--mnchen-3ya.example quota=unlimited\n", d
    assert s.cli("user", "list", "Example.Test").stdout == "a@example.test quota=unlimited\n"
    r = s.cli("user", "list", "nowhere.test", check=False)
    assert r.returncode == 1 and "no such domain nowhere.test" in r.stderr, r.stderr
    r = s.cli("user", "list", "bad_domain-.test", check=False)
    assert r.returncode == 1 and "bad domain" in r.stderr, r.stderr


def test_cli_domain_add_refuses_a_bad_a_label(make_surat):
    """An A-label that is no valid punycode, or whose U-label IDNA2008
    refuses, was made a local domain: its UTF-8 form, refused or another
    name, could never reach it. A valid one, in any case, is the U-label's
    domain."""
    s = make_surat(start=False)
    for bad in ("xn--zzzz.example", "xn--a.example", "mail.xn--ls8h.example"):
        r = s.cli("domain", "add", bad, check=False)
        assert r.returncode == 1 and "an A-label (xn--) that is not" in r.stderr, (bad, r)
    assert s.cli("domain", "list").stdout == ""
    s.add_domain("XN--BCHER-KVA.example")
    r = s.cli("domain", "add", "b\u00fccher.example", check=False)
    assert r.returncode == 1 and "xn--bcher-kva.example already exists" in r.stderr, r


def test_cli_user_del_names_the_aliases_left_naming_the_user(make_surat):
    """`user del` left the aliases naming the user and said nothing: mail to
    an alias of that one member is refused from then on (550 5.1.1)."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    s.add_domain("other.test")
    s.add_user("a@example.test")
    s.add_user("b@example.test")
    s.cli("alias", "add", "team@example.test", "a@example.test", "b@example.test")
    s.cli("alias", "add", "info@other.test", "A@example.test")
    r = s.cli("user", "del", "a@example.test")
    assert "note: aliases still name a@example.test: info@other.test, team@example.test" \
        in r.stderr, r
    r = s.cli("user", "del", "b@example.test")
    assert "aliases still name b@example.test: team@example.test (" in r.stderr, r
    s.cli("alias", "del", "team@example.test")
    s.add_user("c@example.test")
    assert "note" not in s.cli("user", "del", "c@example.test").stderr


def test_cli_domain_add_refuses_an_underscore(make_surat):
    """A '_' in a domain was taken (DNS names may hold one), but SMTP refuses
    it in a path (501 5.1.3): a local domain whose users no mail could reach."""
    s = make_surat(start=False)
    for bad in ("ex_ample.test", "mail._x.test"):
        r = s.cli("domain", "add", bad, check=False)
        assert r.returncode == 1 and "character '_' not allowed" in r.stderr, (bad, r)
    assert s.cli("domain", "list").stdout == ""


def test_cli_refuses_ill_formed_utf8_in_a_local_part(make_surat):
    """RFC 3629: an overlong form, a surrogate or a code point past U+10FFFF
    is not UTF-8, and SMTP refuses such an address (501 5.1.3): an account or
    alias under one could never get mail."""
    s = make_surat(start=False)
    s.add_domain("example.test")
    for bad in (b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf0\x80\x80\xaf", b"\xf4\x90\x80\x80"):
        addr = b"a" + bad + b"@example.test"
        for args in ([b"user", b"add", addr], [b"alias", b"add", addr, b"x@example.test"]):
            r = subprocess.run([BIN, "-c", s.conf] + args, input=b"pw\n",
                               capture_output=True, timeout=60)
            assert r.returncode == 1 and b"not valid UTF-8" in r.stderr, (args, r.stderr)
    s.add_user("j\u00f6rg@example.test", "pw")    # well-formed UTF-8 is fine
    assert s.cli("user", "list").stdout == "j\u00f6rg@example.test quota=unlimited\n"


def test_cli_errors_escape_what_was_typed(tmp_path):
    """An argument echoed in an error was written raw: a stray byte, an
    escape sequence or a bidi control garbled or reordered the admin's
    terminal. They are spelt out; printable UTF-8 stays as it is."""
    conf = write(str(tmp_path / "c.conf"), "data_dir = %s\n" % (tmp_path / "data"))
    cases = [
        ([b"domain", b"add", b"\xff\xfe.com"], b"bad domain '\\xff\\xfe.com'"),
        ([b"domain", b"add", b"ex\xe2\x80\xaeample.com"], b"bad domain 'ex<U+202E>ample.com'"),
        ([b"domain", b"add", b"ex\x1b[2Jample.com"], b"bad domain 'ex\\x1b[2Jample.com'"),
        ([b"domain", b"add", b"m\xc3\xbcnchen..example"], b"'m\xc3\xbcnchen..example'"),
        ([b"user", b"add", b"a\x1b@b.test"], b"bad address 'a\\x1b@b.test'"),
        ([b"alias", b"add", b"a\xc2\x85@b.test", b"c@d.test"], b"'a<U+0085>@b.test'"),
        ([b"domain", b"l\x1bst"], b"unknown subcommand 'l\\x1bst'"),
        ([b"queue", b"show", b"\x9b2J"], b"'\\x9b2J' is not a queue ID"),
        ([b"fr\x1bob"], b"unknown command 'fr\\x1bob'"),
    ]
    for args, want in cases:
        r = subprocess.run([BIN, "-c", conf] + args, input=b"pw\n", capture_output=True,
                           timeout=60)
        assert r.returncode in (1, 2) and want in r.stderr, (args, r.stderr)
        assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f\xff\xfe]|\xc2[\x80-\x9f]|\xe2\x80\xae",
                             r.stderr), (args, r.stderr)
    # A config file's value, through check-config and any other command.
    write(conf, "data_dir = %s\nhostname = mx\x1b]0;x\x07.example\n" % (tmp_path / "data"))
    for args in (["check-config"], ["domain", "list"]):
        r = run("-c", conf, *args)
        assert "hostname: bad host name 'mx\\x1b]0;x\\x07.example'" in r.stderr, r.stderr


def auth_ok(s, user, password):
    with smtplib.SMTP_SSL("127.0.0.1", s.port("submissions"), context=client_tls(),
                          timeout=30) as c:
        try:
            c.login(user, password)
            return True
        except smtplib.SMTPAuthenticationError:
            return False


@pytest.mark.parametrize("scheme", ["$y$", "$6$", "$2b$"])
def test_hash_schemes_migrated(make_surat, scheme):
    import crypt  # deprecated but present in 3.11; used only to make test hashes
    s = make_surat()
    s.add_domain("example.test")
    salt = crypt.mksalt({"$y$": None, "$6$": crypt.METHOD_SHA512,
                         "$2b$": crypt.METHOD_BLOWFISH}[scheme]) if scheme != "$y$" else None
    if scheme == "$y$":
        s.add_user("m@example.test", "migrated-pw")
    else:
        h = crypt.crypt("migrated-pw", salt)
        assert h.startswith(scheme)
        s.cli("user", "add", "m@example.test", "--hash", h)
    assert auth_ok(s, "m@example.test", "migrated-pw")
    assert not auth_ok(s, "m@example.test", "wrong-pw")


def test_cli_refuses_a_hash_cut_short(make_surat):
    """--hash takes only a whole hash: one cut short (a copy and paste that
    lost its end) or damaged was stored, the command said nothing, and no
    password could ever log in."""
    import crypt
    s = make_surat(start=False)
    s.add_domain("example.test")
    whole = crypt.crypt("pw", crypt.mksalt(crypt.METHOD_SHA512))
    bad = (whole[:-4], whole + "x", whole[:-1] + "!", "$6$saltsalt$", "$6$saltsaltsalt",
           "$y$abcdefghijkl")
    # The message names the scheme and what is wrong, not only "damaged".
    why = ("$6$ (sha512-crypt) with a HASH of 82 characters, not 86 (cut short?)",
           "$6$ (sha512-crypt) with a HASH of 87 characters, not 86 (damaged?)",
           "$6$ (sha512-crypt) with a HASH holding a character other than",
           "$6$ (sha512-crypt) cut short before its HASH",
           "$6$ (sha512-crypt) cut short before its HASH",
           "$y$ (yescrypt) cut short before its HASH; the form is $y$PARAMS$SALT$HASH")
    for h, w in zip(bad, why):
        r = s.cli("user", "add", "m@example.test", "--hash", h, check=False)
        assert r.returncode == 2 and "not a whole crypt(3) hash" in r.stderr, (h, r)
        assert w in r.stderr and whole[20:] not in r.stderr, (h, r)
    # (The other refusals' reasons: tests/unit/test_password.c.)
    r = s.cli("user", "add", "m@example.test", "--hash", "$1$salt$" + "x" * 22, check=False)
    assert r.returncode == 2 and ("not a supported crypt(3) hash: $1$ is md5-crypt, which "
                                  "surat does not verify; surat verifies $y$ (yescrypt), "
                                  "$6$") in r.stderr, r
    assert s.cli("user", "list").stdout == ""
    s.cli("user", "add", "m@example.test", "--hash", whole)
    for h in bad:
        r = s.cli("user", "passwd", "m@example.test", "--hash", h, check=False)
        assert r.returncode == 2 and "not a whole crypt(3) hash" in r.stderr, (h, r)
    s.cli("user", "passwd", "m@example.test", "--hash", whole)


def test_cli_while_running_and_passwd(surat):
    surat.add_user("late@example.test", "first-pw")
    assert auth_ok(surat, "late@example.test", "first-pw")
    surat.cli("user", "passwd", "late@example.test", input="second-pw\n")
    assert not auth_ok(surat, "late@example.test", "first-pw")
    assert auth_ok(surat, "late@example.test", "second-pw")


def test_cli_password_line_endings(surat):
    """Only the line's end is taken off the password: CRLF and no newline
    work; a NUL or CR inside is refused, where it used to cut the password
    short and store its first two characters."""
    surat.cli("user", "add", "crlf@example.test", input="crlf-pw\r\n")
    surat.cli("user", "add", "nonl@example.test", input="nonl-pw")
    assert auth_ok(surat, "crlf@example.test", "crlf-pw")
    assert auth_ok(surat, "nonl@example.test", "nonl-pw")
    for pw, why in (("ab\0long-secret\n", "NUL byte"), ("ab\rlong-secret\n", "SASLprep")):
        r = surat.cli("user", "add", "cut@example.test", input=pw, check=False)
        assert r.returncode == 1 and why in r.stderr, (pw, r)
        r = surat.cli("user", "passwd", "alice@example.test", input=pw, check=False)
        assert r.returncode == 1 and why in r.stderr, (pw, r)
    assert "cut@" not in surat.cli("user", "list").stdout
    assert auth_ok(surat, "alice@example.test", "alice-pw")


def test_ipv4_and_ipv6_wildcard_on_one_port(make_surat):
    """An IPv4 address and [::] on the same port, the usual way to serve
    both families: [::] took IPv4 too (the system's dual stack) and serve
    failed at start with "Address already in use"."""
    skip_unless_ipv6_loopback()
    s = make_surat(start=False)
    p = s.port("smtp")
    with open(s.conf, "a") as f:
        f.write("listen.smtp = 127.0.0.1:%d, [::]:%d\n" % (p, p))
    s.start()
    for host in ("127.0.0.1", "::1"):
        with smtplib.SMTP(host, p, timeout=10) as c:
            assert c.noop()[0] == 250, host


def test_every_listener_serves(surat):
    for kind in ("smtp", "submission"):
        with socket.create_connection(("127.0.0.1", surat.port(kind)), timeout=10) as c:
            assert c.recv(100).startswith(b"220 mx.example.test ESMTP")
    raw = socket.create_connection(("127.0.0.1", surat.port("submissions")), timeout=10)
    with client_tls().wrap_socket(raw) as c:
        assert c.recv(100).startswith(b"220 ")
        assert c.version() in ("TLSv1.2", "TLSv1.3")


def test_old_tls_refused(surat):
    ctx = client_tls()
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    raw = socket.create_connection(("127.0.0.1", surat.port("submissions")), timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        with ctx.wrap_socket(raw) as c:
            c.recv(10)


def test_sighup_reloads_certificate(make_surat, tmp_path):
    certs = []
    for cn in ("first.test", "second.test"):
        cert, key = str(tmp_path / (cn + ".crt")), str(tmp_path / (cn + ".key"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=" + cn, "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        certs.append((cert, key))
    live_cert, live_key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    os.link(certs[0][0], live_cert)
    os.link(certs[0][1], live_key)
    s = make_surat({"tls.cert": live_cert, "tls.key": live_key})

    def peer_cn():
        raw = socket.create_connection(("127.0.0.1", s.port("submissions")), timeout=10)
        with client_tls().wrap_socket(raw) as c:
            der = c.getpeercert(binary_form=True)
        pem = ssl.DER_cert_to_PEM_cert(der)
        out = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem,
                             capture_output=True, text=True).stdout
        return out.strip()

    assert "first.test" in peer_cn()
    os.replace(certs[1][0], live_cert)
    os.replace(certs[1][1], live_key)
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "second.test" not in peer_cn():
        assert time.time() < deadline, s.log()[-2000:]
        time.sleep(0.1)
    # A broken file on reload keeps the old certificate.
    write(live_key, "garbage")
    s.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert "second.test" in peer_cn()
    assert "TLS reload failed" in s.log()


def test_listener_cap_busy_reply(make_surat):
    s = make_surat({"max_connections": "2"})
    time.sleep(0.5)  # let the daemon see the start-up probes close
    held = [socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=10) for _ in range(2)]
    for c in held:
        assert c.recv(100).startswith(b"220")
    extra = socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=10)
    data = extra.recv(200)
    assert data.startswith(b"421 4.7.0"), data
    assert extra.recv(100) == b""
    for c in held:
        c.close()


def test_out_of_descriptors_busy_reply(make_surat):
    """With its open-files limit reached, the daemon answers new clients with the busy
    reply and closes, instead of leaving them un-greeted; it recovers once clients go."""
    import resource
    s = make_surat({"max_connections": "1000", "max_connections_per_ip": "1000"},
                   kinds=("smtp",), start=False)
    s.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
    time.sleep(0.5)
    held, greeted, refused = [], 0, 0
    for _ in range(100):
        c = socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=10)
        data = c.recv(200)  # a timeout here fails the test: nobody may wait un-greeted
        if data.startswith(b"220"):
            greeted += 1
            held.append(c)
        else:
            assert data.startswith(b"421 4.7.0"), data
            refused += 1
            c.close()
    assert greeted >= 5 and refused >= 20, (greeted, refused)
    assert "out of file descriptors" in s.log()
    for c in held:
        c.close()
    time.sleep(0.5)
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
        assert c.noop()[0] == 250


def test_sigterm_graceful(surat):
    c = smtplib.SMTP("127.0.0.1", surat.port("smtp"), timeout=30)
    c.ehlo("client.test")
    surat.proc.send_signal(signal.SIGTERM)
    rc = surat.proc.wait(timeout=20)
    assert rc == 0
    surat.proc = None
    surat.logf.close()
    surat.check_sanitizer(surat.log())
    assert "stopped" in surat.log()



def test_sigterm_as_soon_as_a_port_answers_is_a_graceful_stop(make_surat):
    """The listeners are bound before the spool and the accounts are
    opened, and the signals were caught only once the loop ran: a SIGTERM
    in between (a service manager's stop right after the start) killed the
    daemon by the default action, exit -15, no "stopped"."""
    s = make_surat({"log.level": "warn"}, start=False)
    for _ in range(3):
        s.logf = open(s.log_path, "ab")
        s.proc = subprocess.Popen([BIN, "-c", s.conf, "serve"], stdout=s.logf, stderr=s.logf)
        deadline = time.time() + 20
        while True:
            assert s.proc.poll() is None, s.log()
            try:
                socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, s.log()
                time.sleep(0.001)
        assert s.stop() == 0, s.log()

def let_nobody_reach(s):
    """Make the directories above s's data directory searchable by nobody."""
    d = s.dir
    while d not in ("/", "/tmp"):
        os.chmod(d, os.stat(d).st_mode | 0o755)
        d = os.path.dirname(d)


def test_cli_as_root_leaves_the_users_files_alone(make_surat):
    """An admin command run as root (run_as set) chowned every file under
    data_dir to run_as, each time: chown(2) to the owner a file has sets
    its ctime all the same, so every message file changed for backups that
    go by ctime (borg, dump), at each `surat user list`."""
    if os.geteuid() != 0:
        pytest.skip("needs root to test the privilege drop")
    s = make_surat({"run_as": "nobody"}, start=False)
    let_nobody_reach(s)
    s.add_domain("example.test")
    s.add_user("a@example.test", "pw")
    s.cli("mailbox", "list", "a@example.test")     # makes its store
    ctimes = {}
    for top, dirs, files in os.walk(s.data_dir):
        for n in dirs + files:
            if not n.endswith(("-wal", "-shm")):    # SQLite's, written on open
                p = os.path.join(top, n)
                ctimes[p] = os.lstat(p).st_ctime_ns
    assert any("index.db" in p for p in ctimes), ctimes
    time.sleep(0.01)
    s.cli("domain", "list")
    assert {p: os.lstat(p).st_ctime_ns for p in ctimes} == ctimes
    # Nor does it look below data_dir's top level while data_dir is run_as's:
    # a file deep down that is root's stays so until the daemon's start,
    # while a root-owned journal beside accounts.db is fixed at once.
    nobody = pwd.getpwnam("nobody").pw_uid
    deep = next(p for p in ctimes if p.endswith("index.db"))
    top = os.path.join(s.data_dir, "accounts.db-journal")
    for p in (deep, top):
        if not os.path.exists(p):
            open(p, "w").close()
        os.chown(p, 0, 0)
    s.cli("domain", "list")
    assert (os.lstat(deep).st_uid, os.lstat(top).st_uid) == (0, nobody)
    # A data_dir that is not run_as's yet is walked whole, by a command too.
    os.chown(s.data_dir, 0, 0)
    s.cli("domain", "list")
    assert [os.lstat(p).st_uid for p in (s.data_dir, deep)] == [nobody, nobody]


def test_mailbox_sweep(make_surat):
    """store_sweep()'s walk of the message files had no caller, so a file
    whose row never committed and whose temp marker was lost (a crash)
    stayed for good. `surat mailbox sweep` runs it: it moves such a
    file aside, never one whose writer still holds its marker (written and
    flushed, its row not committed yet; test_store.c sweeps beside
    deliveries)."""
    s = make_surat(populated=POPULATED, start=False)
    addr = "alice@example.test"
    s.cli("mailbox", "list", addr)     # makes its store
    root = os.path.join(s.data_dir, "mail", "example.test", "alice")
    os.makedirs(os.path.join(root, "msg", "00"), exist_ok=True)
    orphan = os.path.join(root, "msg", "00", "0000000000000001")
    live = os.path.join(root, "msg", "00", "0000000000000002")
    marker = os.path.join(root, "tmp", "0000000000000002")
    write(orphan, "orphan")
    write(marker, "in flight")
    os.link(marker, live)
    with open(marker) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        r = s.cli("mailbox", "sweep", addr)
        lost = os.path.join(root, "orphans")
        assert r.stdout == "%s: moved 1 orphan message file to %s (look, then delete)\n" % (
            addr, lost)
        assert not os.path.exists(orphan)
        # Moved, not removed: an index.db put back from a backup names none.
        with open(os.path.join(lost, "0000000000000001")) as f:
            assert f.read() == "orphan"
        assert os.path.exists(live) and os.path.exists(marker)
    os.unlink(live)
    os.unlink(marker)
    assert s.cli("mailbox", "sweep", addr).stdout == "%s: no orphan message files\n" % addr
    # The same id once more (an index.db put back again hands ids out
    # anew): the first orphan is kept, the second goes beside it.
    write(orphan, "second")
    s.cli("mailbox", "sweep", addr)
    with open(os.path.join(lost, "0000000000000001")) as f:
        assert f.read() == "orphan"
    with open(os.path.join(lost, "0000000000000001.1")) as f:
        assert f.read() == "second"
    assert s.cli("mailbox", "sweep", check=False).returncode == 2
    r = s.cli("mailbox", "sweep", "nobody@example.test", check=False)
    assert r.returncode == 1 and "no such user" in r.stderr


def test_run_as_drops_privileges(make_surat):
    if os.geteuid() != 0:
        pytest.skip("needs root to test the privilege drop")
    nobody = pwd.getpwnam("nobody")
    s = make_surat({"run_as": "nobody", "state_save_interval": "1s"}, start=False)
    let_nobody_reach(s)
    s.add_domain("example.test")
    s.add_user("a@example.test", "pw")
    s.start()
    # The sockets listen (and queue connections) before the privilege drop.
    deadline = time.time() + 10
    while True:
        with open("/proc/%d/status" % s.proc.pid) as f:
            status = f.read()
        uid_line = [l for l in status.splitlines() if l.startswith("Uid:")][0]
        if uid_line.split()[1:] == [str(nobody.pw_uid)] * 4 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    assert os.stat(s.data_dir).st_uid == nobody.pw_uid
    # The CLI, run as root, works on the same files as the daemon's user.
    s.add_user("b@example.test", "pw2")
    assert auth_ok(s, "b@example.test", "pw2")
    assert os.stat(os.path.join(s.data_dir, "accounts.db")).st_uid == nobody.pw_uid
    # A failed login is kept, written every second by a worker as nobody
    # through a handle opened before the drop.
    assert not auth_ok(s, "b@example.test", "wrong")
    deadline = time.time() + 10
    while "cannot write" not in s.log():
        db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"))
        rows = db.execute("SELECT key, value FROM kept WHERE kind = 'lockout'").fetchall()
        db.close()
        if rows == [("127.0.0.1", 1)]:
            break
        assert time.time() < deadline, rows
        time.sleep(0.05)
    assert "cannot write" not in s.log(), s.log()
    # Its stop writes what it keeps (the rate limit and lockout state) as nobody,
    # through the accounts.db it opened before the drop: no error.
    assert s.stop() == 0
    assert "cannot keep" not in s.log(), s.log()


def test_one_daemon_per_data_dir(make_surat):
    """A second `surat serve` on the same data_dir (another config, other
    ports) took up the same queue files as the first: each message went out
    twice. It now stops at its start, naming the first; the first goes on,
    and once it has stopped the data_dir is free again. queue flush says
    whether a daemon is there to act on it."""
    s = make_surat()
    second = os.path.join(s.dir, "second.conf")
    with open(s.conf) as f:
        text = re.sub(r"(?m)^(listen\.\w+ = 127\.0\.0\.1:)\d+$",
                      lambda m: m.group(1) + str(free_port()), f.read())
    with open(second, "w") as f:
        f.write(text)
    r = subprocess.run([BIN, "-c", second, "serve"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "another surat serve (pid %d) runs on data_dir %s" % (s.proc.pid, s.data_dir) \
        in r.stderr, r.stderr
    assert "within a second" in s.cli("queue", "flush").stdout
    s.stop()
    assert "no daemon runs on this data_dir" in s.cli("queue", "flush").stdout
    s.start()           # its own lock again: the file a crash or stop left is no obstacle
    s.kill()
    p = subprocess.Popen([BIN, "-c", second, "serve"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        with open(os.path.join(s.data_dir, "serve.lock")) as f:
            deadline = time.time() + 10
            while f.read().strip() != str(p.pid) and time.time() < deadline:
                assert p.poll() is None, p.stderr.read()
                time.sleep(0.01)
                f.seek(0)
        assert p.poll() is None
    finally:
        p.terminate()
        p.wait(timeout=30)
