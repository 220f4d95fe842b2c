"""The wire forms of the caller and the credential, one place for both transports.

A :class:`~drc.core.model.Caller` travels from DRCC to DRCS as an ``a{sv}`` dictionary
(:func:`caller_to_wire` / :func:`caller_from_wire`); a credential comes back as another
(:func:`credential_to_wire`), from which DRCC keeps the :class:`~drc.core.model.AccessInfo`
(:func:`access_from_wire`); applications get that as D-Bus ``uuuu``
(:func:`access_to_tuple` / :func:`access_from_tuple`). Plain values only: the bus and the
DRC link (JSON) carry the same dictionaries, so no transport code is needed here.

What arrives is checked: a caller dictionary is a node daemon's claim about the process it
speaks for, so every field is validated before it becomes a Caller.
"""

from __future__ import annotations

from typing import Any

from drc.core.errors import einval
from drc.core.model import AccessInfo, Caller, Credential, Holder, HolderKind, check_uint32

MAX_GIDS = 65536


def node_name(node: object) -> str:
    """A node name as a node daemon sends it; EINVAL unless printable and 1..255 long."""
    if not isinstance(node, str) or not 0 < len(node) <= 255 or not node.isprintable():
        raise einval("node must be a printable name of 1..255 characters")
    return node


# -- the caller --------------------------------------------------------------------------------


def caller_to_wire(caller: Caller, node: str) -> dict[str, Any]:
    """What DRCC sends for the application process it speaks for."""
    return {
        "uid": caller.uid,
        "gid": caller.gid,
        "gids": sorted(caller.gids),
        "pid": caller.pid,
        "job": caller.job,
        "node": node,
        "start": caller.holder.start,
    }


def caller_from_wire(wire: dict[str, Any]) -> Caller:
    """The application process a node daemon speaks for, as that daemon identified it."""
    if not isinstance(wire, dict):
        raise einval("caller must be a dictionary")
    try:
        uid, gid = check_uint32("uid", wire["uid"]), check_uint32("gid", wire["gid"])
        gids = wire.get("gids", [])
        if not isinstance(gids, list) or len(gids) > MAX_GIDS:
            raise einval(f"gids must be a list of at most {MAX_GIDS} gids")
        pid, job = check_uint32("pid", wire.get("pid", 0)), check_uint32("job", wire["job"])
        node = node_name(wire["node"])
        start = wire.get("start", 0)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < 2**64:
            raise einval("start must be a process start time (uint64)")
    except KeyError as e:
        raise einval(f"caller is missing {e.args[0]!r}") from None
    if job:
        holder = Holder.for_job(node, job)
    elif pid:
        holder = Holder.for_process(node, pid, start)
    else:
        raise einval("caller needs a job or a pid")
    return Caller(
        uid=uid,
        gid=gid,
        gids=frozenset(check_uint32("gid", g) for g in gids),
        pid=pid,
        job=job,
        holder=holder,
    )


# -- the credential ----------------------------------------------------------------------------


def credential_to_wire(c: Credential) -> dict[str, Any]:
    """A credential as ``a{sv}``: the fields of ``drccli list`` and more. ``refs`` is exact
    in get/list answers; an access answer leaves it 0 (not counted, see
    :meth:`drc.core.service.CredentialService.access_credential`)."""
    r = c.resources
    return {
        "credential": c.id,
        "uid": c.uid,
        "gid": c.gid,
        "wlm": c.wlm,
        "flags": int(c.flags),
        "state": c.state.value,
        "provider": r.provider,
        "cookie1": r.cookie1,
        "cookie2": r.cookie2,
        "ptag": r.ptag,
        "refs": c.refs,
        "epoch": c.epoch,
        "created": c.created,
        "grants": [str(g) for g in c.grants],
        **({"vni": r.cookie1} if r.provider == "slingshot" else {}),
    }


def holder_to_wire(h: Holder) -> dict[str, Any]:
    """A reference's holder: a job or a process on a node, or a uid's persistent pin."""
    if h.kind is HolderKind.JOB:
        return {"kind": h.kind.value, "node": h.node, "job": h.job}
    if h.kind is HolderKind.PROCESS:
        return {"kind": h.kind.value, "node": h.node, "pid": h.pid}
    return {"kind": h.kind.value, "uid": h.uid}


def listed_to_wire(c: Credential, holders: list[Holder]) -> dict[str, Any]:
    """What List and Show answer: the credential and who holds its references."""
    return {**credential_to_wire(c), "holders": [holder_to_wire(h) for h in holders]}


def access_from_wire(cred: dict[str, Any]) -> AccessInfo:
    """The resources an application gets, from a credential dictionary DRCS answered."""
    return AccessInfo(cred["credential"], cred["cookie1"], cred["cookie2"], cred["ptag"])


def access_to_tuple(info: AccessInfo) -> tuple[int, int, int, int]:
    """An access answer as D-Bus ``uuuu`` (what libdrc's ``drc_access`` reads)."""
    return (info.credential, info.cookie1, info.cookie2, info.ptag)


def access_from_tuple(out: list[int] | tuple[int, ...]) -> AccessInfo:
    """``uuuu`` back into an AccessInfo (the Python client)."""
    credential, cookie1, cookie2, ptag = out
    return AccessInfo(credential, cookie1, cookie2, ptag)
