"""The ``pool`` provider: cookies from an admin-reserved range, one ptag for all.

Slurm-style sites hand one cookie per credential, ALPS-style sites two. A credential takes one
numbered slot of the pool; slot ``s`` maps to ``cookies_per_credential`` consecutive cookies
``cookie_min + (s * cookies_per_credential + i) * cookie_stride``. Slots are claimed and
returned in the store inside the verb's transaction, so a cookie is never held twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from drc.core.errors import Code, DrcError
from drc.core.model import UINT32_MAX, Resources
from drc.core.ports import SlotAllocator


@dataclass(frozen=True)
class PoolProvider:
    cookie_min: int
    cookie_max: int
    cookie_stride: int = 1
    cookies_per_credential: int = 1
    ptag: int = 0
    name: str = "pool"
    #: Slots in the store only: no optional feature.
    features: ClassVar[tuple[type, ...]] = ()

    def __post_init__(self) -> None:
        if not 0 < self.cookie_min <= self.cookie_max <= UINT32_MAX:
            raise ValueError("pool: need 0 < cookie_min <= cookie_max <= 4294967295")
        if self.cookie_stride < 1:
            raise ValueError("pool: cookie_stride must be >= 1")
        if self.cookies_per_credential not in (1, 2):
            raise ValueError("pool: cookies_per_credential must be 1 (Slurm) or 2 (ALPS)")
        if not 0 <= self.ptag <= 255:
            raise ValueError("pool: ptag must be in 0..255")
        if self.capacity < 1:
            raise ValueError("pool: the cookie range holds no credential")

    @classmethod
    def from_settings(cls, settings: Mapping[str, object]) -> PoolProvider:
        return cls(**{k: v for k, v in settings.items() if k != "name"})  # type: ignore[arg-type]

    @property
    def capacity(self) -> int:
        cookies = (self.cookie_max - self.cookie_min) // self.cookie_stride + 1
        return cookies // self.cookies_per_credential

    def cookies_of(self, slot: int) -> tuple[int, int]:
        first = slot * self.cookies_per_credential
        cookie1 = self.cookie_min + first * self.cookie_stride
        cookie2 = cookie1 + self.cookie_stride if self.cookies_per_credential == 2 else 0
        return cookie1, cookie2

    def allocate(self, credential: int, slots: SlotAllocator) -> Resources:
        slot = slots.claim_slot(self.name, self.capacity)
        if slot is None:
            raise DrcError(
                Code.ENOSPC,
                f"the cookie pool is exhausted ({self.capacity} credentials in "
                f"{self.cookie_min}..{self.cookie_max})",
            )
        cookie1, cookie2 = self.cookies_of(slot)
        return Resources(self.name, cookie1, cookie2, self.ptag, data=str(slot))

    def free(self, resources: Resources, slots: SlotAllocator) -> None:
        slots.return_slot(self.name, int(resources.data))

    def describe(self, slots: SlotAllocator) -> dict[str, object]:
        used = slots.slots_in_use(self.name)
        return {
            "name": self.name,
            "ptag": self.ptag,
            "cookie_range": [self.cookie_min, self.cookie_max],
            "cookies_per_credential": self.cookies_per_credential,
            "capacity": self.capacity,
            "allocated": used,
            "free": self.capacity - used,
        }
