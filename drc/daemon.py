"""What drcs and drcc share as processes: command line, config loading, logging, signals, and
telling systemd how they are (``Type=notify``, ``WatchdogSec=``: :mod:`drc.sdnotify`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator

from drc import config as drc_config
from drc.cli.common import add_version
from drc.cli.exits import EXIT_OK, daemon_status, message
from drc.logsetup import setup_logging
from drc.sdnotify import feed_watchdog, notify, watchdog_interval


def daemon_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Exit status: 0 after SIGTERM/SIGINT, 1 when start-up failed, 2 for a config error.",
    )
    parser.add_argument(
        "-c",
        "--config",
        default=str(drc_config.DEFAULT_PATH),
        help="config file (default: %(default)s)",
    )
    parser.add_argument(
        "--syslog", action="store_true", help="log to syslog/the journal instead of stderr"
    )
    return add_version(parser)


def ready(status: str) -> None:
    """Start-up is done and the daemon serves: tell systemd (``READY=1``, ``status`` for
    ``systemctl status``) and feed its watchdog from now on, while the event loop turns."""
    notify(f"READY=1\nSTATUS={status}")
    interval = watchdog_interval()
    if interval is not None:
        feed_watchdog(interval)


async def until_stopped() -> None:
    """Return on SIGTERM or SIGINT: the daemons' orderly way out (systemd hears STOPPING=1)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    notify("STOPPING=1")


#: Set to a file name, a daemon runs under cProfile and writes its profile there when it stops
#: by SIGTERM or SIGINT: ``NAME.PID`` for the event loop's thread, ``NAME.PID.THREAD`` for each
#: other thread that ended (DRCS's store thread): how benchmarks find where a daemon's time goes.
PROFILE_ENV = "DRC_PROFILE"


@contextlib.contextmanager
def _profiled() -> Iterator[None]:
    """Profile the daemon when :data:`PROFILE_ENV` names a file; nothing otherwise."""
    path = os.environ.get(PROFILE_ENV)
    if not path:
        yield
        return
    run = threading.Thread.run

    def profiled_run(thread: threading.Thread) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            run(thread)
        finally:
            profile.disable()
            profile.dump_stats(f"{path}.{os.getpid()}.{thread.name}")

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(f"{path}.{os.getpid()}")


def run_daemon(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    serve: Callable[[drc_config.Config], Awaitable[None]],
) -> int:
    """Load the config, set up logging, serve until a signal; errors become one line."""
    prog = parser.prog
    args = parser.parse_args(argv)
    try:
        cfg = drc_config.load(args.config)
        setup_logging(prog, cfg["log"]["level"], syslog=args.syslog)
        with _profiled():
            asyncio.run(serve(cfg))
    except (Exception, KeyboardInterrupt) as e:  # start-up failures: say what, once
        logging.getLogger(f"drc.{prog}").debug("start-up failed", exc_info=True)
        if not isinstance(e, KeyboardInterrupt):
            print(message(prog, e), file=sys.stderr)
        return daemon_status(e)
    return EXIT_OK
