"""``drc-embedded``: the command line of the embedded cluster (:mod:`drc.embedded.cluster`).

``start`` prints ``export`` lines like ssh-agent, so ``eval "$(drc-embedded start)"`` points
drccli, drc.client and libdrc at the private bus; ``stop`` stops everything by pid. This
module only parses arguments and prints; the cluster object does the work.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from drc.cli.common import add_version
from drc.cli.exits import documented, run
from drc.embedded.cluster import (
    Embedded,
    default_state_dir,
    end_job,
    node_counters,
    run_in_job,
    start,
    stop,
)

STATE_DIR_HELP = (
    "sockets, database, config, keys and logs; made here, or already yours and writable by "
    "nobody else, or refused (default: %(default)s)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drc-embedded",
        description="Run drc on one machine: a private D-Bus bus, munged, DRCS with SQLite and "
        "a cookie pool, and DRCC. 'eval \"$(drc-embedded start)\"' sets "
        "DBUS_SYSTEM_BUS_ADDRESS so drccli, drc.client and libdrc use it.",
        epilog="Exit status: "
        + "; ".join(f"{code} {text}" for code, text in documented("drc-embedded"))
        + "; 'run' exits with its command's status.",
    )
    parser.add_argument("--state-dir", type=Path, default=default_state_dir(), help=STATE_DIR_HELP)
    add_version(parser)
    # --state-dir is also accepted after the command ("drc-embedded start --state-dir DIR");
    # SUPPRESS keeps a command's missing option from overwriting one given before it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument(
        "--state-dir", type=Path, default=argparse.SUPPRESS, help="as --state-dir before COMMAND"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    node_help = "the node (1..N of start --nodes) whose DRCC to use (default: %(default)s)"
    p = sub.add_parser(
        "start", parents=[after], help="start everything; prints export lines for eval"
    )
    p.add_argument(
        "--wlm",
        choices=("none", "slurm"),
        default="none",
        help="workload manager DRCC asks for callers' jobs (default: %(default)s)",
    )
    p.add_argument(
        "--nodes",
        type=int,
        default=1,
        metavar="N",
        help="compute nodes to run, each with its own bus, DRCC, node name (node1..nodeN) "
        "and boot id (default: %(default)s)",
    )
    p.add_argument(
        "--servers",
        type=int,
        default=1,
        metavar="M",
        help="DRCS to run on 127.0.0.1..127.0.0.M; more than one needs --database "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--database",
        default="",
        metavar="URL",
        help="store URL (default: SQLite in the state directory); several DRCS need "
        "postgresql://user@host/db",
    )
    p.add_argument(
        "--metrics",
        action="store_true",
        help="serve DRCS's and DRCC's Prometheus metrics on loopback ports (see status)",
    )
    sub.add_parser("stop", parents=[after], help="stop everything start started")
    sub.add_parser("status", parents=[after], help="which daemons run, and the bus address")
    p = sub.add_parser(
        "run",
        parents=[after],
        help="run a command as a task of a job (root; stands in for Slurm)",
    )
    p.add_argument("--job", type=int, required=True, help="job (WLM) id to register the task in")
    p.add_argument("--user", help="run the command as this user")
    p.add_argument("--node", type=int, default=1, metavar="K", help=node_help)
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND…")
    p = sub.add_parser(
        "end-job", parents=[after], help="tell DRCC a job ended, as the epilog does (root)"
    )
    p.add_argument("job", type=int)
    p.add_argument("--node", type=int, default=1, metavar="K", help=node_help)
    p = sub.add_parser(
        "counters",
        parents=[after],
        help="DRCC's counters: accesses served locally, forwarded (root)",
    )
    p.add_argument("--node", type=int, default=1, metavar="K", help=node_help)
    return parser


def command_line(program: str | Path, state_dir: str | Path, *args: str) -> list[str]:
    """``program --state-dir DIR ARGS...``: how ``make demo`` and the tests drive one instance
    (``program`` is the drc-embedded to run, e.g. a world-readable runtime copy's)."""
    return [str(program), "--state-dir", str(state_dir), *args]


def task(
    program: str | Path, state_dir: str | Path, job: int, user: str, argv: list[str], node: int = 1
) -> list[str]:
    """``drc-embedded run``: ``argv`` as ``user`` in a task of ``job`` on ``node``."""
    where = ["--node", str(node), "--job", str(job), "--user", user]
    return command_line(program, state_dir, "run", *where, "--", *argv)


def python_task(
    program: str | Path, state_dir: str | Path, job: int, user: str, code: str, node: int = 1
) -> list[str]:
    """:func:`task` running Python ``code`` (``client`` imported), with the system
    interpreter (the one other users can run)."""
    argv = ["/usr/bin/python3", "-c", "from drc import client\n" + code]
    return task(program, state_dir, job, user, argv, node)


def _running(state_dir: Path) -> Embedded:
    emb = Embedded.load(state_dir)
    if emb is None:
        raise RuntimeError(f"not running (no state in {state_dir}); run 'drc-embedded start'")
    return emb


def _start(args: argparse.Namespace) -> int:
    emb = start(
        args.state_dir,
        args.wlm,
        nodes=args.nodes,
        servers=args.servers,
        database=args.database,
        metrics=args.metrics,
    )
    for key, value in emb.exports().items():
        print(f"{key}={shlex.quote(value)}; export {key};")
    print(
        f"echo drc-embedded running: DRCS pid {emb.drcs_pid}, DRCC pid "
        f"{emb.drcc_pid}, state in {shlex.quote(emb.state_dir)};"
    )
    if emb.extra_nodes or emb.extra_servers:
        names = " ".join(emb.node_names())
        print(f"echo nodes: {shlex.quote(names)}, DRCS at {shlex.quote(' '.join(emb.servers))};")
    return 0


def _stop(args: argparse.Namespace) -> int:
    stopped = stop(args.state_dir)
    print("unset DBUS_SYSTEM_BUS_ADDRESS DRC_EMBEDDED_DIR;")
    print(f"echo drc-embedded {'stopped' if stopped else 'was not running'};")
    return 0


def _run(args: argparse.Namespace) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise RuntimeError("run: give a command after --")
    return run_in_job(args.job, args.user, command, _running(args.state_dir).node_bus(args.node))


def _end_job(args: argparse.Namespace) -> int:
    freed = end_job(args.job, _running(args.state_dir).node_bus(args.node))
    where = f" on node {args.node}" if args.node != 1 else ""
    freed_ids = " ".join(map(str, freed)) or "none"
    print(f"job {args.job} ended{where}; freed credential(s): {freed_ids}")
    return 0


def _counters(args: argparse.Namespace) -> int:
    for name, value in sorted(node_counters(_running(args.state_dir).node_bus(args.node)).items()):
        print(f"{name:28} {value}")
    return 0


def _status(args: argparse.Namespace) -> int:
    emb = _running(args.state_dir)
    ok = True
    for name, pid, running in emb.running():
        ok &= running
        print(f"{name:12} pid {pid:<8} {'running' if running else 'NOT RUNNING'}")
    print(f"bus          {emb.bus.address}")
    for name, where in (("drcs", emb.drcs_metrics), ("drcc", emb.drcc_metrics)):
        if where:
            print(f"{name} metrics http://{where}/metrics")
    return 0 if ok else 1


COMMANDS = {
    "start": _start,
    "stop": _stop,
    "status": _status,
    "run": _run,
    "end-job": _end_job,
    "counters": _counters,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("drc-embedded", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
