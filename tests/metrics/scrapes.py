"""Reading scrapes in tests: one sample's value, and waiting (bounded) for one to change."""

from __future__ import annotations

import time
from collections.abc import Callable


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when the labelled child does not exist yet)."""
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def eventually(read: Callable[[], float], expected: float, timeout: float = 10.0) -> float:
    """Poll ``read`` until it returns ``expected`` (bounded); the last value read."""
    deadline = time.monotonic() + timeout
    got = read()
    while got != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        got = read()
    return got
