"""DRCS over D-Bus: acquire and release rate, one client, sequential, beside a raw Ping
and beside the raw store.

Prints JSON. The raw ``org.freedesktop.DBus.Peer.Ping`` to DRCS on the same bus, measured in
the same run, is the floor: the ratio says what the verb costs beyond one bus round trip.
``dbus_vs_store``: acquire+release pairs per second that DRCS completes over D-Bus (with
``DRC_BENCH_CLIENTS`` client processes keeping it busy) ÷ the same pairs run on the core and
store in this process (built from DRCS's config, a database file beside DRCS's), in
alternating rounds so load drift hits both alike. The issue's target is >= 0.8.

``drcs_cpu_us_per_pair`` (DRCS's own CPU time over its D-Bus rounds) beside
``store_cpu_us_per_pair`` (this process over the raw rounds) says where a low ratio comes
from: DRCS's work per pair, or DRCS waiting while clients and the bus daemon share the cores.
It moves far less with the machine's load than the rates do.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, embedded_drc, summary, timed

from drc import config as drc_config
from drc.core.model import Caller, Holder
from drc.server.main import build_service
from drc.serverclient import ServerProxy
from drc.serververbs import BUS_NAME, OBJECT_PATH

N = int(os.environ.get("DRC_BENCH_N", "1000"))  # the embedded pool holds 1024
PAIRS = int(os.environ.get("DRC_BENCH_PAIRS", "2000"))
CLIENTS = int(os.environ.get("DRC_BENCH_CLIENTS", "3"))  # enough to keep DRCS busy
ROUNDS = 2


def _dbus_client(address: str, pairs: int, start: Any, out: Any) -> None:
    proxy = ServerProxy(address)
    for _ in range(10):
        proxy.release(proxy.acquire(0))
    start.wait()
    for _ in range(pairs):
        proxy.release(proxy.acquire(0))
    proxy.close()
    out.put(pairs)


def _dbus_round(address: str, pairs: int) -> float:
    """Seconds for ``pairs`` acquire+release pairs from CLIENTS processes at once."""
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    each = pairs // CLIENTS
    procs = [
        ctx.Process(target=_dbus_client, args=(address, each, start, out)) for _ in range(CLIENTS)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # all connected and warm
    t0 = time.perf_counter()
    start.set()
    done = sum(out.get(timeout=300) for _ in procs)
    seconds = time.perf_counter() - t0
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    assert done == each * CLIENTS
    return seconds


def pair_rates(emb: Any, pairs: int) -> dict[str, float]:
    """acquire+release pairs/s: DRCS over D-Bus (CLIENTS processes) and the raw store.

    The raw side is the same core built from DRCS's own config (provider, policy, SQLite
    pragmas), on a database file of its own beside DRCS's, called in this process with no
    transport. Rounds alternate so load drift hits both alike."""
    cfg = drc_config.load(emb.config)
    raw_db = f"sqlite:///{Path(emb.state_dir) / 'raw-store.db'}"
    svc = build_service(
        dataclasses.replace(
            cfg, values={**cfg.values, "server": {**cfg["server"], "database": raw_db}}
        )
    )
    root = Caller(uid=0, gid=0, gids=frozenset({0}), holder=Holder.pin(0))
    spent = {"dbus": 0.0, "store": 0.0}
    cpu = {"dbus": 0.0, "store": 0.0}
    each = pairs // CLIENTS * CLIENTS
    for _ in range(ROUNDS):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(each):
            svc.release(root, svc.acquire(root, 0).id)
        spent["store"] += time.perf_counter() - t0
        cpu["store"] += time.process_time() - c0
        c0 = cpu_seconds(emb.drcs_pid)
        spent["dbus"] += _dbus_round(emb.bus.address, each)
        cpu["dbus"] += cpu_seconds(emb.drcs_pid) - c0
    svc.store.close()
    n = each * ROUNDS
    return {
        "clients": CLIENTS,
        "pairs": n,
        "dbus_pairs_per_s": round(n / spent["dbus"], 1),
        "store_pairs_per_s": round(n / spent["store"], 1),
        "dbus_vs_store": round(spent["store"] / spent["dbus"], 3),
        "drcs_cpu_us_per_pair": round(cpu["dbus"] / n * 1e6),
        "store_cpu_us_per_pair": round(cpu["store"] / n * 1e6),
    }


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
        pairs = pair_rates(emb, PAIRS)
    result = {
        "benchmark": "drcs_dbus_acquire_release",
        "calls": N,
        "ping": ping,
        "acquire": {**acquire, "per_s": round(N / acquire_s)},
        "release": {**release, "per_s": round(N / release_s)},
        "acquire_vs_ping_p50": round(acquire["p50_us"] / ping["p50_us"], 2),
        "release_vs_ping_p50": round(release["p50_us"] / ping["p50_us"], 2),
        "acquire_release_pairs": pairs,
        "load_average": os.getloadavg(),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
