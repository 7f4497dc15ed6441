"""Crash soak: mail in and mail handled while the daemon is killed, over and over.

Not part of `make test` (it runs for minutes); `make soak` runs it, CYCLES=n
sets how many kill-and-restart cycles (default 10). Each cycle starts surat
(SURAT_BIN, default the ASan build) and runs at once, against one store:
  - 10 SMTP senders to the MX listener: one message per connection, to one
    user, two users, an alias of two, or an alias of an alias and a user,
    or an alias of carol and a remote address, which goes to a sink on
    loopback (route.sink.test) that takes its time over the final reply;
  - 2 IMAP clients appending to alice's INBOX and expunging some of their
    own messages;
  - 1 IMAP client moving or copying alice's delivered mail to Archive;
  - 1 POP3 client reading bob's mail and deleting some of it;
  - 1 admin running `surat queue list` and `surat queue delete ID` on
    messages the senders were given a 250 for (the reply names the id),
    mostly ones just queued: QDELETE=0 turns it off.
After 1-4 s the daemon gets SIGKILL; it is started again, the queue must
drain, and every mailbox is read over IMAP. The checks:
  - every message a 250 or an APPEND OK was given for is there, exactly once
    per recipient (a copy made by COPY aside), and complete (its last line is
    its END- marker); the sink gets it at least once (a crash between its
    250 and the record of it sends it again);
  - what an EXPUNGE or a POP3 QUIT removed stays removed;
  - what `queue delete` said "deleted" of is never delivered, in this cycle
    or any later one (after the SIGKILL and restart too), but to a recipient
    whose delivery the queue logged ("delivery id=") before the delete began
    (its outcome was on disk: the rest is rightly deleted); one it refused
    ("being delivered") or did not find is delivered exactly once per
    recipient, like any other acknowledged message; of one deleted as the
    daemon was killed (a delivery cut short, its outcome unknown: a peer may
    have sent its 250, a store have it) only that nothing delivers it after
    the restart;
  - the queue drains after each restart (else the daemon's threads' stacks
    are printed: a delivery lock held for ever shows there);
  - what is found is checked again, unchanged, in every later cycle;
  - no sanitizer report in the log.
Exit status 1 and a line per violation when one is seen.
"""
import calendar
import imaplib
import os
import poplib
import random
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("SURAT_BIN", os.path.join(ROOT, "build", "asan", "surat"))
from conftest import Surat  # noqa: E402

CYCLES = int(os.environ.get("CYCLES", "10"))
USERS = ("alice", "bob", "carol")
# RCPT TO lists and the users each reaches (no user twice in one message).
TARGETS = [(["alice"], {"alice"}), (["bob", "carol"], {"bob", "carol"}),
           (["team"], {"alice", "bob"}), (["all"], {"alice", "bob", "carol"}),
           (["carol"], {"carol"}), (["fwd"], {"carol", "sink"})]
SINK_DELAY = 0.2        # the sink's longest wait before its 250 to DATA

lock = threading.Lock()
# marker -> "must" (acknowledged or seen), "may" (sent, outcome unknown),
# "gone" (removed, or never acknowledged and not found), per user.
expect = {u: {} for u in USERS + ("sink",)}
appended = {}           # alice's APPENDs: the same states
copied = set()          # markers COPY may have put in Archive too
errors = Counter()
seq = [0]
QDELETE = os.environ.get("QDELETE", "1") != "0"
queued = []             # (queue id, marker) of each 250, in order
deleted = {}            # marker -> (users, queue id, when): must never be delivered
qdel = Counter()        # queue delete outcomes: deleted, refused, none, list
reported = set()        # (who, marker) of a deleted one found: said once
seen_deleted = set()    # (user, marker) of a deleted one IMAP or POP3 saw
deleted_at_kill = {}    # marker -> queue id: deleted as (or after) the daemon was killed
killed_at = [float("inf")]


sink_got = Counter()    # marker -> copies the sink gave a 250 for


def sink_session(conn):
    f = conn.makefile("rb")
    try:
        conn.sendall(b"220 sink.test ESMTP\r\n")
        while True:
            line = f.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250-sink.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                data = []
                while True:
                    ln = f.readline()
                    if not ln or ln == b".\r\n":
                        break
                    data.append(ln)
                if not ln:
                    return
                mk = re.search(rb"^Subject: (\S+)", b"".join(data), re.M)
                time.sleep(random.uniform(0, SINK_DELAY))
                with lock:
                    sink_got[mk.group(1).decode() if mk else "?"] += 1
                conn.sendall(b"250 2.0.0 taken\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")
    except OSError:
        pass
    finally:
        conn.close()


def sink_serve(ls):
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=sink_session, args=(conn,), daemon=True).start()


def next_marker(prefix, cyc):
    with lock:
        seq[0] += 1
        # Fixed width: SEARCH SUBJECT matches substrings, and no marker may
        # be part of another.
        return "%s%d-%08d" % (prefix, cyc, seq[0])


def note_error(who, e):
    with lock:
        errors["%s %s %s" % (who, type(e).__name__, str(e)[:50])] += 1


def sender(srv, cyc, stop):
    while not stop.is_set():
        mk = next_marker("m", cyc)
        rcpts, users = random.choice(TARGETS)
        words = ("%s " % mk) * random.randint(10, 2000)
        body = "\r\n".join(words[k:k + 76] for k in range(0, len(words), 76))
        msg = ("From: x@remote.test\r\nSubject: %s\r\nMessage-ID: <%s@remote.test>\r\n\r\n"
               "%s\r\nEND-%s\r\n" % (mk, mk, body, mk))
        with lock:
            for u in users:
                expect[u][mk] = "may"
        try:
            c = smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=20)
            c.ehlo()
            c.mail("x@remote.test")
            for r in rcpts:
                code, text = c.rcpt(r + "@example.test")
                if code != 250:
                    raise smtplib.SMTPRecipientsRefused({r: (code, text)})
            code, text = c.data(msg)
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
            qid = re.search(rb"queued as ([0-9a-f]{16})\b", text)
            with lock:
                for u in users:
                    expect[u][mk] = "must"
                if qid:
                    queued.append((qid.group(1).decode(), mk, users))
                else:
                    errors["VIOLATION smtp 250 without a queue id: %r" % text[:60]] += 1
            c.quit()
        except Exception as e:
            note_error("smtp", e)


def alice_inbox(srv):
    c = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=20)
    c.login("alice@example.test", "pw-alice")
    c.select("INBOX")
    return c


def appender(srv, cyc, stop):
    try:
        c = alice_inbox(srv)
        while not stop.is_set():
            mk = next_marker("a", cyc)
            m = ("From: alice@example.test\r\nSubject: %s\r\n\r\n%s\r\nEND-%s\r\n" %
                 (mk, "y" * random.randint(10, 900), mk)).encode()
            with lock:
                appended[mk] = "may"
            if c.append("INBOX", None, None, m)[0] == "OK":
                with lock:
                    appended[mk] = "must"
            if random.random() < 0.3:
                with lock:
                    appended[mk] = "may"
                uids = c.uid("SEARCH", None, "SUBJECT", mk)[1][0].split()
                if uids:
                    set_ = b",".join(uids)
                    c.uid("STORE", set_, "+FLAGS.SILENT", "(\\Deleted)")
                    if c.uid("EXPUNGE", set_)[0] == "OK":
                        with lock:
                            appended[mk] = "gone"
    except Exception as e:
        note_error("append", e)


def mover(srv, cyc, stop):
    try:
        c = alice_inbox(srv)
        while not stop.is_set():
            time.sleep(0.01)
            uids = c.uid("SEARCH", None, "NOT", "SUBJECT", "a")[1][0].split()
            if not uids:
                continue
            u = random.choice(uids)
            d = c.uid("FETCH", u, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1]
            mks = [it[1].decode().split()[1] for it in d if isinstance(it, tuple)]
            if not mks:
                continue
            seen("alice", mks[0])
            if random.random() < 0.5:
                c.uid("MOVE", u, "Archive")
            else:
                with lock:
                    copied.add(mks[0])
                c.uid("COPY", u, "Archive")
    except Exception as e:
        note_error("move", e)


def popper(srv, cyc, stop):
    while not stop.is_set():
        time.sleep(0.05)
        try:
            p = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=20)
            p.user("bob@example.test")
            p.pass_("pw-bob")
            dele = []
            for k in range(1, min(len(p.list()[1]), 5) + 1):
                raw = b"\r\n".join(p.retr(k)[1]).decode()
                mk = re.search(r"^Subject: (\S+)", raw, re.M).group(1)
                seen("bob", mk)
                if not raw.rstrip().endswith("END-" + mk):
                    with lock:
                        errors["VIOLATION pop3 RETR of a partial message " + mk] += 1
                if random.random() < 0.5:
                    with lock:
                        expect["bob"][mk] = "may"
                    p.dele(k)
                    dele.append(mk)
            p.quit()
            with lock:
                for mk in dele:
                    expect["bob"][mk] = "gone"
        except Exception as e:
            note_error("pop3", e)


def admin(srv, cyc, stop):
    """`surat queue list` and `queue delete` while the daemon delivers."""
    start = len(queued)
    for _ in range(400):        # bounded: ~50 ms a CLI run under ASan
        if stop.is_set():
            break
        time.sleep(random.uniform(0.005, 0.03))
        try:
            if random.random() < 0.15:
                r = srv.cli("queue", "list", check=False)
                with lock:
                    qdel["list"] += 1
                    if r.returncode != 0:
                        errors["VIOLATION queue list exit %d: %s"
                               % (r.returncode, r.stderr.strip()[:80])] += 1
                continue
            with lock:
                mine = queued[start:]
                if not mine:
                    continue
                # Mostly the newest: those still queued, or being delivered.
                qid, mk, users = (random.choice(mine[-4:]) if random.random() < 0.8
                                  else random.choice(mine))
            t0 = time.time()
            r = srv.cli("queue", "delete", qid, check=False)
            out, err = r.stdout.strip(), r.stderr.strip()
            with lock:
                if r.returncode == 0 and out == "deleted " + qid and time.time() >= killed_at[0]:
                    # The SIGKILL may have ended a delivery mid-way (a peer's
                    # 250 sent, not read; a store written, not recorded):
                    # what happened to it is not known, only that nothing
                    # may deliver it after the restart.
                    qdel["deleted as the daemon was killed"] += 1
                    deleted_at_kill[mk] = qid
                    for u in users:
                        expect[u][mk] = "may"
                elif r.returncode == 0 and out == "deleted " + qid:
                    qdel["deleted"] += 1
                    deleted[mk] = (set(users), qid, t0)
                    for u in users:
                        expect[u][mk] = "gone"
                elif r.returncode == 1 and "is being delivered at this moment" in err:
                    qdel["refused"] += 1
                elif r.returncode == 1 and ("no such message" in err or
                                            "no longer queued" in err):
                    qdel["none"] += 1
                else:
                    errors["VIOLATION queue delete %s: exit %d %r %r"
                           % (qid, r.returncode, out[:60], err[:120])] += 1
        except AssertionError as e:     # a sanitizer report from the CLI
            with lock:
                errors["VIOLATION admin %s" % str(e)[:300]] += 1
        except Exception as e:
            note_error("admin", e)


def seen(who, mk):
    """A client saw mk in who's mailbox: checked after the cycle, if deleted."""
    with lock:
        if mk in deleted:
            seen_deleted.add((who, mk))


def thread_stacks(pid):
    try:
        r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                           capture_output=True, text=True, timeout=120)
        return r.stdout
    except Exception as e:
        return "gdb: %s" % e


def mailbox_contents(srv, user):
    """marker -> copies in INBOX and Archive; a partial message is a violation."""
    c = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=60)
    c.login(user + "@example.test", "pw-" + user)
    found, bad = Counter(), []
    for box in ("INBOX", "Archive"):
        c.select(box, readonly=True)
        for it in c.fetch("1:*", "(BODY.PEEK[])")[1]:
            if not isinstance(it, tuple):
                continue
            raw = it[1].decode()
            mk = re.search(r"^Subject: (\S+)", raw, re.M).group(1)
            found[mk] += 1
            if not raw.rstrip().endswith("END-" + mk):
                bad.append("%s: partial message %s in %s" % (user, mk, box))
    c.logout()
    return found, bad


def delivered_before(srv, mk, who):
    """Whether the log says deleted marker mk's delivery to who (a user, or
    "sink") was recorded before its `queue delete` began: a message a delete
    finds delivered to some of its recipients (the outcome on disk) is
    rightly deleted for the rest. Then who must have it exactly once."""
    _, qid, t0 = deleted[mk]
    # The queue's line, logged under the delivery's lock, which is let go
    # only once the outcome is on disk (not the transport's "outbound"
    # line: its outcome is recorded later).
    rcpt = "x@sink.test" if who == "sink" else who + "@example.test"
    pat = r"^(\S+) info .* delivery id=%s rcpt=%s status=sent" % (qid, re.escape(rcpt))
    for ts in re.findall(pat, srv.log(), re.M):
        t = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
        if t + float(ts[19:23]) < t0:
            return True
    return False


def partial(srv, mk, who, n):
    """A deleted marker found n times for who: no violation if delivered before the delete."""
    if n == 1 and delivered_before(srv, mk, who):
        qdel["deleted after a partial delivery"] += 1
        deleted[mk][0].discard(who)
        return True
    return False


def deleted_found(srv, mk, who, n, cyc, where):
    """Deleted marker mk found n times with who: [] if rightly (see
    partial()), else the violation, said once."""
    if who not in deleted[mk][0] or partial(srv, mk, who, n) or (who, mk) in reported:
        return []
    reported.add((who, mk))
    return ["cycle %d %s: %s %s %d times, but queue delete said deleted"
            % (cyc, who, mk, where, n)]


def check_sink(srv, cyc):
    """The sink: at least once (a crash may send again), never a deleted one."""
    bad = []
    with lock:
        for mk, st in expect["sink"].items():
            n = sink_got[mk]
            if n and mk in deleted:
                more = deleted_found(srv, mk, "sink", n, cyc, "received")
                bad += more
                st = "must" if not more and "sink" not in deleted[mk][0] else "deleted"
            if (st == "must" and n < 1) or (st == "gone" and n):
                bad.append("cycle %d sink: %s (%s) received %d times" % (cyc, mk, st, n))
            expect["sink"][mk] = "must" if n else "gone"
    return bad


def check(srv, found, states, who, cyc):
    bad = []
    for mk, st in states.items():
        n = found[mk]
        if n and mk in deleted:
            more = deleted_found(srv, mk, who, n, cyc, "found")
            bad += more
            if more or who in deleted[mk][0] or (who, mk) in reported:
                continue        # a violation, said once
            st = "must"         # delivered before the delete: like any other
        if (n > 1 and mk not in copied) or (st == "must" and n < 1) or (st == "gone" and n):
            bad.append("cycle %d %s: %s (%s) found %d times" % (cyc, who, mk, st, n))
        # What is there now must stay; what is not must not come back.
        states[mk] = "must" if n else "gone"
    return bad


def main():
    tmp = tempfile.mkdtemp(prefix="surat-soak-")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    threading.Thread(target=sink_serve, args=(ls,), daemon=True).start()
    srv = Surat(tmp, (cert, key), kinds=("smtp", "imap", "pop3"),
                extra={"allow_plaintext_auth": "yes", "workers": "4",
                       "max_connections_per_ip": "200",
                       "route.sink.test": "127.0.0.1:%d" % ls.getsockname()[1]})
    srv.add_domain("example.test")
    for u in USERS:
        srv.add_user(u + "@example.test", "pw-" + u)
    srv.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    srv.cli("alias", "add", "all@example.test", "team@example.test", "carol@example.test")
    srv.cli("alias", "add", "fwd@example.test", "carol@example.test", "x@sink.test")
    violations = []
    for cyc in range(CYCLES):
        srv.start()
        killed_at[0] = float("inf")
        stop = threading.Event()
        workers = [(sender, 10), (appender, 2), (mover, 1), (popper, 1)]
        if QDELETE:
            workers.append((admin, 1))
        threads = [threading.Thread(target=f, args=(srv, cyc, stop))
                   for f, n in workers for _ in range(n)]
        for t in threads:
            t.start()
        time.sleep(random.uniform(1.0, 4.0))
        stop.set()      # the clients stop after what they are doing: killed mid-way
        killed_at[0] = time.time()
        srv.kill()
        for t in threads:
            t.join(60)
        log_from = os.path.getsize(srv.log_path)
        srv.start()
        for _ in range(600):
            listing = srv.cli("queue", "list").stdout
            if not re.search(r"^\w{8,}", listing, re.M):
                break
            time.sleep(0.2)
        else:
            violations.append("cycle %d: the queue did not drain in 120 s:\n%s\n%s"
                              % (cyc, listing[-3000:], thread_stacks(srv.proc.pid)))
        new = check_sink(srv, cyc)
        with open(srv.log_path, "rb") as f:
            f.seek(log_from)
            since = f.read().decode("utf-8", "replace")
        for mk, qid in sorted(deleted_at_kill.items()):
            if re.search(r" (delivery|outbound) id=%s .*status=sent" % qid, since):
                new.append("cycle %d: %s (%s) delivered after the restart, but queue delete "
                           "said deleted" % (cyc, mk, qid))
        deleted_at_kill.clear()
        for who, mk in sorted(seen_deleted):
            new += deleted_found(srv, mk, who, 1, cyc, "seen by a client")
        seen_deleted.clear()
        for u in USERS:
            found, bad = mailbox_contents(srv, u)
            new += bad + check(srv, found, expect[u], u, cyc)
            if u == "alice":
                new += check(srv, found, appended, "alice APPEND", cyc)
        try:
            rc = srv.stop()     # fails on a sanitizer report in the log
            if rc != 0:
                new.append("cycle %d: exit status %d after SIGTERM" % (cyc, rc))
        except AssertionError as e:
            new.append("cycle %d: %s" % (cyc, str(e)[:3000]))
        new += [k for k in errors if k.startswith("VIOLATION")]
        for v in new:
            print(v)
        violations += new
        print("cycle %d: %d attempts so far, %d in alice's mailboxes, %d violations; "
              "client errors %s; queue delete so far %s; the sink got %d, %d more than once"
              % (cyc, seq[0], sum(s == "must" for s in expect["alice"].values())
                 + sum(s == "must" for s in appended.values()),
                 len(violations), dict(errors), dict(qdel), len(sink_got),
                 sum(n > 1 for n in sink_got.values())), flush=True)
        errors.clear()
    if violations:
        print("%d cycles, %d violations (data kept in %s)" % (CYCLES, len(violations), tmp))
        return 1
    shutil.rmtree(tmp)
    print("%d cycles, no violation" % CYCLES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
