"""The sending rate limit per authenticated user (submission.rate_limit
recipients per submission.rate_window): a token bucket per account, checked
at RCPT (450 4.7.1 once the account's recipients are used up, counting the
ones its open transaction has accepted), paid when a message is queued, one
token per recipient; an aborted transaction costs nothing. One warning line
per account and window. Other accounts, and MX mail without AUTH, are not
affected; 0 turns the limit off.

With a window of an hour nothing refills during a test. A restart keeps
the state (in accounts.db), less what refilled while the daemon was down.
"""
import os
import re
import sqlite3

from test_smtp import (Raw, bounded, make_populated, populated_data,  # noqa: F401
                       surat)
from test_submission_edge import sub

TEST_LIMIT = 60

ALICE, BOB = "alice@example.test", "bob@example.test"
LIMITED = {"submission.rate_limit": "3", "submission.rate_window": "1h"}
REFUSED = "Sending rate limit reached for this account, try again later"
BODY = b"From: %s\r\nSubject: rate\r\n\r\nhello\r\n"


def open_txn(r, rcpts, frm=ALICE):
    """MAIL and the RCPTs: the RCPT replies as (code, text)."""
    r.expect("MAIL FROM:<%s>" % frm, 250, "2.1.0")
    out = []
    for a in rcpts:
        c, t = r.cmd("RCPT TO:<%s>" % a)
        out.append((c, t[0]))
    return out


def data(r, frm=ALICE):
    r.expect("DATA", 354)
    r.send(BODY % frm.encode() + b".\r\n")
    return r.reply()


def warnings(s, user):
    return re.findall(r"rate limit reached user=%s client=\[127\.0\.0\.1\] limit=3/3600s"
                      % re.escape(user), s.log())


def test_rate_limit_per_user(make_populated):
    s = make_populated(extra=LIMITED)
    r = sub(s)
    # Two recipients, in BDAT: paid when queued.
    assert open_txn(r, [BOB, "bob+a@example.test"]) == [(250, "2.1.5 Recipient OK")] * 2
    msg = BODY % ALICE.encode()
    r.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    c, t = r.reply()
    assert c == 250, t
    # One token left: the second RCPT of this transaction is refused.
    got = open_txn(r, [BOB, "bob+b@example.test"])
    assert got[0][0] == 250
    assert got[1] == (450, "4.7.1 <bob+b@example.test>: " + REFUSED), got
    c, t = data(r)
    assert c == 250 and t[0].startswith("2.0.0 Ok: queued as"), t
    # All used: refused at the first RCPT now, on a new session too.
    assert open_txn(r, [BOB]) == [(450, "4.7.1 <%s>: %s" % (BOB, REFUSED))]
    r.expect("RSET", 250)
    r.expect("QUIT", 221)
    r2 = sub(s, kind="submissions")
    assert open_txn(r2, ["bob+c@example.test"])[0][0] == 450
    r2.expect("QUIT", 221)
    # Another account is not affected.
    r3 = sub(s, user=BOB, pw="bob-pw")
    assert open_txn(r3, [ALICE, "alice+a@example.test", "alice+b@example.test"], frm=BOB) == \
        [(250, "2.1.5 Recipient OK")] * 3
    c, t = data(r3, frm=BOB)
    assert c == 250, t
    r3.expect("QUIT", 221)
    # Three refusals of alice, one warning; none for bob.
    assert len(warnings(s, ALICE)) == 1, s.log()
    assert warnings(s, BOB) == []
    # bob and bob+a are one mailbox: one copy a message.
    s.wait_messages(BOB, 2)
    s.wait_messages(ALICE, 1)


def test_rate_limit_aborted_transaction_costs_nothing(make_populated):
    s = make_populated(extra=LIMITED)
    r = sub(s)
    # Three accepted, then RSET; and three again, then the client hangs up.
    assert [c for c, _ in open_txn(r, [BOB, "bob+a@example.test", "bob+b@example.test"])] == \
        [250] * 3
    r.expect("RSET", 250)
    assert [c for c, _ in open_txn(r, [BOB, "bob+a@example.test", "bob+b@example.test"])] == \
        [250] * 3
    r.sock.close()
    # The whole limit is still there.
    r = sub(s)
    assert [c for c, _ in open_txn(r, [BOB, "bob+a@example.test", "bob+b@example.test",
                                       "bob+c@example.test"])] == [250, 250, 250, 450]
    c, t = data(r)
    assert c == 250, t
    r.expect("QUIT", 221)


def test_rate_limit_shared_by_parallel_sessions(make_populated):
    """Sessions of one account open at once share its bucket: recipients an
    open transaction accepted are held until it ends, so another session is
    not allowed the same tokens (a stolen password on ten connections would
    otherwise send ten times the limit each time the bucket refilled). A
    transaction that ends unpaid gives its tokens back."""
    s = make_populated(extra=LIMITED)
    r1, r2, r3 = sub(s), sub(s, kind="submissions"), sub(s)
    assert [c for c, _ in open_txn(r1, [BOB, "bob+a@example.test"])] == [250, 250]
    assert [c for c, _ in open_txn(r2, ["bob+b@example.test", "bob+c@example.test"])] == \
        [250, 450]
    assert open_txn(r3, ["bob+d@example.test"]) == \
        [(450, "4.7.1 <bob+d@example.test>: " + REFUSED)]
    # r2 gives up: its token is free for r3 again.
    r2.expect("RSET", 250)
    r3.expect("RCPT TO:<bob+e@example.test>", 250)
    c, t = data(r1)
    assert c == 250, t
    c, t = data(r3)
    assert c == 250, t
    # Three paid, none left for anyone.
    assert open_txn(r2, ["bob+f@example.test"])[0][0] == 450
    for r in (r1, r2, r3):
        r.expect("QUIT", 221)
    s.wait_messages(BOB, 2)


def test_rate_limit_off(make_populated):
    s = make_populated(extra={"submission.rate_limit": "0"})
    r = sub(s)
    for _ in range(3):
        rcpts = ["bob+%d@example.test" % i for i in range(20)]
        assert [c for c, _ in open_txn(r, rcpts)] == [250] * 20
        c, t = data(r)
        assert c == 250, t
    r.expect("QUIT", 221)
    assert "rate limit reached" not in s.log()


def test_rate_limit_not_on_mx(make_populated):
    """Mail from outside to local users, without AUTH, is not counted."""
    s = make_populated(extra=LIMITED)
    r = Raw(s.port("smtp"))
    r.reply()
    r.expect("EHLO remote.test", 250)
    for _ in range(2):
        rcpts = [BOB, ALICE, "bob+a@example.test", "bob+b@example.test"]
        assert [c for c, _ in open_txn(r, rcpts, frm="x@remote.test")] == [250] * 4
        c, t = data(r, frm="x@remote.test")
        assert c == 250, t
    r.expect("QUIT", 221)


def test_rate_limit_survives_a_restart(make_populated):
    s = make_populated(extra=LIMITED)
    r = sub(s)
    assert [c for c, _ in open_txn(r, [BOB, "bob+a@example.test", "bob+b@example.test"])] == \
        [250] * 3
    c, t = data(r)
    assert c == 250, t
    r.expect("QUIT", 221)
    r = sub(s, user=BOB, pw="bob-pw")
    assert [c for c, _ in open_txn(r, [ALICE], frm=BOB)] == [250]
    c, t = data(r, frm=BOB)
    assert c == 250, t
    r.expect("QUIT", 221)
    assert s.stop() == 0
    s.start()
    # alice has used her three, bob has two left: a restart gives nobody more.
    r = sub(s)
    assert open_txn(r, [BOB]) == [(450, "4.7.1 <%s>: %s" % (BOB, REFUSED))]
    r.expect("QUIT", 221)
    r = sub(s, user=BOB, pw="bob-pw")
    assert [c for c, _ in open_txn(r, [ALICE, "alice+a@example.test", "alice+b@example.test"],
                                   frm=BOB)] == [250, 250, 450]
    r.expect("QUIT", 221)
    # Down for longer than the window (the saved time set back two hours):
    # refilled meanwhile, so alice may send her three again.
    assert s.stop() == 0
    db = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"))
    with db:
        saved = dict(db.execute("SELECT key, value FROM kept WHERE kind = 'ratelimit'"))
        assert saved == {ALICE: 3, BOB: 1}, saved   # recipients used
        db.execute("UPDATE kept SET at = at - 7200000 WHERE kind = 'ratelimit' AND key = ?",
                   (ALICE,))
    db.close()
    s.start()
    r = sub(s)
    assert [c for c, _ in open_txn(r, [BOB, "bob+a@example.test", "bob+b@example.test",
                                       "bob+c@example.test"])] == [250, 250, 250, 450]
    r.expect("QUIT", 221)
    assert "cannot keep" not in s.log() and "cannot read" not in s.log()


def test_rcpts_refused_by_the_rate_limit_are_junk_commands(make_populated):
    """450 4.7.1 is no error of the client's, but an RCPT refused by the rate
    limit moves no mail: past smtp.max_junk_commands each counts as an error,
    or a client could go on sending RCPTs for ever once told to wait."""
    s = make_populated(extra=dict(LIMITED, **{"smtp.max_junk_commands": "2",
                                             "smtp.max_errors": "1"}))
    r = sub(s)
    assert open_txn(r, [BOB, BOB, BOB]) == [(250, "2.1.5 Recipient OK")] * 3
    r.send(b"RCPT TO:<bob+x@example.test>\r\n" * 5)
    got = [r.reply() for _ in range(3)]
    assert [c for c, _ in got] == [450, 450, 421], got
    assert got[2][1][0].startswith("4.7.0"), got
    assert r.closed()
