"""A world-readable copy of drc for other local users (the demo's and the tests' alice and bob).

A checkout (and its ``.venv``) may sit under a 0700 home, where other users cannot execute it.
This copies the ``drc`` package and the few libraries it imports into a prefix every user can
read, and writes ``bin/`` wrappers that run them with Debian's ``/usr/bin/python3`` — the
interpreter the venv was built from, so compiled extensions match.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from drc.embedded.private import private_dir, write_private

PACKAGES = ("drc", "dbus_fast", "peewee", "playhouse", "prometheus_client")
COMMANDS = {
    "drccli": "drc.cli.drccli",
    "drc": "drc.cli.task",
    "drcs": "drc.server.main",
    "drcc": "drc.node.main",
    "drc-embedded": "drc.embedded.main",
}
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Runtime:
    prefix: Path

    @property
    def lib(self) -> Path:
        return self.prefix / "lib"

    @property
    def bin(self) -> Path:
        return self.prefix / "bin"

    def env(self) -> dict[str, str]:
        """Environment additions that make ``/usr/bin/python3 -m drc…`` work for anyone."""
        return {"PYTHONPATH": str(self.lib), "PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin"}


def _source_of(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find the {package!r} package to copy")
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def install_runtime(prefix: Path) -> Runtime:
    """(Re)create ``prefix`` with lib/ (packages) and bin/ (wrappers), all mode 0755/0644.

    Root runs these wrappers, so ``prefix`` must be :func:`private_dir`'s: made here, or this
    user's and writable by nobody else (readable by all, by design), and so must bin/; lib/
    is made afresh, and each wrapper replaced, never written through a link.
    """
    rt = Runtime(private_dir(prefix, 0o755))
    shutil.rmtree(rt.lib, ignore_errors=True)
    os.mkdir(rt.lib, 0o755)  # fails if anything is still there
    private_dir(rt.bin, 0o755)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        src = _source_of(package)
        if src.is_dir():
            shutil.copytree(src, rt.lib / src.name, ignore=ignore)
        else:
            shutil.copy2(src, rt.lib / src.name)
    for command, module in COMMANDS.items():
        wrapper = f'#!/bin/sh\nPYTHONPATH="{rt.lib}" exec {SYSTEM_PYTHON} -m {module} "$@"\n'
        write_private(rt.bin / command, wrapper, 0o755)
    for root, _dirs, files in os.walk(rt.prefix):
        os.chmod(root, 0o755)
        for name in files:
            path = Path(root, name)
            path.chmod(0o755 if path.parent == rt.bin else 0o644)
    for parent in rt.prefix.parents:
        if parent.stat().st_mode & 0o001 == 0:
            raise RuntimeError(
                f"{parent} is not traversable by other users: choose a runtime "
                "prefix under /tmp or /opt"
            )
    return rt
