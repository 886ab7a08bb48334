#!/usr/bin/env python3
"""cf-emulator: a stand-in for Cloudflare Workers AI, for testing cfcost.

It speaks the Workers AI wire formats (see shared/reference/workers-ai.md)
with deterministic content, so tests can check exactly what the gateway
forwards, parses and records.  Python 3 standard library only.

    python3 emulator/cf_emulator.py --listen 127.0.0.1:PORT \
        [--token TOKEN] [--account ACCOUNT] [--verbose]

Once the socket listens it prints exactly one line,
``cf-emulator listening on HOST:PORT``; it exits cleanly on SIGTERM/SIGINT.

Routes
------
POST /client/v4/accounts/{account}/ai/run/{model}
    Native route.  ``model`` is the rest of the path (it may contain ``/``
    and may be percent-encoded).  Body: ``{"messages": [...]}`` or
    ``{"prompt": "..."}``; ``"stream": true`` answers with SSE.
POST /client/v4/accounts/{account}/ai/v1/chat/completions
    OpenAI-compatible route: model in the body, plain OpenAI objects (no
    envelope).  ``"stream": true`` answers with ``chat.completion.chunk``
    events; ``stream_options.include_usage`` adds the final usage chunk.
GET /_emu/requests, DELETE /_emu/requests, GET /_emu/health
    Test hooks: the requests received (every request outside ``/_emu/``,
    oldest first), clearing that log, and a liveness probe.

Checks, in order: bearer token (401, code 10000), account (400, code 7003),
body (400, code 5006), model prefix ``@cf/`` or ``@hf/`` (400, code 5007).

Deterministic content
---------------------
The *request text* is the string ``content`` of every message joined by
"\\n" (non-string contents are ignored), or the ``prompt``.  Directives are
tokens ``[emu:NAME]`` or ``[emu:NAME ARG ...]`` anywhere in it; they are
stripped before anything is counted or echoed.  An unknown directive or a bad
argument is answered with HTTP 400, code 5004, naming the directive.

* prompt_tokens = words in the stripped request text (at least 1).
* TEXT = "Hello from the cfcost emulator. You said: " + the first 12 words of
  the stripped last message (or prompt).
* completion_tokens = words in TEXT.

Directives
----------
Content and usage:
  [emu:usage IN OUT]     report exactly IN prompt / OUT completion tokens
  [emu:cached N]         usage.prompt_tokens_details.cached_tokens = N
  [emu:reasoning N]      usage.completion_tokens_details.reasoning_tokens = N
  [emu:neurons X]        usage.neurons = X (a float)
  [emu:no-usage]         no usage anywhere (nor usage events in streams)
  [emu:chat-completion]  native route: result is a chat.completion object
                         (cached_tokens 0 and neurons 1.7727272510528564
                         unless [emu:cached] / [emu:neurons])
  [emu:big N]            TEXT is N "x" bytes; completion_tokens = ceil(N/4)
  [emu:words N]          TEXT is N words "lorem" (a long stream of small
                         events, generated as it is sent); completion_tokens
                         = N
  [emu:utf8]             append the multi-byte words "café ✓ 日本語 🚀" to TEXT
  [emu:native-usage]     OpenAI route streams: also send the native
                         {"response":"","usage":...} event before [DONE]
  [emu:count FIELD V]    usage.FIELD = V, a JSON value (null, -5, 3.5,
                         "12", 999999999999999...), or the member removed
                         when V is "missing" (every usage object, streams
                         included; not the per-chunk increments)
  [emu:usage-twice IN OUT]  the usage given a second time, after the real
                         one, with prompt/completion/total IN, OUT, IN+OUT:
                         bodies: a second "usage" member right after the
                         real one; streams: a copy of the last usage-only
                         event (usage chunk, native usage event) right
                         after it (none when the stream has none)
Hostile bodies (non-stream 200 answers; streams unchanged):
  [emu:lone-surrogate]   the escape \\ud800 put at the start of the reply
                         text's JSON string
  [emu:bad-utf8]         the byte 0xff put there likewise
Outcome:
  [emu:error CODE [STATUS]]  HTTP STATUS (default: by code) + error envelope
  [emu:fail200]          HTTP 200 with success:false, code 3040
  [emu:status N]         HTTP N, text/plain "upstream says N"
  [emu:html200]          HTTP 200, text/html "<html>oops</html>"
  [emu:close]            read the request, close without any response
Transport (apply to whatever response is sent):
  [emu:delay MS]         sleep MS milliseconds before the response headers
  [emu:chunked]          non-stream body with Transfer-Encoding: chunked,
                         7-byte chunks
  [emu:gzip]             gzip the non-stream body if Accept-Encoding has gzip
  [emu:die-after N]      streams: headers + first N events, then close with
                         no terminating chunk; non-stream: full
                         Content-Length but only half the body, then close
Streams:
  [emu:split N]          write the whole SSE byte string as N-byte chunks
                         (default: one HTTP chunk per event)
  [emu:trickle MS]       sleep MS between chunks
  [emu:crlf]             "\\r\\n" line endings instead of "\\n"
  [emu:comments N]       the first event begins with N bytes (rounded up
                         to whole 80-byte lines) of comment lines ": ccc..."
  [emu:done-mid [N]]     a "data: [DONE]" event after the first N events
                         (default: just before the first usage-only event,
                         else before the final [DONE]); the rest of the
                         stream (usage, final [DONE]) follows it
Broken framing:
  [emu:bad-chunk SIZE [N]]  Transfer-Encoding: chunked (non-stream bodies
                         too, in 7-byte chunks) with the invalid chunk-size
                         line SIZE ("zz", or "huge": 100000000000000000)
                         and "oops" after the first N chunks (default 1; 0:
                         before any), the rest of the chunks after it, then
                         the close.  With [emu:trickle MS] the bad line
                         waits MS too.  Not for HTTP/1.0 clients (no
                         chunked framing): ignored there
JSON spelling (bodies and stream events):
  [emu:headers]          also send canary response headers (Authorization,
                         Set-Cookie, X-Canary, Access-Control-Allow-Origin,
                         Location, and the allowed cf-ray, Retry-After,
                         X-RateLimit-Remaining, RateLimit-Policy)
  [emu:spaced]           a space after every ":" and ",", and ASCII only:
                         non-ASCII characters as \\uXXXX escapes (surrogate
                         pairs beyond U+FFFF), as json.dumps() writes by
                         default; still valid JSON, still the same values
Hostile answers (see emulator/mutate.py for every kind and parameter):
  [emu:mutate SEED]      build the answer as usual (any route, stream or
                         not, any other directive), then break it the way
                         mutate.plan(SEED) says, deterministically: one
                         primary kind per seed (~5% "none"), sometimes plus
                         a transport kind.  Payload kinds: byte_flip,
                         truncate, garbage, crlf, huge_count,
                         wrong_type_count, invalid_utf8, lone_surrogate,
                         deep_nesting, dup_key, usage_events, no_usage,
                         done_mid, no_final_blank.  Transport kinds:
                         bad_chunk, reset, random_status, slow (<= 200 ms).
                         The raw bytes are written here, with
                         "Connection: close" and "X-Emu-Mutation: KIND"
                         (KIND = the kinds joined by "+") whenever headers
                         go out at all; the connection is then closed, or
                         reset (SO_LINGER {1,0}) for "reset".

Native stream events: one ``{"response":WORD,"p":PAD}`` per word of TEXT
(words after the first carry a leading space; PAD is random a-z of length
0..30 from an RNG seeded with the request text), then ``{"response":""}``,
then ``{"response":"","usage":{...}}``, then ``[DONE]``.
"""

import argparse
import gzip
import hashlib
import http.server
import itertools
import json
import math
import os
import random
import re
import signal
import socket
import string
import struct
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mutate  # noqa: E402  (emulator/mutate.py, next to this file)

GREETING = "Hello from the cfcost emulator. You said:"
ECHO_WORDS = 12
UTF8_WORDS = "café ✓ 日本語 🚀"
DEFAULT_NEURONS = 1.7727272510528564
NON_STREAM_CHUNK_SIZE = 7
MAX_PADDING = 30

NATIVE_ROUTE = re.compile(r"^/client/v4/accounts/([^/]+)/ai/run/(.+)$")
OPENAI_ROUTE = re.compile(r"^/client/v4/accounts/([^/]+)/ai/v1/chat/completions/?$")
DIRECTIVE = re.compile(r"\[emu:([A-Za-z0-9_-]+)((?:[ \t]+[^\s\]]+)*)[ \t]*\]")

# Directive name -> argument types; arguments after a None are optional.
DIRECTIVE_ARGS = {
    "usage": (int, int),
    "cached": (int,),
    "reasoning": (int,),
    "neurons": (float,),
    "no-usage": (),
    "chat-completion": (),
    "big": (int,),
    "words": (int,),
    "utf8": (),
    "native-usage": (),
    "error": (int, None, int),
    "fail200": (),
    "status": (int,),
    "html200": (),
    "close": (),
    "delay": (int,),
    "chunked": (),
    "gzip": (),
    "die-after": (int,),
    "split": (int,),
    "trickle": (int,),
    "crlf": (),
    "spaced": (),
    "comments": (int,),
    "mutate": (int,),
    "count": (str, str),
    "usage-twice": (int, int),
    "lone-surrogate": (),
    "bad-utf8": (),
    "done-mid": (None, int),
    "bad-chunk": (str, None, int),
    "headers": (),
}

# [emu:headers]: what an upstream may echo or add; only CANARY_ALLOWED may
# reach the gateway's clients
CANARY_HEADERS = [
    ("Authorization", "Bearer upstream-echoed-secret"),
    ("Set-Cookie", "session=upstream"),
    ("X-Canary", "leaked"),
    ("Access-Control-Allow-Origin", "*"),
    ("Location", "http://169.254.169.254/"),
    ("cf-ray", "8f0c2a1b3c4d5e6f-EMU"),
    ("Retry-After", "7"),
    ("X-RateLimit-Remaining", "41"),
    ("X-RateLimit-Limit-Requests", "1000"),
    ("RateLimit-Policy", "100;w=60"),
]
CANARY_ALLOWED = ("cf-ray", "Retry-After", "X-RateLimit-Remaining",
                  "X-RateLimit-Limit-Requests", "RateLimit-Policy")

BAD_CHUNK_SIZES = {"zz": b"zz", "huge": b"100000000000000000"}
COUNT_FIELD = re.compile(r"^[A-Za-z_]+$")

ERROR_MESSAGES = {
    3003: "Incomplete request",
    3006: "Request is too large",
    3007: "Request timeout",
    3008: "Request aborted",
    3023: "Account blocked",
    3036: "You have used up your daily free allocation of 10,000 neurons",
    3040: "Capacity temporarily exceeded, please try again.",
    3041: "Account blocked",
    3042: "Invalid model ID",
    4006: "You have used up your daily free allocation of 10,000 neurons, "
          "please upgrade to Cloudflare's Workers Paid plan if you would "
          "like to continue usage.",
    5004: "Invalid data",
    5006: "Error: required properties at '/' are 'prompt' or 'messages'",
    5007: "No such model {model} or task",
    5016: "You have not agreed to the terms of use of model {model}",
    5018: "Model {model} is private",
    5035: "This model requires a Workers Paid plan",
    7000: "No route for that URI",
    7001: "Method not allowed",
    7003: "Could not route to {path}, perhaps your object identifier is invalid?",
    10000: "Authentication error",
}

ERROR_STATUS = {
    3003: 400, 5004: 400, 5006: 400, 5007: 400, 7003: 400,
    10000: 401,
    3023: 403, 3041: 403, 5016: 403, 5018: 403, 5035: 403,
    3042: 404, 7000: 404, 7001: 405,
    3007: 408, 3008: 408,
    3006: 413,
    3036: 429, 3040: 429, 4006: 429,
}


# --------------------------------------------------------------------------
# Directives and deterministic content
# --------------------------------------------------------------------------

class BadDirective(Exception):
    """A directive the emulator does not know, or with bad arguments."""


class Directives:
    """The ``[emu:...]`` directives of one request (the last of a name wins)."""

    def __init__(self, found=None):
        self._args = dict(found or {})

    def __contains__(self, name):
        return name in self._args

    def arg(self, name, index=0, default=None):
        args = self._args.get(name)
        if args is None or index >= len(args):
            return default
        return args[index]


def _convert_args(name, raw_args):
    if name not in DIRECTIVE_ARGS:
        raise BadDirective(f"unknown directive [emu:{name}]")
    types = DIRECTIVE_ARGS[name]
    required = types.index(None) if None in types else len(types)
    types = [t for t in types if t is not None]
    if not required <= len(raw_args) <= len(types):
        raise BadDirective(f"wrong number of arguments in [emu:{name}]")
    try:
        args = [t(a) for t, a in zip(types, raw_args)]
    except ValueError:
        raise BadDirective(f"bad argument in [emu:{name} {' '.join(raw_args)}]")
    if any(isinstance(a, int) and a < 0 for a in args):
        raise BadDirective(f"negative argument in [emu:{name}]")
    if name == "bad-chunk" and args[0] not in BAD_CHUNK_SIZES:
        raise BadDirective(f"bad argument in [emu:{name} {' '.join(raw_args)}]")
    if name == "count":
        if not COUNT_FIELD.match(args[0]):
            raise BadDirective(f"bad argument in [emu:{name} {' '.join(raw_args)}]")
        if args[1] != "missing":
            try:
                json.loads(args[1])
            except ValueError:
                raise BadDirective(f"bad argument in [emu:{name} {' '.join(raw_args)}]")
    return args


def parse_directives(text):
    """Return the Directives found in a request text."""
    found = {}
    for match in DIRECTIVE.finditer(text):
        name = match.group(1).lower()
        found[name] = _convert_args(name, match.group(2).split())
    return Directives(found)


def strip_directives(text):
    return DIRECTIVE.sub(" ", text)


def request_texts(body):
    """Return (text of the whole request, text of the last message/prompt)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        contents = [m.get("content") if isinstance(m, dict) else None
                    for m in messages]
        strings = [c for c in contents if isinstance(c, str)]
        last = contents[-1] if contents and isinstance(contents[-1], str) else ""
        return "\n".join(strings), last
    prompt = body.get("prompt")
    prompt = prompt if isinstance(prompt, str) else ""
    return prompt, prompt


def count_words(text):
    return len(text.split())


@dataclass
class Reply:
    """What the emulated model answers to one request."""

    model: str
    text: str
    prompt_tokens: int
    usage: "dict | None"  # cumulative; None under [emu:no-usage]
    id: str
    created: int
    seed: str    # a hash of the request text: seeds the SSE padding


def build_usage(prompt_tokens, completion_tokens, d, chat_shape):
    if "no-usage" in d:
        return None
    usage = {"prompt_tokens": prompt_tokens,
             "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if "cached" in d or chat_shape:
        usage["prompt_tokens_details"] = {"cached_tokens": d.arg("cached", default=0)}
    if "reasoning" in d:
        usage["completion_tokens_details"] = {"reasoning_tokens": d.arg("reasoning")}
    if "neurons" in d:
        usage["neurons"] = d.arg("neurons")
    elif chat_shape:
        usage["neurons"] = DEFAULT_NEURONS
    if "count" in d:
        field, value = d.arg("count", 0), d.arg("count", 1)
        if value == "missing":
            usage.pop(field, None)
        else:
            usage[field] = json.loads(value)
    return usage


def build_reply(body, model, d, chat_shape):
    raw_text, raw_last = request_texts(body)
    digest = hashlib.sha256(raw_text.encode("utf-8", "replace")).hexdigest()
    stripped = strip_directives(raw_text)
    last = strip_directives(raw_last)

    if "big" in d:
        text = "x" * d.arg("big")
        completion_tokens = math.ceil(d.arg("big") / 4)
    elif "words" in d:
        text = " ".join(["lorem"] * d.arg("words"))
        completion_tokens = d.arg("words")
    else:
        text = " ".join([GREETING] + last.split()[:ECHO_WORDS])
        if "utf8" in d:
            text += " " + UTF8_WORDS
        completion_tokens = count_words(text)
    prompt_tokens = max(1, count_words(stripped))
    if "usage" in d:
        prompt_tokens, completion_tokens = d.arg("usage", 0), d.arg("usage", 1)

    return Reply(
        model=model,
        text=text,
        prompt_tokens=prompt_tokens,
        usage=build_usage(prompt_tokens, completion_tokens, d, chat_shape),
        id="chatcmpl-" + digest[:24],
        created=int(time.time()),
        seed=digest,
    )


# --------------------------------------------------------------------------
# Response bodies
# --------------------------------------------------------------------------

def to_json(obj, spaced=False):
    if spaced:
        return json.dumps(obj).encode()
    # "replace" keeps a lone surrogate (legal in JSON input) from crashing.
    return json.dumps(obj, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8", "replace")


def error_envelope(code, message):
    return {"result": None, "success": False,
            "errors": [{"code": code, "message": message}], "messages": []}


def error_message(code, model="", path=""):
    template = ERROR_MESSAGES.get(code, f"Emulated error {code}")
    return template.format(model=model, path=path)


def native_result(reply):
    result = {"response": reply.text, "tool_calls": []}
    if reply.usage is not None:
        result["usage"] = reply.usage
    return result


def chat_completion(reply):
    obj = {"id": reply.id, "object": "chat.completion", "created": reply.created,
           "model": reply.model,
           "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": reply.text}}]}
    if reply.usage is not None:
        obj["usage"] = reply.usage
    return obj


def envelope(result):
    return {"result": result, "success": True, "errors": [], "messages": []}


def _padding(rng):
    return "".join(rng.choice(string.ascii_lowercase)
                   for _ in range(rng.randint(0, MAX_PADDING)))


def _pieces(text):
    """The words of text as stream pieces, each after the first with its
    space; one at a time, so that a long text is never copied whole."""
    for i, m in enumerate(re.finditer(r"\S+", text)):
        yield m.group() if i == 0 else " " + m.group()


def _chunk(reply, delta, finish_reason=None):
    return {"id": reply.id, "object": "chat.completion.chunk",
            "created": reply.created, "model": reply.model,
            "choices": [{"index": 0, "delta": delta,
                         "finish_reason": finish_reason}]}


# The event builders below yield their payloads one at a time: a long
# stream ([emu:words]) is generated as it is sent, never held whole.

def native_stream_events(reply):
    """Event payloads of a native stream (legacy ``response`` shape)."""
    rng = random.Random(reply.seed)
    for piece in _pieces(reply.text):
        yield {"response": piece, "p": _padding(rng)}
    yield {"response": ""}
    if reply.usage is not None:
        yield {"response": "", "usage": reply.usage}
    yield "[DONE]"


def native_chunk_stream_events(reply):
    """Event payloads of a native stream from a chat-completions model."""
    rng = random.Random(reply.seed)
    for i, piece in enumerate(_pieces(reply.text)):
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        event = _chunk(reply, delta)
        if reply.usage is not None:
            event["usage"] = {"prompt_tokens": reply.prompt_tokens,
                              "completion_tokens": 1,
                              "total_tokens": reply.prompt_tokens + 1}
        event["p"] = _padding(rng)
        yield event
    yield _chunk(reply, {}, "stop")
    if reply.usage is not None:
        yield {"response": "", "usage": reply.usage}
    yield "[DONE]"


def openai_stream_events(reply, include_usage, native_usage):
    """Event payloads of an OpenAI-compatible ``chat.completion.chunk`` stream."""
    def chunk(delta, finish_reason=None):
        event = _chunk(reply, delta, finish_reason)
        if include_usage:
            event["usage"] = None
        return event

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(reply.text):
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    if include_usage and reply.usage is not None:
        final = _chunk(reply, {})
        final["choices"] = []
        final["usage"] = reply.usage
        yield final
    if native_usage and reply.usage is not None:
        yield {"response": "", "usage": reply.usage}
    yield "[DONE]"


def sse_bytes(payload, crlf, spaced=False):
    eol = b"\r\n" if crlf else b"\n"
    data = payload.encode() if isinstance(payload, str) else to_json(payload, spaced)
    return b"data: " + data + eol + eol


def _with_comments(events, size, crlf):
    """[emu:comments N]: the first event of events begins with comment
    lines of 80 bytes (": ccc..."), N bytes of them rounded up."""
    eol = b"\r\n" if crlf else b"\n"
    line = b": " + b"c" * (80 - 2 - len(eol)) + eol
    first = True
    for event in events:
        if first:
            first = False
            event = line * -(-size // len(line)) + event
        yield event


def _resplit(pieces, size):
    """The bytes of pieces (an iterable of bytes) again, in chunks of
    exactly size bytes (the last may be shorter)."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        if len(buf) >= size:
            whole = len(buf) - len(buf) % size
            for i in range(0, whole, size):
                yield bytes(buf[i:i + size])
            del buf[:whole]
    if buf:
        yield bytes(buf)


def _usage_only(payload):
    """True for an event that carries usage and nothing else: an OpenAI
    usage chunk ("choices":[]) or a native {"response":"","usage":...}."""
    return (isinstance(payload, dict) and isinstance(payload.get("usage"), dict)
            and (payload.get("choices") == []
                 or ("choices" not in payload and payload.get("response") == "")))


def stream_directives(events, d):
    """[emu:usage-twice] and [emu:done-mid] on the event payloads (left
    a generator when neither applies)."""
    if "usage-twice" not in d and "done-mid" not in d:
        return events
    events = list(events)
    if "usage-twice" in d:
        last = max((i for i, e in enumerate(events) if _usage_only(e)),
                   default=None)
        if last is not None:
            inp, out = d.arg("usage-twice", 0), d.arg("usage-twice", 1)
            twice = dict(events[last])
            twice["usage"] = {"prompt_tokens": inp, "completion_tokens": out,
                              "total_tokens": inp + out}
            events.insert(last + 1, twice)
    if "done-mid" in d:
        at = d.arg("done-mid")
        if at is None:
            at = next((i for i, e in enumerate(events) if _usage_only(e)),
                      None)
        if at is None:
            at = max((i for i, e in enumerate(events) if e == "[DONE]"),
                     default=len(events))
        events.insert(min(at, len(events)), "[DONE]")
    return events


def reply_body(obj, reply, d):
    """The JSON bytes of a 200 answer, with the body directives applied."""
    spaced = "spaced" in d
    body = to_json(obj, spaced)
    if "usage-twice" in d and reply.usage is not None:
        inp, out = d.arg("usage-twice", 0), d.arg("usage-twice", 1)
        key = b'"usage": ' if spaced else b'"usage":'
        real = key + to_json(reply.usage, spaced)
        fake = key + to_json({"prompt_tokens": inp, "completion_tokens": out,
                              "total_tokens": inp + out}, spaced)
        body = body.replace(real, real + (b", " if spaced else b",") + fake, 1)
    for name, raw in (("lone-surrogate", b"\\ud800"), ("bad-utf8", b"\xff")):
        if name in d:
            text = to_json(reply.text, spaced)
            body = body.replace(text, text[:1] + raw + text[1:], 1)
    return body


def accepts_gzip(header):
    """True if an Accept-Encoding value allows gzip (q=0 refuses it)."""
    allowed = {}
    for item in (header or "").split(","):
        name, *params = [part.strip() for part in item.split(";")]
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        allowed[name.lower()] = q > 0
    return allowed.get("gzip", allowed.get("x-gzip", allowed.get("*", False)))


# --------------------------------------------------------------------------
# HTTP handling
# --------------------------------------------------------------------------

class RequestLog:
    """Thread-safe log of the requests received, oldest first."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = []

    def add(self, entry):
        with self._lock:
            self._entries.append(entry)

    def snapshot(self):
        with self._lock:
            return list(self._entries)

    def clear(self):
        with self._lock:
            self._entries.clear()


class EmulatorServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, token, account, verbose):
        self.token = token
        self.account = account
        self.verbose = verbose
        self.log = RequestLog()
        super().__init__(address, Handler)


class BadRequestBody(Exception):
    """The request body could not be read (bad framing)."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cf-emulator"
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are dropped after this

    # -- plumbing ---------------------------------------------------------

    def log_message(self, format, *args):
        if self.server.verbose:
            host, port = self.client_address[:2]
            sys.stderr.write(f"cf-emulator: {host}:{port} {format % args}\n")

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _handle(self):
        try:
            self._dispatch()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away or stalled

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            length = int(length)
        except ValueError:
            raise BadRequestBody("bad Content-Length")
        if length < 0:
            raise BadRequestBody("bad Content-Length")
        body = self.rfile.read(length)
        if len(body) != length:
            raise BadRequestBody("short body")
        return body

    def _read_chunked_body(self):
        parts = []
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise BadRequestBody("bad chunk size")
            if size == 0:
                break
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadRequestBody("bad chunk")
            parts.append(data)
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    def _http11(self):
        return self.request_version != "HTTP/1.0"

    def _write_head(self, status, headers):
        """Write the status line and headers; add Connection as needed."""
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}", f"Server: {self.server_version}",
                 f"Date: {self.date_time_string()}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        elif not self._http11():
            lines.append("Connection: keep-alive")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.log_request(status)

    def _write_chunk(self, data):
        if data:  # an empty chunk would end the body
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # -- senders ----------------------------------------------------------

    def _delay(self, d):
        if "delay" in d:
            time.sleep(d.arg("delay") / 1000)

    def send_body(self, status, content_type, body, d=Directives()):
        """Send a whole (non-stream) body, honouring transport directives."""
        self._delay(d)
        if "close" in d:
            self.close_connection = True
            return
        if "mutate" in d:
            self._send_mutated(mutate.Answer(
                status, [("Content-Type", content_type)], body=body), d)
            return
        headers = [("Content-Type", content_type)]
        if "headers" in d:
            headers += CANARY_HEADERS
        if "gzip" in d:
            headers.append(("Vary", "Accept-Encoding"))
            if accepts_gzip(self.headers.get("Accept-Encoding")):
                body = gzip.compress(body, mtime=0)
                headers.append(("Content-Encoding", "gzip"))
        no_body = status in (204, 304) or status < 200
        bad_chunk = "bad-chunk" in d and self._http11() and not no_body
        chunked = ("chunked" in d or bad_chunk) and self._http11() and not no_body
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif not no_body:
            headers.append(("Content-Length", str(len(body))))
        if bad_chunk:
            self.close_connection = True

        self._write_head(status, headers)
        if no_body:
            return
        dying = "die-after" in d
        if dying:
            self.close_connection = True
            body = body[:len(body) // 2]
        if not chunked:
            self.wfile.write(body)
            return
        chunks = [body[i:i + NON_STREAM_CHUNK_SIZE]
                  for i in range(0, len(body), NON_STREAM_CHUNK_SIZE)]
        for i, chunk in enumerate(chunks):
            if bad_chunk and i == d.arg("bad-chunk", 1, 1):
                self._write_bad_chunk(d)
            self._write_chunk(chunk)
        if bad_chunk and d.arg("bad-chunk", 1, 1) >= len(chunks):
            self._write_bad_chunk(d)
        if not dying:
            self.wfile.write(b"0\r\n\r\n")

    def _write_bad_chunk(self, d):
        """[emu:bad-chunk SIZE]: an invalid chunk-size line and some data."""
        if "trickle" in d:
            time.sleep(d.arg("trickle") / 1000)
        self.wfile.write(BAD_CHUNK_SIZES[d.arg("bad-chunk")] + b"\r\noops\r\n")

    def send_json(self, status, obj, d=Directives()):
        self.send_body(status, "application/json",
                       to_json(obj, "spaced" in d), d)

    def send_error_envelope(self, code, message, d=Directives(), status=None):
        status = status or ERROR_STATUS.get(code, 400)
        self.send_json(status, error_envelope(code, message), d)

    def send_stream(self, payloads, d):
        """Send SSE events, honouring the stream and transport directives."""
        self._delay(d)
        if "close" in d:
            self.close_connection = True
            return
        events = (sse_bytes(p, "crlf" in d, "spaced" in d) for p in payloads)
        if "comments" in d:
            events = _with_comments(events, d.arg("comments"), "crlf" in d)
        if "mutate" in d:
            self._send_mutated(mutate.Answer(
                200, [("Content-Type", "text/event-stream"),
                      ("Cache-Control", "no-cache")],
                events=list(events), eol=b"\r\n" if "crlf" in d else b"\n"), d)
            return
        dying = "die-after" in d
        if dying:
            events = itertools.islice(events, d.arg("die-after"))
        if "split" in d and d.arg("split") > 0:
            chunks = _resplit(events, d.arg("split"))
        else:
            chunks = events

        chunked = self._http11()
        headers = [("Content-Type", "text/event-stream"),
                   ("Cache-Control", "no-cache")]
        if "headers" in d:
            headers += CANARY_HEADERS
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            self.close_connection = True  # HTTP/1.0: the close ends the body
        bad_chunk = "bad-chunk" in d and chunked
        if bad_chunk:
            self.close_connection = True
        self._write_head(status=200, headers=headers)
        if dying:
            self.close_connection = True

        bad_at = d.arg("bad-chunk", 1, 1)
        sent = 0
        for i, chunk in enumerate(chunks):
            if bad_chunk and i == bad_at:
                self._write_bad_chunk(d)
            if i and "trickle" in d:
                time.sleep(d.arg("trickle") / 1000)
            if chunked:
                self._write_chunk(chunk)
            else:
                self.wfile.write(chunk)
            sent = i + 1
        if bad_chunk and bad_at >= sent:
            self._write_bad_chunk(d)
        if chunked and not dying:
            self.wfile.write(b"0\r\n\r\n")

    def _send_mutated(self, answer, d):
        """[emu:mutate SEED]: break the answer as mutate.plan(SEED) says
        and write its raw bytes; the connection is closed (or reset)."""
        plan = mutate.plan(d.arg("mutate"))
        mutate.apply(plan, answer)
        wire = mutate.render(plan, answer, [
            ("Server", self.server_version), ("Date", self.date_time_string())])
        self.close_connection = True
        self.log_request(answer.status)
        for pause, data in wire.pieces:
            if pause:
                time.sleep(pause)
            self.wfile.write(data)
        if wire.ending == "reset":
            # an abortive close: RST, no FIN.  detach() keeps the socket
            # object (still referenced by rfile/wfile) from closing the fd
            # again later.
            sock = self.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
            os.close(sock.detach())

    def send_text(self, status, text):
        self.send_body(status, "text/plain; charset=utf-8", text.encode())

    # -- routing ----------------------------------------------------------

    def _dispatch(self):
        try:
            body = self._read_body()
        except BadRequestBody as exc:
            self.close_connection = True
            self.send_error_envelope(3003, f"Incomplete request: {exc}")
            return

        path = urlsplit(self.path).path
        if path.startswith("/_emu/"):
            self._test_hook(path)
            return

        self.server.log.add({
            "method": self.command,
            "path": self.path,
            "headers": self._header_dict(),
            "body": body.decode("utf-8", errors="replace"),
        })

        native = NATIVE_ROUTE.match(path)
        openai = OPENAI_ROUTE.match(path)
        if not (native or openai):
            self.send_error_envelope(7000, error_message(7000))
        elif self.command != "POST":
            self.send_error_envelope(7001, error_message(7001))
        elif native:
            self._ai_request(body, unquote(native.group(1)),
                             unquote(native.group(2)), openai_route=False)
        else:
            self._ai_request(body, unquote(openai.group(1)), None, openai_route=True)

    def _header_dict(self):
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    def _test_hook(self, path):
        if path == "/_emu/health" and self.command == "GET":
            self.send_text(200, "ok")
        elif path == "/_emu/requests" and self.command == "GET":
            self.send_json(200, self.server.log.snapshot())
        elif path == "/_emu/requests" and self.command == "DELETE":
            self.server.log.clear()
            self.send_json(200, {"cleared": True})
        elif path in ("/_emu/health", "/_emu/requests"):
            self.send_text(405, "method not allowed")
        else:
            self.send_text(404, "no such test hook")

    def _authorized(self):
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.server.token

    def _ai_request(self, raw_body, account, model, openai_route):
        if not self._authorized():
            self.send_error_envelope(10000, error_message(10000))
            return
        if account != self.server.account:
            route = "v1/chat/completions" if openai_route else f"run/{model}"
            path = f"/client/v4/accounts/{account}/ai/{route}"
            self.send_error_envelope(7003, error_message(7003, path=path))
            return

        try:
            body = json.loads(raw_body)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not (
                isinstance(body.get("messages"), list)
                or (not openai_route and isinstance(body.get("prompt"), str))):
            message = (error_message(5006) if not openai_route else
                       "Error: required properties at '/' are 'messages'")
            self.send_error_envelope(5006, message)
            return
        if openai_route:
            model = body.get("model") if isinstance(body.get("model"), str) else ""
        if not model.startswith(("@cf/", "@hf/")):
            self.send_error_envelope(5007, error_message(5007, model=model))
            return

        try:
            d = parse_directives(request_texts(body)[0])
        except BadDirective as exc:
            self.send_error_envelope(5004, f"emulator: {exc}")
            return
        if self._outcome_directive(d, model):
            return

        stream = body.get("stream") is True
        if openai_route:
            reply = build_reply(body, model, d, chat_shape=False)
            if stream:
                options = body.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                self.send_stream(stream_directives(openai_stream_events(
                    reply, include_usage, "native-usage" in d), d), d)
            else:
                self.send_body(200, "application/json",
                               reply_body(chat_completion(reply), reply, d), d)
            return

        chat_shape = "chat-completion" in d
        reply = build_reply(body, model, d, chat_shape=chat_shape)
        if stream:
            events = (native_chunk_stream_events(reply) if chat_shape
                      else native_stream_events(reply))
            self.send_stream(stream_directives(events, d), d)
        else:
            result = chat_completion(reply) if chat_shape else native_result(reply)
            self.send_body(200, "application/json",
                           reply_body(envelope(result), reply, d), d)

    def _outcome_directive(self, d, model):
        """Answer an error-shaped outcome directive; True if one was sent."""
        if "error" in d:
            code = d.arg("error", 0)
            self.send_error_envelope(code, error_message(code, model=model, path=self.path),
                                     d, status=d.arg("error", 1))
        elif "fail200" in d:
            self.send_json(200, error_envelope(3040, error_message(3040)), d)
        elif "status" in d:
            status = d.arg("status")
            self.send_body(status, "text/plain; charset=utf-8",
                           f"upstream says {status}".encode(), d)
        elif "html200" in d:
            self.send_body(200, "text/html", b"<html>oops</html>", d)
        else:
            return False
        return True


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Cloudflare Workers AI emulator for cfcost tests.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address to listen on (port 0 picks a free one)")
    parser.add_argument("--token", default="emulator-token",
                        help="the accepted bearer token (default: %(default)s)")
    parser.add_argument("--account", default="emulator-account",
                        help="the accepted account id (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="log every request to stderr")
    args = parser.parse_args(argv)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        parser.error("--listen must be HOST:PORT")
    args.host, args.port = host.strip("[]") or "127.0.0.1", int(port)
    return args


def main(argv=None):
    args = parse_args(argv)
    if ":" in args.host:
        EmulatorServer.address_family = socket.AF_INET6
    try:
        server = EmulatorServer((args.host, args.port), args.token,
                                args.account, args.verbose)
    except OSError as exc:
        print(f"cf-emulator: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    serving = threading.Thread(target=server.serve_forever,
                               kwargs={"poll_interval": 0.1}, daemon=True)
    serving.start()
    print(f"cf-emulator listening on {args.host}:{server.server_address[1]}", flush=True)
    while not stop.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
