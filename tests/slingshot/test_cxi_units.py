"""The ctypes libcxi binding and DRCC's CXI service manager, in-process, on the stand-in
libcxi (NOT libcxi; see standin/README.md). DRCS is replaced by a recorder of node calls."""

from __future__ import annotations

import asyncio
import ctypes
import errno
from pathlib import Path
from typing import Any

import pytest
from slingshot.sling_harness import VNI_MAX, VNI_MIN, StandInNics

from drc.core.errors import Code, DrcError
from drc.core.model import Holder
from drc.node.cxi import CxiError, CxiUnavailable, LibCxi, service_desc
from drc.node.slingshot import CxiServices, Settings

JOB = Holder.for_job("n1", 7)


class Upstream:
    """DRCS's answers to the CXI manager's node verbs."""

    def __init__(self) -> None:
        self.live: list[tuple[int, int]] = []
        self.owed: list[tuple[int, int]] = []
        self.confirmed: list[int] = []

    async def call(self, method: str, args: list[Any]) -> list[Any]:
        if method == "NodeSlingshotState":
            return [(self.live, self.owed)]
        assert method == "NodeSlingshotCleaned"
        self.confirmed += args[1]
        return [args[1]]


@pytest.fixture
def lib(standin_lib: Path, nics: StandInNics) -> LibCxi:
    return LibCxi(str(standin_lib))


def manager(lib: LibCxi, upstream: Upstream) -> CxiServices:
    settings = Settings.from_config(
        {
            "nics": ["cxi0"],
            "vni_min": VNI_MIN,
            "vni_max": VNI_MAX,
            "traffic_classes": ["best_effort"],
            "limits": ["les=10:1"],
            "libcxi": lib.path,
            "destroy_retry_interval": 1,
            "reconcile_interval": 30,
        }
    )
    return CxiServices("n1", settings, upstream, lib=lib)


def answer(cred: int, vni: int, member: int) -> dict[str, Any]:
    return {"credential": cred, "vni": vni, "member_uid": member, "provider": "slingshot"}


def test_a_missing_or_foreign_library_is_one_clear_error():
    with pytest.raises(CxiUnavailable, match=r"cannot load /nonexistent/libcxi\.so\.1"):
        LibCxi("/nonexistent/libcxi.so.1")
    with pytest.raises(CxiUnavailable, match=r"cxil_alloc_svc@LIBCXI_1\.0"):
        LibCxi("libc.so.6")


def test_the_standin_enforces_descriptor_rules(lib: LibCxi):
    dev = lib.open(0)
    try:
        desc = service_desc(VNI_MIN, 1000, [], {})
        desc.num_vld_vnis = 5
        with pytest.raises(CxiError) as e:
            lib.alloc_svc(dev, desc)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(CxiError) as e:
            lib.destroy_svc(dev, 1)  # the default service
        assert e.value.errno == errno.EINVAL
        with pytest.raises(CxiError) as e:
            lib.open(7)
        assert e.value.errno == errno.ENODEV
    finally:
        lib.close(dev)


def test_services_come_only_from_drcs_answers_for_the_identified_caller(
    lib: LibCxi, nics: StandInNics
):
    m = manager(lib, Upstream())
    with pytest.raises(DrcError) as e:
        m.ensure(answer(5, VNI_MIN, 2001), 2003, JOB)  # DRCS admitted 2001, caller is 2003
    assert e.value.code is Code.EPERM
    with pytest.raises(DrcError) as e:
        m.ensure(answer(5, 1500, 2001), 2001, JOB)  # not drc's range: configs disagree
    assert e.value.code is Code.CRED_EXTERNAL_FAILURE and "configs disagree" in str(e.value)
    assert nics.drc_services() == []
    ids = m.ensure(answer(5, VNI_MIN, 2001), 2001, JOB)
    assert m.ensure(answer(5, VNI_MIN, 2001), 2001, Holder.for_job("n1", 8)) == ids
    (svc,) = nics.drc_services()
    assert svc.svc_id == ids[0] and svc.members == ((1, 2001),) and svc.tcs == 0b1000


def test_old_drivers_refusing_shared_vnis_get_a_clear_error(
    lib: LibCxi, monkeypatch: pytest.MonkeyPatch
):
    m = manager(lib, Upstream())
    m.ensure(answer(5, VNI_MIN, 2001), 2001, JOB)
    monkeypatch.setenv("CXI_STANDIN_OLD_DRIVER", "1")
    with pytest.raises(DrcError, match="refuses two services on one VNI"):
        m.ensure(answer(5, VNI_MIN, 2002), 2002, JOB)


def test_last_holder_destroys_busy_is_retried_then_confirmed(lib: LibCxi, nics: StandInNics):
    up = Upstream()
    m = manager(lib, up)
    m.ensure(answer(5, VNI_MIN, 2001), 2001, JOB)
    m.ensure(answer(5, VNI_MIN, 2001), 2001, Holder.for_job("n1", 8))
    m.drop_job(7)
    assert len(nics.drc_services()) == 1  # job 8 still holds it
    nics.inject("destroy", 1, errno.EBUSY)
    m.drop_job(8)
    up.owed = [(5, VNI_MIN)]
    asyncio.run(m.reconcile())
    assert len(nics.drc_services()) == 1 and up.confirmed == []  # -EBUSY: not confirmed
    assert m.describe()["destroys_pending"] == 1
    m.doomed[next(iter(m.doomed))].next_try = 0  # the backoff passed
    asyncio.run(m.reconcile())
    assert nics.drc_services() == [] and up.confirmed == [5]


def test_drcc_refuses_to_start_with_one_line_when_libcxi_or_a_nic_is_missing(
    tmp_path: Path, standin_lib: Path, nics: StandInNics
):
    from drc import config as drc_config
    from drc.node.main import cxi_services

    def start(extra: str) -> str:
        path = tmp_path / "drc.conf"
        path.write_text(f'[server]\nprovider = "slingshot"\n[slingshot]\n{extra}\n')
        with pytest.raises(drc_config.ConfigError) as e:
            cxi_services("n1", drc_config.load(path), Upstream())
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "cannot load /nonexistent/libcxi.so.1" in start('libcxi = "/nonexistent/libcxi.so.1"')
    assert "cxi7" in start(f'libcxi = "{standin_lib}"\nnics = ["cxi7"]')
    assert "not a CXI device name" in start(f'libcxi = "{standin_lib}"\nnics = ["eth0"]')
    assert "les=" in start(f'libcxi = "{standin_lib}"\nlimits = ["les=x"]')


def test_the_service_descriptor_has_libcxis_layout():
    """The CXI driver reads cxi_svc_desc by offset: pinned to the published header's layout
    (u8 bit-field byte, u8 num_vld_vnis, u16 vnis[4], bool tcs[5], {u32, enum} members[2],
    {u16 max, u16 res} limits[8], unsigned svc_id)."""
    from drc.node.cxi import SvcDesc

    assert SvcDesc.num_vld_vnis.offset == 1
    assert SvcDesc.vnis.offset == 2
    assert SvcDesc.tcs.offset == 10
    assert SvcDesc.members.offset == 16
    assert SvcDesc.limits.offset == 32
    assert SvcDesc.svc_id.offset == 64
    assert ctypes.sizeof(SvcDesc) == 68
