"""Shared by the packaging tests: the checkout, and running Python as user nobody."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import drc

REPO = Path(drc.__file__).resolve().parents[1]
NOBODY = "nobody"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser"
)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="module")
def nobody_pythonpath() -> Iterator[Path]:
    """drc and dbus_fast copied where nobody can read them (the checkout may not be)."""
    import dbus_fast

    path = Path(tempfile.mkdtemp(prefix="drc-test-pkg-py-", dir="/tmp"))
    try:
        path.chmod(0o755)
        for package in (Path(drc.__file__).parent, Path(dbus_fast.__file__).parent):
            shutil.copytree(package, path / package.name)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
