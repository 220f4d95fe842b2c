"""A bad /etc/drc/drc.conf stops drcs and drcc at once: exit status 2 (systemd does not restart
them) and one line on stderr naming the file and the key. Real daemon processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
DAEMONS = ["drcs", "drcc"]

CASES = {
    "unknown-key": ('[server]\ndatabse = "sqlite:////tmp/x.db"\n', ["'databse'", "[server]"]),
    "unknown-section": ("[sever]\nprovider = 'pool'\n", ["[sever]"]),
    "wrong-type": ('[link]\ntimeout = "5"\n', ["[link] timeout", "integer"]),
    "wrong-type-list": ("[server]\nadmin_groups = 'wheel'\n", ["[server] admin_groups", "list"]),
    "bool-for-int": ("[pool]\nptag = true\n", ["[pool] ptag"]),
    "not-toml": ("[server\n", ["not valid TOML"]),
    # DRCC's budget for DRCS must end before its clients give up (drc.config.CLIENT_TIMEOUT)
    "link-budget-outlasts-clients": (
        "[link]\ntimeout = 8\n",
        ["[link] timeout = 8", "1 to 7 seconds", "wait 10 s", "blame drcc"],
    ),
    "link-budget-zero": ("[link]\ntimeout = 0\n", ["[link] timeout = 0", "1 to 7 seconds"]),
}


def start(daemon: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / daemon), "-c", str(config)], capture_output=True, text=True, timeout=30
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], daemon: str, *words: str):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{daemon}: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("daemon", DAEMONS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_one_line_naming_file_and_key_and_exit_2(tmp_path, daemon, case) -> None:
    text, words = CASES[case]
    config = tmp_path / "drc.conf"
    config.write_text(text)
    assert_one_line_exit_2(start(daemon, config), daemon, str(config), *words)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_missing_config_file_is_exit_2(tmp_path, daemon) -> None:
    config = tmp_path / "nowhere" / "drc.conf"
    assert_one_line_exit_2(start(daemon, config), daemon, str(config), "not found")


def test_drcc_without_a_server_to_talk_to_is_a_config_error(tmp_path) -> None:
    """Found once the daemon builds its link, so earlier start-up warnings may precede it."""
    config = tmp_path / "drc.conf"
    config.write_text('[node]\nwlm = "none"\n')
    result = start("drcc", config)
    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("drcc: ") and str(config) in last and "[link] server" in last
