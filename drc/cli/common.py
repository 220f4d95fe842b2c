"""What every drc command-line front end shares: error → exit status, name lookups, tables."""

from __future__ import annotations

import grp
import pwd
import sys
from collections.abc import Callable, Sequence

from drc.core.errors import DrcError

EXIT_OK, EXIT_DRC_ERROR, EXIT_USAGE = 0, 1, 2


def run(program: str, body: Callable[[], int | None]) -> int:
    """Run a CLI body: DRC errors print ``program: DRC_NAME: message`` and exit 1."""
    try:
        return body() or EXIT_OK
    except DrcError as e:
        print(f"{program}: {e.name}: {e.message}", file=sys.stderr)
        return EXIT_DRC_ERROR
    except UsageError as e:
        print(f"{program}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


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
