"""The header fields surat adds, checked against the RFC grammars.

Received: (RFC 5321 4.4 Stamp, RFC 3848 / RFC 6531 3.7.3 protocol words,
RFC 5322 comments, folding and the 998-octet line limit), Message-ID: and
Date: added on submission (RFC 5322 3.6.4 / 3.3, only when missing), the
Delivered-To: of local delivery, nothing but Received: on port 25
(RFC 5321 6.4), an existing header never altered, and where the added
fields go when the message has no header or a header without an empty
line after it.

Each test starts one daemon and makes several checks with it; every wait
is bounded.
"""
import base64
import calendar
import ipaddress
import re
import time

from test_smtp import (Raw, bounded, make_populated, populated_data,  # noqa: F401
                       surat, wait_queue_empty)

TEST_LIMIT = 30

ALICE, BOB = "alice@example.test", "bob@example.test"
ATEXT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            "!#$%&'*+-/=?^_`{|}~")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


# ---------------------------------------------------------------- sending

def plain_ir(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()


def session(s, kind="smtp", helo="client.test", starttls=False, auth=None, verb="EHLO"):
    """A Raw session greeted (and TLS'd / authenticated as asked)."""
    r = Raw(s.port(kind), tls=(kind == "submissions"))
    c, t = r.reply()
    assert c == 220, t
    if starttls:
        r.expect("EHLO " + helo, 250)
        r.starttls()
    r.expect("%s %s" % (verb, helo), 250)
    if auth:
        r.expect("AUTH PLAIN " + plain_ir(*auth), 235, "2.7.0")
    return r


def transaction(r, body, frm="sender@remote.test", rcpts=(BOB,), params="", bdat=False):
    """One transaction; body as bytes (CRLF, already dot-stuffed for DATA)."""
    r.send(("MAIL FROM:<%s>%s\r\n" % (frm, params)).encode())
    c, t = r.reply()
    assert c == 250, (frm, c, t)
    for a in rcpts:
        r.send(("RCPT TO:<%s>\r\n" % a).encode())
        c, t = r.reply()
        assert c == 250, (a, c, t)
    if bdat:
        r.send(b"BDAT %d LAST\r\n" % len(body) + body)
    else:
        r.expect("DATA", 354)
        r.send(body + b".\r\n")
    c, t = r.reply()
    assert c == 250, (c, t)


def all_stored(s, addr, n, timeout=10):
    """Every message of addr once it holds n of them (bounded wait)."""
    uids = s.wait_messages(addr, n, timeout=timeout)
    return [s.message(addr, u) for u in uids]


def by_marker(msgs, marker):
    got = [m for m in msgs if marker in m]
    assert len(got) == 1, (marker, len(got))
    return got[0]


# ---------------------------------------------------------------- RFC 5322 header parsing

def header_fields(stored):
    """The header section as [(name, raw field incl. continuation lines and CRLF)],
    checking line syntax: CRLF only, lines of at most 998 octets (RFC 5322 2.1.1),
    continuation lines start with WSP. Stops at the empty line, or at the
    first line that is not a field (returned as the second value)."""
    fields = []
    rest = stored
    while rest:
        if rest.startswith(b"\r\n"):
            return fields, rest
        end = rest.find(b"\r\n")
        line = rest if end < 0 else rest[:end + 2]
        if line[:1] in (b" ", b"\t"):
            assert fields, "first line is a continuation: %r" % line
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            m = re.match(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:", line)
            if not m:
                return fields, rest
            fields.append((m.group(1).decode(), line))
        rest = rest[len(line):]
    return fields, b""


def check_lines(raw):
    """RFC 5322 2.1.1/2.2: CRLF line ends, no bare CR or LF, <= 998 octets a line."""
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"", "field does not end in CRLF: %r" % raw
    for ln in lines[:-1]:
        assert b"\r" not in ln and b"\n" not in ln, "bare CR/LF in %r" % raw
        assert len(ln) <= 998, "line of %d octets (RFC 5322 2.1.1 MUST <= 998)" % len(ln)
    for ln in lines[1:-1]:
        assert ln[:1] in (b" ", b"\t"), "continuation without WSP: %r" % raw
        assert ln.strip(b" \t"), "continuation line of only WSP (obs-FWS): %r" % raw


def unfold(raw):
    """The field body, unfolded (RFC 5322 2.2.3)."""
    v = raw.split(b":", 1)[1]
    return re.sub(rb"\r\n(?=[ \t])", b"", v).rstrip(b"\r\n")


class Cursor:
    def __init__(self, s, utf8):
        self.s, self.i, self.utf8 = s, 0, utf8

    def fail(self, why):
        raise AssertionError("%s at offset %d of %r" % (why, self.i, self.s))

    def peek(self, n=1):
        return self.s[self.i:self.i + n]

    def wsp(self):
        j = self.i
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1
        return self.i - j

    def comment(self):
        """RFC 5322 3.2.2 comment, nested, with quoted-pairs; ctext is
        printable US-ASCII except ( ) \\ (UTF-8 too under RFC 6532)."""
        assert self.peek() == "("
        start, depth = self.i, 0
        while True:
            if self.i >= len(self.s):
                self.fail("unterminated comment")
            ch = self.s[self.i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    self.i += 1
                    return self.s[start:self.i]
            elif ch == "\\":
                self.i += 1
                if self.i >= len(self.s) or not (" " <= self.s[self.i] <= "~" or
                                                 self.s[self.i] == "\t"):
                    self.fail("bad quoted-pair in comment")
            elif not (ch in " \t" or "!" <= ch <= "~" or (self.utf8 and ord(ch) > 0x7f)):
                self.fail("character %r not allowed in a comment" % ch)
            self.i += 1

    def cfws(self):
        """Returns (consumed anything, [comments])."""
        j, cs = self.i, []
        while True:
            self.wsp()
            if self.peek() == "(":
                cs.append(self.comment())
            else:
                break
        return self.i > j, cs

    def keyword(self, kw):
        if self.s[self.i:self.i + len(kw)].lower() == kw.lower() and \
           self.s[self.i + len(kw):self.i + len(kw) + 1] in (" ", "\t"):
            self.i += len(kw)
            if not self.wsp():
                self.fail("no FWS after %s" % kw)
            return True
        return False

    def domain(self):
        """RFC 5321 Domain (sub-domain = Let-dig [Ldh-str]; U-labels under RFC 6531)."""
        m = re.match(r"[^\s()<>\[\];@,\\\"]+", self.s[self.i:])
        if not m:
            self.fail("no domain")
        d = m.group(0)
        check_domain(d, self.utf8)
        self.i += len(d)
        return d

    def address_literal(self):
        m = re.match(r"\[[^\]\s]*\]", self.s[self.i:])
        if not m:
            self.fail("no address literal")
        lit = m.group(0)
        check_address_literal(lit)
        self.i += len(lit)
        return lit

    def extended_domain(self):
        """Extended-Domain = Domain / ( Domain FWS "(" TCP-info ")" ) /
        ( address-literal FWS "(" TCP-info ")" ).  Returns (name, tcp_info)."""
        if self.peek() == "[":
            name = self.address_literal()
            need_info = True
        else:
            name = self.domain()
            need_info = False
        save = self.i
        if self.wsp() and self.peek() == "(":
            m = re.match(r"\(([^()]*)\)", self.s[self.i:])
            inner = m.group(1) if m else ""
            parts = inner.split()
            ok = False
            try:
                if len(parts) == 1:
                    check_address_literal(parts[0])
                    ok = True
                elif len(parts) == 2:
                    check_domain(parts[0], self.utf8)
                    check_address_literal(parts[1])
                    ok = True
            except AssertionError:
                ok = False
            if ok:
                self.i += len(m.group(0))
                return name, inner
        self.i = save
        if need_info:
            self.fail("address literal without TCP-info")
        return name, None

    def atom(self):
        j = self.i
        while self.i < len(self.s) and (self.s[self.i] in ATEXT or
                                        (self.utf8 and ord(self.s[self.i]) > 0x7f)):
            self.i += 1
        if self.i == j:
            self.fail("no atom")
        return self.s[j:self.i]

    def path(self):
        """RFC 5321 Path = "<" [ A-d-l ":" ] Mailbox ">" (or a bare Mailbox)."""
        m = re.match(r'<?("(?:[^"\\]|\\.)*"|[^\s<>@"]+)@(\[[^\]]*\]|[^\s<>;()]+)>?',
                     self.s[self.i:])
        if not m:
            self.fail("no path")
        whole = m.group(0)
        if whole.startswith("<") != whole.endswith(">"):
            self.fail("unbalanced angle brackets in path")
        local, dom = m.group(1), m.group(2)
        if not local.startswith('"'):
            for atom in local.split("."):
                if not atom or not all(c in ATEXT or (self.utf8 and ord(c) > 0x7f)
                                       for c in atom):
                    self.fail("local part %r is not a Dot-string" % local)
        if dom.startswith("["):
            check_address_literal(dom)
        else:
            check_domain(dom, self.utf8)
        self.i += len(whole)
        return whole


def check_domain(d, utf8):
    assert len(d.encode()) <= 255, "domain over 255 octets: %r" % d
    for label in d.split("."):
        assert label, "empty label in domain %r" % d
        if any(ord(c) > 0x7f for c in label):
            assert utf8, "non-ASCII label %r outside an SMTPUTF8 message" % label
            assert label[0] != "-" and label[-1] != "-", d
            assert all(c.isalnum() or c == "-" or ord(c) > 0x7f for c in label), d
        else:
            assert re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", label), \
                "label %r of %r is not Let-dig [Ldh-str] (RFC 5321 4.1.2)" % (label, d)
            assert len(label) <= 63, d


def check_address_literal(lit):
    assert lit.startswith("[") and lit.endswith("]"), lit
    inner = lit[1:-1]
    if inner[:5].lower() == "ipv6:":
        ipaddress.IPv6Address(inner[5:])
    else:
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            raise AssertionError("address literal %r is neither IPv4 nor IPv6:..." % lit)


DATE_RE = re.compile(
    r"(?:[ \t]*(?P<dow>Mon|Tue|Wed|Thu|Fri|Sat|Sun)[ \t]*,)?[ \t]*(?P<day>\d{1,2})[ \t]+"
    r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[ \t]+(?P<year>\d{4,})[ \t]+"
    r"(?P<h>\d\d):(?P<m>\d\d)(?::(?P<s>\d\d))?[ \t]+(?P<zone>[+-]\d{4})")


def check_date_time(text, utf8=False):
    """RFC 5322 3.3 date-time [CFWS], day-of-week matching the date, zone in
    range, and the time within 10 minutes of now. Returns the Unix time."""
    m = DATE_RE.match(text)
    assert m, "not an RFC 5322 date-time: %r" % text
    c = Cursor(text[m.end():], utf8)
    c.cfws()
    assert c.i == len(c.s), "junk after date-time: %r" % text
    day, year = int(m.group("day")), int(m.group("year"))
    mon = MONTHS.index(m.group("mon")) + 1
    h, mi, sec = int(m.group("h")), int(m.group("m")), int(m.group("s") or 0)
    assert 1 <= day <= calendar.monthrange(year, mon)[1], text
    assert h <= 23 and mi <= 59 and sec <= 60, text
    zone = m.group("zone")
    zh, zm = int(zone[1:3]), int(zone[3:5])
    assert zm <= 59, "zone %s (RFC 5322 3.3: minutes 00..59)" % zone
    if m.group("dow"):
        assert DAYS[calendar.weekday(year, mon, day)] == m.group("dow"), \
            "day-of-week not the date's (RFC 5322 3.3 MUST): %r" % text
    off = (zh * 60 + zm) * 60 * (1 if zone[0] == "+" else -1)
    t = calendar.timegm((year, mon, day, h, mi, sec)) - off
    assert abs(t - time.time()) < 600, "date-time %r is not now" % text
    return t


def parse_received(raw, utf8=False):
    """Parse one Received: field (raw bytes, folded) as RFC 5321 4.4 Time-stamp-line.
    Returns a dict of its clauses."""
    check_lines(raw)
    assert raw[:9].lower() == b"received:", raw
    if not utf8:
        assert all(b < 0x80 for b in raw), "8-bit octets in Received: of a non-SMTPUTF8 " \
            "message: %r" % raw
    c = Cursor(unfold(raw).decode("utf-8"), utf8)
    out = {"comments": []}
    if not c.wsp():
        c.fail("no FWS after Received:")
    if not c.keyword("from"):
        c.fail("no FROM clause (RFC 5321 4.4: MUST be supplied)")
    out["from"], out["tcp_info"] = c.extended_domain()
    _, cs = c.cfws()
    out["comments"] += cs
    if not c.keyword("by"):
        c.fail("no BY clause")
    out["by"], _ = c.extended_domain()
    for kw in ("via", "with", "id", "for"):
        save = c.i
        had, cs = c.cfws()
        if had and c.keyword(kw):
            out["comments"] += cs
            if kw == "with":
                out["with"] = c.atom()
            elif kw == "id":
                if c.peek() == "<":
                    m = re.match(r"<[^<>\s]+@[^<>\s]+>", c.s[c.i:])
                    if not m:
                        c.fail("bad msg-id in ID")
                    c.i += len(m.group(0))
                    out["id"] = m.group(0)
                else:
                    out["id"] = c.atom()
            elif kw == "for":
                out["for"] = c.path()
            else:
                out[kw] = c.atom()
        else:
            c.i = save
    _, cs = c.cfws()
    out["comments"] += cs
    if c.peek() != ";":
        c.fail("expected ';' before the date-time (Stamp = ... [CFWS] \";\" FWS date-time)")
    c.i += 1
    if not c.wsp():
        c.fail("no FWS after ';'")
    out["time"] = check_date_time(c.s[c.i:], utf8)
    return out


def check_msg_id(raw):
    """RFC 5322 3.6.4 message-id = "Message-ID:" msg-id CRLF, with
    id-left = dot-atom-text, id-right = dot-atom-text / no-fold-literal."""
    check_lines(raw)
    v = unfold(raw).decode("ascii")
    dat = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    m = re.fullmatch(r"[ \t]*(<%s@(?:%s|\[[\x21-\x5a\x5e-\x7e]*\])>)[ \t]*" % (dat, dat), v)
    assert m, "not an RFC 5322 msg-id: %r" % raw
    return m.group(1)


def check_date_field(raw):
    check_lines(raw)
    return check_date_time(unfold(raw).decode("ascii"))


def split_inserted(msg, body, at):
    """The bytes inserted into body at offset at to make msg; asserts that
    the rest of msg is body unchanged."""
    tail = len(body) - at
    assert len(msg) >= len(body) and msg[:at] == body[:at] and msg[len(msg) - tail:] == body[at:], \
        "original content altered (insertion at %d):\n%r\nvs\n%r" % (at, msg, body)
    return msg[at:len(msg) - tail]


def split_added(stored, body):
    """(Delivered-To field, Received field, [other added fields]) of a stored
    message whose original content is body, a message with a header and an
    empty line after it. On top, the Return-Path: of final delivery (RFC 5321
    4.4), Delivered-To: and our Received:; any other added field closes the
    header section, right before its empty line, so that trace fields the
    message had stay together under ours (RFC 5322 3.6). Asserts the
    original is intact around them."""
    assert header_fields(body)[0], "body has no header: %r" % body[:80]
    at = body.index(b"\r\n\r\n") + 2
    fields, _ = header_fields(stored)
    assert fields and fields[0][0] == "Return-Path", stored[:300]
    assert re.fullmatch(rb"Return-Path: <[^<>\r\n]*>\r\n", fields[0][1]), fields[0][1]
    assert len(fields) >= 3 and fields[1][0] == "Delivered-To", stored[:300]
    assert fields[2][0] == "Received", stored[:300]
    top = sum(len(raw) for _, raw in fields[:3])
    added = split_inserted(stored[top:], body, at)
    others, rest = header_fields(added)
    assert rest == b"", "added bytes are not header fields: %r" % added
    return fields[1][1], fields[2][1], others


# ---------------------------------------------------------------- Received: every protocol word

def test_received_syntax_every_protocol_word(make_populated):
    """RFC 5321 4.4 Stamp for each way in, with the RFC 3848 / RFC 6531 3.7.3
    protocol word; port 25 without AUTH adds nothing else (RFC 5321 6.4);
    an authenticated client gets Message-ID:/Date: and nothing is altered."""
    s = make_populated(extra={"allow_plaintext_auth": "yes"})
    U = "jös\u00e9@example.test"
    s.add_user(U, "utf8-pw")
    # (kind, starttls, auth, utf8, bdat, expected word, submission)
    cases = [
        ("smtp", False, None, False, False, "ESMTP", False),
        ("smtp", False, None, False, True, "ESMTP", False),
        ("smtp", True, None, False, False, "ESMTPS", False),
        ("smtp", False, None, True, False, "UTF8SMTP", False),
        ("smtp", True, None, True, True, "UTF8SMTPS", False),
        ("submission", False, (ALICE, "alice-pw"), False, False, "ESMTPA", True),
        ("submission", False, (ALICE, "alice-pw"), True, False, "UTF8SMTPA", True),
        ("submission", True, (ALICE, "alice-pw"), False, False, "ESMTPSA", True),
        ("submission", True, (ALICE, "alice-pw"), True, True, "UTF8SMTPSA", True),
        ("submissions", False, (ALICE, "alice-pw"), False, False, "ESMTPSA", True),
        ("submissions", False, (ALICE, "alice-pw"), True, False, "UTF8SMTPSA", True),
    ]
    bodies = {}
    for n, (kind, tls, auth, utf8, bdat, word, sub) in enumerate(cases):
        r = session(s, kind, starttls=tls, auth=auth)
        frm = ALICE if auth else "sender@remote.test"
        rcpt = "bob+%d@example.test" % n
        body = ("From: %s\r\nTo: %s\r\nSubject: case %d %s\r\n\r\nbody %d\r\n" %
                (frm, rcpt, n, word, n)).encode()
        if utf8:
            body = body.replace(b"body", "k\u00f6rper".encode())
        transaction(r, body, frm=frm, rcpts=(rcpt,), bdat=bdat,
                    params=" SMTPUTF8" if utf8 else "")
        r.close()
        bodies[n] = body
    # HELO (no ESMTP): the word is SMTP.
    r = session(s, "smtp", verb="HELO")
    body = b"From: sender@remote.test\r\nSubject: case helo SMTP\r\n\r\nhelo body\r\n"
    transaction(r, body, rcpts=("bob+helo@example.test",))
    r.close()
    cases.append(("smtp", False, None, False, False, "SMTP", False))
    bodies[len(cases) - 1] = body

    msgs = all_stored(s, BOB, len(cases))
    seen_ids = set()
    for n, (kind, tls, auth, utf8, bdat, word, sub) in enumerate(cases):
        body = bodies[n]
        # Its Subject: line: submission puts fields inside the body sent.
        stored = by_marker(msgs, re.search(rb"Subject: [^\r]*\r\n", body).group(0))
        dt, rec, others = split_added(stored, body)
        p = parse_received(rec, utf8)
        assert p["from"] == "client.test" and p["tcp_info"] == "localhost [127.0.0.1]", (n, p)
        assert p["by"] == "mx.example.test", (n, p)
        assert p.get("with") == word, (n, word, p)
        assert "id" in p, (n, p)
        rcpt = "bob+%d@example.test" % n if word != "SMTP" else "bob+helo@example.test"
        assert p.get("for") == "<%s>" % rcpt, (n, p)
        if tls or kind == "submissions":
            assert any(re.match(r"\(TLSv1\.[23]:[A-Z0-9_-]+\)$", cm) for cm in p["comments"]), \
                (n, p["comments"])
        names = [f[0].lower() for f in others]
        if sub:
            assert sorted(names) == ["date", "message-id"], (n, others)
            for name, raw in others:
                if name.lower() == "message-id":
                    mid = check_msg_id(raw)
                    assert mid not in seen_ids, mid
                    seen_ids.add(mid)
                else:
                    check_date_field(raw)
        else:
            # RFC 5321 6.4: a server not acting as MSA MUST NOT add these.
            assert names == [], (n, others)


# ---------------------------------------------------------------- Received: the HELO name

def test_received_helo_forms(make_populated):
    """RFC 5321 4.4: the FROM clause SHOULD contain the name as presented in
    EHLO, and must be an Extended-Domain: long LDH names, address literals and
    IDN names must come out as a valid Domain / address-literal; a name with
    odd characters is refused or cannot break the field."""
    s = make_populated()
    long255 = ".".join(c * 63 for c in "abcd")               # 255 octets, valid
    long187 = "%s.%s.%s.test" % ("x" * 60, "y" * 60, "z" * 60)
    idn = "m\u00fcnchen.example"
    good = [("[127.0.0.1]", False), ("[IPv6:::1]", False), (long187, False),
            (long255, False), (idn, True), (idn, False), ("Client.Test", False)]
    bodies = []
    for n, (helo, utf8) in enumerate(good):
        r = Raw(s.port("smtp"))
        r.reply()
        r.send(("EHLO %s\r\n" % helo).encode())
        c, t = r.reply()
        if c != 250:
            r.close()
            continue
        body = b"Subject: helo form %d\r\n\r\nhelo %d\r\n" % (n, n)
        transaction(r, body, rcpts=("bob+%d@example.test" % n,),
                    params=" SMTPUTF8" if utf8 else "")
        r.close()
        bodies.append((n, helo, utf8, body))
    odd = ["evil.test)(x", "evil.test; by x; Mon, 1 Jan 2024 00:00:00 +0000",
           "evil.test\tX-Injected: yes", "evil.test\nX-Injected: yes", "\"q\"@evil.test",
           "evil.test\x00x", "evil.test\x7f", "[127.0.0.1] (x)", "(c) evil.test"]
    for k, helo in enumerate(odd):
        r = Raw(s.port("smtp"))
        r.reply()
        r.send(b"EHLO " + helo.encode() + b"\r\n")
        try:
            c, t = r.reply()
        except (EOFError, OSError):
            r.close()
            continue
        if c == 250:
            body = b"Subject: odd helo %d\r\n\r\nodd %d\r\n" % (k, k)
            transaction(r, body, rcpts=("bob+odd%d@example.test" % k,))
            bodies.append(("odd%d" % k, helo, False, body))
        r.close()
    msgs = all_stored(s, BOB, len(bodies))
    problems = []
    for n, helo, utf8, body in bodies:
        stored = by_marker(msgs, body)
        try:
            _, rec, others = split_added(stored, body)
            assert others == [], others
            p = parse_received(rec, utf8)
            got = p["from"]
            want = [helo.lower()]
            if any(ord(ch) > 0x7f for ch in helo):
                want.append(helo.encode("idna").decode().lower())
            if helo.startswith("["):
                assert p["tcp_info"] == "localhost [127.0.0.1]", p
            # RFC 5321 4.4: SHOULD be the name as presented in EHLO.
            assert got.lower() in want, "FROM %r, EHLO was %r" % (got, helo)
        except AssertionError as e:
            problems.append("EHLO %r: %s" % (helo[:40] + ("..." if len(helo) > 40 else ""),
                                             str(e)[:400]))
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- Received: the ID clause

def test_received_id_is_the_queue_id(surat):
    """RFC 5321 4.4 ID clause: the queue id, as Postfix writes it, which the
    250 reply, the access line and `surat queue` name the message by; not
    the session's, which two messages of one session would share. Over
    DATA and BDAT, on port 25 and on submission."""
    sent = []
    for kind, auth in (("smtp", None), ("submission", (ALICE, "alice-pw"))):
        r = session(surat, kind, starttls=auth is not None, auth=auth)
        frm = ALICE if auth else "sender@remote.test"
        for n in range(2):
            body = ("From: %s\r\nSubject: id %s %d\r\n\r\nx\r\n" % (frm, kind, n)).encode()
            r.expect("MAIL FROM:<%s>" % frm, 250)
            r.expect("RCPT TO:<%s>" % BOB, 250)
            if n:
                r.send(b"BDAT %d LAST\r\n" % len(body) + body)
            else:
                r.expect("DATA", 354)
                r.send(body + b".\r\n")
            c, t = r.reply()
            m = re.fullmatch(r"2\.0\.0 Ok: queued as ([0-9a-f]{16})", t[-1])
            assert c == 250 and m, (c, t)
            sent.append((body, m.group(1)))
        r.close()
    msgs = all_stored(surat, BOB, len(sent))
    for body, qid in sent:
        rec = [raw for name, raw in header_fields(by_marker(msgs, body.split(b"\r\n")[1]))[0]
               if name == "Received"][0]
        assert parse_received(rec)["id"] == qid, (qid, rec)
    assert len({qid for _, qid in sent}) == len(sent), sent


# ---------------------------------------------------------------- placement

def test_added_fields_placement_without_proper_header(make_populated):
    """The added fields must stay valid wherever the message's own header
    ends, and go exactly there: no header at all (leading CRLF, a first line
    that is not a field, an empty message: right under our Received:), a
    header without the empty line (at its end), BDAT without a final CRLF
    (before the unfinished last line, or before the field it continues), a
    folded last field (after all of it), and a message whose first line
    starts with white space (which must not be read as a continuation of
    the field surat put above it: one CRLF makes it the body, so a
    Message-ID:/Date: in it is not the message's). On submission a line
    that is no field ends the header for every reader: the empty line goes
    in before it (as Postfix's cleanup does)."""
    s = make_populated()
    # (content, offset in it where Message-ID:/Date: go on submission)
    cases = [
        (b"\r\nno header at all\r\n", 0),
        (b"Subject: header only, no empty line\r\n", 37),
        (b"Subject: no final CRLF", 0),
        (b"plain text line, no header and no empty line\r\nsecond line\r\n", 0),
        (b"", 0),
        (b" indented first line, no header\r\n\r\nmore text\r\n", 0),
        (b"\tTabbed first line\r\nSubject: after\r\n\r\nx\r\n", 0),
        # That content is all body: fields in it are no reason to add none.
        (b" indented, then\r\nMessage-ID: <in-body@client.test>\r\n"
         b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nx\r\n", 0),
        (b"X-A: 1\r\nSubject: no final CRLF", 8),
        (b"X-A: 1\r\nSubject: folded,\r\n no final CRLF", 8),
        (b"X-A: 1\r\nSubject: folded\r\n\tover\r\n three\r\n\r\nbody\r\n", 40),
        (b"X-A: 1\r\nSubject: folded, header only\r\n\tover\r\n three\r\n", 53),
        # A line that is no field ends the header, for every parser: before it.
        (b"X-Note: n\r\nSubject: s\r\nhello there\r\n\r\nbody\r\n", 23),
        # No header: a Message-ID: in the text is not the message's.
        (b"plain text first\r\nMessage-ID: <in-text@client.test>\r\n\r\nbody\r\n", 0),
        # BDAT: a last line with no CRLF, folded or not, is still header: the
        # Message-ID:/Date: on it are the message's own (None: checked apart).
        (b"Message-ID: <own@client.test>", None),
        (b"X-A: 1\r\nMessage-ID: <own2@client.test>\r\n\tx", None),
        (b"Date: Mon, 1 Jan 2024\r\n 00:00:00 +0000", None),
    ]
    for body, at in cases:
        assert not at or body[at - 2:at] == b"\r\n", (body, at)
    problems = []
    sent = []
    for kind in ("smtp", "submission"):
        for n, (body, at) in enumerate(cases):
            if kind == "smtp":
                r = session(s, "smtp")
                frm = "sender@remote.test"
            else:
                r = session(s, "submission", starttls=True, auth=(ALICE, "alice-pw"))
                frm = ALICE
            rcpt = "bob+%s%d@example.test" % (kind, n)
            bdat = not body.endswith(b"\r\n")
            transaction(r, body, frm=frm, rcpts=(rcpt,), bdat=bdat)
            r.close()
            sent.append((kind, n, rcpt, body, at))
    msgs = all_stored(s, BOB, len(sent))
    for kind, n, rcpt, body, at in sent:
        tag = ("for <%s>" % rcpt).encode()
        got = [m for m in msgs if tag in m]
        assert len(got) == 1, (kind, n)
        stored = got[0]
        if at is None:
            for name in (b"Message-ID:", b"Date:"):
                want = 1 if name in body or kind == "submission" else 0
                if stored.count(b"\r\n" + name) != want:
                    problems.append("%s case %d %r: %d %r, not %d:\n%r"
                                    % (kind, n, body[:30], stored.count(b"\r\n" + name),
                                       name, want, stored))
            continue
        try:
            fields, _ = header_fields(stored)
            names = [f[0] for f in fields]
            assert names[:3] == ["Return-Path", "Delivered-To", "Received"], names
            parse_received(fields[2][1])
            top = sum(len(raw) for _, raw in fields[:3])
            inserted = split_inserted(stored[top:], body, at)
            added, rest = header_fields(inserted)
            # One CRLF only: to separate a body that starts with white space,
            # and on submission where a line that is no field ends the header
            # (the empty line goes in before it).
            nofield = body[at:] and not body[at:].startswith(b"\r\n") and \
                not re.match(rb"[!-9;-~]+[ \t]*:", body[at:])
            sep = b"\r\n" if body[:1] in (b" ", b"\t") or \
                (kind == "submission" and nofield) else b""
            assert rest == sep, "inserted %r" % inserted
            want = ["Message-ID", "Date"] if kind == "submission" else []
            assert [f[0] for f in added] == want, "inserted %r" % inserted
            if added:
                check_msg_id(added[0][1])
                check_date_field(added[1][1])
        except AssertionError as e:
            problems.append("%s case %d %r: %s" % (kind, n, body[:30], str(e)[:500]))
    assert not problems, "\n".join(problems)


def test_message_id_and_date_on_submission(make_populated):
    """RFC 5322 3.6.4 msg-id syntax, one Message-ID per message (the same in
    every recipient's copy, a new one for every message), 3.3 Date: syntax;
    none added when present, in whichever spelling and folding; and never on
    port 25 even for a message without them."""
    s = make_populated()
    r = session(s, "submission", starttls=True, auth=(ALICE, "alice-pw"))
    for i in range(3):
        body = b"From: alice@example.test\r\nSubject: idless %d\r\n\r\nidless %d\r\n" % (i, i)
        transaction(r, body, frm=ALICE, rcpts=(BOB, ALICE))
    present = [
        b"From: alice@example.test\r\nMESSAGE-ID: <a1@client.test>\r\n"
        b"DaTe: Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: present 0\r\n\r\nx\r\n",
        b"From: alice@example.test\r\nMessage-ID:\r\n\t<a2@client.test>\r\nDate:\r\n"
        b" Mon,\r\n 1 Jan 2024 00:00:00 +0000\r\nSubject: present 1\r\n\r\nx\r\n",
        b"From: alice@example.test\r\nMessage-ID\t: <a3@client.test>\r\nDate\t: Mon, 1 Jan 2024"
        b" 00:00:00 +0000\r\nSubject: present 2\r\n\r\nx\r\n",
    ]
    for i, body in enumerate(present):
        transaction(r, body, frm=ALICE, rcpts=("bob+p%d@example.test" % i,))
    r.close()
    mx = b"From: s@remote.test\r\nSubject: mx idless\r\n\r\nmx\r\n"
    r = session(s, "smtp")
    transaction(r, mx, rcpts=("bob+mx@example.test",))
    r.close()
    msgs = all_stored(s, BOB, 3 + len(present) + 1)
    alice = all_stored(s, ALICE, 3)
    ids = []
    for i in range(3):
        marker = b"Subject: idless %d\r\n" % i
        copies = [m for m in msgs + alice if marker in m]
        assert len(copies) == 2, (i, len(copies))
        mids = []
        for stored in copies:
            body = b"From: alice@example.test\r\nSubject: idless %d\r\n\r\nidless %d\r\n" % (i, i)
            _, rec, others = split_added(stored, body)
            parse_received(rec)
            names = [n.lower() for n, _ in others]
            assert sorted(names) == ["date", "message-id"], others
            for name, raw in others:
                if name.lower() == "message-id":
                    mids.append(check_msg_id(raw))
                else:
                    check_date_field(raw)
        assert mids[0] == mids[1], "one message, two Message-IDs: %s" % mids
        ids.append(mids[0])
    assert len(set(ids)) == 3, ids
    for i, body in enumerate(present):
        stored = by_marker(msgs, body)
        _, _, others = split_added(stored, body)
        assert others == [], (i, others)
    _, _, others = split_added(by_marker(msgs, mx), mx)
    assert others == [], others


# ---------------------------------------------------------------- Delivered-To:

def test_delivered_to_at_local_delivery(make_populated):
    """Delivered-To: (RFC 9228) names the mailbox it was delivered to as an
    addr-spec, once, at the very top, for an alias, a +tag and a catch-all
    alike; the message below it is the queued one byte for byte."""
    s = make_populated()
    s.cli("alias", "add", "team@example.test", ALICE, BOB)
    s.add_domain("other.test")
    s.cli("alias", "add", "@other.test", BOB)
    r = session(s, "smtp")
    sent = []
    for rcpt in ("team@example.test", "bob+tag@example.test", "anyone@other.test"):
        body = ("Subject: dt %s\r\n\r\nto %s\r\n" % (rcpt, rcpt)).encode()
        transaction(r, body, rcpts=(rcpt,))
        sent.append(body)
    r.close()
    wait_queue_empty(s)
    bob = all_stored(s, BOB, 3)
    alice = all_stored(s, ALICE, 1)
    for box, acct in ((bob, BOB), (alice, ALICE)):
        for stored in box:
            body = next(b for b in sent if stored.endswith(b))
            dt, rec, others = split_added(stored, body)
            assert dt == b"Delivered-To: %s\r\n" % acct.encode(), dt
            assert stored.lower().count(b"\ndelivered-to:") == 1, stored[:300]
            parse_received(rec)
            assert others == [], others


# ---------------------------------------------------------------- 8-bit in added fields

def test_added_fields_ascii_for_non_utf8_message(make_populated):
    """A message sent without SMTPUTF8 must stay US-ASCII in the fields surat
    adds (RFC 5322 2.2: field bodies are printable US-ASCII; UTF-8 there is
    only for messages sent with SMTPUTF8, RFC 6532 3 / RFC 6531 3.7.3):
    (1) the Received: of a UTF-8 user who submits, from an ASCII alias of
    theirs, a message without SMTPUTF8; (2) the Delivered-To: of port-25
    mail without SMTPUTF8 to that ASCII alias."""
    s = make_populated(extra={"allow_plaintext_auth": "yes"})
    U = "jos\u00e9@example.test"
    s.add_user(U, "utf8-pw")
    s.cli("alias", "add", "jose@example.test", U)
    body = b"From: jose@example.test\r\nTo: bob@example.test\r\nSubject: ascii\r\n\r\nx\r\n"
    r = session(s, "submission", starttls=True, auth=(U, "utf8-pw"))
    transaction(r, body, frm="jose@example.test")
    r.close()
    mx = b"From: s@remote.test\r\nSubject: to the ascii alias\r\n\r\ny\r\n"
    r = session(s, "smtp")
    transaction(r, mx, rcpts=("jose@example.test",))
    r.close()
    problems = []
    stored = all_stored(s, BOB, 1)[0]
    _, rec, others = split_added(stored, body)
    try:
        parse_received(rec, utf8=False)
    except AssertionError as e:
        problems.append("submission Received: %s" % str(e).splitlines()[0])
    # (The Delivered-To: of a UTF-8 account stays UTF-8: it is the loop
    # guard, and no ASCII form of the address exists.)
    stored = all_stored(s, U, 1)[0]
    _, rec, _ = split_added(stored, mx)
    parse_received(rec, utf8=False)
    assert not problems, "\n".join(problems)
