"""``drc``: drc for job scripts and tasks that are not C or Python (workflows, Mochi services).

A thin front end over :mod:`drc.client`: it speaks to this node's DRCC (``org.drc.Node``) as
libdrc does, so what a task acquires or accesses is held by its job and dies with it (drccli
speaks to DRCS, and what it acquires is pinned to the uid). DRCC learns who is calling from
the kernel (bus peer credentials, then the job's cgroup or the task's registration); nothing
on this command line or in its environment names the caller. Output is stable and plain, or
JSON, or ``export`` lines for ``eval``, or the one auth key Mercury/margo take.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from typing import Any

from drc import client
from drc.cli.common import add_target, add_version, document_exit_status, man_section, target_of
from drc.cli.exits import NotInJob, UsageError, run

PROG = "drc"
#: The Slingshot variables, named as the SPANK plugin (drc_slingshot.c) sets them.
SLINGSHOT_VARS = ("VNIS", "SVC_IDS", "DEVICES")

EXAMPLES = r"""Job A, a Mercury/margo server, shares a credential with bob's job B:
.PP
.nf
.RS
cred=$(drc acquire \-\-flex)
drc grant "$cred" \-\-uid bob
key=$(drc access "$cred" \-\-auth\-key)
.RE
.fi
.PP
and job B, after reading $cred: \fBeval "$(drc access "$cred" \-\-env)"\fR.
"""

ENVIRONMENT = r""".TP
.B DBUS_SYSTEM_BUS_ADDRESS
The bus of this node's drcc (default: the system bus).
.PP
No variable names the caller: SLURM_JOB_ID and the like are never read. With \fB\-\-env\fR on
Slingshot, a SLINGSHOT_* value already set is kept as DRC_JOB_SLINGSHOT_*, as the SPANK plugin
does.
"""

SEE_ALSO = r"""\fBdrccli\fR(1) (admins; what it acquires is held by your uid),
\fBdrc\-embedded\fR(1), \fBrdmacred\fR(3) (the same verbs in C), \fBdrc\-dbus\fR(7),
\fBdrc\-slingshot\fR(8)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Acquire, grant and access Dynamic RDMA Credentials from a job's task "
        "through this node's drcc: what a task takes belongs to its job and ends with it. "
        "Prints plain 'name value' lines, or --json.",
    )
    document_exit_status(parser, PROG)
    man_section(parser, "examples", EXAMPLES)
    man_section(parser, "environment", ENVIRONMENT)
    man_section(parser, "see also", SEE_ALSO)
    add_version(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=client.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up waiting for drcc after this long, exit status 3 (default: %(default)g)",
    )
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print one JSON object")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "acquire",
        parents=[json_flag],
        help="create a credential held by your job; prints its id",
        description="Create a credential owned by you and held by your job: it is released "
        "when the job ends (or by 'drc release ID'). Prints its id.",
    )
    p.add_argument("--flex", action="store_true", help="FLEX: several jobs may use it on one node")
    p.add_argument(
        "--persistent",
        action="store_true",
        help="survive the job until 'drc release ID' (admin policy decides who may)",
    )

    for verb, doc in (
        ("grant", "allow a user, group or job to access a credential (owner only)"),
        ("revoke", "stop new access by a user, group or job (references taken stay)"),
    ):
        p = sub.add_parser(verb, parents=[json_flag], help=doc, description=doc + ".")
        p.add_argument("credential", type=int, metavar="ID", help="credential id")
        add_target(p, "--job", ("USER", "GROUP", "JOB"))

    p = sub.add_parser(
        "access",
        help="take your job's reference; print the cookies (or VNI and CXI services)",
        description="Take your job's reference to a credential (by id, or with a token from "
        "'drc token') and print what configures the network: credential, cookie1, cookie2, "
        "ptag; on Slingshot also vni, devices and svc_ids (your CXI service per NIC).",
    )
    p.add_argument("credential", type=int, nargs="?", metavar="ID", help="credential id")
    p.add_argument("--token", metavar="TOKEN", help="access with this token instead of an ID")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument(
        "--env",
        action="store_true",
        help="print export lines for eval: DRC_CREDENTIAL, DRC_COOKIE1, DRC_COOKIE2; on "
        "Slingshot also SLINGSHOT_VNIS, SLINGSHOT_SVC_IDS, SLINGSHOT_DEVICES",
    )
    out.add_argument(
        "--auth-key",
        action="store_true",
        help="print the Mercury/margo auth_key: 'svc_id:vni' on Slingshot, else the cookie",
    )
    p.add_argument(
        "--device",
        type=int,
        default=None,
        metavar="N",
        help="with --auth-key on Slingshot: the key of the Nth NIC (default 0, the first)",
    )

    p = sub.add_parser(
        "token",
        parents=[json_flag],
        help="print a signed token another job can access the credential with",
        description="Print a signed token for the credential: 'drc access --token TOKEN' "
        "in a job the credential is granted to is checked by that node's drcc alone.",
    )
    p.add_argument("credential", type=int, metavar="ID", help="credential id")

    p = sub.add_parser(
        "release",
        parents=[json_flag],
        help="drop your job's reference (the owner's release ends the credential)",
        description="Drop your job's reference. The owner's release also ends the "
        "credential for newcomers; its resources return to the pool when the last "
        "reference goes.",
    )
    p.add_argument("credential", type=int, metavar="ID", help="credential id")

    sub.add_parser(
        "whoami",
        parents=[json_flag],
        help="node, uid, gid, job and pid as drcc sees this process",
        description="Print what this node's drcc sees of the calling process (node, uid, "
        "gid, job, pid: from the kernel) and the node's fabric (cookie or slingshot). "
        "Job 0 means no job: drc acquire and drc access then refuse.",
    )
    return parser


def _print(args: argparse.Namespace, fields: dict[str, Any]) -> None:
    """Plain ``name value`` lines (lists comma-joined), or one JSON object."""
    if args.json:
        print(json.dumps(fields))
        return
    for name, value in fields.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        print(f"{name} {value}")


def _in_job(me: client.Whoami, what: str) -> None:
    if me.job == 0:
        raise NotInJob(
            f"drcc on {me.node} sees no job for this process (pid {me.pid}): {what} would be "
            "dropped as soon as drc exits. Run drc in a job's task (srun, sbatch, "
            "'drc-embedded run --job J'); drccli acquire holds a credential by your uid."
        )


def _acquire(args: argparse.Namespace) -> None:
    if not args.persistent:
        _in_job(client.whoami(), "the credential")
    flags = (client.FLEX if args.flex else 0) | (client.PERSISTENT if args.persistent else 0)
    cred = client.acquire(flags)
    if args.json:
        _print(args, {"credential": cred})
    else:
        print(cred)


def _grant_or_revoke(args: argparse.Namespace) -> None:
    kind, target = target_of(args)
    getattr(client, args.command)(args.credential, **{kind: target})
    if args.json:
        done = "granted" if args.command == "grant" else "revoked"
        _print(args, {"credential": args.credential, done: {kind: target}})


def _slingshot_env(sling: client.SlingshotAccess) -> dict[str, str]:
    """SLINGSHOT_* as the SPANK plugin sets them: a value the job already had is kept in
    DRC_JOB_SLINGSHOT_* (unless that is already set), so the job's own VNI stays reachable."""
    env: dict[str, str] = {}
    for name in SLINGSHOT_VARS:
        old, saved = os.environ.get(f"SLINGSHOT_{name}"), f"DRC_JOB_SLINGSHOT_{name}"
        if old is not None and saved not in os.environ:
            env[saved] = old
    return {**env, **sling.environment()}


def _access(args: argparse.Namespace) -> None:
    if (args.credential is None) == (args.token is None):
        raise UsageError("access: give a credential ID or --token TOKEN (one of them)")
    if args.device is not None and not args.auth_key:
        raise UsageError("access: --device N goes with --auth-key")
    me = client.whoami()
    _in_job(me, "the reference")
    if args.token is not None:
        info = client.access_with_token(args.token)
    else:
        info = client.access(args.credential)
    sling = client.access_slingshot(info.credential) if me.fabric == "slingshot" else None
    if args.auth_key:
        print(_auth_key(info, sling, args.device or 0))
        return
    if args.env:
        env = {
            "DRC_CREDENTIAL": str(info.credential),
            "DRC_COOKIE1": str(info.cookie1),
            "DRC_COOKIE2": str(info.cookie2),
            **(_slingshot_env(sling) if sling else {}),
        }
        for name, value in env.items():
            print(f"export {name}={shlex.quote(value)}")
        return
    fields: dict[str, Any] = {
        "credential": info.credential,
        "cookie1": info.cookie1,
        "cookie2": info.cookie2,
        "ptag": info.ptag,
    }
    if sling:
        fields.update(vni=sling.vni, devices=list(sling.devices), svc_ids=list(sling.svc_ids))
    _print(args, fields)


def _auth_key(info: client.AccessInfo, sling: client.SlingshotAccess | None, device: int) -> str:
    """What Mercury/margo take as ``auth_key``: "svc_id:vni" of one NIC on Slingshot, else
    the credential's (first) cookie, the same on every NIC."""
    if sling is None:
        return str(info.cookie1)
    if not 0 <= device < len(sling.devices):
        names = ",".join(sling.devices) or "none"
        raise UsageError(f"access: no device {device}: this node's NICs are {names}")
    return sling.auth_key(device)


def _token(args: argparse.Namespace) -> None:
    token = client.get_credential_token(args.credential)
    if args.json:
        _print(args, {"credential": args.credential, "token": token})
    else:
        print(token)


def _release(args: argparse.Namespace) -> None:
    freed = client.release(args.credential)
    if args.json:
        _print(args, {"credential": args.credential, "freed": freed})


def _whoami(args: argparse.Namespace) -> None:
    _print(args, dataclasses.asdict(client.whoami()))


COMMANDS = {
    "acquire": _acquire,
    "grant": _grant_or_revoke,
    "revoke": _grant_or_revoke,
    "access": _access,
    "token": _token,
    "release": _release,
    "whoami": _whoami,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error("--timeout: give a positive number of seconds")
    client.set_timeout(args.timeout)
    return run(PROG, lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
