"""SMTP in: every refusal, with its exact reply and enhanced code.

Relay denial, unknown users, submission without AUTH, sender and From:
spoofing on submission, AUTH before TLS, size limits (SIZE= and actual
data, DATA and BDAT), recipient limit, overlong lines, unknown commands and
the error limit, SMTP smuggling, quota, the per-IP connection cap and the
command and data timeouts.
"""
import base64
import imaplib
import os
import re
import shutil
import smtplib
import socket
import ssl
import time

import pytest

from conftest import client_tls, free_port, skip_unless_ipv6_loopback
from test_smtp import (Raw, access_lines, bounded, make_populated, msg,  # noqa: F401
                       populated_data, queue_ids, smtp, split_stored, stored_one, submission,
                       surat, wait_queue_empty)


def rcpt_session(s, kind="smtp", frm="s@remote.test"):
    r = Raw(s.port(kind))
    r.greet()
    r.expect("MAIL FROM:<%s>" % frm, 250, "2.1.0")
    return r


# ---------------------------------------------------------------- relay, users

def test_relay_denied(surat):
    r = rcpt_session(surat)
    r.expect("RCPT TO:<victim@remote.test>", 554, "5.7.1")
    # Our host name is not a local domain either, and neither are look-alikes.
    r.expect("RCPT TO:<alice@example.test.evil.test>", 554, "5.7.1")
    r.expect("RCPT TO:<alice@[127.0.0.1]>", 554, "5.7.1")
    r.expect("RCPT TO:<\"alice@example.test\"@remote.test>", 554, "5.7.1")
    r.expect("RCPT TO:<@example.test:victim@remote.test>", 554, "5.7.1")
    r.expect("RCPT TO:<alice%remote.test@example.test>", 550, "5.1.1")
    r.expect("DATA", 554, "5.5.1")
    r.expect("RSET", 250)
    r.expect("QUIT", 221)
    r.close()
    time.sleep(0.5)
    assert queue_ids(surat) == []


def test_relay_denied_smtplib(surat):
    with smtp(surat) as c:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as ei:
            c.sendmail("s@remote.test", ["victim@remote.test"], msg())
        code, text = ei.value.recipients["victim@remote.test"]
        assert code == 554 and text.startswith(b"5.7.1"), (code, text)


def test_unknown_user(surat):
    r = rcpt_session(surat)
    r.expect("RCPT TO:<nobody@example.test>", 550, "5.1.1")
    r.expect("RCPT TO:<nobody+alice@example.test>", 550, "5.1.1")
    r.expect("RCPT TO:<alice@example.test>", 250, "2.1.5")
    r.expect("RCPT TO:<Bob@EXAMPLE.test>", 250, "2.1.5")
    r.expect("QUIT", 221)
    r.close()


def test_rcpt_sees_accounts_changed_meanwhile(surat):
    """RCPT's lookups share a read transaction; it must end with the command,
    or a later RCPT would see an old snapshot of the accounts."""
    r = rcpt_session(surat)
    r.expect("RCPT TO:<carol@example.test>", 550, "5.1.1")
    surat.add_user("carol@example.test")
    r.expect("RCPT TO:<carol@example.test>", 250, "2.1.5")
    surat.cli("alias", "add", "team@example.test", "carol@example.test")
    r.expect("RCPT TO:<team@example.test>", 250, "2.1.5")
    surat.cli("user", "del", "carol@example.test")
    r.expect("RCPT TO:<carol@example.test>", 550, "5.1.1")
    r.expect("QUIT", 221)
    r.close()


def test_submission_requires_auth(surat):
    r = Raw(surat.port("submission"))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    r.expect("MAIL FROM:<s@remote.test>", 530, "5.7.0")
    r.expect("RCPT TO:<bob@example.test>", 503, "5.5.1")
    r.close()
    r = Raw(surat.port("submissions"), tls=True)
    r.greet()
    r.expect("MAIL FROM:<>", 530, "5.7.0")
    r.close()


def test_spoofed_mail_from_on_submission(surat):
    with submission(surat) as c:
        for frm in ("bob@example.test", "ceo@bank.test", "alice@example.test.bank.test"):
            code, text = c.mail(frm)
            assert code == 553 and text.startswith(b"5.7.1"), (frm, code, text)
        # Own address, +tag form, different case: fine.
        for frm in ("alice@example.test", "alice+news@example.test", "Alice@Example.Test"):
            code, text = c.mail(frm)
            assert code == 250, (frm, code, text)
            c.rset()


def test_alias_owner_may_send_as_alias(surat):
    surat.cli("alias", "add", "sales@example.test", "alice@example.test")
    surat.cli("alias", "add", "@example.test", "alice@example.test")
    with submission(surat) as c:
        code, text = c.mail("sales@example.test")
        assert code == 250, (code, text)
        c.rset()
        # The catch-all gives no right to send as any address of the domain.
        code, text = c.mail("random@example.test")
        assert code == 553 and text.startswith(b"5.7.1"), (code, text)
    with submission(surat, "bob@example.test", "bob-pw") as c:
        code, text = c.mail("sales@example.test")
        assert code == 553 and text.startswith(b"5.7.1"), (code, text)


SPOOFED_FROM = [
    "ceo@bank.test",
    "bob@example.test",
    "\"alice@example.test\" <ceo@bank.test>",
    "alice@example.test <ceo@bank.test>",
    "Alice <alice@example.test>, ceo@bank.test",
    "(alice@example.test) ceo@bank.test",
    "=?utf-8?q?alice=40example=2Etest?= <ceo@bank.test>",
    "undisclosed:ceo@bank.test;",
    # A reader that ends the field at the NUL shows ceo@bank.test.
    "\"<ceo@bank.test>\0\" <alice@example.test>",
    "alice@example.test (\0ceo@bank.test)",
]


def test_spoofed_from_header_on_submission(surat):
    good = b"From: \"Alice\" <alice@example.test>\r\nSubject: ok\r\n\r\nok\r\n"
    with submission(surat) as c:
        for from_header in SPOOFED_FROM:
            body = ("From: %s\r\nTo: bob@example.test\r\nSubject: spoof\r\n\r\nx\r\n" %
                    from_header).encode()
            c.mail("alice@example.test")
            c.rcpt("bob@example.test")
            code, text = c.data(body)
            assert code == 553 and text.startswith(b"5.7.1"), (from_header, code, text)
        # The session goes on.
        assert c.sendmail("alice@example.test", ["bob@example.test"], good) == {}
    stored = stored_one(surat, "bob@example.test")
    # As sent, with the Message-ID: and Date: submission adds at the header's end.
    assert re.search(rb'\r\nFrom: "Alice" <alice@example\.test>\r\nSubject: ok\r\n'
                     rb'Message-ID: <[0-9a-f]+@mx\.example\.test>\r\nDate: [^\r\n]+\r\n'
                     rb'\r\nok\r\n\Z', stored), stored
    assert b"spoof" not in stored


def test_spoofed_obsolete_from_syntax(surat):
    """'From :' (RFC 5322 obs-from, white space before the colon) is a From:."""
    with submission(surat) as c:
        for hdr in (b"From : ceo@bank.test", b"From\t: ceo@bank.test",
                    b"From: alice@example.test\r\nFrom : ceo@bank.test"):
            c.mail("alice@example.test")
            c.rcpt("bob@example.test")
            code, text = c.data(hdr + b"\r\nSubject: obs\r\n\r\nx\r\n")
            assert code == 553 and text.startswith(b"5.7.1"), (hdr, code, text)


def test_from_header_second_from_line(surat):
    """Two From: header fields (the second a spoof) are refused."""
    body = (b"From: alice@example.test\r\nTo: bob@example.test\r\nFrom: ceo@bank.test\r\n"
            b"Subject: two froms\r\n\r\nx\r\n")
    with submission(surat) as c:
        c.mail("alice@example.test")
        c.rcpt("bob@example.test")
        code, text = c.data(body)
        assert code in (553, 550, 554) and text[:2] == b"5.", (code, text)


def test_from_header_folded(surat):
    body = (b"From: \"Alice\r\n Liddell\" <alice@example.test>,\r\n\tceo@bank.test\r\n"
            b"Subject: folded\r\n\r\nx\r\n")
    with submission(surat) as c:
        c.mail("alice@example.test")
        c.rcpt("bob@example.test")
        code, text = c.data(body)
        assert code == 553 and text.startswith(b"5.7.1"), (code, text)


def test_mx_does_not_check_from(surat):
    # MX: anyone may claim any From:; that is for DMARC, not for us.
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["bob@example.test"],
                          msg(frm="\"alice@example.test\" <ceo@bank.test>")) == {}
    stored_one(surat, "bob@example.test")


# ---------------------------------------------------------------- AUTH before TLS

def test_auth_not_before_tls_on_587(surat):
    r = Raw(surat.port("submission"))
    ehlo = r.greet()
    assert "STARTTLS" in ehlo
    assert not any(l.startswith("AUTH") for l in ehlo), ehlo
    ir = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
    r.expect("AUTH PLAIN " + ir, 538, "5.7.11")
    r.expect("AUTH LOGIN", 538, "5.7.11")
    r.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    r.close()
    # Port 25 without TLS: the same.
    r = Raw(surat.port("smtp"))
    ehlo = r.greet()
    assert not any(l.startswith("AUTH") for l in ehlo), ehlo
    r.expect("AUTH PLAIN " + ir, 538, "5.7.11")
    r.close()


def test_auth_plaintext_allowed_by_config(make_populated):
    s = make_populated(extra={"allow_plaintext_auth": "yes"})
    r = Raw(s.port("submission"))
    ehlo = r.greet()
    assert "AUTH PLAIN LOGIN" in ehlo, ehlo
    r.auth("alice@example.test", "alice-pw")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"From: alice@example.test\r\nSubject: clear\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    _, received, _ = split_stored(stored_one(s, "bob@example.test"))
    assert "with ESMTPA" in received, received


def test_auth_after_auth_and_in_transaction(surat):
    r = Raw(surat.port("submissions"), tls=True)
    r.greet()
    r.expect("AUTH PLAIN", 334)
    # An over-long SASL response line is refused cleanly, also one that
    # starts like a BDAT command (it is a response, not a command).
    r.expect("A" * 20000, 500, "5.5.6")
    r.expect("AUTH PLAIN", 334)
    r.expect("BDAT+" + "A" * 20000, 500, "5.5.6")
    r.auth("alice@example.test", "alice-pw")
    r.expect("MAIL FROM:<alice@example.test>", 250)
    t = r.expect("AUTH LOGIN", 503, "5.5.1")
    assert t[-1] == ("5.5.1 Bad sequence of commands: AUTH not permitted during a mail "
                     "transaction"), t
    r.close()


def test_auth_unknown_mechanism(surat):
    r = Raw(surat.port("submissions"), tls=True)
    r.greet()
    r.expect("AUTH CRAM-MD5", 504, "5.5.4")
    r.close()


# ---------------------------------------------------------------- sizes

@pytest.fixture
def small(make_populated):
    return make_populated(extra={"smtp.max_message_size": "10K",
                                      "smtp.max_recipients": "3", "smtp.max_errors": "5"})


def test_size_param_too_big(small):
    r = Raw(small.port("smtp"))
    ehlo = r.greet()
    assert "SIZE 10240" in ehlo, ehlo
    r.expect("MAIL FROM:<s@remote.test> SIZE=10241", 552, "5.3.4")
    # Beyond 64 bits: not a number we can compare, a parameter error.
    r.expect("MAIL FROM:<s@remote.test> SIZE=99999999999999999999999", 501, "5.5.4")
    r.expect("MAIL FROM:<s@remote.test> SIZE=10240", 250, "2.1.0")
    r.expect("QUIT", 221)
    r.close()


def test_recipients_past_the_limit_end_in_errors(small):
    """452 past smtp.max_recipients is no error: the sender goes on in the
    next transaction. But past 1000 more in the same transaction (Postfix's
    smtpd_recipient_overshoot_limit) each counts as one, or a client could
    send RCPTs for ever."""
    r = rcpt_session(small)
    for _ in range(3):
        r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"RCPT TO:<bob@example.test>\r\n" * 1005)
    codes = [r.reply()[0] for _ in range(1005)]
    assert codes[:1004] == [452] * 1004, sorted(set(codes[:1004]))
    assert codes[1004] == 421, codes[1004]
    r.close()


def test_data_too_big(small):
    r = rcpt_session(small)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    big = b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 200
    r.send(big + b".\r\n")
    c, t = r.reply()
    assert c == 552 and t[-1].startswith("5.3.4"), (c, t)
    # The session stays usable.
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"Subject: small\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    stored = stored_one(small, "alice@example.test")
    assert b"Subject: small" in stored
    time.sleep(0.3)
    assert len(small.messages("alice@example.test")) == 1


def test_size_limit_boundary(small):
    """Exactly max_message_size octets pass; one more does not."""
    head = b"Subject: edge\r\n\r\n"
    for size, code in ((10240, 250), (10241, 552)):
        n = size - len(head)
        body = head + (b"z" * 98 + b"\r\n") * (n // 100) + b"y" * (n % 100 - 2) + b"\r\n"
        assert len(body) == size
        with smtp(small) as c:
            c.mail("s@remote.test")
            c.rcpt("bob@example.test")
            got, text = c.data(body)
            assert got == code, (size, got, text)
    stored = stored_one(small, "bob@example.test")
    assert len(split_stored(stored)[2]) == 10240


def test_auth_failures_count_as_errors(small):
    r = Raw(small.port("submissions"), tls=True)
    r.greet()
    bad = base64.b64encode(b"\0alice@example.test\0wrong").decode()
    for _ in range(4):
        r.expect("AUTH PLAIN " + bad, 535, "5.7.8")
    c, t = r.cmd("AUTH PLAIN " + bad)
    assert c == 535, (c, t)
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.7.0"), (c, t)
    assert r.closed()


def test_data_too_big_smtplib(small):
    with smtp(small) as c:
        # Without SIZE=: refused after the data.
        c.mail("s@remote.test")
        c.rcpt("alice@example.test")
        code, text = c.data(b"Subject: big\r\n\r\n" + (b"y" * 900 + b"\r\n") * 12)
        assert code == 552 and text.startswith(b"5.3.4"), (code, text)
        # sendmail() sends SIZE= since the server has SIZE: refused at MAIL.
        with pytest.raises(smtplib.SMTPSenderRefused) as ei:
            c.sendmail("s@remote.test", ["alice@example.test"], b"z" * 20000)
        assert ei.value.smtp_code == 552 and ei.value.smtp_error.startswith(b"5.3.4")


def test_bdat_too_big(small):
    r = rcpt_session(small)
    r.expect("RCPT TO:<alice@example.test>", 250)
    chunk = b"Subject: bdat big\r\n\r\n" + b"x" * 8000 + b"\r\n"
    r.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    c, t = r.reply()
    assert c == 250, t
    r.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    c, t = r.reply()
    assert c == 552 and t[-1].startswith("5.3.4"), (c, t)
    # A huge announced chunk: refused, and the session does not wait for it
    # to be sent in full to stay in sync only if the client sends it; here
    # we send it to prove the stream stays in sync.
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"BDAT 20000 LAST\r\n" + b"y" * 20000)
    c, t = r.reply()
    assert c == 552 and t[-1].startswith("5.3.4"), (c, t)
    r.expect("NOOP", 250)
    r.expect("QUIT", 221)
    r.close()
    time.sleep(0.3)
    assert small.messages("alice@example.test") == []


def held_in_data(s, data, source=None):
    """A session on s's MX port (from source) in DATA that has sent data, no
    end, and that the daemon has had time to take in."""
    r = Raw(s.port("smtp"), source=source)
    r.greet()
    r.in_data(data)
    time.sleep(0.5)
    return r


def test_mail_held_in_memory_has_a_ceiling(make_populated):
    """A message goes to the queue only whole, so sessions in DATA hold theirs
    in memory: smtp.max_data_memory caps what they hold, in all and per
    client address (a quarter, never less than one message). A client that
    sends big messages on many connections and never ends them gets
    452 4.3.1 for those past the cap, other clients go on, and what a session
    held is free again once it ends."""
    s = make_populated(extra={"smtp.max_message_size": "4M", "smtp.max_data_memory": "8M"})
    big = b"Subject: big\r\n\r\n" + (b"m" * 998 + b"\r\n") * 3000     # 3 MB

    def end(r):
        got = r.ended(b".\r\n")
        r.expect("QUIT", 221)
        r.close()
        return got

    a1 = held_in_data(s, big, "127.0.0.1")      # 127.0.0.1 holds 3 MB
    a2 = held_in_data(s, big, "127.0.0.1")      # past its 4 MB: the rest is dropped
    b1 = held_in_data(s, big, "127.0.0.2")      # 127.0.0.2 holds 3 MB: about 7 MB in all
    c1 = held_in_data(s, big, "127.0.0.3")      # past the 8 MB in all
    assert [end(r) for r in (a1, a2, b1, c1)] == [
        (250, "2.0.0"), (452, "4.3.1"), (250, "2.0.0"), (452, "4.3.1")]
    # Freed: the same client gets a big message through again.
    a3 = held_in_data(s, big, "127.0.0.1")
    a4 = held_in_data(s, big, "127.0.0.2")
    assert [end(r) for r in (a3, a4)] == [(250, "2.0.0"), (250, "2.0.0")]
    assert len(s.wait_messages("alice@example.test", 4)) == 4
    refused = [l for l in access_lines(s) if "result=452" in l]
    assert len(refused) == 2 and all("size=" in l for l in refused), refused
    log = s.log()
    assert log.count("message refused: sessions hold") == 2, log[-3000:]


def test_message_too_big_gets_552_past_the_memory_ceiling_too(make_populated):
    """A message that goes past smtp.max_data_memory is dropped as it comes
    and its end gets 452 4.3.1, to be tried again; but one that also goes
    past smtp.max_message_size would never be taken: it gets the size's
    552 5.3.4, or its sender would try it again for days. DATA and BDAT."""
    s = make_populated(extra={"smtp.max_message_size": "2M", "smtp.max_data_memory": "4M"})
    held = b"Subject: held\r\n\r\n" + (b"h" * 998 + b"\r\n") * 1500           # 1.5 MB
    huge = b"Subject: huge\r\n\r\n" + (b"m" * 998 + b"\r\n") * 3000           # 3 MB
    a = held_in_data(s, held)           # 127.0.0.1 holds 1.5 MB of its 2 MB
    b = Raw(s.port("smtp"))
    b.greet()
    b.in_data(huge)                     # past the memory at 0.5 MB, the size at 2
    assert b.ended(b".\r\n") == (552, "5.3.4")
    assert b.bdat_last(huge) == (552, "5.3.4")
    # Within the size, the memory's 452 as before.
    assert b.bdat_last(held) == (452, "4.3.1")
    b.expect("QUIT", 221)
    b.close()
    assert a.ended(b".\r\n")[0] == 250
    a.expect("QUIT", 221)
    a.close()
    assert [l.split(" result=")[1][:3] for l in access_lines(s) if "result=" in l] == [
        "552", "552", "452", "250"]


def test_memory_refusals_are_not_the_clients_errors(make_populated):
    """A message refused for want of memory (452 4.3.1) is the daemon's
    trouble, made by other sessions, not the client's error: as the disk's
    452, it does not count toward smtp.max_errors, and the session stays
    usable however many of its messages meet it."""
    s = make_populated(extra={"smtp.max_message_size": "1M", "smtp.max_data_memory": "1M",
                              "smtp.max_errors": "3"})
    a = held_in_data(s, b"Subject: held\r\n\r\n" + (b"h" * 998 + b"\r\n") * 1000)  # 1 MB of 1 MiB
    b = Raw(s.port("smtp"))
    b.greet()
    body = b"Subject: m\r\n\r\n" + (b"m" * 998 + b"\r\n") * 100
    for _ in range(4):
        b.in_data(body)
        assert b.ended(b".\r\n") == (452, "4.3.1")
        assert b.bdat_last(body) == (452, "4.3.1")
    assert a.ended(b".\r\n")[0] == 250
    a.expect("QUIT", 221)
    a.close()
    # Memory again: the next one is taken, on the same session.
    b.in_data(body)
    assert b.ended(b".\r\n")[0] == 250
    b.expect("QUIT", 221)
    b.close()
    assert "too many errors" not in s.log()


def test_client_gone_during_a_check_while_holding_a_chunk(make_populated):
    """A BDAT chunk is held in memory until the message ends; a client that
    hangs up while an RCPT after it is checked (a worker job) leaves a
    session that is freed, and its chunk let go of, when the job ends, with
    its connection gone: the daemon serves on, and what the session held is
    counted free again (the sanitizers watch)."""
    s = make_populated(extra={"smtp.max_message_size": "2M", "smtp.max_data_memory": "2M"})
    s.cli("user", "quota", "bob@example.test", "1K")
    chunk = b"Subject: held\r\n\r\n" + (b"h" * 998 + b"\r\n") * 1000     # 1 MB
    for i in range(10):
        r = Raw(s.port("smtp"))
        r.greet()
        r.expect("MAIL FROM:<gone%d@remote.test>" % i, 250)
        r.expect("RCPT TO:<alice@example.test>", 250)
        r.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        c, t = r.reply()
        assert c == 250, t
        r.send(b"RCPT TO:<bob@example.test>\r\n" * 5)
        r.close()
        # Its session is freed (its line logged) before the next starts.
        deadline = time.time() + 10
        while not [l for l in access_lines(s) if "from=<gone%d@" % i in l]:
            assert time.time() < deadline, "session %d never ended" % i
            time.sleep(0.05)
    # Nothing held is left counted: a message of 1.5 MB from the same
    # address (within the 2 MB a client may hold) goes through.
    r = Raw(s.port("smtp"))
    r.greet()
    r.in_data(chunk + chunk[:500000])
    assert r.ended(b"\r\n.\r\n")[0] == 250
    r.expect("QUIT", 221)
    r.close()
    assert len(s.wait_messages("alice@example.test", 1)) == 1


def test_too_many_recipients(small):
    r = rcpt_session(small)
    for u in ("alice", "bob", "alice+1"):
        r.expect("RCPT TO:<%s@example.test>" % u, 250)
    r.expect("RCPT TO:<bob+2@example.test>", 452, "4.5.3")
    r.expect("DATA", 354)
    r.send(b"Subject: three\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    stored_one(small, "alice@example.test")
    stored_one(small, "bob@example.test")


def test_overlong_command_line(small):
    r = Raw(small.port("smtp"))
    r.greet()
    r.expect("NOOP " + "a" * 600, 500, "5.5.2")
    # 100 KB without a line end: dropped, one reply when the line ends.
    r.send(b"X" * 100000)
    time.sleep(0.2)
    r.send(b"\r\n")
    c, t = r.reply()
    assert c == 500 and t[-1].startswith("5.5.2"), (c, t)
    # An exactly 512-octet line (CRLF included) is fine.
    line = "NOOP " + "b" * (510 - 5)
    assert len(line) + 2 == 512
    r.expect(line, 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.close()


def test_unknown_command_and_error_limit(small):
    r = Raw(small.port("smtp"))
    r.greet()
    c, t = r.cmd("FOO bar")
    assert c == 500 and t[-1].startswith("5.5.2"), (c, t)
    c, t = r.cmd("GET / HTTP/1.0")
    assert 500 <= c <= 504, (c, t)
    r.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
    r.expect("NOOP", 250)
    c, t = r.cmd("MAIL FROM:<not an address>")
    assert c == 501, (c, t)
    # The fifth error: its reply, then 421 at once (as Postfix), and close.
    c, t = r.cmd("BAR")
    assert c == 500 and t[-1].startswith("5.5.2"), (c, t)
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.7.0"), (c, t)
    assert r.closed()


def test_error_limit_pipelined(small):
    """Errors sent in one write: the 421 comes after max_errors, then EOF,
    and nothing after it is answered."""
    r = Raw(small.port("smtp"))
    r.greet()
    r.send(b"".join(b"BAD%d\r\n" % i for i in range(20)))
    codes = []
    while True:
        try:
            codes.append(r.reply()[0])
        except EOFError:
            break
    assert codes == [500] * 5 + [421], codes


def test_client_still_writing_after_421_is_not_reset(small):
    """A client that goes on writing after the 421 (it has not read it yet)
    gets EOF, not RST: the server half-closes and discards its input for a
    while, so the writes succeed and the 421 can be read after them. A plain
    close() would reset the connection at the first late write and fail the
    second with EPIPE."""
    r = Raw(small.port("smtp"))
    r.greet()
    for i in range(4):
        assert r.cmd("BAD%d" % i)[0] == 500
    r.send(b"BAD4\r\n")
    time.sleep(0.3)  # the 421 and the FIN are out; the server is lingering
    for i in range(3):
        r.send(b"NOOP\r\n")
        time.sleep(0.05)
    assert r.reply()[0] == 500
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.7.0"), (c, t)
    assert r.sock.recv(100) == b""
    r.close()


# ---------------------------------------------------------------- smuggling

SMUGGLE_ENDS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n",
                b"\n.\r"]


def test_smtp_smuggling(surat):
    """Every bare-CR/LF look-alike of <CRLF>.<CRLF>, then a second MAIL FROM
    inside: one message, refused for the bare CR/LF, no second message, and
    the session stays usable. One session per variant."""
    for n, end in enumerate(SMUGGLE_ENDS):
        r = rcpt_session(surat)
        r.expect("RCPT TO:<alice@example.test>", 250)
        r.expect("DATA", 354)
        payload = (b"From: s@remote.test\r\nSubject: first\r\n\r\nfirst body" + end +
                   b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
                   b"DATA\r\nFrom: admin@example.test\r\nSubject: smuggled\r\n\r\n"
                   b"smuggled\r\n.\r\n")
        r.send(payload)
        # One reply: nothing is answered for the "smuggled" commands.
        c, t = r.reply()
        assert c == 550 and t[-1].startswith("5.6.0"), (end, c, t)
        r.expect("NOOP", 250)
        r.expect("MAIL FROM:<s@remote.test>", 250)
        r.expect("RCPT TO:<bob@example.test>", 250)
        r.expect("DATA", 354)
        r.send(b"Subject: after %d\r\n\r\nclean\r\n.\r\n" % n)
        c, t = r.reply()
        assert c == 250, (end, c, t)
        r.expect("QUIT", 221)
        r.close()
    uids = surat.wait_messages("bob@example.test", len(SMUGGLE_ENDS))
    got = sorted(split_stored(surat.message("bob@example.test", u))[2] for u in uids)
    assert got == sorted(b"Subject: after %d\r\n\r\nclean\r\n" % n
                         for n in range(len(SMUGGLE_ENDS)))
    time.sleep(0.3)
    assert surat.messages("alice@example.test") == []
    assert len(surat.messages("bob@example.test")) == len(SMUGGLE_ENDS)


def test_smuggling_nul_dot(surat):
    """<CRLF>NUL.<CRLF> is no end of data: one message, nothing smuggled."""
    r = rcpt_session(surat)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"Subject: nul\r\n\r\nbody\r\n\x00.\r\nMAIL FROM:<x@remote.test>\r\n"
           b"RCPT TO:<bob@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n")
    c, t = r.reply()
    assert c in (250, 550), (c, t)
    r.expect("NOOP", 250)
    r.expect("QUIT", 221)
    r.close()
    time.sleep(0.5)
    assert surat.messages("bob@example.test") == []


def test_smuggling_bdat(surat):
    """In BDAT the content is counted, never scanned for a dot."""
    r = rcpt_session(surat)
    r.expect("RCPT TO:<alice@example.test>", 250)
    content = (b"Subject: bdat\r\n\r\nbody\r\n.\r\nMAIL FROM:<x@remote.test>\r\n"
               b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
    r.send(b"BDAT %d LAST\r\n" % len(content) + content)
    c, t = r.reply()
    assert c == 250, (c, t)
    r.expect("QUIT", 221)
    r.close()
    stored = stored_one(surat, "alice@example.test")
    assert split_stored(stored)[2] == content
    time.sleep(0.3)
    assert surat.messages("bob@example.test") == []


def test_bare_lf_in_header_refused(surat):
    with smtp(surat) as c:
        c.mail("s@remote.test")
        c.rcpt("alice@example.test")
        code, text = c.data(b"Subject: x\nX-Other: y\r\n\r\nbody\r\n")
        assert code == 550 and text.startswith(b"5.6.0"), (code, text)
        # RSET and a clean one.
        assert c.sendmail("s@remote.test", ["alice@example.test"], msg("clean")) == {}
    assert stored_one(surat, "alice@example.test").endswith(msg("clean"))


def test_long_line_in_data(surat):
    with smtp(surat) as c:
        c.mail("s@remote.test")
        c.rcpt("alice@example.test")
        code, text = c.data(b"Subject: long\r\n\r\n" + b"a" * 1200 + b"\r\n")
        assert code == 550 and text.startswith(b"5.6.0"), (code, text)


def test_long_line_in_bdat(surat):
    """The 1000-octet text line (CRLF included) holds in BDAT too, where no
    dot is looked for: 1001 octets are refused, also when the line is split
    between two chunks; 1000 pass."""
    head = b"Subject: bdat line\r\n\r\n"
    r = Raw(surat.port("smtp"))
    r.greet()
    assert r.bdat_last(head + b"b" * 999 + b"\r\n") == (550, "5.6.0")
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    first = head + b"c" * 600
    assert r.ended(b"BDAT %d\r\n" % len(first) + first) == (250, "2.0.0")
    assert r.ended(b"BDAT 401 LAST\r\n" + b"c" * 399 + b"\r\n") == (550, "5.6.0")
    fits = head + b"d" * 998 + b"\r\n"
    assert r.bdat_last(fits) == (250, "2.0.0")
    r.expect("QUIT", 221)
    r.close()
    assert stored_one(surat, "alice@example.test").endswith(fits)


def test_mail_loop_refused(surat):
    """By default a message is a loop at 100 Received: fields (RFC 5321 6.3:
    "normally at least 100"); 99 pass."""
    def hops(n):
        return b"".join(b"Received: from h%d by h%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n" %
                        (i, i) for i in range(n))
    with smtp(surat) as c:
        c.mail("s@remote.test")
        c.rcpt("alice@example.test")
        code, text = c.data(hops(100) + b"Subject: loop\r\n\r\nx\r\n")
        assert code == 554 and text.startswith(b"5.4.6"), (code, text)
        c.mail("s@remote.test")
        c.rcpt("alice@example.test")
        code, text = c.data(hops(99) + b"Subject: long way\r\n\r\nx\r\n")
        assert code == 250, (code, text)
    assert b"Subject: long way" in stored_one(surat, "alice@example.test")


def test_bdat_out_of_sequence(surat):
    """A refused BDAT chunk is swallowed whole and leaves the session where
    it was: it must not stand in for EHLO or MAIL. With no MAIL it is a bad
    sequence (503); with MAIL but no recipient, 554."""
    r = Raw(surat.port("smtp"))
    r.reply()
    r.send(b"BDAT 12\r\nMAIL FROM:<>")
    c, t = r.reply()
    assert c == 503 and t[-1].startswith("5.5.1"), (c, t)
    r.send(b"BDAT 0 LAST\r\n")
    c, t = r.reply()
    assert c == 503 and t[-1].startswith("5.5.1"), (c, t)
    r.expect("MAIL FROM:<s@remote.test>", 503, "5.5.1")
    r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.send(b"BDAT 5\r\nhello")
    c, t = r.reply()
    assert c == 554 and t[-1].startswith("5.5.1"), (c, t)
    # Still in the transaction: MAIL is nested, and a RCPT after a chunk
    # comes too late (RFC 3030 2), even after a refused one.
    r.expect("MAIL FROM:<s@remote.test>", 503, "5.5.1")
    r.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
    # The transaction's BDAT already failed: LAST refuses it whole.
    r.send(b"BDAT 3 LAST\r\nabc")
    c, t = r.reply()
    assert c == 554 and t[-1].startswith("5.5.1"), (c, t)
    r.expect("QUIT", 221)
    r.close()
    time.sleep(0.3)
    assert surat.messages("alice@example.test") == []


def test_sequence_errors(surat):
    r = Raw(surat.port("smtp"))
    r.reply()
    r.expect("MAIL FROM:<s@remote.test>", 503, "5.5.1")
    r.expect("DATA", 503, "5.5.1")
    r.expect("EHLO client.test", 250)
    r.expect("DATA", 503, "5.5.1")
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("MAIL FROM:<s@remote.test>", 503, "5.5.1")
    r.expect("DATA", 554, "5.5.1")
    r.expect("RCPT TO:<nobody@example.test>", 550, "5.1.1")
    r.expect("DATA", 554, "5.5.1")
    r.expect("RSET", 250, "2.0.0")
    r.expect("VRFY alice@example.test", 252)
    r.expect("EXPN staff", 502)
    r.expect("QUIT", 221, "2.0.0")
    assert r.closed()


# ---------------------------------------------------------------- quota

def test_over_quota(surat):
    """bob: quota 4K, holding a 2.9K message. Another such message would pass
    the quota, a temporary failure (the user may make room): 452 4.2.2 at RCPT
    with SIZE=, else accepted and deferred. A message bigger than the whole
    quota can never fit: 552 5.2.3 at RCPT with SIZE=, else bounced at once
    with 5.2.3, not retried for days."""
    big = b"Subject: big\r\n\r\n" + (b"q" * 70 + b"\r\n") * 40
    huge = b"Subject: huge\r\n\r\n" + (b"h" * 70 + b"\r\n") * 70
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["bob@example.test"], big) == {}
    stored_one(surat, "bob@example.test")
    surat.cli("user", "quota", "bob@example.test", "4K")
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test> SIZE=%d" % len(big), 250)
    r.expect("RCPT TO:<bob@example.test>", 452, "4.2.2")
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(big + b".\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("MAIL FROM:<s@remote.test> SIZE=%d" % len(huge), 250)
    c, t = r.cmd("RCPT TO:<bob@example.test>")
    assert c == 552 and t[-1].startswith("5.2.3 <bob@example.test>: "), (c, t)
    r.expect("RSET", 250)
    # Without SIZE=: accepted, then deferred by delivery.
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("DATA", 354)
    r.send(big + b".\r\n")
    c, t = r.reply()
    assert c == 250, t
    # Without SIZE=, bigger than the quota: bounced to the (local) sender.
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("DATA", 354)
    r.send(huge + b".\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    bounce = stored_one(surat, "alice@example.test", 2)
    assert b"Status: 5.2.3" in bounce and b"Action: failed" in bounce, bounce
    assert re.search(rb"Diagnostic-Code: X-surat; 5\.2\.3 Message too big for the mailbox "
                     rb"of bob@example\.test: \d+ octets, its quota is 4096",
                     re.sub(rb"\r\n[ \t]+", b" ", bounce)), bounce
    assert b"Subject: huge" in bounce
    deadline = time.time() + 10
    out = ""
    while time.time() < deadline:
        out = surat.cli("queue", "list").stdout
        if "deferred" in out:
            break
        time.sleep(0.1)
    assert re.search(r"<bob@example\.test>\s+local\s+deferred\s+attempts=1\s+next=\S+\s+"
                     r"last=\"4\.2\.2 ", out), out
    assert "huge" not in out
    assert len(surat.messages("bob@example.test")) == 1
    # Small mail still fits.
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["bob@example.test"], b"Subject: s\r\n\r\nx\r\n") == {}
    stored_one(surat, "bob@example.test", 2)


def test_rcpts_for_a_full_mailbox_are_junk_commands(make_populated):
    """452 4.2.2 (mailbox full) is no error of the client's, but the RCPT
    moves no mail: past smtp.max_junk_commands each counts as an error, or a
    client could send RCPTs for a full mailbox for ever (each a worker's
    look at the store). Postfix counts every refused RCPT as an error."""
    s = make_populated(extra={"smtp.max_junk_commands": "2", "smtp.max_errors": "1"})
    with smtp(s) as c:
        assert c.sendmail("s@remote.test", ["bob@example.test"], msg(to="bob@example.test")) == {}
    stored_one(s, "bob@example.test")
    s.cli("user", "quota", "bob@example.test", "1")
    r = rcpt_session(s)
    r.send(b"RCPT TO:<bob@example.test>\r\n" * 5)
    got = [r.reply() for _ in range(3)]
    assert [c for c, _ in got] == [452, 452, 421], got
    assert got[0][1][-1].startswith("4.2.2 ") and got[2][1][0].startswith("4.7.0"), got
    assert r.closed()


def test_rcpts_refused_as_temporary_lookup_failures_are_junk_commands(make_populated):
    """451 4.3.0 at RCPT (an alias past the expansion limits here; an
    accounts database error the same way) is no error of the client's, but
    the RCPT moves no mail, and each costs an expansion of up to 1000
    addresses: past smtp.max_junk_commands each counts as an error, or a
    client could send them for ever, as for a full mailbox."""
    import sqlite3
    s = make_populated(extra={"smtp.max_junk_commands": "2", "smtp.max_errors": "1"})
    rows = [("d%d@example.test" % i, "d%d@example.test" % (i + 1)) for i in range(1, 12)]
    rows.append(("d12@example.test", "bob@example.test"))
    # As `surat alias add` stores them, in one transaction (12 CLI calls
    # under ASan would take seconds).
    con = sqlite3.connect(os.path.join(s.data_dir, "accounts.db"), timeout=10)
    with con:
        con.executemany("INSERT INTO aliases(source, target) VALUES(?, ?)", rows)
    con.close()
    r = rcpt_session(s)
    r.send(b"RCPT TO:<d1@example.test>\r\n" * 5)
    got = [r.reply() for _ in range(3)]
    assert [c for c, _ in got] == [451, 451, 421], got
    assert got[0][1][-1].startswith("4.3.0 ") and got[2][1][0].startswith("4.7.0"), got
    assert r.closed()


def test_mailbox_exactly_at_quota_refuses_at_rcpt(surat):
    """A mailbox whose usage equals its quota has room for no message: RCPT
    without SIZE= gets 452 4.2.2 at once, not a 250 and then a deferral. Nor
    has one with room for less than the headers every message gets (our
    Received:, Return-Path:, Delivered-To:)."""
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["bob@example.test"], msg(to="bob@example.test")) == {}
    stored_one(surat, "bob@example.test")
    out = surat.cli("mailbox", "list", "bob@example.test").stdout
    used = sum(int(n) for n in re.findall(r"size=(\d+)", out))
    assert used > 0, out
    for quota in (used, used + 1, used + 150):
        surat.cli("user", "quota", "bob@example.test", str(quota))
        r = rcpt_session(surat)
        r.expect("RCPT TO:<bob@example.test>", 452, "4.2.2")
        r.expect("QUIT", 221)
        r.close()
    surat.cli("user", "quota", "bob@example.test", str(used + 400))
    r = rcpt_session(surat)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("QUIT", 221)
    r.close()


def test_quota_check_at_rcpt_makes_no_store(surat):
    """The RCPT-time quota check opened the recipient's store, and so made
    one (its directory, index.db) for a user who never had mail, though no
    message came. A missing store is an empty one: the check makes nothing,
    and still refuses what can never fit."""
    surat.add_user("carol@example.test", "carol-pw", quota="1K")
    home = os.path.join(surat.data_dir, "mail", "example.test", "carol")
    r = rcpt_session(surat)
    r.expect("RCPT TO:<carol@example.test>", 250)
    r.expect("RSET", 250)
    surat.cli("user", "quota", "carol@example.test", "100")  # less than our headers
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<carol@example.test>", 452, "4.2.2")
    r.expect("QUIT", 221)
    r.close()
    assert not os.path.exists(home)


def test_quota_at_rcpt_counts_the_headers_we_add(surat):
    """SIZE= counts the message as the client sends it; the mailbox stores it
    with our Received: and the delivery's Return-Path: and Delivered-To: on
    top. RCPT judges the quota on the stored size: a message that passes RCPT
    is delivered, not deferred; one that would not fit is refused at RCPT
    (452 4.2.2, or 552 5.2.3 if it can never fit), not accepted and then
    deferred or bounced."""
    body = msg(to="bob@example.test")

    def send(size_ok):
        r = Raw(surat.port("smtp"))
        r.greet()
        r.expect("MAIL FROM:<s@remote.test> SIZE=%d" % len(body), 250)
        if size_ok is not True:
            r.expect("RCPT TO:<bob@example.test>", *size_ok)
            r.expect("QUIT", 221)
            r.close()
            return
        r.expect("RCPT TO:<bob@example.test>", 250)
        r.expect("DATA", 354)
        r.send(body + b".\r\n")
        c, t = r.reply()
        assert c == 250, t
        r.expect("QUIT", 221)
        r.close()

    # Empty mailbox, quota a little above the client's size, below the
    # stored one: it can never fit.
    surat.cli("user", "quota", "bob@example.test", str(len(body) + 20))
    send((552, "5.2.3"))
    surat.cli("user", "quota", "bob@example.test", "0")
    send(True)
    stored = stored_one(surat, "bob@example.test")
    assert len(stored) > len(body) + 100, (len(stored), len(body))
    # One stored: room for the client's size and a little, not for the headers.
    surat.cli("user", "quota", "bob@example.test", str(2 * len(stored) - 50))
    send((452, "4.2.2"))
    # Room for the stored size (and a few octets in case the session id or
    # the date is longer): accepted and delivered, not deferred.
    surat.cli("user", "quota", "bob@example.test", str(2 * len(stored) + 8))
    send(True)
    stored_one(surat, "bob@example.test", 2)
    assert "deferred" not in surat.cli("queue", "list").stdout


def test_quota_at_rcpt_counts_the_empty_line_mx_puts_in(surat):
    """Content that starts with white space has no header: the empty line
    goes in before it (2 octets) on MX too. RCPT counts them, so a message
    SIZE= says cannot fit by one octet is refused there (552 5.2.3), not
    accepted and then deferred for quota, while one that fits is taken."""
    body = b" no header\r\nSubject: q\r\n\r\nx\r\n"
    r = rcpt_session(surat)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(body + b".\r\n")
    assert r.reply()[0] == 250
    stored = stored_one(surat, "alice@example.test")
    assert b"\r\n\r\n no header\r\n" in stored, stored
    # Bob's copy: the same, his name (two letters shorter) in it twice.
    fits = len(stored) - 4
    for quota, want in ((fits - 1, 552), (fits, 250)):
        surat.cli("user", "quota", "bob@example.test", str(quota))
        r.expect("MAIL FROM:<s@remote.test> SIZE=%d" % len(body), 250, "2.1.0")
        code, text = r.cmd("RCPT TO:<bob@example.test>")
        assert code == want, (quota, fits, code, text)
        r.expect("RSET", 250)
    r.expect("QUIT", 221)
    r.close()


def test_quota_check_keeps_pipelined_order(surat):
    """The quota check of an RCPT runs on a worker; replies to pipelined
    commands still come back in order, each to its command."""
    surat.cli("user", "quota", "bob@example.test", "1K")
    surat.cli("user", "quota", "alice@example.test", "10M")
    r = Raw(surat.port("smtp"))
    r.greet()
    r.cmd("EHLO client.test")
    r.send(b"MAIL FROM:<s@remote.test> SIZE=5000\r\n"
           b"RCPT TO:<bob@example.test>\r\n"
           b"RCPT TO:<alice@example.test>\r\n"
           b"RCPT TO:<nobody@example.test>\r\n"
           b"RCPT TO:<bob@example.test>\r\n"
           b"DATA\r\n")
    got = [r.reply()[0] for _ in range(6)]
    assert got == [250, 552, 250, 550, 552, 354], got
    r.send(b"Subject: q\r\n\r\nx\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    stored_one(surat, "alice@example.test")
    assert surat.messages("bob@example.test") == []


def test_client_gone_during_quota_check(surat):
    """A client that hangs up while its RCPT's quota check runs: the session
    is freed when the check ends (the sanitizers watch), the daemon serves on,
    and each unfinished transaction still leaves its access-log line."""
    surat.cli("user", "quota", "bob@example.test", "1K")
    for i in range(20):
        r = Raw(surat.port("smtp"))
        r.greet()
        r.send(b"EHLO c.test\r\nMAIL FROM:<gone%d@remote.test>\r\n" % i +
               b"RCPT TO:<bob@example.test>\r\n" * 5)
        r.close()
    with smtp(surat) as c:
        assert c.sendmail("s@remote.test", ["bob@example.test"], b"Subject: s\r\n\r\nx\r\n") == {}
    stored_one(surat, "bob@example.test")
    deadline = time.time() + 10
    while True:
        gone = [l for l in access_lines(surat) if "from=<gone" in l]
        if len(gone) >= 20 or time.time() > deadline:
            break
        time.sleep(0.05)
    for i in range(20):
        mine = [l for l in gone if "from=<gone%d@remote.test>" % i in l]
        assert len(mine) == 1, (i, gone)
        assert "access id=-" in mine[0] and 'reason="transaction not completed"' in mine[0], mine
        assert "client=localhost[127.0.0.1]" in mine[0], mine


# ---------------------------------------------------------------- disk space

def test_mail_refused_when_disk_space_is_low(make_populated):
    """Below queue.min_free free bytes on the spool's filesystem, MAIL gets
    452 4.3.1 before the client sends any data; the session goes on."""
    s = make_populated({"queue.min_free": "1000000G"})  # more than any disk here
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test>", 452, "4.3.1")
    r.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
    r.expect("MAIL FROM:<> SIZE=100", 452, "4.3.1")
    r.expect("NOOP", 250)
    r.expect("QUIT", 221)
    r.close()
    assert "less than 1073741824000000 bytes free for the queue" in s.log()
    assert queue_ids(s) == []
    # Each refused MAIL is a message refused: its access line says why.
    refused = [l for l in s.log().splitlines() if " access " in l]
    assert len(refused) == 2 and all(" result=452 reason=\"insufficient system storage\" "
                                     in l for l in refused), refused


def test_mails_refused_for_disk_space_are_junk_commands(make_populated):
    """452 4.3.1 at MAIL is no error of the client's, but moves no mail: past
    smtp.max_junk_commands each counts as an error, or a client sending MAIL
    on and on would hold its connection, and have a warning and an access
    line written for each, while the disk is short."""
    s = make_populated({"queue.min_free": "1000000G", "smtp.max_junk_commands": "2",
                        "smtp.max_errors": "1"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.send(b"MAIL FROM:<s@remote.test>\r\n" * 5)
    got = [r.reply() for _ in range(3)]
    assert [c for c, _ in got] == [452, 452, 421], got
    assert got[2][1][0].startswith("4.7.0"), got
    assert r.closed()
    assert len([l for l in s.log().splitlines() if " access " in l]) == 2


def test_declared_size_counts_against_the_free_space(make_populated, tmp_path):
    """RFC 1870 6.1: a SIZE= the spool cannot take now, on top of the
    reserve, is 452 4.3.1 at MAIL (as Postfix), not a 250 and a failure after
    the whole message was sent; one that fits is taken. The reserve is set
    1 GB under what is free, so the test holds while others use the disk."""
    st = os.statvfs(str(tmp_path))
    free = st.f_bavail * st.f_frsize
    if free < (3 << 30):
        pytest.skip("needs 3 GB free")
    s = make_populated({"queue.min_free": str(free - (1 << 30)),
                        "smtp.max_message_size": "2000M"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test> SIZE=%d" % (1900 << 20), 452, "4.3.1")
    r.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
    r.expect("MAIL FROM:<s@remote.test> SIZE=1000", 250, "2.1.0")
    r.expect("QUIT", 221)
    r.close()


def test_mail_taken_with_room_to_spare(make_populated):
    """The reserve is checked against what is free, not refused outright:
    the default (1.5 x smtp.max_message_size) and an explicit 0 take mail."""
    for extra in ({}, {"queue.min_free": "0"}):
        s = make_populated(extra)
        with smtp(s) as c:
            assert c.sendmail("s@remote.test", ["alice@example.test"], msg()) == {}
        stored_one(s, "alice@example.test")
        s.stop()


@pytest.mark.parametrize("min_free", ["0", "1K"])
def test_disk_full_loses_nothing(make_surat, populated_data, tmp_path, min_free):
    """On a small filesystem (a 6 MB tmpfs; root only): a message that fits
    the spool but not the mailbox gets its 250 and is deferred with 4.3.1;
    the next one, which does not fit the spool, gets 452 4.3.1 under DATA and
    leaves no part of itself; an IMAP APPEND gets NO [OVERQUOTA]. Once the
    admin makes room, `queue flush` delivers the deferred one, once. The
    same with a reserve smaller than the message: what was free then is
    still more than the reserve, yet the disk was full."""
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or os.system("mount -t tmpfs -o size=6m surat-test %s "
                                      "2>/dev/null" % small) != 0:
        pytest.skip("needs root to mount a small tmpfs")
    s = None
    try:
        s = make_surat({"data_dir": str(small / "data"), "queue.min_free": min_free,
                        "smtp.max_message_size": "5M", "allow_plaintext_auth": "yes"},
                       kinds=("smtp", "imap"), start=False)
        s.data_dir = str(small / "data")  # the config's later data_dir line wins
        shutil.copytree(populated_data, s.data_dir)
        s.start()
        st = os.statvfs(small)
        size = st.f_bavail * st.f_frsize * 6 // 10  # fits once, not twice
        lines = size // 1000

        def big(tag):
            return (b"Subject: %s\r\n\r\n" % tag) + (b"z" * 998 + b"\r\n") * lines

        def send(tag):
            r = Raw(s.port("smtp"))
            r.greet()
            r.expect("MAIL FROM:<s@remote.test>", 250)
            r.expect("RCPT TO:<alice@example.test>", 250)
            r.expect("DATA", 354)
            r.send(big(tag) + b".\r\n")
            got = r.reply()
            r.expect("QUIT", 221)
            r.close()
            return got

        c, t = send(b"first")
        assert c == 250, (c, t)
        first = queue_ids(s)
        assert len(first) == 1, first
        deadline = time.time() + 15
        out = ""
        while time.time() < deadline and "deferred" not in out:
            time.sleep(0.1)
            out = s.cli("queue", "list").stdout
        assert re.search(r"deferred .*last=\"4\.3\.1 Mail system full: .*No space left", out), out

        c, t = send(b"second")
        assert c == 452 and t[0].startswith("4.3.1 Insufficient system storage"), (c, t)
        assert queue_ids(s) == first
        qdir = small / "data" / "queue"
        leftovers = [f for f in os.listdir(qdir)
                     if not f.startswith(".r") and not re.fullmatch(r"[0-9a-f]{16}", f)]
        assert leftovers == [], leftovers

        im = imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=30)
        im.login("alice@example.test", "alice-pw")
        typ, data = im.append("INBOX", None, None, big(b"appended"))
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA] APPEND failed: not enough disk"), \
            (typ, data)
        im.logout()
        assert s.messages("alice@example.test") == []

        # Room again: the deferred message goes in, once and whole.
        assert os.system("mount -o remount,size=40m %s" % small) == 0
        s.cli("queue", "flush")
        uids = s.wait_messages("alice@example.test", 1, timeout=15)
        assert len(uids) == 1
        stored = s.message("alice@example.test", uids[0])
        assert b"Subject: first\r\n" in stored and stored.endswith(b"z" * 998 + b"\r\n")
        wait_queue_empty(s)
    finally:
        try:
            if s is not None:
                s.stop()        # (raises on a sanitizer report: the mount goes all the same)
        finally:
            os.system("umount -l %s" % small)


# ---------------------------------------------------------------- connections

def test_per_ip_connection_cap(make_populated):
    s = make_populated(extra={"max_connections_per_ip": "2"})
    # The fixture's readiness probes may not be counted out yet: wait.
    deadline = time.time() + 10
    while True:
        a = Raw(s.port("smtp"))
        b = Raw(s.port("submission"))
        codes = (a.reply()[0], b.reply()[0])
        if codes == (220, 220):
            break
        for x in (a, b):
            x.close()
        assert time.time() < deadline, codes
        time.sleep(0.1)
    # (A retry above may have logged a refusal of its own: count past it.)
    before = len(s.log())
    c = Raw(s.port("smtp"))
    code, t = c.reply()
    assert code == 421 and t[-1].startswith("4.7.0"), (code, t)
    assert c.closed()
    d = Raw(s.port("submissions"), tls=True)
    code, t = d.reply()
    assert code == 421 and t[-1].startswith("4.7.0"), (code, t)
    assert d.closed()
    # No message was refused (no access line), but the refusal is on record,
    # with the address to look at.
    assert len(re.findall(r"too many connections: listener=127\.0\.0\.1:(?:%d|%d) "
                          r"client=127\.0\.0\.1 listener_conns=\d+ ip_conns=3$" %
                          (s.port("smtp"), s.port("submissions")), s.log()[before:], re.M)) == 2, \
        s.log()[-2000:]
    assert " access " not in s.log()
    # Closing one frees its slot: after the client's QUIT the server closes
    # at once (no linger).
    a.expect("QUIT", 221)
    assert a.closed()
    a.close()
    e = Raw(s.port("smtp"))
    assert e.reply()[0] == 220
    for x in (b, e):
        x.close()


def v6_reply(port):
    """Connect over ::1 and read the greeting: (code, text lines, socket)."""
    c = socket.create_connection(("::1", port), timeout=10)
    data = b""
    while not re.search(rb"(?m)^\d{3} [^\r\n]*\r\n", data):
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    lines = data.decode().splitlines()
    return int(lines[-1][:3]), [l[4:] for l in lines], c


@pytest.mark.parametrize("prefix,key", [("64", "::/64"), ("128", "::1/128")])
def test_per_ip_cap_counts_an_ipv6_client_by_its_prefix(make_populated, prefix, key):
    """An IPv6 client is counted under its max_connections_ipv6_prefix (one
    site holds a whole /64 and could take an address per connection). Over
    ::1, the one IPv6 loopback address, the cap holds as for IPv4 and the
    warning names what the client was counted as."""
    skip_unless_ipv6_loopback()
    p6 = free_port()
    s = make_populated(extra={"max_connections_per_ip": "2",
                              "max_connections_ipv6_prefix": prefix})
    with open(s.conf, "a") as f:
        f.write("listen.smtp = 127.0.0.1:%d, [::1]:%d\n" % (s.port("smtp"), p6))
    s.stop()
    s.start()
    held = []
    for _ in range(2):
        code, t, c = v6_reply(p6)
        assert code == 220, t
        held.append(c)
    code, t, c = v6_reply(p6)
    assert code == 421 and t[-1].startswith("4.7.0"), (code, t)
    c.close()
    assert re.search(r"too many connections: listener=\[::1\]:%d client=::1 .*"
                     r"counted_as=%s" % (p6, re.escape(key)), s.log()), s.log()[-2000:]
    # IPv4 is counted apart: 127.0.0.1 still has its own two.
    r = Raw(s.port("smtp"))
    assert r.reply()[0] == 220
    r.close()
    for c in held:
        c.close()


def greeted_once_a_slot_is_free(s, wait=10):
    """An SMTP connection that got its 220, trying again (bounded) while the
    server answers 421 because the per-IP cap is still full."""
    deadline = time.time() + wait
    while True:
        r = Raw(s.port("smtp"))
        code = r.reply()[0]
        if code == 220:
            return r
        r.close()
        assert time.time() < deadline, code
        time.sleep(0.1)


def test_lingering_sockets_count_against_the_per_ip_cap(make_populated):
    """A client whose sessions the server ended (here: too many errors) but
    that keeps the sockets open holds them in the server's half-closed
    linger, and they still count: it cannot tie up more descriptors than
    max_connections_per_ip by getting itself thrown out quickly."""
    s = make_populated(extra={"max_connections_per_ip": "2", "smtp.max_errors": "1"})
    held = []
    for _ in range(2):
        # (Waiting, at first, for the fixture's probes to be counted out.)
        r = greeted_once_a_slot_is_free(s)
        c, t = r.cmd("BAD")
        assert c == 500, (c, t)
        c, t = r.reply()
        assert c == 421 and t[-1].startswith("4.7.0"), (c, t)
        assert r.closed()  # the server's FIN; this side stays open
        held.append(r)
    c = Raw(s.port("smtp"))
    code, t = c.reply()
    assert code == 421 and t[-1].startswith("4.7.0"), (code, t)
    c.close()
    # The client closing one ends that linger at once, and frees its slot.
    held[0].close()
    greeted_once_a_slot_is_free(s).close()
    held[1].close()


def test_quit_closes_at_once_and_frees_the_slot(make_populated):
    """After the client's own QUIT nothing may follow (RFC 5321 4.1.1.10): the
    server closes outright instead of lingering, so a client that keeps its
    socket open after QUIT holds no slot against max_connections_per_ip."""
    s = make_populated(extra={"max_connections_per_ip": "1"})
    r = greeted_once_a_slot_is_free(s)
    r.expect("QUIT", 221, "2.0.0")
    assert r.closed()
    # This side is still open; the next connection gets its 220 at once.
    n = Raw(s.port("smtp"))
    code, t = n.reply()
    assert code == 220, (code, t)
    n.close()
    r.close()


@pytest.mark.parametrize("kind,first,bye,expect", [
    ("pop3", b"+OK", b"QUIT\r\n", b"+OK"),
    ("imap", b"* OK", b"a LOGOUT\r\n", b"a OK"),
])
def test_pop3_quit_and_imap_logout_close_at_once(make_surat, kind, first, bye, expect):
    """POP3 QUIT and IMAP LOGOUT end the session from the client's side as
    SMTP QUIT does: the server closes outright, no linger holds the slot."""
    s = make_surat(extra={"max_connections_per_ip": "1"}, kinds=(kind,))

    def greeted(wait=10):
        deadline = time.time() + wait
        while True:
            c = socket.create_connection(("127.0.0.1", s.port(kind)), timeout=5)
            got = c.recv(200)
            if got.startswith(first):
                return c
            c.close()
            assert time.time() < deadline, got
            time.sleep(0.1)

    c = greeted()
    c.sendall(bye)
    got = b""
    while True:
        part = c.recv(4096)
        if not part:
            break  # the server's FIN; this side stays open
        got += part
    assert expect in got, got
    n = greeted(wait=0)  # at once: the QUIT freed the only slot
    n.close()
    c.close()


def tls_to_eof(sock):
    """What a TLS client reads until the end: (data, how it ended). OpenSSL
    tells the peer's close_notify ("close_notify") from a TCP close without
    one ("truncated": a ragged EOF, which RFC 8446 6.1 forbids and which a
    client cannot tell from an attacker cutting the stream)."""
    got = b""
    while True:
        try:
            part = sock.recv(4096)
        except ssl.SSLError as e:  # OpenSSL 3: UNEXPECTED_EOF_WHILE_READING
            assert "EOF" in str(e), e
            return got, "truncated"
        if not part:
            return got, "close_notify"
        got += part


def tls_raw(port):
    """A TLS client that reports a ragged EOF instead of hiding it (Python
    sets OP_IGNORE_UNEXPECTED_EOF by default)."""
    ctx = client_tls()
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(sock, suppress_ragged_eofs=False)


@pytest.mark.parametrize("kind,first,bye,last", [
    ("submissions", b"220 ", b"QUIT\r\n", b"221 2.0.0"),
    ("imaps", b"* OK", b"a LOGOUT\r\n", b"a OK"),
    ("pop3s", b"+OK", b"QUIT\r\n", b"+OK"),
])
def test_tls_session_ends_with_close_notify(make_surat, kind, first, bye, last):
    """Each side of a TLS connection sends close_notify before it closes (RFC
    8446 6.1): after QUIT or LOGOUT the client reads the last reply and then
    a clean end of the TLS stream, not a truncation."""
    s = make_surat(kinds=(kind,))
    c = tls_raw(s.port(kind))
    assert c.recv(200).startswith(first)
    c.sendall(bye)
    got, end = tls_to_eof(c)
    assert last in got and end == "close_notify", (got, end)
    c.close()


def test_tls_error_close_sends_close_notify_and_lingers(make_populated):
    """A session the server ends over TLS (here: too many errors) ends with
    close_notify too, and a client still writing after the 421 (it has not
    read it yet) is not reset: its writes succeed and the 421 is there to
    read after them, as on a plaintext connection."""
    s = make_populated(extra={"smtp.max_errors": "1"})
    c = tls_raw(s.port("submissions"))
    assert c.recv(200).startswith(b"220 ")
    c.sendall(b"BAD1\r\n")
    time.sleep(0.3)  # the 500, the 421 and the close_notify are out
    for i in range(3):
        c.sendall(b"NOOP\r\n")
        time.sleep(0.05)
    got, end = tls_to_eof(c)
    assert re.match(rb"500 [^\r]*\r\n421 4\.7\.0 [^\r]*\r\n$", got), got
    assert end == "close_notify", (got, end)
    c.close()


def test_tls_linger_has_a_hard_end(make_populated):
    """A client that keeps a lingering TLS socket readable without ever
    completing a record (a record header announcing 16 KB, then a byte now
    and then) still sees it closed once the linger's 2 s are over."""
    s = make_populated(extra={"smtp.max_errors": "1"})
    c = tls_raw(s.port("submissions"))
    assert c.recv(200).startswith(b"220 ")
    c.sendall(b"BAD1\r\n")
    got, end = tls_to_eof(c)
    assert b"421 4.7.0" in got and end == "close_notify", (got, end)
    raw = socket.socket(fileno=os.dup(c.fileno()))
    raw.sendall(b"\x17\x03\x03\x40\x00")
    t0 = time.time()
    while time.time() - t0 < 8:
        time.sleep(0.3)
        try:
            raw.sendall(b"x")
        except OSError:  # reset: the server has closed
            break
    held = time.time() - t0
    raw.close()
    c.close()
    assert held < 4, "the lingering TLS connection was still open after %.1fs" % held


@pytest.mark.parametrize("kind", ["submissions", "imaps", "pop3s", "submission"])
def test_tls_handshake_deadline(make_surat, kind):
    """A client that connects to an implicit-TLS port (or says STARTTLS) and
    then never sends its hello is closed after tls.handshake_timeout; no
    protocol timeout runs before the handshake. A handshake done in time is
    not cut by it."""
    s = make_surat(extra={"tls.handshake_timeout": "1s"}, kinds=(kind,))
    if kind == "submission":
        r = Raw(s.port(kind))
        r.greet()
        r.expect("STARTTLS", 220)
        c = r.sock
    else:
        c = socket.create_connection(("127.0.0.1", s.port(kind)), timeout=10)
    t0 = time.time()
    assert c.recv(100) == b""
    assert 0.8 < time.time() - t0 < 5, time.time() - t0
    c.close()
    if kind == "submissions":
        d = tls_raw(s.port(kind))
        time.sleep(1.5)
        assert d.recv(200).startswith(b"220 ")
        d.sendall(b"QUIT\r\n")
        got, end = tls_to_eof(d)
        assert b"221 2.0.0" in got and end == "close_notify", (got, end)
        d.close()


def test_junk_commands_count_as_errors_past_the_limit(make_populated):
    """NOOP, RSET, VRFY, EXPN and HELP beyond smtp.max_junk_commands since the
    last accepted message count as errors, so they cannot hold a connection
    for ever; a message accepted starts the count again."""
    s = make_populated(extra={"smtp.max_junk_commands": "5", "smtp.max_errors": "2"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.expect("NOOP", 250)
    r.expect("RSET", 250)
    r.expect("VRFY alice", 252)
    r.expect("EXPN staff", 502)
    r.expect("HELP", 214)
    # A message resets the count: five more are free.
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"Subject: j\r\n\r\nx\r\n.\r\n")
    assert r.reply()[0] == 250
    for _ in range(5):
        r.expect("NOOP", 250)
    r.expect("NOOP", 250)         # the sixth: answered, and error 1
    c, t = r.cmd("RSET")          # error 2: the limit
    assert c == 421 and t[0].startswith("4.7.0"), (c, t)
    assert r.closed()
    assert "too many errors from 127.0.0.1" in s.log()
    stored_one(s, "alice@example.test")


def test_repeated_ehlo_is_a_junk_command(make_populated):
    """EHLO/HELO again moves no mail: past smtp.max_junk_commands it counts as
    an error, as in Postfix (HELO/EHLO are junk commands there), or a client
    cycling EHLO, or MAIL and EHLO (which resets), would hold its connection
    for ever. The EHLO a session needs (RFC 5321 4.1.1.1), and the one again
    after STARTTLS (RFC 3207 4.2), are free."""
    s = make_populated(extra={"smtp.max_junk_commands": "0", "smtp.max_errors": "2"})
    r = Raw(s.port("smtp"))
    r.greet()                             # free
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("HELO again.test", 250)      # error 1, answered
    r.expect("MAIL FROM:<s@remote.test>", 250)
    c, t = r.cmd("EHLO again.test")       # error 2: the limit
    assert c == 421 and t[0].startswith("4.7.0"), (c, t)
    assert r.closed()
    r.close()
    # After STARTTLS the EHLO is needed again: not counted.
    s1 = make_populated(extra={"smtp.max_junk_commands": "0", "smtp.max_errors": "1"})
    r = Raw(s1.port("smtp"))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    c, t = r.cmd("EHLO client.test")
    assert c == 421 and t[0].startswith("4.7.0"), (c, t)
    assert r.closed()


def test_command_timeout(make_populated):
    s = make_populated(extra={"smtp.command_timeout": "1s", "smtp.data_timeout": "2s"})
    r = Raw(s.port("smtp"))
    r.greet()
    t0 = time.time()
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.4.2"), (c, t)
    assert 0.8 < time.time() - t0 < 5
    assert r.closed()
    # In DATA, the data timeout, and the transaction is logged as not done.
    r = rcpt_session(s)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.send(b"Subject: slow\r\n\r\n")
    t0 = time.time()
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.4.2"), (c, t)
    assert 1.5 < time.time() - t0 < 6
    assert r.closed()
    time.sleep(0.3)
    assert s.messages("alice@example.test") == []
    # Over TLS too.
    r = Raw(s.port("submissions"), tls=True)
    r.greet()
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.4.2"), (c, t)
    assert r.closed()


@pytest.mark.parametrize("end", ["data", "bdat", "refused"])
def test_command_timeout_again_after_a_message(make_populated, end):
    """RFC 5321 4.5.3.2.7: once a message is answered (queued or refused) the
    session waits for a command, under the command timeout, not the data one."""
    s = make_populated(extra={"smtp.command_timeout": "1s", "smtp.data_timeout": "20s"})
    r = rcpt_session(s)
    r.expect("RCPT TO:<alice@example.test>", 250)
    if end == "bdat":
        r.send(b"BDAT 12 LAST\r\nSubject: x\r\n")
    else:
        r.expect("DATA", 354)
        r.send(b"Subject: x\r\n\r\n" + (b"bare\n\r\n" if end == "refused" else b"") + b".\r\n")
    c, t = r.reply()
    assert c == (550 if end == "refused" else 250), (c, t)
    t0 = time.time()
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.4.2"), (c, t)
    assert time.time() - t0 < 5, time.time() - t0
    assert r.closed()


def dribble(r, data, every, limit):
    """Send data a byte at a time, every `every` s, until the server answers
    or `limit` s pass; returns the reply (None if it never came) and the
    seconds it took."""
    t0 = time.time()
    r.sock.settimeout(every)
    for i in range(len(data)):
        if time.time() - t0 > limit:
            break
        try:
            r.sock.sendall(data[i:i + 1])
        except OSError:
            break
        try:
            chunk = r.sock.recv(4096)
        except socket.timeout:
            continue
        r.buf += chunk
        break
    r.sock.settimeout(10)
    try:
        return r.reply(), time.time() - t0
    except (EOFError, OSError):
        return None, time.time() - t0


def test_dribbled_command_meets_a_deadline(make_populated):
    """A command line sent a byte at a time, each inside smtp.command_timeout
    (1 s), must still be whole within that time of the last command: 421
    4.4.2, not a slot held for as long as the client likes."""
    s = make_populated(extra={"smtp.command_timeout": "1s"})
    r = Raw(s.port("smtp"))
    r.greet()
    got, took = dribble(r, b"MAIL FROM:<slow@remote.test>\r\n", 0.3, 8)
    assert got and got[0] == 421 and got[1][-1].startswith("4.4.2"), got
    assert 0.9 < took < 3, took
    assert r.closed()
    assert re.search(r"command deadline passed in state helo: 0 octets in 1\.\d s", s.log()), s.log()[-2000:]
    # An endless line, sent fast: drained as overlong, and cut all the same.
    r = Raw(s.port("smtp"))
    r.greet()
    t0 = time.time()
    r.sock.settimeout(0.1)
    while time.time() - t0 < 6:
        try:
            r.sock.sendall(b"X" * 2000)
            chunk = r.sock.recv(4096)
            r.buf += chunk
            break
        except socket.timeout:
            continue
        except OSError:
            break
    r.sock.settimeout(10)
    c, t = r.reply()
    assert c == 421 and t[-1].startswith("4.4.2"), (c, t)
    assert time.time() - t0 < 4, time.time() - t0
    # A whole line in one piece, however late within the idle timeout, is fine.
    r = Raw(s.port("smtp"))
    r.greet()
    time.sleep(0.7)
    r.expect("NOOP", 250)
    time.sleep(0.7)
    r.expect("QUIT", 221)


def tls_memory_session(port):
    """A TLS client on memory BIOs over a plain socket, greeted: the test
    decides when each octet of a record goes out. (sock, tls, its in BIO,
    its out BIO)."""
    tin, tout = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_tls().wrap_bio(tin, tout)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(tout.read())
            tin.write(sock.recv(65536))
    sock.sendall(tout.read())
    got = b""
    while b"\r\n" not in got:
        try:
            got += tls.read(4096)
        except ssl.SSLWantReadError:
            tin.write(sock.recv(65536))
    assert got.startswith(b"220 "), got
    return sock, tls, tin, tout


def test_trickled_tls_record_meets_the_command_deadline(make_populated):
    """Over implicit TLS the octets of a record not yet whole reach no read
    callback, where the deadline was checked, and each restarted the idle
    timeout: a record sent an octet at a time held the connection past
    smtp.command_timeout for as long as the client liked (16 KiB of record,
    an octet every 4 minutes). It is cut like a dribbled line; a session
    idling between whole commands is not."""
    s = make_populated(extra={"smtp.command_timeout": "1s"})
    sock, tls, tin, tout = tls_memory_session(s.port("submissions"))
    tls.write(b"NOOP\r\n" * 50)
    record = tout.read()
    t0, got = time.time(), b""
    sock.settimeout(0.3)
    for i in range(len(record) - 1):    # never whole
        if time.time() - t0 > 5:
            break
        try:
            sock.sendall(record[i:i + 1])
            data = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        tin.write(data)
        try:
            got += tls.read(4096)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        break
    took = time.time() - t0
    sock.close()
    assert got.startswith(b"421 4.4.2 "), (got, took)
    assert 0.9 < took < 3, took
    assert re.search(r"command deadline passed in state connected: 0 octets in 1\.\d s",
                     s.log()), s.log()[-2000:]
    r = Raw(s.port("submissions"), tls=True)
    assert r.reply()[0] == 220
    time.sleep(0.7)
    r.expect("EHLO client.test", 250)
    time.sleep(0.7)
    r.expect("NOOP", 250)
    r.expect("QUIT", 221)


def test_command_deadline_runs_from_our_answer(make_populated):
    """The time the server takes to answer is not the client's: a failed AUTH
    answered after auth.fail_delay (2 s, past smtp.command_timeout of 1 s),
    then the next command in two pieces, the first at once. The client was
    never slow: no idle timeout while we wait (over TLS libevent fired one,
    and the session closed under its AUTH delay leaked the job), and the
    next line's deadline runs from our answer, not from the AUTH line."""
    s = make_populated(extra={"smtp.command_timeout": "1s", "auth.fail_delay": "2s"})
    r = Raw(s.port("submission"))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    ir = base64.b64encode(b"\0alice@example.test\0wrong").decode()
    t0 = time.time()
    r.expect("AUTH PLAIN " + ir, 535, "5.7.8")
    assert time.time() - t0 > 1.5
    r.send(b"NO")
    time.sleep(0.3)
    r.send(b"OP\r\n")
    c, t = r.reply()
    assert c == 250, (c, t)
    r.expect("QUIT", 221)
    assert "deadline passed" not in s.log() and "timeout in state" not in s.log()


def test_dribbled_data_meets_a_deadline(make_populated):
    """DATA must keep up smtp.min_data_rate: done within smtp.data_timeout plus
    a second per min_data_rate octets. A byte every 0.3 s (3 octets/s, under
    10) is cut; 60 octets every 0.3 s (200/s) may take longer than the data
    timeout and is taken; the transaction cut is logged with 421."""
    s = make_populated(extra={"smtp.data_timeout": "1s", "smtp.min_data_rate": "10"})
    r = rcpt_session(s)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    got, took = dribble(r, b"Subject: slow\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n", 0.3, 10)
    assert got and got[0] == 421 and got[1][-1].startswith("4.4.2"), got
    assert 1 < took < 4, took
    assert r.closed()
    assert re.search(r"data deadline passed in state data: \d+ octets in \d\.\d s", s.log())
    lines = [l for l in access_lines(s) if "result=421" in l]
    assert lines, access_lines(s)

    r = rcpt_session(s)
    r.expect("RCPT TO:<alice@example.test>", 250)
    steady_data(s, r, b"steady")


def test_endless_oversized_data_meets_a_deadline(make_populated):
    """Octets past smtp.max_message_size earn no more time under
    smtp.min_data_rate: a client streaming an endless message fast, each
    octet discarded, is cut once data_timeout plus max_message_size at that
    rate has passed (1 s + 20000/10000 s here), not kept forever."""
    s = make_populated(extra={"smtp.data_timeout": "1s", "smtp.min_data_rate": "10000",
                              "smtp.max_message_size": "20000"})
    r = rcpt_session(s)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    r.sock.settimeout(0.05)
    chunk = (b"z" * 998 + b"\r\n") * 20    # 20 kB every 0.1 s: 200 kB/s
    t0 = time.time()
    got = b""
    while time.time() - t0 < 15 and not got:
        try:
            r.sock.sendall(chunk)
        except OSError:
            break
        try:
            got = r.sock.recv(4096)
        except socket.timeout:
            pass
        except OSError:
            break
        time.sleep(0.05)
    took = time.time() - t0
    if not got:
        r.sock.settimeout(2)
        try:
            got = r.sock.recv(4096)
        except OSError:
            pass
    assert got.startswith(b"421 4.4.2"), (got, took)
    assert 2.5 < took < 6, took
    assert re.search(r"data deadline passed in state data: \d+ octets", s.log())


def test_endless_refused_bdat_chunks_end_the_session(make_populated):
    """After a BDAT message is refused (too big here), each further chunk
    gets the refusal and moves no mail: past smtp.max_junk_commands of them
    each is an error, so a client cannot stream an endless refused message
    in chunks (each with a deadline of its own) for ever."""
    s = make_populated(extra={"smtp.max_message_size": "2048",
                              "smtp.max_junk_commands": "5", "smtp.max_errors": "3"})
    r = rcpt_session(s)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"BDAT 4000\r\n" + b"x" * 4000)
    c, t = r.reply()
    assert c == 552, (c, t)
    codes = []
    for _ in range(30):
        try:
            r.send(b"BDAT 500\r\n" + b"y" * 500)
            c, t = r.reply()
        except (OSError, EOFError):
            break
        codes.append(c)
        if c == 421:
            break
    assert codes[-1] == 421, codes
    assert codes[:-1] == [552] * (len(codes) - 1) and 6 <= len(codes) <= 9, codes
    assert r.closed()


def test_endless_empty_bdat_chunks_end_the_session(make_populated):
    """An empty BDAT chunk that is not the last is allowed (RFC 3030 2) but
    moves no mail: past smtp.max_junk_commands of them each is an error, or
    "BDAT 0" sent for ever would hold the connection (Postfix refuses it
    outright, 551 5.7.1). A chunk with octets in it is no junk, and nothing
    of the unfinished message is queued."""
    s = make_populated(extra={"smtp.max_junk_commands": "3", "smtp.max_errors": "2"})
    r = rcpt_session(s)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.send(b"BDAT 0\r\n" * 3 + b"BDAT 4\r\nabcd" * 5 + b"BDAT 0\r\n" * 3)
    got = [r.reply() for _ in range(10)]
    codes = [c for c, _ in got]
    # Three empty chunks free, five with octets, the fourth empty one is
    # error 1, the fifth error 2: the limit.
    assert codes == [250] * 9 + [421], got
    assert got[-1][1][0].startswith("4.7.0"), got
    assert r.closed()
    time.sleep(0.3)
    assert queue_ids(s) == []
    assert s.messages("alice@example.test") == []


def steady_data(s, r, subject):
    """DATA at 60 octets every 0.3 s (200/s) for longer than a 1 s data
    timeout: taken (250) and stored."""
    r.expect("DATA", 354)
    body = b"Subject: " + subject + b"\r\n\r\n" + (b"y" * 58 + b"\r\n") * 8
    t0 = time.time()
    for i in range(0, len(body), 60):
        r.send(body[i:i + 60])
        time.sleep(0.3)
    assert time.time() - t0 > 1.5
    r.send(b".\r\n")
    c, t = r.reply()
    assert c == 250, (c, t)
    r.expect("QUIT", 221)
    stored_one(s, "alice@example.test")


def test_steady_data_over_tls_outlives_the_data_timeout(make_populated):
    """Over TLS too, DATA that keeps up smtp.min_data_rate may take longer than
    smtp.data_timeout: the server writes nothing meanwhile, and that is no
    stalled client (libevent's TLS filter runs a write timer with nothing
    to write)."""
    s = make_populated(extra={"smtp.data_timeout": "1s", "smtp.min_data_rate": "10"})
    r = Raw(s.port("smtp"))
    r.greet()
    r.starttls()
    r.expect("EHLO client.test", 250)
    r.expect("MAIL FROM:<s@remote.test>", 250)
    r.expect("RCPT TO:<alice@example.test>", 250)
    steady_data(s, r, b"steady tls")


def test_min_data_rate_zero_keeps_only_the_idle_timeout(make_populated):
    s = make_populated(extra={"smtp.data_timeout": "1s", "smtp.min_data_rate": "0"})
    r = rcpt_session(s)
    r.expect("RCPT TO:<alice@example.test>", 250)
    r.expect("DATA", 354)
    t0 = time.time()
    for b in b"Subject: z\r\n\r\nabc\r\n":
        r.send(bytes([b]))
        time.sleep(0.15)
    assert time.time() - t0 > 2
    r.send(b".\r\n")
    c, t = r.reply()
    assert c == 250, (c, t)
    r.close()


def test_refused_transaction_logged(surat):
    with submission(surat) as c:
        code, _ = c.mail("ceo@bank.test")
        assert code == 553
        c.mail("alice@example.test")
        c.rcpt("bob@example.test")
        code, _ = c.data(b"From: ceo@bank.test\r\nSubject: fake\r\n\r\nx\r\n")
        assert code == 553
    deadline = time.time() + 5
    lines = []
    while time.time() < deadline:
        lines = [l for l in access_lines(surat) if "access id=-" in l and "result=553" in l]
        if len(lines) == 2:
            break
        time.sleep(0.05)
    # The refused MAIL, then the message refused for its From:.
    assert len(lines) == 2, access_lines(surat)
    assert "from=<ceo@bank.test> rcpts=- size=0 " in lines[0], lines
    assert 'subject="fake"' in lines[1] and "user=alice@example.test" in lines[1], lines


def test_command_syntax(surat):
    r = Raw(surat.port("smtp"))
    r.reply()
    r.expect("EHLO", 501, "5.5.4")
    r.expect("EHLO bad_name!", 501, "5.5.4")
    r.expect("HELO client.test", 250)
    # HELO: no extensions, so no AUTH and no ESMTP parameters.
    r.expect("AUTH PLAIN", 503, "5.5.1")
    r.expect("MAIL FROM:<s@remote.test> SIZE=100", 555, "5.5.4")
    r.expect("EHLO client.test", 250)
    r.expect("STARTTLS now", 501, "5.5.4")
    r.expect("MAIL FROM:<s@remote.test> FOO=bar", 555, "5.5.4")
    r.expect("MAIL FROM:<s@remote.test> BODY=BINARYMIME", 555, "5.5.4")
    r.expect("MAIL FROM:s@remote.test", 501, "5.1.7")
    r.close()
    # A fresh session: the error limit (10) is near.
    r = Raw(surat.port("smtp"))
    r.greet()
    r.expect("MAIL FROM:<s@remote.test> SIZE=100 BODY=8BITMIME", 250)
    r.expect("RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS", 501, "5.5.4")
    r.expect("RCPT TO:<>", 553, "5.1.3")
    r.expect("RCPT TO:<postmaster>", 250, "2.1.5")
    r.expect("QUIT", 221)
    r.close()


def test_postmaster(surat):
    """<postmaster> without a domain must be accepted (RFC 5321 4.5.1): it
    is postmaster@ the host name's domain, never relayed."""
    surat.cli("alias", "add", "postmaster@example.test", "alice@example.test")
    r = rcpt_session(surat)
    r.expect("RCPT TO:<postmaster>", 250, "2.1.5")
    r.expect("RCPT TO:<PostMaster>", 250, "2.1.5")
    r.expect("DATA", 354)
    r.send(b"Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert b"Subject: to the postmaster" in stored_one(surat, "alice@example.test")


def test_postmaster_when_the_host_name_is_no_local_domain(make_populated):
    """<postmaster> with a host name outside every local domain still reaches
    someone (RFC 5321 4.5.1): postmaster@ the local domain added first."""
    s = make_populated(extra={"hostname": "mx.elsewhere.test"})
    r = rcpt_session(s)
    r.expect("RCPT TO:<postmaster>", 250, "2.1.5")
    r.expect("DATA", 354)
    r.send(b"Subject: to whoever runs this\r\n\r\nhello\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert b"Subject: to whoever runs this" in stored_one(s, "alice@example.test")
    assert "rcpts=<postmaster@example.test>" in s.log()


def test_postmaster_without_alias(surat):
    """RFC 5321 4.5.1: postmaster@ a local domain MUST be accepted, alias or
    not. Without one it reaches the domain's oldest user (alice); an alias
    sends it elsewhere; it never lets that user send as postmaster; a
    domain with no user at all hands it to the server's postmaster."""
    r = rcpt_session(surat)
    r.expect("RCPT TO:<postmaster>", 250, "2.1.5")
    r.expect("RCPT TO:<Postmaster@EXAMPLE.test>", 250, "2.1.5")
    r.expect("DATA", 354)
    r.send(b"Subject: first postmaster\r\n\r\nhello\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    assert b"Subject: first postmaster" in stored_one(surat, "alice@example.test")
    assert surat.messages("bob@example.test") == []

    surat.cli("alias", "add", "postmaster@example.test", "bob@example.test")
    smtp(surat).sendmail("s@remote.test", ["postmaster@example.test"],
                         msg("second postmaster", "s@remote.test", "postmaster@example.test"))
    surat.wait_messages("bob@example.test", 1)
    assert len(surat.messages("alice@example.test")) == 1

    c = submission(surat)
    with pytest.raises(smtplib.SMTPSenderRefused) as ei:
        c.sendmail("postmaster@example.test", ["bob@example.test"],
                   msg("spoof", "postmaster@example.test", "bob@example.test"))
    assert ei.value.smtp_code == 553
    c.quit()

    # A domain with no user at all: the server's postmaster (postmaster@ the
    # domain added first, aliased to bob by now); never a remote postmaster.
    surat.add_domain("empty.test")
    r = rcpt_session(surat)
    r.expect("RCPT TO:<postmaster@empty.test>", 250, "2.1.5")
    r.expect("RCPT TO:<postmaster@remote.test>", 554, "5.7.1")
    r.expect("RCPT TO:<abuse@empty.test>", 550, "5.1.1")
    r.expect("DATA", 354)
    r.send(b"Subject: third postmaster\r\n\r\nhello\r\n.\r\n")
    c, t = r.reply()
    assert c == 250, t
    r.expect("QUIT", 221)
    r.close()
    surat.wait_messages("bob@example.test", 2)
    assert len(surat.messages("alice@example.test")) == 1
    c = submission(surat)
    with pytest.raises(smtplib.SMTPSenderRefused) as ei:
        c.sendmail("postmaster@empty.test", ["bob@example.test"],
                   msg("spoof", "postmaster@empty.test", "bob@example.test"))
    assert ei.value.smtp_code == 553
    c.quit()

    # Without the alias, the first domain's oldest user.
    surat.cli("alias", "del", "postmaster@example.test", "bob@example.test")
    smtp(surat).sendmail("s@remote.test", ["postmaster@empty.test"],
                         msg("fourth postmaster", "s@remote.test", "postmaster@empty.test"))
    surat.wait_messages("alice@example.test", 2)
