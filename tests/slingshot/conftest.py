"""The Slingshot session: embedded DRCS/DRCC with the slingshot provider, against the
stand-in libcxi (NOT libcxi; see standin/README.md). Everything else is real: DRCS, DRCC,
D-Bus, MUNGE-signed DRC link, real users alice, bob and carol."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clib.support import CLib, installed_clib
from slingshot.sling_harness import (
    HERE,
    StandInNics,
    build_standin,
    slingshot_config,
)

from drc.embedded.runtime import Runtime

from cluster import Cluster, start_cluster, stop_cluster


@pytest.fixture(scope="session")
def standin_lib() -> Iterator[Path]:
    out = Path(tempfile.mkdtemp(prefix="cxi-standin-lib-", dir="/tmp"))
    out.chmod(0o755)
    try:
        yield build_standin(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def nics(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInNics]:
    """Fresh stand-in NICs; daemons started afterwards find them through their environment."""
    root = Path(tempfile.mkdtemp(prefix="cxi-standin-", dir="/tmp"))
    root.chmod(0o777)
    try:
        monkeypatch.setenv("CXI_STANDIN_DIR", str(root))
        n = StandInNics(root)
        n.reset()
        yield n
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(runtime: Runtime, users, nics: StandInNics, standin_lib: Path) -> Iterator[Cluster]:
    def configure(config: Path) -> None:
        boot = config.parent / "boot_id"
        boot.write_text("boot-1\n")
        config.write_text(slingshot_config(config.read_text(), standin_lib, boot))

    c = start_cluster(runtime, configure)
    try:
        yield c
    finally:
        stop_cluster(c)


@pytest.fixture(scope="session")
def mercury_client() -> Iterator[tuple[CLib, Path]]:
    """libdrc installed in a world-readable prefix and the Mercury-style client built on it."""
    with installed_clib() as clib:
        yield clib, clib.compile(HERE / "mercury_auth_key.c", "mercury_auth_key")
