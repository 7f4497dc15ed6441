"""What an admin setting surat up from the docs gets wrong, and what surat says.

Each test is one mistake found by following README.md and docs/config.md
on a fresh install: the error must name what is wrong, and check-config
must not say ok to a config that does not mean what it reads as.
"""
import os
import pwd
import signal
import subprocess

import pytest

from conftest import BIN
from test_foundation import let_nobody_reach


def run(*args, preexec_fn=None):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=60,
                          preexec_fn=preexec_fn)


def test_trailing_comment_is_an_error(tmp_path):
    """'#' starts a comment line only: `data_dir = /x # note` was a data_dir
    with ' # note' in it, and check-config said ok."""
    conf = tmp_path / "surat.conf"
    data = tmp_path / "data"
    conf.write_text("hostname = mx.example.test\ndata_dir = %s   # the spool\n" % data)
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 2, r.stdout
    assert "surat.conf:2: data_dir: '#' after the value" in r.stderr, r.stderr
    r = run("-c", str(conf), "domain", "add", "example.test")
    assert r.returncode == 1 and "'#' after the value" in r.stderr
    assert os.listdir(str(tmp_path)) == ["surat.conf"]
    # A '#' inside a value, with no blank before it, is still the value's.
    conf.write_text("data_dir = %s/a#b\n" % data)
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 0, r.stderr


def test_cli_as_another_user_says_whom_to_run_as(make_surat):
    """An admin command run by a user neither root nor run_as got SQLite's
    'unable to open database file', which names no cause."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the CLI as other users")
    nobody = pwd.getpwnam("nobody")
    other = next((p for p in pwd.getpwall() if p.pw_uid not in (0, nobody.pw_uid)), None)
    if other is None:
        pytest.skip("no third user")
    s = make_surat({"run_as": "nobody"}, start=False)
    let_nobody_reach(s)
    s.add_domain("example.test")

    def as_user(pw):
        def drop():
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        return drop

    r = run("-c", s.conf, "domain", "list", preexec_fn=as_user(other))
    assert r.returncode == 1, r.stdout
    assert "run it as root or as run_as (nobody), not as uid %d" % other.pw_uid in r.stderr, \
        r.stderr
    # run_as itself may: it owns data_dir.
    r = run("-c", s.conf, "domain", "list", preexec_fn=as_user(nobody))
    assert r.returncode == 0 and r.stdout == "example.test\n", r.stderr


def test_data_dir_of_someone_else_is_not_given_to_run_as(make_surat):
    """'data_dir = /var/lib' (no /surat): the first admin command run as
    root chowned all of /var/lib to run_as, and check-config said ok."""
    if os.geteuid() != 0:
        pytest.skip("needs root to test run_as")
    s = make_surat({"run_as": "nobody"}, start=False)
    let_nobody_reach(s)
    os.makedirs(os.path.join(s.data_dir, "dpkg"))
    status = os.path.join(s.data_dir, "dpkg", "status")
    open(status, "w").close()
    for args in (("check-config",), ("domain", "list"), ("serve",)):
        r = s.cli(*args, check=False)
        assert r.returncode in (1, 2), (args, r.stdout)
        assert "data_dir %s holds 'dpkg', which surat did not make" % s.data_dir in r.stderr, \
            (args, r.stderr)
    assert os.stat(status).st_uid == 0 and os.stat(s.data_dir).st_uid == 0
    assert sorted(os.listdir(s.data_dir)) == ["dpkg"]
    # What surat makes there, or a file system's, is no reason to refuse.
    os.rename(os.path.join(s.data_dir, "dpkg"), os.path.join(s.data_dir, "lost+found"))
    s.add_domain("example.test")
    assert os.stat(s.data_dir).st_uid == pwd.getpwnam("nobody").pw_uid


def data_dir_under_srv(s):
    """Point s's data_dir at DIR/srv/mail/surat, none of which exists yet."""
    top = os.path.join(s.dir, "srv")
    data = os.path.join(top, "mail", "surat")
    with open(s.conf) as f:
        text = f.read().replace("data_dir = " + s.data_dir, "data_dir = " + data)
    with open(s.conf, "w") as f:
        f.write(text)
    return top, data


def test_data_dir_run_as_cannot_reach(make_surat):
    """data_dir = /srv/mail/surat with no /srv/mail yet: root made /srv/mail
    0750 root:root, which run_as cannot pass, so every admin command failed
    ('mkdir(...surat) failed', of a directory that was there), while
    check-config said ok and serve started to answer every message 451."""
    if os.geteuid() != 0:
        pytest.skip("needs root to test run_as")
    s = make_surat({"run_as": "nobody"}, start=False)
    let_nobody_reach(s)
    top, data = data_dir_under_srv(s)
    assert s.cli("check-config").stdout.endswith(": ok\n")
    s.cli("domain", "add", "example.test")
    assert os.stat(top).st_mode & 0o777 == 0o755
    assert os.stat(data).st_uid == pwd.getpwnam("nobody").pw_uid
    # A directory above it the admin closed: check-config and serve say so.
    os.chmod(top, 0o700)
    r = s.cli("check-config", check=False)
    assert r.returncode == 2
    assert "run_as nobody cannot reach %s: Permission denied" % os.path.join(top, "mail") \
        in r.stderr, r.stderr
    r = run("-c", s.conf, "serve")
    assert r.returncode == 1
    assert "run_as nobody cannot use data_dir %s: Permission denied" % data in r.stderr, \
        r.stderr


def test_key_of_another_pair_is_named_a_mismatch(tmp_path, tls_files):
    """The old key after a renewal (an RSA key for an RSA certificate) read
    'cannot load tls.key ...: key values mismatch', as if unreadable; a key
    of another type already read 'does not match'."""
    key = str(tmp_path / "old.key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", key], check=True, capture_output=True)
    conf = tmp_path / "surat.conf"
    conf.write_text("data_dir = %s\ntls.cert = %s\ntls.key = %s\n"
                    % (tmp_path / "data", tls_files[0], key))
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 2
    assert "tls.key %s does not match tls.cert %s" % (key, tls_files[0]) in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["submission", "imap", "pop3"])
def test_login_listener_without_tls_is_an_error(tmp_path, kind):
    """Without tls.cert these offer no STARTTLS yet require TLS to log in:
    check-config said ok, and serve refused every login ('use STARTTLS
    first')."""
    conf = tmp_path / "surat.conf"
    text = "data_dir = %s\nlisten.%s = 127.0.0.1:1%s\n" % (tmp_path / "data", kind, "587")
    conf.write_text(text)
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 2
    assert "listen.%s needs tls.cert and tls.key for STARTTLS (or allow_plaintext_auth = yes)" \
        % kind in r.stderr, r.stderr
    conf.write_text(text + "allow_plaintext_auth = yes\n")
    r = run("-c", str(conf), "check-config")
    assert r.returncode == 0, r.stderr


def test_data_dir_with_a_trailing_slash_stays_0750(make_surat):
    """'data_dir = /srv/mail/surat/': the directory above it is /srv/mail."""
    if os.geteuid() != 0:
        pytest.skip("needs root to test run_as")
    s = make_surat({"run_as": "nobody"}, start=False)
    let_nobody_reach(s)
    data = os.path.join(s.dir, "srv", "surat")
    with open(s.conf) as f:
        text = f.read().replace("data_dir = " + s.data_dir, "data_dir = " + data + "/")
    with open(s.conf, "w") as f:
        f.write(text)
    s.cli("domain", "add", "example.test")
    assert os.stat(os.path.join(s.dir, "srv")).st_mode & 0o777 == 0o755
    assert os.stat(data).st_mode & 0o777 == 0o750


def test_accounts_db_readable_by_its_owner_only(make_surat):
    """accounts.db (the password hashes) was 0644, its -wal and -shm too:
    in a data_dir the admin made 0755 with `install -d`, any local user
    read every hash."""
    s = make_surat(start=False)
    os.makedirs(s.data_dir, 0o755)
    os.chmod(s.data_dir, 0o755)
    s.add_domain("example.test")
    s.add_user("a@example.test", "pw")
    db = os.path.join(s.data_dir, "accounts.db")
    assert os.stat(db).st_mode & 0o077 == 0, oct(os.stat(db).st_mode)
    # One an earlier surat made 0644 is put right by the next open.
    os.chmod(db, 0o644)
    s.start()
    for name in ("accounts.db", "accounts.db-wal", "accounts.db-shm"):
        p = os.path.join(s.data_dir, name)
        if os.path.exists(p):
            assert os.stat(p).st_mode & 0o077 == 0, (name, oct(os.stat(p).st_mode))


def test_data_dir_with_a_trailing_slash_made_by_root(make_surat):
    """`install -d -m 0750 /srv/surat` and 'data_dir = /srv/surat/': the
    reach check took data_dir itself, still root's, for the directory
    above it, and check-config refused a data_dir serve then gives to
    run_as."""
    if os.geteuid() != 0:
        pytest.skip("needs root to test run_as")
    s = make_surat({"run_as": "nobody"}, start=False)
    let_nobody_reach(s)
    data = os.path.join(s.dir, "srv", "surat")
    os.makedirs(data)
    os.chmod(os.path.dirname(data), 0o755)
    os.chmod(data, 0o750)
    with open(s.conf) as f:
        text = f.read().replace("data_dir = " + s.data_dir, "data_dir = " + data + "/")
    with open(s.conf, "w") as f:
        f.write(text)
    r = s.cli("check-config", check=False)
    assert r.returncode == 0 and r.stdout.endswith(": ok\n"), r.stderr


def test_run_as_reach_checked_with_sigchld_ignored(make_surat):
    """A SIGCHLD its starter ignored (kept across exec) reaped the reach
    check's child: waitpid failed with ECHILD and check-config
    refused a good config."""
    if os.geteuid() != 0:
        pytest.skip("needs root to test run_as")
    s = make_surat({"run_as": "nobody"}, start=False)
    let_nobody_reach(s)
    r = run("-c", s.conf, "check-config",
            preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
    assert r.returncode == 0 and r.stdout.endswith(": ok\n"), r.stderr


def test_data_dir_parents_0755_under_a_strict_umask(make_surat):
    """Root's umask 027 (CIS) made the directories above data_dir 0750
    anyway: check-config said ok, then every command stopped as run_as
    could not reach data_dir."""
    if os.geteuid() != 0:
        pytest.skip("needs root to test run_as")
    s = make_surat({"run_as": "nobody"}, start=False)
    let_nobody_reach(s)
    top, data = data_dir_under_srv(s)
    r = run("-c", s.conf, "domain", "add", "example.test", preexec_fn=lambda: os.umask(0o027))
    assert r.returncode == 0, r.stderr
    assert [os.stat(d).st_mode & 0o777 for d in (top, os.path.dirname(data))] == [0o755] * 2


SPIN_OPEN = r"""
import os, sys, time
print("ready", flush=True)
end = time.monotonic() + 5
while time.monotonic() < end:
    try:
        os.open(sys.argv[1], os.O_RDONLY)
        print("opened")
        break
    except FileNotFoundError:
        pass
    except PermissionError:
        print("refused")
        break
"""


def test_accounts_db_never_readable_by_others(make_surat):
    """SQLite made accounts.db 0644 and the chmod came after: a local user
    who opened it meanwhile (here, most times) kept a descriptor that
    read every password hash written later."""
    if os.geteuid() != 0:
        pytest.skip("needs root to open as another user")
    nobody = pwd.getpwnam("nobody")
    s = make_surat(start=False)
    let_nobody_reach(s)
    os.makedirs(s.data_dir, 0o755)
    os.chmod(s.data_dir, 0o755)
    db = os.path.join(s.data_dir, "accounts.db")

    def as_nobody():
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    for _ in range(5):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)
        spin = subprocess.Popen(["/usr/bin/python3", "-c", SPIN_OPEN, db], text=True,
                                stdout=subprocess.PIPE, preexec_fn=as_nobody)
        assert spin.stdout.readline() == "ready\n"
        s.cli("domain", "list")
        out = spin.communicate(timeout=10)[0]
        assert out == "refused\n", out
