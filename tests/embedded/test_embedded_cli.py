"""``drc-embedded``: a thin command line over drc.embedded.cluster; --state-dir before or after
the command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from drc.embedded import main as cli
from drc.embedded.cluster import Embedded, default_state_dir
from drc.embedded.processes import alive

COMMANDS = [
    ["start"],
    ["stop"],
    ["status"],
    ["counters"],
    ["end-job", "7"],
    ["run", "--job", "7", "--", "true"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_state_dir_is_accepted_before_and_after_the_command(command: list[str]) -> None:
    parser = cli.build_parser()
    before = parser.parse_args(["--state-dir", "/tmp/a", *command])
    after = parser.parse_args([*command[:1], "--state-dir", "/tmp/b", *command[1:]])
    neither = parser.parse_args(command)
    assert (before.state_dir, after.state_dir) == (Path("/tmp/a"), Path("/tmp/b"))
    assert neither.state_dir == default_state_dir()
    assert before.command == after.command == command[0]


def test_after_the_command_wins_and_run_keeps_its_command_line() -> None:
    args = cli.build_parser().parse_args(
        ["--state-dir", "/tmp/a", "run", "--state-dir", "/tmp/b", "--job", "3", "--", "ls", "-l"]
    )
    assert args.state_dir == Path("/tmp/b")
    assert args.argv == ["--", "ls", "-l"]


def test_start_status_stop_with_the_option_after_the_verb() -> None:
    """The installed command, end to end: every daemon up, then every one gone by pid."""
    state = Path(tempfile.mkdtemp(prefix="drc-embedded-cli-", dir="/tmp"))
    state.chmod(0o755)
    exe = str(Path(sys.executable).parent / "drc-embedded")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)

    emb = None
    try:
        started = run("start", "--state-dir", str(state))
        assert started.returncode == 0, started.stderr
        assert f"DRC_EMBEDDED_DIR={state}; export DRC_EMBEDDED_DIR;" in started.stdout
        emb = Embedded.load(state)
        assert emb is not None and all(alive(pid) for _, pid in emb.daemons())
        status = run("status", "--state-dir", str(state))
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"bus          {emb.bus.address}" in status.stdout
    finally:
        stopped = run("stop", "--state-dir", str(state))
        shutil.rmtree(state, ignore_errors=True)
    assert stopped.returncode == 0 and "drc-embedded stopped" in stopped.stdout
    assert emb is not None and not any(alive(pid) for _, pid in emb.daemons())
    gone = run("status", "--state-dir", str(state))
    assert gone.returncode == 1 and "not running" in gone.stderr


def test_the_command_lines_the_demo_and_tests_build_parse_as_meant() -> None:
    argv = cli.python_task("/opt/x/drc-embedded", "/tmp/s", 7, "alice", "print(1)", node=3)
    assert argv[0] == "/opt/x/drc-embedded"
    args = cli.build_parser().parse_args(argv[1:])
    assert (args.command, args.state_dir, args.job, args.user, args.node) == (
        "run",
        Path("/tmp/s"),
        7,
        "alice",
        3,
    )
    assert args.argv == ["--", "/usr/bin/python3", "-c", "from drc import client\nprint(1)"]
    ended = cli.build_parser().parse_args(cli.command_line("x", "/tmp/s", "end-job", "9")[1:])
    assert (ended.command, ended.job, ended.state_dir) == ("end-job", 9, Path("/tmp/s"))


def test_a_drc_package_planted_in_the_working_directory_never_runs(tmp_path: Path) -> None:
    """The attack: someone leaves a ``drc/`` package in a world-writable directory (/tmp), and
    root starts the embedded default from there. ``python -m`` puts the working directory
    first on the import path, so every daemon would import the planted package as root. It
    must run the drc that started it, and the planted code never."""
    planted = Path(tempfile.mkdtemp(prefix="drc-planted-", dir="/tmp"))
    planted.chmod(0o1777)
    marker = tmp_path / "planted-code-ran"
    (planted / "drc").mkdir()
    (planted / "drc" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    state = Path(tempfile.mkdtemp(prefix="drc-embedded-cwd-", dir="/tmp"))
    state.chmod(0o755)
    exe = str(Path(sys.executable).parent / "drc-embedded")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, *args, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=planted,
        )

    emb = None
    try:
        started = run("start")
        emb = Embedded.load(state)
        assert started.returncode == 0, started.stderr
        assert emb is not None and all(alive(pid) for _, pid in emb.daemons())
    finally:
        run("stop")
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(planted, ignore_errors=True)
    assert not marker.exists()
