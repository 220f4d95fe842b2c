"""The integer bound of a link payload (64 characters) holds whichever way the payload is
parsed: at C speed when no run of 64 digits is in it, with the per-integer check otherwise."""

from __future__ import annotations

import pytest

from drc.link.protocol import MAX_INT_CHARS, FrameError, Request


def _request(value: bytes) -> bytes:
    return b'{"id":1,"method":"NodeAccess","args":[' + value + b"]}"


@pytest.mark.parametrize("digits", [1, 20, MAX_INT_CHARS])
def test_integers_up_to_the_bound_are_read_exactly(digits: int) -> None:
    literal = b"7" * digits
    assert Request.from_payload(_request(literal)).args == [int(literal)]
    negative = b"-" + literal[: MAX_INT_CHARS - 1]  # the sign counts: 64 characters at most
    assert Request.from_payload(_request(negative)).args == [int(negative)]


@pytest.mark.parametrize("literal", [b"9" * (MAX_INT_CHARS + 1), b"-" + b"9" * MAX_INT_CHARS])
def test_an_integer_past_the_bound_is_refused(literal: bytes) -> None:
    with pytest.raises(FrameError, match=f"integer of {MAX_INT_CHARS + 1} characters"):
        Request.from_payload(_request(literal))


def test_long_digit_runs_in_strings_and_fractions_are_no_integers() -> None:
    digits = b"1" * (3 * MAX_INT_CHARS)
    args = Request.from_payload(_request(b'"' + digits + b'",0.' + digits)).args
    assert args[0] == digits.decode() and 0.1 < args[1] < 0.2
