"""Fixtures of the packaging tests (helpers live in pkgtools.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from drc.embedded.runtime import install_runtime

from pkgtools import REPO


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="module")
def nobody_pythonpath() -> Iterator[Path]:
    """drc and what it imports, copied where nobody can read them (the checkout may not be)."""
    path = Path(tempfile.mkdtemp(prefix="drc-test-pkg-py-", dir="/tmp"))
    try:
        yield install_runtime(path).lib
    finally:
        shutil.rmtree(path, ignore_errors=True)
