"""Fail-over: the pause clients see when the DRCS they follow dies, beside the same clients'
normal latency in the same run, and the acquire+release rate with 1 vs 2 DRCS on one
PostgreSQL; then the same for the database itself: the pause when the PostgreSQL primary dies
and its standby is promoted, and how long ``drccli status`` takes while the database is
stalled, beside normal. Prints JSON.

Both parts run on ``drc-embedded start --nodes 1 --servers 2`` (real munged, TCP+MUNGE link,
one PostgreSQL: a private throwaway server, or DRC_BENCH_PG_URL's, which needs CREATE DATABASE).

- pause: client threads on the node stream acquire+release through DRCC while the DRCS the
  node follows is SIGKILLed (``DRC_BENCH_KILLS`` times, restarted in between). A "pause" is
  the latency of a call that was in flight across a kill; "normal" is every other call.
- rate: 16 concurrent callers (in 4 client processes) of NodeAcquire + NodeRelease pairs over
  the link (each release on the DRCS that acquired), all to DRCS 1 or spread over DRCS 1 and 2,
  measured in alternating rounds so drift and load hit both alike. ``--rate`` measures only
  this (what ``make stress`` runs); ``--rounds`` and ``--pairs`` size it.
- database (root only: a private primary and synchronous standby on 127.0.0.21/22, both DRCS
  on the multi-host URL): Status calls to DRCS 1, normal, then while the primary is SIGSTOPped
  (``DRC_BENCH_STALL`` seconds); then the client threads stream while the primary crashes
  (``pg_ctl -m immediate``) and, ``DRC_BENCH_OUTAGE`` seconds later, the standby is promoted.
  A "pause" is the latency of a call in flight while no primary existed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import postgresql_database, summary

from drc import client
from drc.address import split_host_port
from drc.core.errors import DrcError
from drc.embedded import cluster as embedded
from drc.embedded.postgres import ReplicatedPostgresql, replicated_postgresql
from drc.link import LinkClient, Munge
from drc.serverclient import ServerProxy

KILLS = int(os.environ.get("DRC_BENCH_KILLS", "5"))
THREADS = int(os.environ.get("DRC_BENCH_THREADS", "4"))
ROUNDS = int(os.environ.get("DRC_BENCH_ROUNDS", "4"))
PER_ROUND = int(os.environ.get("DRC_BENCH_ACQUIRES", "300"))
CONCURRENCY = 16
CLIENT_PROCESSES = 4  # the rate's callers, CONCURRENCY // CLIENT_PROCESSES in each
STALL = float(os.environ.get("DRC_BENCH_STALL", "3"))
OUTAGE = float(os.environ.get("DRC_BENCH_OUTAGE", "1"))
STATUS_TIMEOUT = 10.0  # a Status that takes longer counts as unanswered


class Stream(threading.Thread):
    """acquire + release in a loop; each call's (start, end) kept."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.stop = stop
        self.calls: list[tuple[float, float]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                client.release(client.acquire(client.FLEX))
            except client.DrcError as e:
                self.errors.append(str(e))
            self.calls.append((t0, time.monotonic()))


@contextlib.contextmanager
def streaming() -> Iterator[list[Stream]]:
    """THREADS client threads calling until the block ends (then joined)."""
    client.set_timeout(30)
    stop = threading.Event()
    streams = [Stream(stop) for _ in range(THREADS)]
    for s in streams:
        s.start()
    try:
        yield streams
    finally:
        stop.set()
        for s in streams:
            s.join(60)


def latencies(
    streams: list[Stream], during: Callable[[float, float], bool]
) -> tuple[list[float], list[float]]:
    """Call latencies in us: those of calls ``during`` the fault (from their start and end
    times), and the others."""
    spanning: list[float] = []
    normal: list[float] = []
    for s in streams:
        for t0, t1 in s.calls:
            (spanning if during(t0, t1) else normal).append((t1 - t0) * 1e6)
    return spanning, normal


def pauses(emb: embedded.Embedded) -> dict[str, object]:
    kills: list[float] = []
    followed = 1
    with streaming() as streams:
        for _ in range(KILLS):
            time.sleep(1.0)
            kills.append(time.monotonic())
            pid = emb.server_pid(followed)
            os.kill(pid, signal.SIGKILL)
            embedded.terminate(pid)
            time.sleep(1.0)
            emb.start_server(followed)  # back, but the node now follows the other
            followed = 3 - followed
        time.sleep(1.0)
    spanning, normal = latencies(streams, lambda t0, t1: any(t0 <= k <= t1 for k in kills))
    return {
        "kills": KILLS,
        "client_threads": THREADS,
        "errors": sum(len(s.errors) for s in streams),
        "normal": summary(normal),
        "pause": summary(spanning) if spanning else None,
        "pause_vs_normal_p50": round(summary(spanning)["p50_us"] / summary(normal)["p50_us"], 1)
        if spanning
        else None,
    }


async def _pairs(
    servers: list[str], socket: str, spread: int, job: int, pairs: int, callers: int
) -> int:
    """``pairs`` acquire+release pairs by ``callers`` concurrent callers, caller ``i`` on
    server ``i % spread`` (as nodes each follow one DRCS); the calls that failed. (Not by the
    pair's number: callers take numbers in turn, so ``i + n`` was even for every caller and
    every call went to the first server.)"""
    munge = Munge(socket)
    clients = []
    for address in servers[:spread]:
        host, port = split_host_port(address, "server")
        clients.append(LinkClient(host, port, munge=munge, server_uid=0, timeout=60))
    caller = {"uid": 0, "gid": 0, "gids": [], "pid": 0, "job": job, "node": "bench"}
    left = iter(range(pairs))

    async def worker(i: int) -> int:
        failed = 0
        server = clients[i % spread]
        for _ in left:
            try:
                (cred,) = await server.call("NodeAcquire", [caller, 0])
                await server.call("NodeRelease", [caller, cred["credential"]])
            except DrcError:
                failed += 1
        return failed

    try:
        return sum(await asyncio.gather(*(worker(i) for i in range(callers))))
    finally:
        for c in clients:
            await c.close()


def _caller_process(servers: list[str], socket: str, callers: int, conn: Any) -> None:
    """One of the bench's client processes: runs each round it is sent, answers its errors."""
    while (order := conn.recv()) is not None:
        spread, job, pairs = order
        conn.send(asyncio.run(_pairs(servers, socket, spread, job, pairs, callers)))


def acquire_release_rate(
    emb: embedded.Embedded, rounds: int = ROUNDS, pairs: int = PER_ROUND
) -> dict[str, object]:
    """Acquire+release pairs per second, all on DRCS 1 or spread over both: the best of
    ``rounds`` alternating rounds each, and their ratio (what several DRCS add).

    The same CONCURRENCY callers every round, run by CLIENT_PROCESSES processes: a client
    seals and unseals every call with MUNGE on its event loop (a round trip to munged each),
    so one client process would be the ceiling of both rates, whatever the servers do."""
    assert emb.munged is not None
    ctx = multiprocessing.get_context("fork")
    each = CONCURRENCY // CLIENT_PROCESSES
    pipes, procs = [], []
    for _ in range(CLIENT_PROCESSES):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=_caller_process, args=(emb.servers, emb.munged.socket, each, theirs)
        )
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    rates: dict[str, list[float]] = {"1 server": [], "2 servers": []}
    errors = 0
    job = 1000
    try:
        for _ in range(rounds):
            for label, spread in (("1 server", 1), ("2 servers", 2)):
                job += 1
                t0 = time.perf_counter()
                for pipe in pipes:
                    pipe.send((spread, job, pairs // CLIENT_PROCESSES))
                errors += sum(pipe.recv() for pipe in pipes)
                rates[label].append(pairs / (time.perf_counter() - t0))
                asyncio.run(_jobs_ended(emb, job))  # anything left back to the pool
    finally:
        for pipe in pipes:
            pipe.send(None)
        for proc in procs:
            proc.join(30)
    best = {label: round(max(r), 1) for label, r in rates.items()}
    ratios = [round(two / one, 2) for one, two in zip(*rates.values(), strict=True)]
    return {
        "pairs_per_round": pairs,
        "concurrency": CONCURRENCY,
        "client_processes": CLIENT_PROCESSES,
        "rounds": rounds,
        "errors": errors,
        "per_second_best": best,
        "per_second_all": {label: [round(x, 1) for x in r] for label, r in rates.items()},
        "two_vs_one": round(best["2 servers"] / best["1 server"], 2),
        "two_vs_one_by_round": ratios,
    }


async def _jobs_ended(emb: embedded.Embedded, job: int) -> None:
    assert emb.munged is not None
    host, port = split_host_port(emb.servers[0], "server")
    client = LinkClient(host, port, munge=Munge(emb.munged.socket), server_uid=0, timeout=60)
    try:
        await client.call("NodeJobsEnded", ["bench", [job]])
    finally:
        await client.close()


def status_latency(emb: embedded.Embedded, pair: ReplicatedPostgresql) -> dict[str, object]:
    """Status calls to DRCS 1, normal and while the primary is SIGSTOPped, in microseconds."""
    proxy = ServerProxy(emb.server_bus(1), timeout=STATUS_TIMEOUT)

    def timed(until: float) -> tuple[list[float], int]:
        took, unanswered = [], 0
        while time.monotonic() < until:
            t0 = time.monotonic()
            try:
                proxy.call("Status", "")
                took.append((time.monotonic() - t0) * 1e6)
            except DrcError:
                unanswered += 1
            time.sleep(0.05)
        return took, unanswered

    try:
        normal, _ = timed(time.monotonic() + STALL)
        pair.stall(0)
        try:
            stalled, unanswered = timed(time.monotonic() + STALL)
        finally:
            pair.resume(0)
    finally:
        proxy.close()
    return {
        "stall_seconds": STALL,
        "normal": summary(normal),
        "stalled": summary(stalled) if stalled else None,
        "stalled_unanswered": unanswered,
        "stalled_max_us": round(max(stalled), 1) if stalled else None,
        "stalled_vs_normal_p50": round(summary(stalled)["p50_us"] / summary(normal)["p50_us"], 1)
        if stalled
        else None,
    }


def database_pause(pair: ReplicatedPostgresql) -> dict[str, object]:
    """Client threads stream while the primary crashes and the standby is promoted."""
    with streaming() as streams:
        time.sleep(2.0)
        crashed = time.monotonic()
        pair.crash(0)
        time.sleep(OUTAGE)
        pair.promote(1)
        promoted = time.monotonic()
        time.sleep(2.0)
    spanning, normal = latencies(streams, lambda t0, t1: t0 < promoted and t1 > crashed)
    return {
        "without_primary_s": round(promoted - crashed, 3),
        "client_threads": THREADS,
        "errors": sum(len(s.errors) for s in streams),
        "normal": summary(normal),
        "pause": summary(spanning) if spanning else None,
        "pause_max_s": round(max(spanning) / 1e6, 3) if spanning else None,
    }


def database_failover() -> dict[str, object]:
    if os.geteuid() != 0:
        return {"skipped": "needs root (a private PostgreSQL pair runs as the postgres user)"}
    import psycopg

    with replicated_postgresql() as pair:
        with psycopg.connect(f"{pair.server_url(0)}/postgres", autocommit=True) as admin:
            admin.execute('CREATE DATABASE "drc"')
        state = Path(tempfile.mkdtemp(prefix="drc-bench-dbfailover-", dir="/tmp"))
        try:
            emb = embedded.start(state, nodes=1, servers=2, database=pair.url("drc"))
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = emb.bus.address
            status = status_latency(emb, pair)
            pause = database_pause(pair)
        finally:
            embedded.stop(state)
            shutil.rmtree(state, ignore_errors=True)
    return {"status_latency_stalled_database": status, "client_latency_database_failover": pause}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", action="store_true", help="measure only the 1 vs 2 DRCS acquire+release rate"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds each")
    parser.add_argument("--pairs", type=int, default=PER_ROUND, help="pairs per round")
    args = parser.parse_args(argv)
    with postgresql_database() as url:
        state = Path(tempfile.mkdtemp(prefix="drc-bench-failover-", dir="/tmp"))
        try:
            emb = embedded.start(state, nodes=1, servers=2, database=url)
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = emb.bus.address
            rate = acquire_release_rate(emb, args.rounds, args.pairs)
            pause = None if args.rate else pauses(emb)
        finally:
            embedded.stop(state)
            shutil.rmtree(state, ignore_errors=True)
    result: dict[str, object] = {
        "benchmark": "failover",
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "acquire_release_rate_postgresql": rate,
    }
    if not args.rate:
        result["client_latency"] = pause
        result.update(database_failover())
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
