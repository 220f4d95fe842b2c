"""``drccli``: the DRC admin command line (acquire, release, grant, revoke, list, limit, pins …).

It talks to DRCS (``org.drc.Server``) over the system bus — or the bus named by ``--bus`` or
``DBUS_SYSTEM_BUS_ADDRESS`` — as the invoking user; DRCS decides what that user may do.
Credentials acquired here are held by a pin of your uid until ``drccli release ID``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from drc.bus import default_bus_address
from drc.cli.common import (
    add_target,
    add_version,
    document_exit_status,
    gid_of,
    table,
    target_of,
    uid_of,
)
from drc.cli.exits import UsageError, documented, run
from drc.core.errors import Code, DrcError
from drc.core.model import Flags, LimitScope, State
from drc.serverclient import ServerProxy

LIST_COLUMNS = (
    "Credential",
    "Sys_Id",
    "uid",
    "gid",
    "wlmid",
    "Cookie1",
    "Cookie2",
    "State",
    "Refs",
)

#: drccli's exit statuses, for scripts: the --help epilog and the EXIT STATUS section of
#: drccli(1) are both written from the one table every drc command shares.
EXIT_STATUS = tuple(documented("drccli"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drccli",
        description="Manage Dynamic RDMA Credentials: acquire a managed network credential, "
        "grant it to a uid, gid or job, list, limit and release.",
    )
    document_exit_status(parser, "drccli")
    add_version(parser)
    parser.add_argument(
        "--bus",
        metavar="ADDRESS",
        help="D-Bus address of DRCS (default: $DBUS_SYSTEM_BUS_ADDRESS, else the system bus)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "acquire",
        help="create a credential owned by you; prints its id",
        description="Create a credential owned by you and print its id. It is "
        "held by a pin of your uid until you run 'drccli release ID'.",
    )
    p.add_argument(
        "--flex",
        action="store_true",
        help="FLEX (node-insecure): several jobs may use it on one node",
    )
    p.add_argument(
        "--persistent",
        action="store_true",
        help="survive job end, DRCS restart and reboots (admin policy decides who)",
    )

    p = sub.add_parser(
        "release",
        help="drop your reference (the owner's release ends it)",
        description="Drop your reference to a credential. The owner's (or an "
        "admin's) release also drops the pin; the resources return to the pool "
        "when the last reference is gone.",
    )
    p.add_argument("credential", type=int, help="credential id")

    for verb, doc in (
        ("grant", "allow a uid, gid or job to access a credential"),
        ("revoke", "stop new access by a uid, gid or job (references stay)"),
    ):
        p = sub.add_parser(verb, help=doc, description=doc[0].upper() + doc[1:] + ".")
        p.add_argument("credential", type=int, help="credential id")
        add_target(p, "--wlmid", ("UID", "GID", "WLMID"))

    p = sub.add_parser(
        "list",
        help="list credentials (all of them for admins)",
        description="List credentials: id, system id (ptag), owner uid/gid/job, "
        "cookies, state and references. Admins see all credentials, others "
        "those they own or may access. With -c, also who holds each reference "
        "(a job or a process on a node, or a uid's persistent pin): what keeps a "
        "RELEASED credential alive.",
    )
    p.add_argument(
        "-c", "--credential", type=int, help="show only this credential, with its holders"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON: a list of objects (with their holders), with or without -c",
    )
    p.add_argument("--uid", metavar="UID", help="only credentials owned by this user (name or uid)")
    p.add_argument("--job", type=int, metavar="WLMID", help="only credentials of this job")
    p.add_argument(
        "--state",
        type=str.upper,
        choices=[s.value for s in State],
        help="only credentials in this state",
    )

    p = sub.add_parser(
        "limit",
        help="show or set limits on live credentials",
        description="Without a scope, show the limits in force. With one, set "
        "it to VALUE ('none' removes it). Every limit set is checked on its own: "
        "a specific uid/gid/job limit never lifts a default.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--global", dest="scope", action="store_const", const="global", help="all live credentials"
    )
    scope.add_argument(
        "--user-default",
        dest="scope",
        action="store_const",
        const="user-default",
        help="per user, for every user",
    )
    scope.add_argument(
        "--group-default",
        dest="scope",
        action="store_const",
        const="group-default",
        help="per group, for every group",
    )
    scope.add_argument(
        "--job-default",
        dest="scope",
        action="store_const",
        const="job-default",
        help="per job, for every job",
    )
    scope.add_argument("-u", "--uid", metavar="UID", help="for one user")
    scope.add_argument("-g", "--gid", metavar="GID", help="for one group")
    scope.add_argument("-j", "--wlmid", metavar="WLMID", type=int, help="for one job")
    p.add_argument("value", nargs="?", help="maximum number of live credentials, or 'none'")

    p = sub.add_parser(
        "status",
        help="DRCS health: store, pool usage, nodes, every DRCS, limits (admins)",
        description="Show whether DRCS answers, its store backend and schema version, pool "
        "usage, how many node daemons follow a change feed (of every reachable DRCS, and of this "
        "one) and are known, every DRCS of [link] servers "
        "(reachable or not, which one answered), which DRCS each node follows, and the "
        "limits in force. Admins only.",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (the same facts, for scripts and monitoring)",
    )

    p = sub.add_parser(
        "pins",
        help="list pins: credentials held with no job or process behind them (admins)",
        description="List every pin: the uid holding it, the credential, its owner and "
        "state. A pin is what 'drccli acquire' and other calls made straight on DRCS's bus "
        "hold; it lasts until that uid releases the credential or an admin runs 'drccli "
        "unpin', and it counts against the pinning user's limits. Admins only.",
    )
    p.add_argument("-u", "--uid", metavar="UID", help="only this user's pins (name or uid)")
    p.add_argument("--json", action="store_true", help="print JSON: a list of objects")

    p = sub.add_parser(
        "unpin",
        help="drop every pin of a user (admins)",
        description="Drop every pin of USER, for a user whose pins hold the pool: "
        "credentials nothing else holds are freed (their ids are printed), and those left "
        "without an owner's job or pin go to RELEASED (no new access), as after a release. "
        "Admins only.",
    )
    p.add_argument("user", metavar="USER", help="user name or uid")

    p = sub.add_parser(
        "expire",
        help="tell DRCS that jobs ended (admins)",
        description="Drop every reference of the given jobs on every node, as "
        "the job epilog does. Idempotent. Admins only.",
    )
    p.add_argument("jobs", type=int, nargs="+", metavar="WLMID", help="job (WLM) ids")
    return parser


_TARGET_FLAGS = {"uid": Flags.TARGET_UID, "gid": Flags.TARGET_GID, "wlm": Flags.TARGET_WLM}


def _target(args: argparse.Namespace) -> tuple[int, int]:
    kind, target = target_of(args)
    return target, int(_TARGET_FLAGS[kind])


def _list(server: ServerProxy, args: argparse.Namespace) -> int:
    if args.credential is not None:
        try:
            creds = [server.show(args.credential)]
        except DrcError as e:
            if e.code is Code.CRED_NOT_FOUND and not args.json:
                print("Credential Not Found")
            raise
    else:
        creds = _filtered(server.list(), args)
    if args.json:
        print(json.dumps(creds, indent=2))
        return 0
    rows = [
        (
            c["credential"],
            c["ptag"],
            c["uid"],
            c["gid"],
            c["wlm"],
            c["cookie1"],
            c["cookie2"],
            c["state"],
            c["refs"],
        )
        for c in creds
    ]
    if any("vni" in c for c in creds):  # Slingshot: the VNI each credential owns
        rows = [(*row, c.get("vni", "-")) for row, c in zip(rows, creds, strict=True)]
        print(table((*LIST_COLUMNS, "VNI"), rows))
    else:
        print(table(LIST_COLUMNS, rows))
    if args.credential is not None:
        for c in creds:
            print(f"Holders of credential {c['credential']}:")
            for h in c.get("holders", []):
                print(f"  {_holder(h)}")
            if not c.get("holders"):
                print("  none")
    return 0


def _filtered(creds: list[dict], args: argparse.Namespace) -> list[dict]:
    """``list --uid/--job/--state``: every filter given must match."""
    uid = uid_of(args.uid) if args.uid is not None else None
    return [
        c
        for c in creds
        if (uid is None or c["uid"] == uid)
        and (args.job is None or c["wlm"] == args.job)
        and (args.state is None or c["state"] == args.state)
    ]


def _holder(h: dict) -> str:
    if h["kind"] == "job":
        return f"job {h['job']} on node {h['node']}"
    if h["kind"] == "process":
        return f"process {h['pid']} (outside any job) on node {h['node']}"
    return f"persistent pin of uid {h['uid']}"


def _limit(server: ServerProxy, args: argparse.Namespace) -> int:
    if args.uid is not None:
        scope, id = LimitScope.UID.value, uid_of(args.uid)
    elif args.gid is not None:
        scope, id = LimitScope.GID.value, gid_of(args.gid)
    elif args.wlmid is not None:
        scope, id = LimitScope.JOB.value, args.wlmid
    else:
        scope, id = args.scope, 0
    if scope is None:
        if args.value is not None:
            raise UsageError("limit: give a scope (--global, -u UID …) before VALUE")
        limits = server.limits()
        rows = [(s, i if LimitScope(s).takes_id else "-", v) for s, i, v in limits]
        print(table(("Scope", "Id", "Limit"), rows) if rows else "No limits set.")
        if not any(s == LimitScope.USER_DEFAULT.value for s, _i, _v in limits):
            print("No user-default set: drc.conf [server] user_limit applies (drccli status).")
        return 0
    if args.value is None:
        raise UsageError("limit: missing VALUE (a number, or 'none' to remove the limit)")
    if args.value.lower() in ("none", "unlimited"):
        server.clear_limit(scope, id)
    elif args.value.isdigit():
        server.set_limit(scope, id, int(args.value))
    else:
        raise UsageError(f"limit: VALUE must be a number or 'none', got {args.value!r}")
    return 0


def _pins(server: ServerProxy, args: argparse.Namespace) -> int:
    uid = uid_of(args.uid) if args.uid is not None else None
    pins = [p for p in server.pins() if uid is None or p[0] == uid]
    if args.json:
        keys = ("uid", "credential", "owner", "state")
        print(json.dumps([dict(zip(keys, p, strict=True)) for p in pins], indent=2))
        return 0
    if not pins:
        print("No pins.")
        return 0
    print(table(("Uid", "Credential", "Owner", "State"), pins))
    users = sorted({p[0] for p in pins})
    print(f"{len(pins)} pin(s) of {len(users)} user(s)")
    return 0


def _nodes_line(info: dict, servers: list[dict]) -> str:
    """How many nodes follow a change feed: this DRCS's, or (several DRCS) every reachable
    one's, so three nodes on two servers read 3, not this server's 2."""
    known = f"{info['nodes_known']} known"
    if len(servers) <= 1:
        return f"{info['nodes_connected']} connected (following DRCS's change feed), {known}"
    reachable = [e for e in servers if e["reachable"]]
    total = sum(e.get("nodes_connected", 0) for e in reachable)
    return (
        f"{total} connected to {len(reachable)} of {len(servers)} DRCS "
        f"({info['nodes_connected']} following this one), {known}"
    )


def _cluster_lines(servers: list[dict], info: dict) -> None:
    """Every DRCS (reachable or not; which one answered), and which DRCS each node follows."""
    for entry in servers:
        state = "reachable" if entry["reachable"] else "UNREACHABLE"
        answered = " (answered this status)" if entry.get("this") else ""
        print(f"Server:      {entry['server']}  {state}{answered}: {entry['detail']}")
    for entry in info.get("nodes_following") or []:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["since"]))
        print(f"Follows:     {entry['node']} -> {entry['server']} (since {since})")


def _status(server: ServerProxy, as_json: bool = False) -> int:
    info = server.status()
    servers = server.servers()
    if as_json:
        address = server.address or default_bus_address()
        info["servers"] = servers
        print(json.dumps({"reachable": True, "bus": address, **info}, indent=2, sort_keys=True))
        return 0
    store, pool = info["store"], info["provider"]
    print(f"DRCS:        reachable on {server.address or default_bus_address()}")
    print(f"Store:       {store['backend']} {store['database']} (schema {store['schema']})")
    if not store.get("answering", True):
        since = time.strftime("%H:%M:%S", time.localtime(store["since"]))
        read = store.get("read_at")
        print(
            f"             NOT ANSWERING since {since} ({store['unanswered_seconds']:.1f} s: "
            f"{store['detail']}); DRCS refuses changes until it answers. Figures below are "
            + (f"from {time.strftime('%H:%M:%S', time.localtime(read))}." if read else "unknown.")
        )
    if "cookie_range" in pool:
        low, high = pool["cookie_range"]
        print(f"Provider:    {pool['name']} ptag {pool['ptag']} cookies {low}..{high}")
    elif "vni_range" in pool:  # slingshot: one VNI per credential
        low, high = pool["vni_range"]
        print(
            f"Provider:    {pool['name']} VNIs {low}..{high}, quarantine {pool['quarantine']:.0f} s"
        )
    else:  # alps: one protection domain per credential
        print(f"Provider:    {pool['name']} pdomains {pool.get('pdomain_prefix', '')}<id>")
    cleaning = f", {pool['in_cleanup']} waiting for node cleanup" if "in_cleanup" in pool else ""
    print(
        f"Pool usage:  {pool['allocated']} allocated{cleaning}, {pool['free']} free "
        f"of {pool['capacity']}"
    )
    print(f"Credentials: {info['credentials']} live, {info['references']} references")
    print(f"Nodes:       {_nodes_line(info, servers)}")
    _cluster_lines(servers, info)
    print("Limits:      " + ("; ".join(info["limits"]) or "none"))
    pending = info.get("pending_cleanups") or []
    if pending or "cookie_range" not in pool:
        print(f"Cleanups:    {len(pending) or 'none'} pending")
    for p in pending:  # external objects of freed credentials DRCS still has to remove
        print(
            f"  {p['object']} of freed credential {p['credential']}: {p['attempts']} failed "
            f"attempt(s), next in {max(0, int(p['next_try'] - time.time()))} s: {p['last_error']}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        server = ServerProxy(args.bus)
        try:
            if args.command == "acquire":
                flags = (Flags.FLEX_CREDENTIAL if args.flex else 0) | (
                    Flags.PERSISTENT if args.persistent else 0
                )
                print(server.acquire(int(flags)))
            elif args.command == "release":
                freed = server.release(args.credential)
                print(
                    f"released credential {args.credential}"
                    + ("; its resources returned to the pool" if freed else "")
                )
            elif args.command in ("grant", "revoke"):
                target, flags = _target(args)
                getattr(server, args.command)(args.credential, target, flags)
                kind = "uid" if args.uid else "gid" if args.gid else "job"
                done = "granted to" if args.command == "grant" else "revoked from"
                print(f"credential {args.credential} {done} {kind} {target}")
            elif args.command == "list":
                return _list(server, args)
            elif args.command == "limit":
                return _limit(server, args)
            elif args.command == "status":
                return _status(server, args.json)
            elif args.command == "pins":
                return _pins(server, args)
            elif args.command == "unpin":
                uid = uid_of(args.user)
                freed = server.expire_pins(uid)
                print(
                    f"dropped every pin of uid {uid}; freed credential(s): "
                    f"{' '.join(map(str, freed)) or 'none'}"
                )
            elif args.command == "expire":
                freed = server.expire_jobs(args.jobs)
                print(
                    f"expired job(s) {' '.join(map(str, args.jobs))}; freed credential(s): "
                    f"{' '.join(map(str, freed)) or 'none'}"
                )
            return 0
        finally:
            server.close()

    return run("drccli", body)


if __name__ == "__main__":
    sys.exit(main())
