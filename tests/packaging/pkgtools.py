"""Shared by the packaging tests: the checkout, and running Python as user nobody."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

import drc

REPO = Path(drc.__file__).resolve().parents[1]
NOBODY = "nobody"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser"
)


def run_as_nobody(pythonpath: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    runuser = shutil.which("runuser") or "runuser"
    return subprocess.run(
        [runuser, "-u", NOBODY, "--", "/usr/bin/python3", "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath), "HOME": "/"},
        cwd="/",
    )
