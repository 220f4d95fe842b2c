"""Logging for daemons: stderr in the foreground, syslog (the journal) as a service.

DRCS writes an audit line for every change (two per acquire+release), so a record's
cost is part of every verb's: the formats name no thread, function or line, and the daemons
tell :mod:`logging` not to look those up (a stack walk and two lookups per record), and the
foreground timestamp is formatted once per second, not once per line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time


class _DaemonFormatter(logging.Formatter):
    """``%(asctime)s`` as the default formatter writes it, the seconds part cached."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._text, record.msecs)


def setup_logging(program: str, level: str = "info", *, syslog: bool = False) -> None:
    handler: logging.Handler
    if syslog and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter(f"{program}[%(process)d]: %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            _DaemonFormatter(
                f"%(asctime)s {program}[%(process)d] %(levelname)s %(name)s: %(message)s"
            )
        )
    # Nothing the formats print needs the caller's frame, thread or task.
    logging._srcfile = None  # documented way to skip findCaller (see "Optimization")
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # Python >= 3.12 looks the task up for every record
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
