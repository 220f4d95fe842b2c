"""Logging for daemons: stderr in the foreground, syslog (the journal) as a service."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys


def setup_logging(program: str, level: str = "info", *, syslog: bool = False) -> None:
    handler: logging.Handler
    if syslog and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter(f"{program}[%(process)d]: %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s {program}[%(process)d] %(levelname)s %(name)s: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
