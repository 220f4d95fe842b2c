"""What drcs and drcc share as processes: command line, config loading, logging, signals, and
telling systemd how they are (``Type=notify``, ``WatchdogSec=``: :mod:`drc.sdnotify`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

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
        profiled(prog, lambda: asyncio.run(serve(cfg)))
    except (Exception, KeyboardInterrupt) as e:  # start-up failures: say what, once
        logging.getLogger(f"drc.{prog}").debug("start-up failed", exc_info=True)
        if not isinstance(e, KeyboardInterrupt):
            print(message(prog, e), file=sys.stderr)
        return daemon_status(e)
    return EXIT_OK


#: A directory: the daemon runs under cProfile and writes ``<prog>.<pid>.prof`` there when it
#: stops (for benchmarks: where a figure is missed, the profile says why). Unset in production.
PROFILE_ENV = "DRC_PROFILE"


def profiled(prog: str, run: Callable[[], None]) -> None:
    """``run()``, profiled when :data:`PROFILE_ENV` names a directory."""
    directory = os.environ.get(PROFILE_ENV)
    if not directory:
        run()
        return
    import cProfile

    profile = cProfile.Profile()
    try:
        profile.runcall(run)
    finally:
        profile.dump_stats(os.path.join(directory, f"{prog}.{os.getpid()}.prof"))
