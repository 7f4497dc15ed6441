"""The delivery status notifications surat writes, checked field by field
against the RFCs: RFC 3464 (the report), RFC 3461 (the SMTP extension and
what the report must echo), RFC 3834 / RFC 5321 6.2 / RFC 5322 (the
notice's own header) and RFC 2045/2046 (its MIME structure).

What test_delivery_edge.py and test_outbound.py already cover (the basic
three-part structure, NOTIFY filtering of delay/failure reports, RET=HDRS,
the 256 KiB limit, RFC 6533 types, no notice about a notice, "relayed" for
a peer without DSN) is not repeated. Every daemon runs on 127.0.0.1 with
1 s retries and a DNS server that never answers; remote recipients go to a
scripted peer on 127.0.0.7 through route.remote.test.
"""
import email
import email.policy
import email.utils
import re
import time

import pytest

from conftest import FILL_PAD
from test_delivery_edge import (start, peer, route_to, transaction, transaction_on,  # noqa: F401
                                wait_for, queue_empty, queue_list, stored_notice, make_populated,
                                populated_data, bounded)
from test_smtp import Raw

TEST_LIMIT = 40

STATUS_RE = r"[245]\.\d{1,3}\.\d{1,3}"


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture
def srv_plain(start):
    """A daemon with example.test, alice and bob, SMTP only."""
    return start()


def loop_body(*accounts, subject="looping", extra=b""):
    """A message that already went through every account's mailbox: local
    delivery fails it at once (5.4.6), which gives a bounce quickly."""
    head = b"".join(b"Delivered-To: %s\r\n" % a.encode() for a in accounts)
    return head + b"From: x@example.test\r\nSubject: " + subject.encode() + b"\r\n" + extra + \
        b"\r\nround\r\n"


def submit(s, user, pw, rcpts, body, mail_opts="", frm=None):
    """One transaction on the submission port (STARTTLS, AUTH) as user,
    from frm (user if None): rcpts is a list of (address, RCPT
    parameters). Returns the queue id."""
    r = Raw(s.port("submission"))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    r.auth(user, pw)
    return transaction_on(r, frm or user, rcpts, body, mail_opts)


def remote_member_sender(start, p):
    """A daemon whose alias list@example.test is bob and sender@remote.test
    (routed to peer p). A notice returns the original whole only to a user's
    own submission (a client without AUTH gets the header back at a remote
    address): bob sends as the list, and its remote member gets the notice."""
    s = start({"route.remote.test": route_to(p)}, kinds=("smtp", "submission"))
    s.cli("alias", "add", "list@example.test", "bob@example.test", "sender@remote.test")
    return s


def own_loop_body(extra=b""):
    """loop_body() for alice, From: the list bob may send as."""
    return (b"Delivered-To: alice@example.test\r\nFrom: list@example.test\r\n"
            b"Subject: looping\r\n" + extra + b"\r\nround\r\n")


def ds_groups(raw):
    """The raw delivery-status part of a notice, split into its groups
    (RFC 3464 2.1: per-message fields, then one group per recipient, each
    group separated by a blank line). Returns (list of {field: [values]},
    the raw part body)."""
    m = re.search(rb"Content-Type: message/(?:global-)?delivery-status\r\n"
                  rb"(?:[^\r\n]+\r\n)*\r\n(.*?)\r\n--", raw, re.S)
    assert m, raw[:3000]
    body = m.group(1)
    groups = []
    for g in re.split(rb"\r\n\r\n", body.rstrip(b"\r\n")):
        d = {}
        unfolded = re.sub(rb"\r\n[ \t]", b" ", g)
        for line in unfolded.split(b"\r\n"):
            assert b":" in line, (line, body)
            k, v = line.split(b":", 1)
            d.setdefault(k.decode().strip().lower(), []).append(v.decode("utf-8").strip())
        groups.append(d)
    return groups, body


def one(group, name):
    v = group.get(name.lower(), [])
    assert len(v) <= 1, (name, v)
    return v[0] if v else None


def report_parts(raw):
    m = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    return m, m.get_payload()


def peer_notice(p, timeout=10):
    """(MAIL line, RCPT lines, data) of the first transaction with the null sender."""
    def got():
        with p.lock:
            return [t for t in p.txns if re.match(r"MAIL FROM:<>", t["mail"], re.I)]
    t = wait_for(got, timeout=timeout, what="a notice at the peer")[0]
    return t["mail"], t["rcpts"], t["data"]


# ---------------------------------------------------------------- RFC 3461: xtext in the report

def test_envid_is_xtext_decoded_in_original_envelope_id(srv_plain):
    """RFC 3461 4.4: ENVID is xtext on the wire; the report carries the
    envelope identifier itself (RFC 3464 2.2.1 "MUST preserve the original
    case and spelling"), so ENVID=a+2Bb+3Dc must come back as a+b=c."""
    s = srv_plain
    transaction(s, "bob@example.test", [("alice@example.test", "")],
                loop_body("alice@example.test"), mail_opts=" ENVID=QX+2Bid+3D7+2C8")
    raw = stored_notice(s, "bob@example.test")
    groups, body = ds_groups(raw)
    assert one(groups[0], "Original-Envelope-Id") == "QX+id=7,8", body.decode()


def test_orcpt_is_xtext_decoded_in_original_recipient(srv_plain):
    """RFC 3461 4.2: ORCPT=addr-type;xtext; the report's Original-Recipient
    (RFC 3464 2.3.1) holds the decoded address: ORCPT=rfc822;A+2Bb@x gives
    rfc822;A+b@x."""
    s = srv_plain
    transaction(s, "bob@example.test",
                [("alice@example.test", " ORCPT=rfc822;Al+2Btag+3Dx@example.test")],
                loop_body("alice@example.test"))
    raw = stored_notice(s, "bob@example.test")
    groups, body = ds_groups(raw)
    orcpt = one(groups[1], "Original-Recipient")
    assert orcpt is not None, body.decode()
    assert re.sub(r"\s", "", orcpt) == "rfc822;Al+tag=x@example.test", body.decode()


def test_report_fields_in_the_grammar_order(srv_plain):
    """RFC 3464 2.2 and 2.3 give the fields in an order: per message,
    Original-Envelope-Id before Reporting-MTA, then Arrival-Date; per
    recipient, Original-Recipient before Final-Recipient, then Action and
    Status."""
    s = srv_plain
    transaction(s, "bob@example.test",
                [("alice@example.test", " ORCPT=rfc822;alice@example.test")],
                loop_body("alice@example.test"), mail_opts=" ENVID=order-1")
    groups, body = ds_groups(stored_notice(s, "bob@example.test"))
    names = [[n.lower() for n in g] for g in groups[:2]]
    assert names[0][:3] == ["original-envelope-id", "reporting-mta", "arrival-date"], \
        body.decode()
    assert names[1][:4] == ["original-recipient", "final-recipient", "action", "status"], \
        body.decode()


def test_utf8_orcpt_is_decoded_in_a_global_report(srv_plain):
    """RFC 6533 3: ORCPT=utf-8;... carries the address with each non-ASCII
    character as \\x{HEX}; a message/global-delivery-status report holds the
    utf-8-address itself."""
    s = srv_plain
    transaction(s, "bob@example.test",
                [("alice@example.test", " ORCPT=utf-8;al\\x{E9}x@\\x{FC}ber.test")],
                loop_body("alice@example.test"), mail_opts=" SMTPUTF8")
    raw = stored_notice(s, "bob@example.test")
    assert b"Content-Type: message/global-delivery-status" in raw, raw[:2000]
    groups, body = ds_groups(raw)
    assert one(groups[1], "Original-Recipient") == "utf-8;al\u00e9x@\u00fcber.test", \
        body.decode()


# ---------------------------------------------------------------- RFC 3464 2: report layout

def test_report_groups_and_required_fields(srv_plain):
    """Two recipients, one without and one with ORCPT: one per-message group
    (Reporting-MTA, Arrival-Date; no per-recipient field), then one group per
    recipient, separated by blank lines, each with exactly one
    Final-Recipient, Action and Status (failed <-> 5.x.x); Original-Recipient
    only where ORCPT was given (RFC 3464 2.3.1, RFC 3461 6.3)."""
    s = srv_plain
    s.add_user("carol@example.test", "carol-pw")
    transaction(s, "bob@example.test",
                [("alice@example.test", ""),
                 ("carol@example.test", " ORCPT=rfc822;carol@example.test")],
                loop_body("alice@example.test", "carol@example.test"))
    raw = stored_notice(s, "bob@example.test")
    groups, body = ds_groups(raw)
    text = body.decode()
    assert len(groups) == 3, text
    pm = groups[0]
    assert one(pm, "Reporting-MTA") == "dns; mx.example.test", text
    ad = one(pm, "Arrival-Date")
    assert ad and email.utils.parsedate_to_datetime(ad), text
    for k in ("final-recipient", "action", "status", "original-recipient"):
        assert k not in pm, text
    seen = {}
    for g in groups[1:]:
        fr = one(g, "Final-Recipient")
        assert fr and re.fullmatch(r"rfc822; ?\S+@\S+", fr), text
        assert one(g, "Action") == "failed", text
        assert re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", one(g, "Status") or ""), text
        assert "reporting-mta" not in g and "arrival-date" not in g, text
        seen[fr.split(";", 1)[1].strip()] = g
    assert sorted(seen) == ["alice@example.test", "carol@example.test"], text
    assert one(seen["alice@example.test"], "Original-Recipient") is None, text
    assert re.sub(r"\s", "", one(seen["carol@example.test"], "Original-Recipient") or "") == \
        "rfc822;carol@example.test", text
    # Diagnostic-Code: diagnostic-type ";" text (RFC 3464 2.3.6).
    for g in seen.values():
        dc = one(g, "Diagnostic-Code")
        if dc is not None:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*; ?\S.*", dc), text


# ---------------------------------------------------------------- RFC 5321 6.2 / 3834 / 5322 / 2045

def test_notice_envelope_and_header_on_the_wire(start, peer):
    """A bounce to a remote sender, as it reaches the sender's server: MAIL
    FROM:<> (RFC 5321 4.5.5, 6.2; RFC 3461 6.2), Auto-Submitted (RFC 3834 5),
    Date, a syntactically valid Message-ID (RFC 5322 3.6), From the
    MAILER-DAEMON, MIME-Version, multipart/report with report-type and a
    valid boundary that never appears inside a part (RFC 2046 5.1.1), CRLF
    lines of at most 998 octets (RFC 5322 2.1.1)."""
    p = peer()
    s = remote_member_sender(start, p)
    # The original itself has long-ish lines and lines that start with "--".
    extra = b"X-Long: " + b"y" * 900 + b"\r\n"
    body = own_loop_body(extra) + b"--\r\n--x\r\n" + b"z" * 990 + b"\r\n"
    submit(s, "bob@example.test", "bob-pw", [("alice@example.test", "")], body,
           frm="list@example.test")
    mail, rcpts, data = peer_notice(p)
    assert re.fullmatch(r"MAIL FROM:<>( .*)?", mail, re.I), mail
    assert len(rcpts) == 1 and "<sender@remote.test>" in rcpts[0], rcpts
    for line in data.split(b"\r\n"):
        assert b"\n" not in line and b"\r" not in line, line[:100]
        assert len(line) <= 998, len(line)
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    m = email.message_from_bytes(data, policy=email.policy.compat32)
    assert len(m.get_all("From")) == 1 and len(m.get_all("Date")) == 1, head
    assert re.search(r"<(MAILER-DAEMON|postmaster)@mx\.example\.test>", m["From"], re.I), head
    assert (m["Auto-Submitted"] or "").strip().lower() in ("auto-replied", "auto-generated"), head
    assert email.utils.parsedate_to_datetime(m["Date"]), head
    assert len(m.get_all("Message-ID")) == 1, head
    atext = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
    dot_atom = r"%s(?:\.%s)*" % (atext, atext)
    assert re.fullmatch(r"\s*<%s@%s>\s*" % (dot_atom, dot_atom), m["Message-ID"]), head
    assert (m["MIME-Version"] or "").strip() == "1.0", head
    assert m.get_content_type() == "multipart/report", head
    assert m.get_param("report-type") == "delivery-status", head
    b = m.get_boundary()
    assert b and 1 <= len(b) <= 70 and not b.endswith(" "), head
    assert re.fullmatch(r"[0-9A-Za-z'()+_,./:=? -]+", b), head
    # Delimiter lines: exactly the three parts and the close.
    delims = re.findall(rb"(?m)^--" + re.escape(b.encode()) + rb"(--)?\r?$", data)
    assert len(delims) == 4 and delims[-1] == b"--", delims
    parts = m.get_payload()
    assert [x.get_content_type() for x in parts] == \
        ["text/plain", "message/delivery-status", "message/rfc822"], head
    assert b"z" * 990 in data


def test_notice_with_8bit_original_is_labelled_8bit(start, peer):
    """The original came with BODY=8BITMIME and 8-bit text; the bounce that
    returns it whole holds 8-bit octets. RFC 2045 6.1/6.4: an entity without
    Content-Transfer-Encoding is 7bit, "all represented as short lines of
    US-ASCII"; a multipart holding 8-bit parts must say 8bit. RFC 6152 3:
    8-bit content is sent with BODY=8BITMIME."""
    p = peer()
    s = remote_member_sender(start, p)
    extra = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" \
            b"Content-Transfer-Encoding: 8bit\r\n"
    body = own_loop_body(extra) + "caf\u00e9 na\u00efve\r\n".encode()
    submit(s, "bob@example.test", "bob-pw", [("alice@example.test", "")], body,
           mail_opts=" BODY=8BITMIME", frm="list@example.test")
    mail, _, data = peer_notice(p)
    assert any(c >= 0x80 for c in data), "the original should come back whole"
    assert re.search(r"\sBODY=8BITMIME\b", mail, re.I), mail
    m = email.message_from_bytes(data, policy=email.policy.compat32)
    cte = (m["Content-Transfer-Encoding"] or "7bit").strip().lower()
    assert cte in ("8bit", "binary"), \
        "top-level Content-Transfer-Encoding is %r over 8-bit content:\n%s" % (
            cte, data.split(b"\r\n\r\n", 1)[0].decode())


# ---------------------------------------------------------------- remote results in the report

def remote_setup(start, peer, extra=None, **peer_kw):
    p = peer(**peer_kw)
    conf = {"route.remote.test": route_to(p)}
    conf.update(extra or {})
    s = start(conf, kinds=("smtp", "submission"))
    return s, p


def test_remote_rejections_give_well_formed_status(start, peer):
    """Three remote recipients rejected for good (5xx) with odd enhanced codes
    in the reply. RFC 3464 2.3.4: status-code = DIGIT "." 1*3DIGIT "."
    1*3DIGIT, and a "failed" Action goes with a 5.x.x Status (RFC 3464 2.3.3,
    RFC 3463 2: class 5 is a permanent failure); the peer's text stays in
    Diagnostic-Code: smtp; 550 ... with Remote-MTA: dns; NAME."""
    replies = {"odd@remote.test": "550 4.2.1 mailbox disabled",
               "wide@remote.test": "550 5.1.1234 no such user",
               "dots@remote.test": "550 5..1 who",
               "ok@remote.test": "550 5.1.1 no such user"}
    s, p = remote_setup(start, peer, rcpt=lambda a, n: replies[a])
    body = b"From: bob@example.test\r\nTo: x@remote.test\r\nSubject: odd codes\r\n\r\nx\r\n"
    submit(s, "bob@example.test", "bob-pw", [(a, "") for a in replies], body)
    raw = stored_notice(s, "bob@example.test")
    groups, dsbody = ds_groups(raw)
    text = dsbody.decode()
    assert len(groups) == 5, text
    bad = []
    for g in groups[1:]:
        addr = one(g, "Final-Recipient").split(";", 1)[1].strip()
        st = one(g, "Status")
        if one(g, "Action") != "failed" or not re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", st or ""):
            bad.append("%s: Action: %s / Status: %s" % (addr, one(g, "Action"), st))
        rm = one(g, "Remote-MTA")
        assert rm and re.fullmatch(r"dns; ?\S+", rm), text
        dc = one(g, "Diagnostic-Code")
        assert dc and dc.lower().startswith("smtp;"), text
        assert dc.split(";", 1)[1].strip() == replies[addr], text
    assert bad == [], "\n".join(bad) + "\n\n" + text


def test_remote_delay_notice_fields(start, peer):
    """A remote recipient kept deferred (451) past queue.delay_warning: the
    delay notice has Action: delayed, a 4.x.x Status, the peer's reply as
    Diagnostic-Code: smtp; 451 ..., Remote-MTA, and Will-Retry-Until
    (RFC 3464 2.3.9, for a "delayed" report) a parsable date near
    Arrival-Date + queue.max_age, later than now."""
    s, p = remote_setup(start, peer, {"queue.delay_warning": "1s", "queue.max_age": "2h"},
                        rcpt=lambda a, n: "451 4.3.0 try again later")
    body = b"From: bob@example.test\r\nTo: x@remote.test\r\nSubject: slow\r\n\r\nx\r\n"
    submit(s, "bob@example.test", "bob-pw", [("x@remote.test", "")], body)
    raw = stored_notice(s, "bob@example.test")
    groups, dsbody = ds_groups(raw)
    text = dsbody.decode()
    assert len(groups) == 2, text
    g = groups[1]
    assert one(g, "Action") == "delayed", text
    assert re.fullmatch(r"4\.\d{1,3}\.\d{1,3}", one(g, "Status") or ""), text
    assert one(g, "Diagnostic-Code") == "smtp; 451 4.3.0 try again later", text
    assert re.fullmatch(r"dns; ?\S+", one(g, "Remote-MTA") or ""), text
    wru = one(g, "Will-Retry-Until")
    assert wru, text
    until = email.utils.parsedate_to_datetime(wru).timestamp()
    arrival = email.utils.parsedate_to_datetime(one(groups[0], "Arrival-Date")).timestamp()
    assert until > time.time() and abs(until - (arrival + 7200)) <= 5, text
    lad = one(g, "Last-Attempt-Date")
    if lad is not None:
        assert email.utils.parsedate_to_datetime(lad), text
    m, parts = report_parts(raw)
    assert parts[1].get_content_type() == "message/delivery-status"


def test_expired_remote_recipient_diagnostic_is_an_smtp_reply(start, peer):
    """A remote recipient deferred (451) until queue.max_age: the failure
    report says Action: failed, Status: 5.4.7. Its Diagnostic-Code, when
    typed "smtp", must hold what the remote MTA said (RFC 3464 2.3.6: "the
    actual diagnostic code issued by the mail transport"), i.e. an SMTP
    reply beginning with its 3-digit code - not surat's own text."""
    s, p = remote_setup(start, peer, {"queue.max_age": "3s", "queue.delay_warning": "0"},
                        rcpt=lambda a, n: "451 4.3.0 try again later")
    body = b"From: bob@example.test\r\nTo: x@remote.test\r\nSubject: too slow\r\n\r\nx\r\n"
    submit(s, "bob@example.test", "bob-pw", [("x@remote.test", "")], body)
    raw = stored_notice(s, "bob@example.test")
    groups, dsbody = ds_groups(raw)
    text = dsbody.decode()
    g = groups[1]
    assert one(g, "Action") == "failed", text
    assert one(g, "Status") == "5.4.7", text
    dc = one(g, "Diagnostic-Code")
    if dc is not None and dc.lower().startswith("smtp;"):
        assert re.match(r"[2-5]\d\d[ -]", dc.split(";", 1)[1].strip()), text


# ---------------------------------------------------------------- success notices

def test_two_success_notices_of_one_message_have_distinct_message_ids(start):
    """NOTIFY=SUCCESS for alice (delivered at once) and carol (over quota,
    delivered later): two "delivered" notices. RFC 5322 3.6.4: the msg-id
    "MUST be a globally unique identifier for a message"."""
    s = start()
    s.add_user("carol@example.test", "carol-pw")
    s.fill_mailbox("carol@example.test")
    transaction(s, "bob@example.test",
                [("alice@example.test", " NOTIFY=SUCCESS"), ("carol@example.test", " NOTIFY=SUCCESS")],
                b"Subject: tell me twice\r\n" + FILL_PAD + b"\r\nx\r\n")
    first = stored_notice(s, "bob@example.test")
    s.cli("user", "quota", "carol@example.test", "default")
    s.cli("queue", "flush")
    second = stored_notice(s, "bob@example.test", 2)
    ids = []
    finals = []
    for raw in (first, second):
        m = email.message_from_bytes(raw, policy=email.policy.compat32)
        ids.append(m["Message-ID"])
        groups, _ = ds_groups(raw)
        finals.append(sorted(one(g, "Final-Recipient") for g in groups[1:]))
        for g in groups[1:]:
            assert one(g, "Action") == "delivered" and re.fullmatch(
                r"2\.\d{1,3}\.\d{1,3}", one(g, "Status")), raw
    assert finals == [["rfc822; alice@example.test"], ["rfc822; carol@example.test"]], finals
    assert ids[0] != ids[1], "both notices have Message-ID %s" % ids[0]


def test_notify_success_on_multi_member_alias_reports_expanded(start):
    """RCPT TO:<team> NOTIFY=SUCCESS, team -> alice, bob. RFC 3464 2.3.3:
    "expanded" is the Action for a message "delivered to the recipient
    address as specified by the sender, and forwarded by the Reporting-MTA
    beyond that destination to multiple additional recipient addresses";
    RFC 3461 6.2.7.3: an alias with several members is handled like a
    list: an "expanded" report for the alias when SUCCESS was asked."""
    s = start()
    s.add_user("carol@example.test", "carol-pw")
    s.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    transaction(s, "carol@example.test", [("team@example.test", " NOTIFY=SUCCESS")],
                b"Subject: to the team\r\n\r\nx\r\n")
    s.wait_messages("alice@example.test", 1)
    s.wait_messages("bob@example.test", 1)
    s.wait_messages("carol@example.test", 1)
    wait_for(lambda: queue_empty(s), what="empty queue")
    time.sleep(0.3)
    reports = []
    for u in s.messages("carol@example.test"):
        raw = s.message("carol@example.test", u).split(b"\r\n", 1)[1]
        groups, _ = ds_groups(raw)
        reports += [(one(g, "Final-Recipient"), one(g, "Action")) for g in groups[1:]]
    # The alias alone, once: NOTIFY=SUCCESS is not passed on to its members.
    assert reports == [("rfc822; team@example.test", "expanded")], reports
    assert len(s.messages("carol@example.test")) == 1


def success_reports(s, who):
    """(Final-Recipient, Action) of every notice in who's INBOX."""
    reports = []
    for u in s.messages(who):
        raw = s.message(who, u).split(b"\r\n", 1)[1]
        groups, _ = ds_groups(raw)
        reports += [(one(g, "Final-Recipient"), one(g, "Action")) for g in groups[1:]]
    return sorted(reports)


def test_member_asked_for_again_keeps_its_own_notify(start):
    """RCPT TO:<team> NOTIFY=SUCCESS, then RCPT TO:<alice> NOTIFY=SUCCESS
    (team -> alice, bob): alice is one recipient with what either RCPT asked,
    so besides team's "expanded" she gets her own "delivered"."""
    s = start()
    s.add_user("carol@example.test", "carol-pw")
    s.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    transaction(s, "carol@example.test", [("team@example.test", " NOTIFY=SUCCESS"),
                                          ("alice@example.test", " NOTIFY=SUCCESS")],
                b"Subject: to the team and alice\r\n\r\nx\r\n")
    s.wait_messages("alice@example.test", 1)
    s.wait_messages("bob@example.test", 1)
    wait_for(lambda: queue_empty(s), what="empty queue")
    wait_for(lambda: len(success_reports(s, "carol@example.test")) >= 2, what="two reports")
    assert success_reports(s, "carol@example.test") == [
        ("rfc822; alice@example.test", "delivered"),
        ("rfc822; team@example.test", "expanded")]
    assert len(s.messages("alice@example.test")) == 1


def test_expanded_notice_that_cannot_be_written_is_tried_again(start):
    """An "expanded" report whose write fails (no file can be made in the
    queue directory) is not lost: the alias stays done (expanded), its
    report recorded owed, and the report is written at the next try."""
    from test_delivery_edge import queue_frozen
    s = start()
    s.add_user("carol@example.test", "carol-pw")
    s.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    with queue_frozen(s):
        qid = transaction(s, "carol@example.test", [("team@example.test", " NOTIFY=SUCCESS")],
                          b"Subject: tell me later\r\n\r\nx\r\n")
        wait_for(lambda: re.search(r"<team@example\.test>\s+alias\s+delivered\s+attempts=1\s+"
                                   r"notice-owed", s.cli("queue", "list").stdout),
                 what="team's notice owed")
        assert "cannot write notice" in s.log()
    s.cli("queue", "flush")
    wait_for(lambda: queue_empty(s), what="empty queue")
    wait_for(lambda: success_reports(s, "carol@example.test"), what="the report")
    assert success_reports(s, "carol@example.test") == [("rfc822; team@example.test", "expanded")]
    assert qid


# ---------------------------------------------------------------- a failure among deferrals

def test_failure_is_bounced_while_another_recipient_is_still_deferred(start):
    """alice fails for good at once (a loop, 5.4.6), carol is deferred
    (over quota) until queue.max_age. The sender learns of alice's failure
    now, not when carol's fate is known days later (as Postfix, which
    bounces at the end of each delivery attempt); the report names alice
    only. carol's later 5.4.7 report names carol only: no recipient is
    reported twice, and the two notices have distinct ids."""
    s = start({"queue.max_age": "6s", "queue.delay_warning": "0"})
    s.add_user("carol@example.test", "carol-pw")
    s.fill_mailbox("carol@example.test")
    qid = transaction(s, "bob@example.test",
                      [("alice@example.test", ""), ("carol@example.test", "")],
                      loop_body("alice@example.test", extra=FILL_PAD))
    s.wait_messages("bob@example.test", 1, timeout=5)
    assert re.search(r"<carol@example\.test>\s+local\s+deferred", queue_list(s)), queue_list(s)
    groups, body = ds_groups(stored_notice(s, "bob@example.test"))
    assert [one(g, "Final-Recipient") for g in groups[1:]] == \
        ["rfc822; alice@example.test"], body.decode()
    assert one(groups[1], "Action") == "failed" and one(groups[1], "Status") == "5.4.6"

    uids = s.wait_messages("bob@example.test", 2, timeout=20)
    wait_for(lambda: queue_empty(s), what="empty queue")
    time.sleep(1)
    assert len(s.messages("bob@example.test")) == 2
    groups, body = ds_groups(stored_notice(s, "bob@example.test", 2))
    assert [one(g, "Final-Recipient") for g in groups[1:]] == \
        ["rfc822; carol@example.test"], body.decode()
    assert one(groups[1], "Status") == "5.4.7", body.decode()
    ids = re.findall(r"notice id=(%s-b\S*) kind=bounce" % qid, s.log())
    assert len(ids) == 2 and len(set(ids)) == 2, ids
    assert len(uids) == 2


def test_text_part_says_whether_the_message_or_its_header_comes_back(srv_plain):
    """The human-readable part (RFC 3464 2: "a human readable explanation")
    must not say the message is attached when only its header is
    (RET=HDRS: text/rfc822-headers), and says it is when it is."""
    s = srv_plain
    for n, ret in enumerate(("HDRS", "FULL"), 1):
        transaction(s, "bob@example.test", [("alice@example.test", "")],
                    loop_body("alice@example.test", subject=ret), mail_opts=" RET=" + ret)
        s.wait_messages("bob@example.test", n)
        m, parts = report_parts(stored_notice(s, "bob@example.test", n))
        text = parts[0].get_payload(decode=True).decode()
        if ret == "HDRS":
            assert parts[2].get_content_type() == "text/rfc822-headers"
            assert "header is attached" in text and "It is attached" not in text, text
        else:
            assert parts[2].get_content_type() == "message/rfc822"
            assert "It is attached" in text, text
