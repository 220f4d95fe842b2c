"""DRCC access latency: cached (answered by DRCC alone) and miss (through DRCS), beside a raw
``Peer.Ping`` to DRCC on the same bus in the same run. Prints JSON.

The miss path: each access is the first of its (credential, holder) association, so it
travels DRCC → DRC link (TCP + MUNGE) → DRCS → SQLite and back.
"""

from __future__ import annotations

import json
import os
import sys

from common import embedded_drc, interleaved, summary, timed

from drc import client
from drc.bus import SyncBusClient
from drc.node.exports import BUS_NAME, INTERFACE, OBJECT_PATH
from drc.serverclient import ServerProxy

N = int(os.environ.get("DRC_BENCH_N", "5000"))
MISSES = int(os.environ.get("DRC_BENCH_MISSES", "300"))


def main() -> int:
    with embedded_drc() as emb:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = emb.bus.address
        bus = SyncBusClient(emb.bus.address)
        cred = client.acquire(client.FLEX)
        both = interleaved(
            {
                "ping": lambda: bus.call(
                    BUS_NAME, OBJECT_PATH, "org.freedesktop.DBus.Peer", "Ping", "", []
                ),
                "access": lambda: bus.call(
                    BUS_NAME, OBJECT_PATH, INTERFACE, "Access", "uu", [cred, 0]
                ),
            },
            N,
        )
        ping, cached = summary(both["ping"]), summary(both["access"])
        # Misses: credentials acquired directly at DRCS (so DRCC has never seen them), each
        # accessed once by this process: every access is a first access, answered by DRCS.
        server = ServerProxy(emb.bus.address)
        creds = [server.acquire(int(client.FLEX)) for _ in range(MISSES)]
        server.close()
        it = iter(creds)
        miss = summary(
            timed(
                lambda: bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, "Access", "uu", [next(it), 0]),
                MISSES,
                warmup=0,
            )
        )
        counters = bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, "Counters", "", [])[0]
        bus.close()
    result = {
        "benchmark": "drcc_access",
        "ping_drcc": ping,
        "access_cached": cached,
        "access_cached_vs_ping_p50": round(cached["p50_us"] / ping["p50_us"], 2),
        "access_cached_vs_ping_p99": round(cached["p99_us"] / ping["p99_us"], 2),
        "access_miss_through_drcs": miss,
        "access_miss_vs_cached_p50": round(miss["p50_us"] / cached["p50_us"], 2),
        "drcc_counters": counters,
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
