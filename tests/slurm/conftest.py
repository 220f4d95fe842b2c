"""The Slurm session: one real slurmctld + slurmd with the drc SPANK plugin, DRCS and DRCC."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm.slurm_harness import SlurmNode, slurm_node

from drc.embedded.runtime import install_runtime

from cluster import ensure_users


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmNode]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run slurmctld/slurmd and jobs of alice, bob and carol")
    ensure_users()
    prefix = Path(tempfile.mkdtemp(prefix="drc-runtime-", dir="/tmp"))
    try:
        runtime = install_runtime(prefix)
        with slurm_node(runtime) as node:
            yield node
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture
def jobs(slurm: SlurmNode) -> Iterator[list[int]]:
    """Job ids a test submits; whatever still runs is cancelled afterwards."""
    submitted: list[int] = []
    yield submitted
    slurm.scancel(*submitted)
    for job in submitted:
        slurm.wait_job_gone(job)
