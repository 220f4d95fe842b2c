"""The SPANK plugin's ``slingshot`` argument on the real single-node Slurm: with ``--drc`` the
job's tasks get SLINGSHOT_VNIS / SLINGSHOT_SVC_IDS / SLINGSHOT_DEVICES of the shared VNI.

For this module the session's DRCS and DRCC run the slingshot provider against the stand-in
libcxi (NOT libcxi; see tests/slingshot/standin/README.md); they are put back afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from slingshot.sling_harness import (
    NICS,
    VNI_MIN,
    StandInNics,
    build_standin,
    restart_daemons,
    slingshot_config,
)
from slurm.slurm_harness import SlurmNode

from drc.embedded.polling import wait_for

from cluster import Cluster

pytestmark = pytest.mark.root

PRINT = 'echo "C=$DRC_CREDENTIAL V=$SLINGSHOT_VNIS S=$SLINGSHOT_SVC_IDS D=$SLINGSHOT_DEVICES '
PRINT += 'J=$DRC_JOB_SLINGSHOT_VNIS"'


def _restart(slurm: SlurmNode) -> None:
    assert slurm.emb is not None
    restart_daemons(Cluster(Path(slurm.emb.state_dir), slurm.emb, None))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sling(slurm: SlurmNode) -> Iterator[StandInNics]:
    assert slurm.emb is not None
    root = Path(tempfile.mkdtemp(prefix="cxi-standin-", dir="/tmp"))
    root.chmod(0o777)
    original = slurm.emb.config.read_text()
    saved_env = os.environ.get("CXI_STANDIN_DIR")
    os.environ["CXI_STANDIN_DIR"] = str(root / "nics")
    try:
        (root / "nics").mkdir(mode=0o777)
        nics = StandInNics(root / "nics")
        nics.reset()
        lib = build_standin(root)
        slurm.emb.config.write_text(slingshot_config(original, lib))
        _restart(slurm)
        slurm.use_plugin(True, "slingshot")
        yield nics
    finally:
        slurm.use_plugin(True, "")
        slurm.emb.config.write_text(original)
        if saved_env is None:
            os.environ.pop("CXI_STANDIN_DIR", None)
        else:
            os.environ["CXI_STANDIN_DIR"] = saved_env
        _restart(slurm)
        shutil.rmtree(root, ignore_errors=True)


def test_drc_jobs_get_the_shared_vni_in_libfabrics_variables(
    slurm: SlurmNode, sling: StandInNics, jobs: list[int]
) -> None:
    a = slurm.sbatch(
        "alice",
        "--drc=acquire",
        "--drc-flags=flex",
        "--drc-grant=uid:bob",
        "--export=ALL,SLINGSHOT_VNIS=1234",  # what switch/hpe_slingshot would have set
        script=f"{PRINT}\nsleep 120",
    )
    jobs.append(a)
    text = slurm.wait_output(a, "C=")
    env_a = dict(kv.split("=", 1) for kv in next(x for x in text.splitlines() if "C=" in x).split())
    assert env_a["V"] == str(VNI_MIN) and env_a["D"] == ",".join(NICS)
    assert env_a["J"] == "1234"  # the job's own VNI is kept for who wants both
    cred = int(env_a["C"])
    proc = slurm.srun("bob", f"--drc={cred}", "sh", "-c", PRINT)
    assert proc.returncode == 0, proc.stderr
    env_b = dict(kv.split("=", 1) for kv in proc.stdout.split())
    assert env_b["V"] == str(VNI_MIN)
    svc_a, svc_b = env_a["S"].split(","), env_b["S"].split(",")
    assert len(svc_a) == len(svc_b) == len(NICS) and not set(svc_a) & set(svc_b)
    assert {str(s.svc_id) for s in sling.drc_services("cxi0")} >= {svc_a[0]}
    proc = slurm.srun("carol", f"--drc={cred}", "printenv", "SLINGSHOT_VNIS")
    assert proc.returncode != 0 and "DRC_EPERM" in proc.stderr
    slurm.scancel(a)
    wait_for(lambda: slurm.credential(cred) is None, what=f"credential {cred} to go")
    wait_for(lambda: not sling.drc_services("cxi0"), what="drc's CXI services to go")
