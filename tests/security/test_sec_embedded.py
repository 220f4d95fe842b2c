"""The embedded mode on a shared host: carol, an ordinary user, against root's drc-embedded.

Each test is an attack: carol's processes make a directory first at a path root will use,
plant symlinks, a runtime or a state file naming a root process; root then runs drc as it
would. Each asserts the attack fails and that nothing of root's changed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from drc.embedded.cluster import Embedded
from drc.embedded.dbusd import PrivateBus
from drc.embedded.munged import PrivateMunged
from drc.embedded.polling import WaitTimeout, wait_for
from drc.embedded.private import private_dir
from drc.embedded.processes import alive
from drc.embedded.runtime import install_runtime

from cluster import Cluster, User

DRC_EMBEDDED = str(Path(sys.executable).parent / "drc-embedded")


def as_carol(script: str, stdin: str = "") -> None:
    subprocess.run(
        ["runuser", "-u", "carol", "--", "sh", "-ec", script],
        input=stdin,
        text=True,
        check=True,
        timeout=30,
        cwd="/",
    )


def drc_embedded(*args: str) -> subprocess.CompletedProcess[str]:
    """Root runs drc-embedded, in a session of its own: a signal to "our group" stays there."""
    return subprocess.run(
        [DRC_EMBEDDED, *args], capture_output=True, text=True, timeout=60, start_new_session=True
    )


@pytest.fixture
def path() -> Iterator[Path]:
    """A name under /tmp that nobody has used yet: carol gets to make it first."""
    made = Path(f"/tmp/drc-sec-{uuid.uuid4().hex[:12]}")
    try:
        yield made
    finally:
        if made.is_symlink():
            made.unlink()
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def victim() -> Iterator[int]:
    """A root daemon drc did not start: a session leader, as drc's daemons are."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def survives(pid: int) -> bool:
    """Still alive half a second on: a signal sent just before has had time to land."""
    try:
        wait_for(lambda: not alive(pid), 0.5, what=f"pid {pid} to die")
    except WaitTimeout:
        return True
    return False


@pytest.fixture
def root_file(tmp_path: Path) -> Path:
    """A root file carol would like root to overwrite (stands for /etc/shadow)."""
    target = tmp_path / "precious"
    target.write_text("root's own\n")
    target.chmod(0o644)
    return target


def test_runtime_carol_made_first_is_refused_and_never_run(
    users: dict[str, User], path: Path
) -> None:
    """carol makes the runtime prefix and its bin/drccli; root's install must refuse it, so
    root never runs a drccli carol can swap."""
    pwned = path / "pwned"
    evil = f"#!/bin/sh\nid -u > {pwned}\n"
    drccli = path / "bin" / "drccli"
    as_carol(f"mkdir -m 777 {path} {path}/bin; cat > {drccli}; chmod 755 {drccli}", evil)

    with pytest.raises(RuntimeError, match="belongs to carol"):
        install_runtime(path)

    assert (path / "bin" / "drccli").read_text() == evil
    assert not (path / "lib").exists() and not pwned.exists()
    assert path.stat().st_uid == users["carol"].uid


@pytest.mark.parametrize("made_by", ["carol", "root, writable by all"])
def test_state_dir_with_carols_symlinks_is_refused(
    users: dict[str, User], path: Path, root_file: Path, made_by: str
) -> None:
    """carol plants drc.conf, bus.conf and the logs as symlinks to a root file in a state
    directory she made (or one root left open to all); root's start must write nothing."""
    if made_by != "carol":
        path.mkdir(mode=0o777)
        path.chmod(0o777)
    links = ("drc.conf", "bus.conf", "drcs.log", "embedded.json", "token.key")
    plant = "; ".join(f"ln -s {root_file} {path}/{name}" for name in links)
    as_carol(f"mkdir -p -m 777 {path}; {plant}")

    started = drc_embedded("start", "--state-dir", str(path))

    assert started.returncode != 0
    assert "writable by others" in started.stderr or "belongs to carol" in started.stderr
    assert root_file.read_text() == "root's own\n"
    assert stat.S_IMODE(root_file.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.iterdir()) == sorted(links)  # nothing added


def test_state_dir_symlinked_by_carol_to_a_root_directory_is_refused(
    users: dict[str, User], path: Path, tmp_path: Path
) -> None:
    """``--state-dir`` through carol's symlink to a root directory (stands for /etc): root's
    start must neither write there nor change its mode."""
    target = tmp_path / "etc"
    target.mkdir(mode=0o755)
    as_carol(f"ln -s {target} {path}")

    started = drc_embedded("start", "--state-dir", str(path))

    assert started.returncode != 0 and "is a symlink" in started.stderr
    assert list(target.iterdir()) == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def _state_naming(state_dir: Path, pid: int) -> str:
    """embedded.json whose every daemon is ``pid``, with the paths drc would have used."""
    bus = PrivateBus(
        f"unix:path={state_dir}/bus.sock", pid, f"{state_dir}/bus.sock", f"{state_dir}/bus.conf"
    )
    munged = PrivateMunged(f"{state_dir}/munge/munge.socket", pid, f"{state_dir}/munge/munge.key")
    emb = Embedded(str(state_dir), bus, munged, drcs_pid=pid, drcc_pid=pid)
    return json.dumps(asdict(emb))


def test_carols_state_file_with_a_root_daemons_pid_does_not_make_root_kill_it(
    users: dict[str, User], path: Path, victim: int
) -> None:
    """carol writes embedded.json naming a root daemon at the default-like path; root's
    ``drc-embedded stop`` (and ``start``, which stops a stale instance first) must refuse."""
    as_carol(f"mkdir -m 755 {path}; cat > {path}/embedded.json", _state_naming(path, victim))

    for command in ("stop", "status", "start"):
        done = drc_embedded(command, "--state-dir", str(path))
        assert done.returncode != 0 and "belongs to carol" in done.stderr, done
        assert survives(victim), f"drc-embedded {command} killed root's pid {victim}"


def test_a_saved_pid_that_now_runs_another_process_is_left_alone(
    users: dict[str, User], path: Path, victim: int
) -> None:
    """The state file is root's own, but its pids now belong to another root process (the
    daemons died, the numbers came back), or are 0: stop signals none of them and says so;
    start stops what is still its own, then starts afresh."""
    private_dir(path, 0o711)
    state = json.loads(_state_naming(path, victim))
    state["munged"]["pid"] = 0  # kill(0) would signal stop's own process group
    (path / "embedded.json").write_text(json.dumps(state))

    stopped = drc_embedded("stop", "--state-dir", str(path))

    assert stopped.returncode == 1 and "not signalled" in stopped.stderr, stopped
    assert f"{victim}" in stopped.stderr
    assert survives(victim)

    # Found by start (a state file from before a reboot): a fresh instance, victim untouched.
    (path / "embedded.json").write_text(json.dumps(state))
    try:
        started = drc_embedded("start", "--state-dir", str(path))
        assert started.returncode == 0, started.stderr
        assert survives(victim)
    finally:
        assert drc_embedded("stop", "--state-dir", str(path)).returncode == 0


def test_pids_minus_one_zero_and_one_are_never_signalled(path: Path, mocker) -> None:
    """-1 signals every process, 0 the caller's group, 1 is init: a state file naming them
    must send nothing (the kill calls are recorded, not made)."""
    from drc.embedded import cluster

    kill = mocker.patch("os.kill")
    pidfd_kill = mocker.patch("signal.pidfd_send_signal")
    private_dir(path, 0o711)
    state = json.loads(_state_naming(path, -1))
    state["munged"]["pid"], state["drcc_pid"] = 1, 0
    (path / "embedded.json").write_text(json.dumps(state))

    with pytest.raises(RuntimeError, match="not signalled"):
        cluster.stop(path)

    signals = [c for c in kill.call_args_list if c.args[1] != 0]  # 0 only asks "alive?"
    assert signals == [] and pidfd_kill.call_args_list == []


def test_database_wal_logs_and_keys_are_unreadable_by_other_users(
    users: dict[str, User], cluster: Cluster
) -> None:
    """After alice acquires a credential (the audit log names its cookie), carol can read
    none of the state directory's files and cannot list it; she still reaches the bus."""
    acquired = cluster.in_job(101, "alice", "print(client.acquire(0))")
    assert acquired.returncode == 0, acquired.stderr
    state = cluster.state_dir
    assert "cookie1=" in (state / "drcs.log").read_text()  # what carol is after
    secrets = ["drcs.db", "drcs.db-wal", "drcs.log", "drcc.log", "token.key", "embedded.json"]
    secrets += ["drc.conf", "bus.conf", "munge/munge.key"]
    for name in secrets:
        assert (state / name).exists(), name
        read = cluster.run_as("carol", ["cat", str(state / name)])
        assert read.returncode != 0 and "Permission denied" in read.stderr, name
    listing = cluster.run_as("carol", ["ls", str(state)])
    assert listing.returncode != 0 and "Permission denied" in listing.stderr

    for root, _dirs, files in os.walk(state):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o711, root
        for name in files:
            st = os.lstat(Path(root, name))
            if not stat.S_ISSOCK(st.st_mode):
                assert st.st_uid == 0 and st.st_mode & 0o077 == 0, (name, oct(st.st_mode))

    reached = cluster.outside_job("carol", "print(client.get_wlm_id())")
    assert reached.returncode == 0 and reached.stdout == "0\n", reached.stderr


def test_a_postmaster_pid_file_naming_a_root_process_does_not_make_root_kill_it(
    tmp_path: Path, victim: int
) -> None:
    """The private PostgreSQL's pid file is the postgres user's to write: when pg_ctl cannot
    stop the server, the pid in it is killed only if it is postgres's postmaster of that data
    directory, never a root process named there."""
    from drc.embedded import postgres

    data = tmp_path / "data"  # no cluster here: pg_ctl stop fails, the pid file is read
    data.mkdir()
    (data / "postmaster.pid").write_text(f"{victim}\n{data}\n")

    postgres._stop(postgres.postgresql_bindir(), data)

    assert survives(victim)
