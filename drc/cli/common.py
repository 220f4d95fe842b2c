"""What every drc command-line front end shares: --version, name lookups, tables.

Errors become exit statuses in :mod:`drc.cli.exits`, the one table for every command.
"""

from __future__ import annotations

import argparse
import grp
import pwd
from collections.abc import Sequence

import drc
from drc.cli.exits import UsageError


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version``: what is installed, for bug reports and upgrade scripts."""
    parser.add_argument("--version", action="version", version=f"%(prog)s (drc) {drc.__version__}")
    return parser


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
