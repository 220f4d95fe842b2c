"""The SPANK plugin on a real single-node Slurm, with real users (issue: Slurm integration).

One slurmctld + slurmd for the whole module (see slurm_harness.py); each test submits its own
jobs and cancels them afterwards. Every wait is bounded.
"""

from __future__ import annotations

import pwd
import re
import shlex
import shutil

import pytest
from slurm.slurm_harness import SlurmNode

from drc.embedded.polling import wait_for

pytestmark = pytest.mark.root

HOLD = "sleep 120"  # a job that runs until the test cancels it


def started(slurm: SlurmNode, job: int) -> dict[str, str]:
    """The DRC_* variables a running batch job printed (its first line)."""
    text = slurm.wait_output(job, "DRC_CREDENTIAL=")
    line = next(x for x in text.splitlines() if "DRC_CREDENTIAL=" in x)
    return dict(kv.split("=", 1) for kv in line.split())


PRINT_DRC = (
    'echo "DRC_CREDENTIAL=$DRC_CREDENTIAL DRC_COOKIE1=$DRC_COOKIE1 DRC_COOKIE2=$DRC_COOKIE2"'
)


def gone(slurm: SlurmNode, cred: int) -> bool:
    return slurm.credential(cred) is None


def test_options_are_registered_for_srun_sbatch_and_salloc(slurm: SlurmNode) -> None:
    for command in ("srun", "sbatch", "salloc"):
        out = slurm.run("alice", [command, "--help"]).stdout
        for option in ("--drc=", "--drc-flags=", "--drc-grant=", "--drc-token"):
            assert option in out, f"{command} --help lacks {option}"


def test_bad_option_values_are_refused_before_the_job(slurm: SlurmNode) -> None:
    for args, words in (
        (["--drc=bogus"], "expected 'acquire' or a credential id"),
        (["--drc=acquire", "--drc-flags=sticky"], "unknown flag 'sticky'"),
        (["--drc=acquire", "--drc-grant=uid:nosuchuser"], "bad target 'uid:nosuchuser'"),
    ):
        proc = slurm.srun("alice", *args, "true")
        assert proc.returncode != 0
        assert words in proc.stderr


def test_granted_user_shares_the_cookie_and_others_are_refused(
    slurm: SlurmNode, jobs: list[int]
) -> None:
    a = slurm.sbatch(
        "alice",
        "--drc=acquire",
        "--drc-flags=flex",
        "--drc-grant=uid:bob",
        script=f"{PRINT_DRC}\n{HOLD}",
    )
    jobs.append(a)
    env_a = started(slurm, a)
    cred = int(env_a["DRC_CREDENTIAL"])
    info = slurm.credential(cred)
    assert info is not None and info["wlm"] == a
    assert info["uid"] == pwd.getpwnam("alice").pw_uid

    proc = slurm.srun(
        "bob", f"--drc={cred}", "--drc-token", "sh", "-c", PRINT_DRC + "; echo T=$DRC_TOKEN"
    )
    assert proc.returncode == 0, proc.stderr
    env_b = dict(kv.split("=", 1) for kv in proc.stdout.split())
    assert env_b["DRC_COOKIE1"] == env_a["DRC_COOKIE1"]
    assert env_b["DRC_CREDENTIAL"] == str(cred)
    assert len(env_b["T"]) > 20

    proc = slurm.srun("carol", f"--drc={cred}", "printenv", "DRC_COOKIE1")
    assert proc.returncode != 0
    assert f"drc: access to credential {cred}: DRC_EPERM" in proc.stderr
    assert "not granted" in proc.stderr
    assert proc.stdout == ""

    slurm.scancel(a)
    wait_for(lambda: gone(slurm, cred), what=f"transient credential {cred} to go with job {a}")


def test_batch_credential_is_released_after_scancel(slurm: SlurmNode, jobs: list[int]) -> None:
    a = slurm.sbatch("alice", "--drc=acquire", script=f"{PRINT_DRC}\n{HOLD}")
    jobs.append(a)
    cred = int(started(slurm, a)["DRC_CREDENTIAL"])
    info = slurm.credential(cred)
    assert info is not None and info["wlm"] == a and info["state"] == "ACTIVE"
    cookie = info["cookie1"]

    slurm.scancel(a)
    slurm.wait_job_gone(a)
    wait_for(lambda: gone(slurm, cred), what=f"credential {cred} to be released by the epilog")
    assert cookie not in [c["cookie1"] for c in slurm.credentials()]


def test_steps_of_a_batch_job_share_its_one_credential(slurm: SlurmNode, jobs: list[int]) -> None:
    a = slurm.sbatch(
        "alice",
        "--drc=acquire",
        script=f"{PRINT_DRC}\nsrun -Q sh -c 'echo STEP=$DRC_CREDENTIAL'\n{HOLD}",
    )
    jobs.append(a)
    cred = started(slurm, a)["DRC_CREDENTIAL"]
    out = slurm.wait_output(a, "STEP=")
    assert f"STEP={cred}\n" in out
    assert len([c for c in slurm.credentials() if c["wlm"] == a]) == 1


def test_a_step_uses_the_credential_drcc_knows_not_the_one_its_environment_names(
    slurm: SlurmNode, jobs: list[int]
) -> None:
    """DRC_CREDENTIAL in a step's environment is the user's to set: --drc=acquire takes the
    job's credential from DRCC (JobCredential), even when the environment names another
    credential the user could access."""
    decoy_job = slurm.sbatch(
        "alice", "--drc=acquire", "--drc-flags=flex", script=f"{PRINT_DRC}\n{HOLD}"
    )
    jobs.append(decoy_job)
    decoy = started(slurm, decoy_job)["DRC_CREDENTIAL"]
    step = f"DRC_CREDENTIAL={decoy} srun -Q --drc=acquire sh -c 'echo STEP=$DRC_CREDENTIAL'"
    a = slurm.sbatch("alice", "--drc=acquire", script=f"{PRINT_DRC}\n{step}\n{HOLD}")
    jobs.append(a)
    cred = started(slurm, a)["DRC_CREDENTIAL"]
    assert cred != decoy
    assert f"STEP={cred}\n" in slurm.wait_output(a, "STEP=")
    holders = (slurm.credential(int(decoy)) or {}).get("holders", [])
    assert [h.get("job") for h in holders if h.get("kind") == "job"] == [decoy_job], holders


def test_non_flex_credential_is_one_job_per_node_flex_is_not(
    slurm: SlurmNode, jobs: list[int]
) -> None:
    for flags, allowed in (([], False), (["--drc-flags=flex"], True)):
        a = slurm.sbatch(
            "alice", "--drc=acquire", *flags, "--drc-grant=uid:bob", script=f"{PRINT_DRC}\n{HOLD}"
        )
        jobs.append(a)
        cred = int(started(slurm, a)["DRC_CREDENTIAL"])
        proc = slurm.srun("bob", f"--drc={cred}", "printenv", "DRC_COOKIE1")
        if allowed:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode != 0
            assert "DRC_EPERM" in proc.stderr and "not FLEX" in proc.stderr
        slurm.scancel(a)


def test_forged_slurm_job_id_does_not_make_a_task_another_job(
    slurm: SlurmNode, jobs: list[int]
) -> None:
    # alice grants her credential to bob's job J1 only: not to bob, not to his other jobs.
    j1 = slurm.sbatch("bob", script=HOLD)
    jobs.append(j1)
    wait_for(lambda: slurm.job_state(j1) == "RUNNING", what=f"job {j1} to run")
    a = slurm.sbatch(
        "alice",
        "--drc=acquire",
        "--drc-flags=flex",
        f"--drc-grant=job:{j1}",
        script=f"{PRINT_DRC}\n{HOLD}",
    )
    jobs.append(a)
    cred = int(started(slurm, a)["DRC_CREDENTIAL"])
    code = (
        "from drc import client\n"
        "print('WLM', client.get_wlm_id())\n"
        "try:\n"
        f"    client.access({cred})\n"
        "    print('ACCESS OK')\n"
        "except client.DrcError as e:\n"
        "    print('REFUSED', e.name)\n"
    )
    python = ["/usr/bin/python3", "-c", code]

    # The control: a task really in J1 gets it.
    proc = slurm.srun("bob", f"--jobid={j1}", "--overlap", *python)
    assert proc.returncode == 0, proc.stderr
    assert f"WLM {j1}\n" in proc.stdout and "ACCESS OK" in proc.stdout, proc.stdout
    # So does its child under a wrapper shell (the shell stays its parent: "&& true").
    proc = slurm.srun(
        "bob", f"--jobid={j1}", "--overlap", "sh", "-c", shlex.join(python) + " && true"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"WLM {j1}\n" in proc.stdout and "ACCESS OK" in proc.stdout, proc.stdout

    # bob's other job, and carol, claim to be J1 (and A) through the environment.
    for user, forged in (("bob", j1), ("carol", j1), ("carol", a)):
        env = [f"SLURM_JOB_ID={forged}", f"SLURM_JOBID={forged}"]
        proc = slurm.srun(user, "env", *env, *python)
        assert proc.returncode == 0, proc.stderr
        assert "REFUSED DRC_EPERM" in proc.stdout, proc.stdout
        wlm = int(proc.stdout.split("WLM ")[1].split()[0])
        assert wlm not in (0, j1, a)


def test_job_that_ended_while_drcs_was_down_is_expired_by_jedi(
    slurm: SlurmNode, jobs: list[int]
) -> None:
    a = slurm.sbatch("alice", "--drc=acquire", script=f"{PRINT_DRC}\n{HOLD}")
    jobs.append(a)
    cred = int(started(slurm, a)["DRC_CREDENTIAL"])
    slurm.stop_drcs()
    try:
        slurm.scancel(a)
        slurm.wait_job_gone(a)
        assert "drain" not in slurm.node_state().lower(), "a DRC outage drained the node"
    finally:
        slurm.start_drcs()
    assert slurm.credential(cred) is not None, "nobody should have told DRCS yet"

    dry = slurm.jedi("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would expire job(s) {a}" in dry.stdout
    assert slurm.credential(cred) is not None

    proc = slurm.jedi()
    assert proc.returncode == 0, proc.stderr
    assert f"expired job(s) {a}" in proc.stdout and str(cred) in proc.stdout
    assert gone(slurm, cred)


def test_a_drcs_outage_reaches_the_task_as_drccs_reason_not_a_timeout(slurm: SlurmNode) -> None:
    """Deadlines nest: the plugin waits longer than drcc's budget for DRCS ([link] timeout),
    so the failed task names DRCS and the unit to check, not drcc."""
    slurm.stop_drcs()
    try:
        proc = slurm.srun("alice", "--drc=acquire", "true")
    finally:
        slurm.start_drcs()
    assert proc.returncode != 0
    assert "DRC_ECONNREFUSED: drcc could not reach DRCS: no DRCS answered within" in proc.stderr
    assert "connection refused" in proc.stderr and "check drcs.service" in proc.stderr
    assert "drcc.service" not in proc.stderr, proc.stderr


def test_persistent_credential_outlives_its_job_and_a_drcs_restart(
    slurm: SlurmNode, jobs: list[int]
) -> None:
    slurm.allow_persistent("alice")
    a = slurm.sbatch("alice", "--drc=acquire", "--drc-flags=persistent", script=PRINT_DRC)
    jobs.append(a)
    cred = int(started(slurm, a)["DRC_CREDENTIAL"])
    slurm.wait_job_gone(a)
    wait_for(lambda: a not in slurm.outstanding_jobs(), what=f"job {a}'s epilog")
    assert slurm.credential(cred) is not None
    slurm.stop_drcs()
    slurm.start_drcs()
    assert slurm.jedi().returncode == 0
    info = slurm.credential(cred)
    assert info is not None and info["state"] == "ACTIVE"
    proc = slurm.run("alice", [str(slurm.runtime.bin / "drccli"), "release", str(cred)])
    assert proc.returncode == 0, proc.stderr
    assert gone(slurm, cred)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_plugin_is_valgrind_clean_in_srun(slurm: SlurmNode) -> None:
    """srun's side of the plugin (init, option parsing, exit) under memcheck: no error or leak
    with a frame in drc.so. (slurmstepd's side runs in processes valgrind cannot follow here.)"""
    proc = slurm.run(
        "bob",
        [
            "valgrind",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--num-callers=30",
            "srun",
            "-Q",
            "--drc=acquire",
            "--drc-flags=flex,persistent",
            "--drc-grant=uid:alice,gid:drcstaff,job:7,uid:0",
            "--drc-token",
            "--drc=12",
            "true",
        ],
        timeout=120,
    )
    assert "ERROR SUMMARY" in proc.stderr, proc.stderr[-2000:]
    # Records are separated by an empty "==PID== " line.
    records = re.split(r"\n==\d+== ?\n", proc.stderr)
    bad = [r for r in records if "drc_spank.c" in r or "/drc.so" in r]
    assert not bad, "\n\n".join(bad)
