"""Helpers for the C library tests: libdrc built and installed into a world-readable prefix,
C programs compiled against it with nothing but ``pkg-config cray-drc``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "lib"
HERE = Path(__file__).resolve().parent
# What a client may use to build: only what pkg-config says (plus warnings as errors).
CLIENT_CFLAGS = ["-Wall", "-Werror"]
VALGRIND = [
    "valgrind",
    "--quiet",
    "--error-exitcode=99",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,indirect,possible",
]


def pkg_config(pc_dir: Path, *args: str) -> list[str]:
    out = subprocess.run(
        ["pkg-config", *args, "cray-drc"],
        env={**os.environ, "PKG_CONFIG_PATH": str(pc_dir)},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


@dataclass(frozen=True)
class CLib:
    """libdrc installed under ``prefix`` (mode 0755, under /tmp: other users can load it)."""

    prefix: Path

    @property
    def pc_dir(self) -> Path:
        return self.prefix / "lib" / "pkgconfig"

    def env(self) -> dict[str, str]:
        return {"LD_LIBRARY_PATH": str(self.prefix / "lib")}

    def compile(self, source: Path, name: str, *extra: str) -> Path:
        """``cc -Wall -Werror -o prefix/bin/NAME SOURCE $(pkg-config --cflags --libs cray-drc)``."""
        binary = self.prefix / "bin" / name
        flags = pkg_config(self.pc_dir, "--cflags", "--libs")
        result = subprocess.run(
            ["cc", *CLIENT_CFLAGS, *extra, "-o", str(binary), str(source), *flags],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"compiling {source.name} failed:\n{result.stderr}"
        binary.chmod(0o755)
        return binary


def make_lib(*args: str) -> None:
    result = subprocess.run(["make", "-s", "-C", str(LIB), *args], capture_output=True, text=True)
    assert result.returncode == 0, f"make -C lib {' '.join(args)} failed:\n{result.stderr}"


def spawn_as(
    cluster: Cluster,
    user: str,
    argv: list[str],
    extra_env: dict[str, str],
) -> subprocess.Popen[str]:
    """Like Cluster.run_as, for a process the test talks to over stdin/stdout."""
    return subprocess.Popen(
        ["runuser", "-u", user, "--", *argv],
        env={**cluster.env(), **extra_env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )


@contextlib.contextmanager
def installed_clib() -> Iterator[CLib]:
    """libdrc built and installed in a world-readable prefix (other users run its programs),
    removed afterwards."""
    make_lib()
    prefix = Path(tempfile.mkdtemp(prefix="drc-clib-", dir="/tmp"))
    try:
        prefix.chmod(0o755)
        make_lib("install", f"PREFIX={prefix}")
        (prefix / "bin").mkdir(mode=0o755)
        yield CLib(prefix)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
