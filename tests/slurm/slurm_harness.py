"""A real single-node Slurm (slurmctld + slurmd + the drc SPANK plugin) on this machine, with drc.

Everything lives in one world-readable directory under /tmp: slurm.conf (found through
``SLURM_CONF``, so /etc/slurm is never touched), a generated plugstack.conf loading a copy of
``drc.so`` with ``bus=<the embedded bus>`` (so slurmstepd reaches the embedded DRCC without any
change to slurmd's environment), state, logs and pid files. Slurm authenticates with the
embedded drc's private munged (``AuthInfo=socket=...``), and both Slurm daemons listen on free
loopback ports: nothing system-wide is started or rewritten. DRCS and DRCC run through
``drc-embedded`` with ``wlm = "slurm"``.

Needs root and Slurm's Debian packages (listed in .ci/apt-packages.txt, as for CI). ``stop()``
cancels every job, then stops each daemon by pid (also after a failed start).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from drc.embedded import cluster as embedded
from drc.embedded.polling import WaitTimeout, free_port, wait_for
from drc.embedded.processes import alive, terminate
from drc.embedded.runtime import Runtime
from drc.serverclient import ServerProxy

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "plugins" / "spank"
#: Jobs that may run at once on the one node (config_overrides lets CPUs exceed the cores).
CPUS = 16


def _slurm_version() -> tuple[int, int]:
    """(major, minor) of the installed slurmd, from `slurmd -V` ("slurm 24.11.5")."""
    out = subprocess.run(["slurmd", "-V"], capture_output=True, text=True, check=True).stdout
    major, minor = out.split()[1].split(".")[:2]
    return int(major), int(minor)


def build_plugin() -> Path:
    """``make -C plugins/spank``; the path of the built drc.so."""
    subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR)], check=True, timeout=120)
    return PLUGIN_DIR / "build" / "drc.so"


@dataclass
class SlurmNode:
    """One slurmctld + slurmd on this machine, and drc next to it."""

    root: Path
    runtime: Runtime
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    emb: embedded.Embedded | None = None
    plugin_args: str = ""
    _saved_conf: str | None = None

    # ------------------------------------------------------------------ paths

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def plugstack(self) -> Path:
        return self.root / "plugstack.conf"

    @property
    def plugin(self) -> Path:
        return self.root / "lib" / "drc.so"

    @property
    def out(self) -> Path:
        """Where jobs of any user may write (1777)."""
        return self.root / "out"

    @property
    def drc_dir(self) -> Path:
        return self.root / "drc"

    def pidfile(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    @property
    def bus(self) -> str:
        assert self.emb is not None
        return self.emb.bus.address

    def env(self) -> dict[str, str]:
        """Environment for Slurm commands and drc tools, for any user."""
        return {
            **self.runtime.env(),
            "SLURM_CONF": str(self.conf),
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus,
            "LANG": "C.UTF-8",
        }

    # ------------------------------------------------------------------ running things

    def run(
        self,
        user: str | None,
        argv: list[str],
        *,
        timeout: float = 60,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` as ``user`` (root when None) with the cluster's environment."""
        prefix = [] if user in (None, "root") else ["runuser", "-u", user, "--"]
        return subprocess.run(
            prefix + argv,
            env={**self.env(), **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(self.out),
        )

    def srun(self, user: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # -Q: no "job ... queued" chatter on stderr; the tests compare it.
        return self.run(user, ["srun", "-Q", "-N1", "-n1", *args], timeout=timeout)

    def sbatch(self, user: str, *args: str, script: str) -> int:
        """Submit ``script`` (run by sh) as ``user``; the job id."""
        out = str(self.out / "slurm-%j.out")
        proc = self.run(
            user,
            ["sbatch", "--parsable", "-N1", "-n1", "-o", out, *args],
            input="#!/bin/sh\n" + script + "\n",
            timeout=30,
        )
        if proc.returncode != 0:
            raise AssertionError(f"sbatch {' '.join(args)} failed: {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])

    def job_output(self, job: int) -> str:
        path = self.out / f"slurm-{job}.out"
        return path.read_text() if path.exists() else ""

    def wait_output(self, job: int, marker: str, timeout: float = 30) -> str:
        """Wait until job's output contains ``marker``; the output."""

        def seen() -> str:
            text = self.job_output(job)
            if marker in text:
                return text
            if self.job_state(job) in ("COMPLETED", "FAILED", "CANCELLED", "GONE"):
                raise AssertionError(f"job {job} ended without {marker!r}:\n{text}")
            return ""

        return str(wait_for(seen, timeout, what=f"{marker!r} in job {job}'s output"))

    def job_state(self, job: int) -> str:
        proc = self.run(None, ["squeue", "-h", "-j", str(job), "-t", "all", "-o", "%T"])
        return proc.stdout.strip() or "GONE"

    def wait_job_gone(self, job: int, timeout: float = 30) -> None:
        """Until the job is neither pending, running nor completing (its epilog ran)."""
        wait_for(
            lambda: self.job_state(job) in ("COMPLETED", "CANCELLED", "FAILED", "GONE"),
            timeout,
            what=f"job {job} to finish",
        )

    def scancel(self, *jobs: int) -> None:
        if jobs:
            self.run(None, ["scancel", *map(str, jobs)])

    def credentials(self) -> list[dict]:
        """``drccli list --json`` as root: every credential DRCS knows."""
        proc = self.run(None, [str(self.runtime.bin / "drccli"), "list", "--json"])
        if proc.returncode != 0:
            raise AssertionError(f"drccli list failed: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    def credential(self, cred: int) -> dict | None:
        return next((c for c in self.credentials() if c["credential"] == cred), None)

    def outstanding_jobs(self) -> list[int]:
        """The jobs DRCS holds references for."""
        server = ServerProxy(self.bus)
        try:
            return server.outstanding_jobs()
        finally:
            server.close()

    def jedi(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.emb is not None
        cmd = ["/usr/bin/python3", "-m", "drc.jedi.main", "reconcile", "-c", str(self.emb.config)]
        return self.run(None, [*cmd, *args])

    def use_plugin(self, enabled: bool, args: str | None = None) -> None:
        """Load the plugin in new steps (plugstack.conf is read per step and per srun)."""
        if args is not None:
            self.plugin_args = args
        line = f"required {self.plugin} bus={self.bus} {self.plugin_args}".rstrip()
        self.plugstack.write_text(line + "\n" if enabled else "# drc plugin disabled\n")
        self.plugstack.chmod(0o644)

    # ------------------------------------------------------------------ drc daemons

    def stop_drcs(self) -> None:
        assert self.emb is not None
        terminate(self.emb.drcs_pid)

    def start_drcs(self) -> None:
        assert self.emb is not None
        self.emb.start_server()

    def allow_persistent(self, *users: str) -> None:
        """Let ``users`` acquire PERSISTENT credentials (restarts DRCS with the new config)."""
        assert self.emb is not None
        text = self.emb.config.read_text()
        line = f"persistent_users = {json.dumps(list(users))}\n"
        self.emb.config.write_text(text.replace("[server]\n", "[server]\n" + line, 1))
        self.stop_drcs()
        self.start_drcs()

    # ------------------------------------------------------------------ start / stop

    def write_config(self) -> None:
        assert self.emb and self.emb.munged
        ctld, spool = self.root / "ctld", self.root / "spool"
        ctld.mkdir()
        shutil.chown(ctld, "slurm", "slurm")
        spool.mkdir()
        (self.root / "log").mkdir(mode=0o777)
        (self.root / "log").chmod(0o777)
        (self.root / "run").mkdir()
        # Keys valid on Slurm 22.05 (Debian 12) and 24.11 (Debian 13).
        self.conf.write_text(
            f"""ClusterName=drctest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.emb.munged.socket}
StateSaveLocation={ctld}
SlurmdSpoolDir={spool}
SlurmctldPidFile={self.pidfile("slurmctld")}
SlurmdPidFile={self.pidfile("slurmd")}
SlurmctldLogFile={self.root / "log" / "slurmctld.log"}
SlurmdLogFile={self.root / "log" / "slurmd.log"}
SlurmdDebug=verbose
PlugStackConfig={self.plugstack}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=2
MinJobAge=300
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
        )
        self.conf.chmod(0o644)
        # Slurm >= 23.11 starts its cgroup plugin in slurmd whatever ProctrackType says, and
        # fails where /sys/fs/cgroup is not mounted; nothing here needs cgroups.
        if _slurm_version() >= (23, 11):
            cgroup = self.conf.with_name("cgroup.conf")
            cgroup.write_text("CgroupPlugin=disabled\n")
            cgroup.chmod(0o644)

    def start(self) -> None:
        so = build_plugin()
        self.root.chmod(0o755)
        self.out.mkdir()
        self.out.chmod(0o1777)
        self.plugin.parent.mkdir()
        shutil.copy(so, self.plugin)
        self.plugin.chmod(0o755)
        # DRCC (scontrol pidinfo) and the in-process reconcile find Slurm through SLURM_CONF.
        self._saved_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(self.conf)
        self.emb = embedded.start(self.drc_dir, wlm="slurm")
        self.write_config()
        self.use_plugin(True)
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for argv in (["slurmctld", "-c"], ["slurmd"]):
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise RuntimeError(f"{argv[0]} failed: {proc.stderr.strip()}\n{self.logs()}")
        try:
            wait_for(self._idle, timeout=30, what="the node to become idle")
        except WaitTimeout as e:
            raise RuntimeError(f"{e}\n{self.logs()}") from None

    def restart_slurmd(self) -> None:
        """Stop and start slurmd (it decides at start whether SPANK epilogs run)."""
        pid = self._daemon_pid("slurmd")
        if alive(pid):
            terminate(pid)
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        subprocess.run(["slurmd"], env=env, check=True, capture_output=True, timeout=30)
        wait_for(self._idle, timeout=30, what="slurmd to answer")
        wait_for(lambda: self.srun("root", "true").returncode == 0, timeout=30, what="a job to run")

    def _idle(self) -> bool:
        proc = self.run(None, ["sinfo", "-h", "-n", self.node, "-o", "%t"], timeout=10)
        return proc.stdout.strip() in ("idle", "mix", "alloc")

    def node_state(self) -> str:
        return self.run(None, ["sinfo", "-h", "-n", self.node, "-o", "%T"]).stdout.strip()

    def logs(self, lines: int = 15) -> str:
        out = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def _daemon_pid(self, daemon: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pidfile(daemon).read_text().strip())
        return 0

    def stop(self) -> None:
        """Cancel every job, stop slurmd and slurmctld, then drc — each by pid."""
        ctld = self._daemon_pid("slurmctld")
        if alive(ctld):
            with contextlib.suppress(subprocess.SubprocessError):
                jobs = self.run(None, ["squeue", "-h", "-o", "%A"], timeout=10).stdout.split()
                self.scancel(*map(int, jobs))
                wait_for(
                    lambda: not self.run(None, ["squeue", "-h", "-o", "%A"]).stdout.strip(),
                    timeout=15,
                    what="jobs to end",
                )
        for daemon in ("slurmd", "slurmctld"):
            pid = self._daemon_pid(daemon)
            if alive(pid):
                terminate(pid)
        if self.emb is not None:
            embedded.stop(self.drc_dir)
        if self._saved_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._saved_conf


@contextlib.contextmanager
def slurm_node(runtime: Runtime, keep: bool = False) -> Iterator[SlurmNode]:
    """A started SlurmNode, stopped (and its directory removed unless ``keep``) afterwards."""
    root = Path(tempfile.mkdtemp(prefix="drc-slurm-", dir="/tmp"))
    node = SlurmNode(root, runtime)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
