"""The ALPS adapter, the alps provider and the core's external-cleanup hook, in-process.

Parsers run on documented output; the provider runs the real commands of the ALPS stand-in
(tests/alps/standin; NOT ALPS); the store is a real SQLite file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alps.alps_harness import STANDIN, StandIn, build_libjob

from drc.core.errors import Code, DrcError
from drc.core.model import Resources
from drc.core.service import CredentialService
from drc.providers import make_provider
from drc.providers.alps import AlpsProvider, ApstatError, parse_apstat_p
from drc.store.sql import PeeweeStore, PeeweeTransaction
from drc.wlm import WlmError, make_wlm
from drc.wlm.alps import AlpsAdapter, alps_settings, parse_apstat_r, parse_apstat_r_detail

from helpers import LATEST_MIGRATION, ROOT, in_job, migrations_after

APSTAT_R = """\
  ResId     ApId From            Arch PEs N d Memory State
A  1450   571783 batch:138309      XT  80 - -   2000 conf,claim
    190      230 batch:102757      XT   2 2 2   1024 conf
"""
APSTAT_RV = (
    APSTAT_R
    + """
Reservation detail
Res[0]: apid 571783, pagg 0x1c5e0000001, resId 1450, user alice,
       gid 100, account 100, time 0, normal
Batch System ID = 138309
Reservation flags = 0x200 (exclusive)
Res[1]: apid 230, pagg 0, resId 190, user bob,
       gid 100, account 100, time 0, normal
"""
)


# -- adapter ---------------------------------------------------------------------------------


def test_apstat_r_table_gives_every_reservation():
    assert parse_apstat_r(APSTAT_R) == {1450, 190}
    assert parse_apstat_r(APSTAT_RV) == {1450, 190}  # the -v detail ends the table
    assert parse_apstat_r("  ResId     ApId From Arch PEs N d Memory State\n") == set()


@pytest.mark.parametrize(
    "output",
    [
        "",  # nothing at all is not "no reservations"
        "apstat: error\n",
        "  ResId ApId From\nA  x1450 571783 batch:1\n",
        "  ResId ApId From\n  0 1 batch:1\n",
    ],
)
def test_apstat_r_output_not_understood_raises(output: str):
    with pytest.raises(WlmError):
        parse_apstat_r(output)


def test_apstat_r_detail_maps_job_containers_to_reservations():
    assert parse_apstat_r_detail(APSTAT_RV) == {0x1C5E0000001: 1450}  # pagg 0: unconfirmed


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    monkeypatch.setenv("ALPS_STANDIN_DIR", str(tmp_path / "state"))
    return StandIn(tmp_path / "state")


def test_adapter_active_jobs_and_failures(standin: StandIn):
    wlm = make_wlm("alps", apstat=str(STANDIN / "apstat"))
    assert isinstance(wlm, AlpsAdapter) and wlm.active_jobs() == set()
    standin.reserve(190, 0x77)
    standin.reserve(191, 0x78)
    assert wlm.active_jobs() == {190, 191}
    standin.fail_next("apstat")
    with pytest.raises(WlmError):
        wlm.active_jobs()
    with pytest.raises(WlmError):
        AlpsAdapter(apstat="/nonexistent/apstat").active_jobs()


def test_adapter_finds_a_process_reservation_through_its_job_container(
    standin: StandIn, tmp_path: Path
):
    import subprocess

    wlm = AlpsAdapter(apstat=str(STANDIN / "apstat"), libjob=str(build_libjob(tmp_path)))
    standin.reserve(190, 0x1C5E0000001)
    parent = subprocess.Popen(["sleep", "30"])  # a batch job's process...
    try:
        assert wlm.job_of_pid(parent.pid) is None  # ...not yet in a container
        standin.place(os.getpid(), 0x1C5E0000001)  # this process (and its children) now is
        child = subprocess.Popen(["sleep", "30"])
        try:
            assert wlm.container_of(child.pid) == 0x1C5E0000001  # inherited
            assert wlm.job_of_pid(child.pid) == 190
            assert wlm.job_of_pid(os.getpid()) == 190
        finally:
            child.kill()
            child.wait()
        standin.place(parent.pid, 0x999)  # a container with no reservation
        assert wlm.job_of_pid(parent.pid) is None
    finally:
        parent.kill()
        parent.wait()
    assert AlpsAdapter(libjob="/nonexistent/libjob.so").job_of_pid(os.getpid()) is None


def test_alps_settings_come_from_the_config_section():
    section = {"apstat": "/opt/apstat", "libjob": "libjob.so", "timeout": 5, "apmgr": "x"}
    want = {"apstat": "/opt/apstat", "libjob": "libjob.so", "timeout": 5.0}
    assert alps_settings(section) == want


# -- provider --------------------------------------------------------------------------------


def test_apstat_p_both_documented_layouts():
    aries = "PDomainID Type    Uid     Cookie    Cookie2\nmy_pd user 210490 0xa92c0000 0xa92d0000\n"
    gemini = "PDomainID  TYPE  Uid  Ptag  Cookie\nADIOS  system  0  250  0x5420000\n"
    pd = parse_apstat_p(aries)["my_pd"]
    assert (pd.cookie1, pd.cookie2, pd.ptag, pd.uid) == (0xA92C0000, 0xA92D0000, 0, 210490)
    pd = parse_apstat_p(gemini)["ADIOS"]
    assert (pd.cookie1, pd.cookie2, pd.ptag) == (0x5420000, 0, 250)
    with pytest.raises(ApstatError):
        parse_apstat_p("PDomainID Type Uid Cookie\nbroken line\n")


def alps_service(tmp_path: Path, **kw) -> tuple[CredentialService, AlpsProvider]:
    provider = make_provider(
        "alps",
        {
            "apstat": str(STANDIN / "apstat"),
            "apmgr": str(STANDIN / "apmgr"),
            "max_pdomains": 2,
            "timeout": 10,
            "libjob": "ignored by the provider",
            **kw,
        },
    )
    assert isinstance(provider, AlpsProvider)
    store = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db")
    return CredentialService(store, provider), provider


def test_provider_two_cookies_capacity_and_release(standin: StandIn, tmp_path: Path):
    svc, _ = alps_service(tmp_path)
    a = svc.acquire(in_job(0, 7), 0)
    b = svc.acquire(in_job(0, 7), 0)
    pds = standin.pdomains()
    assert set(pds) == {f"drc{a.id}", f"drc{b.id}"}
    assert (a.resources.cookie1, a.resources.cookie2) == (
        pds[f"drc{a.id}"]["cookie"],
        pds[f"drc{a.id}"]["cookie2"],
    )
    with pytest.raises(DrcError) as e:  # max_pdomains = 2, checked before apmgr runs
        svc.acquire(in_job(0, 7), 0)
    assert e.value.code is Code.ENOSPC and len(standin.pdomains()) == 2
    assert svc.expire_jobs([7]) == [a.id, b.id]
    assert standin.pdomains() == {} and svc.pending_cleanups() == []
    assert svc.describe()["provider"]["free"] == 2


def test_a_pdomain_created_for_a_failed_transaction_is_removed(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    svc, _ = alps_service(tmp_path)

    def broken_insert(self, credential):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        m.setattr(PeeweeTransaction, "insert_credential", broken_insert)
        with pytest.raises(RuntimeError):
            svc.acquire(in_job(0, 7), 0)
    assert standin.pdomains() == {}  # compensated after the rollback
    assert svc.list(ROOT) == [] and svc.pending_cleanups() == []


def test_compensation_that_fails_is_recorded_not_leaked(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    svc, _ = alps_service(tmp_path)
    standin.fail_next("remove")
    with monkeypatch.context() as m:
        m.setattr(
            PeeweeTransaction, "insert_credential", lambda self, c: (_ for _ in ()).throw(OSError())
        )
        with pytest.raises(OSError):
            svc.acquire(in_job(0, 7), 0)
    [pending] = svc.pending_cleanups()
    assert pending.attempts == 1 and "apsched" in pending.last_error
    assert len(standin.pdomains()) == 1
    svc.clock = lambda: 1e12  # its retry is due
    assert svc.retry_cleanups() == (1, 0)
    assert standin.pdomains() == {} and svc.pending_cleanups() == []


def test_removal_is_recorded_in_the_freeing_transaction(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A crash between the commit and apmgr -r loses nothing: the row is already there."""
    svc, provider = alps_service(tmp_path)
    cred = svc.acquire(in_job(0, 7), 0)
    with monkeypatch.context() as m:
        m.setattr(svc.cleanup, "release", lambda **kw: (0, 0))
        svc.expire_jobs([7])  # "crashed" before removing
    [pending] = svc.pending_cleanups()
    assert pending.credential == cred.id and pending.attempts == 0
    assert provider.describe_external(pending.resources) == f"pdomain drc{cred.id}"
    assert svc.retry_cleanups() == (1, 0) and standin.pdomains() == {}


def test_release_of_a_pdomain_already_gone_counts_as_done(standin: StandIn, tmp_path: Path):
    _, provider = alps_service(tmp_path)
    gone = Resources("alps", 1, 2, 0, '{"slot":0,"pdomain":"drc99"}')
    provider.release_external(gone)  # apmgr says "does not exist"; apstat -P agrees


def test_pool_provider_is_untouched_by_the_hook(tmp_path: Path):
    from drc.providers.pool import PoolProvider

    store = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db")
    svc = CredentialService(store, PoolProvider(cookie_min=1, cookie_max=9))
    svc.acquire(in_job(0, 7), 0)
    svc.expire_jobs([7])
    assert svc.pending_cleanups() == [] and svc.retry_cleanups() == (0, 0)
    assert svc.describe()["pending_cleanups"] == []


# -- migration -------------------------------------------------------------------------------


def test_migration_0003_applies_over_a_0002_database(tmp_path: Path):
    from playhouse.migrations import Runner

    from drc.providers.pool import PoolProvider
    from drc.store.database import MIGRATIONS, open_database

    db = open_database(f"sqlite:///{tmp_path}/drcs.db")
    Runner(db, str(MIGRATIONS)).up(target="0002_owner_indexes")
    old = PeeweeStore(db)
    assert "pending_cleanup" not in db.get_tables()
    cred = CredentialService(old, PoolProvider(cookie_min=1, cookie_max=9)).acquire(
        in_job(0, 10), 0
    )
    assert old.migrate() == migrations_after("0002_owner_indexes")
    assert old.schema_version() == LATEST_MIGRATION
    assert "pending_cleanup" in db.get_tables()
    again = CredentialService(old, PoolProvider(cookie_min=1, cookie_max=9))
    assert again.get(ROOT, cred.id).resources.cookie1 == cred.resources.cookie1
    with old.transaction() as tx:
        row = tx.add_pending_cleanup(cred.id, cred.resources, 5.0)
        tx.cleanup_failed(row, "busy", 9.0)
    with old.snapshot() as tx:
        [p] = tx.pending_cleanups(due=9.0)
        assert (p.attempts, p.last_error, p.resources) == (1, "busy", cred.resources)
        assert tx.pending_cleanups(due=8.0) == [] and tx.pending_cleanups([cred.id + 1]) == []
