"""SMTP in: what a 250 promises survives SIGKILL.

200 messages are sent concurrently, each on its own connection with a
unique Subject and Message-ID and a body marker at its very end. Once
about half have been acknowledged the daemon is killed with SIGKILL and
started again. Then every acknowledged message must be in the mailbox
exactly once, and every message in the mailbox (acknowledged or not) must
be complete: a crash may cause a duplicate-free redelivery of something
the client never heard about (RFC 5321 6.1), never half a message.
"""
import concurrent.futures
import re
import smtplib
import threading
import time

import pytest

from conftest import FILL_PAD, client_tls
from test_smtp import (TIMEOUT, bounded, make_populated, populated_data,  # noqa: F401
                       queue_ids, surat)
from test_delivery_edge import (peer, queue_empty, route_to, spool_as_never_tried,  # noqa: F401
                                spool_file_of, queue_list, start, wait_for, wait_queue_shows)
from test_dsn_rfc import submit

N = 200
THREADS = 16
TEST_LIMIT = 180    # the whole test, on a busy machine (usually 20-40 s)


def message(i):
    pad = ("%d " % i) * (50 + (i * 37) % 700)     # 0.2 .. 6 KB, differing sizes
    lines = [pad[k:k + 76] for k in range(0, len(pad), 76)]
    return ("From: s%d@remote.test\r\nTo: alice@example.test\r\nSubject: crash %d\r\n"
            "Message-ID: <crash-%d@remote.test>\r\n\r\n%s\r\nEND-OF-MESSAGE-%d\r\n" %
            (i, i, i, "\r\n".join(lines), i)).encode()


def test_kill_during_concurrent_delivery(make_populated):
    s = make_populated(extra={"workers": "4", "max_connections_per_ip": "100"})
    acked = set()
    lock = threading.Lock()
    killed = threading.Event()

    def send(i):
        if killed.is_set():
            return
        try:
            with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=TIMEOUT) as c:
                c.ehlo("client%d.test" % i)
                c.sendmail("s%d@remote.test" % i, ["alice@example.test"], message(i))
                with lock:
                    acked.add(i)
        except (OSError, smtplib.SMTPException):
            pass        # the daemon died under us: not acknowledged

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        futures = [ex.submit(send, i) for i in range(N)]
        while time.time() - t0 < 40:
            with lock:
                if len(acked) >= N // 2:
                    break
            time.sleep(0.005)
        s.kill()
        killed.set()
        concurrent.futures.wait(futures, timeout=60)
    with lock:
        acked = set(acked)
    assert N // 4 <= len(acked) < N, "the kill came too late or too early: %d" % len(acked)

    s.start()
    deadline = time.time() + 40
    while time.time() < deadline and queue_ids(s):
        time.sleep(0.2)
    assert queue_ids(s) == [], s.cli("queue", "list").stdout
    uids = s.messages("alice@example.test")

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        stored = list(ex.map(lambda u: s.message("alice@example.test", u), uids))
    seen = {}
    for uid, m in zip(uids, stored):
        subj = re.search(rb"\r\nSubject: crash (\d+)\r\n", m)
        assert subj, (uid, m[:300])
        i = int(subj.group(1))
        # Complete: exactly what was sent, after our two headers.
        assert m.endswith(message(i)), (uid, i, m[-200:])
        assert re.match(rb"Return-Path: <[^>]*>\r\nDelivered-To: alice@example\.test\r\n"
                        rb"Received: ", m), m[:200]
        seen[i] = seen.get(i, 0) + 1
    dups = {i: n for i, n in seen.items() if n > 1}
    assert dups == {}, "stored more than once: %s" % dups
    missing = sorted(acked - set(seen))
    assert missing == [], "acknowledged but lost: %s" % missing


def test_reused_spool_file_never_resurrects(make_populated):
    """Delivered spool files are kept (".r" names) and written over by the
    next message. A crash can keep the rename of such a file to a new id but
    lose its new content: the old message must not come back as a new one."""
    import os
    import shutil
    s = make_populated()
    for i in range(5):
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=TIMEOUT) as c:
            c.sendmail("s%d@remote.test" % i, ["alice@example.test"], message(i))
    s.wait_messages("alice@example.test", 5)
    qdir = os.path.join(s.data_dir, "queue")
    deadline = time.time() + 10
    while time.time() < deadline and not [n for n in os.listdir(qdir) if n.startswith(".r")]:
        time.sleep(0.05)
    kept = sorted(n for n in os.listdir(qdir) if n.startswith(".r"))
    assert 1 <= len(kept) <= 5, os.listdir(qdir)
    assert queue_ids(s) == []       # hidden from the queue

    assert s.stop() == 0
    # What a crash between the rename and the rewrite would leave behind.
    shutil.copy(os.path.join(qdir, kept[0]), os.path.join(qdir, "0000000000000001"))
    open(os.path.join(qdir, ".rnot-a-pool-name"), "w").close()
    s.start()
    assert "1 unacknowledged files dropped" in s.log()
    assert not os.path.exists(os.path.join(qdir, "0000000000000001"))
    assert not os.path.exists(os.path.join(qdir, ".rnot-a-pool-name"))
    assert set(kept) <= set(os.listdir(qdir))     # taken up again for reuse
    assert queue_ids(s) == []

    # The kept files carry the next messages; all arrive once, none twice.
    for i in range(5, 8):
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=TIMEOUT) as c:
            c.sendmail("s%d@remote.test" % i, ["alice@example.test"], message(i))
    uids = s.wait_messages("alice@example.test", 8)
    time.sleep(0.3)
    uids = s.messages("alice@example.test")
    subjects = sorted(int(re.search(rb"\r\nSubject: crash (\d+)\r\n",
                                    s.message("alice@example.test", u)).group(1))
                      for u in uids)
    assert subjects == list(range(8))


def test_kept_spool_file_is_locked_while_written(make_populated):
    """The daemon writes over a kept spool file only under its flock(2), the
    lock `surat queue delete` holds while it checks what the file holds and
    unlinks it: a message written there since the CLI read it is never the
    one removed. While another process holds the lock, the next message
    waits for it; then it is acknowledged and delivered."""
    import fcntl
    import os
    s = make_populated()
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=TIMEOUT) as c:
        c.sendmail("s0@remote.test", ["alice@example.test"], message(0))
    s.wait_messages("alice@example.test", 1)
    qdir = os.path.join(s.data_dir, "queue")
    deadline = time.time() + 10
    kept = []
    while time.time() < deadline and not kept:
        kept = [n for n in os.listdir(qdir) if n.startswith(".r")]
        time.sleep(0.05)
    assert len(kept) == 1, os.listdir(qdir)
    fd = os.open(os.path.join(qdir, kept[0]), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()

    def send():
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=TIMEOUT) as c:
            c.sendmail("s1@remote.test", ["alice@example.test"], message(1))
        done.set()
    t = threading.Thread(target=send)
    t.start()
    try:
        assert not done.wait(1.0), "written over a kept file whose lock another process held"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert done.wait(TIMEOUT)
    t.join(TIMEOUT)
    s.wait_messages("alice@example.test", 2)
    assert sorted(os.listdir(qdir)) == kept
    # A delivered message is not in the queue: delete says so, removes nothing.
    ids = re.findall(r"access id=(\w+) ", s.log())
    r = s.cli("queue", "delete", ids[-1], check=False)
    assert r.returncode == 1 and "no such message" in r.stderr, r
    assert sorted(os.listdir(qdir)) == kept


def test_bounce_made_again_after_a_crash_is_stored_once(start, peer):
    """A bounce is written (its own spool file, "ID-b") before the message
    it reports records the failure or goes: a kill between the two leaves
    both. Taken up again, the bounce (local, ready at once) is delivered
    while the message retries its remote recipient, which fails again, and
    writes the bounce again: it finds ID-b gone, delivered. The sender's
    mailbox must hold it once all the same: a notice made again is the
    same notice, under the same dedup key.

    The state is made for real: the peer defers the first attempt, the
    file is copied as it was before any attempt, the bounce is made and
    delivered, then the copy put back (as if the kill had come before the
    message went) and the daemon started again."""
    import os
    answer = ["450 4.2.0 later"]
    p = peer(rcpt=lambda a, n: answer[0])
    s = start({"route.remote.test": route_to(p)}, kinds=("smtp", "submission"))
    qid = submit(s, "bob@example.test", "bob-pw", [("dest@remote.test", "")],
                 b"Subject: bounce me once\r\n\r\nx\r\n")
    wait_queue_shows(s, r"<dest@remote\.test>\s+remote\s+deferred.*last=\"450 4\.2\.0")
    assert s.stop() == 0
    answer[0] = "550 5.1.1 no such user"
    path = os.path.join(s.data_dir, "queue", qid)
    with open(path, "rb") as f:
        never_tried = spool_as_never_tried(f.read())

    s.start()
    s.wait_messages("bob@example.test", 1)
    wait_for(lambda: queue_empty(s), what="empty queue")
    assert s.stop() == 0

    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(never_tried)
    mark = len(s.log())
    s.start()
    wait_for(lambda: re.search(r"notice id=%s-b " % qid, s.log()[mark:]),
             what="the bounce made again")
    wait_for(lambda: queue_empty(s), what="empty queue")
    time.sleep(0.3)
    assert len(s.messages("bob@example.test")) == 1


def test_bounce_found_written_after_a_crash_reports_the_rest(start):
    """The state a kill between a bounce and the records it goes with
    leaves: the message as before its attempt, its bounce ID-b (reporting
    alice, who looped) still queued. Taken up again, carol, only deferred
    (full) then, has failed for good meanwhile (deleted): the bounce the
    message makes now reports alice and carol under the same name, and
    finds ID-b written. carol's failure must still reach the sender, once,
    and alice's not a second time.

    The bounce stays queued because bob's mailbox is unavailable (his store
    directory a plain file), as test_delivery_edge does it."""
    import os
    from test_dsn_rfc import loop_body
    from test_delivery_edge import transaction
    s = start()
    s.add_user("carol@example.test", "carol-pw")
    s.fill_mailbox("carol@example.test")
    home = os.path.join(s.data_dir, "mail", "example.test", "bob")
    assert not os.path.lexists(home)
    os.makedirs(os.path.dirname(home), exist_ok=True)
    open(home, "w").close()
    qid = transaction(s, "bob@example.test",
                      [("alice@example.test", ""), ("carol@example.test", "")],
                      loop_body("alice@example.test", extra=FILL_PAD))
    wait_queue_shows(s, r"(?m)^%s-b .*\n\s+<bob@example\.test>\s+local\s+deferred" % qid)
    assert s.stop() == 0
    put_back(*message_as_never_tried(s, qid))
    s.cli("user", "del", "carol@example.test")

    mark = len(s.log())
    s.start()
    wait_for(lambda: re.search(r"delivery id=%s rcpt=carol@example\.test status=bounced"
                               % qid, s.log()[mark:]), what="carol's failure")
    wait_for(lambda: not re.search(r"(?m)^%s " % qid, s.cli("queue", "list").stdout),
             what="the message gone")
    os.remove(home)
    s.cli("queue", "flush")
    wait_for(lambda: queue_empty(s), what="empty queue")
    time.sleep(0.3)
    reported = []
    for u in s.messages("bob@example.test"):
        reported += re.findall(rb"(?m)^Final-Recipient: rfc822; ?(\S+)\r$",
                               s.message("bob@example.test", u))
    assert sorted(reported) == [b"alice@example.test", b"carol@example.test"], reported


def test_kills_during_alias_delivery_and_notices(start):
    """An alias of three accounts, one full (deferred): messages sent
    concurrently while the daemon is killed during their deliveries, twice, and again while their delay notices are written. Afterwards every
    acknowledged message is in each other member's mailbox once, still queued
    for the full one, and its sender has exactly one delay notice for it."""
    import imaplib
    s = start({"queue.delay_warning": "1s", "max_connections_per_ip": "100"},
              kinds=("smtp", "imap"))
    for u in ("carol", "dave"):
        s.add_user("%s@example.test" % u, "pw")
    s.fill_mailbox("carol@example.test")
    s.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test",
          "carol@example.test")

    def body(i):
        return (b"From: dave@example.test\r\nSubject: team %d\r\nMessage-ID: <team-%d@x>\r\n"
                % (i, i) + FILL_PAD + b"\r\nhello %d\r\n" % i)

    def send(i):
        try:
            with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=TIMEOUT) as c:
                c.sendmail("dave@example.test", ["team@example.test"], body(i))
            return i
        except (OSError, smtplib.SMTPException):
            return None

    acked = set()
    for rnd in range(2):
        mark = len(s.log())
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            futures = [ex.submit(send, rnd * 8 + k) for k in range(8)]
            wait_for(lambda: "status=sent relay=local" in s.log()[mark:], timeout=10,
                     what="a delivery")
            s.kill()
            acked |= {f.result() for f in futures} - {None}
        s.start()
    # Again while the delay notices are being written.
    mark = len(s.log())
    wait_for(lambda: "kind=delay" in s.log()[mark:], timeout=10, what="a delay notice")
    s.kill()
    s.start()

    def per_message(addr):
        """How many times each message is in addr's INBOX (a notice quotes its header)."""
        seen = {}
        m = imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=TIMEOUT)
        m.starttls(client_tls())
        m.login(addr, "alice-pw" if addr.startswith("alice") else "bob-pw"
                if addr.startswith("bob") else "pw")
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        m.logout()
        for part in data:
            if isinstance(part, tuple):
                for i in set(re.findall(rb"Message-ID: <team-(\d+)@x>", part[1])):
                    seen[int(i)] = seen.get(int(i), 0) + 1
        return seen
    wait_for(lambda: len(per_message("dave@example.test")) >= len(acked), timeout=15,
             what="the delay notices")
    time.sleep(0.5)
    for a in ("alice@example.test", "bob@example.test", "dave@example.test"):
        seen = per_message(a)
        assert {i: n for i, n in seen.items() if n > 1} == {}, (a, seen)
        assert sorted(acked - set(seen)) == [], (a, seen)
    out = queue_list(s)
    assert len(re.findall(r"<carol@example\.test>\s+local\s+deferred", out)) >= len(acked), out


def message_as_never_tried(s, qid):
    """(path, content): the spool file holding message qid, and its content
    as before any delivery attempt (spool_as_never_tried)."""
    path = spool_file_of(s, b"id=%s\0" % qid.encode())
    with open(path, "rb") as f:
        return path, spool_as_never_tried(f.read())


def crash_setup(start, peer, rcpts, subject, conf=None, caps=None,
                slow=("dest@remote.test",), queued=r"<dest@remote\.test>\s+remote\s+deferred"):
    """The set-up of the crash-window tests below. bob submits, as the alias
    list@example.test (bob and sender@remote.test), a message to the remote
    rcpts ([(address, RCPT options)]); the peer defers them (and
    sender@remote.test, so that a notice to it stays queued). Once queue
    list shows queued (formatted with the id), the daemon stops. answers
    holds the peer's RCPT replies by address, and "slow": the seconds a
    RCPT to an address in slow waits. Returns (s, p, qid, answers, path,
    never_tried): the message's spool file and its content as before any
    attempt (spool_as_never_tried), to put back as a kill would leave it."""
    answers = {a: "450 4.2.0 later" for a, _ in rcpts}
    answers.update({"sender@remote.test": "450 4.2.0 later", "slow": 0})

    def rcpt(addr, n):
        time.sleep(answers["slow"] if addr in slow else 0)
        return answers.get(addr, "250 2.1.5 ok")
    p = peer(rcpt=rcpt, **({"caps": caps} if caps else {}))
    config = {"route.remote.test": route_to(p)}
    config.update(conf or {})
    s = start(config, kinds=("smtp", "submission"))
    s.cli("alias", "add", "list@example.test", "bob@example.test", "sender@remote.test")
    qid = submit(s, "bob@example.test", "bob-pw", rcpts,
                 b"Subject: " + subject + b"\r\n\r\nx\r\n", frm="list@example.test")
    wait_queue_shows(s, queued.replace("{id}", qid))
    assert s.stop() == 0
    return (s, p, qid, answers) + message_as_never_tried(s, qid)


def notice_made(s, qid, suffix, message_gone=True):
    """Start again and wait until the notice ID<suffix> to sender@remote.test
    is queued (the peer defers it), and the message gone; stop."""
    s.start()
    wait_queue_shows(s, r"(?m)^%s%s .*\n(\s+<.*\n)*\s+<sender@remote\.test>\s+remote\s+deferred"
                     % (qid, suffix))
    if message_gone:
        wait_for(lambda: not re.search(r"(?m)^%s " % qid, s.cli("queue", "list").stdout),
                 what="the message gone")
    assert s.stop() == 0


def put_back(path, never_tried):
    """The message's file as a kill before its records would have left it."""
    with open(path, "wb") as f:
        f.write(never_tried)


def notices_sent(p):
    return [t["mail"] for t in p.txns if t["mail"].startswith("MAIL FROM:<>")]


@pytest.mark.parametrize("kind", ["bounce", "success"])
def test_notice_left_by_a_crash_waits_for_its_message(start, peer, kind):
    """A kill between a notice and the records of its message leaves both,
    the message as before its attempt. Taken up again, the notice to a
    remote sender (here a member of the alias the message came from) is
    ready at once, while its message retries a peer that is slow to answer
    again. Sent first, the notice is gone by the time the message writes it
    again, under a free name, and the sender gets it twice. It must wait
    for its message to record it. A bounce (the peer fails the recipient),
    and a success notice (NOTIFY=SUCCESS to a peer without DSN: "relayed").

    The state is made for real: the peer defers the message's first attempt
    (its file is copied then, as never tried), answers the second and
    defers the notice to the sender, which so stays queued; the copy is put
    back."""
    bounce = kind == "bounce"
    s, p, qid, answers, path, never_tried = crash_setup(
        start, peer, [("dest@remote.test", "" if bounce else " NOTIFY=SUCCESS")],
        b"tell me once",
        caps=None if bounce else ["PIPELINING", "8BITMIME", "SIZE 10000000",
                                  "ENHANCEDSTATUSCODES"])
    answers["dest@remote.test"] = "550 5.1.1 no such user" if bounce else "250 2.1.5 ok"
    notice_made(s, qid, "-b" if bounce else "-s0")

    put_back(path, never_tried)
    answers.update({"sender@remote.test": "250 2.1.5 ok", "slow": 1.5})
    mark = len(s.log())
    s.start()
    wait_for(lambda: re.search(r"delivery id=%s rcpt=dest@remote\.test status=%s"
                               % (qid, "bounced" if bounce else "sent"), s.log()[mark:]),
             what="the message answered again")
    wait_for(lambda: queue_empty(s), what="empty queue")
    assert len(notices_sent(p)) == 1, notices_sent(p)


def test_bounce_left_by_a_crash_is_not_held_once_its_recipient_is_delivered(start, peer):
    """As above, but the retry after the restart delivers the recipient the
    bounce reports, while another recipient of the message stays deferred
    (for days: queue.max_age). The message will never write that bounce
    again, so nothing can send it twice: it must not wait for the message
    to end."""
    s, p, qid, answers, path, never_tried = crash_setup(
        start, peer, [("dest@remote.test", ""), ("other@remote.test", "")], b"bounce me")
    answers["dest@remote.test"] = "550 5.1.1 no such user"
    notice_made(s, qid, "-b", message_gone=False)
    put_back(path, never_tried)     # the kill came before the message recorded its bounce

    answers.update({"dest@remote.test": "250 2.1.5 ok", "sender@remote.test": "250 2.1.5 ok"})
    mark = len(s.log())
    s.start()
    wait_for(lambda: re.search(r"delivery id=%s rcpt=dest@remote\.test status=sent" % qid,
                               s.log()[mark:]), what="the recipient delivered")
    wait_for(lambda: notices_sent(p), timeout=5, what="the bounce sent")
    assert re.search(r"(?m)^%s " % qid, s.cli("queue", "list").stdout)    # other: deferred


def test_delay_notice_left_by_a_crash_waits_for_its_message(start, peer):
    """As the bounce above, for a delay notice: a kill between the notice
    (ID-d) and its message's record of the warning leaves both. Sent at
    once, it is gone when the message, taken up as never tried and deferred
    again by a slow peer, warns again under the freed name: a remote sender
    got it twice. It must wait for its message to find it written."""
    s, p, qid, answers, path, never_tried = crash_setup(
        start, peer, [("dest@remote.test", "")], b"late", conf={"queue.delay_warning": "1s"},
        queued=r"(?m)^{id}-d .*\n(\s+<.*\n)*\s+<sender@remote\.test>\s+remote\s+deferred")
    put_back(path, never_tried)     # the kill came before the message recorded its warning

    answers.update({"sender@remote.test": "250 2.1.5 ok", "slow": 1})
    mark = len(s.log())
    s.start()
    wait_for(lambda: re.search(r"delivery id=%s rcpt=dest@remote\.test status=deferred" % qid,
                               s.log()[mark:]), what="the message deferred again")
    wait_for(lambda: not re.search(r"(?m)^%s-d " % qid, s.cli("queue", "list").stdout),
             what="the notice gone")
    time.sleep(1)   # (time for the message to warn again)
    assert len(notices_sent(p)) == 1, notices_sent(p)


def test_bounce_deleted_while_it_waits_is_not_sent_twice(start, peer):
    """A bounce left by a crash waits for its message (above); the admin
    deletes it meanwhile (`surat queue delete`). The message fails again
    and writes it anew under the freed name: the sender gets that one, once.
    The deleted one's entry, still waiting, must not send it a second time
    (the peer is slow to answer, so both could be sending it at once)."""
    s, p, qid, answers, path, never_tried = crash_setup(
        start, peer, [("dest@remote.test", "")], b"bounce me once",
        slow=("dest@remote.test", "sender@remote.test"))
    answers["dest@remote.test"] = "550 5.1.1 no such user"
    notice_made(s, qid, "-b")

    put_back(path, never_tried)
    answers.update({"sender@remote.test": "250 2.1.5 ok", "slow": 1.2})
    mark = len(s.log())
    s.start()
    assert "deleted %s-b" % qid in s.cli("queue", "delete", "%s-b" % qid).stdout
    wait_for(lambda: re.search(r"delivery id=%s rcpt=dest@remote\.test status=bounced" % qid,
                               s.log()[mark:]), what="the message failed again")
    wait_for(lambda: queue_empty(s), what="empty queue")
    time.sleep(1.6)   # (time for a second send)
    assert len(notices_sent(p)) == 1, notices_sent(p)
