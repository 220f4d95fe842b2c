"""drc.conf's ``host:port``, read by one function for the DRC link and the metrics."""

from __future__ import annotations

import pytest

from drc.address import split_host_port


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("svc1:6820", ("svc1", 6820)),
        ("[::1]:6820", ("::1", 6820)),
        (" 10.0.0.1:1 ", ("10.0.0.1", 1)),
    ],
)
def test_a_link_address_is_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert split_host_port(value, "[link] servers") == expected


@pytest.mark.parametrize("value", ["svc2", "6820", ":6820", "svc:", "svc:x", "svc:0", "svc:65536"])
def test_a_bad_link_address_names_the_key(value: str) -> None:
    with pytest.raises(ValueError, match=r"^\[link\] servers"):
        split_host_port(value, "[link] servers")


def test_port_zero_only_for_a_listener_nobody_must_find() -> None:
    assert split_host_port("127.0.0.1:0", "[link] listen", any_port=True) == ("127.0.0.1", 0)
    assert split_host_port("9820", "[metrics] drcs_listen", bare_port="127.0.0.1") == (
        "127.0.0.1",
        9820,
    )
