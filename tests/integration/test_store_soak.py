"""The mailbox store under concurrency and crashes: nothing acknowledged is
lost, duplicated or left inconsistent.

Several SMTP senders deliver a few hundred messages, each with a unique
Message-ID, to alice's and bob's INBOX, recording which got 250. Meanwhile:
an IMAP session on alice's INBOX FETCHes, sets \\Seen, UID COPYs to Archive
and UID STORE \\Deleted + UID EXPUNGEs; a second one STOREs \\Deleted and
EXPUNGEs in Archive; a POP3 session RETRs and DELEs (QUIT) in alice's INBOX;
a session IDLEs on bob's INBOX; and a monitor STATUSes every mailbox. The
daemon is SIGKILLed twice in the middle and started again.

Every client keeps a precise record: what it was told was done (a tagged
OK, +OK, 250) must be so afterwards; what was under way at a kill may or
may not have happened, but at most once. Then, on the quiet daemon:
- every acknowledged message is in its INBOX exactly once unless a client
  deleted it; no Message-ID is there twice or was never sent;
- Archive holds exactly the confirmed copies not expunged (plus at most one
  copy from a COPY cut short by a kill), each under the UID COPYUID gave;
- a UID never names two messages, over the whole run; UIDs ascend and are
  below UIDNEXT; UIDVALIDITY never changes; UIDNEXT and HIGHESTMODSEQ
  never go backwards, across the restarts;
- \\Seen set with a tagged OK is still set;
- STATUS agrees with a FETCH of everything, RFC822.SIZE with the bytes,
  and each message is byte for byte what was sent (after our headers);
- `surat mailbox list/show` agree with IMAP;
- on disk (after a clean stop): every row's file exists with its size,
  file reference counts match the rows, and no message file is left that
  no row names.
"""
import imaplib
import os
import poplib
import re
import smtplib
import socket
import sqlite3
import threading
import time
import traceback

from test_smtp import bounded, make_populated, populated_data, queue_ids  # noqa: F401

TEST_LIMIT = 150        # the whole test on a busy machine; usually about 40 s
ALICE, BOB = "alice@example.test", "bob@example.test"
PW = {ALICE: "alice-pw", BOB: "bob-pw"}
N = 1200                # messages; every third one to bob
SENDERS = 6
KILLS = (0.3, 0.65)     # kill when this share of N has been acknowledged
IO_TIMEOUT = 20
CONN_ERRORS = (OSError, EOFError, imaplib.IMAP4.abort, poplib.error_proto,
               smtplib.SMTPException)


def rcpt(i):
    return BOB if i % 3 == 0 else ALICE


def mid(i):
    return "<soak-%d@remote.test>" % i


def message(i):
    pad = ("%d " % i) * (20 + (i * 53) % 500)       # 0.1 .. 3 KB, differing sizes
    lines = [pad[k:k + 76] for k in range(0, len(pad), 76)]
    return ("From: s%d@remote.test\r\nTo: %s\r\nSubject: soak %d\r\nMessage-ID: %s\r\n\r\n"
            "%s\r\nEND-%d\r\n" % (i, rcpt(i), i, mid(i), "\r\n".join(lines), i)).encode()


def mid_index(text):
    m = re.search(rb"Message-ID: <soak-(\d+)@remote\.test>", text, re.I)
    return int(m.group(1)) if m else None


def expand(seqset):
    out = []
    for part in seqset.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out.extend(range(min(a, b), max(a, b) + 1))
        else:
            out.append(int(part))
    return out


def uidset(uids):
    return ",".join(str(u) for u in sorted(uids))


class Record:
    """What the clients did and were told, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = set()          # message indices that got 250
        self.tried = set()          # sent, whatever the answer
        self.gone_maybe = set()     # INBOX: a delete was sent (IMAP or POP3)
        self.gone = set()           # INBOX: the delete was confirmed
        self.seen = set()           # INBOX: \Seen confirmed
        self.arch = {}              # Archive uid -> index, from COPYUID
        self.copy_maybe = []        # COPYs cut short: the indices they named
        self.arch_gone_maybe = set()
        self.arch_gone = set()
        self.uids = {}              # (account, box, uid) -> index, every sighting
        self.status = {}            # (account, box) -> [(uidvalidity, uidnext, hms)]
        self.errors = []
        self.idle_exists = 0        # EXISTS seen in IDLE

    def saw(self, account, box, uid, i):
        with self.lock:
            old = self.uids.setdefault((account, box, uid), i)
            if old != i:
                self.errors.append("%s %s UID %d named message %s and later %s" %
                                   (account, box, uid, old, i))

    def error(self, text):
        with self.lock:
            self.errors.append(text + "\n" + traceback.format_exc())


class Daemon:
    """The daemon's up/down state, so that clients wait instead of spinning."""

    def __init__(self, s):
        self.s = s
        self.up = threading.Event()
        self.up.set()
        self.stop = threading.Event()

    def wait(self):
        while not self.stop.is_set() and not self.up.wait(0.2):
            pass
        return not self.stop.is_set()

    def nap(self, t=0.05):
        self.stop.wait(t)


def imap_login(s, account):
    c = imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=IO_TIMEOUT)
    c.login(account, PW[account])
    return c


class ExpungeIssued(Exception):
    """NO [EXPUNGEISSUED]: another session expunged some of the messages named
    (RFC 9051 7.1); nothing was done. NOOP and look again."""


def ok(c, typ, data, what):
    if typ == "NO" and b"[EXPUNGEISSUED]" in b"".join(x for x in data if isinstance(x, bytes)):
        raise ExpungeIssued(what)
    if typ != "OK":
        raise AssertionError("%s: %s %r" % (what, typ, data))
    return data


def fetch_index(c, uids=None):
    """UID FETCH of uids (all: None): {uid: (index, flags)}."""
    typ, data = c.uid("FETCH", uidset(uids) if uids else "1:*",
                      "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    ok(c, typ, data, "UID FETCH")
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
        flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode()
        out[uid] = (mid_index(item[1]), flags)
    return out


# ---------------------------------------------------------------- workers

def sender(d, rec, next_i):
    while True:
        with rec.lock:
            i = next_i[0]
            if i >= N:
                return
            next_i[0] += 1
        if not d.wait():
            return
        with rec.lock:
            rec.tried.add(i)
        try:
            with smtplib.SMTP("127.0.0.1", d.s.port("smtp"), timeout=IO_TIMEOUT) as c:
                c.sendmail("s%d@remote.test" % i, [rcpt(i)], message(i))
            with rec.lock:
                rec.acked.add(i)
        except CONN_ERRORS:
            pass        # the daemon died under us: not acknowledged


def inbox_round(c, rec, rnd):
    msgs = fetch_index(c)
    for uid, (i, _) in msgs.items():
        rec.saw(ALICE, "INBOX", uid, i)
    with rec.lock:
        maybe = set(rec.gone_maybe)
    live = sorted(u for u, (i, f) in msgs.items() if i not in maybe and "\\Deleted" not in f)
    if len(live) < 6:
        return
    # \Seen on two, COPY three, delete one (always different ones).
    seen = live[rnd % 3::7][:2]
    ok(c, *c.uid("STORE", uidset(seen), "+FLAGS", "(\\Seen)"), what="STORE")
    with rec.lock:
        rec.seen.update(msgs[u][0] for u in seen)
    copy = live[1 + rnd % 4::5][:3]
    with rec.lock:
        rec.copy_maybe.append([msgs[u][0] for u in copy])
    # (imaplib's uid() drops the tagged text, where COPYUID is.)
    typ, data = c._simple_command("UID", "COPY", uidset(copy), "Archive")
    if typ == "NO":     # COPY is all or nothing (RFC 9051 6.4.7)
        with rec.lock:
            rec.copy_maybe.pop()
    ok(c, typ, data, "UID COPY")
    m = re.search(rb"\[COPYUID \d+ ([\d:,]+) ([\d:,]+)\]", data[-1])
    if not m:
        raise AssertionError("COPY without COPYUID: %r" % data)
    src, dst = expand(m.group(1).decode()), expand(m.group(2).decode())
    with rec.lock:
        rec.copy_maybe.pop()
        for su, du in zip(src, dst):
            if du in rec.arch:
                rec.errors.append("COPYUID gave Archive UID %d twice" % du)
            rec.arch[du] = msgs[su][0]
    if rnd % 2 == 0:
        gone = [live[-1 - rnd % 3]]
        gi = [msgs[u][0] for u in gone]
        with rec.lock:
            rec.gone_maybe.update(gi)
        ok(c, *c.uid("STORE", uidset(gone), "+FLAGS", "(\\Deleted)"), what="STORE \\Deleted")
        ok(c, *c.uid("EXPUNGE", uidset(gone)), what="UID EXPUNGE")
        with rec.lock:
            rec.gone.update(gi)


def inbox_worker(d, rec):
    """alice INBOX: FETCH, \\Seen, UID COPY to Archive, \\Deleted + UID EXPUNGE."""
    rnd = 0
    while d.wait():
        try:
            c = imap_login(d.s, ALICE)
            ok(c, *c.select("INBOX"), what="SELECT INBOX")
            while not d.stop.is_set():
                rnd += 1
                try:
                    inbox_round(c, rec, rnd)
                except ExpungeIssued:
                    ok(c, *c.noop(), what="NOOP")
                d.nap(0.05)
            c.logout()
        except CONN_ERRORS:
            d.nap(0.1)
        except Exception as e:      # a protocol answer we did not expect
            rec.error("inbox worker: %r" % e)
            return


def archive_worker(d, rec):
    """alice Archive: STORE \\Deleted on a confirmed copy, then a plain EXPUNGE."""
    while d.wait():
        try:
            c = imap_login(d.s, ALICE)
            ok(c, *c.select("Archive"), what="SELECT Archive")
            while not d.stop.is_set():
                msgs = fetch_index(c)
                for uid, (i, _) in msgs.items():
                    rec.saw(ALICE, "Archive", uid, i)
                with rec.lock:
                    cand = sorted(u for u in msgs if u in rec.arch and
                                  u not in rec.arch_gone_maybe)
                if len(cand) >= 4:
                    u = cand[len(cand) // 2]
                    with rec.lock:
                        rec.arch_gone_maybe.add(u)
                    ok(c, *c.uid("STORE", str(u), "+FLAGS", "(\\Deleted)"),
                       what="STORE \\Deleted")
                    ok(c, *c.expunge(), what="EXPUNGE")
                    with rec.lock:
                        rec.arch_gone.add(u)
                d.nap(0.3)
            c.logout()
        except CONN_ERRORS:
            d.nap(0.1)
        except Exception as e:
            rec.error("archive worker: %r" % e)
            return


def pop3_worker(d, rec):
    """alice INBOX over POP3: RETR two, DELE one, QUIT."""
    rnd = 0
    while d.wait():
        try:
            p = poplib.POP3("127.0.0.1", d.s.port("pop3"), timeout=IO_TIMEOUT)
            p.user(ALICE)
            p.pass_(PW[ALICE])
            rnd += 1
            n = p.stat()[0]
            deleted = []
            if n >= 4:
                with rec.lock:
                    maybe = set(rec.gone_maybe)
                for k in (n // 2, n // 2 + 1):
                    try:
                        body = b"\r\n".join(p.retr(k)[1])
                    except poplib.error_proto as e:
                        if b"-ERR" in str(e).encode():
                            continue        # expunged by IMAP since POP3 looked
                        raise
                    i = mid_index(body)
                    if i is None or not body.endswith(b"END-%d" % i):
                        rec.error("POP3 RETR %d gave an incomplete message: %r" %
                                  (k, body[-80:]))
                        continue
                    if k == n // 2 and rnd % 2 == 0 and i not in maybe:
                        with rec.lock:
                            rec.gone_maybe.add(i)
                        p.dele(k)
                        deleted.append(i)
            p.quit()
            with rec.lock:
                rec.gone.update(deleted)
            d.nap(0.3)
        except CONN_ERRORS:
            d.nap(0.1)
        except Exception as e:
            rec.error("pop3 worker: %r" % e)
            return


def idle_worker(d, rec):
    """bob INBOX in IDLE: EXISTS arrives and never shrinks (nobody deletes there)."""
    while d.wait():
        try:
            sock = socket.create_connection(("127.0.0.1", d.s.port("imap")), timeout=IO_TIMEOUT)
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"a LOGIN %s %s\r\nb SELECT INBOX\r\n" % (BOB.encode(),
                                                                    PW[BOB].encode()))
            exists = None
            while True:
                line = f.readline()
                if not line:
                    raise EOFError
                m = re.match(rb"\* (\d+) EXISTS", line)
                if m:
                    exists = int(m.group(1))
                if line.startswith(b"b "):
                    if not line.startswith(b"b OK"):
                        raise AssertionError(line)
                    break
            while not d.stop.is_set():
                sock.sendall(b"i IDLE\r\n")
                line = f.readline()
                if not line.startswith(b"+"):
                    raise AssertionError("IDLE: %r" % line)
                sock.settimeout(0.3)
                end = time.time() + 1.5
                while time.time() < end and not d.stop.is_set():
                    try:
                        line = f.readline()
                    except socket.timeout:
                        continue
                    if not line:
                        raise EOFError
                    m = re.match(rb"\* (\d+) (EXISTS|EXPUNGE)", line)
                    if m and m.group(2) == b"EXPUNGE":
                        rec.error("IDLE on bob's INBOX saw an EXPUNGE: %r" % line)
                    elif m:
                        if exists is not None and int(m.group(1)) < exists:
                            rec.error("IDLE: EXISTS went from %d to %s" % (exists, m.group(1)))
                        exists = int(m.group(1))
                        with rec.lock:
                            rec.idle_exists += 1
                sock.settimeout(IO_TIMEOUT)
                sock.sendall(b"DONE\r\n")
                while True:
                    line = f.readline()
                    if not line:
                        raise EOFError
                    if line.startswith(b"i "):
                        if not line.startswith(b"i OK"):
                            raise AssertionError("IDLE ended with %r" % line)
                        break
            sock.close()
        except CONN_ERRORS:
            d.nap(0.1)
        except Exception as e:
            rec.error("idle worker: %r" % e)
            return


STATUS_ITEMS = "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
BOXES = ((ALICE, "INBOX"), (ALICE, "Archive"), (BOB, "INBOX"))


def status_of(c, box, items=STATUS_ITEMS):
    typ, data = c.status(box, items)
    ok(c, typ, data, "STATUS " + box)
    return {k.decode(): int(v) for k, v in re.findall(rb"([A-Z]+) (\d+)", data[0])}


def monitor(d, rec):
    """STATUS of every mailbox, over and over: the history must only go up."""
    while d.wait():
        try:
            conns = {a: imap_login(d.s, a) for a in (ALICE, BOB)}
            while not d.stop.is_set():
                for a, box in BOXES:
                    st = status_of(conns[a], box)
                    with rec.lock:
                        rec.status.setdefault((a, box), []).append(
                            (st["UIDVALIDITY"], st["UIDNEXT"], st["HIGHESTMODSEQ"]))
                d.nap(0.1)
            for c in conns.values():
                c.logout()
        except CONN_ERRORS:
            d.nap(0.1)
        except Exception as e:
            rec.error("monitor: %r" % e)
            return


# ---------------------------------------------------------------- checks

def read_box(s, account, box):
    """Everything IMAP says about a mailbox, on the quiet daemon."""
    c = imap_login(s, account)
    st = status_of(c, box, "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ SIZE)")
    typ, data = c.select(box)
    ok(c, typ, data, "SELECT")
    exists = int(data[0])
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
    ok(c, typ, data, "FETCH")
    msgs = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        head = item[0]
        msgs.append({"uid": int(re.search(rb"UID (\d+)", head).group(1)),
                     "flags": re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode(),
                     "size": int(re.search(rb"RFC822\.SIZE (\d+)", head).group(1)),
                     "body": item[1]})
    c.logout()
    return st, exists, msgs


def check_box(rec, account, box, st, exists, msgs):
    uids = [m["uid"] for m in msgs]
    assert uids == sorted(set(uids)), "%s %s: UIDs not strictly ascending: %s" % (
        account, box, uids)
    assert not uids or uids[-1] < st["UIDNEXT"], (account, box, uids[-1], st)
    assert st["MESSAGES"] == exists == len(msgs), (account, box, st, exists, len(msgs))
    assert st["UNSEEN"] == sum("\\Seen" not in m["flags"] for m in msgs), (account, box, st)
    assert st["SIZE"] == sum(m["size"] for m in msgs), (account, box, st)
    for m in msgs:
        assert m["size"] == len(m["body"]), (account, box, m["uid"], m["size"], len(m["body"]))
        i = mid_index(m["body"])
        assert i is not None, (account, box, m["uid"], m["body"][:300])
        assert m["body"].endswith(message(i)), (account, box, m["uid"], m["body"][-200:])
        assert re.match(rb"Return-Path: <s%d@remote\.test>\r\nDelivered-To: %s\r\n" %
                        (i, rcpt(i).encode()), m["body"]), m["body"][:200]
        rec.saw(account, box, m["uid"], i)
        m["i"] = i
    hist = rec.status.get((account, box), [])
    hist = hist + [(st["UIDVALIDITY"], st["UIDNEXT"], st["HIGHESTMODSEQ"])]
    assert len({h[0] for h in hist}) == 1, "%s %s: UIDVALIDITY changed: %s" % (
        account, box, sorted({h[0] for h in hist}))
    for a, b in zip(hist, hist[1:]):
        assert b[1] >= a[1], "%s %s: UIDNEXT went back from %d to %d" % (account, box, a[1], b[1])
        assert b[2] >= a[2], "%s %s: HIGHESTMODSEQ went back from %d to %d" % (
            account, box, a[2], b[2])


def check_cli(s, account, box, st, msgs):
    out = s.cli("mailbox", "list", account).stdout
    m = re.search(r"(?m)^%s\s+messages=(\d+) unseen=(\d+) size=(\d+) uidvalidity=(\d+) "
                  r"uidnext=(\d+)$" % re.escape(box), out)
    assert m, out
    assert [int(x) for x in m.groups()] == [st["MESSAGES"], st["UNSEEN"], st["SIZE"],
                                            st["UIDVALIDITY"], st["UIDNEXT"]], (out, st)
    out = s.cli("mailbox", "show", account, box).stdout
    head = re.search(r"(\d+) messages, uidvalidity=(\d+) uidnext=(\d+) highestmodseq=(\d+)", out)
    assert [int(x) for x in head.groups()] == [len(msgs), st["UIDVALIDITY"], st["UIDNEXT"],
                                               st["HIGHESTMODSEQ"]], (out[:200], st)
    shown = [(int(u), int(z), "\\Seen" in f, "\\Deleted" in f)
             for u, z, f in re.findall(r"uid=(\d+) size=(\d+) date=\S+ flags=(.*)", out)]
    assert shown == [(m["uid"], m["size"], "\\Seen" in m["flags"], "\\Deleted" in m["flags"])
                     for m in msgs], (account, box)


def check_disk(s, account):
    """After a clean stop: rows and files agree both ways."""
    local, domain = account.split("@")
    root = os.path.join(s.data_dir, "mail", domain, local)
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(root, "index.db"), uri=True)
    files = {i: (refs, size) for i, refs, size in db.execute("SELECT id, refs, size FROM files")}
    used = {}
    for fid, size in db.execute("SELECT file_id, size FROM messages"):
        assert fid in files, "%s: a message names file %016x with no files row" % (account, fid)
        assert files[fid][1] == size, (account, fid, files[fid], size)
        used[fid] = used.get(fid, 0) + 1
    db.close()
    bad_refs = {f: (r, used.get(f, 0)) for f, (r, _) in files.items() if r != used.get(f, 0)}
    assert bad_refs == {}, "%s: files.refs wrong (refs, rows): %s" % (account, bad_refs)
    on_disk = {}
    for sub in os.listdir(os.path.join(root, "msg")):
        for name in os.listdir(os.path.join(root, "msg", sub)):
            on_disk[int(name, 16)] = os.path.getsize(os.path.join(root, "msg", sub, name))
    missing = sorted("%016x" % f for f in files if f not in on_disk)
    assert missing == [], "%s: files the index names are gone: %s" % (account, missing)
    wrong = {"%016x" % f: (z, files[f][1]) for f, z in on_disk.items()
             if f in files and z != files[f][1]}
    assert wrong == {}, "%s: file sizes differ from the index: %s" % (account, wrong)
    orphans = sorted("%016x" % f for f in on_disk if f not in files)
    markers = sorted(os.listdir(os.path.join(root, "tmp")))
    assert orphans == [], "%s: message files no row names: %s (tmp/: %s)" % (
        account, orphans, markers)
    return len(on_disk), markers


# ---------------------------------------------------------------- the test

def test_store_soak(make_populated):
    t0 = time.time()
    s = make_populated(extra={"allow_plaintext_auth": "yes", "max_connections_per_ip": "200"},
                       kinds=("smtp", "imap", "pop3"))
    d, rec, next_i = Daemon(s), Record(), [0]
    threads = [threading.Thread(target=sender, args=(d, rec, next_i)) for _ in range(SENDERS)]
    clients = [threading.Thread(target=f, args=(d, rec))
               for f in (inbox_worker, archive_worker, pop3_worker, idle_worker, monitor)]
    for t in threads + clients:
        t.daemon = True
        t.start()

    kills = []
    for share in KILLS:
        while time.time() - t0 < 60:
            with rec.lock:
                if len(rec.acked) >= N * share:
                    break
            time.sleep(0.01)
        d.up.clear()
        s.kill()
        with rec.lock:
            kills.append(len(rec.acked))
        time.sleep(0.2)
        s.start()
        d.up.set()
    for t in threads:
        t.join(60)
    d.nap(1.0)          # let the clients work on the last deliveries a little
    d.stop.set()
    for t in clients:
        t.join(30)
    assert not any(t.is_alive() for t in threads + clients), "a client hung"
    assert rec.errors == [], "\n".join(rec.errors[:20])
    soak_s = time.time() - t0

    # The kills came in the middle, and every client got work done.
    assert N * 0.2 <= kills[0] < kills[1] < N * 0.9, kills
    assert len(rec.acked) >= N * 0.8, len(rec.acked)
    assert len(rec.gone) >= 3 and len(rec.seen) >= 5 and len(rec.arch) >= 10, (
        len(rec.gone), len(rec.seen), len(rec.arch))
    assert len(rec.arch_gone) >= 2 and rec.idle_exists >= 3, (rec.arch_gone, rec.idle_exists)

    deadline = time.time() + 30
    while queue_ids(s) and time.time() < deadline:
        time.sleep(0.2)
    assert queue_ids(s) == [], s.cli("queue", "list").stdout

    boxes = {}
    for account, box in BOXES:
        st, exists, msgs = read_box(s, account, box)
        check_box(rec, account, box, st, exists, msgs)
        check_cli(s, account, box, st, msgs)
        boxes[(account, box)] = (st, msgs)
    assert rec.errors == [], "\n".join(rec.errors[:20])

    # INBOXes: acknowledged once, unless deleted; never twice; nothing unknown.
    count = {}
    for account in (ALICE, BOB):
        for m in boxes[(account, "INBOX")][1]:
            assert rcpt(m["i"]) == account, (account, m["i"])
            count[m["i"]] = count.get(m["i"], 0) + 1
    dups = sorted(i for i, n in count.items() if n > 1)
    assert dups == [], "stored more than once: %s" % dups
    assert set(count) <= rec.tried, "never sent: %s" % sorted(set(count) - rec.tried)
    lost = sorted(i for i in rec.acked - rec.gone_maybe if i not in count)
    assert lost == [], "acknowledged and lost: %s" % lost
    back = sorted(i for i in rec.gone if i in count)
    assert back == [], "deleted with a confirmation and back: %s" % back
    unseen = sorted(m["i"] for m in boxes[(ALICE, "INBOX")][1]
                    if m["i"] in rec.seen and "\\Seen" not in m["flags"])
    assert unseen == [], "\\Seen confirmed and lost: %s" % unseen

    # Archive: the confirmed copies, under their COPYUID UIDs, less the expunged.
    arch = {m["uid"]: m["i"] for m in boxes[(ALICE, "Archive")][1]}
    for uid, i in arch.items():
        if uid in rec.arch:
            assert rec.arch[uid] == i, "Archive UID %d: COPYUID said %d, holds %d" % (
                uid, rec.arch[uid], i)
    unknown = sorted(i for u, i in arch.items() if u not in rec.arch)
    cut_short = [i for batch in rec.copy_maybe for i in batch]
    assert all(unknown.count(i) <= cut_short.count(i) for i in unknown), (unknown, cut_short)
    want = set(rec.arch) - rec.arch_gone_maybe
    assert sorted(want - set(arch)) == [], "copies confirmed and lost: %s" % sorted(
        want - set(arch))
    assert sorted(rec.arch_gone & set(arch)) == [], "expunged and back"

    # Idle now; after a clean stop the files on disk are the index's, no more, no less.
    assert s.stop() == 0
    nfiles, markers = check_disk(s, ALICE)
    check_disk(s, BOB)
    s.start()       # the fixture stops it (and checks its exit and the sanitizers)
    print("soak %.1fs (whole %.1fs): sent %d, acked %d, kills at %s, inbox deletes %d, "
          "copies %d, archive expunges %d, idle EXISTS %d, alice files %d, tmp markers %d" %
          (soak_s, time.time() - t0, len(rec.tried), len(rec.acked), kills, len(rec.gone),
           len(rec.arch), len(rec.arch_gone), rec.idle_exists, nfiles, len(markers)))
