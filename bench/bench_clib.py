"""libdrc from C: drc_access on a cached association vs a raw sd-bus Peer.Ping to DRCC.

Starts its own embedded drc (private dbus-daemon, DRCS, DRCC), builds lib/ and
bench/bench_clib.c, and prints one JSON document:

- latency (µs, p50/p99) of drc_access and of Peer.Ping to org.drc.Node, interleaved in the
  same run, and their ratio; unpinned and with the client and the daemons pinned to one CPU;
- calls/s of drc_access from 8 client processes;
- calls/s of 8 threads in one process: through libdrc (its pool of connections) and over
  one raw sd-bus connection per thread, and their ratio (target >= 0.8) — the measurement
  behind libdrc's threading choice.

    .venv/bin/python bench/bench_clib.py [--samples 20000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import embedded_drc, summary

REPO = Path(__file__).resolve().parent.parent
LIB_BUILD = REPO / "lib" / "build"


def build(workdir: Path) -> Path:
    subprocess.run(["make", "-s", "-C", str(REPO / "lib")], check=True)
    env = {**os.environ, "PKG_CONFIG_PATH": str(LIB_BUILD)}
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "cray-drc", "libsystemd"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    binary = workdir / "bench_clib"
    source = REPO / "bench" / "bench_clib.c"
    subprocess.run(
        ["cc", "-O2", "-Wall", "-Werror", "-pthread", "-o", str(binary), str(source), *flags],
        check=True,
    )
    return binary


def latency(binary: Path, env: dict[str, str], samples: int, cpu: int | None) -> dict:
    argv = [str(binary), "latency", str(samples)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    series: dict[str, list[float]] = {"access": [], "ping": []}
    for line in out.splitlines():
        kind, usec = line.split()
        series[kind].append(float(usec))
    access, ping = summary(series["access"]), summary(series["ping"])
    return {
        "drc_access": access,
        "peer_ping": ping,
        "ratio_p50": round(access["p50_us"] / ping["p50_us"], 2),
        "ratio_p99": round(access["p99_us"] / ping["p99_us"], 2),
    }


def processes(binary: Path, env: dict[str, str], n: int, seconds: float) -> dict:
    procs = [
        subprocess.Popen([str(binary), "loop", str(seconds)], env=env, stdout=subprocess.PIPE)
        for _ in range(n)
    ]
    calls = 0
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError("a bench client failed")
        calls += int(out)
    return {"processes": n, "seconds": seconds, "calls_per_s": round(calls / seconds)}


def threads(binary: Path, env: dict[str, str], n: int, seconds: float, raw: bool) -> dict:
    argv = [str(binary), "threads", str(n), str(seconds)] + (["raw"] if raw else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return {"threads": n, "calls_per_s": round(int(out) / seconds)}


def pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        os.sched_setaffinity(pid, cpus)


def measure(emb, binary: Path, samples: int, seconds: float) -> dict:
    env = {
        **os.environ,
        "DBUS_SYSTEM_BUS_ADDRESS": emb.bus.address,
        "LD_LIBRARY_PATH": str(LIB_BUILD),
    }
    daemons = [emb.bus.pid, emb.drcs_pid, emb.drcc_pid]
    all_cpus = os.sched_getaffinity(0)
    result: dict = {"cpus": len(all_cpus), "latency": {}}
    result["latency"]["unpinned"] = latency(binary, env, samples, None)
    pin(daemons, {0})
    try:
        result["latency"]["pinned_cpu0"] = latency(binary, env, samples, 0)
    finally:
        pin(daemons, all_cpus)
    result["throughput_8_processes"] = processes(binary, env, 8, seconds)
    pooled = threads(binary, env, 8, seconds, False)
    raw = threads(binary, env, 8, seconds, True)
    result["threads_8_libdrc_pool"] = pooled
    result["threads_8_raw_connection_per_thread"] = raw
    result["threads_8_ratio_libdrc_to_raw"] = round(pooled["calls_per_s"] / raw["calls_per_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000, help="latency samples per kind")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput run length")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="drc-bench-clib-", dir="/tmp"))
    try:
        binary = build(workdir)
        with embedded_drc() as emb:
            print(json.dumps(measure(emb, binary, args.samples, args.seconds), indent=2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
