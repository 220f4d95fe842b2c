"""Reading scrapes in tests: one sample's value, and waiting (bounded) for one to change."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from drc.embedded.polling import WaitTimeout, wait_for


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when the labelled child does not exist yet)."""
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def eventually(read: Callable[[], float], expected: float, timeout: float = 10.0) -> float:
    """Poll ``read`` until it returns ``expected`` (bounded); the last value read."""
    with contextlib.suppress(WaitTimeout):
        wait_for(lambda: read() == expected, timeout, interval=0.1)
        return expected
    return read()
