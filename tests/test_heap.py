"""DRCS's full collections walk only what survived since the last one (drc.server.heap).

Run in a child interpreter: the collector's state is process-wide and pytest's own must stay
as it was."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import gc, json, weakref
from drc.server.heap import FreezeSurvivors

gc.disable()  # only the collections below: automatic ones would change the counts
out = {}
policy = FreezeSurvivors()
pauses = []
policy.observer = pauses.append
policy.install()
policy.install()  # twice is once
out["callbacks"] = gc.callbacks.count(policy._collected)
gc.collect()
out["baseline"] = policy.baseline
out["gen2_after_full"] = len(gc.get_objects(generation=2))

class Node:
    pass

ring = []
for _ in range(100):
    node = Node()
    node.me = node  # a reference cycle: only the collector can reclaim it
    ring.append(node)
alive = [weakref.ref(node) for node in ring]
kept = [[i] for i in range(3_000)]  # long-lived objects that stay reachable
gc.collect()
out["frozen_with_kept"] = gc.get_freeze_count()
del ring, node
gc.collect()  # a partial walk: the frozen cycles are the documented price
out["cycles_left_after_partial"] = sum(ref() is not None for ref in alive)
grow = [[i] for i in range(2 * gc.get_freeze_count())]  # the frozen set doubles ...
gc.collect()
out["whole_pending"] = policy.whole
gc.collect()  # ... so this one walks the whole heap and reclaims them
out["cycles_left_after_whole"] = sum(ref() is not None for ref in alive)
out["kept_alive"] = len(kept) + len(grow) > 0
out["full"] = policy.full_collections
out["pauses"] = len(pauses)
out["pauses_positive"] = all(0 < p < 10 for p in pauses)
out["whole"] = policy.whole_collections
counts = policy.counts
for _ in range(20):  # a steady heap with churn: objects frozen, then freed ...
    churn = [[i] for i in range(policy.baseline // 4)]
    gc.collect()
    del churn
out["whole_after_churn"] = policy.whole_collections
out["counts_during_churn"] = policy.counts - counts
policy.uninstall()
out["frozen_after_uninstall"] = gc.get_freeze_count()
print(json.dumps(out))
"""


def test_survivors_are_frozen_and_cycles_among_them_reclaimed_when_the_heap_doubles():
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True
    )
    out = json.loads(done.stdout)
    assert out["callbacks"] == 1
    assert out["baseline"] > 0
    assert out["gen2_after_full"] == 0, "survivors of a full collection must be frozen"
    assert out["frozen_with_kept"] >= out["baseline"] + 3_000
    assert out["cycles_left_after_partial"] == 100
    assert out["whole_pending"] is True
    assert out["cycles_left_after_whole"] == 0
    assert out["kept_alive"]
    assert (out["full"], out["whole"]) == (5, 2)
    assert out["pauses"] == 5 and out["pauses_positive"], "every full collection is timed"
    assert out["frozen_after_uninstall"] == 0
    # ... never walks the whole heap again, and counts the frozen set only when what was
    # promoted since the last count could have doubled it: 20 collections promoting a
    # quarter of the baseline each, a count every 4 or 5 (it was every collection)
    assert out["whole_after_churn"] == 2
    assert 1 <= out["counts_during_churn"] <= 7, out["counts_during_churn"]
