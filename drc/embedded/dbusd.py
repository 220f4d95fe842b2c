"""A private dbus-daemon that behaves like the system bus.

The embedded default (laptop, CI, demos) and the tests run DRCS and DRCC on a bus of their own
instead of the host's system bus, but with the same rules: ``<type>system</type>``, EXTERNAL
authentication only (the bus learns every caller's uid from the kernel) and the system bus's
default-deny policy, plus the project's policy files. So a policy mistake shows up here the
same way it would on a real node.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from drc.embedded.polling import WaitTimeout, wait_for
from drc.embedded.private import open_private, private_dir, write_private
from drc.embedded.processes import UMASK, stop_daemon

DBUS_DAEMON = "dbus-daemon"

# The default policy of Debian's /usr/share/dbus-1/system.conf: nobody may own a name or send a
# method call unless a policy file punches a hole; replies, signals and the bus driver are open.
_SYSTEM_POLICY = """\
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Containers1"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
"""

#: Processes started here, so stop_private_bus() can reap them instead of leaving zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class PrivateBus:
    address: str
    pid: int
    socket_path: str
    config_path: str


def bus_config(socket_path: Path, policy_files: list[Path], user: str | None = None) -> str:
    """The daemon's configuration: system.conf's rules, our socket, our policy files."""
    lines = [
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"',
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">',
        "<busconfig>",
        "  <type>system</type>",
    ]
    if user is not None:
        lines.append(f"  <user>{escape(user)}</user>")
    lines += [
        "  <auth>EXTERNAL</auth>",
        f"  <listen>unix:path={escape(str(socket_path))}</listen>",
        _SYSTEM_POLICY.rstrip("\n"),
    ]
    lines += [f"  <include>{escape(str(Path(p).resolve()))}</include>" for p in policy_files]
    lines.append("</busconfig>")
    return "\n".join(lines) + "\n"


def start_private_bus(
    state_dir: Path,
    *,
    policy_files: list[Path] | tuple[Path, ...] = (),
    user: str | None = None,
    timeout: float = 10.0,
) -> PrivateBus:
    """Start dbus-daemon on ``<state_dir>/bus.sock`` and return once it accepts connections.

    The daemon runs in the foreground (``--nofork``) so the pid is our child's and
    :func:`stop_private_bus` can always stop it. Its output goes to ``<state_dir>/bus.log``.
    """
    daemon = shutil.which(DBUS_DAEMON)
    if daemon is None:
        raise RuntimeError(f"{DBUS_DAEMON} not found in PATH (install the dbus-daemon package)")
    # Every local user must reach the socket (callers are ordinary users): 0711, no more.
    state_dir = private_dir(state_dir, 0o711)
    socket_path = state_dir / "bus.sock"
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # a leftover from a daemon that was killed
    config_path = write_private(
        state_dir / "bus.conf", bus_config(socket_path, list(policy_files), user)
    )

    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(open_private(state_dir / "bus.log"), "ab") as log:
            proc = subprocess.Popen(
                [
                    daemon,
                    f"--config-file={config_path}",  # bus_argument()
                    "--nofork",
                    "--nopidfile",
                    "--nosyslog",
                    f"--print-address={write_fd}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(write_fd,),
                start_new_session=True,  # a Ctrl-C meant for the caller must not kill the bus
                umask=UMASK,
            )
    finally:
        os.close(write_fd)
    _children[proc.pid] = proc
    bus = PrivateBus(
        address="", pid=proc.pid, socket_path=str(socket_path), config_path=str(config_path)
    )
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            _read_address(pipe, proc, state_dir, timeout)
        # Without the daemon's guid, clients (libdrc's sd-bus included) reconnect to a
        # restarted bus on the same socket; the real system bus address carries none either.
        bus.address = f"unix:path={socket_path}"

        _wait_connectable(socket_path, proc, timeout)
        # dbus-daemon creates the socket 0777 itself; make sure, since callers are other users.
        if stat.S_IMODE(socket_path.stat().st_mode) & 0o666 != 0o666:
            socket_path.chmod(0o666)
    except BaseException:
        stop_private_bus(bus)
        raise
    return bus


def _read_address(pipe, proc: subprocess.Popen[bytes], state_dir: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"dbus-daemon did not print its address within {timeout} s")
        ready, _, _ = select.select([pipe], [], [], remaining)
        if ready:
            chunk = os.read(pipe.fileno(), 4096)
            if not chunk:
                proc.wait(timeout=timeout)
                log = (state_dir / "bus.log").read_text(errors="replace").strip()
                raise RuntimeError(
                    f"dbus-daemon exited with status {proc.returncode} before printing its "
                    f"address: {log[-2000:]}"
                )
            data += chunk
    return data.split(b"\n", 1)[0].decode().strip()


def _wait_connectable(socket_path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    def connectable() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"dbus-daemon exited with status {proc.returncode}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(socket_path))
            except OSError:
                return False
            return True

    try:
        wait_for(connectable, timeout, what=f"dbus-daemon socket {socket_path}", interval=0.01)
    except WaitTimeout:
        raise RuntimeError(
            f"dbus-daemon socket {socket_path} not connectable after {timeout} s"
        ) from None


def bus_argument(bus: PrivateBus) -> str:
    """The word of the daemon's command line that names its config: what tells it apart."""
    return f"--config-file={bus.config_path}"


def stop_private_bus(bus: PrivateBus, timeout: float = 5.0) -> bool:
    """SIGTERM the daemon by pid, wait for it, SIGKILL if it does not go. A pid this process
    did not start (read back from a state file) only while it is still the dbus-daemon of
    ``bus.config_path``: False when it lives on as something else, and was left alone."""
    proc = _children.pop(bus.pid, None)
    if proc is not None:  # our child, not reaped yet: its pid cannot have been reused
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    elif not stop_daemon(bus.pid, bus_argument(bus), timeout):
        return False
    socket_path = Path(bus.socket_path)
    if socket_path.is_socket() and not socket_path.is_symlink():
        socket_path.unlink()
    return True


__all__ = ["PrivateBus", "bus_argument", "bus_config", "start_private_bus", "stop_private_bus"]
