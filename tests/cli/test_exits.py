"""One exception -> exit status table for drccli, drc-jedi, drc-embedded, drcs and drcc: every
rule, what each front end does with an error, and the help and man pages that document it."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drc.cli import drccli, task
from drc.cli.exits import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    NotInJob,
    UsageError,
    daemon_status,
    documented,
    exit_status,
    run,
)
from drc.config import ConfigError
from drc.core.errors import Code, DrcError
from drc.daemon import daemon_parser, run_daemon
from drc.embedded import main as embedded_cli
from drc.jedi import main as jedi
from drc.wlm import WlmError

REPO = Path(__file__).resolve().parents[2]

CASES = [
    (KeyboardInterrupt(), EXIT_INTERRUPTED),
    (UsageError("no such user: 'nobody2'"), EXIT_USAGE),
    (NotInJob("drcc on node1 sees no job for this process"), EXIT_USAGE),
    (ConfigError("/etc/drc/drc.conf: [server] databse: unknown key"), EXIT_USAGE),
    (DrcError(Code.ECONNREFUSED), EXIT_UNAVAILABLE),
    (WlmError("squeue failed"), EXIT_UNAVAILABLE),
    (DrcError(Code.EPERM), EXIT_FAILURE),
    (DrcError(Code.CRED_NOT_FOUND), EXIT_FAILURE),
    (RuntimeError("munged did not start"), EXIT_FAILURE),
]


@pytest.mark.parametrize(("error", "status"), CASES, ids=lambda c: type(c).__name__)
def test_every_expected_error_has_its_status(error: BaseException, status: int) -> None:
    assert exit_status(error) == status


def test_an_unexpected_error_is_no_rule_a_command_shows_its_traceback() -> None:
    assert exit_status(ValueError("bug")) is None

    def buggy() -> int:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        run("drccli", buggy)


@pytest.mark.parametrize(("error", "status"), CASES, ids=lambda c: type(c).__name__)
def test_run_prints_one_line_and_returns_the_status(error, status, capsys) -> None:
    def body() -> int:
        raise error

    assert run("drccli", body) == status
    err = capsys.readouterr().err
    if isinstance(error, KeyboardInterrupt):
        assert err == ""  # the shell already shows ^C
    elif isinstance(error, DrcError):
        assert err == f"drccli: {error.name}: {error.message}\n"
    else:
        assert err == f"drccli: {error}\n"


def test_run_returns_the_bodys_status() -> None:
    assert run("drc-embedded", lambda: None) == EXIT_OK
    assert run("drc-embedded", lambda: 7) == 7  # drc-embedded run: the command's own status


def test_a_daemon_that_cannot_start_exits_1_whatever_it_could_not_reach() -> None:
    """systemd restarts a failed start (1); only a config error (2) is final."""
    assert daemon_status(DrcError(Code.ECONNREFUSED)) == EXIT_FAILURE
    assert daemon_status(OSError("address in use")) == EXIT_FAILURE
    assert daemon_status(ConfigError("bad key")) == EXIT_USAGE
    assert daemon_status(KeyboardInterrupt()) == EXIT_INTERRUPTED


def test_daemon_main_maps_a_start_up_error_through_the_table(
    tmp_path: Path, capsys, daemon_logging_undone: None
) -> None:
    config = tmp_path / "drc.conf"
    config.write_text("")

    async def unreachable(_cfg) -> None:
        await asyncio.sleep(0)
        raise DrcError(Code.ECONNREFUSED, "the D-Bus bus at unix:path=/nowhere is not running")

    parser = daemon_parser("drcs", "test")
    assert run_daemon(parser, ["-c", str(config)], unreachable) == EXIT_FAILURE
    assert capsys.readouterr().err == (
        "drcs: DRC_ECONNREFUSED: the D-Bus bus at unix:path=/nowhere is not running\n"
    )
    config.write_text("[server]\ndatabse = 1\n")
    assert run_daemon(parser, ["-c", str(config)], unreachable) == EXIT_USAGE
    assert "databse" in capsys.readouterr().err


def test_drc_jedi_exits_3_when_the_wlm_or_drcs_does_not_answer(tmp_path, mocker, capsys) -> None:
    config = tmp_path / "drc.conf"
    config.write_text("")
    mocker.patch.object(jedi, "reconcile", side_effect=WlmError("squeue: timeout"))
    assert jedi.main(["reconcile", "-c", str(config)]) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err == (
        "drc-jedi: cannot ask the workload manager, nothing expired: squeue: timeout\n"
    )
    mocker.patch.object(jedi, "reconcile", side_effect=DrcError(Code.ECONNREFUSED))
    assert jedi.main(["reconcile", "-c", str(config)]) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.startswith("drc-jedi: DRC_ECONNREFUSED: ")


def test_drc_embedded_not_running_exits_1_with_the_command_to_run(tmp_path, capsys) -> None:
    assert embedded_cli.main(["counters", "--state-dir", str(tmp_path)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("drc-embedded: not running") and "drc-embedded start" in err


def test_drccli_unreachable_exits_3(capsys) -> None:
    bus = "unix:path=/nonexistent/drc-test-bus.sock"
    assert drccli.main(["--bus", bus, "list"]) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.startswith("drccli: DRC_ECONNREFUSED: ")


@pytest.mark.parametrize(
    ("program", "parser"),
    [
        ("drccli", drccli.build_parser),
        ("drc", task.build_parser),
        ("drc-jedi", jedi.build_parser),
        ("drc-embedded", embedded_cli.build_parser),
    ],
)
def test_help_lists_every_status_the_table_gives_the_command(program, parser) -> None:
    epilog = parser().epilog
    assert epilog.startswith("Exit status: ")
    for status, meaning in documented(program):
        assert f"{status} {meaning}" in epilog


def exit_section(page: str) -> str:
    start = page.index('.SH "EXIT STATUS"')
    end = page.find("\n.SH ", start + 1)
    return page[start : end if end > 0 else None]


@pytest.mark.parametrize("program", ["drc-jedi.8", "drc-embedded.1"])
def test_man_page_documents_the_statuses_of_the_table(program: str) -> None:
    section = exit_section((REPO / "man" / program).read_text())
    listed = {int(s) for s in re.findall(r"^\.B (\d+)$", section, re.M)}
    assert listed == {status for status, _ in documented(program.rsplit(".", 1)[0])}


@pytest.mark.parametrize("program", ["drcs.8", "drcc.8"])
def test_daemon_man_pages_document_what_daemon_status_returns(program: str) -> None:
    section = exit_section((REPO / "man" / program).read_text())
    listed = {int(s) for s in re.findall(r"^\.B (\d+)$", section, re.M)}
    assert listed == {EXIT_OK, EXIT_FAILURE, EXIT_USAGE}


def test_drccli_man_page_is_generated_from_the_table(tmp_path: Path) -> None:
    """make man writes drccli(1)'s EXIT STATUS from the table (argparse-manpage)."""
    out = tmp_path / "drccli.1"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "argparse-manpage"),
            "--pyfile",
            str(REPO / "drc" / "cli" / "drccli.py"),
            "--function",
            "build_parser",
            "--prog",
            "drccli",
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    section = out.read_text().upper()
    for status, _ in documented("drccli"):
        assert f".B {status}\n" in section
