"""``drc-jedi reconcile``: expire the jobs DRCS holds references for that the WLM no longer runs.

Order matters: DRCS is asked *first*, the WLM second. A job that takes its first reference
between the two questions is then absent from the outstanding list rather than missing from the
active one, so a live job is never expired. A WLM that cannot be asked (:class:`WlmError`)
expires nothing: an empty list from a dead slurmctld would otherwise free every credential.

On a cluster a systemd oneshot unit runs ``drc-jedi reconcile`` after ``drcs.service``
(``After=``/``PartOf=drcs.service``, ``WantedBy=drcs.service``), so each DRCS (re)start
reconciles; ``drc-embedded start --wlm slurm`` does the same in-process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from drc import config as drc_config
from drc.cli.common import add_version
from drc.cli.exits import documented, run
from drc.serverclient import ServerProxy
from drc.wlm import WlmAdapter, WlmError, wlm_from_config

#: Jobs per ExpireJobs call (DRCS accepts more; one transaction each stays short).
BATCH = 10_000


@dataclass(frozen=True)
class Reconciliation:
    """What one reconcile saw and did."""

    outstanding: list[int]
    active: set[int]
    expired: list[int]
    freed: list[int] = field(default_factory=list)
    dry_run: bool = False


def to_expire(outstanding: Iterable[int], active: Iterable[int]) -> list[int]:
    """The outstanding jobs the WLM does not consider alive, sorted."""
    return sorted(set(outstanding) - set(active))


def wlm_of(cfg: drc_config.Config) -> WlmAdapter:
    """The adapter named in ``[jedi] wlm``."""
    return wlm_from_config(cfg, cfg["jedi"]["wlm"])


def reconcile(
    config: Path | str | None = None,
    *,
    dry_run: bool = False,
    wlm: WlmAdapter | None = None,
    server: ServerProxy | None = None,
) -> Reconciliation:
    """Expire (or with ``dry_run`` only compute) the jobs DRCS holds and the WLM does not run.

    ``wlm``/``server`` default to the ones the config names. Raises WlmError, with nothing
    expired, when the WLM cannot be asked; DrcError when DRCS refuses or cannot be reached.
    """
    cfg = drc_config.load(config) if wlm is None or server is None else None
    own_server = server is None
    if server is None:
        assert cfg is not None
        server = ServerProxy(cfg["server"]["bus_address"] or None)
    try:
        outstanding = sorted(server.outstanding_jobs())
        if not outstanding:
            return Reconciliation([], set(), [], dry_run=dry_run)
        if wlm is None:
            assert cfg is not None
            wlm = wlm_of(cfg)
        active = wlm.active_jobs()
        expired = to_expire(outstanding, active)
        freed: list[int] = []
        if not dry_run:
            for i in range(0, len(expired), BATCH):
                freed += server.expire_jobs(expired[i : i + BATCH])
        return Reconciliation(outstanding, active, expired, sorted(freed), dry_run)
    finally:
        if own_server:
            server.close()


def describe(result: Reconciliation) -> str:
    """One line for the admin: what was (or would be) expired and freed."""
    if not result.expired:
        return f"nothing to expire: {len(result.outstanding)} outstanding job(s), all active"
    jobs = " ".join(map(str, result.expired))
    if result.dry_run:
        return f"would expire job(s) {jobs}"
    freed = " ".join(map(str, result.freed)) or "none"
    return f"expired job(s) {jobs}; freed credential(s): {freed}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drc-jedi",
        description="DRC job expiration: expire the jobs DRCS holds references for that the "
        "workload manager no longer runs.",
        epilog="Exit status: "
        + "; ".join(f"{code} {text}" for code, text in documented("drc-jedi"))
        + ".",
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("reconcile", help="expire DRCS's outstanding jobs the WLM does not run")
    p.add_argument(
        "-c",
        "--config",
        default=str(drc_config.DEFAULT_PATH),
        help="config file (default: %(default)s)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be expired, only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        try:
            result = reconcile(args.config, dry_run=args.dry_run)
        except WlmError as e:
            raise WlmError(f"cannot ask the workload manager, nothing expired: {e}") from e
        print(describe(result))
        return 0

    return run("drc-jedi", body)


if __name__ == "__main__":
    sys.exit(main())
