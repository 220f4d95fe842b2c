"""Short full garbage collections for a daemon with a large, long-lived heap.

CPython's full (generation 2) collection walks every tracked object, and the whole process
waits. A DRCS following 10,000 nodes holds some 25 objects per connection (transport, socket,
its parked long poll, ...), about 265,000 in all; one full collection then takes over 100 ms
on a small server, and churn triggers one every few seconds: every change re-parks every
node's long poll. A ``drccli expire`` or an acquire that lands in one waits that long.

:class:`FreezeSurvivors` moves the survivors of each full collection to the permanent
generation (:func:`gc.freeze`). They were just found reachable, and nearly all of them stay so
(connections, module state); the ones that die (an answered poll, a closed connection) are
freed by reference counting as before. The next full collection walks only what was promoted
since, which the generation-0 and -1 thresholds bound to tens of thousands of objects,
whatever the number of connections.

The price: a frozen object that later becomes part of an unreachable reference cycle is not
reclaimed until the permanent generation is collected. So when it has doubled since the
last whole-heap collection, it is thawed (:func:`gc.unfreeze`) and the next full collection
walks everything once, reclaims such cycles, and freezes the rest again. A heap that stays
the same size never pays that walk again; one that grows pays it each time it doubles.

Counting the frozen set (:func:`gc.get_freeze_count`) walks all of it too, so it is not done
after every full collection: what each one promotes (the collection just walked it) is added
to an upper bound, and only when that bound passes the threshold is the set counted (the
objects that died since are gone from it) to decide whether to thaw.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("drc.server")


class FreezeSurvivors:
    """Freeze what survives each full collection; thaw once the frozen set grew by ``regrow``."""

    def __init__(self, regrow: float = 2.0) -> None:
        self.regrow = regrow
        self.baseline = 0  # frozen objects after the last whole-heap collection
        self.bound = 0  # at least the frozen objects now (the dead are not subtracted)
        self.counts = 0  # walks of the frozen set to count it
        self.whole = True  # the next full collection walks the whole heap (the first does)
        self.full_collections = 0
        self.whole_collections = 0
        #: Told how long each full collection stopped the process (drcs_gc_full_seconds).
        self.observer: Callable[[float], None] | None = None
        self._started = 0.0

    def install(self) -> None:
        if self._collected not in gc.callbacks:
            gc.callbacks.append(self._collected)

    def uninstall(self) -> None:
        """Stop freezing and thaw everything (for a process that goes on without it)."""
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)
        gc.unfreeze()

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self.observer is not None:
            self.observer(time.perf_counter() - self._started)
        self.full_collections += 1
        # The collection is over and its lists are consistent: moving them is safe here.
        promoted = 0 if self.whole else len(gc.get_objects(generation=2))
        gc.freeze()
        if self.whole:
            self.whole_collections += 1
            self.whole = False
            self.baseline = self.bound = self._count()
            return
        self.bound += promoted
        if self.bound <= self.regrow * self.baseline:
            return
        self.bound = frozen = self._count()
        if frozen > self.regrow * self.baseline:
            log.debug("heap: %d frozen, %d after the last whole walk", frozen, self.baseline)
            gc.unfreeze()  # the next full collection walks everything once
            self.whole = True

    def _count(self) -> int:
        self.counts += 1
        return gc.get_freeze_count()
