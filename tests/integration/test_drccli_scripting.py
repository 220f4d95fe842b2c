"""The front ends admins script against: --version everywhere, drccli status --json, list
filters, exit statuses, and messages that say which unit to start when a daemon is down."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import drc
from drc.cli.drccli import EXIT_STATUS
from drc.cli.exits import EXIT_UNAVAILABLE, EXIT_USAGE
from drc.embedded.processes import terminate

from cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_command_has_version(name):
    module, func = SCRIPTS[name].split(":")
    code = f"import sys\nfrom {module} import {func}\nsys.exit({func}(['--version']))"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{name} (drc) {drc.__version__}"


def test_status_json_is_one_object_with_the_facts(cluster: Cluster, users):
    assert cluster.drccli("alice", "acquire").returncode == 0
    r = cluster.drccli(None, "status", "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["reachable"] is True and status["bus"] == cluster.address
    assert status["credentials"] == 1 and status["references"] == 1
    assert {"backend", "database", "schema"} <= set(status["store"])
    assert status["store"]["backend"] == "sqlite"
    pool = status["provider"]
    assert pool["name"] == "pool" and pool["allocated"] == 1
    assert pool["allocated"] + pool["free"] == pool["capacity"]
    assert status["nodes_known"] == 1 and isinstance(status["nodes_connected"], int)
    assert status["limits"] == ["user-default: 102 (drc.conf user_limit; not root)"]
    # admins only, as the text form
    denied = cluster.drccli("alice", "status", "--json")
    assert denied.returncode == 1 and "DRC_EPERM" in denied.stderr and denied.stdout == ""


def listed(cluster: Cluster, *filters: str) -> list[int]:
    r = cluster.drccli(None, "list", "--json", *filters)
    assert r.returncode == 0, r.stderr
    return sorted(c["credential"] for c in json.loads(r.stdout))


def test_list_filters_by_uid_job_and_state(cluster: Cluster, users):
    alice = [int(cluster.drccli("alice", "acquire", check=True).stdout) for _ in range(2)]
    bob = int(cluster.drccli("bob", "acquire", check=True).stdout)
    r = cluster.in_job(
        101, "alice", "cred = client.acquire(client.FLEX)\nclient.grant(cred, wlm=202)\nprint(cred)"
    )
    in_job = int(r.stdout.split()[-1])
    assert cluster.in_job(202, "bob", f"client.access({in_job})").returncode == 0
    cluster.drccli("alice", "release", str(in_job), check=True)  # job 202 still holds it

    assert listed(cluster) == sorted([*alice, bob, in_job])
    assert listed(cluster, "--uid", "alice") == sorted([*alice, in_job])
    assert listed(cluster, "--uid", str(users["bob"].uid)) == [bob]
    assert listed(cluster, "--job", "101") == [in_job]
    assert listed(cluster, "--state", "released") == [in_job]
    assert listed(cluster, "--state", "ACTIVE", "--uid", "alice") == alice
    assert listed(cluster, "--uid", "carol") == []
    table = cluster.drccli(None, "list", "--job", "101", check=True).stdout.splitlines()
    assert len(table) == 2 and table[1].split()[0] == str(in_job)
    bad = cluster.drccli(None, "list", "--state", "gone")
    assert bad.returncode == EXIT_USAGE and "invalid choice" in bad.stderr
    nobody = cluster.drccli(None, "list", "--uid", "no-such-user-here")
    assert nobody.returncode == EXIT_USAGE and "no such user" in nobody.stderr


def test_stopped_daemons_name_the_unit_to_start(cluster: Cluster, users):
    terminate(cluster.drcc_pid)
    app = cluster.outside_job("alice", "client.acquire()")
    assert app.returncode != 0
    assert "drcc.service" in app.stderr and "is not running" in app.stderr

    terminate(cluster.drcs_pid)
    for argv in (("list",), ("status", "--json"), ("acquire",)):
        r = cluster.drccli(None, *argv)
        assert r.returncode == EXIT_UNAVAILABLE, (argv, r.stderr)
        assert r.stderr.startswith("drccli: DRC_ECONNREFUSED: the DRC server (drcs) is not")
        assert "systemctl start drcs.service" in r.stderr
        assert r.stdout == ""


def test_exit_statuses_are_documented_in_help():
    from drc.cli.drccli import build_parser

    epilog = build_parser().epilog
    for code, _ in EXIT_STATUS:
        assert f" {code} " in f" {epilog}"
    assert {code for code, _ in EXIT_STATUS} == {0, 1, 2, 3, 130}
