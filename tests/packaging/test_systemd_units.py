"""The systemd units and D-Bus activation files: ordering, bus names, hardening that keeps
each daemon able to do its job."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from drc.node.exports import BUS_NAME as NODE_BUS
from drc.serververbs import BUS_NAME as SERVER_BUS

from pkgtools import REPO

UNITS = REPO / "packaging" / "systemd"
DBUS = REPO / "packaging" / "dbus"


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value (systemd allows a key several times; space lists split)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key].extend(value.split() or [""])
    return sections


@pytest.mark.parametrize(
    ("unit", "bus_name", "program"),
    [("drcs.service", SERVER_BUS, "drcs"), ("drcc.service", NODE_BUS, "drcc")],
)
def test_daemon_units_are_notify_services_after_munge_and_dbus(unit, bus_name, program) -> None:
    u = parse(UNITS / unit)
    # READY=1 once serving, WATCHDOG=1 from the event loop: a wedged daemon gets restarted
    # (tests/integration/test_systemd_notify.py runs the daemons against a notify socket).
    assert u["Service"]["Type"] == ["notify"]
    assert u["Service"]["NotifyAccess"] == ["main"]  # not scontrol or other children
    watchdog = u["Service"]["WatchdogSec"]
    assert len(watchdog) == 1 and watchdog[0].endswith("s") and 10 <= int(watchdog[0][:-1]) <= 60
    assert u["Service"]["Restart"] == ["on-failure"]  # a watchdog kill counts as a failure
    assert u["Service"]["BusName"] == [bus_name]
    assert u["Service"]["ExecStart"] == [f"/usr/bin/{program}", "--syslog"]
    for dep in ("munge.service", "dbus.service"):
        assert dep in u["Unit"]["After"] and dep in u["Unit"]["Wants"], dep
    assert u["Service"]["RestartPreventExitStatus"] == ["2"]  # config errors: don't loop
    assert u["Install"]["Alias"] == [f"dbus-{bus_name}.service"]


@pytest.mark.parametrize("unit", ["drcs.service", "drcc.service", "drc-jedi.service"])
def test_units_are_hardened(unit) -> None:
    service = parse(UNITS / unit)["Service"]
    for key, value in {
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelModules": "yes",
    }.items():
        assert service[key] == [value], key
    assert service["ProtectHome"] in (["yes"], ["read-only"])


def test_drcs_may_write_only_its_state_directory() -> None:
    service = parse(UNITS / "drcs.service")["Service"]
    assert service["StateDirectory"] == ["drc"]  # /var/lib/drc, the default SQLite store
    assert "ReadWritePaths" not in service


def test_drcs_may_hold_a_link_connection_for_ten_thousand_nodes() -> None:
    # one descriptor per connected node daemon, plus the database, bus and logs
    service = parse(UNITS / "drcs.service")["Service"]
    assert int(service["LimitNOFILE"][0]) >= 10_000 + 256


def test_drcc_can_see_every_users_processes() -> None:
    service = parse(UNITS / "drcc.service")["Service"]
    for key in ("ProtectProc", "ProcSubset", "CapabilityBoundingSet", "PrivateUsers", "User"):
        assert key not in service, f"{key} would hide other users' /proc or cgroups from drcc"


def test_jedi_runs_once_after_every_drcs_start() -> None:
    jedi, drcs = parse(UNITS / "drc-jedi.service"), parse(UNITS / "drcs.service")
    assert jedi["Service"]["Type"] == ["oneshot"]
    assert "RemainAfterExit" not in jedi["Service"]  # inactive again, so the next start reruns
    assert jedi["Service"]["ExecStart"][:2] == ["/usr/bin/drc-jedi", "reconcile"]
    assert "drcs.service" in jedi["Unit"]["After"]
    assert "drcs.service" in jedi["Unit"]["PartOf"]
    assert "drc-jedi.service" in drcs["Unit"]["Wants"]


@pytest.mark.parametrize(
    ("bus_name", "unit"), [(SERVER_BUS, "drcs.service"), (NODE_BUS, "drcc.service")]
)
def test_bus_activation_starts_the_unit(bus_name, unit) -> None:
    activation = parse(DBUS / f"{bus_name}.service")["D-BUS Service"]
    assert activation["Name"] == [bus_name]
    assert activation["SystemdService"] == [unit]
    assert activation["User"] == ["root"]
    assert (UNITS / unit).exists()


def test_systemd_analyze_finds_nothing_but_the_missing_programs() -> None:
    """The programs are not installed here; anything else systemd complains about is real.
    systemd-analyze comes with the systemd package (.ci/apt-packages.txt)."""
    assert shutil.which("systemd-analyze"), "install the systemd package (.ci/apt-packages.txt)"
    units = [str(UNITS / u) for u in ("drcs.service", "drcc.service", "drc-jedi.service")]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True
    )
    # Units of packages this test machine may lack (dbus.socket moved between Debian packages)
    # are the machine's business, not the units'.
    foreign = (
        "Unit dbus.socket not found",
        "Unit dbus.service not found",
        "Unit munge.service not found",
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if "is not executable: No such file" not in line
        and line.strip()
        and not any(f in line for f in foreign)
    ]
    assert problems == []
