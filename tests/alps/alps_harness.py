"""Helpers of the ALPS tests: the stand-in (NOT ALPS; see standin/README.md) and the config
that turns the embedded drc into an ALPS site's."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from drc.embedded.processes import terminate

from cluster import Cluster

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin"
sys.path.insert(0, str(STANDIN))

from alpsstate import StandIn  # noqa: E402

REPO = HERE.parents[1]
EPILOG = REPO / "plugins" / "alps" / "drc-alps-epilog"


@dataclass
class Alps:
    """The stand-in plus what the tests need to reach it."""

    standin: StandIn
    dir: Path  # ALPS_STANDIN_DIR
    libjob: Path  # the stand-in libjob, built


def build_libjob(out_dir: Path) -> Path:
    """Compile the stand-in libjob as libjob.so.0 (the name DRCC loads by default)."""
    lib = out_dir / "libjob.so.0"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(lib), str(STANDIN / "libjob.c")],
        check=True,
    )
    return lib


def alps_config(text: str, retry: int = 1) -> str:
    """The embedded drc.conf turned into an ALPS site's: alps provider, alps adapter."""
    assert 'provider = "pool"' in text and 'wlm = "none"' in text
    text = text.replace('provider = "pool"', 'provider = "alps"')
    # the tests' pool is tiny; a share of it would refuse a second credential of one user
    text = text.replace('user_limit = "10%"', 'user_limit = "none"')
    text = text.replace('wlm = "none"', 'wlm = "alps"')
    q = json.dumps
    return (
        text
        + "\n[alps]\n"
        + f"apstat = {q(str(STANDIN / 'apstat'))}\n"
        + f"apmgr = {q(str(STANDIN / 'apmgr'))}\n"
        + "timeout = 10\n"
        + 'pdomain_prefix = "drc"\n'
        + "max_pdomains = 4\n"
        + f"cleanup_retry_interval = {retry}\n"
        + '\n[jedi]\nwlm = "alps"\n'
    )


def restart_daemons(cluster: Cluster) -> None:
    """Stop DRCS and DRCC (by pid) and start them again on the current config."""
    for pid in (cluster.emb.drcc_pid, cluster.emb.drcs_pid):
        terminate(pid)
    cluster.emb.start_server()
    cluster.emb.start_node()
