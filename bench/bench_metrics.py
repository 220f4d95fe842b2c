"""What metrics cost: the same DRCC cached access and DRCS call on two embedded drc side by
side, one serving metrics and one not, interleaved in one run; and what a scrape costs.

Prints one JSON document: latencies (µs) of ``Access`` (a DRCC cache hit) and ``Limits``
(a DRCS read) on each instance, their ratios (with / without metrics), the same ratio
between two instances without metrics (``control``: how much two identical instances differ
on this machine, i.e. the noise), the in-process cost of counting one request, and the
latency of a scrape of each daemon's endpoint with ``CREDENTIALS`` live credentials.

    .venv/bin/python bench/bench_metrics.py     (DRC_BENCH_N=5000, DRC_BENCH_CREDENTIALS=500)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from common import interleaved, summary, timed
from prometheus_client import CollectorRegistry

from drc.bus import SyncBusClient
from drc.embedded import cluster as embedded
from drc.metrics.common import CallMetrics
from drc.node.exports import BUS_NAME, INTERFACE, OBJECT_PATH
from drc.serverclient import ServerProxy

N = int(os.environ.get("DRC_BENCH_N", "5000"))
CREDENTIALS = int(os.environ.get("DRC_BENCH_CREDENTIALS", "500"))


def scrape(where: str) -> None:
    with urllib.request.urlopen(f"http://{where}/metrics", timeout=5) as reply:
        reply.read()


def main() -> int:
    dirs = [Path(tempfile.mkdtemp(prefix="drc-bench-", dir="/tmp")) for _ in range(3)]
    try:
        plain = embedded.start(dirs[0])
        control = embedded.start(dirs[1])
        metered = embedded.start(dirs[2], metrics=True)
        calls = {}
        for name, emb in (("without", plain), ("control", control), ("with", metered)):
            bus = SyncBusClient(emb.bus.address)
            server = ServerProxy(emb.bus.address)
            creds = [server.acquire(1) for _ in range(CREDENTIALS)]  # FLEX, pinned
            # root's first access of creds[0] goes to DRCS; every later one is a cache hit
            bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, "Access", "uu", [creds[0], 0])
            calls[f"access_{name}"] = lambda b=bus, c=creds[0]: b.call(
                BUS_NAME, OBJECT_PATH, INTERFACE, "Access", "uu", [c, 0]
            )
            calls[f"drcs_limits_{name}"] = lambda s=server: s.limits()
        lat = {k: summary(v) for k, v in interleaved(calls, N).items()}
        scrapes = {
            daemon: summary(timed(lambda w=where: scrape(w), 200, warmup=10))
            for daemon, where in (("drcs", metered.drcs_metrics), ("drcc", metered.drcc_metrics))
        }
        ratio = {
            f"{what}_{other}": round(
                lat[f"{what}_{other}"]["p50_us"] / lat[f"{what}_without"]["p50_us"], 3
            )
            for what in ("access", "drcs_limits")
            for other in ("with", "control")
        }
        counting = CallMetrics(CollectorRegistry(), "bench")
        one = timed(lambda: counting.observe("dbus", "Access", 1e-4, None), 20000)
        print(
            json.dumps(
                {
                    "benchmark": "metrics overhead",
                    "n": N,
                    "live_credentials": CREDENTIALS,
                    "latency": lat,
                    "p50_ratio_over_without": ratio,
                    "observe_one_request_us": summary(one)["mean_us"],
                    "scrape": scrapes,
                },
                indent=2,
            )
        )
    finally:
        for d in dirs:
            embedded.stop(d)
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
