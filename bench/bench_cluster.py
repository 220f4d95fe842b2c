"""A cluster of simulated nodes against ONE real DRCS over the real DRC link.

Each simulated node has its own node name, boot id and DRC link connection (TCP on loopback,
every frame a MUNGE credential, as a DRCC sends it), made with the same ``LinkClient`` DRCC
uses, and speaks DRCC's protocol: ``NodeHello``, a ``NodeWatch`` long poll following the
change feed, ``NodeAccess`` on a cache miss, ``NodeJobsEnded`` at job end. DRCS, munged and
the bus are the embedded ones (``drc-embedded``), so every layer is the production code.

Phases, in one run (every figure is measured here, side by side):

1. connect: every node says hello and opens its long poll; DRCS's resident memory before and
   after gives the memory per held connection, and ``Status`` must count every follower;
2. access storm: every node misses its cache once for one credential of job J1 (misses/s);
3. revoke: the owner revokes a grant; the delay until each following node's long poll
   returns carrying it (p50/p99/max, and how many were notified), and what the simulator
   itself spent decoding the answers (see :class:`SimulatedNodesMunge`);
4. ``drccli expire`` form: ``ExpireJobs([J1])`` over D-Bus drops the references on all nodes;
5. per-node form: a second storm for job J2, then every node reports ``NodeJobsEnded``.

Prints JSON with each figure, its target and whether it was met; exits 1 when a target was
missed or anything was lost. Every loop is bounded in count and time; the embedded daemons are
stopped by pid at the end whatever happened. Traffic goes to 127.0.0.1 only.

10,000 nodes need ~10,000 descriptors in this process and in DRCS: the soft RLIMIT_NOFILE is
raised to the hard limit here, and DRCS inherits it (and raises its own, see drcs(8)).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from common import embedded_drc

from drc import config as drc_config
from drc.address import split_host_port
from drc.core.errors import Code, DrcError
from drc.core.model import Flags
from drc.link import LinkClient, Munge
from drc.link.munge import Decoded
from drc.metrics.common import scrape
from drc.server.heap import FreezeSurvivors
from drc.serverclient import ServerProxy

OWNER_UID, GRANTEE_UID = 2001, 2002
JOB1, JOB2 = 7001, 7002
WATCH_SECONDS = 120  # long enough that no long poll times out inside a phase
PHASE_SECONDS = 600.0  # every phase gives up (and reports the loss) after this long


def _percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time ``pid`` has used (user + system): what a phase cost each process, whatever
    else the machine runs meanwhile (wall times on a busy machine are not)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile(wanted: int) -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = hard if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class SimulatedNodesMunge(Munge):
    """The simulator's own munged client, shared by every simulated node (not DRCC's).

    DRCS sends one shared credential to every node a change-feed answer reaches. A real node
    decodes it on its own munged, in parallel with every other node; here one process and one
    munged would decode it 10,000 times in a row (~0.1 ms each: a second no node spends). So a
    shared credential (decoded with ``allow_replayed``, after DRCS's uid was checked by
    ``LinkClient`` on every use) is decoded once and the result reused; every other frame is
    decoded as DRCC decodes it. ``cache=False`` decodes every time (to measure that cost)."""

    def __init__(self, socket: str | None, *, cache: bool = True) -> None:
        super().__init__(socket)
        self.cache = cache
        self._shared: dict[bytes, Decoded] = {}
        self.decodes = 0  # shared credentials munged decoded
        self.decode_seconds = 0.0

    def decode(self, cred: bytes, *, allow_replayed: bool = False) -> Decoded:
        if not allow_replayed:
            return super().decode(cred)
        decoded = self._shared.get(cred) if self.cache else None
        if decoded is None:
            started = time.perf_counter()
            decoded = super().decode(cred, allow_replayed=True)
            self.decode_seconds += time.perf_counter() - started
            self.decodes += 1
            if len(self._shared) >= 64:  # a few batches at a time are ever in flight
                self._shared.clear()
            if self.cache:
                self._shared[cred] = decoded
        return decoded


class SimulatedLink(LinkClient):
    """DRCC's :class:`LinkClient`, noting when it accepted a shared feed answer.

    That is when a node has the answer authenticated and checked, ready to apply: on a real
    node the feed loop applies it a task switch later. Here one process runs every simulated
    node's loop, so the loop of the last node to hear a change runs only after every other
    node's (read, parse, wake its call, wake its loop: ~0.05 ms each, one after another). The
    revoke figure is the delay until the link accepted the answer; the delay until the
    simulated node's loop saw it is reported beside it."""

    accepted = 0.0

    def _open_shared(self, request: Any, request_id: int, credential: bytes) -> Any:
        response = super()._open_shared(request, request_id, credential)
        if response is not None:
            self.accepted = time.monotonic()
        return response


@dataclass
class Node:
    """One simulated node daemon: a name, a boot id, one DRC link connection."""

    name: str
    link: SimulatedLink
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    generation: str = ""
    seq: int = 0
    heard: dict[int, float] = field(default_factory=dict)  # credential -> when it heard
    seen: dict[int, float] = field(default_factory=dict)  # credential -> when its loop saw it

    def caller(self, uid: int, job: int) -> dict[str, Any]:
        return {"uid": uid, "gid": uid, "gids": [], "pid": 0, "job": job, "node": self.name}

    async def follow(self, stop: asyncio.Event, ready: asyncio.Event, polls: asyncio.Event) -> None:
        """DRCC's change-feed loop: one long poll at a time, noting when each change arrives.
        The next poll waits for ``polls`` (see :meth:`Simulator.revoke_reach`)."""
        while not stop.is_set():
            gen, _complete, seq, changes = (
                await self.link.call("NodeWatch", [self.generation, self.seq, WATCH_SECONDS])
            )[0]
            now = time.monotonic()
            heard = self.link.accepted or now  # a shared answer: when the link accepted it
            self.link.accepted = 0.0
            for credential, _epoch in changes:
                self.heard.setdefault(credential, heard)
                self.seen.setdefault(credential, now)
            self.generation, self.seq = gen, seq
            ready.set()  # the next NodeWatch (sent right away) waits at DRCS
            await polls.wait()


class Simulator:
    def __init__(self, emb: Any, nodes: int, concurrency: int, decode_cache: bool = True) -> None:
        cfg = drc_config.load(emb.config)
        host, port = split_host_port(cfg["link"]["listen"], "[link] listen")
        munge = SimulatedNodesMunge(cfg["link"]["munge_socket"] or None, cache=decode_cache)
        self.munge = munge
        self.emb = emb
        self.nodes = [
            Node(
                f"sim{i:05d}",
                SimulatedLink(
                    host, port, munge=munge, server_uid=os.getuid(), timeout=WATCH_SECONDS + 60
                ),
            )
            for i in range(nodes)
        ]
        self.slots = asyncio.Semaphore(concurrency)
        self.errors: list[str] = []
        self.stop = asyncio.Event()
        self.polls = asyncio.Event()  # cleared: nodes that heard a change poll again later
        self.polls.set()
        self.followers: list[asyncio.Task[None]] = []
        self.base_followers = 0  # DRCS's followers before the simulator came (the DRCC's)

    async def settle(self, server: ServerProxy, seconds: float = 60) -> int:
        """Wait until every node's long poll is parked at DRCS again (a quiet DRCS), so the
        next phase is timed alone; how many nodes DRCS counts as following."""
        deadline = time.monotonic() + seconds
        following = 0
        while time.monotonic() < deadline:
            following = server.status()["nodes_connected"] - self.base_followers
            if following >= len(self.nodes):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        return following

    async def _each(self, fn, nodes: list[Node] | None = None) -> float:
        """Run ``fn(node)`` for every node, ``concurrency`` at a time; seconds taken."""

        async def one(node: Node) -> None:
            async with self.slots:
                try:
                    await fn(node)
                except DrcError as e:
                    self.errors.append(f"{node.name}: {e.code.name}: {e.message}")

        t0 = time.perf_counter()
        async with asyncio.timeout(PHASE_SECONDS):
            await asyncio.gather(*(one(n) for n in nodes or self.nodes))
        return time.perf_counter() - t0

    async def connect(self) -> dict[str, Any]:
        server = ServerProxy(self.emb.bus.address, timeout=30)
        drcs = self.emb.drcs_pid
        before = rss_kib(drcs)
        self.base_followers = server.status()["nodes_connected"]  # the embedded DRCC's own

        async def hello(node: Node) -> None:
            await node.link.call("NodeHello", [node.name, node.boot_id])
            ready = asyncio.Event()
            task = asyncio.create_task(node.follow(self.stop, ready, self.polls))
            self.followers.append(task)
            done, _ = await asyncio.wait(
                [task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                task.result()  # the feed failed: raise its error

        seconds = await self._each(hello)
        following = await self.settle(server)  # the last long polls reach DRCS after ready
        await asyncio.sleep(1)  # let allocations settle before reading memory
        after = rss_kib(drcs)
        server.close()
        return {
            "nodes": len(self.nodes),
            "hello_and_follow_per_s": round(len(self.nodes) / seconds),
            "following_at_drcs": following,
            "drcs_rss_before_kib": before,
            "drcs_rss_after_kib": after,
            "drcs_kib_per_connection": round((after - before) / len(self.nodes), 2),
        }

    async def storm(self, credential: int, job: int) -> dict[str, Any]:
        """Every node misses its cache once: one NodeAccess each."""
        errors_before = len(self.errors)

        async def access(node: Node) -> None:
            info = (await node.link.call("NodeAccess", [node.caller(OWNER_UID, job), credential]))[
                0
            ]
            if info["credential"] != credential:
                self.errors.append(f"{node.name}: access answered {info['credential']}")

        seconds = await self._each(access)
        return {
            "misses": len(self.nodes),
            "seconds": round(seconds, 3),
            "misses_per_s": round(len(self.nodes) / seconds),
            "errors": len(self.errors) - errors_before,
        }

    async def revoke_reach(self, owner: Node, credential: int) -> dict[str, Any]:
        """Revoke a grant; how long until every following node's long poll carried it."""
        caller = owner.caller(OWNER_UID, JOB1)
        target = (GRANTEE_UID, int(Flags.TARGET_UID))
        await owner.link.call("NodeGrant", [caller, credential, *target])
        # the grant changes no epoch; revoke does, and that is what the feed carries
        for node in self.nodes:
            node.heard.pop(credential, None)
            node.seen.pop(credential, None)
        decodes, decode_seconds = self.munge.decodes, self.munge.decode_seconds
        # A real node's next poll costs its own CPU and its own munged; here one process
        # would seal 10,000 of them between reading one node's answer and the next one's
        # (~0.1 ms each). So the nodes that heard poll again once every node heard.
        self.polls.clear()
        drcs, munged = self.emb.drcs_pid, self.emb.munged.pid
        cpu = cpu_seconds(drcs), cpu_seconds(munged), time.process_time()
        t0 = time.monotonic()
        try:
            await owner.link.call("NodeRevoke", [caller, credential, *target])
            answered = time.monotonic() - t0
            deadline = t0 + 120
            while time.monotonic() < deadline:
                if all(credential in n.heard for n in self.nodes):
                    break
                await asyncio.sleep(0.05)
            used = cpu_seconds(drcs), cpu_seconds(munged), time.process_time()
        finally:
            self.polls.set()
        delays = [(n.heard[credential] - t0) * 1000 for n in self.nodes if credential in n.heard]
        loops = [(n.seen[credential] - t0) * 1000 for n in self.nodes if credential in n.seen]
        return {
            "following": len(self.nodes),
            "notified": len(delays),
            "revoke_answered_ms": round(answered * 1000, 1),
            "p50_ms": round(_percentile(delays, 0.5), 1),
            "p99_ms": round(_percentile(delays, 0.99), 1),
            "max_ms": round(max(delays), 1) if delays else None,
            "mean_ms": round(statistics.fmean(delays), 1) if delays else None,
            "first_ms": round(min(delays), 1) if delays else None,
            # the same, until the simulated node's loop saw it (see SimulatedLink)
            "loop_p50_ms": round(_percentile(loops, 0.5), 1),
            "loop_p99_ms": round(_percentile(loops, 0.99), 1),
            # the simulator's own cost: one munged decoding for every simulated node
            "simulator_decodes": self.munge.decodes - decodes,
            "simulator_decode_ms": round((self.munge.decode_seconds - decode_seconds) * 1000, 1),
            # CPU each process spent from the revoke until every node heard it
            "drcs_cpu_ms": round((used[0] - cpu[0]) * 1000),
            "munged_cpu_ms": round((used[1] - cpu[1]) * 1000),
            "simulator_cpu_ms": round((used[2] - cpu[2]) * 1000),
        }

    async def close(self) -> None:
        self.stop.set()
        for task in self.followers:
            task.cancel()
        await asyncio.gather(*self.followers, return_exceptions=True)
        await asyncio.gather(*(n.link.close() for n in self.nodes), return_exceptions=True)


def _refs(server: ServerProxy, credential: int) -> int:
    try:
        return server.show(credential)["refs"]
    except DrcError as e:
        if e.code is Code.CRED_NOT_FOUND:
            return 0  # freed with its last reference
        raise


async def run(emb: Any, nodes: int, concurrency: int, decode_cache: bool = True) -> dict[str, Any]:
    # The simulator holds every node's connection, tasks and pending call: hundreds of
    # thousands of objects that each full collection would walk, stopping every simulated
    # node at once (a profile of the revoke phase showed ~0.75 s of it). A real node's heap is
    # small; DRCS's is kept short the same way.
    heap = FreezeSurvivors()
    heap.install()
    try:
        return await _run(emb, nodes, concurrency, decode_cache)
    finally:
        heap.uninstall()


async def _run(emb: Any, nodes: int, concurrency: int, decode_cache: bool) -> dict[str, Any]:
    sim = Simulator(emb, nodes, concurrency, decode_cache)
    server = ServerProxy(emb.bus.address, timeout=60)
    out: dict[str, Any] = {}
    try:
        out["connections"] = await sim.connect()
        owner = sim.nodes[0]
        cred = (
            await owner.link.call(
                "NodeAcquire", [owner.caller(OWNER_UID, JOB1), int(Flags.FLEX_CREDENTIAL)]
            )
        )[0]["credential"]
        await sim.settle(server)
        out["access_storm"] = await sim.storm(cred, JOB1)
        out["access_storm"]["refs_after"] = _refs(server, cred)
        out["revoke"] = await sim.revoke_reach(owner, cred)

        await sim.settle(server)  # the re-polls after the revoke must not be in the timing
        t0 = time.perf_counter()
        server.expire_jobs([JOB1])  # what `drccli expire JOB` sends
        expire_ms = (time.perf_counter() - t0) * 1000
        out["expire_drccli"] = {
            "references": nodes,
            "ms": round(expire_ms, 1),
            "refs_after": _refs(server, cred),
        }

        cred2 = (
            await owner.link.call(
                "NodeAcquire", [owner.caller(OWNER_UID, JOB2), int(Flags.FLEX_CREDENTIAL)]
            )
        )[0]["credential"]
        out["access_storm_2"] = await sim.storm(cred2, JOB2)
        await sim.settle(server)
        first: list[float] = []
        t0 = time.perf_counter()

        async def ended(node: Node) -> None:
            await node.link.call("NodeJobsEnded", [node.name, [JOB2]])
            first.append(time.perf_counter() - t0)

        seconds = await sim._each(ended)
        out["expire_per_node"] = {
            "references": nodes,
            "reports": nodes,
            "first_report_ms": round(min(first) * 1000, 1) if first else None,
            "all_reports_ms": round(seconds * 1000, 1),
            "refs_after": _refs(server, cred2),
        }
    finally:
        out["errors"] = len(sim.errors)
        out["error_samples"] = sim.errors[:5]
        await sim.close()
        server.close()
    return out


def gc_pauses(metrics: str) -> dict[str, Any]:
    """DRCS's full garbage collections over the run (drcs_gc_full_seconds): every call that
    lands in one waits for it, so they bound what the timed figures can show."""
    samples = scrape(metrics)
    count = samples["drcs_gc_full_seconds_count"][()]
    total = samples["drcs_gc_full_seconds_sum"][()]
    under = samples["drcs_gc_full_seconds_bucket"][(("le", "0.1"),)]
    return {
        "full_collections": int(count),
        "over_100ms": int(count - under),
        "mean_ms": round(total / count * 1000, 1) if count else None,
    }


def figures(result: dict[str, Any], nodes: int) -> list[dict[str, Any]]:
    """The issue's figures as (figure, target, measured, ok) rows."""
    c, s, r = result["connections"], result["access_storm"], result["revoke"]
    e, p = result["expire_drccli"], result["expire_per_node"]
    g = result.get("drcs_gc", {"over_100ms": "?", "full_collections": "?"})
    return [
        {
            "figure": f"link connections held open by one DRCS ({nodes} followers)",
            "target": f"{nodes} following; memory per connection reported",
            "measured": f"{c['following_at_drcs']} following, "
            f"{c['drcs_kib_per_connection']} KiB/connection",
            "ok": c["following_at_drcs"] >= nodes,
        },
        {
            "figure": f"access storm: {nodes} nodes miss once",
            "target": ">= 1000 misses/s, 0 errors",
            "measured": f"{s['misses_per_s']} misses/s, {s['errors']} errors",
            "ok": s["misses_per_s"] >= 1000 and s["errors"] == 0 and s["refs_after"] >= nodes,
        },
        {
            "figure": f"revoke reaching {nodes} following nodes",
            "target": "p99 < 1 s, all notified",
            "measured": f"{r['notified']}/{nodes} notified, p99 {r['p99_ms']} ms",
            "ok": r["notified"] == nodes and r["p99_ms"] < 1000,
        },
        {
            "figure": f"drccli expire: one job on {nodes} nodes",
            "target": "< 100 ms, all references dropped",
            "measured": f"{e['ms']} ms, {e['refs_after']} refs left "
            f"(DRCS full GC pauses > 100 ms in the run: {g['over_100ms']} of "
            f"{g['full_collections']})",
            "ok": e["ms"] < 100 and e["refs_after"] == 0,
        },
        {
            "figure": f"per-node JobsEnded: one job on {nodes} nodes",
            "target": "reported; all references dropped",
            "measured": f"first {p['first_report_ms']} ms, all {p['all_reports_ms']} ms, "
            f"{p['refs_after']} refs left",
            "ok": p["refs_after"] == 0,
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nodes", type=int, default=int(os.environ.get("DRC_BENCH_NODES", "10000"))
    )
    parser.add_argument(
        "--concurrency", type=int, default=256, help="calls in flight at once (all nodes)"
    )
    parser.add_argument(
        "--no-decode-cache",
        action="store_true",
        help="every simulated node decodes each shared feed answer on the one munged "
        "(measures the simulator's own decode cost; see SimulatedNodesMunge)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 100_000:
        parser.error("--nodes must be 1..100000")
    limit = raise_nofile(args.nodes + 1024)
    if limit < args.nodes + 256:
        parser.error(
            f"RLIMIT_NOFILE hard limit {limit} is too low for {args.nodes} connections "
            "(raise it: ulimit -Hn, or LimitNOFILE= for a service)"
        )
    t0 = time.perf_counter()
    with embedded_drc(metrics=True) as emb:
        result = asyncio.run(run(emb, args.nodes, args.concurrency, not args.no_decode_cache))
        result["drcs_gc"] = gc_pauses(emb.drcs_metrics)
    rows = figures(result, args.nodes) if "expire_per_node" in result else []
    ok = bool(rows) and all(row["ok"] for row in rows) and result["errors"] == 0
    out = {
        "benchmark": "cluster_simulator",
        "nodes": args.nodes,
        "nofile_soft_limit": limit,
        "load_average": os.getloadavg(),
        "seconds": round(time.perf_counter() - t0, 1),
        **result,
        "figures": rows,
        "ok": ok,
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
