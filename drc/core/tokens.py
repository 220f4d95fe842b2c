"""Signed credential tokens: access checked by the node daemon alone.

A token carries a credential, its resources and its ACL at issue time, signed with the cluster
key, so DRCC can admit a process without a synchronous round trip to DRCS.

Format (version ``drc1``)::

    drc1.<payload>.<mac>

``payload`` is base64url (no padding) of a fixed big-endian binary layout (see ``_HEAD``);
``mac`` is base64url of HMAC-SHA256(key, ``"drc1." + payload``) over the ASCII text exactly as
transmitted, so there is nothing to canonicalize before checking it. Only ``[A-Za-z0-9_.-]``
appear: a token is safe in an environment variable and as an unquoted shell word. The layout is
binary rather than JSON because it has one encoding per claim set (no key order, spacing,
number spellings or duplicate keys) and every integer field is a uint32 by construction.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from drc.core.errors import Code, DrcError, einval
from drc.core.model import AccessInfo, Caller, Credential, Target, TargetKind, check_uint32

VERSION = "drc1"
MAX_TOKEN_LEN = 4096
MIN_KEY_LEN = 32
#: DRCS stamps ``issued`` and DRCC checks it with another clock: tolerate this much skew. A token
#: issued further in the future is refused, because then the issuer's clock (and so the expiry
#: it computed) cannot be trusted.
CLOCK_SKEW = 60.0

# credential uid gid wlm cookie1 cookie2 ptag flags epoch | issued expires | provider length
_HEAD = struct.Struct(">9I2dB")
_COUNT = struct.Struct(">H")
_GRANT = struct.Struct(">BI")
_KIND_CODE = {TargetKind.UID: 1, TargetKind.GID: 2, TargetKind.WLM: 3}
_CODE_KIND = {code: kind for kind, code in _KIND_CODE.items()}
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_PROVIDER = re.compile(rb"[\x21-\x7e]*")  # printable ASCII, no spaces


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token asserts; the revocation epoch is the caller's to compare."""

    credential: int
    uid: int
    gid: int
    wlm: int
    cookie1: int
    cookie2: int
    ptag: int
    provider: str
    grants: tuple[Target, ...]
    issued: float
    expires: float
    epoch: int
    flags: int


def _bad(why: str) -> DrcError:
    return DrcError(Code.BAD_TOKEN, f"token refused: {why}")


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_LEN:
        raise ValueError(f"token key must be at least {MIN_KEY_LEN} bytes, got {len(key)}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, part: str) -> bytes:
    """Strict base64url: one spelling per byte string, so no two texts carry the same value."""
    if not _B64.fullmatch(text) or len(text) % 4 == 1:
        raise _bad(f"{part} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _bad(f"{part} is not base64url") from None
    if _b64(data) != text:
        raise _bad(f"{part} is not canonical base64url")
    return data


def _mac(key: bytes, payload_text: str) -> bytes:
    return hmac.new(key, f"{VERSION}.{payload_text}".encode("ascii"), hashlib.sha256).digest()


def _encode(c: TokenClaims) -> bytes:
    ints = (c.credential, c.uid, c.gid, c.wlm, c.cookie1, c.cookie2, c.ptag, c.flags, c.epoch)
    provider = c.provider.encode("ascii")
    grants = [_GRANT.pack(_KIND_CODE[t.kind], t.id) for t in c.grants]
    head = _HEAD.pack(*ints, c.issued, c.expires, len(provider))
    return b"".join([head, provider, _COUNT.pack(len(grants)), *grants])


def _decode(data: bytes) -> TokenClaims:
    if len(data) < _HEAD.size + _COUNT.size:
        raise _bad("payload too short")
    *ints, issued, expires, plen = _HEAD.unpack_from(data)
    off = _HEAD.size + plen
    provider = data[_HEAD.size : off]
    if len(data) < off + _COUNT.size or not _PROVIDER.fullmatch(provider):
        raise _bad("payload has a malformed provider name")
    (count,) = _COUNT.unpack_from(data, off)
    off += _COUNT.size
    if len(data) != off + count * _GRANT.size:
        raise _bad("payload length does not match its grant count")
    grants = []
    for code, target in _GRANT.iter_unpack(data[off:]):
        if code not in _CODE_KIND:
            raise _bad(f"payload has an unknown grant kind {code}")
        grants.append(Target(_CODE_KIND[code], target))
    if not (math.isfinite(issued) and math.isfinite(expires) and issued < expires):
        raise _bad("payload has invalid issue/expiry times")
    cred, uid, gid, wlm, cookie1, cookie2, ptag, flags, epoch = ints
    return TokenClaims(
        cred, uid, gid, wlm, cookie1, cookie2, ptag, provider.decode("ascii"), tuple(grants),
        issued, expires, epoch, flags,
    )  # fmt: skip


def issue_token(key: bytes, cred: Credential, *, now: float, ttl: float) -> str:
    """Sign ``cred`` (resources, owner, grants and revocation epoch) for ``ttl`` seconds."""
    _check_key(key)
    if not (math.isfinite(now) and math.isfinite(ttl) and ttl > 0):
        raise einval(f"token time {now!r} and ttl {ttl!r} must be finite, ttl > 0")
    res = cred.resources
    fields = {"credential": cred.id, "uid": cred.uid, "gid": cred.gid, "wlm": cred.wlm,
              "cookie1": res.cookie1, "cookie2": res.cookie2, "ptag": res.ptag,
              "flags": int(cred.flags), "epoch": cred.epoch}  # fmt: skip
    for name, value in fields.items():
        check_uint32(name, value)
    for t in cred.grants:
        check_uint32(f"grant {t}", t.id)
    if len(res.provider) > 255 or not _PROVIDER.fullmatch(res.provider.encode("utf-8")):
        raise einval(f"provider name {res.provider!r} must be printable ASCII, at most 255 chars")
    claims = TokenClaims(**fields, provider=res.provider, grants=tuple(cred.grants),
                         issued=now, expires=now + ttl)  # fmt: skip
    payload = _b64(_encode(claims))
    token = f"{VERSION}.{payload}.{_b64(_mac(key, payload))}"
    if len(token) > MAX_TOKEN_LEN:
        raise DrcError(Code.ENOSPC, f"credential {cred.id} has too many grants to fit in a token")
    return token


def verify_token(key: bytes, token: str, *, now: float) -> TokenClaims:
    """Check format, signature and expiry; any failure is ``BAD_TOKEN`` naming the check.

    The revocation epoch is *not* checked here: only the node daemon knows the credential's
    current epoch, so it must refuse ``claims.epoch`` older than that itself.
    """
    _check_key(key)
    if not isinstance(token, str) or not token:
        raise _bad("empty or not a string")
    if len(token) > MAX_TOKEN_LEN:
        raise _bad(f"longer than {MAX_TOKEN_LEN} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise _bad(f"expected 3 dot-separated parts (version.payload.mac), got {len(parts)}")
    version, payload_text, mac_text = parts
    if version != VERSION:
        raise _bad(f"unknown token version (expected {VERSION})")
    payload = _unb64(payload_text, "payload")
    if not hmac.compare_digest(_unb64(mac_text, "signature"), _mac(key, payload_text)):
        raise _bad("signature mismatch (forged, altered, or signed with another cluster key)")
    claims = _decode(payload)
    if claims.issued > now + CLOCK_SKEW:
        raise _bad(f"issued {claims.issued - now:.0f}s in the future (clocks out of sync?)")
    if now >= claims.expires:
        raise _bad(f"expired {now - claims.expires:.0f}s ago")
    return claims


def caller_may_use(claims: TokenClaims, caller: Caller) -> bool:
    """The ACCESS rule applied to the ACL snapshot in the token (job 0 means no job)."""
    if caller.uid == claims.uid or (caller.job != 0 and caller.job == claims.wlm):
        return True
    gids = caller.all_gids
    return any(
        (t.kind is TargetKind.UID and t.id == caller.uid)
        or (t.kind is TargetKind.GID and t.id in gids)
        or (t.kind is TargetKind.WLM and caller.job != 0 and t.id == caller.job)
        for t in claims.grants
    )


def access_info(claims: TokenClaims) -> AccessInfo:
    return AccessInfo(claims.credential, claims.cookie1, claims.cookie2, claims.ptag)


def load_key(path: Path) -> bytes:
    """Read the cluster key (its bytes as they are), refusing one others could read or swap."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)  # the opened file itself: no check-then-open race
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"token key {path} is not a regular file")
        if st.st_uid not in (0, os.getuid()):
            raise PermissionError(f"token key {path} is owned by uid {st.st_uid}, not root")
        if st.st_mode & 0o066:
            mode = stat.S_IMODE(st.st_mode)
            raise PermissionError(f"token key {path} has mode {mode:o}: chmod 600 it")
        with open(fd, "rb", closefd=False) as f:
            key = f.read()
    finally:
        os.close(fd)
    if len(key) < MIN_KEY_LEN:
        raise ValueError(f"token key {path} has {len(key)} bytes, needs >= {MIN_KEY_LEN}")
    return key


def generate_key(path: Path) -> None:
    """Write a fresh random key atomically (mode 0600); replacing one voids all its tokens."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(MIN_KEY_LEN))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
