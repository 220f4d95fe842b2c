"""DRC link framing and messages.

A frame is a 4-byte big-endian length, then the body: an ASCII MUNGE credential whose payload
is the message (an answer may be keyed instead: below). Messages are compact JSON::

    request   {"id": 7, "method": "Access", "args": [...]}
              {"id": 8, "method": "NodeAcquire", "args": [...], "rid": "4f1c…-12"}
    response  {"id": 7, "ok": [...]}
              {"id": 7, "error": "org.drc.Error.EPERM", "message": "..."}

The size limit is checked on the length prefix, before any body is read, so a hostile peer can
make us allocate at most ``max_frame`` bytes.

Shared answers (frame format 2). One change reaches every node following DRCS: sealing each
node's answer with its own MUNGE credential cost one round trip to munged per node per change
(seconds at 10,000 nodes). So DRCS seals a change-feed answer once per batch and sends the
same bytes to every node whose poll it answers alike (same generation and ``since``), with
the request's id *outside* the sealed part::

    shared response   @7:MUNGE:AwQ…       (the id, a colon, the shared credential)
    its sealed payload {"shared": "NodeWatch", "asked": ["9f3c…", 41], "ok": [[…]]}

``asked`` is the part of the request the answer is for (its generation and ``since``). The
node accepts a shared answer only from DRCS's uid, only for a method in :data:`SHAREABLE`,
only when ``asked`` equals what it asked, and only when the answer moves it forward from there
(:func:`fresh_feed_answer`; heartbeats, which move nothing, are never shared). Because each
answer names the exact question it answers, and a node never asks the same question again once
it applied an answer that moved it on, the node may accept a credential its munged has seen
before (MUNGE's "replayed"): it must, since one munged serves many nodes in tests and the
simulator, and a node may decode a shared credential twice after a reconnect. An old batch
replayed to a node changes nothing; SECURITY.md ("The change feed's shared answers") gives the
argument. A frame whose id does not match is dropped like any unknown response. Every other
frame stays per request and replay-checked.

Frame format 2 is understood by DRCC and DRCS of this version only; they ship together (one
package), and a DRCS sends shared frames only as answers to ``NodeWatch`` and (batched
answers, below) ``NodeConnectFeed``.

Keyed answers (frame format 3). Sealing an answer cost DRCS a MUNGE encode and the node a
MUNGE decode: two of a round trip's four calls to a munged, about 250 us of a cache miss and
most of munged's work. So a request carries a fresh random key (``"key"``: 32 bytes, hex),
which only its MUNGE credential holds: encrypted, and decodable only by DRCS's uid (the
node's ``uid_restriction``). DRCS answers it with that key, an HMAC-SHA256 of the id and
the payload, the id outside as in a shared response::

    keyed response    #7:<32 bytes of HMAC-SHA256(key, "#7:" + payload)>{"id": 7, "ok": [...]}

Whoever can make that MAC decoded the request: DRCS, as MUNGE's seal would have proven. A key
is drawn for one request and never used for another, so an answer fits no other request (no
replay), and the MAC covers every byte of it (no alteration). The node checks the MAC with the
key of the request pending under that id on that connection before it parses anything; a
frame that fails the check drops the link, one for no pending request is dropped. DRCS answers
a request without a key, or one whose credential was not encrypted, sealed with MUNGE as
before; shared answers stay MUNGE-sealed (one seal for many nodes, no key is shared).
SECURITY.md ("The DRC link") gives the argument. A DRCS older than keyed answers refuses a
request with a key (EINVAL, "unknown request fields") before it runs anything; the node asks
it again without one and sends that connection no key from then on, so DRCS and the node
daemons may be upgraded in either order.

Continued requests. A request of a method in :data:`CONTINUED` gets a second answer under its
id after the first: ``NodeConnectFeed`` is answered like ``NodeConnect``, (rebooted,
generation, seq), and DRCS then parks ``NodeWatch(generation, seq, timeout)`` for it, whose
answer (per request, or shared as any ``NodeWatch`` answer, checked against that question)
comes later under the same id. DRCS writes the first answer before it parks the poll, so the
node always reads them in that order. The node's next call of exactly that ``NodeWatch`` on
that connection waits for that answer instead of sending a frame: a connecting node sends one
frame and reads one before its poll is parked, where it sent two (four MUNGE operations,
not six). Nothing is parked when the first answer has no position (generation "": a replayed
request).

Batched answers. A connect storm (every node of a cluster starting, or following a DRCS that
restarted) would cost DRCS one MUNGE encode per node for answers that differ in a few bytes.
So the answers of ``NodeConnectFeed`` requests DRCS makes together (one group commit's) are
sealed once, as one shared response to each, whose sealed payload lists every request's
answer by its ``rid``: ``{"shared": "NodeConnectFeed", "asked": [], "ok": [[rid, rebooted,
generation, seq, rid, …]]}`` (four items each, at most :data:`CONNECT_BATCH` answers). The
node takes the entry of its request's ``rid`` and nothing else; a batch without one is
dropped like any shared answer that answers nothing asked. A ``rid`` names one request
cluster-wide and is never used for another (DRCC: its node name, a per-start random part and
a counter), so an old batch replayed answers no request a node is making, except a retry of
the very request it answered, with what DRCS answered it. SECURITY.md ("The change feed's
shared answers") gives the argument.

Exactly-once requests (``rid``). ``id`` only matches a response to its request on one
connection; ``rid`` names the *operation* across connections and servers. A node daemon gives
every mutating request a ``rid`` (1..64 printable ASCII characters, unique cluster-wide: the
DRCC uses its boot id, a per-start random part and a counter) and sends the same ``rid`` again
when it retries the request on another DRCS after a fail-over. DRCS records ``rid`` with a
digest of (method, args) and the outcome in the same store transaction as the change itself:

- same ``rid``, same method and args, already committed: the recorded answer is returned and
  nothing runs again (a retried acquire gets the same credential, a retried release, grant or
  job end is a no-op);
- same ``rid`` with a different method or args: ``org.drc.Error.EINVAL``, nothing changes;
- a request that failed (an error answer) recorded nothing: retrying it runs it again.

Requests without ``rid`` behave as before (reads, and peers that predate it). Other fields are
refused, so a typo in a field name never silently drops the guarantee. Node daemons put a
``rid`` on every node verb declared with a ``replay`` answer (:mod:`drc.nodeverbs`;
:data:`drc.link.failover.MUTATING` is derived from it). A replayed request answers what its
declaration says: what its first run made (the same credential for NodeAcquire), or an empty
result for the verbs whose results are not kept (lists of freed or refused credentials). A
verb declared with none is idempotent and is never recorded, even sent with a ``rid``: NodeAccess
(the caller's reference is its own record: a retry answers as the first run did).

Verbs added for clusters (existing verbs keep their names, arguments and meaning):
NodeJobsEndedHere(node, jobs) drops the jobs' references on ``node`` only (NodeJobsEnded
drops them everywhere); NodeFollow(node, server) records which DRCS a node follows;
ServerInfo() says which DRCS answers (``drccli status``); NodeConnect(node, boot_id, server)
is NodeHello and NodeFollow in one round trip, answering where the change feed stands (a
cluster reconnecting at once costs each DRCS a third of the frames); NodeConnectFeed(node,
boot_id, server, timeout) is NodeConnect and the first NodeWatch (continued requests, above);
NodeMoved(node, server, credentials) is a fail-over's NodeFollow and NodeEpochs in one round
trip, answering where the change feed of the DRCS moved to stands (two requests per moved node
instead of four: no NodeWatch answered "another generation", no separate NodeEpochs).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Largest frame body accepted (a credential is ~4/3 of its payload, so payloads up to ~750 KiB).
MAX_FRAME = 1 << 20
HEADER = struct.Struct(">I")
_MAX_ID = (1 << 63) - 1
MAX_RID = 64
#: Deepest nesting of arrays and objects a message may have (ours nest 4 deep at most).
MAX_DEPTH = 32
#: Longest integer literal a message may carry. A uint64 has 20 digits: a longer number is
#: still parsed, so that it gets its EINVAL (out of range) answer; a literal past this is no
#: message of ours, and ``int()`` of thousands of digits costs quadratic time.
MAX_INT_CHARS = 64
#: A run of digits as long as that bound. Only a payload holding one can carry a literal over
#: it, so only such a payload is parsed with the per-integer check (a Python call for every
#: integer: 17 in a credential); the rest is parsed at C speed, to the same result. The run is
#: looked for in the payload with every digit made "0" and every other byte a space: two C
#: passes, 0.26-0.29 us for a request or an access answer, where the regex ``\d{64}`` took
#: 0.85 and 1.8 us (it tries every position of every run of digits).
_LONG_RUN = b"0" * MAX_INT_CHARS
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
#: A JSON string, or an unterminated one up to the end (possessive, so never rescanned: a
#: payload of unterminated strings would otherwise cost quadratic time).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


def valid_rid(value: object) -> bool:
    """A request id: 1..64 printable ASCII characters (no spaces)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_RID
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


class FrameError(Exception):
    """The peer broke the protocol; the connection is closed."""


class BadRequest(FrameError):
    """A well-formed frame whose request is not; ``id`` is set when an error can be answered."""

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def pack_frame(body: bytes, max_frame: int = MAX_FRAME) -> bytes:
    """Length prefix + body; refuses what the peer would refuse anyway."""
    if not 0 < len(body) <= max_frame:
        raise FrameError(f"frame of {len(body)} bytes (limit {max_frame})")
    return HEADER.pack(len(body)) + body


def _check_length(length: int, max_frame: int) -> None:
    if length == 0 or length > max_frame:
        raise FrameError(f"frame length {length} outside 1..{max_frame}")


def split_frame(buffer: bytearray, max_frame: int = MAX_FRAME) -> bytes | None:
    """Take the first whole frame's body out of ``buffer``; None while it is incomplete.

    For a server fed by ``data_received``: the length is checked as soon as the prefix is in,
    before any of the body is waited for (:class:`FrameError` when outside 1..max_frame).
    """
    if len(buffer) < HEADER.size:
        return None
    (length,) = HEADER.unpack_from(buffer)
    _check_length(length, max_frame)
    end = HEADER.size + length
    if len(buffer) < end:
        return None
    body = bytes(buffer[HEADER.size : end])
    del buffer[:end]
    return body


async def read_frame(
    reader: asyncio.StreamReader, max_frame: int = MAX_FRAME, body_timeout: float | None = 30.0
) -> bytes | None:
    """The next frame body; None on a clean end of stream between frames.

    Waiting for a frame to start is unbounded (links are long-lived), but once a length prefix
    arrived the body must follow within ``body_timeout`` seconds, so a stalled peer can't pin
    a half-read buffer forever.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as err:
        if not err.partial:
            return None
        raise FrameError("connection closed inside a length prefix") from None
    (length,) = HEADER.unpack(header)
    _check_length(length, max_frame)
    try:
        async with asyncio.timeout(body_timeout):
            return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError(f"connection closed inside a {length}-byte frame") from None
    except TimeoutError:
        raise FrameError(f"{length}-byte frame not complete after {body_timeout} s") from None


#: What :func:`dumps` and :func:`_loads` use: made once, not per message (``json.dumps``
#: with options builds an encoder per call; ``json.loads`` of bytes goes through a detour).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder()


def dumps(message: dict[str, Any]) -> bytes:
    """Compact, strict JSON (no NaN/Infinity: other implementations would reject them)."""
    return _ENCODER.encode(message).encode()


def _bounded_int(text: str) -> int:
    """json's ``parse_int``: a peer's 5,000-digit literal is refused before ``int()`` sees it."""
    if len(text) > MAX_INT_CHARS:
        raise FrameError(f"payload has an integer of {len(text)} characters (> {MAX_INT_CHARS})")
    return int(text)


def _check_depth(payload: bytes) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` before parsing (json would recurse into it).

    Only payloads with more brackets than the bound are looked at: their brackets outside
    strings, from which each pass removes the innermost empty pairs; whatever is left after
    :data:`MAX_DEPTH` passes nests deeper (or does not pair up: not JSON either way). Every
    step is a C-speed pass over the bytes.
    """
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        if not brackets:
            return
        brackets = _EMPTY_PAIR.sub(b"", brackets)
    if brackets:
        raise FrameError(f"payload nests arrays/objects deeper than {MAX_DEPTH}, or is not JSON")


def _decode(text: str) -> Any:
    """``_DECODER.decode(text)``: the document read at once when it fills ``text`` (as every
    frame of ours: no whitespace around it), without ``decode``'s two whitespace matches (0.5
    us of its 1.6 for a request); anything else is ``decode``'s to read or refuse."""
    try:
        message, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:  # leading whitespace, or no JSON: decode says which
        return _DECODER.decode(text)
    return message if end == len(text) else _DECODER.decode(text)


def _loads(payload: bytes) -> dict[str, Any]:
    _check_depth(payload)
    try:
        if _LONG_RUN not in payload.translate(_DIGITS_AS_ZEROS):
            # json.loads(payload), as it decodes bytes, without its per-call detour; a
            # payload opening with "{" and no NUL after it is UTF-8 to json.detect_encoding
            utf8 = payload[:1] == b"{" and payload[1:2] != b"\0"
            encoding = "utf-8" if utf8 else json.detect_encoding(payload)
            message = _decode(payload.decode(encoding, "surrogatepass"))
        else:
            message = json.loads(payload, parse_int=_bounded_int)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise FrameError(f"payload is not JSON: {err}") from None
    if not isinstance(message, dict):
        raise FrameError("payload is not a JSON object")
    return message


def _valid_id(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_ID


_REQUEST_FIELDS = frozenset(("id", "method", "args", "rid", "key"))
#: Bytes of an answer key (module doc: keyed answers), and of the HMAC-SHA256 it makes.
KEY_BYTES = 32
MAC_BYTES = 32
_HEX_KEY = re.compile(f"[0-9a-f]{{{2 * KEY_BYTES}}}")


@dataclass(frozen=True)
class Request:
    id: int
    method: str
    args: list[Any]
    rid: str | None = None
    #: The key its answer is authenticated with (module doc: keyed answers); None: sealed.
    key: bytes | None = None

    def to_payload(self) -> bytes:
        message: dict[str, Any] = {"id": self.id, "method": self.method, "args": self.args}
        if self.rid is not None:
            message["rid"] = self.rid
        if self.key is not None:
            message["key"] = self.key.hex()
        return dumps(message)

    @classmethod
    def from_payload(cls, payload: bytes) -> Request:
        """Parse a request; :class:`BadRequest` carries the id when one could be read."""
        message = _loads(payload)
        request_id = message.get("id")
        if not _valid_id(request_id):
            raise BadRequest("request without a valid id")
        method = message.get("method")
        args = message.get("args")
        if not isinstance(method, str) or not method or not isinstance(args, list):
            raise BadRequest("request needs a method name and an args list", request_id)
        if not message.keys() <= _REQUEST_FIELDS:
            raise BadRequest(f"unknown request fields {sorted(message)}", request_id)
        rid = message.get("rid")
        if rid is not None and not valid_rid(rid):
            raise BadRequest("rid must be 1..64 printable ASCII characters", request_id)
        key = message.get("key")
        if key is not None:
            if not isinstance(key, str) or not _HEX_KEY.fullmatch(key):
                raise BadRequest(f"key must be {2 * KEY_BYTES} lowercase hex digits", request_id)
            key = bytes.fromhex(key)
        return cls(request_id, method, args, rid, key)


@dataclass(frozen=True)
class Response:
    id: int
    ok: list[Any] | None = None
    error: str | None = None
    message: str = ""

    def to_payload(self) -> bytes:
        if self.error is None:
            return dumps({"id": self.id, "ok": self.ok if self.ok is not None else []})
        return dumps({"id": self.id, "error": self.error, "message": self.message})

    @classmethod
    def from_payload(cls, payload: bytes) -> Response:
        message = _loads(payload)
        request_id = message.get("id")
        if not _valid_id(request_id):
            raise FrameError("response without a valid id")
        if set(message) == {"id", "ok"} and isinstance(message["ok"], list):
            return cls(request_id, ok=message["ok"])
        error, text = message.get("error"), message.get("message")
        if set(message) == {"id", "error", "message"} and isinstance(error, str):
            return cls(request_id, error=error, message=str(text))
        raise FrameError("response is neither ok nor error")


#: The first byte of a keyed response's body (module doc: keyed answers).
KEYED_TAG = b"#"
_KEYED_HEAD = re.compile(rb"#(\d{1,19}):")


def _answer_mac(key: bytes, request_id: int, payload: bytes) -> bytes:
    """The MAC of a keyed response: of its head (the id) and its payload."""
    return hmac.digest(key, b"#%d:%s" % (request_id, payload), hashlib.sha256)


def pack_keyed(request_id: int, key: bytes, payload: bytes) -> bytes:
    """The body of a keyed response: the id, the MAC of the request's key, the payload."""
    return b"#%d:%s%s" % (request_id, _answer_mac(key, request_id, payload), payload)


def split_keyed(body: bytes) -> tuple[int, bytes] | None:
    """(id, MAC and payload) of a keyed response's body, for :func:`open_keyed` with the key
    of the request pending under that id; None for a body of another kind."""
    return _split_tagged(body, KEYED_TAG, _KEYED_HEAD, "keyed")


def open_keyed(request_id: int, sealed: bytes, key: bytes) -> bytes:
    """The payload of keyed response ``request_id`` (``sealed``: its MAC and payload) whose
    MAC ``key`` makes; :class:`FrameError` when it is not (made with another key, or altered).
    Checked before a byte of it is parsed."""
    mac, payload = sealed[:MAC_BYTES], sealed[MAC_BYTES:]
    if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, _answer_mac(key, request_id, payload)):
        raise FrameError("keyed response not authenticated by its request's key")
    return payload


def _split_tagged(
    body: bytes, tag: bytes, head: re.Pattern[bytes], kind: str
) -> tuple[int, bytes] | None:
    """(id, the rest) of a body that opens with ``tag``, the id and a colon (``head``); None
    for a body of another kind; :class:`FrameError` when its id is no valid one."""
    if not body.startswith(tag):
        return None
    found = head.match(body)
    if found is None or not _valid_id(request_id := int(found.group(1))):
        raise FrameError(f"{kind} response without a valid id")
    return request_id, body[found.end() :]


#: The first byte of a shared response's body (a MUNGE credential starts with ``M``).
SHARED_TAG = b"@"
_SHARED_HEAD = re.compile(rb"@(\d{1,19}):")


def pack_shared(request_id: int, credential: bytes) -> bytes:
    """The body of a shared response: the id outside, then the credential sealed once."""
    return b"@%d:%s" % (request_id, credential)


def split_shared(body: bytes) -> tuple[int, bytes] | None:
    """(id, credential) of a shared response's body; None for a per-request one."""
    return _split_tagged(body, SHARED_TAG, _SHARED_HEAD, "shared")


class Shared(tuple):
    """A result that many parked requests get alike (module doc: shared answers).

    The verb returns it instead of a plain tuple; the link server seals it once (``sealed``
    caches the credential) and sends the same bytes to every request it answers. ``asked``:
    the leading arguments of the requests it answers, which each node checks against its own.
    """

    asked: list[Any]
    sealed: bytes | None

    def __new__(cls, values: tuple[Any, ...] | list[Any], asked: list[Any]) -> Shared:
        shared = super().__new__(cls, values)
        shared.asked = asked
        shared.sealed = None
        return shared


@dataclass(frozen=True)
class SharedAnswer:
    """The sealed part of a shared response: which method, what was asked, the result."""

    method: str
    asked: list[Any]
    ok: list[Any]

    def to_payload(self) -> bytes:
        return dumps({"shared": self.method, "asked": self.asked, "ok": self.ok})

    @classmethod
    def from_payload(cls, payload: bytes) -> SharedAnswer:
        message = _loads(payload)
        method, asked, ok = message.get("shared"), message.get("asked"), message.get("ok")
        if (
            set(message) != {"shared", "asked", "ok"}
            or not isinstance(method, str)
            or not isinstance(asked, list)
            or not isinstance(ok, list)
        ):
            raise FrameError("shared response is not one")
        return cls(method, asked, ok)

    def answer_for(self, request: Request) -> list[Any] | None:
        """The answer this gives ``request`` (module doc: shared answers, batched answers);
        None when it is no fresh answer to it."""
        if self.method != request.method:
            return None
        if request.method in SHAREABLE:
            return self.ok if self.answers(request) else None
        pick = BATCHED.get(request.method)
        return None if pick is None else pick(request, self.asked, self.ok)

    def answers(self, request: Request) -> bool:
        """Whether this is a fresh answer to ``request`` (module doc: shared answers)."""
        fresh = SHAREABLE.get(request.method)
        return (
            fresh is not None
            and self.method == request.method
            and self.asked == request.args[: len(self.asked)]
            and fresh(self.asked, self.ok)
        )


def fresh_feed_answer(asked: list[Any], ok: list[Any]) -> bool:
    """A ``NodeWatch`` answer to (generation, since) that moves the node forward from there.

    In the same generation its ``seq`` is past ``since``; in another generation (DRCS
    restarted or missed changes) it carries no change: the node resynchronises over
    per-request verbs. So an answer can be applied only at the one point it was made for, and
    once applied the node never asks from that point again. A heartbeat (nothing changed)
    moves nothing: DRCS never shares one, and a shared one is refused.
    """
    if len(asked) != 2 or len(ok) != 1:
        return False
    generation, since = asked
    answer = ok[0]
    if not isinstance(answer, list) or len(answer) != 4:
        return False
    new_generation, complete, seq, changes = answer
    if not isinstance(seq, int) or not isinstance(since, int) or not isinstance(changes, list):
        return False
    if type(complete) is not bool:
        return False
    if new_generation != generation:
        return not changes
    return seq > since


#: The methods whose answers may be shared, and the check each answer must pass.
SHAREABLE: dict[str, Callable[[list[Any], list[Any]], bool]] = {"NodeWatch": fresh_feed_answer}


class Continued:
    """A first answer, then a second under the same request id (module doc: continued
    requests): the link server sends ``first``, and once it is written calls ``then()`` for the
    reply of the request the node will adopt (``method``), answered like any request of it.
    ``shared()``: the batch ``first`` is sent in, sealed once for every request of it (module
    doc: batched answers); None to seal it for this request alone."""

    __slots__ = ("first", "method", "shared", "then")

    def __init__(
        self,
        first: list[Any],
        method: str,
        then: Callable[[], Any] | None,
        shared: Callable[[], Shared] | None = None,
    ) -> None:
        self.first = first
        self.method = method
        self.then = then
        self.shared = shared


def feed_follow_up(request: Request, ok: list[Any]) -> Request | None:
    """The ``NodeWatch`` a ``NodeConnectFeed`` answer ``ok`` left parked under the request's
    id, as the question the node will ask; None when the answer has no position."""
    if len(ok) != 1 or not isinstance(ok[0], list) or len(ok[0]) != 3:
        return None
    _rebooted, generation, seq = ok[0]
    if not generation or not isinstance(generation, str) or type(seq) is not int:
        return None
    return Request(request.id, "NodeWatch", [generation, seq, request.args[3]], key=request.key)


#: The methods whose requests are continued, and the question their second answer answers.
CONTINUED: dict[str, Callable[[Request, list[Any]], Request | None]] = {
    "NodeConnectFeed": feed_follow_up
}

#: Answers of NodeConnectFeed sealed together at most (module doc: batched answers): every
#: node parses the whole batch, so a batch is kept small; ~100 bytes each.
CONNECT_BATCH = 32


def connect_answer_in_batch(request: Request, asked: list[Any], ok: list[Any]) -> list[Any] | None:
    """This ``NodeConnectFeed``'s answer in a batch ``ok``: [[rid, rebooted, generation, seq,
    rid, ...]], four items an answer, flat so that a batch parses on the fast path (no nesting
    to check, see :func:`_check_depth`); None when the batch has no entry for its ``rid``."""
    if request.rid is None or asked or len(ok) != 1 or not isinstance(ok[0], list):
        return None
    entries = ok[0]
    if len(entries) % 4:
        return None
    for at in range(0, len(entries), 4):
        if entries[at] == request.rid:
            rebooted, generation, seq = entries[at + 1 : at + 4]
            if type(rebooted) is bool and isinstance(generation, str) and type(seq) is int:
                return [[rebooted, generation, seq]]
            return None
    return None


#: The methods answered in batches, and how a request finds its own answer in one.
BATCHED: dict[str, Callable[[Request, list[Any], list[Any]], list[Any] | None]] = {
    "NodeConnectFeed": connect_answer_in_batch
}


def feed_answer_shape(ok: list[Any]) -> bool:
    """Whether ``ok`` is shaped as a ``NodeWatch`` answer (generation, complete, seq, changes)."""
    if len(ok) != 1 or not isinstance(ok[0], list) or len(ok[0]) != 4:
        return False
    generation, complete, seq, changes = ok[0]
    return (
        isinstance(generation, str)
        and type(complete) is bool
        and type(seq) is int
        and isinstance(changes, list)
    )


#: The methods whose answers a node checks the shape of before it takes them: an answer
#: parked for it (continued requests) comes under the id of another request.
ANSWER_SHAPES: dict[str, Callable[[list[Any]], bool]] = {"NodeWatch": feed_answer_shape}
