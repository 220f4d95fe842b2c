"""Helpers of the Slingshot tests: the stand-in libcxi (NOT libcxi; see standin/README.md), the
config that turns the embedded drc into a Slingshot site's, and a view of the stand-in NICs."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from drc.embedded.processes import terminate

from cluster import Cluster

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin"
VNI_MIN, VNI_MAX = 3000, 3002
NICS = ("cxi0", "cxi1")


def build_standin(out_dir: Path) -> Path:
    """Compile the stand-in as ``libcxi.so.1`` with libcxi's version nodes, warnings fatal."""
    lib = out_dir / "libcxi.so.1"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-Wl,--version-script={STANDIN / 'libcxi.map'}",
            "-Wl,-soname,libcxi.so.1",
            "-o",
            str(lib),
            str(STANDIN / "libcxi_standin.c"),
        ],
        check=True,
    )
    lib.chmod(0o755)
    return lib


@dataclass(frozen=True)
class Svc:
    svc_id: int
    enabled: bool
    vnis: tuple[int, ...]
    tcs: int  # bit mask
    members: tuple[tuple[int, int], ...]  # (type, id): type 1 = uid, 2 = gid
    lnis: int


class StandInNics:
    """The stand-in's device files ($CXI_STANDIN_DIR/cxiN) and its fault file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def reset(self, nics: tuple[str, ...] = NICS) -> None:
        """Fresh NICs (only the default service): what a reboot leaves."""
        for nic in nics:
            path = self.root / nic
            path.write_text("")
            path.chmod(0o666)  # applications (alice, bob, carol) allocate LNIs
        faults = self.root / "faults"
        faults.write_text("")
        faults.chmod(0o666)

    def services(self, nic: str = "cxi0") -> list[Svc]:
        found = []
        for line in (self.root / nic).read_text().splitlines():
            f = line.split()
            if f[0] != "svc":
                continue
            n = [int(x) for x in f[1:]]
            found.append(
                Svc(
                    svc_id=n[0],
                    enabled=bool(n[1] & 16),
                    vnis=tuple(n[3 : 3 + n[2]]),
                    tcs=n[7],
                    members=tuple((t, i) for t, i in ((n[8], n[9]), (n[10], n[11])) if t),
                    lnis=n[12],
                )
            )
        return found

    def drc_services(self, nic: str = "cxi0") -> list[Svc]:
        return [s for s in self.services(nic) if s.vnis and VNI_MIN <= s.vnis[0] <= VNI_MAX]

    def inject(self, op: str, count: int, errno: int) -> None:
        """The next ``count`` calls of ``op`` (alloc, destroy, alloc_lni) fail with -errno."""
        (self.root / "faults").write_text(f"{op} {count} {errno}\n")

    def clear_faults(self) -> None:
        (self.root / "faults").write_text("")


def slingshot_config(text: str, lib: Path, boot_id_file: Path | None = None) -> str:
    """The embedded drc.conf turned into a Slingshot site's: slingshot provider, two NICs."""
    assert 'provider = "pool"' in text
    text = text.replace('provider = "pool"', 'provider = "slingshot"')
    # the tests' pool is tiny; a share of it would refuse a second credential of one user
    text = text.replace('user_limit = "10%"', 'user_limit = "none"')
    if boot_id_file is not None:
        text = text.replace(
            'boot_id_file = "/proc/sys/kernel/random/boot_id"',
            f"boot_id_file = {json.dumps(str(boot_id_file))}",
        )
    q = json.dumps
    return (
        text
        + "\n[slingshot]\n"
        + f"vni_min = {VNI_MIN}\nvni_max = {VNI_MAX}\n"
        + "slurm_vni_min = 1024\nslurm_vni_max = 2999\n"
        + "quarantine = 1\ncleanup_retry_interval = 1\n"
        + f"nics = {q(list(NICS))}\n"
        + 'traffic_classes = ["low_latency", "best_effort"]\n'
        + 'limits = ["les=100:10", "eqs=8"]\n'
        + f"libcxi = {q(str(lib))}\n"
        + "destroy_retry_interval = 1\nreconcile_interval = 2\n"
    )


def restart_node(cluster: Cluster) -> None:
    terminate(cluster.emb.drcc_pid)
    cluster.emb.start_node()


def restart_daemons(cluster: Cluster) -> None:
    """Stop DRCS and DRCC (by pid) and start them again on the current config."""
    for pid in (cluster.emb.drcc_pid, cluster.emb.drcs_pid):
        terminate(pid)
    cluster.emb.start_server()
    cluster.emb.start_node()


#: Run as an application: open cxi0, allocate an LNI on service SVC, print the return code.
LNI_PROBE = """
import ctypes
lib = ctypes.CDLL({lib!r})
dev = ctypes.c_void_p()
assert lib.cxil_open_device(0, ctypes.byref(dev)) == 0
lni = ctypes.c_void_p()
rc = lib.cxil_alloc_lni(dev, ctypes.byref(lni), {svc})
if rc == 0:
    lib.cxil_destroy_lni(lni)
print('lni', rc)
"""
