"""What every drc command-line front end shares: error → exit status, name lookups, tables."""

from __future__ import annotations

import argparse
import grp
import pwd
import sys
from collections.abc import Callable, Mapping, Sequence

import drc
from drc.core.errors import Code, DrcError

EXIT_OK, EXIT_DRC_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_UNREACHABLE = 3  # drccli: DRCS did not answer (ECONNREFUSED)
EXIT_INTERRUPTED = 130


def run(
    program: str, body: Callable[[], int | None], codes: Mapping[Code, int] | None = None
) -> int:
    """Run a CLI body: DRC errors print ``program: DRC_NAME: message`` and exit 1 (or the
    status ``codes`` gives that error code)."""
    try:
        return body() or EXIT_OK
    except DrcError as e:
        print(f"{program}: {e.name}: {e.message}", file=sys.stderr)
        return (codes or {}).get(e.code, EXIT_DRC_ERROR)
    except UsageError as e:
        print(f"{program}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version``: what is installed, for bug reports and upgrade scripts."""
    parser.add_argument("--version", action="version", version=f"%(prog)s (drc) {drc.__version__}")
    return parser


class UsageError(Exception):
    """A bad command line or config: exit status 2."""


def uid_of(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise UsageError(f"no such user: {user!r}") from None


def gid_of(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"no such group: {group!r}") from None


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Right-aligned columns, as ``drccli list`` has always printed them."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    )
