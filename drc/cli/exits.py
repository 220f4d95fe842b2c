"""One exception -> exit status table for every drc command: drc, drccli, drc-jedi,
drc-embedded, drcs and drcc.

Scripts and systemd units branch on these numbers, so they must mean the same thing whichever
command returned them. The man pages' EXIT STATUS sections and drccli's --help are written from
:data:`RULES`; change a status here and tests/cli/test_exits.py shows every place that says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from drc.config import ConfigError
from drc.core.errors import Code, DrcError
from drc.wlm.base import WlmError

EXIT_OK = 0
#: DRC refused the request, or a daemon (or drc-embedded) could not start or do its work.
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad command line or config: retrying cannot help (RestartPreventExitStatus=2)
#: A service the command needs did not answer: DRCS (DRC_ECONNREFUSED) or the workload manager.
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a SIGINT death


class UsageError(Exception):
    """A bad command line or config: exit status 2."""


class NotInJob(Exception):
    """``drc`` would take a reference for a process that is about to exit: exit status 2."""


def _unreachable(e: BaseException) -> bool:
    return isinstance(e, DrcError) and e.code is Code.ECONNREFUSED


@dataclass(frozen=True)
class Rule:
    """Exceptions of ``kind`` (for which ``applies`` holds) exit with ``status``.

    ``commands``: the programs that can meet it, for their documentation (all when empty).
    """

    kind: type[BaseException]
    status: int
    meaning: str
    applies: Callable[[BaseException], bool] = lambda _e: True
    commands: frozenset[str] = frozenset()


#: First matching rule wins. Anything else is a bug: a command shows its traceback, a daemon
#: logs it and exits EXIT_FAILURE (see :func:`daemon_status`).
RULES: tuple[Rule, ...] = (
    Rule(KeyboardInterrupt, EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    Rule(UsageError, EXIT_USAGE, "usage error: bad option, unknown user or group, missing value"),
    Rule(
        NotInJob,
        EXIT_USAGE,
        "not in a job: drcc sees no job for this process, so 'drc acquire' (without "
        "--persistent) and 'drc access' would hold nothing past drc's own exit; run drc in "
        "a job's task (srun, sbatch, drc-embedded run)",
        commands=frozenset({"drc"}),
    ),
    Rule(
        ConfigError,
        EXIT_USAGE,
        "config error: one line names the file and the key",
        commands=frozenset({"drc-jedi"}),
    ),
    Rule(
        DrcError,
        EXIT_UNAVAILABLE,
        "a DRC daemon did not answer, or could not reach DRCS (DRC_ECONNREFUSED): the message "
        "names the one to look at (drcs or drcc): start it if stopped (e.g. 'systemctl "
        "start drcs.service' on the service node), look at its 'systemctl status' if hung; "
        "or check the bus address",
        _unreachable,
    ),
    Rule(
        WlmError,
        EXIT_UNAVAILABLE,
        "the workload manager could not be asked; nothing was expired",
        commands=frozenset({"drc-jedi"}),
    ),
    Rule(
        DrcError,
        EXIT_FAILURE,
        "DRC refused the request; stderr says 'PROGRAM: DRC_NAME: why' (DRC_EPERM, DRC_ENOSPC, "
        "DRC_CRED_NOT_FOUND ...)",
    ),
    Rule(
        RuntimeError,
        EXIT_FAILURE,
        "a daemon failed to start (the message says which)",
        commands=frozenset({"drc-embedded"}),
    ),
)


def rule_for(error: BaseException) -> Rule | None:
    """The rule ``error`` falls under, or None for an exception no front end expects."""
    return next((r for r in RULES if isinstance(error, r.kind) and r.applies(error)), None)


def exit_status(error: BaseException) -> int | None:
    """The exit status for ``error``, or None when it is a bug (no rule matches)."""
    rule = rule_for(error)
    return rule.status if rule else None


def daemon_status(error: BaseException) -> int:
    """A daemon's start-up ended by ``error``: 2 for a config error (systemd must not restart
    it), 130 for Ctrl-C, else 1 -- a daemon that cannot reach what it needs is a failed
    start (systemd retries it), not a client told to come back later."""
    status = exit_status(error)
    return status if status in (EXIT_USAGE, EXIT_INTERRUPTED) else EXIT_FAILURE


def message(program: str, error: BaseException) -> str:
    """The one stderr line: ``program: DRC_NAME: why`` for a DRC error, else ``program: why``."""
    if isinstance(error, DrcError):
        return f"{program}: {error.name}: {error.message}"
    return f"{program}: {error}"


def run(program: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; an expected error prints one line and exits as :data:`RULES` say.

    A Ctrl-C prints nothing. Any other exception propagates: a bug shows its traceback.
    """
    try:
        return body() or EXIT_OK
    except BaseException as e:
        status = exit_status(e)
        if status is None:
            raise
        if not isinstance(e, KeyboardInterrupt):
            print(message(program, e), file=sys.stderr)
        return status


def documented(program: str) -> list[tuple[int, str]]:
    """(status, meaning) pairs in status order for ``program``'s --help epilog and man page;
    the meanings of one status are joined."""
    found: dict[int, list[str]] = {EXIT_OK: ["success"]}
    for r in RULES:
        if not r.commands or program in r.commands:
            found.setdefault(r.status, []).append(r.meaning.replace("PROGRAM", program))
    return [(status, "; or ".join(found[status])) for status in sorted(found)]
