"""drc-jedi: DRCS's outstanding jobs minus the WLM's active jobs are expired — and nothing when
the WLM cannot be asked. DRCS is real (embedded, jobs registered as the SPANK hook would); only
the WLM is a stand-in (pytest-mock)."""

from __future__ import annotations

import pytest

from drc.cli.exits import EXIT_UNAVAILABLE
from drc.jedi import main as jedi
from drc.wlm import WlmError

from cluster import Cluster

ACQUIRE = "print(client.acquire())"


@pytest.mark.parametrize(
    ("outstanding", "active", "expired"),
    [
        ([], set(), []),
        ([1, 2, 3], {2}, [1, 3]),
        ([5, 4], set(), [4, 5]),
        ([1, 2], {1, 2, 3, 99}, []),
        ([7, 7, 8], {8}, [7]),
    ],
)
def test_to_expire_is_outstanding_minus_active(
    outstanding: list[int], active: set[int], expired: list[int]
) -> None:
    assert jedi.to_expire(outstanding, active) == expired


def _credential_in_job(cluster: Cluster, job: int) -> int:
    r = cluster.in_job(job, "alice", ACQUIRE)
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def _ids(cluster: Cluster) -> set[int]:
    server = cluster.server()
    try:
        return {c["credential"] for c in server.list()}
    finally:
        server.close()


@pytest.mark.root
def test_reconcile_expires_only_jobs_the_wlm_does_not_run(cluster: Cluster, users, mocker) -> None:
    alive, dead = _credential_in_job(cluster, 301), _credential_in_job(cluster, 302)
    wlm = mocker.Mock(name="wlm")
    wlm.active_jobs.return_value = {301, 999}
    server = cluster.server()
    try:
        dry = jedi.reconcile(wlm=wlm, server=server, dry_run=True)
        assert dry.expired == [302] and dry.freed == []
        assert {alive, dead} <= _ids(cluster)

        result = jedi.reconcile(wlm=wlm, server=server)
        assert result.outstanding == [301, 302]
        assert result.expired == [302] and result.freed == [dead]
        assert jedi.describe(result) == f"expired job(s) 302; freed credential(s): {dead}"
        assert alive in _ids(cluster) and dead not in _ids(cluster)

        again = jedi.reconcile(wlm=wlm, server=server)
        assert again.expired == [] and "nothing to expire" in jedi.describe(again)
    finally:
        server.close()


@pytest.mark.root
def test_reconcile_asks_drcs_before_the_wlm(cluster: Cluster, users, mocker) -> None:
    """A job that starts between the two questions must not be expired: DRCS goes first."""
    _credential_in_job(cluster, 311)
    order: list[str] = []
    server = cluster.server()
    real_outstanding = server.outstanding_jobs
    mocker.patch.object(
        server, "outstanding_jobs", side_effect=lambda: order.append("drcs") or real_outstanding()
    )
    wlm = mocker.Mock(name="wlm")
    wlm.active_jobs.side_effect = lambda: order.append("wlm") or {311}
    try:
        jedi.reconcile(wlm=wlm, server=server)
    finally:
        server.close()
    assert order == ["drcs", "wlm"]


@pytest.mark.root
def test_wlm_error_expires_nothing_and_exits_non_zero(
    cluster: Cluster, users, mocker, capsys
) -> None:
    creds = {_credential_in_job(cluster, 321), _credential_in_job(cluster, 322)}
    wlm = mocker.Mock(name="wlm")
    wlm.active_jobs.side_effect = WlmError("squeue failed: slurm_load_jobs error: timeout")
    server = cluster.server()
    try:
        with pytest.raises(WlmError):
            jedi.reconcile(wlm=wlm, server=server)
    finally:
        server.close()
    assert creds <= _ids(cluster)

    mocker.patch.object(jedi, "wlm_of", return_value=wlm)
    mocker.patch.dict("os.environ", {"DBUS_SYSTEM_BUS_ADDRESS": cluster.address})
    rc = jedi.main(["reconcile", "-c", str(cluster.emb.config)])
    out, err = capsys.readouterr()
    assert rc == EXIT_UNAVAILABLE
    assert "nothing expired" in err and "timeout" in err and out == ""
    assert creds <= _ids(cluster)


@pytest.mark.root
def test_cli_reconcile_prints_what_it_expired(cluster: Cluster, users, mocker, capsys) -> None:
    cred = _credential_in_job(cluster, 331)
    wlm = mocker.Mock(name="wlm")
    wlm.active_jobs.return_value = set()
    mocker.patch.object(jedi, "wlm_of", return_value=wlm)
    assert jedi.main(["reconcile", "-c", str(cluster.emb.config), "--dry-run"]) == 0
    assert capsys.readouterr().out == "would expire job(s) 331\n"
    assert cred in _ids(cluster)
    assert jedi.main(["reconcile", "-c", str(cluster.emb.config)]) == 0
    assert capsys.readouterr().out == f"expired job(s) 331; freed credential(s): {cred}\n"
    assert cred not in _ids(cluster)


def test_config_errors_exit_2(tmp_path, capsys) -> None:
    bad = tmp_path / "drc.conf"
    bad.write_text("[jedi]\nwlm = 3\n")
    assert jedi.main(["reconcile", "-c", str(bad)]) == 2
    assert "[jedi] wlm must be a string" in capsys.readouterr().err
