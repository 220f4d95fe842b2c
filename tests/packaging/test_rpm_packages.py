"""`make rpm`: the sub-packages, what each ships, what each requires, and that the packaged
daemons run from the unpacked payload."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import drc
from drc import config

from pkgtools import REPO

pytestmark = pytest.mark.skipif(
    shutil.which("rpmbuild") is None, reason="rpmbuild not installed (Debian: apt-get install rpm)"
)

WITH_SLURM = Path("/usr/include/slurm/spank.h").exists()  # the spec's own test
VERSION_RELEASE = f"{drc.__version__}-1"
PACKAGES = {"python3-drc", "drc-server", "drc-node", "drc-libs", "drc-devel", "drc-alps"}

FILES = {
    "python3-drc": [
        "/etc/drc/drc.conf",
        "/usr/share/dbus-1/system.d/org.drc.conf",
        "/usr/bin/drc-embedded",
        "/usr/share/man/man1/drc-embedded.1",
        "/usr/share/man/man5/drc.conf.5",
        "/usr/share/man/man7/drc-dbus.7",
        "/usr/share/drc/grafana-dashboard.json",
    ],
    "drc-server": [
        "/usr/bin/drcs",
        "/usr/bin/drc-jedi",
        "/usr/bin/drccli",
        "/usr/lib/systemd/system/drcs.service",
        "/usr/lib/systemd/system/drc-jedi.service",
        "/usr/share/dbus-1/system-services/org.drc.Server.service",
        "/usr/share/dbus-1/interfaces/org.drc.Server.xml",
        "/var/lib/drc",
        "/usr/share/man/man1/drccli.1",
        "/usr/share/man/man8/drcs.8",
        "/usr/share/man/man8/drc-jedi.8",
        "/usr/share/doc/drc-server/drc.conf.ha-example",
    ],
    "drc-node": [
        "/usr/bin/drcc",
        "/usr/bin/drc",
        "/usr/share/man/man1/drc.1",
        "/usr/lib/systemd/system/drcc.service",
        "/usr/share/dbus-1/system-services/org.drc.Node.service",
        "/usr/share/dbus-1/interfaces/org.drc.Node.xml",
        "/usr/share/man/man8/drcc.8",
        "/usr/share/man/man8/drc-slingshot.8",
    ],
    "drc-libs": ["/usr/lib64/libdrc.so.1", "/usr/lib64/libdrc.so.1.0.0"],
    "drc-devel": [
        "/usr/lib64/libdrc.so",
        "/usr/include/rdmacred.h",
        "/usr/lib64/pkgconfig/cray-drc.pc",
        "/usr/share/man/man3/rdmacred.3",
    ],
    "drc-slurm": ["/usr/lib64/slurm/drc.so", "/etc/slurm/plugstack.conf.d/drc.conf"],
    "drc-alps": [
        "/usr/libexec/drc/drc-alps-epilog",
        "/usr/share/man/man8/drc-alps.8",
        "/usr/share/doc/drc-alps/alps.conf.example",
    ],
}

REQUIRES = {
    "python3-drc": [
        "python3 >= 3.11",
        "python3dist(peewee)",
        "python3dist(dbus-fast)",
        "python3dist(prometheus-client)",
        "dbus",
    ],
    "drc-server": [f"python3-drc = {VERSION_RELEASE}", "munge"],
    "drc-node": [f"python3-drc = {VERSION_RELEASE}", "munge"],
    "drc-libs": ["libsystemd.so.0()(64bit)"],
    "drc-devel": [f"drc-libs(x86-64) = {VERSION_RELEASE}", "pkgconfig"],
    "drc-slurm": [f"drc-node = {VERSION_RELEASE}"],
    "drc-alps": [f"drc-node = {VERSION_RELEASE}", f"python3-drc = {VERSION_RELEASE}"],
}


def make_rpm(top: Path, rpmbuild_args: str = "") -> dict[str, Path]:
    env = {**os.environ, "RPMBUILD_ARGS": rpmbuild_args}
    result = subprocess.run(
        ["make", "-s", "rpm", f"RPM_TOPDIR={top}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {query(p, "%{NAME}")[0]: p for p in (top / "RPMS").glob("*/*.rpm")}


def query(package: Path, *args: str) -> list[str]:
    argv = ["rpm", "-qp", *(["--qf", args[0]] if args[0].startswith("%") else args), str(package)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.fixture(scope="module")
def rpms(tmp_path_factory) -> dict[str, Path]:
    return make_rpm(tmp_path_factory.mktemp("rpm"))


@pytest.fixture(scope="module")
def payload(rpms, tmp_path_factory) -> Path:
    """Every package unpacked into one tree, as if installed."""
    root = tmp_path_factory.mktemp("root")
    for package in rpms.values():
        with package.open("rb") as f:
            archive = subprocess.run(["rpm2archive", "-"], stdin=f, capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(root)  # our own packages, just built
    return root


def listing(package: Path) -> set[str]:
    """Files of a package, man pages without their compression suffix."""
    return {re.sub(r"\.(gz|bz2|xz|zst)$", "", f) for f in query(package, "-l")}


def test_the_sub_packages_match_where_things_run(rpms) -> None:
    assert set(rpms) == PACKAGES | ({"drc-slurm"} if WITH_SLURM else set())


def test_package_version_is_the_python_package_version(rpms) -> None:
    for package in rpms.values():
        assert query(package, "%{VERSION}-%{RELEASE}") == [VERSION_RELEASE]


@pytest.mark.parametrize("name", sorted(FILES))
def test_package_ships_its_files(rpms, name) -> None:
    if name not in rpms:
        pytest.skip(f"{name} not built here (no <slurm/spank.h>)")
    missing = set(FILES[name]) - listing(rpms[name])
    assert not missing


def test_every_man_page_of_the_tree_is_packaged(rpms) -> None:
    shipped = {Path(f).name for p in rpms.values() for f in listing(p)}
    pages = {p.name for p in (REPO / "man").iterdir() if re.search(r"\.[1-8]$", p.name)}
    assert {"drccli.1", "drc.1"} <= pages <= shipped


def test_python_package_is_in_the_python_package_only(rpms) -> None:
    for name, package in rpms.items():
        has_drc = any(re.search(r"/drc/core/service\.py$", f) for f in listing(package))
        assert has_drc == (name == "python3-drc"), name


@pytest.mark.parametrize("name", sorted(REQUIRES))
def test_package_requires(rpms, name) -> None:
    if name not in rpms:
        pytest.skip(f"{name} not built here (no <slurm/spank.h>)")
    requires = set(query(rpms[name], "--requires"))
    assert set(REQUIRES[name]) <= requires, requires


def test_config_files_are_marked_noreplace(rpms) -> None:
    configs = set(query(rpms["python3-drc"], "--configfiles"))
    assert "/etc/drc/drc.conf" in configs


def test_shipped_config_and_policy_are_the_trees(payload) -> None:
    assert config.load(payload / "etc/drc/drc.conf").values == config.defaults()
    policy = payload / "usr/share/dbus-1/system.d/org.drc.conf"
    assert policy.read_text() == (REPO / "drc" / "data" / "org.drc.conf").read_text()
    ha = payload / "usr/share/doc/drc-server/drc.conf.ha-example"
    assert ha.read_text() == (REPO / "packaging" / "drc.conf.ha-example").read_text()


def test_packaged_drcs_refuses_a_bad_config_with_exit_2(payload, tmp_path) -> None:
    """The packaged console script and package, not the checkout's."""
    sitelib = next(payload.glob("usr/lib/python3*/*-packages"))
    bad = tmp_path / "drc.conf"
    bad.write_text("[server]\nnonsense = 1\n")
    result = subprocess.run(
        [sys.executable, str(payload / "usr/bin/drcs"), "-c", str(bad)],
        env={**os.environ, "PYTHONPATH": str(sitelib)},
        cwd=tmp_path,  # not the checkout: its drc/ would shadow the packaged one
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "'nonsense'" in result.stderr and str(bad) in result.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import drc.server.main as m; print(m.__file__)"],
        env={**os.environ, "PYTHONPATH": str(sitelib)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.startswith(str(sitelib))


def test_packaged_drc_command_is_not_shadowed_by_the_drc_package(payload, tmp_path) -> None:
    """/usr/bin/drc shares its name with the Python package: the script must still import
    the package (and print its version), not itself."""
    sitelib = next(payload.glob("usr/lib/python3*/*-packages"))
    result = subprocess.run(
        [sys.executable, str(payload / "usr/bin/drc"), "--version"],
        env={**os.environ, "PYTHONPATH": str(sitelib)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"drc (drc) {drc.__version__}\n"


@pytest.mark.skipif(not WITH_SLURM, reason="no <slurm/spank.h>: the default build is this one")
def test_without_slurm_skips_the_slurm_package(tmp_path) -> None:
    assert set(make_rpm(tmp_path, "--without slurm")) == PACKAGES
