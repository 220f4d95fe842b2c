"""libcxi (HPE Slingshot) through ctypes, loaded at run time: drc never links against it.

DRCC loads ``libcxi.so.1`` only when the ``slingshot`` provider is configured, resolves every
call it needs with ``dlvsym`` at the symbol version it was written for (``LIBCXI_1.0``, and
``LIBCXI_1.2`` for ``cxil_get_svc``) and fails with one :class:`CxiUnavailable` naming what is
missing. Calls return ``-errno``; :class:`CxiError` keeps it for the retry logic (``-EBUSY``).

The structure layouts follow libcxi's ``<libcxi.h>`` as recorded in drc's Slingshot notes; the
tests run against the documented stand-in under ``tests/slingshot/standin``.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

CXI_SVC_MAX_VNIS = 4
CXI_SVC_MAX_MEMBERS = 2
# enum cxi_traffic_class: DEDICATED_ACCESS, LOW_LATENCY, BULK_DATA, BEST_EFFORT, ETH; the
# bool tcs[CXI_TC_MAX] array sets the offsets of everything after it in cxi_svc_desc.
CXI_TC_MAX = 5
CXI_RSRC_TYPE_MAX = 8
DEFAULT_SVC_ID = 1
MEMBER_IGNORE, MEMBER_UID, MEMBER_GID = 0, 1, 2
#: Traffic class names of ``[slingshot] traffic_classes`` -> index in ``cxi_svc_desc.tcs``.
TRAFFIC_CLASSES = {"dedicated": 0, "low_latency": 1, "bulk_data": 2, "best_effort": 3}
#: Resource names of ``[slingshot] limits`` -> index in ``cxi_rsrc_limits``.
RESOURCES = ("ptes", "txqs", "tgqs", "eqs", "cts", "les", "tles", "acs")

#: (symbol, version node) drc needs; the first version that exported each call.
SYMBOLS = (
    ("cxil_open_device", "LIBCXI_1.0"),
    ("cxil_close_device", "LIBCXI_1.0"),
    ("cxil_alloc_svc", "LIBCXI_1.0"),
    ("cxil_destroy_svc", "LIBCXI_1.0"),
    ("cxil_get_svc_list", "LIBCXI_1.0"),
    ("cxil_free_svc_list", "LIBCXI_1.0"),
)


class CxiUnavailable(Exception):
    """libcxi is absent or too old: Slingshot services cannot be managed on this node."""


class CxiError(Exception):
    """A libcxi call failed; ``errno`` is the positive error number."""

    def __init__(self, call: str, rc: int) -> None:
        self.errno = -rc
        super().__init__(f"{call}: {os.strerror(-rc)} (-{errno.errorcode.get(-rc, -rc)})")


class Member(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint), ("type", ctypes.c_int)]


class Limits(ctypes.Structure):
    _fields_ = [("max", ctypes.c_uint16), ("res", ctypes.c_uint16)]


class SvcDesc(ctypes.Structure):
    _fields_ = [
        ("restricted_members", ctypes.c_uint8, 1),
        ("restricted_vnis", ctypes.c_uint8, 1),
        ("restricted_tcs", ctypes.c_uint8, 1),
        ("resource_limits", ctypes.c_uint8, 1),
        ("enable", ctypes.c_uint8, 1),
        ("is_system_svc", ctypes.c_uint8, 1),
        ("num_vld_vnis", ctypes.c_uint8),
        ("vnis", ctypes.c_uint16 * CXI_SVC_MAX_VNIS),
        ("tcs", ctypes.c_bool * CXI_TC_MAX),
        ("members", Member * CXI_SVC_MAX_MEMBERS),
        ("limits", Limits * CXI_RSRC_TYPE_MAX),
        ("svc_id", ctypes.c_uint),
    ]


class FailInfo(ctypes.Structure):
    _fields_ = [
        ("rsrc_avail", ctypes.c_uint16 * CXI_RSRC_TYPE_MAX),
        ("no_le_pools", ctypes.c_bool),
        ("no_tle_pools", ctypes.c_bool),
        ("no_cntr_pools", ctypes.c_bool),
    ]


class SvcList(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint)]  # followed by ``count`` SvcDesc


@dataclass(frozen=True)
class Service:
    """One CXI service as drc reads it back."""

    svc_id: int
    vnis: tuple[int, ...]
    uids: tuple[int, ...]
    gids: tuple[int, ...]
    enabled: bool


def _dlvsym() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    libc = ctypes.CDLL(None)
    dlvsym = libc.dlvsym
    dlvsym.restype = ctypes.c_void_p
    dlvsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    return dlvsym


class LibCxi:
    """The calls drc makes, each resolved at its symbol version."""

    def __init__(self, path: str = "libcxi.so.1") -> None:
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise CxiUnavailable(
                f"cannot load {path} ({e}); install HPE Slingshot's libcxi on this node "
                "or set [slingshot] libcxi to its path"
            ) from None
        self.path, self._lib = path, lib
        dlvsym = _dlvsym()
        missing, found = [], {}
        for name, version in SYMBOLS:
            address = dlvsym(lib._handle, name.encode(), version.encode())
            if not address:
                missing.append(f"{name}@{version}")
            else:
                found[name] = address
        if missing:
            raise CxiUnavailable(
                f"{path} does not export {', '.join(missing)}: it is not libcxi or too old "
                "(drc needs the LIBCXI_1.0 service calls)"
            )
        p, u, i = ctypes.c_void_p, ctypes.c_uint, ctypes.c_int
        proto = ctypes.CFUNCTYPE
        self._open = proto(i, ctypes.c_uint32, ctypes.POINTER(p))(found["cxil_open_device"])
        self._close = proto(None, p)(found["cxil_close_device"])
        self._alloc = proto(i, p, ctypes.POINTER(SvcDesc), ctypes.POINTER(FailInfo))(
            found["cxil_alloc_svc"]
        )
        self._destroy = proto(i, p, u)(found["cxil_destroy_svc"])
        self._list = proto(i, p, ctypes.POINTER(p))(found["cxil_get_svc_list"])
        self._free_list = proto(None, p)(found["cxil_free_svc_list"])

    def open(self, dev_id: int) -> int:
        dev = ctypes.c_void_p()
        rc = self._open(dev_id, ctypes.byref(dev))
        if rc:
            raise CxiError(f"cxil_open_device(cxi{dev_id})", rc)
        return dev.value or 0

    def close(self, dev: int) -> None:
        self._close(dev)

    def alloc_svc(self, dev: int, desc: SvcDesc) -> int:
        fail = FailInfo()
        rc = self._alloc(dev, ctypes.byref(desc), ctypes.byref(fail))
        if rc < 0:
            raise CxiError("cxil_alloc_svc", rc)
        return rc

    def destroy_svc(self, dev: int, svc_id: int) -> None:
        rc = self._destroy(dev, svc_id)
        if rc:
            raise CxiError(f"cxil_destroy_svc({svc_id})", rc)

    def services(self, dev: int) -> list[Service]:
        head = ctypes.c_void_p()
        rc = self._list(dev, ctypes.byref(head))
        if rc:
            raise CxiError("cxil_get_svc_list", rc)
        try:
            count = SvcList.from_address(head.value).count
            offset = ctypes.sizeof(ctypes.c_uint)
            offset += -offset % ctypes.alignment(SvcDesc)
            descs = (SvcDesc * count).from_address(head.value + offset)
            return [_service(d) for d in descs]
        finally:
            self._free_list(head)


def _service(d: SvcDesc) -> Service:
    members = list(d.members) if d.restricted_members else []
    return Service(
        svc_id=d.svc_id,
        vnis=tuple(d.vnis[: d.num_vld_vnis]) if d.restricted_vnis else (),
        uids=tuple(m.id for m in members if m.type == MEMBER_UID),
        gids=tuple(m.id for m in members if m.type == MEMBER_GID),
        enabled=bool(d.enable),
    )


def service_desc(vni: int, uid: int, tcs: list[str], limits: dict[str, tuple[int, int]]) -> SvcDesc:
    """A service for one member uid on one VNI: restricted members, VNIs and TCs, limits."""
    desc = SvcDesc()
    desc.enable = 1
    desc.restricted_members = 1
    desc.members[0].id, desc.members[0].type = uid, MEMBER_UID
    desc.restricted_vnis = 1
    desc.num_vld_vnis = 1
    desc.vnis[0] = vni
    if tcs:
        desc.restricted_tcs = 1
        for name in tcs:
            desc.tcs[TRAFFIC_CLASSES[name]] = True
    if limits:
        desc.resource_limits = 1
        for name, (maximum, reserved) in limits.items():
            desc.limits[RESOURCES.index(name)].max = maximum
            desc.limits[RESOURCES.index(name)].res = reserved
    return desc
