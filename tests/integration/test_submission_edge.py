"""Submission policy, adversarially: who may put which address in From:.

An authenticated user may send to anyone, but MAIL FROM and every address
of every From: field must be one the user owns (the address, its +tag
forms, an alias naming the user; a catch-all gives nothing), else 553 5.7.1.
Here: RFC 5322 address syntax meant to make the check see another address
than a reader does (quoted local parts, routes, groups, comments, encoded
words, several mailboxes, IDN and UTF-8 look-alikes), the header/body
boundary, bare CR/LF, long and folded fields, BDAT chunk boundaries, dot
stuffing, pipelining, RSET, the null sender, the implicit-TLS listener and
AUTH on the MX port, aliases that change or a user deleted mid-session, the
other fields that name a sender (Sender:, Resent-From:), and the Message-ID:
and Date: added on submission (never a second copy, the message intact).

The daemon's log is checked for sanitizer reports when each test's daemon
stops (conftest's make_surat teardown).
"""
import base64
import re

from test_smtp import (Raw, bounded, make_populated, populated_data,  # noqa: F401
                       split_stored, stored_one, surat, wait_queue_empty)

TEST_LIMIT = 30     # per test (read by the `bounded` fixture)

ALICE, BOB = "alice@example.test", "bob@example.test"


# ---------------------------------------------------------------- helpers

def sub(s, kind="submission", user=ALICE, pw="alice-pw"):
    """An authenticated raw session on a submission listener."""
    if kind == "submissions":
        r = Raw(s.port(kind), tls=True)
        r.greet()
    else:
        r = Raw(s.port(kind))
        r.greet()
        r.starttls()
        r.expect("EHLO client.test", 250)
    ir = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
    r.expect("AUTH PLAIN " + ir, 235, "2.7.0")
    return r


def send(r, body, frm=ALICE, rcpt=BOB, mail_params=""):
    """One DATA transaction; body (bytes, CRLF-ended, already dot-stuffed).
    Returns the final (code, text lines)."""
    r.expect("MAIL FROM:<%s>%s" % (frm, mail_params), 250, "2.1.0")
    r.expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5")
    r.expect("DATA", 354)
    r.send(body + b".\r\n")
    return r.reply()


def send_bdat(r, chunks, frm=ALICE, rcpt=BOB):
    """One BDAT transaction, the last chunk marked LAST. The intermediate
    chunks must be answered 250; returns the final (code, text lines)."""
    r.expect("MAIL FROM:<%s>" % frm, 250, "2.1.0")
    r.expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5")
    for i, ch in enumerate(chunks):
        last = i == len(chunks) - 1
        r.send(b"BDAT %d%s\r\n" % (len(ch), b" LAST" if last else b"") + ch)
        c, t = r.reply()
        if last:
            return c, t
        assert c == 250, (ch, c, t)


def refused_553(code, text, what):
    assert code == 553 and text[-1].startswith("5.7.1 "), (what, code, text)


def from_msg(from_value, subject="spoof"):
    if isinstance(from_value, str):
        from_value = from_value.encode()
    return (b"From: " + from_value + b"\r\nTo: bob@example.test\r\nSubject: " +
            subject.encode() + b"\r\n\r\nbody\r\n")


ADDED = (rb"Message-ID: <[0-9a-f]{32}@mx\.example\.test>\r\n"
         rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n")


def header_end(msg):
    """Where msg's header section ends: the offset of its empty line, 0 when
    it starts with one, len(msg) when it has none (header only)."""
    if msg.startswith(b"\r\n"):
        return 0
    i = msg.find(b"\r\n\r\n")
    return len(msg) if i < 0 else i + 2


def submitted(stored, sender=None):
    """(added header block, the message as sent) of a stored submission.
    The block counts only where it belongs: it closes the header section,
    right before the empty line (or at the end of a header-only message),
    after the message's own fields and their trace fields (RFC 5322 3.6);
    anywhere else it is left in the message and compares unequal. With
    sender, the block ends in the Sender: added for a From: of several
    mailboxes."""
    _, received, rest = split_stored(stored)
    assert re.search(r"with (ESMTPSA|UTF8SMTPSA)\r\n", received), received
    assert "authenticated" not in received, received
    end = header_end(rest)
    tail = re.escape(b"Sender: %s\r\n" % sender.encode()) if sender else b""
    m = re.compile(ADDED + tail + rb"\Z").search(rest, 0, end)
    if m is None or (m.start() > 0 and rest[m.start() - 2:m.start()] != b"\r\n"):
        return b"", rest
    return m.group(0), rest[:m.start()] + rest[end:]


def delivered(s, addr):
    """Every message addr holds once the queue is empty (an empty queue
    means every accepted message has been delivered)."""
    wait_queue_empty(s)
    return [s.message(addr, u) for u in s.messages(addr)]


# ---------------------------------------------------------------- From: syntax

SPOOF_FORMS = [
    # Quoted local parts name the same mailbox as the unquoted form.
    '"bob"@example.test',
    '"b\\ob"@example.test',
    # The quoted string is the local part, bank.test the domain.
    '"alice@example.test"@bank.test',
    '"alice@example.test" ceo@bank.test',
    # Case and +tag forms of another user.
    'BOB@EXAMPLE.TEST',
    'bob+alice@example.test',
    'Bob <bob+alice@Example.Test>',
    # Two @, routes, two angle-addrs, trailing mailbox after ; or >.
    'alice@example.test@bank.test',
    'Alice <@example.test:ceo@bank.test>',
    'Alice <@example.test,@alice.example.test:ceo@bank.test>',
    '"Alice" <alice@example.test> <ceo@bank.test>',
    '<alice@example.test>ceo@bank.test',
    'alice@example.test;ceo@bank.test',
    'Alice <alice@example.test>,, ceo@bank.test',
    # Groups (obsolete in From:, readers still show their members).
    'grp: alice@example.test;, ceo@bank.test',
    'grp: alice@example.test, ceo@bank.test;',
    '"alice@example.test": ceo@bank.test;',
    'grp:;',
    # A comment ends only at its own ')'.
    'alice@example.test (unbalanced',
    '(x) <ceo@bank.test> (alice@example.test)',
    # Domain literals, look-alike domains, an encoded word as the address.
    'alice@[127.0.0.1]',
    'alice@xn--exmple-cua.test',
    'alice@example.test.',
    '=?utf-8?b?Ym9i?=@example.test',
    '=?utf-8?q?alice=40example=2Etest?=',
    # postmaster@ reaches the domain's first user (alice) but is nobody's.
    'postmaster@example.test',
    'Postmaster@Example.Test',
    # An obs-route is domains only: a mailbox hidden in one is not skipped
    # (readers' ENVELOPE showed CEO as the address).
    '<@,CEO <ceo@example.test>,@y:alice@example.test>',
    '<@x.test,ceo@example.test:alice@example.test>',
    # A domain literal belongs after "@" only, never in a display name:
    # some readers show the address inside it.
    '[ \\] <ceo@example.test> (] <alice@example.test>',
    '[<ceo@example.test>] <alice@example.test>',
]
# Valid RFC 5322, and alice's address to surat, but readers that end a
# comment at the first ")" or a quoted string at the first '"' show CEO:
# one comment with escaped parentheses, a nested comment, a quoted display
# name whose escaped quotes hide an angle-addr, an angle-addr in a comment.
MISREAD_FORMS = [
    '(\\) <ceo@example.test> \\() <alice@example.test>',
    '((x) <ceo@example.test>) <alice@example.test>',
    '"\\" <ceo@example.test> \\"" <alice@example.test>',
    'alice@example.test (<ceo@example.test>)',
    'alice@example.test (a \\) b), ceo@bank.test',
    # The escape in one quoted string, the address in another.
    '"\\"" "<ceo@example.test>" <alice@example.test>',
    '"\\"" <alice@example.test>, "<ceo@example.test>" <alice@example.test>',
    '"<ceo@example.test> (" <alice@example.test> (x)',
]


def test_from_address_forms_refused(surat):
    r = sub(surat)
    for form in SPOOF_FORMS + MISREAD_FORMS:
        code, text = send(r, from_msg(form))
        refused_553(code, text, form)
        assert ("comment or quoted string" in text[-1]) == (form in MISREAD_FORMS), (form, text)
    # Header name spellings and a value that starts on a continuation line.
    for raw in (b"from: ceo@bank.test\r\n", b"FROM:ceo@bank.test\r\n",
                b"From:\r\n ceo@bank.test\r\n", b"From: alice@example.test\r\nfrom: bob@example.test\r\n",
                b"From: alice@example.test\x00, ceo@bank.test\r\n",
                # The name folded before its colon: readers that unfold
                # first show these as From / Sender.
                b"From\r\n : CEO <ceo@example.test>\r\n",
                b"From\r\n\t:ceo@bank.test\r\n",
                b"From: alice@example.test\r\nSender\r\n : ceo@example.test\r\n",
                # A first line that continues nothing, which readers trim.
                b" From: ceo@bank.test\r\n"):
        code, text = send(r, raw + b"Subject: spelled\r\n\r\nx\r\n")
        refused_553(code, text, raw)
    # The session goes on, and only the good message is delivered.
    code, text = send(r, from_msg("Alice <alice@example.test>", "good"))
    assert code == 250, (code, text)
    r.expect("QUIT", 221)
    r.close()
    got = delivered(surat, BOB)
    assert len(got) == 1, got
    assert submitted(got[0])[1] == from_msg("Alice <alice@example.test>", "good")


SEVERAL = 'Alice <alice@example.test>, alice+2@example.test'
OWN_FORMS = [
    '"alice"@example.test',
    '"ali\\ce"@example.test',
    'ALICE@EXAMPLE.TEST',
    'alice @ example . test',
    'alice+x.y@example.test',
    '<alice@example.test>',
    # A display name is free text, even one that looks like an address.
    '"bob@example.test" <alice@example.test>',
    '=?utf-8?q?bob=40example=2Etest?= <alice@example.test>',
    'alice@example.test (bob@example.test)',
    SEVERAL,
    'grp: alice@example.test;',
    # A well-formed obs-route is ignored (RFC 5322 4.4).
    '<@relay.test,,@[10.0.0.1]:alice@example.test>',
    'J. Alice <alice@example.test>',
    '"Al \\"Pal\\" Ice (work)" <alice@example.test>',
    'alice@example.test (Alice Smith)',
]


def test_from_address_forms_owned(surat):
    r = sub(surat)
    for i, form in enumerate(OWN_FORMS):
        code, text = send(r, from_msg(form, "own %d" % i))
        assert code == 250 and text[-1].startswith("2.0.0 "), (form, code, text)
    r.close()
    got = []
    for m in delivered(surat, BOB):
        # The form with two mailboxes gets a Sender: (RFC 5322 3.6.2).
        several = b"Subject: own %d\r\n" % OWN_FORMS.index(SEVERAL) in m
        got.append(submitted(m, ALICE if several else None)[1])
    assert sorted(got) == sorted(from_msg(f, "own %d" % i) for i, f in enumerate(OWN_FORMS))


def test_from_folded_many_mailboxes(surat):
    """Many own mailboxes over folded lines, a stranger last; lines past
    the 1000-octet limit; deeply nested comments: refused, never crashed."""
    r = sub(surat)
    own = b",\r\n ".join(b"Alice %d <alice+%d@example.test>" % (i, i) for i in range(99))
    code, text = send(r, from_msg(own + b",\r\n ceo@bank.test"))
    refused_553(code, text, "99 own + ceo")
    code, text = send(r, from_msg(b"x" * 1100 + b" <ceo@bank.test>"))
    assert code == 550 and text[-1].startswith("5.6.0 "), (code, text)
    code, text = send(r, from_msg(b"(" * 40 + b"alice@example.test" + b")" * 40 + b" ceo@bank.test"))
    refused_553(code, text, "deep comment")
    code, text = send(r, from_msg(b"(" * 20 + b"x" + b")" * 20 + b" ceo@bank.test"))
    refused_553(code, text, "comment")
    code, text = send(r, from_msg(b",\r\n ".join([b", " * 300] * 15) + b"ceo@bank.test"))
    refused_553(code, text, "many commas")
    r.expect("QUIT", 221)
    r.close()
    assert delivered(surat, BOB) == []


def test_long_foreign_address_reply_says_why(surat):
    """A From: address too long to quote whole in a reply line (512 octets,
    RFC 5321 4.5.3.1.5) is cut there, with "...": the reply still says
    which field and why, not a bare "553 5.7.1 Error"."""
    r = sub(surat)
    for f in (b"x" * 600 + b"@bank.test", b"ceo@" + b"a." * 300 + b"test",
              b"Alice <alice@example.test>,\r\n " + b"y" * 700 + b"@bank.test"):
        r.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        assert [r.reply()[0] for _ in range(3)] == [250, 250, 354]
        r.send(from_msg(f) + b".\r\n")
        line = r._line()
        assert len(line) <= 510, len(line)
        addr = f.split(b" ")[-1].decode()
        m = re.fullmatch(r"553 5\.7\.1 From: address (\S+)\.\.\.", line)
        assert m and addr.startswith(m.group(1)) and len(m.group(1)) > 400, line
    r.close()
    assert delivered(surat, BOB) == []


def test_bare_cr_and_lf_in_from_refused(surat):
    """A bare CR or LF would make some readers see a From: line the check
    does not: the whole message is refused (550 5.6.0)."""
    r = sub(surat)
    for hdr in (b"From: alice@example.test\rFrom: ceo@bank.test\r\n",
                b"X-Pad: a\rFrom: ceo@bank.test\r\nFrom: alice@example.test\r\n",
                b"From: alice@example.test\nFrom: ceo@bank.test\r\n",
                b"Subject: x\r\n\nFrom: ceo@bank.test\r\nFrom: alice@example.test\r\n"):
        code, text = send(r, hdr + b"Subject: bare\r\n\r\nx\r\n")
        assert code == 550 and text[-1].startswith("5.6.0 "), (hdr, code, text)
    r.close()
    assert delivered(surat, BOB) == []


def test_nul_in_header_refused(surat):
    """A NUL in a field name hides the field from the check ("Fr\\0om:" is
    no From:), but readers that drop NULs show it as From: a NUL anywhere
    in the header section is refused on submission; one in the body is not
    looked at."""
    r = sub(surat)
    for hdr in (b"From: alice@example.test\r\nFr\x00om: ceo@bank.test\r\n",
                b"\x00From: ceo@bank.test\r\n",
                b"From: alice@example.test\r\nSender\x00: ceo@bank.test\r\n",
                b"From: alice@example.test\r\nX-Pad: \x00\r\n"):
        code, text = send(r, hdr + b"Subject: nul\r\n\r\nx\r\n")
        refused_553(code, text, hdr)
        assert "NUL" in text[-1], (hdr, text)
    good = b"From: alice@example.test\r\nSubject: nul in body\r\n\r\nx\x00y\r\n"
    code, text = send(r, good)
    assert code == 250, (code, text)
    r.close()
    got = delivered(surat, BOB)
    assert [submitted(m)[1] for m in got] == [good]


def test_field_name_outside_ascii_refused(surat):
    """A field name is printable ASCII (RFC 5322 2.2 ftext; RFC 6532 leaves
    names so). "From\\xc2\\xa0:" is no From: to the check, but readers that
    trim Unicode white space from a name (JavaScript's trim(), as in
    WildDuck's header index; Go's strings.TrimSpace) show it as From: a
    name with any other octet before its colon is refused (553 5.7.1), also
    folded; 8-bit text in a value, or in a line with no colon, is not."""
    r = sub(surat)
    for name in (b"From\xc2\xa0", b"\xc2\xa0From", b"\xef\xbb\xbfFrom", b"From\x0b",
                 b"\x0cFrom", b"From\xe3\x80\x80", b"Sender\xc2\xa0", b"From\r\n \xc2\xa0",
                 b"From\x7f", b"From\xa0"):
        code, text = send(r, b"From: alice@example.test\r\n" + name +
                          b": CEO <ceo@bank.test>\r\nSubject: name\r\n\r\nx\r\n")
        refused_553(code, text, name)
        assert "field name" in text[-1], (name, text)
    good = ("From: =?utf-8?q?J=C3=B6?= <alice@example.test>\r\nSubject: Gr\u00fc\u00dfe: \u00e4\r\n"
            "X-Note:\r\n \u00fc: ok\r\n\r\nK\u00f6rper\r\n").encode()
    code, text = send(r, good, mail_params=" SMTPUTF8")
    assert code == 250, (code, text)
    r.close()
    got = delivered(surat, BOB)
    assert [submitted(m)[1] for m in got] == [good]


def test_field_name_folded_before_colon_refused(surat):
    """A name folded before its colon ("Message-ID" CRLF " : <x>") is a field
    to readers that unfold first (RFC 5322 2.2.3) and the start of the
    body to those that read lines: the Message-ID: and Date: surat adds
    when it finds none went in before it, a second of each to the first
    kind. Refused on submission like the other names readers disagree on
    (553 5.7.1); a fold after the colon is fine, and so is content with no
    header at all (white space first, or a first line that is no field,
    such a name as well): it is stored whole as body, after an empty line."""
    r = sub(surat)
    for hdr in (b"Message-ID\r\n : <folded.1@client.test>\r\n",
                b"Date\r\n\t: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
                b"X-Note \r\n \r\n : x\r\n"):
        code, text = send(r, b"From: alice@example.test\r\n" + hdr + b"Subject: f\r\n\r\nx\r\n")
        refused_553(code, text, hdr)
        assert "folded before its colon" in text[-1], (hdr, text)
    good = [b"From: alice@example.test\r\nMessage-ID:\r\n <ok.1@client.test>\r\n"
            b"Date:\r\n Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: a\r\n b: c\r\n\r\nx\r\n",
            b" indented, no header\r\n  with: a colon\r\n\r\nx\r\n",
            b"From\r\n : alice@example.test\r\nSubject: f\r\n\r\nx\r\n"]
    for body in good:
        code, text = send(r, body)
        assert code == 250, (body, code, text)
    r.close()
    got = delivered(surat, BOB)
    # The content with no header is stored as body, after an empty line.
    assert sorted(submitted(m)[1] for m in got) == \
        sorted([good[0], b"\r\n" + good[1], b"\r\n" + good[2]])


def test_bcc_fields_taken_out(surat):
    """Bcc: and Resent-Bcc: name recipients meant to stay hidden (RFC 5322
    3.6.3): submission takes them out, folded or with white space before
    the colon, as Postfix's cleanup does by default; other fields, a Bcc:
    line of the body and mail on the MX port are left alone. With BDAT a
    last field may end without CRLF."""
    r = sub(surat)
    bodies = [b"From: alice@example.test\r\nBcc: hidden@bank.test\r\nTo: bob@example.test\r\n"
              b"bcc :\r\n h2@bank.test,\r\n\th3@bank.test\r\nX-Bcc: kept\r\n"
              b"Resent-Bcc: h4@bank.test\r\nBcc-Note: kept\r\nSubject: s\r\n\r\n"
              b"Bcc: body line\r\n",
              b"From: alice@example.test\r\nSubject: t\r\nBCC: h5@bank.test"]
    code, text = send(r, bodies[0])
    assert code == 250, (code, text)
    code, text = send_bdat(r, [bodies[1][:20], bodies[1][20:]])
    assert code == 250, (code, text)
    r.close()
    mx = Raw(surat.port("smtp"))
    mx.greet()
    mx.expect("EHLO peer.test", 250)
    code, text = send(mx, b"From: x@remote.test\r\nBcc: mx@remote.test\r\nSubject: mx\r\n\r\nx\r\n",
                      frm="x@remote.test")
    assert code == 250, (code, text)
    mx.close()
    got = sorted(delivered(surat, BOB), key=lambda m: b"Subject: mx" in m)
    sent = [submitted(m)[1] for m in got[:2]]
    assert sorted(sent) == sorted([
        b"From: alice@example.test\r\nTo: bob@example.test\r\nX-Bcc: kept\r\n"
        b"Bcc-Note: kept\r\nSubject: s\r\n\r\nBcc: body line\r\n",
        b"From: alice@example.test\r\nSubject: t\r\n"]), sent
    assert b"\r\nBcc: mx@remote.test\r\n" in got[2], got[2]


MUA_MESSAGES = [
    # Thunderbird: 8-bit text after the colons, a colon in the 8-bit body.
    ("Message-ID: <1a@client.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0100\r\n"
     "MIME-Version: 1.0\r\nUser-Agent: Mozilla Thunderbird\r\nContent-Language: de-DE\r\n"
     "To: bob@example.test\r\nFrom: Alice <alice@example.test>\r\n"
     "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"
     "Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
     "Content-Transfer-Encoding: 8bit\r\n\r\nR\u00e9union\u00a0: https://x.test/\r\n"),
    # Outlook: an empty value, a long Subject folded with a tab, Thread-Index.
    ("From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n"
     "Subject: a long subject line that the client folds before it reaches\r\n"
     "\tseventy-eight columns\r\nThread-Topic: t\r\nThread-Index: AQHa\r\n"
     "Date: Mon, 1 Jan 2024 09:00:00 +0000\r\nMessage-ID: <2b@client.test>\r\n"
     "x-ms-has-attach:\r\nX-MS-TNEF-Correlator:\r\nMIME-Version: 1.0\r\n\r\nhi\r\n"),
    # git send-email: the patch's author line is body, after the empty line.
    ("From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
     "Subject: [PATCH 1/2] smtp: x\r\nDate: Mon, 1 Jan 2024 09:00:00 +0000\r\n"
     "Message-Id: <3c@client.test>\r\nX-Mailer: git-send-email 2.39.2\r\n"
     "MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
     "From: J\u00f6rg <jorg@other.test>\r\n\r\ndiff\r\n"),
    # mutt / Apple Mail: a raw UTF-8 Subject (SMTPUTF8), a tab after a colon.
    ("Date: Mon, 1 Jan 2024 09:00:00 +0000\r\nFrom: alice@example.test\r\n"
     "To: bob@example.test\r\nSubject:\t\u00c4rger \u00fcber: \u00e9t\u00e9\r\n"
     "Message-ID: <4d@client.test>\r\nUser-Agent: NeoMutt/20220429\r\n\r\nx\r\n"),
]


def test_real_mua_headers_accepted_intact(surat):
    """The header checks of submission (names in printable ASCII, not folded
    before the colon; From: owned) must pass what real MUAs send: 8-bit text
    after a colon (SMTPUTF8), empty values, folds after the colon, tabs, and
    a From: line in the body. Each is stored as sent: nothing added, since
    each has its own Message-ID: and Date:."""
    r = sub(surat)
    for m in MUA_MESSAGES:
        code, text = send(r, m.encode(), mail_params=" SMTPUTF8")
        assert code == 250, (m, code, text)
    r.close()
    got = delivered(surat, BOB)
    assert sorted(submitted(m) for m in got) == sorted((b"", m.encode()) for m in MUA_MESSAGES)


# ---------------------------------------------------------------- header/body boundary

def test_from_in_body_is_not_checked(surat):
    body = (b"From: alice@example.test\r\nSubject: quoting\r\n\r\n"
            b"From: ceo@bank.test\r\n> From: bob@example.test\r\n")
    # A line of white space only continues the field: it is no boundary.
    cont = b"From: alice@example.test\r\nSubject: x\r\n \r\nFrom: ceo@bank.test\r\n\r\nx\r\n"
    r = sub(surat)
    code, text = send(r, body)
    assert code == 250, (code, text)
    code, text = send(r, cont)
    refused_553(code, text, "white-space line")
    code, text = send_bdat(r, [body[:30], body[30:]])
    assert code == 250, (code, text)
    r.close()
    got = delivered(surat, BOB)
    assert [submitted(m)[1] for m in got] == [body, body]


def test_line_that_is_no_field_ends_the_header(surat):
    """A line that is no field ends the header (RFC 5322 2.2; mail readers
    start the body there): submission puts the empty line in before it, as
    Postfix's cleanup does, so that readers which read on to the first
    empty line agree. The Message-ID:/Date: counted and added are then the
    only ones in the header, not a second pair; content with no header at
    all whose first line has 8-bit text before a colon is body, accepted
    (it was refused as a field name outside ASCII)."""
    cases = [
        # (sent, stored header part before the added block, stored after it)
        (b"X-Note: n\r\nhello there\r\nMessage-ID: <in-text@client.test>\r\n"
         b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n",
         b"X-Note: n\r\n", b"\r\nhello there\r\n"),
        ("Liebe Gr\u00fc\u00dfe: Anna\r\nText\r\n".encode(), b"", b"\r\nLiebe"),
    ]
    r = sub(surat)
    for body, _, _ in cases:
        code, text = send(r, body, mail_params=" SMTPUTF8")
        assert code == 250, (body, code, text)
    r.close()
    got = sorted(delivered(surat, BOB), key=lambda m: b"Liebe" in m)
    assert len(got) == 2
    for stored, (body, head, after) in zip(got, cases):
        rest = split_stored(stored)[2]
        m = re.match(re.escape(head) + ADDED + re.escape(after), rest)
        assert m, (body, rest)
        # Every reader finds one Message-ID: and one Date: in the header.
        header = rest[:rest.index(b"\r\n\r\n") + 2]
        assert header.count(b"Message-ID:") == 1 and header.count(b"Date:") == 1, rest
        assert rest.endswith(body[len(head):]), rest


def test_empty_header_section_body_from_line(surat):
    """A message that starts with CRLF has no header at all: a 'From:' line
    in its body is text, not a sender to check (RFC 5322 2.1)."""
    body = b"\r\nFrom: ceo@bank.test wrote:\r\n\r\nhello\r\n"
    r = sub(surat)
    code, text = send(r, body)
    r.close()
    assert code == 250, (code, text)
    added, rest = submitted(stored_one(surat, BOB))
    assert added and rest == body


def test_missing_from_accepted_intact(surat):
    """No From: at all: accepted as is (the code's documented choice, RFC
    6409 8.1 allows an MSA to add one), with Message-ID:/Date: added."""
    body = b"To: bob@example.test\r\nSubject: anonymous\r\n\r\nbody\r\n"
    r = sub(surat)
    code, text = send(r, body)
    assert code == 250, (code, text)
    r.close()
    added, rest = submitted(stored_one(surat, BOB))
    assert added and rest == body


# ---------------------------------------------------------------- other sender fields

def test_spoofed_sender_header(surat):
    """Sender: names who sent the message (RFC 5322 3.6.2), shown by readers as
    'on behalf of': on submission it must be owned like From:, also alone."""
    r = sub(surat)
    code, text = send(r, b"From: alice@example.test\r\nSender: ceo@bank.test\r\n"
                         b"Subject: s\r\n\r\nx\r\n")
    refused_553(code, text, "Sender")
    code, text = send(r, b"Sender: ceo@bank.test\r\nSubject: s\r\n\r\nx\r\n")
    refused_553(code, text, "Sender without From")
    r.close()
    assert delivered(surat, BOB) == []


def test_spoofed_resent_headers(surat):
    """Resent-From:/Resent-Sender: name who resent the message (RFC 5322
    3.6.6): owned, like From:."""
    r = sub(surat)
    for f in (b"Resent-From: ceo@bank.test", b"Resent-Sender: ceo@bank.test",
              b"Resent-From: alice@example.test\r\nResent-Sender: bob@example.test"):
        code, text = send(r, b"From: alice@example.test\r\n" + f + b"\r\nSubject: r\r\n\r\nx\r\n")
        refused_553(code, text, f)
    r.close()
    assert delivered(surat, BOB) == []


def test_owned_sender_fields_and_free_reply_to(surat):
    """The other side of the two tests above: owned Sender:/Resent-From:
    pass, Reply-To: is free (it is no claim of authorship)."""
    surat.cli("alias", "add", "sales@example.test", ALICE)
    body = (b"From: sales@example.test\r\nSender: Alice <alice+out@example.test>\r\n"
            b"Resent-From: alice@example.test\r\nReply-To: ceo@bank.test\r\n"
            b"Subject: ok\r\n\r\nx\r\n")
    r = sub(surat)
    code, text = send(r, body)
    assert code == 250, (code, text)
    r.close()
    assert submitted(stored_one(surat, BOB))[1] == body


# ---------------------------------------------------------------- aliases, users

def test_alias_ownership_in_from(surat):
    for a in (("sales@example.test", ALICE), ("support@example.test", BOB),
              ("team@example.test", ALICE, BOB), ("chain@example.test", "sales@example.test"),
              ("ext@example.test", "someone@remote.test"), ("@example.test", ALICE),
              ("tagged@example.test", "alice+x@example.test"),
              # The admin gave this +tag form of alice's to bob.
              ("alice+vip@example.test", BOB)):
        surat.cli("alias", "add", *a)
    r = sub(surat)
    for f in ("sales@example.test", "Sales@Example.TEST", "sales+news@example.test",
              "team@example.test", "chain@example.test", "tagged@example.test"):
        code, text = send(r, from_msg(f))
        assert code == 250, (f, code, text)
    for f in ("support@example.test", "ext@example.test", "random@example.test",
              "bob+x@example.test", "alice+vip@example.test", "someone@remote.test"):
        code, text = send(r, from_msg(f))
        refused_553(code, text, f)
    # The envelope follows the same rule.
    r.expect("MAIL FROM:<chain@example.test>", 250, "2.1.0")
    r.expect("RSET", 250)
    r.expect("MAIL FROM:<random@example.test>", 553, "5.7.1")
    r.expect("MAIL FROM:<alice+vip@example.test>", 553, "5.7.1")
    r.close()
    b = sub(surat, user=BOB, pw="bob-pw")
    for f in ("team@example.test", "alice+vip@example.test"):
        code, text = send(b, from_msg(f), frm=BOB, rcpt=ALICE)
        assert code == 250, (f, code, text)
    code, text = send(b, from_msg("sales@example.test"), frm=BOB, rcpt=ALICE)
    refused_553(code, text, "bob as sales")
    b.close()
    assert len(delivered(surat, BOB)) == 6
    assert len(delivered(surat, ALICE)) == 2


def test_alias_removed_mid_session(surat):
    surat.cli("alias", "add", "sales@example.test", ALICE)
    r = sub(surat)
    code, text = send(r, from_msg("sales@example.test"))
    assert code == 250, (code, text)
    surat.cli("alias", "del", "sales@example.test")
    code, text = send(r, from_msg("sales@example.test"))
    refused_553(code, text, "alias gone")
    r.expect("MAIL FROM:<sales@example.test>", 553, "5.7.1")
    r.close()
    assert len(delivered(surat, BOB)) == 1


def test_deleted_user_session_cannot_submit(surat):
    """After `surat user del`, the user's open submission session sends
    nothing more, not even with the null sender and no From:."""
    r = sub(surat)
    surat.cli("user", "del", ALICE)
    code = None
    try:
        for line in ("MAIL FROM:<alice@example.test>", "MAIL FROM:<>", "RCPT TO:<bob@example.test>",
                     "DATA"):
            code, text = r.cmd(line)
            if line == "MAIL FROM:<alice@example.test>":
                assert code >= 400, (code, text)
                continue
            if code >= 400:
                break
        if code == 354:
            r.send(b"Subject: from a deleted account\r\n\r\nx\r\n.\r\n")
            code, _ = r.reply()
    except (EOFError, OSError):
        pass    # the session was ended: fine
    r.close()
    assert code != 250, "message from a deleted user accepted"
    assert delivered(surat, BOB) == []


def test_recreated_user_is_not_the_old_session(surat):
    """`surat user del` then `user add` of the same address (someone else,
    another password): the old session authenticated as the deleted
    account, not as the new one, and sends nothing more (as IMAP's ends)."""
    r = sub(surat)
    surat.cli("user", "del", ALICE)
    surat.add_user(ALICE, "someone-else-pw")
    try:
        code, text = r.cmd("MAIL FROM:<alice@example.test>")
        assert code == 421, (code, text)
    except (EOFError, OSError):
        pass    # the session was ended: fine
    r.close()
    assert delivered(surat, BOB) == []
    # The new account itself sends.
    n = sub(surat, user=ALICE, pw="someone-else-pw")
    code, text = send(n, from_msg(ALICE))
    assert code == 250, (code, text)
    n.close()


def test_utf8_from(surat):
    user = "j\u00f6s\u00e9@example.test"
    surat.add_user(user, "utf8-pw")
    r = sub(surat)
    for f in (user, "J\u00d6S\u00c9@example.test", '"j\u00f6s\u00e9"@example.test',
              "jo\u0308se\u0301@example.test", "\u0430lice@example.test",
              "alice@ex\u00e4mple.test", "alice\uff20example.test"):
        code, text = send(r, from_msg(f.encode()), mail_params=" SMTPUTF8")
        refused_553(code, text, f)
    good = from_msg('"J\u00f6s\u00e9 Alice" <alice@example.test>'.encode(), "utf8")
    code, text = send(r, good, mail_params=" SMTPUTF8")
    assert code == 250, (code, text)
    r.close()
    j = sub(surat, "submissions", user, "utf8-pw")
    for f in (user, '"j\u00f6s\u00e9"@example.test', "J\u00f6s\u00e9 <j\u00f6s\u00e9+x@example.test>"):
        code, text = send(j, from_msg(f.encode(), "mine"), frm=user, mail_params=" SMTPUTF8")
        assert code == 250, (f, code, text)
    code, text = send(j, from_msg("alice@example.test"), frm=user, mail_params=" SMTPUTF8")
    refused_553(code, text, "utf8 user as alice")
    j.close()
    got = delivered(surat, BOB)
    assert len(got) == 4
    assert good in [submitted(m)[1] for m in got]


# ---------------------------------------------------------------- transport paths

def test_bdat_chunk_boundaries(surat):
    r = sub(surat)
    # The field name, and the stranger, split over chunks.
    code, text = send_bdat(r, [b"Fr", b"om: alice@example.test,\r\n", b" ceo@bank.test\r\n\r\nb\r\n"])
    refused_553(code, text, "split")
    # No final CRLF: the field ends at the end of the data.
    code, text = send_bdat(r, [b"Subject: x\r\nFrom: ceo@bank.test"])
    refused_553(code, text, "no CRLF")
    code, text = send_bdat(r, [b"From: alice@example.test\r\nFrom: ceo@bank.test"])
    refused_553(code, text, "second, no CRLF")
    # Then a clean one: nothing of the refused ones is left over.
    whole = b"From: alice@example.test\r\nSubject: clean\r\n\r\nbody\r\n"
    code, text = send_bdat(r, [whole[:7], whole[7:20], whole[20:]])
    assert code == 250, (code, text)
    # An empty message: accepted (no From: to check), headers added.
    code, text = send_bdat(r, [b""])
    assert code == 250, (code, text)
    r.close()
    got = delivered(surat, BOB)
    assert len(got) == 2
    bodies = sorted((submitted(m) for m in got), key=lambda b: b[1])
    assert bodies[0][1] == b"" and bodies[0][0]
    assert bodies[1][1] == whole and bodies[1][0]


def test_dot_stuffing_and_from(surat):
    """What the check reads is what is stored: the unstuffed text."""
    r = sub(surat)
    # An unstuffed leading dot is dropped: this is a From: line.
    code, text = send(r, b".From: ceo@bank.test\r\nSubject: d\r\n\r\nx\r\n")
    refused_553(code, text, ".From")
    # Stuffed: the line is '.From: ...', no From: field.
    body = b"From: alice@example.test\r\n..From: ceo@bank.test\r\nSubject: d\r\n\r\n..\r\n"
    code, text = send(r, body)
    assert code == 250, (code, text)
    r.close()
    assert submitted(stored_one(surat, BOB))[1] == body.replace(b"\n..", b"\n.")


def test_pipelined_transactions(surat):
    r = sub(surat)
    good = b"From: alice@example.test\r\nSubject: good\r\n\r\nok\r\n.\r\n"
    bad = b"From: bob@example.test\r\nSubject: bad\r\n\r\nno\r\n.\r\n"
    tx = b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
    r.send(tx + good + tx + bad + b"RCPT TO:<bob@example.test>\r\nDATA\r\n" + tx + good +
           b"QUIT\r\n")
    got = [r.reply()[0] for _ in range(15)]
    assert got == [250, 250, 354, 250,          # good
                   250, 250, 354, 553,          # spoofed From:
                   503, 503,                    # nothing left of it
                   250, 250, 354, 250, 221], got
    r.close()
    got = delivered(surat, BOB)
    assert len(got) == 2
    assert all(b"Subject: good" in m and b"Subject: bad" not in m for m in got)


def test_refused_mail_from_pipelined_with_data(surat):
    """MAIL refused, RCPT/DATA pipelined behind it: the message text is
    read as (bad) commands and never delivered."""
    r = sub(surat)
    r.send(b"MAIL FROM:<bob@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
           b"From: ceo@bank.test\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    c, t = r.reply()
    refused_553(c, t, "MAIL")
    assert [r.reply()[0] for _ in range(2)] == [503, 503]
    rest = [r.reply()[0] for _ in range(6)]
    assert rest[:5] == [500] * 5 and rest[5] == 250, rest
    r.close()
    assert delivered(surat, BOB) == []


def test_envelope_after_rset_and_refusals(surat):
    r = sub(surat)
    r.expect("MAIL FROM:<alice@example.test>", 250)
    r.expect("RCPT TO:<bob@example.test>", 250)
    r.expect("RSET", 250)
    for i, path in enumerate(('<bob@example.test>', '<"bob"@example.test>',
                              '<@example.test:bob@example.test>', '<Bob+x@EXAMPLE.test>',
                              '<postmaster@example.test>')):
        if i == 3:
            # Each refusal counts in smtp.max_errors (10): a new session.
            r.close()
            r = sub(surat)
        r.expect("MAIL FROM:" + path, 553, "5.7.1")
        # The refused MAIL leaves no transaction behind.
        r.expect("RCPT TO:<bob@example.test>", 503, "5.5.1")
    r.expect("MAIL FROM:<postmaster>", 501)
    r.expect("DATA", 503, "5.5.1")
    # AUTH= names no one: the Received: header names neither.
    code, text = send(r, from_msg("alice@example.test"), mail_params=" AUTH=bob@example.test")
    assert code == 250, (code, text)
    r.close()
    stored = stored_one(surat, BOB)
    _, received, _ = split_stored(stored)
    assert "authenticated" not in received and "bob" not in \
        received.split("for <")[0], received


def test_null_sender_on_submission(surat):
    r = sub(surat)
    code, text = send(r, from_msg("ceo@bank.test"), frm="")
    refused_553(code, text, "null sender, spoofed From:")
    body = from_msg("Alice <alice@example.test>", "receipt")
    code, text = send(r, body, frm="")
    assert code == 250, (code, text)
    r.close()
    assert submitted(stored_one(surat, BOB))[1] == body


def test_submissions_listener_policy(surat):
    r = sub(surat, "submissions")
    r.expect("MAIL FROM:<bob@example.test>", 553, "5.7.1")
    code, text = send(r, from_msg("\"Alice\" <bob@example.test>"))
    refused_553(code, text, "DATA")
    code, text = send_bdat(r, [b"From: alice@example.test, ", b"ceo@bank.test\r\n\r\nx\r\n"])
    refused_553(code, text, "BDAT")
    good = from_msg("alice@example.test", "tls")
    code, text = send(r, good)
    assert code == 250, (code, text)
    r.close()
    assert submitted(stored_one(surat, BOB))[1] == good


def test_auth_on_mx_port_gets_submission_policy(surat):
    """AUTH after STARTTLS on the MX listener: the same rules and headers."""
    r = sub(surat, "smtp")
    r.expect("MAIL FROM:<bob@example.test>", 553, "5.7.1")
    code, text = send(r, from_msg("bob@example.test"))
    refused_553(code, text, "MX port")
    good = b"From: alice@example.test\r\nSubject: via 25\r\n\r\nx\r\n"
    code, text = send(r, good)
    assert code == 250, (code, text)
    r.close()
    added, rest = submitted(stored_one(surat, BOB))
    assert added and rest == good


# ---------------------------------------------------------------- Message-ID:, Date:

def submit_each(s, bodies):
    """Submit each body as alice to bob+INDEX; {index: the stored message}."""
    r = sub(s)
    for i, body in enumerate(bodies):
        code, text = send(r, body, rcpt="bob+%d@example.test" % i)
        assert code == 250, (i, code, text)
    r.close()
    got = delivered(s, BOB)
    assert len(got) == len(bodies)
    return {int(re.search(rb"for <bob\+(\d+)@example\.test>", m).group(1)): m for m in got}


def test_message_id_and_date_insertion(surat):
    cases = [
        # Folded, any case: kept, no second copy.
        (b"From: alice@example.test\r\nMessage-Id:\r\n <f@client.test>\r\n"
         b"date:\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\nSubject: folded\r\n\r\nx\r\n", False),
        # Only in the body: they do not count.
        (b"From: alice@example.test\r\nSubject: in body\r\n\r\n"
         b"Message-ID: <b@client.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n", True),
        # Other fields whose names merely contain them.
        (b"From: alice@example.test\r\nMessage-IDs: <x@client.test>\r\n"
         b"Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nResent-Message-ID: <r@client.test>\r\n"
         b"X-Date: now\r\nSubject: lookalikes\r\n\r\nx\r\n", True),
        # Headers only, no empty line, no body.
        (b"From: alice@example.test\r\nMessage-ID: <h@client.test>\r\n"
         b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", False),
    ]
    seen = submit_each(surat, [body for body, _ in cases])
    for i, (body, want_added) in enumerate(cases):
        stored = seen[i]
        added, rest = submitted(stored)
        assert rest == body, (i, rest)
        assert bool(added) == want_added, (i, added)
        hdr = stored.split(b"\r\n\r\n")[0]
        assert len(re.findall(rb"(?mi)^message-id\s*:", hdr)) == 1, (i, hdr)
        assert len(re.findall(rb"(?mi)^date\s*:", hdr)) == 1, (i, hdr)


# Our Message-ID:/Date:, as split out of a stored message by added_between().
OUR_FIELDS = (rb"Message-ID: <[0-9a-f]{32}@mx\.example\.test>\r\n"
              rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n")


def added_between(stored, head, tail):
    """Assert stored is, after Return-Path:/Delivered-To:, our Received:,
    then head, our Message-ID: and Date:, then tail, byte for byte."""
    _, received, rest = split_stored(stored)
    assert "by mx.example.test (surat) with ESMTPSA" in received, received
    assert "authenticated" not in received, received
    assert re.fullmatch(re.escape(head) + OUR_FIELDS + re.escape(tail), rest), rest


def field_names(stored):
    """The names of the header fields of stored, in order."""
    return re.findall(rb"(?m)^([\x21-\x39\x3b-\x7e]+):", stored.split(b"\r\n\r\n")[0])


def submit_one(s, msg):
    """Submit msg as alice to bob; the stored message."""
    r = sub(s)
    code, text = send(r, msg)
    assert code == 250, (code, text)
    r.close()
    return stored_one(s, BOB)


def test_added_fields_after_trace_fields(surat):
    """A submitted message that already carries Received: fields: ours on
    top, the two originals together right under it, Message-ID:/Date:
    after the message's last field, right before the empty line (RFC 5322
    3.6 keeps a trace block together at the top; Postfix's cleanup puts
    them there too)."""
    trace = (b"Received: from relay.client.test (relay.client.test [192.0.2.7])\r\n"
             b"\tby mta.client.test with ESMTP id r1;\r\n"
             b"\tMon, 1 Jan 2024 00:00:02 +0000\r\n"
             b"Received: from laptop (laptop [192.0.2.9]) by relay.client.test;\r\n"
             b" Mon, 1 Jan 2024 00:00:01 +0000\r\n")
    head = trace + b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: traced\r\n"
    stored = submit_one(surat, head + b"\r\nbody\r\n")
    added_between(stored, head, b"\r\nbody\r\n")
    assert field_names(stored) == [b"Return-Path", b"Delivered-To", b"Received", b"Received",
                                   b"Received", b"From", b"To", b"Subject", b"Message-ID",
                                   b"Date"], stored


def test_sender_added_to_a_from_of_several_mailboxes(surat):
    """RFC 5322 3.6.2: a From: of more than one mailbox needs a Sender:.
    The user owns them all (else 553); the one who sent it is the user, so
    submission adds Sender: <user> where the MUA left it out, after
    Message-ID:/Date:, and nowhere else: not to a From: of one mailbox, not
    where a Sender: is (any case), not for addresses in the body."""
    cases = [
        (b"From: alice@example.test, Alice Two <alice+two@example.test>\r\n"
         b"Subject: two\r\n\r\nx\r\n", True),
        (b"From: alice+a@example.test,\r\n alice+b@example.test\r\n"
         b"sender: alice@example.test\r\n\r\nx\r\n", False),
        (b"From: Alice <alice@example.test>\r\nSubject: one\r\n\r\n"
         b"From: alice+a@example.test, alice+b@example.test\r\n", False),
    ]
    for i, m in submit_each(surat, [body for body, _ in cases]).items():
        body, want = cases[i]
        hdr = m.split(b"\r\n\r\n")[0]
        senders = re.findall(rb"(?mi)^sender\s*:.*", hdr)
        assert len(senders) == (1 if want or b"sender:" in body else 0), (i, m)
        if want:
            head, tail = body.split(b"\r\n\r\n", 1)
            _, _, rest = split_stored(m)
            assert re.fullmatch(re.escape(head + b"\r\n") + OUR_FIELDS +
                                rb"Sender: alice@example\.test\r\n" +
                                re.escape(b"\r\n" + tail), rest), rest
        else:
            assert submitted(m)[1] == body, (i, m)


def test_added_fields_header_only(surat):
    """No empty line, no body: the fields go at the very end, and no empty
    line is made up."""
    head = b"From: alice@example.test\r\nSubject: header only\r\n"
    stored = submit_one(surat, head)
    added_between(stored, head, b"")
    assert b"\r\n\r\n" not in stored, stored


def test_added_fields_after_folded_last_field(surat):
    """A last field folded over three lines: the fields go after all of it,
    so its continuation lines stay its own."""
    head = (b"From: alice@example.test\r\nSubject: a subject long enough\r\n"
            b" to be folded\r\n\tover three lines\r\n")
    stored = submit_one(surat, head + b"\r\nbody\r\n")
    added_between(stored, head, b"\r\nbody\r\n")
    assert field_names(stored)[-4:] == [b"From", b"Subject", b"Message-ID", b"Date"], stored


def test_quota_at_rcpt_counts_the_fields_submission_adds(surat):
    """On submission the stored message also has the Message-ID: and Date:
    surat adds to a message without them (about 100 octets): RCPT counts
    them, as it counts our Received:, so a message that SIZE= says can
    never fit is refused there (552 5.2.3), not accepted and then bounced."""
    body = b"From: alice@example.test\r\nTo: x@example.test\r\nSubject: q\r\n\r\nbody\r\n"
    r = sub(surat)
    code, text = send(r, body, rcpt=ALICE, mail_params=" SIZE=%d" % len(body))
    assert code == 250, (code, text)
    stored = stored_one(surat, ALICE)
    assert submitted(stored)[0], stored
    # Bob's empty mailbox holds the same message (4 octets shorter: his
    # name twice) less 40 octets: the added fields are more than that.
    surat.cli("user", "quota", BOB, str(len(stored) - 40))
    r.expect("MAIL FROM:<alice@example.test> SIZE=%d" % len(body), 250, "2.1.0")
    r.expect("RCPT TO:<bob@example.test>", 552, "5.2.3")
    r.expect("QUIT", 221)
    r.close()


def test_accounts_database_error_is_temporary_not_a_foreign_sender(surat):
    """The sender checks need the accounts database: when a lookup fails,
    that is the server's fault, answered 451 4.3.0 as at RCPT, never 553
    "not owned", which tells the user to stop using their own address."""
    import os
    import sqlite3
    r = sub(surat)
    r.expect("MAIL FROM:<alice@example.test>", 250, "2.1.0")
    r.expect("RCPT TO:<x@remote.test>", 250, "2.1.5")
    r.expect("DATA", 354)
    db = sqlite3.connect(os.path.join(surat.data_dir, "accounts.db"), timeout=10,
                         isolation_level=None)
    db.execute("ALTER TABLE users RENAME TO users_away")
    try:
        r.send(from_msg(ALICE) + b".\r\n")
        code, text = r.reply()
        assert code == 451 and text[-1].startswith("4.3.0 "), (code, text)
        r.expect("MAIL FROM:<alice@example.test>", 451, "4.3.0")
    finally:
        db.execute("ALTER TABLE users_away RENAME TO users")
        db.close()
    assert send(r, from_msg(ALICE))[0] == 250
    r.expect("QUIT", 221)
    r.close()
    # The refused MAIL has its access line, as any message refused.
    assert re.search(r" access id=- .* from=<alice@example\.test> rcpts=- size=0 result=451 "
                     r"reason=\"accounts lookup failed\" ", surat.log()), surat.log()


def test_quota_at_rcpt_counts_the_empty_line_submission_puts_in(surat):
    """A header that ends at a line that is no field gets the empty line put
    in before it (2 octets): RCPT counts them with the other fields
    submission may add, so a message SIZE= says cannot fit by one octet is
    refused there (552 5.2.3), not accepted and then deferred for quota,
    while one that fits exactly is taken. So is the Sender: it adds to a
    From: of two mailboxes (the worst case: no Message-ID:, Date: or
    Sender: of its own); without it a message 30 octets too big passed."""
    body = (b"From: alice@example.test, alice+2@example.test\r\nSubject: q\r\n"
            b"no field here\r\n")
    r = sub(surat)
    code, text = send(r, body, rcpt=ALICE, mail_params=" SIZE=%d" % len(body))
    assert code == 250, (code, text)
    stored = stored_one(surat, ALICE)
    assert b"\r\nSender: alice@example.test\r\n" in stored, stored
    assert b"\r\n\r\nno field here\r\n" in stored, stored
    # Bob's copy: the same, his name (two letters shorter) in it twice.
    fits = len(stored) - 4
    for quota, want in ((fits - 1, 552), (fits, 250)):
        surat.cli("user", "quota", BOB, str(quota))
        r.expect("MAIL FROM:<alice@example.test> SIZE=%d" % len(body), 250, "2.1.0")
        code, text = r.cmd("RCPT TO:<bob@example.test>")
        assert code == want, (quota, fits, code, text)
        r.expect("RSET", 250)
    r.expect("QUIT", 221)
    r.close()
