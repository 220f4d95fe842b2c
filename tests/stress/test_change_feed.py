"""The change feed's log answers each follower with exactly the changes it has not seen."""

from __future__ import annotations

from drc.server.changes import FREED, ChangeLog


def test_since_answers_only_newer_changes_in_order_even_from_a_full_log():
    log = ChangeLog(keep=1000)
    for cred in range(1, 2501):  # more than the log keeps: the oldest aged out
        log.record("freed" if cred % 2 else "revoked", cred, 7)
    assert log.since(log.seq) == (True, [])
    assert log.since(log.seq - 2) == (True, [(2499, FREED), (2500, 7)])
    complete, changes = log.since(1500)  # the oldest change still kept
    assert complete and [c for c, _ in changes] == list(range(1501, 2501))
    complete, changes = log.since(10)  # aged out: the follower must resynchronise
    assert not complete and len(changes) == 1000
