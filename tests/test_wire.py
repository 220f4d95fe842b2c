"""The wire forms of the caller and the credential: what DRCC sends is what DRCS reads back,
through JSON (the DRC link) and through the bus's values alike. No bus, no root."""

from __future__ import annotations

import json
from typing import Any

import pytest

from drc.bus.values import to_dbus, unwrap
from drc.core.errors import Code, DrcError
from drc.core.model import (
    AccessInfo,
    Caller,
    Credential,
    Flags,
    Holder,
    Resources,
    State,
    Target,
    TargetKind,
)
from drc.wire import (
    access_from_tuple,
    access_from_wire,
    access_to_tuple,
    caller_from_wire,
    caller_to_wire,
    credential_to_wire,
    listed_to_wire,
)

IN_JOB = Caller(
    uid=1000, gid=100, gids=frozenset({100, 27}), pid=4242, job=7, holder=Holder.for_job("n1", 7)
)
OUTSIDE = Caller(
    uid=1001, gid=101, gids=frozenset(), pid=99, holder=Holder.for_process("n1", 99, 123456789)
)
CRED = Credential(
    id=3,
    uid=1000,
    gid=100,
    wlm=7,
    flags=Flags.FLEX_CREDENTIAL,
    state=State.ACTIVE,
    resources=Resources("slingshot", 2001, 5, 9),
    created=12.5,
    epoch=2,
    grants=(Target(TargetKind.UID, 1001),),
)


def over_the_link(value: Any) -> Any:
    return json.loads(json.dumps(value))


def over_the_bus(signature: str, value: Any) -> Any:
    return unwrap(to_dbus(signature, [value]))[0]


@pytest.mark.parametrize("carry", [over_the_link, lambda v: over_the_bus("a{sv}", v)])
@pytest.mark.parametrize("caller", [IN_JOB, OUTSIDE], ids=["job", "process"])
def test_a_caller_round_trips(caller: Caller, carry: Any) -> None:
    assert caller_from_wire(carry(caller_to_wire(caller, "n1"))) == caller


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"uid": -1}, "uid"),
        ({"node": ""}, "node"),
        ({"gids": "27"}, "gids"),
        ({"job": 0, "pid": 0}, "job or a pid"),
        ({"start": True}, "start"),
    ],
)
def test_a_bad_caller_is_refused_with_what_is_wrong(change: dict, complaint: str) -> None:
    with pytest.raises(DrcError) as err:
        caller_from_wire({**caller_to_wire(IN_JOB, "n1"), **change})
    assert err.value.code is Code.EINVAL and complaint in err.value.message
    wire = caller_to_wire(IN_JOB, "n1")
    del wire["uid"]
    with pytest.raises(DrcError, match="missing 'uid'"):
        caller_from_wire(wire)


@pytest.mark.parametrize("carry", [over_the_link, lambda v: over_the_bus("a{sv}", v)])
def test_a_credential_answer_gives_the_access_and_the_listing_fields(carry: Any) -> None:
    wire = carry(credential_to_wire(CRED))
    assert access_from_wire(wire) == AccessInfo(3, 2001, 5, 9)
    assert (wire["flags"], wire["epoch"], wire["state"]) == (
        int(Flags.FLEX_CREDENTIAL),
        2,
        "ACTIVE",
    )
    assert wire["vni"] == 2001 and wire["grants"] == ["uid:1001"]
    listed = carry(listed_to_wire(CRED, [Holder.for_job("n1", 7), Holder.pin(1000)]))
    assert listed["holders"] == [
        {"kind": "job", "node": "n1", "job": 7},
        {"kind": "pin", "uid": 1000},
    ]


def test_an_access_answer_round_trips_as_uuuu() -> None:
    info = AccessInfo(3, 2001, 5, 9)
    assert access_from_tuple(over_the_bus("(uuuu)", access_to_tuple(info))) == info
