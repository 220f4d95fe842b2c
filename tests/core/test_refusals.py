"""RefusalAudit: one line per refusal up to the rate, the rest counted and reported."""

from __future__ import annotations

import logging

from drc.core.errors import Code, DrcError
from drc.export import exported
from drc.node.exports import NodeExports
from drc.nodeverbs import NodeVerbs
from drc.refusals import RefusalAudit, credential_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_then_suppressed_count(caplog):
    clock = Clock()
    audit = RefusalAudit(rate=2.0, burst=3, clock=clock)
    error = DrcError(Code.EPERM, 'uid 7 may not\n"x"')
    with caplog.at_level(logging.INFO, logger="drc.audit"):
        written = [audit.record("Access", 7, 0, "n1", 4, error) for _ in range(10)]
        assert written == [True] * 3 + [False] * 7
        clock.now += 1.0  # two tokens
        assert audit.record("Grant", 7, 12, "n1", None, DrcError(Code.EFLAGS, "bad")) is True
    lines = [r.getMessage() for r in caplog.records if r.name == "drc.audit"]
    assert len(lines) == 4
    assert lines[0] == (
        "refused verb=Access uid=7 job=0 node=n1 credential=4 code=DRC_EPERM"
        " reason=\"uid 7 may not 'x'\""
    )
    assert lines[3].endswith('code=DRC_EFLAGS reason="bad" suppressed=7')
    assert audit.counters() == {
        "refused_EPERM": 10,
        "refused_EFLAGS": 1,
        "refused_lines_suppressed": 7,
    }


def test_credential_only_for_verbs_that_take_one():
    """Read from the declarations: AccessSlingshot (once missing from a hand-kept list) and
    the node verbs (caller first) name theirs too."""
    assert credential_of(exported(NodeExports.access), [4, 0]) == 4
    assert credential_of(exported(NodeExports.access_slingshot), [5, 0]) == 5
    assert credential_of(exported(NodeVerbs.node_access), [{"uid": 1}, 6]) == 6
    assert credential_of(exported(NodeExports.access_with_token), ["tok", 0]) is None
    assert credential_of(exported(NodeExports.acquire), [1]) is None
    assert credential_of(exported(NodeExports.grant), []) is None
