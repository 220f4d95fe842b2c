"""What a node remembers: associations (credential, holder) it may answer alone, and epochs.

An association is cached after DRCS (or a valid token) admitted it and dropped when it is
released, its job ends, its process exits or DRCS says the credential was freed. Revocations
don't touch associations (a revoke blocks *new* access only) but raise the epoch below which
tokens are refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from drc.core.model import FREED, AccessInfo, Holder, HolderKind


@dataclass(frozen=True)
class Entry:
    info: AccessInfo
    flags: int
    epoch: int


class NodeCache:
    def __init__(self) -> None:
        self.entries: dict[tuple[int, Holder], Entry] = {}
        self.epochs: dict[int, int] = {}
        self.counters: Counter[str] = Counter()

    def get(self, credential: int, holder: Holder) -> Entry | None:
        return self.entries.get((credential, holder))

    def put(self, credential: int, holder: Holder, entry: Entry) -> None:
        if self.epochs.get(credential) == FREED:
            return  # freed while the answer travelled: never cache a dead credential
        self.entries[(credential, holder)] = entry
        self.epochs[credential] = max(self.epochs.get(credential, 0), entry.epoch)

    def drop(self, credential: int, holder: Holder) -> None:
        self.entries.pop((credential, holder), None)

    def drop_where(self, keep) -> list[tuple[int, Holder]]:
        gone = [key for key in self.entries if not keep(*key)]
        for key in gone:
            del self.entries[key]
        return gone

    def drop_job(self, job: int) -> None:
        self.drop_where(lambda _c, h: not (h.kind is HolderKind.JOB and h.job == job))

    def drop_process(self, pid: int, start: int) -> None:
        self.drop_where(
            lambda _c, h: not (h.kind is HolderKind.PROCESS and (h.pid, h.start) == (pid, start))
        )

    def learn_epoch(self, credential: int, epoch: int) -> None:
        """A revocation or free announced by DRCS."""
        self.epochs[credential] = max(self.epochs.get(credential, 0), epoch)
        if epoch == FREED:
            self.drop_where(lambda c, _h: c != credential)

    def epoch_known(self, credential: int) -> bool:
        """Whether DRCS told this node the credential's epoch (an answer, the feed, a resync)
        since the node started; the feed keeps a known epoch current from then on."""
        return credential in self.epochs

    def token_epoch_current(self, credential: int, epoch: int) -> bool:
        """A token's epoch against the known one; an unknown credential is never current."""
        return credential in self.epochs and epoch >= self.epochs[credential]

    def other_tenant(self, credential: int, holder: Holder) -> Holder | None:
        """Another job or process already using ``credential`` on this node."""
        for cred, other in self.entries:
            if cred == credential and other != holder:
                return other
        return None

    def known_credentials(self) -> set[int]:
        return {c for c, _ in self.entries} | {c for c, e in self.epochs.items() if e != FREED}
