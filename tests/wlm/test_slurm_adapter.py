"""The Slurm adapter: anchored cgroup parsing, scontrol pidinfo, squeue, the pyslurm choice.

Inputs are real data, not mocks: a /proc tree written to tmp_path (the adapter reads files, as it
does from the real /proc) and small shell scripts standing in for ``scontrol``/``squeue`` that
print what the real commands print (formats taken from the Slurm 22.05 binaries and source).
Only pyslurm is injected with pytest-mock: no pyslurm build matches Debian's Slurm.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import types
from pathlib import Path

import pytest

from drc.wlm import NoWlm, WlmAdapter, WlmError, make_wlm
from drc.wlm.slurm import SlurmAdapter, is_alive, parse_squeue, parse_version

PID = 4242
ALICE_UID = 1001


def fake_proc(tmp_path: Path, cgroup: str, uid: int = ALICE_UID, pid: int = PID) -> Path:
    """A /proc with one process: its cgroup file and the Uid: line of its status."""
    root = tmp_path / "proc"
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup").write_text(cgroup)
    (d / "status").write_text(
        f"Name:\tapp\nState:\tS (sleeping)\nPid:\t{pid}\n"
        f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t100\t100\t100\t100\n"
    )
    return root


def script(tmp_path: Path, name: str, body: str) -> str:
    """An executable /bin/sh script in tmp_path; returns its path."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


# ------------------------------------------------------------------ cgroup table

V1_JOB = """\
12:pids:/slurm_n1/uid_1001/job_226/step_0/task_0
11:freezer:/slurm_n1/uid_1001/job_226/step_0
9:memory:/slurm_n1/uid_1001/job_226/step_0/task_0
4:cpuset:/slurm_n1/uid_1001/job_226/step_0
2:devices:/slurm_n1/uid_1001/job_226/step_0
1:name=systemd:/system.slice/slurmd.service
0::/system.slice/slurmd.service
"""

CGROUP_CASES = [
    ("v1 job step (slurm_<node> root)", V1_JOB, ALICE_UID, 226),
    ("v1 plain /slurm root", "4:freezer:/slurm/uid_1001/job_7/step_batch\n", ALICE_UID, 7),
    ("v1 job level, no step", "4:freezer:/slurm/uid_1001/job_7\n", ALICE_UID, 7),
    (
        "v1 forged job_999 inside the user's own step",
        V1_JOB.replace("job_226/step_0\n", "job_226/step_0/job_999\n"),
        ALICE_UID,
        226,
    ),
    (
        "v1 forged uid_/job_ chain deep inside the step",
        "4:freezer:/slurm_n1/uid_1001/job_226/step_0/slurm/uid_1001/job_999/step_0\n",
        ALICE_UID,
        226,
    ),
    ("v1 uid component is not the process's uid", V1_JOB, 1002, None),
    (
        "v1 hierarchies name different jobs (moved by hand)",
        "11:freezer:/slurm/uid_1001/job_227/step_0\n9:memory:/slurm/uid_1001/job_226/step_0\n",
        ALICE_UID,
        None,
    ),
    (
        "v1 slurm path not at the hierarchy root",
        "4:freezer:/user.slice/slurm/uid_1001/job_5/step_0\n",
        ALICE_UID,
        None,
    ),
    ("v1 job_ lookalike", "4:freezer:/slurm/uid_1001/job_12abc/step_0\n", ALICE_UID, None),
    (
        "v2 task in slurmstepd.scope",
        "0::/system.slice/slurmstepd.scope/job_226/step_0/user/task_0\n",
        ALICE_UID,
        226,
    ),
    (
        "v2 batch step, node-prefixed scope (several slurmd per node)",
        "0::/system.slice/n1_slurmstepd.scope/job_31/step_batch/user/task_0\n",
        ALICE_UID,
        31,
    ),
    (
        "v2 scope at the root (no systemd)",
        "0::/slurmstepd.scope/job_8/step_0/user/task_0\n",
        ALICE_UID,
        8,
    ),
    (
        "v2 forged job_999 under the real task",
        "0::/system.slice/slurmstepd.scope/job_226/step_0/user/task_0/job_999\n",
        ALICE_UID,
        226,
    ),
    (
        "v2 forged scope+job under the real task",
        "0::/system.slice/slurmstepd.scope/job_226/step_0/user/task_0/slurmstepd.scope/job_999\n",
        ALICE_UID,
        226,
    ),
    (
        "v2 forged scope in the user's delegated systemd subtree",
        "0::/user.slice/user-1001.slice/user@1001.service/app.slice/slurmstepd.scope/job_999\n",
        ALICE_UID,
        None,
    ),
    (
        "v2 slurmstepd's own processes",
        "0::/system.slice/slurmstepd.scope/system\n",
        ALICE_UID,
        None,
    ),
    (
        "v2 deleted task cgroup still names the job",
        "0::/system.slice/slurmstepd.scope/job_226/step_0/user/task_0 (deleted)\n",
        ALICE_UID,
        226,
    ),
    (
        "hybrid: v1 controllers and v2 line agree",
        "4:freezer:/slurm/uid_1001/job_226/step_0\n"
        "0::/system.slice/slurmstepd.scope/job_226/step_0/user/task_0\n",
        ALICE_UID,
        226,
    ),
    ("login session", "0::/user.slice/user-1001.slice/session-3.scope\n", ALICE_UID, None),
    (
        "container",
        "0::/system.slice/docker-0123abcd.scope\n12:pids:/docker/0123abcd\n",
        ALICE_UID,
        None,
    ),
    ("init cgroup", "0::/\n", ALICE_UID, None),
    ("garbage", "no colons here\n::\n", ALICE_UID, None),
]


@pytest.mark.parametrize(
    ("cgroup", "uid", "expected"),
    [c[1:] for c in CGROUP_CASES],
    ids=[c[0] for c in CGROUP_CASES],
)
def test_cgroup_table(tmp_path: Path, cgroup: str, uid: int, expected: int | None) -> None:
    adapter = SlurmAdapter(proc_root=fake_proc(tmp_path, cgroup, uid))
    assert adapter.job_from_cgroup(PID) == expected


def test_cgroup_missing_process_and_bad_pids(tmp_path: Path) -> None:
    adapter = SlurmAdapter(proc_root=fake_proc(tmp_path, V1_JOB))
    assert adapter.job_from_cgroup(PID + 1) is None
    assert adapter.job_from_cgroup(0) is None
    assert adapter.job_from_cgroup(-1) is None


def test_cgroup_v1_without_status_is_refused(tmp_path: Path) -> None:
    """Without the process's uid the v1 uid check cannot pass: no job rather than a guess."""
    root = fake_proc(tmp_path, V1_JOB)
    (root / str(PID) / "status").unlink()
    assert SlurmAdapter(proc_root=root).job_from_cgroup(PID) is None


def test_cgroup_v2_parents_configurable(tmp_path: Path) -> None:
    cgroup = "0::/machine.slice/slurmstepd.scope/job_5/step_0/user/task_0\n"
    root = fake_proc(tmp_path, cgroup)
    assert SlurmAdapter(proc_root=root).job_from_cgroup(PID) is None
    adapter = SlurmAdapter(proc_root=root, cgroup_v2_parents=["/machine.slice"])
    assert adapter.job_from_cgroup(PID) == 5


def test_cgroup_of_this_process_is_no_job() -> None:
    """The real /proc: the test runner is in no Slurm job."""
    assert SlurmAdapter().job_from_cgroup(os.getpid()) is None


# ------------------------------------------------------------------ scontrol pidinfo

# What `scontrol pidinfo PID` prints (Slurm 22.05: format strings of /usr/bin/scontrol):
PIDINFO_JOB = (
    "Slurm JobId=226 ends at Tue Jan 23 10:00:00 2024\nJob remaining time is 3599 seconds\n"
)
# ...for a pid in no job (and when slurmd cannot be reached), on stderr, exit status 1:
PIDINFO_NO_JOB = "Failed to locate job for requested pid"
# ...when slurmctld is down (end time unknown), on stderr, exit status 1:
PIDINFO_NO_CTLD = "Failed to get job end time: Unable to contact slurm controller (connect failure)"


def fake_scontrol(tmp_path: Path, *, job_out: str = PIDINFO_JOB, rc: int = 0, err: str = "") -> str:
    """A stand-in for scontrol: pidinfo prints job_out/err and exits rc; --version as Debian 12."""
    return script(
        tmp_path,
        "scontrol",
        f"""\
echo "$@" >> "{tmp_path}/scontrol.calls"
case "$1" in
  --version|-V) echo "slurm-wlm 22.05.8" ;;
  pidinfo) printf '%s' '{job_out}'; [ -n '{err}' ] && echo '{err}' >&2; exit {rc} ;;
  *) echo "scontrol: unexpected $*" >&2; exit 2 ;;
esac
""",
    )


def test_pidinfo_job(tmp_path: Path) -> None:
    adapter = SlurmAdapter(scontrol=fake_scontrol(tmp_path))
    assert adapter.job_from_slurmd(PID) == 226
    assert (tmp_path / "scontrol.calls").read_text() == f"pidinfo {PID}\n"


def test_pidinfo_old_format(tmp_path: Path) -> None:
    old = "Slurm job id 77 ends at Mon Mar  3 10:00:00 2014\nslurm_get_rem_time is 60\n"
    assert SlurmAdapter(scontrol=fake_scontrol(tmp_path, job_out=old)).job_from_slurmd(PID) == 77


@pytest.mark.parametrize("err", [PIDINFO_NO_JOB, PIDINFO_NO_CTLD])
def test_pidinfo_failures_are_no_job(tmp_path: Path, err: str) -> None:
    adapter = SlurmAdapter(scontrol=fake_scontrol(tmp_path, job_out="", rc=1, err=err))
    assert adapter.job_from_slurmd(PID) is None


def test_pidinfo_timeout_is_bounded(tmp_path: Path) -> None:
    slow = script(tmp_path, "scontrol", "exec sleep 30\n")
    adapter = SlurmAdapter(scontrol=slow, pidinfo_timeout=0.3)
    t0 = time.monotonic()
    assert adapter.job_from_slurmd(PID) is None
    assert time.monotonic() - t0 < 5


def test_pidinfo_without_scontrol(tmp_path: Path) -> None:
    assert SlurmAdapter(scontrol=str(tmp_path / "nonexistent")).job_from_slurmd(PID) is None


def test_pidinfo_ignores_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM_JOB_ID in the environment is what a user forges: it must play no part."""
    monkeypatch.setenv("SLURM_JOB_ID", "999")
    monkeypatch.setenv("SLURM_JOBID", "999")
    adapter = SlurmAdapter(
        scontrol=fake_scontrol(tmp_path, job_out="", rc=1, err=PIDINFO_NO_JOB),
        proc_root=fake_proc(tmp_path, "0::/user.slice\n"),
    )
    assert adapter.job_of_pid(PID) is None


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="scontrol not installed")
def test_real_scontrol_pidinfo_non_job_pid() -> None:
    """The real command: this test process is in no job (whether or not slurmd runs here)."""
    assert SlurmAdapter().job_from_slurmd(os.getpid()) is None


def test_job_of_pid_cgroup_first_then_slurmd(tmp_path: Path) -> None:
    scontrol = fake_scontrol(tmp_path, job_out="Slurm JobId=555 ends at Tue Jan 23 10:00:00 2024\n")
    in_job = SlurmAdapter(scontrol=scontrol, proc_root=fake_proc(tmp_path / "a", V1_JOB))
    assert in_job.job_of_pid(PID) == 226
    assert not (tmp_path / "scontrol.calls").exists()  # the cgroup answered: slurmd not asked
    linuxproc = SlurmAdapter(scontrol=scontrol, proc_root=fake_proc(tmp_path / "b", "0::/\n"))
    assert linuxproc.job_of_pid(PID) == 555


# ------------------------------------------------------------------ squeue

# What `squeue -h -a -t all -o '%A %T'` prints: the job id, one space, the state name.
SQUEUE_OUT = """\
226 RUNNING
227 PENDING
228 COMPLETING
229 COMPLETED
230 CANCELLED
231 SUSPENDED
232 TIMEOUT
233 CONFIGURING
234 FAILED
235 REQUEUED
236 OUT_OF_MEMORY
237 NODE_FAIL
"""
SQUEUE_ALIVE = {226, 227, 228, 231, 233, 235}
# What squeue prints when slurmctld is down (exit status 1), measured:
SQUEUE_DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


def fake_squeue(tmp_path: Path, out: str = SQUEUE_OUT, rc: int = 0, err: str = "") -> str:
    (tmp_path / "squeue.out").write_text(out)
    return script(
        tmp_path,
        "squeue",
        f"""\
printf '%s\\n' "$@" > "{tmp_path}/squeue.args"
cat "{tmp_path}/squeue.out"
[ -n '{err}' ] && echo '{err}' >&2
exit {rc}
""",
    )


def squeue_adapter(tmp_path: Path, **kw: object) -> SlurmAdapter:
    """An adapter on fake squeue with pyslurm disabled."""
    return SlurmAdapter(squeue=fake_squeue(tmp_path, **kw), use_pyslurm=False)  # type: ignore[arg-type]


def test_squeue_active_jobs(tmp_path: Path) -> None:
    assert squeue_adapter(tmp_path).active_jobs() == SQUEUE_ALIVE
    args = (tmp_path / "squeue.args").read_text().split("\n")
    assert args[:-1] == ["-h", "-a", "-t", "all", "-o", "%A %T"]


def test_squeue_no_jobs_is_empty_not_error(tmp_path: Path) -> None:
    assert squeue_adapter(tmp_path, out="").active_jobs() == set()


def test_squeue_tolerates_padding(tmp_path: Path) -> None:
    out = "   226   RUNNING  \n\n  4294967 PENDING\n"
    assert squeue_adapter(tmp_path, out=out).active_jobs() == {226, 4294967}


def test_squeue_down_raises_with_stderr(tmp_path: Path) -> None:
    with pytest.raises(WlmError, match="Unable to contact slurm controller"):
        squeue_adapter(tmp_path, out="", rc=1, err=SQUEUE_DOWN).active_jobs()


@pytest.mark.parametrize("out", ["226\n", "JOBID STATE\n", "226 RUNNING extra\n", "x RUNNING\n"])
def test_squeue_garbage_raises(tmp_path: Path, out: str) -> None:
    with pytest.raises(WlmError, match="not understood"):
        squeue_adapter(tmp_path, out=out).active_jobs()


def test_squeue_timeout_raises(tmp_path: Path) -> None:
    slow = script(tmp_path, "squeue", "exec sleep 30\n")
    adapter = SlurmAdapter(squeue=slow, use_pyslurm=False, squeue_timeout=0.3)
    with pytest.raises(WlmError, match="no answer"):
        adapter.active_jobs()


def test_squeue_missing_raises(tmp_path: Path) -> None:
    adapter = SlurmAdapter(squeue=str(tmp_path / "nonexistent"), use_pyslurm=False)
    with pytest.raises(WlmError):
        adapter.active_jobs()


def test_squeue_env_filters_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQUEUE_* variables would narrow squeue's answer; they must not reach it."""
    monkeypatch.setenv("SQUEUE_STATES", "PD")
    monkeypatch.setenv("SQUEUE_USERS", "alice")
    sq = script(tmp_path, "squeue", 'env | grep "^SQUEUE_" >&2 && exit 3; echo "1 RUNNING"\n')
    assert SlurmAdapter(squeue=sq, use_pyslurm=False).active_jobs() == {1}


def test_state_and_version_parsing() -> None:
    assert is_alive("RUNNING") and is_alive("completing") and is_alive("SOMETHING_NEW")
    assert is_alive(None)
    assert not is_alive("CANCELLED by 1001") and not is_alive("COMPLETED")
    assert parse_squeue("5 PENDING\n6 DEADLINE\n") == {5}
    assert parse_version("slurm-wlm 22.05.8") == (22, 5)
    assert parse_version("slurm 24.11.1") == (24, 11)
    assert parse_version("22.5.1") == (22, 5)
    assert parse_version("25.11.2") == (25, 11)
    assert parse_version("unknown") is None


# ------------------------------------------------------------------ pyslurm (injected)


class FakeJob:
    def __init__(self, state: str) -> None:
        self.state = state


def fake_pyslurm(version: str) -> types.ModuleType:
    """A module shaped like pyslurm >= 22.5: Jobs.load() maps job id -> Job with .state."""
    mod = types.ModuleType("pyslurm")
    mod.__version__ = version  # type: ignore[attr-defined]
    jobs = {300: FakeJob("RUNNING"), 301: FakeJob("PENDING"), 302: FakeJob("COMPLETED")}
    mod.Jobs = types.SimpleNamespace(load=lambda: jobs)  # type: ignore[attr-defined]
    return mod


def pyslurm_adapter(tmp_path: Path) -> SlurmAdapter:
    return SlurmAdapter(scontrol=fake_scontrol(tmp_path), squeue=fake_squeue(tmp_path))


def test_pyslurm_matching_version_is_used(tmp_path: Path, mocker, caplog) -> None:
    mocker.patch.dict(sys.modules, {"pyslurm": fake_pyslurm("22.5.1")})
    adapter = pyslurm_adapter(tmp_path)
    with caplog.at_level(logging.INFO, logger="drc.wlm.slurm"):
        assert adapter.active_jobs() == {300, 301}
        assert adapter.active_jobs() == {300, 301}
    assert not (tmp_path / "squeue.args").exists()
    chosen = [r.getMessage() for r in caplog.records if "active Slurm jobs from" in r.message]
    assert len(chosen) == 1 and "pyslurm 22.5.1 matches Slurm 22.05" in chosen[0]


def test_pyslurm_mismatching_version_falls_back(tmp_path: Path, mocker, caplog) -> None:
    mocker.patch.dict(sys.modules, {"pyslurm": fake_pyslurm("25.11.2")})
    with caplog.at_level(logging.INFO, logger="drc.wlm.slurm"):
        assert pyslurm_adapter(tmp_path).active_jobs() == SQUEUE_ALIVE
    assert (tmp_path / "squeue.args").exists()
    assert "does not match Slurm 22.05" in caplog.text


def test_pyslurm_import_error_falls_back(tmp_path: Path, mocker) -> None:
    mocker.patch.dict(sys.modules, {"pyslurm": None})  # makes `import pyslurm` raise ImportError
    assert pyslurm_adapter(tmp_path).active_jobs() == SQUEUE_ALIVE


def test_pyslurm_unknown_slurm_version_falls_back(tmp_path: Path, mocker) -> None:
    mocker.patch.dict(sys.modules, {"pyslurm": fake_pyslurm("22.5.1")})
    no_version = script(tmp_path, "scontrol", "echo 'fatal: no configuration' >&2; exit 1\n")
    adapter = SlurmAdapter(scontrol=no_version, squeue=fake_squeue(tmp_path))
    assert adapter.active_jobs() == SQUEUE_ALIVE


def test_pyslurm_classic_api(tmp_path: Path, mocker) -> None:
    mod = types.ModuleType("pyslurm")
    mod.version = lambda: "22.05.0"  # type: ignore[attr-defined]
    data = {7: {"job_state": "RUNNING"}, 8: {"job_state": "CANCELLED"}}
    mod.job = lambda: types.SimpleNamespace(get=lambda: data)  # type: ignore[attr-defined]
    mocker.patch.dict(sys.modules, {"pyslurm": mod})
    assert pyslurm_adapter(tmp_path).active_jobs() == {7}


def test_pyslurm_failure_raises(tmp_path: Path, mocker) -> None:
    mod = fake_pyslurm("22.5.1")

    def load() -> dict:
        raise RuntimeError("Unable to contact slurm controller")

    mod.Jobs = types.SimpleNamespace(load=load)  # type: ignore[attr-defined]
    mocker.patch.dict(sys.modules, {"pyslurm": mod})
    with pytest.raises(WlmError, match="Unable to contact"):
        pyslurm_adapter(tmp_path).active_jobs()


# ------------------------------------------------------------------ factory


def test_make_wlm() -> None:
    none = make_wlm("none")
    assert isinstance(none, NoWlm) and isinstance(none, WlmAdapter)
    assert none.name == "none"
    assert none.job_of_pid(os.getpid()) is None and none.active_jobs() == set()

    slurm = make_wlm("Slurm", scontrol="/opt/slurm/bin/scontrol", pidinfo_timeout=1.5)
    assert isinstance(slurm, SlurmAdapter) and isinstance(slurm, WlmAdapter)
    assert slurm.name == "slurm"
    assert slurm.scontrol == "/opt/slurm/bin/scontrol" and slurm.pidinfo_timeout == 1.5

    with pytest.raises(ValueError, match="unknown workload manager"):
        make_wlm("pbs")
    with pytest.raises(TypeError):
        make_wlm("slurm", no_such_setting=1)
