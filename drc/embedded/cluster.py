"""The embedded cluster: the whole of drc on one machine, as a library object.

:func:`start` runs a private dbus-daemon (the system bus policy plus drc's own policy file), a
private munged, DRCS (SQLite and the cookie pool in a state directory, the DRC link on
127.0.0.1) and DRCC -- or several of each -- and returns an :class:`Embedded` that knows their
pids, buses and addresses and can restart any of them; :func:`stop` stops everything by pid.
``drc-embedded`` (:mod:`drc.embedded.main`), ``make demo``, the tests and the benchmarks all
start drc through here, so they run the same code paths as a cluster, with another config.
The files they run with are written by :mod:`drc.embedded.config`; here is their lifecycle.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drc.core.errors import DrcError
from drc.core.tokens import generate_key
from drc.embedded.config import policy_files, write_config
from drc.embedded.dbusd import PrivateBus, bus_argument, start_private_bus, stop_private_bus
from drc.embedded.munged import PrivateMunged, start_private_munged, stop_private_munged
from drc.embedded.polling import WaitTimeout, free_port, wait_for
from drc.embedded.private import check_private, private_dir, read_private, write_private
from drc.embedded.processes import alive, ours, python_daemon, spawn, stop_daemon
from drc.embedded.processes import terminate as terminate  # tests and benchmarks kill by it
from drc.export import ExportedMethod, Stub

STATE_FILE = "embedded.json"
REPO = Path(__file__).resolve().parents[2]


def default_state_dir() -> Path:
    """Root's in /run, where no other user can make the name first; a user's under /tmp."""
    if os.geteuid() == 0 and Path("/run").is_dir():
        return Path("/run/drc-embedded")
    return Path(f"/tmp/drc-embedded-{os.getuid()}")


@dataclass
class Host:
    """One more DRCS or node of a multi-host embedded cluster: its own bus, config and daemon.

    Node 1 and server 1 are the :class:`Embedded` instance's own bus and daemons; hosts 2..N
    are these. A node has its own node name and boot id; a server its own link address.
    """

    name: str
    bus: PrivateBus
    config: str
    pid: int = 0
    address: str = ""  # a server's [link] listen address


@dataclass
class Embedded:
    """A running embedded cluster: state directory, buses, munged, addresses and daemon pids.

    Saved to ``embedded.json`` in the state directory at every change, so that another process
    (``drc-embedded stop``, a test's clean-up) finds and stops exactly these pids.
    """

    state_dir: str
    bus: PrivateBus
    munged: PrivateMunged | None = None
    drcs_pid: int = 0
    drcc_pid: int = 0
    node_name: str = ""  # node 1's name ("" = this host's name)
    servers: list[str] = field(default_factory=list)  # every DRCS's link address
    extra_servers: list[Host] = field(default_factory=list)  # DRCS 2..M
    extra_nodes: list[Host] = field(default_factory=list)  # nodes 2..N
    database: str = ""
    # host:port of the daemons' Prometheus metrics ("" unless started with metrics)
    drcs_metrics: str = ""
    drcc_metrics: str = ""

    @property
    def config(self) -> Path:
        return Path(self.state_dir) / "drc.conf"

    def exports(self) -> dict[str, str]:
        env = {"DBUS_SYSTEM_BUS_ADDRESS": self.bus.address, "DRC_EMBEDDED_DIR": self.state_dir}
        lib = REPO / "lib" / "build"
        if (lib / "cray-drc.pc").exists():  # the in-tree C library, once built
            env["PKG_CONFIG_PATH"] = _prepend(str(lib), os.environ.get("PKG_CONFIG_PATH"))
            env["LD_LIBRARY_PATH"] = _prepend(str(lib), os.environ.get("LD_LIBRARY_PATH"))
        return env

    def daemons(self) -> list[tuple[str, int]]:
        return [(name, pid) for name, pid, _ in self.started()]

    def started(self) -> list[tuple[str, int, str]]:
        """(name, pid, argument) of every daemon: ``argument``, a word of its command line
        naming a file in the state directory, tells it from a process that reuses its pid."""
        found = [
            ("dbus-daemon", self.bus.pid, bus_argument(self.bus)),
            ("munged", *((self.munged.pid, self.munged.socket) if self.munged else (0, ""))),
            ("drcs", self.drcs_pid, str(self.config)),
            ("drcc", self.drcc_pid, str(self.config)),
        ]
        for host in (*self.extra_servers, *self.extra_nodes):
            kind = "drcs" if host.address else "drcc"
            found += [
                (f"{host.name} bus", host.bus.pid, bus_argument(host.bus)),
                (f"{kind} {host.name}", host.pid, host.config),
            ]
        return found

    def running(self) -> list[tuple[str, int, bool]]:
        """(name, pid, whether that pid still runs the daemon started here) of every daemon."""
        return [(name, pid, ours(pid, arg)) for name, pid, arg in self.started()]

    @property
    def node_count(self) -> int:
        return 1 + len(self.extra_nodes)

    def node_bus(self, node: int) -> str:
        """The bus address of node ``node`` (1-based): where its tasks find DRCC."""
        return self.bus.address if node == 1 else self._node(node).bus.address

    def server_bus(self, index: int) -> str:
        """The bus address of DRCS ``index`` (1-based): where drccli reaches that server."""
        return self.bus.address if index == 1 else self._server(index).bus.address

    def server_config(self, index: int) -> Path:
        """The drc.conf DRCS ``index`` (1-based) runs with."""
        return self.config if index == 1 else Path(self._server(index).config)

    def _node(self, index: int) -> Host:
        if not 2 <= index <= self.node_count:
            raise RuntimeError(f"there is no node {index}: this instance has {self.node_count}")
        return self.extra_nodes[index - 2]

    def _server(self, index: int) -> Host:
        if not 2 <= index <= 1 + len(self.extra_servers):
            count = 1 + len(self.extra_servers)
            raise RuntimeError(f"there is no server {index}: this instance has {count}")
        return self.extra_servers[index - 2]

    def node_names(self) -> list[str]:
        return [self.node_name or socket.gethostname(), *(h.name for h in self.extra_nodes)]

    def start_server(self, index: int = 1) -> int:
        """(Re)start DRCS ``index`` (1-based) in the background; wait until it owns its bus name."""
        if index == 1:
            return _daemon(self, "drcs", "drc.server.main", "org.drc.Server")
        return _host_daemon(self, self._server(index), "drc.server.main", "org.drc.Server")

    def start_node(self, index: int = 1) -> int:
        """(Re)start the DRCC of node ``index`` (1-based); wait until it owns its bus name."""
        if index == 1:
            return _daemon(self, "drcc", "drc.node.main", "org.drc.Node")
        return _host_daemon(self, self._node(index), "drc.node.main", "org.drc.Node")

    def server_pid(self, index: int) -> int:
        return self.drcs_pid if index == 1 else self._server(index).pid

    def node_pid(self, index: int) -> int:
        return self.drcc_pid if index == 1 else self._node(index).pid

    def stop(self) -> bool:
        """Stop everything this instance started (see :func:`stop`)."""
        return stop(Path(self.state_dir))

    def save(self) -> None:
        write_private(Path(self.state_dir) / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> Embedded | None:
        """The instance saved in ``state_dir``; None when none is. Only from a directory and
        a file nobody else could have written (RuntimeError otherwise): its pids get signalled."""
        try:
            state_dir = check_private(state_dir)
            raw = json.loads(read_private(state_dir / STATE_FILE))
        except (FileNotFoundError, ValueError):
            return None
        munged = PrivateMunged(**raw["munged"]) if raw.get("munged") else None

        def hosts(key: str) -> list[Host]:
            return [Host(**{**h, "bus": PrivateBus(**h["bus"])}) for h in raw.get(key, [])]

        return cls(
            raw["state_dir"],
            PrivateBus(**raw["bus"]),
            munged,
            raw.get("drcs_pid", 0),
            raw.get("drcc_pid", 0),
            raw.get("node_name", ""),
            list(raw.get("servers", [])),
            hosts("extra_servers"),
            hosts("extra_nodes"),
            raw.get("database", ""),
            raw.get("drcs_metrics", ""),
            raw.get("drcc_metrics", ""),
        )


def _prepend(path: str, current: str | None) -> str:
    return f"{path}:{current}" if current else path


def _wait_for_name(address: str, name: str, pid: int, log: Path, timeout: float = 15.0) -> None:
    from drc.bus import SyncBusClient

    bus = SyncBusClient(address, timeout=2.0)

    def owned() -> bool:
        if not alive(pid):
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{name} exited during start-up:\n  " + "\n  ".join(tail))
        # The name must be owned by *this* process: right after a SIGKILL the bus may
        # still list the dead predecessor as its owner for a moment.
        with contextlib.suppress(DrcError):
            owner = bus.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetConnectionUnixProcessID",
                "s",
                [name],
            )[0]
            return owner == pid
        return False

    try:
        wait_for(owned, timeout, what=f"{name} on the bus")
    except WaitTimeout:
        raise RuntimeError(
            f"{name} did not appear on the bus within {timeout:.0f} s; see {log}"
        ) from None
    finally:
        bus.close()


def _daemon(emb: Embedded, name: str, module: str, bus_name: str) -> int:
    state_dir = Path(emb.state_dir)
    pid = spawn(state_dir / f"{name}.log", *python_daemon(module, "-c", str(emb.config)))
    setattr(emb, f"{name}_pid", pid)
    emb.save()
    _wait_for_name(emb.bus.address, bus_name, pid, state_dir / f"{name}.log")
    return pid


def _host_daemon(emb: Embedded, host: Host, module: str, bus_name: str) -> int:
    log = Path(host.config).parent / f"{'drcs' if host.address else 'drcc'}.log"
    host.pid = spawn(log, *python_daemon(module, "-c", host.config))
    emb.save()
    _wait_for_name(host.bus.address, bus_name, host.pid, log)
    return host.pid


def _rotated(servers: list[str], node: int) -> list[str]:
    """Node k follows server k first (round robin), then fails over to the others in order."""
    first = (node - 1) % len(servers)
    return servers[first:] + servers[:first]


def _add_host(emb: Embedded, name: str, wlm: str, **config: Any) -> Host:
    """A directory, a private bus and a config for one more host (its daemon not started)."""
    state_dir = Path(emb.state_dir)
    home = state_dir / name
    bus = start_private_bus(home, policy_files=policy_files(state_dir))
    host = Host(name, bus, str(home / "drc.conf"), address=config.get("listen", ""))
    if config.get("listen"):
        emb.extra_servers.append(host)
    else:
        emb.extra_nodes.append(host)
    emb.save()
    write_config(state_dir, emb, wlm, path=Path(host.config), bus_address=bus.address, **config)
    return host


def _server_addresses(count: int) -> list[str]:
    """One link address per DRCS, each on its own loopback address (127.0.0.k)."""
    return [f"127.0.0.{k}:{free_port(f'127.0.0.{k}')}" for k in range(1, count + 1)]


def start(
    state_dir: Path,
    wlm: str = "none",
    *,
    nodes: int = 1,
    servers: int = 1,
    database: str = "",
    configure: Callable[[Path], None] | None = None,
    metrics: bool = False,
) -> Embedded:
    """Start everything (or return what already runs); with ``wlm="slurm"`` DRCC asks Slurm
    for callers' jobs, and DRCS is reconciled with Slurm's active jobs once it is up.

    ``nodes`` > 1: nodes 2..N each get a private bus, a DRCC, a node name (node1, node2 …)
    and a boot id of their own, all served by the same DRCS. ``servers`` > 1: that many DRCS
    on ``database`` (a PostgreSQL URL), on 127.0.0.1, 127.0.0.2 …; every node lists them all
    in ``[link] servers`` and fails over between them. With ``metrics``, DRCS 1 and node 1
    serve Prometheus metrics on free loopback ports.
    """
    if nodes < 1 or servers < 1:
        raise RuntimeError("--nodes and --servers must be at least 1")
    if servers > 1 and not database.startswith(("postgres://", "postgresql://")):
        raise RuntimeError(
            "several DRCS share one PostgreSQL store: give --database postgresql://..."
        )
    # 0711: other users reach the bus and munge sockets by name; they cannot list the
    # directory, and every other file in it is the owner's only (0600).
    state_dir = private_dir(state_dir, 0o711)
    running = Embedded.load(state_dir)
    if running and all(ok for _, _, ok in running.running()):
        return running
    if running:
        with contextlib.suppress(LeftAlone):  # e.g. after a reboot: those pids are not ours
            stop(state_dir)
    for name in ("drcs.db", "drcs.db-wal", "drcs.db-shm"):  # made 0644 by an older drc
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).chmod(0o600)
    bus = start_private_bus(state_dir, policy_files=policy_files(state_dir))
    emb = Embedded(str(state_dir), bus, database=database)
    if metrics:
        emb.drcs_metrics = f"127.0.0.1:{free_port()}"
        emb.drcc_metrics = f"127.0.0.1:{free_port()}"
    emb.save()
    try:
        emb.munged = start_private_munged(state_dir / "munge")
        emb.servers = _server_addresses(servers)
        emb.node_name = "node1" if nodes > 1 else ""
        emb.save()
        key = state_dir / "token.key"
        if not key.exists():
            generate_key(key)
        write_config(state_dir, emb, wlm, node_name=emb.node_name)
        if configure is not None:  # tests turn the config into another site's before start
            configure(emb.config)
        emb.start_server()
        for k in range(2, servers + 1):
            _add_host(emb, f"server{k}", wlm, listen=emb.servers[k - 1])
            emb.start_server(k)
        if wlm == "slurm":
            reconcile(emb)
        emb.start_node()
        for k in range(2, nodes + 1):
            boot = private_dir(state_dir / f"node{k}", 0o711) / "boot_id"
            write_private(boot, f"{uuid.uuid4()}\n")
            _add_host(
                emb,
                f"node{k}",
                "none",
                node_name=f"node{k}",
                boot_id_file=str(boot),
                servers=_rotated(emb.servers, k),
            )
            emb.start_node(k)
    except BaseException:
        stop(state_dir)
        raise
    return emb


def reconcile(emb: Embedded) -> None:
    """DRCS (re)started: expire the jobs Slurm no longer runs, as a cluster's drc-jedi unit does.

    A Slurm that cannot be asked is only reported: nothing is expired then.
    """
    from drc.jedi.main import reconcile as jedi_reconcile
    from drc.wlm import WlmError

    try:
        jedi_reconcile(emb.config)
    except WlmError as e:
        print(f"drc-embedded: reconcile skipped: {e}", file=sys.stderr)


class LeftAlone(RuntimeError):
    """Saved pids that now run other processes: not signalled (all else was stopped)."""


def stop(state_dir: Path) -> bool:
    """Stop every daemon saved in ``state_dir``: False when none was. A saved pid that now
    runs something else is left alone, and named in the :class:`LeftAlone` raised at the end."""
    emb = Embedded.load(state_dir)
    if emb is None:
        return False
    # Nodes first, then servers; the daemons of one kind stop side by side, not one by one.
    left: list[int] = []
    for kind in (
        [(h.pid, h.config) for h in emb.extra_nodes] + [(emb.drcc_pid, str(emb.config))],
        [(h.pid, h.config) for h in emb.extra_servers] + [(emb.drcs_pid, str(emb.config))],
    ):
        daemons = [(pid, argument) for pid, argument in kind if pid != 0]  # 0: never started
        if daemons:
            with ThreadPoolExecutor(max_workers=len(daemons)) as pool:
                gone = pool.map(lambda daemon: stop_daemon(*daemon), daemons)
                left += [pid for (pid, _), ok in zip(daemons, gone, strict=True) if not ok]
    for host in (*emb.extra_nodes, *emb.extra_servers):
        if not stop_private_bus(host.bus):
            left.append(host.bus.pid)
    if emb.munged and not stop_private_munged(emb.munged):
        left.append(emb.munged.pid)
    if not stop_private_bus(emb.bus):
        left.append(emb.bus.pid)
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    if left:
        raise LeftAlone(
            f"pid(s) {' '.join(map(str, left))} saved in {emb.state_dir} no longer run the "
            "daemons drc-embedded started there: not signalled"
        )
    return True


def run_in_job(job: int, user: str | None, argv: list[str], bus_address: str) -> int:
    """Run ``argv`` (as ``user``) as a task of ``job``, vouched for to DRCC as a root hook would.

    Stands in for the SPANK plugin's task registration where no Slurm runs.
    """
    import pwd

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task: wait until registered, then drop privileges and exec
        os.close(write_fd)
        if os.read(read_fd, 1) != b"x":  # not registered: it would run in no job
            os._exit(127)
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus_address  # the task's node's bus
        if user:
            pw = pwd.getpwnam(user)
            os.initgroups(pw.pw_name, pw.pw_gid)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            os.environ.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    os.close(read_fd)
    try:
        with _node(bus_address) as drcc:
            drcc.register_job_pid(pid, job)
        os.write(write_fd, b"x")
    finally:
        os.close(write_fd)  # unregistered, the task exits without running the command
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def end_job(job: int, bus_address: str) -> list[int]:
    """Tell DRCC that ``job`` ended, as the job epilog does."""
    with _node(bus_address) as drcc:
        return drcc.job_ended(job)


def node_counters(bus_address: str) -> dict[str, int]:
    with _node(bus_address) as drcc:
        return drcc.counters()


@contextlib.contextmanager
def _node(bus_address: str) -> Iterator[Any]:
    """DRCC's verbs on one node's bus (a :class:`Stub` of its table), as root hooks call them."""
    from drc.bus import SyncBusClient
    from drc.node.exports import BUS_NAME, INTERFACE, OBJECT_PATH, NodeExports

    with SyncBusClient(bus_address) as bus:

        def send(m: ExportedMethod, args: list[Any]) -> list[Any]:
            return bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, m.name, m.in_signature, args)

        yield Stub(NodeExports, send)
