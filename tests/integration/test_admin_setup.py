"""What an admin setting surat up from the docs gets wrong, and what surat says.

Each test is one mistake found by following README.md and docs/config.md
on a fresh install: the error must name what is wrong, and check-config
must not say ok to a config that does not mean what it reads as.
"""
import os
import subprocess

from conftest import BIN


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

