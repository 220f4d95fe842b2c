"""What every drc command-line front end shares: --version, name lookups, tables.

Errors become exit statuses in :mod:`drc.cli.exits`, the one table for every command.
"""

from __future__ import annotations

import argparse
import grp
import pwd
from collections.abc import Sequence

import drc
from drc.cli.exits import UsageError, documented


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version``: what is installed, for bug reports and upgrade scripts."""
    parser.add_argument("--version", action="version", version=f"%(prog)s (drc) {drc.__version__}")
    return parser


def document_exit_status(parser: argparse.ArgumentParser, program: str) -> None:
    """The --help epilog and the man page's EXIT STATUS section (argparse-manpage reads
    ``parser._manpage``), both from the one table of :mod:`drc.cli.exits`."""
    statuses = documented(program)
    parser.epilog = "Exit status: " + "; ".join(f"{code} {text}" for code, text in statuses) + "."
    roff = "\n".join(
        f".TP\n.B {code}\n{text.replace('-', chr(92) + '-')}" for code, text in statuses
    )
    man_section(parser, "exit status", roff)


def man_section(parser: argparse.ArgumentParser, heading: str, roff: str) -> None:
    """One more section of the command's generated man page (argparse-manpage)."""
    if not hasattr(parser, "_manpage"):
        parser._manpage = []  # type: ignore[attr-defined]
    parser._manpage.append({"heading": heading, "content": roff})  # type: ignore[attr-defined]


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


def add_target(parser: argparse.ArgumentParser, job: str, metavar: tuple[str, str, str]) -> None:
    """grant/revoke's one target: ``-u USER``, ``-g GROUP`` or ``-j`` with the job option
    ``job`` names (``--job`` for drc, ``--wlmid`` for drccli); read back by :func:`target_of`."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-u", "--uid", metavar=metavar[0], help="user name or uid")
    target.add_argument("-g", "--gid", metavar=metavar[1], help="group name or gid")
    target.add_argument("-j", job, dest="job", metavar=metavar[2], type=int, help="job (WLM) id")


def target_of(args: argparse.Namespace) -> tuple[str, int]:
    """("uid" | "gid" | "wlm", id) of the target :func:`add_target` parsed."""
    if args.uid is not None:
        return "uid", uid_of(args.uid)
    if args.gid is not None:
        return "gid", gid_of(args.gid)
    return "wlm", args.job


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Right-aligned columns, as ``drccli list`` has always printed them."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    )
