"""The SPANK plugin's cost per job: ``srun -N1 true`` without it, with it, and with --drc=ID.

Starts the tests' single-node Slurm (tests/slurm/slurm_harness.py: root, installs Slurm when
missing) with the embedded drc, and prints one JSON document with the median (and p90) wall
time of ``srun -N1 -n1 true`` run as alice in three configurations, in one run:

- ``no_plugin``: plugstack.conf empty, slurmd restarted (no SPANK epilog at all);
- ``plugin``: drc.so loaded, no --drc option (task registration + job epilog only);
- ``plugin_drc_id``: drc.so loaded and ``--drc=ID`` of a FLEX credential alice holds.

The rounds alternate between the configurations (slurmd restarted at each switch) so that
drift hits them alike.

    .venv/bin/python bench/bench_spank.py [--samples 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from slurm.slurm_harness import SlurmNode, slurm_node  # noqa: E402

from drc.embedded.runtime import install_runtime  # noqa: E402

from cluster import ensure_users  # noqa: E402


def one(node: SlurmNode, args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = node.srun("alice", *args, "true")
    elapsed = (time.perf_counter() - t0) * 1e3
    if proc.returncode != 0:
        raise RuntimeError(f"srun {' '.join(args)} true failed: {proc.stderr.strip()}")
    return elapsed


def stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "n": len(s),
        "median_ms": round(statistics.median(s), 1),
        "p90_ms": round(s[int(len(s) * 0.9)], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60, help="sruns per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the configurations")
    args = parser.parse_args()
    ensure_users()
    prefix = Path(tempfile.mkdtemp(prefix="drc-runtime-", dir="/tmp"))
    samples: dict[str, list[float]] = {"no_plugin": [], "plugin": [], "plugin_drc_id": []}
    try:
        with slurm_node(install_runtime(prefix)) as node:
            acquired = node.run("alice", [str(node.runtime.bin / "drccli"), "acquire", "--flex"])
            if acquired.returncode != 0:
                raise RuntimeError(f"drccli acquire failed: {acquired.stderr.strip()}")
            cred = int(acquired.stdout.split()[-1])
            configs = {
                "no_plugin": (False, []),
                "plugin": (True, []),
                "plugin_drc_id": (True, [f"--drc={cred}"]),
            }
            per_round = max(1, args.samples // args.rounds)
            for _ in range(args.rounds):
                for name, (enabled, extra) in configs.items():
                    if name != "plugin_drc_id":  # same plugstack as "plugin": no restart
                        node.use_plugin(enabled)
                        node.restart_slurmd()
                    for _ in range(3):  # warm-up
                        one(node, extra)
                    samples[name] += [one(node, extra) for _ in range(per_round)]
            slurm_version = node.run(None, ["sinfo", "--version"]).stdout.strip()
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
    result = {name: stats(ms) for name, ms in samples.items()}
    base = result["no_plugin"]["median_ms"]
    report = {
        "benchmark": "srun -N1 -n1 true (as alice), wall time per job",
        "slurm": slurm_version,
        **result,
        "overhead_plugin_ms": round(result["plugin"]["median_ms"] - base, 1),
        "overhead_drc_id_ms": round(result["plugin_drc_id"]["median_ms"] - base, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
