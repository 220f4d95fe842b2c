"""What a node remembers: associations (credential, holder) it may answer alone, and epochs.

An association is cached after DRCS (or a valid token) admitted it and dropped when it is
released, its job ends, its process exits or DRCS says the credential was freed. Revocations
don't touch associations (a revoke blocks *new* access only) but raise the epoch below which
tokens are refused.

The associations are indexed by credential and by holder as well as by the pair: a free, a
job's or a process's end, a job's credential and a FLEX check each touch only their own
associations, so a node holding thousands pays for none of the others'.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from drc.core.model import FREED, AccessInfo, Holder, HolderKind


@dataclass(frozen=True)
class Entry:
    info: AccessInfo
    flags: int
    epoch: int


class NodeCache:
    def __init__(self) -> None:
        #: The associations by (credential, holder); read it, change it through the methods.
        self.entries: dict[tuple[int, Holder], Entry] = {}
        self.epochs: dict[int, int] = {}
        self.counters: Counter[str] = Counter()
        self._holders: dict[int, dict[Holder, None]] = {}  # by credential, in arrival order
        self._credentials: dict[Holder, set[int]] = {}  # by holder

    def get(self, credential: int, holder: Holder) -> Entry | None:
        return self.entries.get((credential, holder))

    def put(self, credential: int, holder: Holder, entry: Entry) -> None:
        if self.epochs.get(credential) == FREED:
            return  # freed while the answer travelled: never cache a dead credential
        self.entries[(credential, holder)] = entry
        self._holders.setdefault(credential, {})[holder] = None
        self._credentials.setdefault(holder, set()).add(credential)
        self.epochs[credential] = max(self.epochs.get(credential, 0), entry.epoch)

    def drop(self, credential: int, holder: Holder) -> None:
        if self.entries.pop((credential, holder), None) is None:
            return
        holders = self._holders[credential]
        del holders[holder]
        if not holders:
            del self._holders[credential]
        credentials = self._credentials[holder]
        credentials.discard(credential)
        if not credentials:
            del self._credentials[holder]

    def drop_where(self, keep: Callable[[int, Holder], bool]) -> list[tuple[int, Holder]]:
        """Drop every association ``keep`` refuses (a scan of them all: for the rare sweeps)."""
        gone = [key for key in self.entries if not keep(*key)]
        for key in gone:
            self.drop(*key)
        return gone

    def _drop_holders(self, gone: Callable[[Holder], bool]) -> None:
        for holder in [h for h in self._credentials if gone(h)]:
            for credential in list(self._credentials.get(holder, ())):
                self.drop(credential, holder)

    def drop_job(self, job: int) -> None:
        self._drop_holders(lambda h: h.kind is HolderKind.JOB and h.job == job)

    def drop_process(self, pid: int, start: int) -> None:
        self._drop_holders(
            lambda h: h.kind is HolderKind.PROCESS and (h.pid, h.start) == (pid, start)
        )

    def learn_epoch(self, credential: int, epoch: int) -> None:
        """A revocation or free announced by DRCS."""
        self.epochs[credential] = max(self.epochs.get(credential, 0), epoch)
        if epoch == FREED:
            for holder in list(self._holders.get(credential, ())):
                self.drop(credential, holder)

    def epoch_known(self, credential: int) -> bool:
        """Whether DRCS told this node the credential's epoch (an answer, the feed, a resync)
        since the node started; the feed keeps a known epoch current from then on."""
        return credential in self.epochs

    def token_epoch_current(self, credential: int, epoch: int) -> bool:
        """A token's epoch against the known one; an unknown credential is never current."""
        return credential in self.epochs and epoch >= self.epochs[credential]

    def other_tenant(self, credential: int, holder: Holder) -> Holder | None:
        """Another job or process already using ``credential`` on this node (the first that
        came, as long as it stays)."""
        for other in self._holders.get(credential, ()):
            if other != holder:
                return other
        return None

    def lowest_credential(self, holder: Holder) -> int:
        """The lowest credential ``holder`` has an association with here; 0 when none."""
        return min(self._credentials.get(holder, ()), default=0)

    def known_credentials(self) -> set[int]:
        return set(self._holders) | {c for c, e in self.epochs.items() if e != FREED}
