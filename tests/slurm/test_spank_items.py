"""drc.so's callbacks outside slurmstepd (issue 14). A real slurmstepd cannot be made to refuse
an item, and valgrind cannot follow it, so spank_items.c loads the plugin with a stand-in for
the Slurm calls it makes: a step whose node count or step id is unknown gets no credential,
says why and fails its tasks; and every callback, against a real DRCC, is valgrind-clean."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from clib.support import VALGRIND
from slurm.slurm_harness import build_plugin

from cluster import Cluster

HERE = Path(__file__).resolve().parent
needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None, reason="no valgrind")


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> list[str]:
    binary = tmp_path_factory.mktemp("spank") / "spank_items"
    cc = ["cc", "-Wall", "-Wextra", "-Werror", "-rdynamic", "-o", str(binary)]
    subprocess.run([*cc, str(HERE / "spank_items.c"), "-ldl"], check=True)
    return [str(binary), str(build_plugin())]


def callbacks(
    harness: list[str], refused: str, bus: str = "none", *options: str, memcheck: bool = False
) -> tuple[str, str]:
    """(the plugin's log, spank_setenv calls and callback returns; the task's stderr)."""
    wrap = VALGRIND if memcheck else []
    argv = [*wrap, *harness, refused, bus, "--drc=acquire", *options]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # valgrind: 99 on an error or leak
    return proc.stdout, proc.stderr


def user_init_log(log: str) -> str:
    return "\n".join(x for x in log.splitlines() if x.startswith("slurm_info"))


def test_unknown_node_count_acquires_nothing_and_fails_the_task(harness) -> None:
    log, stderr = callbacks(harness, "S_JOB_NNODES")
    assert "task_init=-1" in log
    assert "did not tell the job's node count: no credential for this step" in stderr
    assert "drcc" not in user_init_log(log) + stderr, "user_init went on to call drcc"


def test_unknown_step_id_fails_the_task(harness) -> None:
    log, stderr = callbacks(harness, "S_JOB_STEPID")
    assert "slurm_error: drc: Slurm did not tell the job and step ids" in log
    assert "task_init=-1" in log and "no job and step ids" in stderr
    assert "drcc" not in user_init_log(log) + stderr


def test_control_with_every_item_answered_user_init_calls_drcc(harness) -> None:
    log, stderr = callbacks(harness, "none")
    assert "task_init=-1" in log
    assert "DRC_ECONNREFUSED: cannot reach drcc on unix:path=/nonexistent" in stderr


@needs_valgrind
@pytest.mark.parametrize("refused", ["S_JOB_NNODES", "S_JOB_STEPID", "none"])
def test_refusals_are_valgrind_clean(harness, refused: str) -> None:
    callbacks(harness, refused, memcheck=True)


@pytest.mark.root
@needs_valgrind
def test_every_callback_against_a_real_drcc_is_valgrind_clean(harness, cluster: Cluster) -> None:
    """Register the job, acquire in the batch step, take the same credential in the next step
    (JobCredential), grant, token, end the job: all under memcheck, all answered."""
    opts = ("--drc-grant=job:7,uid:0", "--drc-token", "--drc-flags=flex")
    log, stderr = callbacks(harness, "none", cluster.address, *opts, memcheck=True)
    assert stderr == "" and "slurm_error" not in log, log + stderr
    assert re.findall(r"^(\w+)=(-?\d+)$", log, re.M) == [
        ("init_post_opt", "0"),
        ("task_init", "0"),
        ("job_epilog", "0"),
    ]
    creds = re.findall(r"^setenv DRC_CREDENTIAL=(\d+)$", log, re.M)
    assert len(creds) == 2 and creds[0] == creds[1], log
    assert re.search(r"^setenv DRC_TOKEN=\S{20,}$", log, re.M)
    assert "setenv DRC_CREDENTIAL_JOB=4242" in log
    listed = json.loads(cluster.drccli(None, "list", "--json", check=True).stdout)
    assert int(creds[0]) not in [c["credential"] for c in listed], "JobEnded did not free it"
