"""drc.so when Slurm does not answer an item (issue 14): a step whose node count, step id or
job id is unknown gets no credential, says why, and fails its tasks. A real slurmstepd cannot
be made to refuse an item, so spank_items.c loads the plugin with a stand-in for the Slurm
calls it makes. Needs no root and no daemon: the bus address leads nowhere, and the control
case shows the plugin got as far as calling drcc."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from clib.support import VALGRIND
from slurm.slurm_harness import build_plugin

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> list[str]:
    binary = tmp_path_factory.mktemp("spank") / "spank_items"
    cc = ["cc", "-Wall", "-Wextra", "-Werror", "-rdynamic", "-o", str(binary)]
    subprocess.run([*cc, str(HERE / "spank_items.c"), "-ldl"], check=True)
    return [str(binary), str(build_plugin())]


def user_init(harness: list[str], refused: str, wrap: tuple[str, ...] = ()) -> tuple[str, str]:
    """Run the harness; (its stdout: Slurm's log and task_init's return, the task's stderr)."""
    proc = subprocess.run(
        [*wrap, *harness, refused], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout, proc.stderr


def test_unknown_node_count_acquires_nothing_and_fails_the_task(harness) -> None:
    log, stderr = user_init(harness, "S_JOB_NNODES")
    assert "task_init=-1" in log
    assert "did not tell the job's node count: no credential for this step" in stderr
    assert "drcc" not in log + stderr, "the plugin went on to call drcc"


def test_unknown_step_id_fails_the_task(harness) -> None:
    log, stderr = user_init(harness, "S_JOB_STEPID")
    assert "slurm_error: drc: Slurm did not tell the job and step ids" in log
    assert "task_init=-1" in log and "no job and step ids" in stderr
    assert "drcc" not in log + stderr


def test_control_with_every_item_answered_the_plugin_calls_drcc(harness) -> None:
    log, stderr = user_init(harness, "none")
    assert "task_init=-1" in log
    assert "DRC_ECONNREFUSED: cannot reach drcc on unix:path=/nonexistent" in stderr


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
@pytest.mark.parametrize("refused", ["S_JOB_NNODES", "S_JOB_STEPID", "none"])
def test_user_init_and_task_init_are_valgrind_clean(harness, refused: str) -> None:
    user_init(harness, refused, wrap=tuple(VALGRIND))  # check=True: exit 99 on any error or leak
