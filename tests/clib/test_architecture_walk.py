"""ARCHITECTURE.md's walk of a cache-miss ``drc_access``, checked against a real one.

libdrc's ``drc_access`` (tests/clib/drc_client.c) for a credential the node has not cached:
C client → DRCC → DRC link → DRCS → store. Both daemons run with tests/clib/walk first on
their PYTHONPATH (this test only), whose sitecustomize records which drc files ran between
two SIGUSR2s. The drc modules that ran must be the map's list: a file the map names must
run, and a file that ran must be on the map.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from clib.support import CLib, spawn_as
from clib.test_client import Repl, serving

import drc
from drc.embedded.polling import wait_for

from cluster import Cluster, start_cluster, stop_cluster

ROOT = Path(drc.__file__).resolve().parent.parent
MAP = ROOT / "ARCHITECTURE.md"
WALK = Path(__file__).parent / "walk"


def mapped_python_files() -> set[str]:
    """The Python files of the map's cache-miss path (``drc/bus/{a,b}.py`` expanded)."""
    text = MAP.read_text()
    section = text[text.index("### A cache miss") : text.index("## Where to change things")]
    listed = section[section.index(" in Python:") : section.index("- Type definitions")]
    files: set[str] = set()
    for group in re.findall(r"`(drc/[^`]+\.py)`", listed):
        head, _, rest = group.partition("{")
        if rest:
            names, _, tail = rest.partition("}")
            files |= {f"{head}{name}{tail}" for name in names.split(",")}
        else:
            files.add(group)
    return files


@pytest.fixture
def walked(runtime, monkeypatch, tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    out = tmp_path / "walk"
    out.mkdir()
    monkeypatch.setenv("PYTHONPATH", f"{WALK}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"))
    monkeypatch.setenv("DRC_TEST_WALK_DIR", str(out))
    monkeypatch.setenv("DRC_TEST_WALK_ROOT", str(ROOT))
    cluster = start_cluster(runtime)
    try:
        yield cluster, out
    finally:
        stop_cluster(cluster)


def test_the_cache_miss_path_is_the_maps(walked, users, clib: CLib, client: Path) -> None:
    cluster, out = walked
    pids = (cluster.drcs_pid, cluster.drcc_pid)
    with serving(cluster, clib, client, users["bob"]) as (cred, _cookie):
        bob = spawn_as(cluster, "bob", [str(client), "repl"], clib.env())
        try:
            for pid in pids:
                os.kill(pid, signal.SIGUSR2)
            wait_for(lambda: all((out / f"{pid}.on").exists() for pid in pids), timeout=10)
            answer = Repl(bob).ask(f"hold {cred}")  # drc_access: bob's first is a miss
            for pid in pids:  # before bob exits (his exit releases: not the access)
                os.kill(pid, signal.SIGUSR2)
            wait_for(lambda: all((out / str(pid)).exists() for pid in pids), timeout=10)
        finally:
            bob.stdin.close()
            bob.wait(timeout=30)
    assert answer[0] == 0, answer
    ran = {
        name
        for pid in pids
        for name in (out / str(pid)).read_text().split()
        if name.startswith("drc/")
    }
    assert "drc/store/sql.py" in ran, "no store call ran: not a cache miss"
    mapped = mapped_python_files()
    assert len(mapped) == int(re.search(r"- (\d+) in Python:", MAP.read_text())[1])
    mapped -= {"drc/nodeverbs.py"}  # declarations only, as the map says
    assert sorted(mapped - ran) == [], "on the map, but did not run"
    # the collector's callback (drc/server/heap.py) runs when a collection does, on whatever
    # path allocated last: it is on no request's path, and on the walk when a full or partial
    # collection falls inside it
    ran -= {"drc/server/heap.py"}
    assert sorted(ran - mapped) == [], "ran, but not on the map"
