"""Every installed command answers --version: what an admin pastes into a bug report."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import drc

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def test_the_known_commands_are_all_console_scripts() -> None:
    assert {"drccli", "drc-jedi", "drc-embedded", "drcs", "drcc"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_installed_script_answers_version(script: str) -> None:
    path = Path(sys.executable).parent / script
    assert path.exists(), f"{script} is not installed next to {sys.executable}: make deps"
    r = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{script} (drc) {drc.__version__}\n", "")


def test_the_alps_epilog_hook_answers_version() -> None:
    """Not a console script (ALPS runs it from libexec), but a command an admin runs too."""
    hook = REPO / "plugins" / "alps" / "drc-alps-epilog"
    r = subprocess.run(
        [sys.executable, str(hook), "--version"], capture_output=True, text=True, timeout=60
    )
    assert (r.returncode, r.stdout) == (0, f"drc-alps-epilog (drc) {drc.__version__}\n")
