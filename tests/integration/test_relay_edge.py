"""SMTP in: adversarial tests that surat is never an open relay.

What test_smtp_policy.py and test_smtp_edge.py do not already cover:
routing tricks in the local part (percent hack, bang paths, quoted '@',
+tags) with and without a catch-all, source routes and address literals,
look-alike, IDN and UTS #46-mapped domains, postmaster in every form
(and with no local domain at all), aliases and catch-alls that forward to
remote addresses (allowed: only the alias may send mail out), control
bytes inside paths, refusals across RSET/HELO, failed AUTH (sequential and
pipelined, with and without the failure delay), AUTH on the MX port (it
does allow relaying: the README's rule is "without AUTH only local
recipients", and AUTH is only offered after STARTTLS), STARTTLS forgetting a
plaintext AUTH, an account deleted mid-transaction, a domain deleted while
a session is open, BDAT, and VRFY/EXPN revealing nothing.

What left the server is checked with `surat queue list`: mail for
remote.test is routed to a closed loopback port, so anything accepted for
it stays there, deferred.
"""
import base64
import re
import time

import pytest

from conftest import free_port
from test_smtp import (Raw, bounded, make_populated, populated_data,  # noqa: F401
                       split_stored, stored_one, surat)
from test_smtp_edge import replies

TEST_LIMIT = 30     # per test (read by the `bounded` fixture)

ALICE = "alice@example.test"
BOB = "bob@example.test"


# ---------------------------------------------------------------- helpers

@pytest.fixture
def relay(make_populated):
    """A daemon that tolerates many refusals in one session, and whose mail
    for remote.test, remote2.test and other.test stays queued: routed to a
    closed port."""
    dead = "127.0.0.1:%d" % free_port()
    return make_populated(extra={"smtp.max_errors": "200", "route.remote.test": dead,
                                 "route.remote2.test": dead, "route.other.test": dead})


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain(authz, user, pw):
    return b64("%s\0%s\0%s" % (authz, user, pw))


def session(s, kind="smtp", frm="s@remote.test", utf8=False):
    r = Raw(s.port(kind), tls=(kind == "submissions"))
    r.greet()
    if frm is not None:
        r.expect("MAIL FROM:<%s>%s" % (frm, " SMTPUTF8" if utf8 else ""), 250, "2.1.0")
    return r


def tls_session(s, kind="smtp"):
    r = Raw(s.port(kind))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    return r


def check(r, cases):
    """Send each RCPT path, compare (code, enhanced) with what is expected."""
    got = []
    for path, code, enh in cases:
        c, t = r.cmd("RCPT TO:" + path)
        got.append((path, c, t[-1].split()[0]))
    want = [(p, c, e) for p, c, e in cases]
    assert got == want


def queue_list(s):
    return s.cli("queue", "list").stdout


def queued(s):
    """Messages in the queue, notices included (their ids end in -s<hex>, -b, -d)."""
    out = queue_list(s)
    m = re.search(r"^(\d+) messages? in the queue", out, re.M)
    assert m, out
    ids = re.findall(r"^([0-9a-f]{16}(?:-[bd]|-s[0-9a-f]*)?)\s", out, re.M)
    assert len(ids) == int(m.group(1)), out
    return ids


def queue_rcpts(s):
    """(address, 'local'|'remote') of every recipient still in the queue."""
    return re.findall(r"^\s+<([^>\s]*)>\s+(local|remote)\s", queue_list(s), re.M)


def remote_queued(s):
    return sorted(a for a, kind in queue_rcpts(s) if kind == "remote")


def wait_remote_queued(s, n, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = remote_queued(s)
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise AssertionError("queue:\n" + queue_list(s))


def nothing_left(s, timeout=10):
    """Local deliveries done and nothing queued for anywhere else."""
    deadline = time.time() + timeout
    while queued(s) and time.time() < deadline:
        time.sleep(0.1)
    assert queued(s) == [], queue_list(s)


def nothing_queued(s, settle=0.3):
    """Refused sessions: nothing was ever queued."""
    time.sleep(settle)
    assert queued(s) == [], queue_list(s)


def data(r, payload=b"Subject: relay probe\r\n\r\nx\r\n"):
    r.expect("DATA", 354)
    r.send(payload + b".\r\n")
    return r.reply()


def access_rcpts(s):
    return re.findall(r"rcpts=(\S+)", s.log())


# ---------------------------------------------------------------- local-part routing

def test_local_part_routing_tricks_never_relay(relay):
    """Percent hack, bang paths, quoted '@' and +tags with remote parts: each is
    a local part of a local domain (550 unless it resolves, and then only
    locally) or a remote domain (554)."""
    r = session(relay)
    check(r, [
        ("<victim%remote.test@example.test>", 550, "5.1.1"),
        ("<victim%remote.test%example.test@example.test>", 550, "5.1.1"),
        ("<remote.test!victim@example.test>", 550, "5.1.1"),
        ("<example.test!remote.test!victim@example.test>", 550, "5.1.1"),
        ('<"victim@remote.test"@example.test>', 550, "5.1.1"),
        ('<"victim@remote.test">', 501, "5.1.3"),
        ('<"@remote.test:victim"@example.test>', 550, "5.1.1"),
        ('<"victim%remote.test"@example.test>', 550, "5.1.1"),
        ("<alice+x@remote.test>", 554, "5.7.1"),
        ("<alice@remote.test>", 554, "5.7.1"),
        ("<victim@remote.test%example.test>", 501, "5.1.3"),
        ("<victim@remote.test@example.test>", 501, "5.1.3"),
        # A +tag whose tag looks like a route resolves to alice, locally.
        ("<alice+victim%remote.test@example.test>", 250, "2.1.5"),
        ("<alice+remote.test!victim@example.test>", 250, "2.1.5"),
    ])
    c, t = data(r)
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    stored = stored_one(relay, ALICE)
    assert split_stored(stored)[0] == ALICE
    nothing_left(relay)
    assert relay.messages(BOB) == []


def test_catchall_takes_routing_tricks_locally(relay):
    """With a catch-all the routing forms are accepted, but for the catch-all's
    local target: never for the host they name."""
    relay.cli("alias", "add", "@example.test", BOB)
    r = session(relay)
    check(r, [
        ("<victim%remote.test@example.test>", 250, "2.1.5"),
        ("<remote.test!victim@example.test>", 250, "2.1.5"),
        ("<victim%remote2.test%example.test@example.test>", 250, "2.1.5"),
        # Not a local part an account could have: no catch-all either.
        ('<"victim@remote.test"@example.test>', 550, "5.1.1"),
        ("<victim@remote.test>", 554, "5.7.1"),
        ("<victim@sub.example.test>", 554, "5.7.1"),
    ])
    c, t = data(r)
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    stored = stored_one(relay, BOB)
    assert split_stored(stored)[0] == BOB
    nothing_left(relay)
    assert len(relay.messages(BOB)) == 1
    assert relay.messages(ALICE) == []


def test_source_routes_and_literals_never_relay(relay):
    """A source route is dropped: only the final mailbox counts (RFC 5321
    C). Address literals are never local domains: at ours only postmaster
    is taken (test_smtp_rfc.py), and another address's is not ours."""
    r = session(relay)
    check(r, [
        ("<@example.test,@mx.example.test:victim@remote.test>", 554, "5.7.1"),
        ("<@[127.0.0.1]:victim@remote.test>", 554, "5.7.1"),
        ("<@example.test:victim%remote.test@example.test>", 550, "5.1.1"),
        ("<@example.test:postmaster>", 501, "5.1.3"),
        ("<@remote.test:@example.test:alice@example.test>", 501, "5.1.3"),
        ("<postmaster@[127.0.0.2]>", 554, "5.7.1"),
        ("<alice@[127.0.0.1]>", 554, "5.7.1"),
        ("<alice@[IPv6:::ffff:127.0.0.1]>", 554, "5.7.1"),
        ("<alice@[IPv6:0:0:0:0:0:0:0:1]>", 554, "5.7.1"),
        ("<alice@[0.0.0.0]>", 554, "5.7.1"),
        ("<alice@[127.1]>", 501, "5.1.3"),
        ("<alice@[example.test]>", 501, "5.1.3"),
        ("<alice@[IPv6:example.test]>", 501, "5.1.3"),
    ])
    r.expect("DATA", 554, "5.5.1")
    r.expect("QUIT", 221)
    r.close()
    nothing_queued(relay)


def test_look_alike_domains_never_local(relay):
    """Only the exact local domain (any ASCII case) is local."""
    r = session(relay)
    check(r, [
        ("<alice@EXAMPLE.TEST>", 250, "2.1.5"),
        ("<alice@mx.example.test>", 554, "5.7.1"),        # our host name
        ("<alice@sub.example.test>", 554, "5.7.1"),
        ("<alice@xexample.test>", 554, "5.7.1"),
        ("<alice@remote-example.test>", 554, "5.7.1"),
        ("<alice@example.test-remote.test>", 554, "5.7.1"),
        ("<alice@example.test.remote.test>", 554, "5.7.1"),
        ("<alice@example.tes>", 554, "5.7.1"),
        ("<alice@example>", 554, "5.7.1"),
        ("<alice@test>", 554, "5.7.1"),
        ("<alice@localhost>", 554, "5.7.1"),
        ("<alice@example.test..>", 501, "5.1.3"),
        ("<alice@.example.test>", 501, "5.1.3"),
        ("<alice@example_test>", 501, "5.1.3"),
        ("<alice@example.test\\>", 501, "5.1.3"),
    ])
    c, t = data(r)
    assert c == 250, t
    r.close()
    stored_one(relay, ALICE)
    nothing_left(relay)


# ---------------------------------------------------------------- IDN, SMTPUTF8

def test_idn_domain_local_in_both_forms_look_alikes_not(relay):
    relay.add_domain("b\u00fccher.test")
    relay.add_user("kim@b\u00fccher.test", "kim-pw")
    r = session(relay, utf8=True)
    check(r, [
        ("<kim@b\u00fccher.test>", 250, "2.1.5"),
        ("<kim@xn--bcher-kva.test>", 250, "2.1.5"),
        ("<kim@XN--BCHER-KVA.TEST>", 250, "2.1.5"),
        ("<kim@bucher.test>", 554, "5.7.1"),
        ("<kim@b\u00fccher.test.remote.test>", 554, "5.7.1"),
        ("<kim@xn--bcher-kva.test.remote.test>", 554, "5.7.1"),
        ("<victim@r\u00e9mote.test>", 554, "5.7.1"),
        ("<alice@ex\u00e4mple.test>", 554, "5.7.1"),
        ("<\u00e5lice@example.test>", 550, "5.1.1"),
        ("<kim@b\u00fccher.test\u3002remote.test>", 554, "5.7.1"),
    ])
    c, t = data(r)
    assert c == 250, t
    r.close()
    assert len(relay.wait_messages("kim@b\u00fccher.test", 1)) == 1
    nothing_left(relay)
    # Without SMTPUTF8 a U-label is refused, the A-label is fine.
    r = session(relay)
    check(r, [("<kim@b\u00fccher.test>", 553, "5.6.7"),
              ("<victim@r\u00e9mote.test>", 553, "5.6.7"),
              ("<kim@xn--bcher-kva.test>", 250, "2.1.5")])
    r.close()


def test_uts46_mapped_spellings_of_a_local_domain_stay_local(relay):
    """The domain check maps U-labels with libidn2's UTS #46 processing: a
    fullwidth letter, an ideographic full stop, a soft hyphen or a zero-width
    space spell the local domain itself, and are taken as it (delivered to the
    local mailbox, never sent out). A homoglyph from another script, or a
    mapped '@' or '%', is another (remote) domain."""
    r = session(relay, utf8=True)
    check(r, [
        ("<alice@\uff45xample.test>", 250, "2.1.5"),          # fullwidth e
        ("<alice@example\u3002test>", 250, "2.1.5"),          # ideographic full stop
        ("<alice@exam\u00adple.test>", 250, "2.1.5"),         # soft hyphen
        ("<alice@example.test\u200b>", 250, "2.1.5"),         # zero-width space
        ("<alice@\u0435xample.test>", 554, "5.7.1"),          # Cyrillic ie
        ("<alice@exa\u200dmple.test>", 554, "5.7.1"),         # zero-width joiner
        ("<alice@EXAMPLE.TEST\u3002>", 554, "5.7.1"),
        ("<alice@example\uff0etest\uff0eremote.test>", 554, "5.7.1"),
        ("<alice@remote.test\uff20example.test>", 554, "5.7.1"),   # fullwidth '@'
        ("<alice@remote\uff05example.test>", 554, "5.7.1"),        # fullwidth '%'
    ])
    c, t = data(r)
    assert c == 250, t
    r.close()
    stored = stored_one(relay, ALICE)
    assert split_stored(stored)[0] == ALICE
    nothing_left(relay)
    assert len(relay.messages(ALICE)) == 1


# ---------------------------------------------------------------- postmaster

def test_postmaster_forms(relay):
    r = session(relay)
    check(r, [
        ("<postmaster@remote.test>", 554, "5.7.1"),
        ("<Postmaster@Remote.Test>", 554, "5.7.1"),
        ("<postmaster@sub.example.test>", 554, "5.7.1"),
        ("<postmaster@mx.example.test>", 250, "2.1.5"),      # our host name
        ("<PostMaster@MX.Example.Test>", 250, "2.1.5"),
        ("<postmaster@xmx.example.test>", 554, "5.7.1"),
        ("<abuse@mx.example.test>", 554, "5.7.1"),           # only postmaster
        ("<pOsTmAsTeR>", 250, "2.1.5"),
        ('<"postmaster">', 250, "2.1.5"),
        ('<"Post\\master">', 250, "2.1.5"),
        ("<POSTMASTER@EXAMPLE.TEST>", 250, "2.1.5"),
        ('<"postmaster@remote.test">', 501, "5.1.3"),
        ('<"postmaster"@remote.test>', 554, "5.7.1"),
        ("<postmaster%remote.test@example.test>", 550, "5.1.1"),
        ("<postmaster.>", 501, "5.1.3"),
        ("<postmasterx>", 501, "5.1.3"),
    ])
    c, t = data(r)
    assert c == 250, t
    r.close()
    assert split_stored(stored_one(relay, ALICE))[0] == ALICE
    nothing_left(relay)
    assert "postmaster@remote.test" not in " ".join(access_rcpts(relay))


def test_postmaster_reached_through_an_alias(relay):
    """postmaster@ with no user or alias of its own reaches the domain's
    oldest user (RFC 5321 4.5.1) when an alias names it too: the alias is
    accepted, and a list with it among its members loses nobody's copy.
    Still nobody may send as the alias."""
    relay.cli("alias", "add", "help@example.test", "postmaster@example.test")
    relay.cli("alias", "add", "team@example.test", BOB, "postmaster@example.test")
    r = session(relay)
    check(r, [("<help@example.test>", 250, "2.1.5"), ("<team@example.test>", 250, "2.1.5"),
              ("<postmaster+x@example.test>", 250, "2.1.5")])
    c, t = data(r)
    assert c == 250, t
    r.close()
    assert split_stored(stored_one(relay, ALICE))[0] == ALICE
    stored_one(relay, BOB)
    nothing_left(relay)
    r = tls_session(relay, "submission")
    r.expect("AUTH PLAIN " + plain("", ALICE, "alice-pw"), 235, "2.7.0")
    r.expect("MAIL FROM:<help@example.test>", 553, "5.7.1")
    r.close()


def test_postmaster_with_no_local_domain_reaches_nobody(make_surat):
    """No domain at all: <postmaster> is postmaster@ the host name, which
    resolves to nobody (550), and is never relayed."""
    s = make_surat(extra={"smtp.max_errors": "50"})
    r = session(s)
    check(r, [("<postmaster>", 550, "5.1.1"),
              ("<postmaster@mx.example.test>", 550, "5.1.1"),
              ("<postmaster@example.test>", 554, "5.7.1")])
    r.expect("DATA", 554, "5.5.1")
    r.close()
    nothing_queued(s)


# ---------------------------------------------------------------- aliases that forward

def test_alias_to_remote_forwards_only_to_its_target(relay):
    """An alias pointing off-site is the admin's forwarding: the MX accepts it
    and queues the alias's target, and nothing else remote."""
    relay.cli("alias", "add", "fwd@example.test", "friend@remote.test")
    relay.cli("alias", "add", "@example.test", "friend@remote.test")
    r = session(relay)
    check(r, [
        ("<fwd@example.test>", 250, "2.1.5"),
        ("<fwd+victim%remote2.test@example.test>", 250, "2.1.5"),
        ("<victim%remote2.test@example.test>", 250, "2.1.5"),     # catch-all
        ("<remote2.test!victim@example.test>", 250, "2.1.5"),     # catch-all
        ("<friend@remote.test>", 554, "5.7.1"),
        ("<victim@remote2.test>", 554, "5.7.1"),
    ])
    c, t = data(r)
    assert c == 250, t
    r.close()
    assert wait_remote_queued(relay, 1) == ["friend@remote.test"]
    time.sleep(0.3)
    assert remote_queued(relay) == ["friend@remote.test"]
    assert len(queued(relay)) == 1
    # The queue file names the alias as the original recipient.
    show = relay.cli("queue", "show", queued(relay)[0]).stdout
    assert "fwd@example.test" in show, show
    # Aliases gone: the same addresses are unknown users now.
    relay.cli("alias", "del", "fwd@example.test")
    relay.cli("alias", "del", "@example.test")
    r = session(relay)
    check(r, [("<fwd@example.test>", 550, "5.1.1"),
              ("<victim%remote2.test@example.test>", 550, "5.1.1")])
    r.close()


# ---------------------------------------------------------------- bytes, spaces

def test_control_bytes_and_spaces_in_paths(relay):
    """Nothing between or around the brackets smuggles a second address."""
    r = session(relay)
    cases = [
        (b"RCPT TO:<alice@example.test\r@remote.test>", 500),
        (b"RCPT TO:<alice@example.test\n@remote.test>", 500),
        (b"RCPT TO:<alice@example.test\x00@remote.test>", 500),
        (b"RCPT TO:<alice@example.test\t>", 501),
        (b"RCPT TO:<alice@example.test >", 501),
        (b"RCPT TO:< alice@example.test>", 501),
        (b"RCPT TO:<alice @example.test>", 501),
        (b"RCPT TO:<alice@example.test> <victim@remote.test>", 501),
        (b"RCPT TO:<alice@example.test>,<victim@remote.test>", 501),
        (b"RCPT TO:<victim@remote.test,alice@example.test>", 501),
        (b"RCPT TO:<alice@example.test>\r\x00RCPT TO:<victim@remote.test>", 500),
        (b"RCPT TO:alice@example.test", 501),
        (b"RCPT TO:victim@remote.test", 501),
        (b"RCPT TO:<<victim@remote.test>>", 501),
        (b"RCPT TO:<victim@remote.test> ORCPT=rfc822;alice@example.test", 554),
    ]
    got = []
    for line, code in cases:
        r.send(line + b"\r\n")
        c, t = r.reply()
        got.append((line, c))
    assert got == cases
    r.expect("DATA", 554, "5.5.1")
    r.close()
    nothing_queued(relay)


def test_refusal_survives_rset_helo_and_second_ehlo(relay):
    r = Raw(relay.port("smtp"))
    assert r.reply()[0] == 220
    r.expect("HELO client.test", 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<victim@remote.test>", 554, "5.7.1")
    r.expect("RSET", 250)
    r.expect("RCPT TO:<victim@remote.test>", 503, "5.5.1")
    r.expect("MAIL FROM:<alice@example.test>", 250)       # a local sender changes nothing
    r.expect("RCPT TO:<victim@remote.test>", 554, "5.7.1")
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("EHLO client.test", 250)                      # resets the transaction
    r.expect("DATA", 503, "5.5.1")
    r.expect("MAIL FROM:<>", 250)
    r.expect("RCPT TO:<victim@remote.test>", 554, "5.7.1")
    r.expect("DATA", 554, "5.5.1")
    r.close()
    nothing_queued(relay)
    assert relay.messages(ALICE) == []


# ---------------------------------------------------------------- AUTH and relaying

def test_failed_auth_on_mx_gives_no_relay(relay):
    r = tls_session(relay)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    # AUTH is refused inside a transaction; RSET and try the ways that fail.
    r.expect("AUTH PLAIN " + plain("", ALICE, "alice-pw"), 503, "5.5.1")
    r.expect("RSET", 250)
    for line, code, enh in (("AUTH PLAIN " + plain("", ALICE, "wrong"), 535, "5.7.8"),
                            ("AUTH PLAIN " + plain("", "nobody@example.test", "x"), 535, "5.7.8"),
                            ("AUTH PLAIN " + plain(BOB, ALICE, "alice-pw"), 535, "5.7.8"),
                            ("AUTH PLAIN " + plain("", "victim@remote.test", "x"), 535, "5.7.8"),
                            ("AUTH PLAIN " + plain("", "alice", "alice-pw"), 535, "5.7.8"),
                            ("AUTH PLAIN =", 501, "5.5.2")):
        r.expect(line, code, enh)
        r.expect("MAIL FROM:<s@remote.test>", 250)
        r.expect("RCPT TO:<victim@remote.test>", 554, "5.7.1")
        r.expect("RSET", 250)
    r.expect("AUTH LOGIN", 334)
    r.expect(b64(ALICE), 334)
    r.expect("*", 501, "5.0.0")
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<victim@remote.test>", 554, "5.7.1")
    r.expect("DATA", 554, "5.5.1")
    r.close()
    nothing_queued(relay)


@pytest.mark.parametrize("delay", ["0", "1"])
def test_pipelined_failed_auth_then_relay_attempt(make_populated, delay):
    """A client that does not wait for AUTH's answer: the pipelined commands
    are read only after it (with and without the failure delay)."""
    dead = "127.0.0.1:%d" % free_port()
    s = make_populated(extra={"auth.fail_delay": delay, "route.remote.test": dead})
    r = tls_session(s)
    r.send("AUTH PLAIN %s\r\nMAIL FROM:<alice@example.test>\r\n"
           "RCPT TO:<victim@remote.test>\r\nRCPT TO:<victim2@remote.test>\r\n"
           "BDAT 7 LAST\r\nhello\r\nNOOP\r\n" % plain("", ALICE, "wrong"))
    got = [c for c, _ in replies(r, 6)]
    assert got == [535, 250, 554, 554, 554, 250], got
    r.close()
    # Submission: the same, and MAIL needs AUTH.
    r = Raw(s.port("submissions"), tls=True)
    r.greet()
    r.send("AUTH PLAIN %s\r\nMAIL FROM:<alice@example.test>\r\n"
           "RCPT TO:<victim@remote.test>\r\nBDAT 7 LAST\r\nhello\r\nNOOP\r\n"
           % plain("", ALICE, "wrong"))
    got = replies(r, 5)
    assert [c for c, _ in got] == [535, 530, 503, 503, 250], got
    r.close()
    nothing_queued(s)


@pytest.mark.parametrize("kind", ["smtp", "submissions"])
def test_authenticated_relaying(relay, kind):
    """An authenticated user may send anywhere. On the MX listener too: AUTH
    is offered there after STARTTLS, and the README's rule is "without AUTH
    only local recipients", so this is the documented choice, not a hole.
    Authentication changes nothing for local domains: routing forms in them
    are still local parts (550), never a way out."""
    if kind == "smtp":
        r = tls_session(relay)
        r.expect("MAIL FROM:<s@remote.test>", 250)
        r.expect("RCPT TO:<victim@remote.test>", 554, "5.7.1")
        r.expect("RSET", 250)
    else:
        r = Raw(relay.port(kind), tls=True)
        r.greet()
    r.auth(ALICE, "alice-pw")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    check(r, [
        ("<friend@remote.test>", 250, "2.1.5"),
        ("<victim%remote2.test@example.test>", 550, "5.1.1"),
        ('<"victim@remote2.test"@example.test>', 550, "5.1.1"),
        ("<remote2.test!victim@example.test>", 550, "5.1.1"),
        ("<nobody@example.test>", 550, "5.1.1"),
        ("<postmaster>", 250, "2.1.5"),
    ])
    c, t = data(r, b"From: alice@example.test\r\nSubject: out\r\n\r\nx\r\n")
    assert c == 250, t
    r.close()
    assert wait_remote_queued(relay, 1) == ["friend@remote.test"]
    stored_one(relay, ALICE)            # <postmaster>: alice, the oldest user
    time.sleep(0.3)
    assert remote_queued(relay) == ["friend@remote.test"]
    show = relay.cli("queue", "show", queued(relay)[0]).stdout
    assert "user=alice@example.test" in show, show


def test_starttls_forgets_plaintext_auth(make_populated):
    """allow_plaintext_auth: AUTH before STARTTLS, then STARTTLS (RFC 3207
    4.2): the session is anonymous again and may not relay."""
    dead = "127.0.0.1:%d" % free_port()
    s = make_populated(extra={"allow_plaintext_auth": "yes", "route.remote.test": dead})
    r = Raw(s.port("smtp"))
    r.greet()
    r.auth(ALICE, "alice-pw")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<friend@remote.test>", 250)
    r.starttls()
    ehlo = r.expect("EHLO client.test", 250)
    assert "AUTH PLAIN LOGIN" in ehlo, ehlo
    r.expect("DATA", 503, "5.5.1")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<friend@remote.test>", 554, "5.7.1")
    r.send("BDAT 3 LAST\r\nabc")
    c, t = r.reply()
    assert c == 554, t
    r.close()
    r = Raw(s.port("submission"))
    r.greet()
    r.auth(ALICE, "alice-pw")
    r.starttls()
    r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    r.expect("RCPT TO:<friend@remote.test>", 503, "5.5.1")
    r.close()
    nothing_queued(s)


def test_submission_without_auth_pipelined_relay_attempt(relay):
    """Plaintext submission, no AUTH: a pipelined transaction with a BDAT
    chunk is refused throughout, and the chunk is not taken for commands."""
    r = Raw(relay.port("submission"))
    r.greet()
    chunk = "RCPT TO:<victim2@remote.test>\r\n\r\n"
    r.send("MAIL FROM:<alice@example.test>\r\nRCPT TO:<victim@remote.test>\r\n"
           "BDAT %d LAST\r\n%sAUTH PLAIN %s\r\nNOOP\r\n"
           % (len(chunk), chunk, plain("", ALICE, "alice-pw")))
    got = replies(r, 5)
    assert [(c, t.split()[0]) for c, t in got] == [(530, "5.7.0"), (503, "5.5.1"),
                                                   (503, "5.5.1"), (538, "5.7.11"),
                                                   (250, "2.0.0")], got
    r.close()
    nothing_queued(relay)


def test_account_deleted_mid_transaction_relays_nothing(relay):
    relay.add_user("carol@example.test", "carol-pw")
    r = Raw(relay.port("submissions"), tls=True)
    r.greet()
    r.auth("carol@example.test", "carol-pw")
    r.expect("MAIL FROM:<carol@example.test>", 250)
    r.expect("RCPT TO:<friend@remote.test>", 250)
    relay.cli("user", "del", "carol@example.test")
    # Checked at MAIL and once the message is in: RCPT still answers 250.
    r.expect("RCPT TO:<friend2@remote.test>", 250)
    r.expect("DATA", 354)
    r.send(b"From: carol@example.test\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert (c, t[-1].split()[0]) == (421, "4.7.0"), (c, t)
    assert r.closed()
    r.close()
    nothing_queued(relay)


# ---------------------------------------------------------------- domain deleted

def test_domain_deleted_while_session_open(relay):
    relay.add_domain("other.test")
    relay.cli("alias", "add", "info@other.test", ALICE)
    relay.cli("alias", "add", "@other.test", BOB)
    relay.cli("alias", "add", "fwd@example.test", "info@other.test")
    r = session(relay)
    r.expect("RCPT TO:<info@other.test>", 250, "2.1.5")
    r.expect("RCPT TO:<anyone@other.test>", 250, "2.1.5")
    # An alias of another domain still points into it: refused until the
    # admin decides (else it would quietly turn into remote forwarding).
    res = relay.cli("domain", "del", "other.test", check=False)
    assert res.returncode == 1, res
    assert "fwd@example.test -> info@other.test; delete them first" in res.stderr, res.stderr
    relay.cli("alias", "del", "fwd@example.test", "info@other.test")
    relay.cli("domain", "del", "other.test")
    check(r, [("<info@other.test>", 554, "5.7.1"),
              ("<anyone@other.test>", 554, "5.7.1"),
              ("<postmaster@other.test>", 554, "5.7.1")])
    # What was accepted before was resolved then, to local mailboxes.
    c, t = data(r)
    assert c == 250, t
    r.close()
    assert split_stored(stored_one(relay, ALICE))[0] == ALICE
    assert split_stored(stored_one(relay, BOB))[0] == BOB
    nothing_left(relay)
    # An alias the admin points into the deleted domain forwards there
    # (other.test is just another remote domain), reached only through it.
    relay.cli("alias", "add", "fwd@example.test", "info@other.test")
    r = session(relay)
    r.expect("RCPT TO:<fwd@example.test>", 250, "2.1.5")
    r.expect("RCPT TO:<info@other.test>", 554, "5.7.1")
    c, t = data(r)
    assert c == 250, t
    r.close()
    assert wait_remote_queued(relay, 1) == ["info@other.test"]


# ---------------------------------------------------------------- VRFY, EXPN

def test_vrfy_expn_reveal_nothing(relay):
    relay.cli("alias", "add", "team@example.test", ALICE, BOB)
    r = Raw(relay.port("smtp"))
    assert r.reply()[0] == 220
    answers = set()
    for who in ("alice", ALICE, "nobody@example.test", "team@example.test", "postmaster",
                "victim@remote.test", "<alice@example.test>", "Alice Liddell"):
        c, t = r.cmd("VRFY " + who)
        answers.add((c, tuple(t)))
    assert len(answers) == 1, answers
    c, t = answers.pop()
    assert c == 252 and t[-1].startswith("2.0.0 "), (c, t)
    r.expect("EHLO client.test", 250)
    expn = set()
    for who in ("team@example.test", "nobody@example.test", "alice"):
        c, t = r.cmd("EXPN " + who)
        expn.add((c, tuple(t)))
    assert expn == {(502, ("5.5.1 EXPN not available",))}
    r.close()


# ---------------------------------------------------------------- long addresses

def test_long_addresses_at_the_limits(relay):
    """Long local domains and paths at the 64/256-octet limits: nothing is cut
    so that a remote address would look local, or the other way round."""
    dom = ".".join(["d" * 60] * 3) + ".test"        # 188 octets, a local domain
    relay.add_domain(dom)
    relay.cli("alias", "add", "a@" + dom, ALICE)
    l64 = "l" * 64
    r = session(relay)
    check(r, [
        ("<a@%s>" % dom, 250, "2.1.5"),
        ("<%s@%s>" % (l64, dom), 550, "5.1.1"),
        ("<a@%s.remote.test>" % dom, 554, "5.7.1"),
        ("<a@x%s>" % dom, 554, "5.7.1"),
        ("<a@%s>" % dom[1:], 554, "5.7.1"),
        ("<%s@remote.test>" % l64, 554, "5.7.1"),
        ("<alice+%s@example.test>" % ("t" * 58), 250, "2.1.5"),   # local part of 64
        ("<alice+%s@example.test>" % ("t" * 59), 501, "5.1.3"),
        ("<a@%s>" % ".".join(["r" * 63] * 3 + ["r" * 58, "test"]), 501, "5.1.3"),
        ("<%s@%s>" % (l64, ".".join(["r" * 63] * 3) + ".te"), 501, "5.1.3"),
    ])
    c, t = data(r)
    assert c == 250, t
    r.close()
    assert split_stored(stored_one(relay, ALICE))[0] == ALICE
    nothing_left(relay)


# ---------------------------------------------------------------- notices

def test_success_notice_to_forged_sender_never_relays_the_body(relay):
    """An unauthenticated client can make us write to any address it gives as
    sender (RFC 3461 NOTIFY=SUCCESS): that notice carries the header section
    only, so the body is never relayed that way, RET=FULL or not; and a sender
    written as a routing trick in a local domain gets no notice at all (it
    is a local address: refused at local delivery, dropped)."""
    senders = ["victim@remote.test> RET=FULL ENVID=x", '"victim@remote2.test"@example.test',
               "victim%remote2.test@example.test", "remote2.test!victim@example.test",
               "@remote2.test:victim@example.test"]
    for frm in senders:
        r = session(relay, frm=frm)
        r.expect("RCPT TO:<alice@example.test> NOTIFY=SUCCESS", 250, "2.1.5")
        c, t = data(r, b"Subject: hello\r\n\r\nBODY-PAYLOAD-7f3a\r\n")
        assert c == 250, t
        r.close()
    relay.wait_messages(ALICE, len(senders))
    deadline = time.time() + 10
    while time.time() < deadline and relay.log().count("status=bounced relay=local") < 4:
        time.sleep(0.1)
    assert relay.log().count("status=bounced relay=local") == 4, relay.log()[-3000:]
    assert wait_remote_queued(relay, 1) == ["victim@remote.test"]
    ids = queued(relay)
    assert len(ids) == 1 and re.search(r"-s[0-9a-f]+$", ids[0]), ids
    show = relay.cli("queue", "show", ids[0]).stdout
    assert "text/rfc822-headers" in show and "Subject: hello" in show, show
    assert "BODY-PAYLOAD-7f3a" not in show, show
    assert "remote2" not in queue_list(relay)


def test_failure_notice_to_forged_sender_never_relays_the_body(relay):
    """The same for failures an unauthenticated client can cause at will: a
    Delivered-To: naming the local recipient fails its delivery at once
    (5.4.6, a loop). The bounce to a remote sender must not carry the body,
    or anyone could have any text sent to anyone from us by naming them as
    sender (backscatter). A local sender's bounce still gets it whole."""
    r = session(relay, frm="victim@remote.test")
    r.expect("RCPT TO:<alice@example.test>", 250, "2.1.5")
    c, t = data(r, b"Delivered-To: alice@example.test\r\nSubject: hello\r\n\r\n"
                   b"BODY-PAYLOAD-9c1e\r\n")
    assert c == 250, t
    r.close()
    assert wait_remote_queued(relay, 1) == ["victim@remote.test"]
    ids = queued(relay)
    assert len(ids) == 1 and ids[0].endswith("-b"), ids
    show = relay.cli("queue", "show", ids[0]).stdout
    assert "5.4.6" in show and "Subject: hello" in show, show
    assert "text/rfc822-headers" in show, show
    assert "BODY-PAYLOAD-9c1e" not in show, show
    # A local sender's bounce returns the message whole.
    r = session(relay, frm=BOB)
    r.expect("RCPT TO:<alice@example.test>", 250, "2.1.5")
    c, t = data(r, b"Delivered-To: alice@example.test\r\nSubject: local\r\n\r\n"
                   b"BODY-LOCAL-4d2a\r\n")
    assert c == 250, t
    r.close()
    uids = relay.wait_messages(BOB, 1)
    assert b"BODY-LOCAL-4d2a" in relay.message(BOB, uids[0])
