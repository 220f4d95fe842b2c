"""Test harness: a private system-like bus with DRCS, and alice, bob and carol to drive it.

Everything another user runs comes from a world-readable copy of drc (the checkout may sit
under a 0700 home). Every daemon started here is stopped by pid in the fixture's teardown.
"""

from __future__ import annotations

import grp
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drc.embedded import cluster as embedded
from drc.embedded.main import command_line, python_task, task
from drc.embedded.runtime import Runtime
from drc.metrics.common import Samples, scrape
from drc.serverclient import ServerProxy

USERS = ("alice", "bob", "carol")
STAFF_GROUP = "drcstaff"  # bob is a member; alice grants it in the gid tests


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def _ensure_user(name: str) -> User:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--user-group", "--shell", "/bin/sh", name], check=True
        )
        pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid)


def ensure_users() -> dict[str, User]:
    """alice, bob and carol (bob also in drcstaff); created when missing."""
    made = {name: _ensure_user(name) for name in USERS}
    try:
        grp.getgrnam(STAFF_GROUP)
    except KeyError:
        subprocess.run(["groupadd", STAFF_GROUP], check=True)
    subprocess.run(["usermod", "-a", "-G", STAFF_GROUP, "bob"], check=True)
    return made


@dataclass
class Cluster:
    """One embedded drc instance and how to run things against it as anybody."""

    state_dir: Path
    emb: embedded.Embedded
    runtime: Runtime
    #: every proxy server() handed out, closed (their bus threads stopped) with the cluster
    proxies: list[ServerProxy] = field(default_factory=list, repr=False)

    @property
    def address(self) -> str:
        return self.emb.bus.address

    def env(self) -> dict[str, str]:
        return {**self.runtime.env(), "DBUS_SYSTEM_BUS_ADDRESS": self.address, "LANG": "C.UTF-8"}

    def run_as(
        self,
        user: str | None,
        argv: list[str],
        *,
        check: bool = False,
        extra_env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env(), **(extra_env or {})}
        prefix = [] if user in (None, "root") else ["runuser", "-u", user, "--"]
        return subprocess.run(
            prefix + argv,
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            cwd="/",
        )

    def spawn(self, argv: list[str]) -> subprocess.Popen[str]:
        """``argv`` left running with this cluster's environment and text pipes on all three
        streams, for a test that talks to it; the test stops it by pid."""
        return subprocess.Popen(
            argv,
            env=self.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )

    def drccli(self, user: str | None, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.run_as(user, [str(self.runtime.bin / "drccli"), *args], **kw)

    def python(self, user: str | None, code: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.run_as(user, ["/usr/bin/python3", "-c", code], **kw)

    def server(self) -> ServerProxy:
        proxy = ServerProxy(self.address)
        self.proxies.append(proxy)
        return proxy

    @property
    def drcs_pid(self) -> int:
        return self.emb.drcs_pid

    @property
    def drcc_pid(self) -> int:
        return self.emb.drcc_pid

    def embedded(self, *args: str) -> list[str]:
        """The ``drc-embedded`` command line for this cluster (root runs it)."""
        return command_line(self.runtime.bin / "drc-embedded", self.state_dir, *args)

    def in_job_argv(self, job: int, user: str, code: str) -> list[str]:
        """Python ``code`` (``client`` imported) as ``user`` in a task of ``job``."""
        return python_task(self.runtime.bin / "drc-embedded", self.state_dir, job, user, code)

    def in_job(self, job: int, user: str, code: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.run_as(None, self.in_job_argv(job, user, code), **kw)

    def task_argv(self, job: int, user: str, argv: list[str]) -> list[str]:
        """``argv`` as ``user`` in a task of ``job`` (``drc-embedded run``; PATH finds drc)."""
        return task(self.runtime.bin / "drc-embedded", self.state_dir, job, user, argv)

    def task(self, job: int, user: str, argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
        return self.run_as(None, self.task_argv(job, user, argv), **kw)

    def drc(self, job: int | None, user: str, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        """The ``drc`` command as ``user`` in a task of ``job``, or outside any job (None)."""
        argv = [str(self.runtime.bin / "drc"), *args]
        return self.run_as(user, argv, **kw) if job is None else self.task(job, user, argv, **kw)

    def end_job(self, job: int) -> str:
        """Tell DRCC ``job`` ended, as the epilog does; what drc-embedded printed."""
        return self.run_as(None, self.embedded("end-job", str(job)), check=True).stdout

    def outside_job(self, user: str, code: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.python(user, "from drc import client\n" + code, **kw)

    def counters(self) -> dict[str, int]:
        from drc.embedded.cluster import node_counters

        return node_counters(self.address)

    def scrape(self, daemon: str) -> Samples:
        """One Prometheus scrape of ``drcs`` or ``drcc`` (started with metrics=True):
        sample name -> {sorted label pairs: value}."""
        where = self.emb.drcs_metrics if daemon == "drcs" else self.emb.drcc_metrics
        assert where, f"{daemon} serves no metrics: start the cluster with metrics=True"
        return scrape(where, timeout=5)


def start_cluster(
    runtime: Runtime, configure: Callable[[Path], None] | None = None, *, metrics: bool = False
) -> Cluster:
    """``configure(config_path)`` may rewrite drc.conf before the daemons first start."""
    state_dir = Path(tempfile.mkdtemp(prefix="drc-embedded-", dir="/tmp"))
    state_dir.chmod(0o755)
    return Cluster(
        state_dir, embedded.start(state_dir, configure=configure, metrics=metrics), runtime
    )


def stop_cluster(cluster: Cluster) -> None:
    for proxy in cluster.proxies:
        proxy.close()
    try:
        embedded.stop(cluster.state_dir)
    finally:
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
