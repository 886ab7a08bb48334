"""mutate: deterministic hostile answers for cf_emulator's ``[emu:mutate SEED]``.

The emulator builds the answer it would send (status, headers, a JSON body
or a list of SSE events), then hands it here: ``plan(seed)`` picks what to
break, ``apply(plan, answer)`` breaks the payload and ``render(plan,
answer, extra_headers)`` turns the result into the raw bytes to write (with
the framing, the pauses and the ending: a clean close or a reset).
Everything is chosen from ``random.Random(seed)`` alone, so a seed always
gives the same bytes for the same request.  Python 3 standard library only.

``plan(seed)`` is pure: a test can name the mutation of a seed without
talking to the emulator::

    python3 -c 'import sys; sys.path.insert(0, "emulator"); import mutate, json;
                print(json.dumps(mutate.plan(42)))'
    python3 emulator/mutate.py 1 3000      # one JSON plan per line

A plan is ``{"seed", "kind", "kinds", "params", "apply_seed"}``: ``kind`` is
the kinds joined by ``+`` (what the ``X-Emu-Mutation`` header says),
``kinds`` lists them (the primary kind first, then at most one transport
kind), ``params`` holds each kind's parameters (JSON-friendly: positions are
fractions in [0, 1), bytes are hex), and ``apply_seed`` seeds the choices
that depend on the answer itself (random bytes, chunk sizes).

Kinds
-----
One primary kind per seed, uniform over the kinds below; about 5% of the
seeds are ``none`` (the answer unchanged: the control group).  A seed whose
primary kind is a payload kind adds, 15% of the time, a transport kind.

Payload (a non-stream JSON body, or one or more events of a stream):

byte_flip         XOR 1-3 bytes with a random mask (in the usage object or
                  event half the time)
truncate          cut at a random offset; Content-Length (or the chunked
                  framing of a stream, ended by its last chunk) matches the cut
garbage           insert, or overwrite, 1-64 random bytes at a random offset
crlf              streams: line endings \\r\\n, \\r, or mixed (never a \\r
                  followed by a \\n that would merge two line endings);
                  bodies: random space/CR/LF/TAB between JSON tokens (valid)
huge_count        a usage count replaced by 999999999999999, 4294967296,
                  9223372036854775807, 18446744073709551616, 1e400, 1e30 or
                  123456789012345678901234567890
wrong_type_count  a usage count replaced by -5, 3.5, "12", null, true, [],
                  {}, or its key removed
invalid_utf8      \\xff, \\xc0\\xaf, \\xed\\xa0\\x80 or a truncated multi-byte
                  sequence put at the start or end of a string value
lone_surrogate    \\ud800, \\udc00 or \\ud800\\u0041 likewise
deep_nesting      an extra member "deep" whose value is N nested arrays,
                  N in 100, 511, 600, 2047, 2048, 5000 (in the top-level
                  object, or in the usage object)
dup_key           the usage object twice with different counts (the fake
                  one after it, at the end of the object, or first), or
                  "response" ("content" in chat-completion shapes) twice
usage_events      streams: another usage event with other cumulative counts
                  after or before the real one, the real one repeated, a usage
                  event before any content, an unreadable usage event (added,
                  or replacing the real one), or the usage event moved last,
                  without [DONE] and without its blank line
no_usage          every usage member removed, and usage-only events dropped
done_mid          streams: a "data: [DONE]" event before the usage event,
                  everything else (usage included) after it
no_final_blank    streams: the last event without its blank line ("\\n"
                  only, or nothing)

The stream-only kinds leave a non-stream body unchanged (the header still
names them).

Transport (the bytes on the wire):

bad_chunk         Transfer-Encoding: chunked (non-stream bodies too), with a
                  chunk-size line "zz", "100000000000000000" or "-1" before
                  the first chunk or between two chunks (the rest follows)
reset             the connection reset (SO_LINGER {1,0}) at a random offset
                  of the raw answer: before the status line, inside the
                  headers or inside the body
random_status     the status replaced with one of 200, 201, 204, 301, 400,
                  401, 404, 408, 429, 500, 502, 503, 504, 520, 599; body kept
slow              the raw answer written in 3-20 pieces, 200 ms of pauses
                  at most in all

Every mutated answer says ``Connection: close`` and ends with a close (or
the reset): nothing waits on a broken framing.
"""

import json
import random
import sys

PAYLOAD_KINDS = (
    "byte_flip", "truncate", "garbage", "crlf", "huge_count",
    "wrong_type_count", "invalid_utf8", "lone_surrogate", "deep_nesting",
    "dup_key", "usage_events", "no_usage", "done_mid", "no_final_blank",
)
TRANSPORT_KINDS = ("bad_chunk", "reset", "random_status", "slow")
KINDS = PAYLOAD_KINDS + TRANSPORT_KINDS
STREAM_ONLY = ("usage_events", "done_mid", "no_final_blank")
NONE_SHARE = 0.05
SECOND_SHARE = 0.15

HUGE = ("999999999999999", "4294967296", "9223372036854775807",
        "18446744073709551616", "1e400", "1e30",
        "123456789012345678901234567890")
WRONG = ("-5", "3.5", '"12"', "null", "true", "[]", "{}", "remove")
BAD_UTF8 = ("ff", "c0af", "eda080", "e697")   # the last: 2 of 3 bytes
SURROGATES = ("\\ud800", "\\udc00", "\\ud800\\u0041")
DEPTHS = (100, 511, 600, 2047, 2048, 5000)
BAD_SIZES = ("zz", "100000000000000000", "-1")
STATUSES = (200, 201, 204, 301, 400, 401, 404, 408, 429, 500, 502, 503,
            504, 520, 599)
COUNT_FIELDS = ("prompt_tokens", "completion_tokens")
MAX_SLOW_MS = 200

REASONS = {200: "OK", 201: "Created", 204: "No Content",
           301: "Moved Permanently", 400: "Bad Request", 401: "Unauthorized",
           404: "Not Found", 408: "Request Timeout",
           429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout", 520: "Unknown", 599: "Unknown"}


# --------------------------------------------------------------------------
# the plan

def _params(kind, rng):
    """The parameters of one kind, drawn from rng (JSON-friendly)."""
    r = lambda: round(rng.random(), 6)
    if kind == "byte_flip":
        return {"target": rng.choice(("usage", "any")),
                "flips": [[r(), r(), rng.randint(1, 255)]
                          for _ in range(rng.randint(1, 3))]}
    if kind == "truncate":
        return {"at": r()}
    if kind == "garbage":
        return {"mode": rng.choice(("insert", "replace")),
                "target": rng.choice(("usage", "any")),
                "event": r(), "at": r(), "length": rng.randint(1, 64)}
    if kind == "crlf":
        return {"eol": rng.choice(("crlf", "cr", "mixed")),
                "density": round(rng.uniform(0.1, 0.9), 3)}
    if kind == "huge_count":
        return {"value": rng.choice(HUGE), "field": rng.choice(COUNT_FIELDS)}
    if kind == "wrong_type_count":
        return {"value": rng.choice(WRONG), "field": rng.choice(COUNT_FIELDS)}
    if kind == "invalid_utf8":
        return {"bytes": rng.choice(BAD_UTF8),
                "target": rng.choice(("text", "any")),
                "pick": r(), "where": rng.choice(("start", "end"))}
    if kind == "lone_surrogate":
        return {"escape": rng.choice(SURROGATES),
                "target": rng.choice(("text", "any")),
                "pick": r(), "where": rng.choice(("start", "end"))}
    if kind == "deep_nesting":
        return {"depth": rng.choice(DEPTHS),
                "target": rng.choice(("top", "usage")), "event": r()}
    if kind == "dup_key":
        return {"key": rng.choice(("usage", "usage", "response")),
                "where": rng.choice(("adjacent", "end", "start")),
                "in": rng.randint(0, 5000), "out": rng.randint(0, 5000)}
    if kind == "usage_events":
        return {"variant": rng.choice(("after", "before", "repeat", "first",
                                       "unreadable", "unreadable_only",
                                       "last_no_blank")),
                "in": rng.randint(0, 5000), "out": rng.randint(0, 5000),
                "times": rng.randint(2, 3)}
    if kind == "no_usage":
        return {}
    if kind == "done_mid":
        return {"at": r()}
    if kind == "no_final_blank":
        return {"variant": rng.choice(("lf", "none"))}
    if kind == "bad_chunk":
        return {"size": rng.choice(BAD_SIZES),
                "where": rng.choice(("first", "mid")), "at": r()}
    if kind == "reset":
        return {"where": rng.choice(("before_status", "headers", "body",
                                     "body")), "at": r()}
    if kind == "random_status":
        return {"status": rng.choice(STATUSES)}
    if kind == "slow":
        return {"pieces": rng.randint(3, 20),
                "total_ms": rng.randint(20, MAX_SLOW_MS)}
    return {}


def plan(seed):
    """The mutation of a seed: {seed, kind, kinds, params, apply_seed}."""
    seed = int(seed)
    if seed < 0:
        raise ValueError("the seed must be a non-negative integer")
    rng = random.Random(seed)
    primary = "none" if rng.random() < NONE_SHARE else rng.choice(KINDS)
    kinds = [primary]
    params = {primary: _params(primary, rng)}
    if primary in PAYLOAD_KINDS and rng.random() < SECOND_SHARE:
        second = rng.choice(TRANSPORT_KINDS)
        kinds.append(second)
        params[second] = _params(second, rng)
    return {"seed": seed, "kind": "+".join(kinds), "kinds": kinds,
            "params": params, "apply_seed": rng.getrandbits(32)}


# --------------------------------------------------------------------------
# a small JSON scanner (over the emulator's own, valid, JSON bytes)

WS = b" \t\r\n"


def _string_end(b, i):
    """b[i] is '"': the index just after the closing quote."""
    i += 1
    n = len(b)
    while i < n:
        c = b[i]
        if c == 0x5C:          # backslash
            i += 2
            continue
        if c == 0x22:
            return i + 1
        i += 1
    return n


def _skip_ws(b, i):
    while i < len(b) and b[i] in WS:
        i += 1
    return i


def value_end(b, i):
    """The index just after the JSON value starting at b[i]."""
    i = _skip_ws(b, i)
    if i >= len(b):
        return i
    c = b[i]
    if c == 0x22:
        return _string_end(b, i)
    if c in b"[{":
        depth = 0
        n = len(b)
        while i < n:
            c = b[i]
            if c == 0x22:
                i = _string_end(b, i)
                continue
            if c in b"[{":
                depth += 1
            elif c in b"]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    j = i
    while j < len(b) and b[j] not in b",]} \t\r\n":
        j += 1
    return j


class Member:
    """One object member: key, its quote's index, value span, the
    container's span (open brace index, index just after the close)."""

    __slots__ = ("key", "kstart", "vstart", "vend", "ostart", "oend")

    def __init__(self, key, kstart, vstart, vend, ostart, oend):
        self.key, self.kstart, self.vstart, self.vend = key, kstart, vstart, vend
        self.ostart, self.oend = ostart, oend


def members(b):
    """Every object member in the JSON bytes b, at any depth, in order."""
    out = []
    stack = []          # [open index, is_object, [members to close]]
    i, n = 0, len(b)
    while i < n:
        c = b[i]
        if c == 0x22:
            end = _string_end(b, i)
            j = _skip_ws(b, end)
            if stack and stack[-1][1] and j < n and b[j] == 0x3A:   # a key
                vstart = _skip_ws(b, j + 1)
                key = b[i + 1:end - 1].decode("utf-8", "replace")
                m = Member(key, i, vstart, value_end(b, vstart),
                           stack[-1][0], None)
                stack[-1][2].append(m)
                out.append(m)
            i = end
            continue
        if c in b"[{":
            stack.append([i, c == 0x7B, []])
        elif c in b"]}" and stack:
            _, _, ms = stack.pop()
            for m in ms:
                m.oend = i + 1
        i += 1
    for _, _, ms in stack:
        for m in ms:
            m.oend = n
    return out


def usage_objects(b):
    """Members "usage" whose value is an object."""
    return [m for m in members(b) if m.key == "usage"
            and m.vstart < len(b) and b[m.vstart] == 0x7B]


def count_members(b, field):
    """The count members (field) inside the last usage object."""
    us = usage_objects(b)
    if not us:
        return []
    u = us[-1]
    return [m for m in members(b) if m.key == field
            and u.vstart < m.kstart < u.vend]


def remove_member(b, m):
    """b without member m (and the comma that joined it)."""
    before = b[:m.kstart].rstrip(WS)
    after = b[m.vend:]
    if before.endswith(b","):
        return before[:-1] + after
    rest = after.lstrip(WS)
    if rest.startswith(b","):
        return b[:m.kstart] + rest[1:]
    return b[:m.kstart] + after


def replace_span(b, start, end, new):
    return b[:start] + new + b[end:]


def usage_json(inp, out):
    return json.dumps({"prompt_tokens": inp, "completion_tokens": out,
                       "total_tokens": inp + out},
                      separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# the answer

class Answer:
    """What the emulator would send: status, headers [(name, value)], and
    either body (bytes) or events (a list of SSE events, each with its
    blank-line terminator).  eol is the stream's line ending."""

    def __init__(self, status, headers, body=None, events=None, eol=b"\n"):
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.events = events
        self.eol = eol

    @property
    def stream(self):
        return self.events is not None


def _split_event(ev):
    """(prefix, json, suffix) of an event "data: {...}<eol><eol>", or None."""
    if not ev.startswith(b"data: {"):
        return None
    end = value_end(ev, 6)
    return ev[:6], ev[6:end], ev[end:]


def _json_events(a):
    """Indexes of the events whose data is a JSON object."""
    return [i for i, ev in enumerate(a.events) if _split_event(ev)]


def _usage_events(a):
    out = []
    for i in _json_events(a):
        if usage_objects(_split_event(a.events[i])[1]):
            out.append(i)
    return out


def _done_index(a):
    for i, ev in enumerate(a.events):
        if ev.startswith(b"data: [DONE]"):
            return i
    return len(a.events)


def _pick(seq, frac):
    return seq[min(len(seq) - 1, int(frac * len(seq)))] if seq else None


def _on_json(a, index, fn):
    """Apply fn to the JSON of event index (or to the body when index is
    None); fn gets and returns bytes."""
    if index is None:
        a.body = fn(a.body)
        return
    pre, js, suf = _split_event(a.events[index])
    a.events[index] = pre + fn(js) + suf


def _target(a, want_usage, frac):
    """The event to mutate (None: the body): the last usage event when
    want_usage and there is one, else the event at frac of the JSON ones."""
    if not a.stream:
        return None
    if want_usage:
        us = _usage_events(a)
        if us:
            return us[-1]
    return _pick(_json_events(a), frac)


# --------------------------------------------------------------------------
# payload mutations

def _byte_flip(a, p, rng):
    for ev_frac, at, mask in p["flips"]:
        def flip(b, at=at, mask=mask, lo=0, hi=None):
            hi = len(b) if hi is None else hi
            if hi <= lo:
                return b
            i = lo + min(hi - lo - 1, int(at * (hi - lo)))
            return b[:i] + bytes([b[i] ^ mask]) + b[i + 1:]
        if a.stream:
            idx = _target(a, p["target"] == "usage", ev_frac)
            if idx is None:
                idx = _pick(list(range(len(a.events))), ev_frac)
            if idx is not None:
                a.events[idx] = flip(a.events[idx])
        else:
            us = usage_objects(a.body) if p["target"] == "usage" else []
            a.body = (flip(a.body, lo=us[-1].vstart, hi=us[-1].vend) if us
                      else flip(a.body))


def _truncate(a, p, rng):
    if not a.stream:
        a.body = a.body[:int(p["at"] * len(a.body))]
        return
    cut = int(p["at"] * sum(len(e) for e in a.events))
    out, used = [], 0
    for ev in a.events:
        if used + len(ev) <= cut:
            out.append(ev)
            used += len(ev)
            continue
        if cut > used:
            out.append(ev[:cut - used])
        break
    a.events = out


def _garbage(a, p, rng):
    junk = bytes(rng.randrange(256) for _ in range(p["length"]))

    def put(b):
        i = min(len(b), int(p["at"] * (len(b) + 1)))
        if p["mode"] == "insert":
            return b[:i] + junk + b[i:]
        return b[:i] + junk + b[i + len(junk):]
    if a.stream:
        idx = _target(a, p["target"] == "usage", p["event"])
        if idx is None:
            idx = _pick(list(range(len(a.events))), p["event"])
        if idx is not None:
            a.events[idx] = put(a.events[idx])
    else:
        a.body = put(a.body)


def _crlf(a, p, rng):
    if a.stream:
        prev = [b""]

        def eol():
            if p["eol"] == "crlf":
                return b"\r\n"
            if p["eol"] == "cr":
                return b"\r"
            choices = [b"\n", b"\r\n", b"\r"]
            if prev[0] == b"\r":
                choices = [b"\r\n", b"\r"]   # a lone \n would merge with it
            e = rng.choice(choices)
            prev[0] = e
            return e
        out = []
        for ev in a.events:
            lines = ev.split(a.eol)
            # "data: x", "", "" for a complete event; the last piece is
            # what follows the final line ending
            out.append(b"".join(line + eol() for line in lines[:-1]) + lines[-1])
        a.events = out
        return
    # a body: white space between tokens, outside strings
    b, out, i = a.body, [], 0
    while i < len(b):
        c = b[i]
        if c == 0x22:
            j = _string_end(b, i)
            out.append(b[i:j])
            i = j
            continue
        if c in b"{}[],:" and rng.random() < p["density"]:
            ws = bytes(rng.choice(b" \t\r\n") for _ in range(rng.randint(1, 3)))
            out.append(ws + bytes([c]) if rng.random() < 0.5 else bytes([c]) + ws)
        else:
            out.append(bytes([c]))
        i += 1
    a.body = b"".join(out)
    if rng.random() < 0.5:
        a.body = b"\r\n\t " + a.body + b" \n"


def _count(a, p, new):
    """Replace (or with new None, remove) the count p["field"] of the
    billed usage; the other count when that one is missing."""
    idx = _target(a, True, 0.0)
    fields = [p["field"]] + [f for f in COUNT_FIELDS if f != p["field"]]

    def change(b):
        for f in fields:
            ms = count_members(b, f)
            if ms:
                m = ms[-1]
                if new is None:
                    return remove_member(b, m)
                return replace_span(b, m.vstart, m.vend, new.encode())
        return b
    _on_json(a, idx, change)


def _huge_count(a, p, rng):
    _count(a, p, p["value"])


def _wrong_type_count(a, p, rng):
    _count(a, p, None if p["value"] == "remove" else p["value"])


def _string_members(b, text_only):
    ms = [m for m in members(b) if m.vstart < len(b) and b[m.vstart] == 0x22]
    if text_only:
        ms = [m for m in ms if m.key in ("response", "content")] or ms
    return ms


def _insert_in_string(a, p, raw):
    text_only = p["target"] == "text"
    if a.stream:
        cands = []
        for i in _json_events(a):
            js = _split_event(a.events[i])[1]
            ms = _string_members(js, text_only)
            if text_only:
                ms = [m for m in ms if m.vend - m.vstart > 2] or ms
            cands += [(i, k) for k in range(len(ms))]
        if not cands:
            return
        idx, k = _pick(cands, p["pick"])
    else:
        idx, k = None, None

    def put(b):
        ms = _string_members(b, text_only)
        if not ms:
            return b
        m = ms[k] if k is not None else _pick(ms, p["pick"])
        at = m.vstart + 1 if p["where"] == "start" else m.vend - 1
        return b[:at] + raw + b[at:]
    _on_json(a, idx, put)


def _invalid_utf8(a, p, rng):
    _insert_in_string(a, p, bytes.fromhex(p["bytes"]))


def _lone_surrogate(a, p, rng):
    _insert_in_string(a, p, p["escape"].encode())


def _deep_nesting(a, p, rng):
    n = p["depth"]
    member = b'"deep":' + b"[" * n + b"]" * n
    idx = _target(a, p["target"] == "usage", p["event"])

    def put(b):
        us = usage_objects(b) if p["target"] == "usage" else []
        at = (us[-1].vstart if us else b.find(b"{")) + 1
        if at <= 0:
            return b
        sep = b"" if b[_skip_ws(b, at):].startswith(b"}") else b","
        return b[:at] + member + sep + b[at:]
    _on_json(a, idx, put)


def _dup_key(a, p, rng):
    key = p["key"]

    def dup(b):
        ms = members(b)
        if key == "usage":
            cand = [m for m in ms if m.key == "usage"
                    and m.vstart < len(b) and b[m.vstart] == 0x7B]
            fake = b'"usage":' + usage_json(p["in"], p["out"])
        else:
            cand = [m for m in ms if m.key == "response"] or \
                   [m for m in ms if m.key == "content"]
            name = cand[-1].key.encode() if cand else b"response"
            fake = b'"' + name + b'":"duplicated ' + name + b'"'
        if not cand:
            return b
        m = cand[-1]
        if p["where"] == "adjacent":
            return b[:m.vend] + b"," + fake + b[m.vend:]
        if p["where"] == "end":
            close = m.oend - 1
            return b[:close] + b"," + fake + b[close:]
        return b[:m.ostart + 1] + fake + b"," + b[m.ostart + 1:]
    idx = _target(a, True, 0.0) if key == "usage" else None
    if a.stream and key != "usage":
        cands = [i for i in _json_events(a)
                 if any(m.key in ("response", "content")
                        for m in members(_split_event(a.events[i])[1]))]
        idx = _pick(cands, p["in"] / 5001)
        if idx is None:
            return
    _on_json(a, idx, dup)


def _with_counts(ev, inp, out):
    """A copy of the usage event ev with other prompt/completion counts."""
    pre, js, suf = _split_event(ev)
    for field, value in (("total_tokens", inp + out),
                         ("completion_tokens", out), ("prompt_tokens", inp)):
        ms = count_members(js, field)
        if ms:
            js = replace_span(js, ms[-1].vstart, ms[-1].vend, str(value).encode())
    return pre + js + suf


def _extra_usage_events(a, p, rng):
    if not a.stream:
        return
    eol = a.eol
    us = _usage_events(a)
    if us:
        u = us[-1]
        real = a.events[u]
    else:
        u = max(0, _done_index(a))
        real = (b'data: {"response":"","usage":' + usage_json(1, 1) + b"}"
                + eol + eol)
        a.events.insert(u, real)
    fake = _with_counts(real, p["in"], p["out"])
    v = p["variant"]
    if v == "after":
        a.events.insert(u + 1, fake)
    elif v == "before":
        a.events.insert(u, fake)
    elif v == "repeat":
        a.events[u:u + 1] = [real] * p["times"]
    elif v == "first":
        a.events.insert(0, fake)
    elif v in ("unreadable", "unreadable_only"):
        broken = (b'data: {"response":"","usage":{"prompt_tokens":'
                  + str(p["in"]).encode() + b',"completion_' + eol + eol)
        if v == "unreadable":
            a.events.insert(u + 1, broken)
        else:
            a.events[u] = broken
    elif v == "last_no_blank":
        del a.events[u]
        a.events = [e for e in a.events if not e.startswith(b"data: [DONE]")]
        a.events.append(real[:len(real) - len(eol)])


def _no_usage(a, p, rng):
    def strip(b):
        while True:
            ms = [m for m in members(b) if m.key == "usage"]
            if not ms:
                return b
            b = remove_member(b, ms[-1])
    if not a.stream:
        a.body = strip(a.body)
        return
    out = []
    for ev in a.events:
        parts = _split_event(ev)
        if parts is None:
            out.append(ev)
            continue
        pre, js, suf = parts
        had = any(m.key == "usage" for m in members(js))
        js2 = strip(js)
        if had and (js2 in (b'{"response":""}', b"{}")
                    or b'"choices":[]' in js2):
            continue            # a usage-only event: dropped
        out.append(pre + js2 + suf)
    a.events = out


def _done_mid(a, p, rng):
    if not a.stream:
        return
    us = _usage_events(a)
    last = us[-1] if us else _done_index(a)
    k = 1 + int(p["at"] * max(1, last))         # 1 .. last
    k = max(1, min(k, last))
    a.events.insert(k, b"data: [DONE]" + a.eol + a.eol)


def _no_final_blank(a, p, rng):
    if not a.stream or not a.events:
        return
    ev = a.events[-1]
    cut = len(a.eol) if p["variant"] == "lf" else 2 * len(a.eol)
    if ev.endswith(a.eol * 2):
        a.events[-1] = ev[:len(ev) - cut]


PAYLOAD = {
    "byte_flip": _byte_flip, "truncate": _truncate, "garbage": _garbage,
    "crlf": _crlf, "huge_count": _huge_count,
    "wrong_type_count": _wrong_type_count, "invalid_utf8": _invalid_utf8,
    "lone_surrogate": _lone_surrogate, "deep_nesting": _deep_nesting,
    "dup_key": _dup_key, "usage_events": _extra_usage_events,
    "no_usage": _no_usage, "done_mid": _done_mid,
    "no_final_blank": _no_final_blank,
}


def apply(pl, answer):
    """Mutate the answer's payload in place (and its status, for
    random_status); returns it."""
    rng = random.Random(pl["apply_seed"])
    for kind in pl["kinds"]:
        if kind in PAYLOAD:
            PAYLOAD[kind](answer, pl["params"][kind], rng)
        elif kind == "random_status":
            answer.status = pl["params"][kind]["status"]
    return answer


# --------------------------------------------------------------------------
# the wire

class Wire:
    """The raw answer: pieces of bytes, each after a pause (seconds), then
    the ending: 'close' or 'reset'."""

    def __init__(self):
        self.pieces = []
        self.ending = "close"


def _chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def render(pl, answer, extra_headers=()):
    """The Wire of a mutated answer (apply() it first)."""
    rng = random.Random(pl["apply_seed"] ^ 0x5A5A5A5A)
    kinds, params = pl["kinds"], pl["params"]

    if answer.stream:
        parts = [e for e in answer.events if e]
        chunked = True
    else:
        body = answer.body
        parts, i = [], 0
        while i < len(body):
            n = rng.randint(8, 128)
            parts.append(body[i:i + n])
            i += n
        chunked = "bad_chunk" in kinds

    if chunked:
        framed = [_chunk(x) for x in parts]
        if "bad_chunk" in kinds:
            bp = params["bad_chunk"]
            at = 0 if bp["where"] == "first" or len(framed) < 2 else \
                1 + min(len(framed) - 2, int(bp["at"] * (len(framed) - 1)))
            framed.insert(at, bp["size"].encode() + b"\r\n" + b"oops\r\n")
        payload = b"".join(framed) + b"0\r\n\r\n"
        framing = [("Transfer-Encoding", "chunked")]
    else:
        payload = b"".join(parts)
        framing = [("Content-Length", str(len(payload)))]

    status = answer.status
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    head += [f"{n}: {v}" for n, v in extra_headers]
    head += [f"{n}: {v}" for n, v in answer.headers]
    head += [f"X-Emu-Mutation: {pl['kind']}"]
    head += [f"{n}: {v}" for n, v in framing]
    head += ["Connection: close"]
    head = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    raw = head + payload

    wire = Wire()
    end = len(raw)
    if "reset" in kinds:
        rp = params["reset"]
        if rp["where"] == "before_status":
            end = 0
        elif rp["where"] == "headers":
            end = 1 + int(rp["at"] * (len(head) - 2))
        else:
            end = len(head) + int(rp["at"] * max(1, len(payload)))
            end = min(end, len(raw) - 1)
        wire.ending = "reset"
    raw = raw[:end]

    if "slow" in kinds and raw:
        sp = params["slow"]
        n = min(sp["pieces"], len(raw))
        cuts = sorted(rng.sample(range(1, len(raw)), n - 1)) if n > 1 else []
        pause = sp["total_ms"] / 1000 / max(1, n)
        prev = 0
        for c in cuts + [len(raw)]:
            wire.pieces.append((pause, raw[prev:c]))
            prev = c
    elif raw:
        wire.pieces.append((0, raw))
    return wire


def main(argv):
    """python3 mutate.py FIRST [LAST]: the plans, one JSON line each."""
    first = int(argv[1]) if len(argv) > 1 else 0
    last = int(argv[2]) if len(argv) > 2 else first
    for seed in range(first, last + 1):
        print(json.dumps(plan(seed), sort_keys=True, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
