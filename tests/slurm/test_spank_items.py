"""drc.so's callbacks outside slurmstepd (issue 14). A real slurmstepd cannot be made to refuse
an item, and valgrind cannot follow it, so spank_items.c loads the plugin with a stand-in for
the Slurm calls it makes: a step whose node count or step id is unknown gets no credential,
says why and fails its tasks; and every callback, against a real DRCC, is valgrind-clean."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from clib.support import VALGRIND
from multinode import MultiNode
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
    harness: list[str],
    refused: str,
    bus: str = "none",
    *options: str,
    memcheck: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[str, str]:
    """(the plugin's log, spank_setenv calls and callback returns; the task's stderr).
    ``env``: spank_items.c's SPANK_ITEMS_* knobs (node count, which steps, no epilog)."""
    wrap = VALGRIND if memcheck else []
    argv = [*wrap, *harness, refused, bus, "--drc=acquire", *options]
    environ = {**os.environ, **(env or {})}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=environ)
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


@pytest.mark.root
def test_a_multi_node_step_takes_the_batch_steps_credential_on_a_node_it_never_ran_on(
    harness, two_nodes: MultiNode
) -> None:
    """The regression issue 14 made: node 2's DRCC knows nothing of job 4242's credential, so
    its 2-node step was refused; it now gets the batch step's from DRCS. A 2-node step of a job
    holding no credential is still refused, with advice that works."""
    c, job = two_nodes, 4242
    two_node_step = {"SPANK_ITEMS_NNODES": "2", "SPANK_ITEMS_STEPS": "step"}
    log, stderr = callbacks(harness, "none", c.emb.node_bus(2), env=two_node_step)
    assert "task_init=-1" in log and "setenv DRC_CREDENTIAL=" not in log, log
    assert "2-node step: this job holds no credential" in stderr
    assert "acquire in a batch job (sbatch --drc=acquire) or pass --drc=ID" in stderr

    batch = {"SPANK_ITEMS_STEPS": "batch", "SPANK_ITEMS_EPILOG": "0"}  # node 1, the job goes on
    log, stderr = callbacks(harness, "none", c.emb.node_bus(1), env=batch)
    assert stderr == "" and "task_init=0" in log, log + stderr
    (cred,) = re.findall(r"^setenv DRC_CREDENTIAL=(\d+)$", log, re.M)

    log, stderr = callbacks(harness, "none", c.emb.node_bus(2), env=two_node_step)
    assert stderr == "" and "task_init=0" in log and "job_epilog=0" in log, log + stderr
    assert re.findall(r"^setenv DRC_CREDENTIAL=(\d+)$", log, re.M) == [cred]
    assert c.counters(2)["job_credential_forwarded"] == 2
    assert f"freed credential(s): {cred}" in c.end_job(1, job)  # node 2's part already ended
