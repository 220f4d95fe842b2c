"""DRCS over D-Bus: acquire and release rate, one client, sequential, beside a raw Ping.

Prints JSON. The raw ``org.freedesktop.DBus.Peer.Ping`` to DRCS on the same bus, measured in
the same run, is the floor: the ratio says what the verb costs beyond one bus round trip.
"""

from __future__ import annotations

import json
import os
import sys
import time

from common import embedded_drc, summary, timed

from drc.server.exports import BUS_NAME, OBJECT_PATH
from drc.server.proxy import ServerProxy

N = int(os.environ.get("DRC_BENCH_N", "1000"))  # the embedded pool holds 1024


def main() -> int:
    with embedded_drc() as emb:
        proxy = ServerProxy(emb.bus.address)
        ping = summary(
            timed(
                lambda: proxy.bus.call(
                    BUS_NAME, OBJECT_PATH, "org.freedesktop.DBus.Peer", "Ping", "", []
                ),
                N,
            )
        )
        ids: list[int] = []
        t0 = time.perf_counter()
        acquire = summary(timed(lambda: ids.append(proxy.acquire(1)), N, warmup=0))
        acquire_s = time.perf_counter() - t0
        it = iter(list(ids))
        t0 = time.perf_counter()
        release = summary(timed(lambda: proxy.release(next(it)), N, warmup=0))
        release_s = time.perf_counter() - t0
        proxy.close()
    result = {
        "benchmark": "drcs_dbus_acquire_release",
        "calls": N,
        "ping": ping,
        "acquire": {**acquire, "per_s": round(N / acquire_s)},
        "release": {**release, "per_s": round(N / release_s)},
        "acquire_vs_ping_p50": round(acquire["p50_us"] / ping["p50_us"], 2),
        "release_vs_ping_p50": round(release["p50_us"] / ping["p50_us"], 2),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
