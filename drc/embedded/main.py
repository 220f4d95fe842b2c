"""``drc-embedded``: the whole of drc on one machine, for a laptop, CI or a demo.

``start`` runs a private dbus-daemon (the system bus policy plus drc's own policy file), DRCS
with SQLite and the cookie pool in a state directory, and prints ``export`` lines like
ssh-agent, so ``eval "$(drc-embedded start)"`` points drccli and libdrc at it. ``stop`` stops
everything ``start`` started, by pid. Same code paths as a cluster, other configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from drc.cli.common import run
from drc.core.errors import DrcError
from drc.embedded.dbusd import PrivateBus, start_private_bus, stop_private_bus
from drc.identity import user_name

POLICY_FILE = Path(__file__).resolve().parent.parent / "data" / "org.drc.conf"
STATE_FILE = "embedded.json"


def default_state_dir() -> Path:
    return Path(f"/tmp/drc-embedded-{os.getuid()}")


@dataclass
class Embedded:
    state_dir: str
    bus: PrivateBus
    drcs_pid: int

    def exports(self) -> dict[str, str]:
        return {
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address,
            "DRC_EMBEDDED_DIR": self.state_dir,
        }

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> Embedded | None:
        try:
            raw = json.loads((state_dir / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return cls(raw["state_dir"], PrivateBus(**raw["bus"]), raw["drcs_pid"])


def write_config(state_dir: Path, bus_address: str) -> Path:
    """The embedded drc.conf: SQLite in the state dir, a small cookie pool."""
    conf = state_dir / "drc.conf"
    admin = "" if os.getuid() == 0 else f"admin_groups = [{os.getgid()}]\n"
    conf.write_text(
        "# Written by drc-embedded; see drc.conf(5) for every key.\n"
        "[server]\n"
        f"bus_address = {json.dumps(bus_address)}\n"
        f"database = {json.dumps(f'sqlite:///{state_dir}/drcs.db')}\n"
        'provider = "pool"\n'
        f"{admin}"
        "persistent_groups = []\n\n"
        "[pool]\n"
        "cookie_min = 0x10000\n"
        "cookie_max = 0x103FF\n"
        "cookies_per_credential = 1\n"
        "ptag = 42\n"
    )
    conf.chmod(0o644)
    return conf


def _policy_files(state_dir: Path) -> list[Path]:
    """drc's policy; as a plain user, also let that user own the daemons' names."""
    files = [POLICY_FILE]
    if os.getuid() != 0:
        local = state_dir / "local-policy.conf"
        user = user_name(os.getuid())
        local.write_text(
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            f'<busconfig><policy user="{user}"><allow own="org.drc.Server"/>'
            '<allow own="org.drc.Node"/></policy></busconfig>\n'
        )
        files.append(local)
    return files


def _spawn(state_dir: Path, name: str, argv: list[str]) -> int:
    log = open(state_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    with log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    return proc.pid


def _wait_for_name(address: str, name: str, pid: int, log: Path, timeout: float = 15.0) -> None:
    from drc.bus import SyncBusClient

    bus = SyncBusClient(address, timeout=2.0)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not _alive(pid):
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"{name} exited during start-up:\n  " + "\n  ".join(tail))
            with contextlib.suppress(DrcError):
                owned = bus.call(
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "NameHasOwner",
                    "s",
                    [name],
                )[0]
                if owned:
                    return
            time.sleep(0.05)
    finally:
        bus.close()
    raise RuntimeError(f"{name} did not appear on the bus within {timeout:.0f} s; see {log}")


def start(state_dir: Path) -> Embedded:
    state_dir = state_dir.resolve()
    running = Embedded.load(state_dir)
    if running and _alive(running.bus.pid) and _alive(running.drcs_pid):
        return running
    if running:
        stop(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    bus = start_private_bus(state_dir, policy_files=_policy_files(state_dir))
    emb = Embedded(str(state_dir), bus, 0)
    emb.save()
    try:
        write_config(state_dir, bus.address)
        start_server(emb)
    except BaseException:
        stop(state_dir)
        raise
    return emb


def start_server(emb: Embedded) -> int:
    """(Re)start DRCS in the background and wait until it owns its bus name."""
    state_dir = Path(emb.state_dir)
    argv = [sys.executable, "-m", "drc.server.main", "-c", str(state_dir / "drc.conf")]
    emb.drcs_pid = _spawn(state_dir, "drcs", argv)
    emb.save()
    _wait_for_name(emb.bus.address, "org.drc.Server", emb.drcs_pid, state_dir / "drcs.log")
    return emb.drcs_pid


def stop(state_dir: Path) -> bool:
    emb = Embedded.load(state_dir.resolve())
    if emb is None:
        return False
    if emb.drcs_pid:
        _terminate(emb.drcs_pid)
    stop_private_bus(emb.bus)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, wait, SIGKILL: a daemon that ignores SIGTERM must still go."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _alive(pid):
            return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drc-embedded",
        description="Run drc on one machine: a private D-Bus bus, DRCS with SQLite and a "
        "cookie pool. 'eval \"$(drc-embedded start)\"' sets DBUS_SYSTEM_BUS_ADDRESS so drccli "
        "and libdrc use it; 'drc-embedded stop' stops it.",
    )
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where sockets, database, config and logs live (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state_dir: Path = args.state_dir

    def body() -> int:
        if args.command == "start":
            emb = start(state_dir)
            for key, value in emb.exports().items():
                print(f"{key}={shlex.quote(value)}; export {key};")
            print(
                f"echo drc-embedded running: DRCS pid {emb.drcs_pid}, bus pid {emb.bus.pid}, "
                f"state in {shlex.quote(emb.state_dir)};"
            )
            return 0
        if args.command == "stop":
            stopped = stop(state_dir)
            print("unset DBUS_SYSTEM_BUS_ADDRESS DRC_EMBEDDED_DIR;")
            print(f"echo drc-embedded {'stopped' if stopped else 'was not running'};")
            return 0
        emb = Embedded.load(state_dir.resolve())
        if emb is None:
            print(f"drc-embedded: not running (no state in {state_dir})")
            return 1
        ok = True
        for name, pid in (("dbus-daemon", emb.bus.pid), ("drcs", emb.drcs_pid)):
            alive = _alive(pid)
            ok &= alive
            print(f"{name:12} pid {pid:<8} {'running' if alive else 'NOT RUNNING'}")
        print(f"bus          {emb.bus.address}")
        return 0 if ok else 1

    try:
        return run("drc-embedded", body)
    except RuntimeError as e:
        print(f"drc-embedded: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
