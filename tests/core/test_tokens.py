"""Tokens: a node daemon alone must admit exactly what the issuer signed, and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import shlex
import stat
import struct
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drc.core.errors import Code, DrcError
from drc.core.model import (
    AccessInfo,
    Caller,
    Credential,
    Flags,
    Resources,
    State,
    Target,
    TargetKind,
)
from drc.core.tokens import (
    CLOCK_SKEW,
    MAX_TOKEN_LEN,
    TokenClaims,
    access_info,
    caller_may_use,
    generate_key,
    issue_token,
    load_key,
    verify_token,
)

from scale import fuzzed, size

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_700_000_000.25
TTL = 3600.0
GRANTS = (Target(TargetKind.UID, 2001), Target(TargetKind.GID, 300), Target(TargetKind.WLM, 77))


def make_cred(**changes: object) -> Credential:
    values: dict[str, object] = {
        "id": 42,
        "uid": 1000,
        "gid": 100,
        "wlm": 55,
        "flags": Flags.PERSISTENT,
        "state": State.ACTIVE,
        "resources": Resources("pool", cookie1=0xDEAD_BEEF, cookie2=0xFFFF_FFFF, ptag=7),
        "created": NOW - 10,
        "epoch": 3,
        "grants": GRANTS,
    }
    values.update(changes)
    return Credential(**values)  # type: ignore[arg-type]


TOKEN = issue_token(KEY, make_cred(), now=NOW, ttl=TTL)


def sign(payload: bytes, version: str = "drc1") -> str:
    """Sign arbitrary bytes independently of the module, pinning what the MAC covers."""
    text = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    mac = hmac.new(KEY, f"{version}.{text}".encode(), hashlib.sha256).digest()
    return f"{version}.{text}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def payload_of(token: str) -> bytes:
    text = token.split(".")[1]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mac_of(token: str) -> bytes:
    text = token.split(".")[2]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def refused(token: object, match: str | None = None, *, now: float = NOW, key: bytes = KEY) -> None:
    with pytest.raises(DrcError, match=match) as info:
        verify_token(key, token, now=now)  # type: ignore[arg-type]
    assert info.value.code is Code.BAD_TOKEN


def test_roundtrip_preserves_every_claim() -> None:
    assert verify_token(KEY, TOKEN, now=NOW + 1) == TokenClaims(
        credential=42, uid=1000, gid=100, wlm=55, cookie1=0xDEAD_BEEF, cookie2=0xFFFF_FFFF,
        ptag=7, provider="pool", grants=GRANTS, issued=NOW, expires=NOW + TTL, epoch=3,
        flags=int(Flags.PERSISTENT),
    )  # fmt: skip


def test_token_is_a_safe_shell_and_environment_word() -> None:
    assert re.fullmatch(r"drc1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", TOKEN)
    assert shlex.quote(TOKEN) == TOKEN


def test_mac_covers_version_and_payload_text_exactly() -> None:
    assert sign(payload_of(TOKEN)) == TOKEN


def test_forged_with_another_key() -> None:
    refused(issue_token(OTHER_KEY, make_cred(), now=NOW, ttl=TTL), "signature")


def test_forged_claims_with_another_key_grant_nothing() -> None:
    forged = issue_token(
        OTHER_KEY, make_cred(grants=(Target(TargetKind.UID, 666),)), now=NOW, ttl=1
    )
    refused(forged, "signature")


def test_truncated_at_every_position() -> None:
    for cut in range(len(TOKEN)):
        refused(TOKEN[:cut])


@pytest.mark.parametrize("part", [1, 2], ids=["payload", "mac"])
def test_every_single_character_change_is_refused(part: int) -> None:
    """Every position, every other alphabet letter: catches base64 spellings that decode alike."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    start = len(".".join(TOKEN.split(".")[:part])) + 1
    end = start + len(TOKEN.split(".")[part])
    for pos in range(start, end):
        for ch in alphabet.replace(TOKEN[pos], ""):
            refused(TOKEN[:pos] + ch + TOKEN[pos + 1 :], "signature|base64")


def test_noncanonical_base64_mac_is_refused() -> None:
    # 32 bytes leave 2 spare bits in the last character: setting one keeps the decoded MAC.
    last = TOKEN[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = TOKEN[:-1] + alphabet[alphabet.index(last) ^ 1]
    assert mac_of(twin) == mac_of(TOKEN)
    refused(twin, "canonical")


def test_swapped_payload_between_two_tokens() -> None:
    other = issue_token(KEY, make_cred(id=43), now=NOW, ttl=TTL)
    version, _, mac = TOKEN.split(".")
    refused(f"{version}.{other.split('.')[1]}.{mac}", "signature")


def test_expired_exactly_at_expiry_and_after() -> None:
    assert verify_token(KEY, TOKEN, now=NOW + TTL - 0.001).credential == 42
    refused(TOKEN, "expired", now=NOW + TTL)
    refused(TOKEN, "expired", now=NOW + TTL + 1e6)


def test_issued_in_the_future_only_within_clock_skew() -> None:
    """Decision: skew between issuer and node clocks up to CLOCK_SKEW is tolerated."""
    assert verify_token(KEY, TOKEN, now=NOW - CLOCK_SKEW).issued == NOW
    refused(TOKEN, "future", now=NOW - CLOCK_SKEW - 1)


def test_unknown_version_even_when_correctly_signed() -> None:
    refused(sign(payload_of(TOKEN), version="drc2"), "version")
    refused("DRC1" + TOKEN[4:], "version")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + ".",
        lambda t: "." + t,
        lambda t: t + ".AAAA",
        lambda t: t.replace(".", "..", 1),
        lambda t: t.replace(".", "", 1),
    ],
    ids=["trailing-dot", "leading-dot", "fourth-part", "empty-part", "two-parts"],
)
def test_extra_or_missing_dots(mangle) -> None:  # type: ignore[no-untyped-def]
    refused(mangle(TOKEN), "parts|version")


@pytest.mark.parametrize("garbage", ["A", "AA", "AAAA", " ", "\n", "=", "==", "é"])
def test_trailing_garbage(garbage: str) -> None:
    refused(TOKEN + garbage)


def _with(payload: bytes, offset: int, fmt: str, value: object) -> bytes:
    return payload[:offset] + struct.pack(fmt, value) + payload[offset + struct.calcsize(fmt) :]


HEAD = struct.calcsize(">9I2dB")
GOOD = payload_of(TOKEN)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "base64"),
        (GOOD[: HEAD + 1], "short"),
        (GOOD + b"\0", "grant count"),
        (GOOD[:-1], "grant count"),
        (_with(GOOD, len(GOOD) - 5, ">B", 9), "grant kind"),
        (_with(GOOD, 36, ">d", math.nan), "times"),
        (_with(GOOD, 44, ">d", math.inf), "times"),
        (_with(GOOD, 44, ">d", NOW), "times"),
        (_with(GOOD, HEAD, ">B", 0xE9), "provider"),
        (_with(GOOD, HEAD - 1, ">B", 200), "provider"),
        (_with(GOOD, HEAD + 4, ">H", 4), "grant count"),
    ],
    ids=["empty", "head-only", "trailing-byte", "truncated-grant", "unknown-kind", "nan-issued",
         "inf-expires", "expires-at-issue", "non-ascii-provider", "provider-overrun", "count"],
)  # fmt: skip
def test_bad_fields_under_a_valid_signature(payload: bytes, why: str) -> None:
    refused(sign(payload), why)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "drc1",
        "drc1..",
        "x" * (MAX_TOKEN_LEN + 1),
        TOKEN + "A" * MAX_TOKEN_LEN,
        "drc1.é.é",
        b"x",
    ],
    ids=["empty", "version-only", "empty-parts", "huge", "huge-suffix", "non-ascii", "bytes"],
)
def test_malformed_input(token: object) -> None:
    refused(token)


def test_oversized_token_refused_even_when_correctly_signed() -> None:
    grants = b"".join(struct.pack(">BI", 1, i) for i in range(800))
    big = sign(GOOD[: HEAD + 4] + struct.pack(">H", 800) + grants)
    assert len(big) > MAX_TOKEN_LEN
    refused(big, "longer than")


def test_issue_refuses_values_a_token_cannot_carry() -> None:
    for cred in (
        make_cred(uid=-1),
        make_cred(epoch=2**32),
        make_cred(grants=(Target(TargetKind.UID, 2**32),)),
    ):
        with pytest.raises(DrcError) as info:
            issue_token(KEY, cred, now=NOW, ttl=TTL)
        assert info.value.code is Code.EINVAL
    with pytest.raises(DrcError, match="too many grants"):
        grants = tuple(Target(TargetKind.UID, i) for i in range(1000))
        issue_token(KEY, make_cred(grants=grants), now=NOW, ttl=TTL)
    with pytest.raises(DrcError, match="ttl"):
        issue_token(KEY, make_cred(), now=NOW, ttl=0)
    with pytest.raises(ValueError, match="32"):
        issue_token(b"short", make_cred(), now=NOW, ttl=TTL)


CLAIMS = verify_token(KEY, TOKEN, now=NOW)


@pytest.mark.parametrize(
    "caller",
    [
        Caller(uid=1000, gid=9),  # owner uid
        Caller(uid=5, gid=9, job=55),  # owner job
        Caller(uid=2001, gid=9),  # granted uid
        Caller(uid=5, gid=300),  # granted primary gid
        Caller(uid=5, gid=9, gids=frozenset({8, 300})),  # granted supplementary gid
        Caller(uid=5, gid=9, job=77),  # granted job
    ],
    ids=[
        "owner-uid",
        "owner-job",
        "granted-uid",
        "granted-gid",
        "granted-suppl-gid",
        "granted-job",
    ],
)
def test_caller_may_use_for_each_acl_kind(caller: Caller) -> None:
    assert caller_may_use(CLAIMS, caller)


@pytest.mark.parametrize(
    "caller",
    [
        Caller(uid=5, gid=9, gids=frozenset({8}), job=56),
        Caller(uid=100, gid=1000),  # ids of one kind don't count as another
        Caller(uid=300, gid=2001, job=1000),
    ],
    ids=["stranger", "owner-gid-as-uid", "crossed-kinds"],
)
def test_caller_refused(caller: Caller) -> None:
    assert not caller_may_use(CLAIMS, caller)


def test_job_zero_is_no_job() -> None:
    claims = verify_token(
        KEY,
        issue_token(KEY, make_cred(wlm=0, grants=(Target(TargetKind.WLM, 0),)), now=NOW, ttl=TTL),
        now=NOW,
    )
    assert not caller_may_use(claims, Caller(uid=5, gid=9, job=0))


def test_access_info() -> None:
    assert access_info(CLAIMS) == AccessInfo(42, 0xDEAD_BEEF, 0xFFFF_FFFF, 7)


def test_generate_key_then_load(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key(path)
    assert len(key) >= 32 and key == path.read_bytes()
    generate_key(path)  # replaced atomically: no temporary file left behind
    assert load_key(path) != key
    assert [p.name for p in tmp_path.iterdir()] == ["token.key"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_load_key_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token.key"
    generate_key(path)
    path.chmod(mode)
    with pytest.raises(PermissionError, match=re.escape(str(path))):
        load_key(path)


def test_load_key_refuses_short_key(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    path.write_bytes(b"x" * 31)
    path.chmod(0o600)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_key(path)


def test_load_key_refuses_foreign_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token.key"
    generate_key(path)
    if os.getuid() == 0:
        os.chown(path, 65534, -1)
    else:
        monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 1)
    with pytest.raises(PermissionError, match="owned by"):
        load_key(path)


def test_load_key_refuses_non_regular_file(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    with pytest.raises(ValueError, match="regular"):
        load_key(tmp_path)


FUZZ = settings(max_examples=size(100, 15_000), deadline=None)


@FUZZ
@given(st.text(max_size=MAX_TOKEN_LEN + 10) | st.text().map(lambda s: "drc1." + s))
@example("drc1.AAAA.AAAA")
def test_fuzz_arbitrary_text_only_bad_token(text: str) -> None:
    fuzzed("tokens")
    refused(text)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete"]),
            st.integers(min_value=0, max_value=len(TOKEN)),
            st.characters() | st.sampled_from("A_-.=0"),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_mutated_tokens(edits: list[tuple[str, int, str]]) -> None:
    """Any change is refused; only an edit that restores the same text yields the same claims."""
    fuzzed("tokens")
    token = TOKEN
    for op, pos, ch in edits:
        pos = min(pos, len(token))
        if op == "insert":
            token = token[:pos] + ch + token[pos:]
        elif op == "delete":
            token = token[:pos] + token[pos + 1 :]
        else:
            token = token[:pos] + ch + token[pos + 1 :]
    if token == TOKEN:
        assert verify_token(KEY, token, now=NOW) == CLAIMS
    else:
        refused(token)


@FUZZ
@given(st.binary(max_size=200) | st.binary(max_size=40).map(lambda tail: GOOD[:HEAD] + tail))
@example(GOOD)
def test_fuzz_signed_arbitrary_payload(payload: bytes) -> None:
    """Behind a valid MAC (a leaked key, an issuer bug) the decoder still only says BAD_TOKEN."""
    fuzzed("tokens")
    try:
        claims = verify_token(KEY, sign(payload), now=NOW)
    except DrcError as e:
        assert e.code is Code.BAD_TOKEN
    else:
        assert all(0 <= t.id <= 0xFFFF_FFFF for t in claims.grants)
        assert claims.issued - CLOCK_SKEW <= NOW < claims.expires
