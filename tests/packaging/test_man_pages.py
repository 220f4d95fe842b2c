"""Man pages an admin reads at 3 a.m.: drc.conf(5) generated from the schema, drc-dbus(7)
listing every method with its real signature, and every page valid roff."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dbus_fast.signature import get_signature_tree

from drc import config
from drc.core.errors import RETRY_HELPS, Code
from drc.export import merged_table
from drc.node import exports as node
from drc.server import exports as server

from pkgtools import REPO

MAN = REPO / "man"
HAND_WRITTEN = [
    "drc-dbus.7",
    "drcs.8",
    "drcc.8",
    "drc-jedi.8",
    "drc-embedded.1",
    "drc-slingshot.8",
]


def generator():
    path = REPO / "packaging" / "gen_drc_conf_man.py"
    spec = importlib.util.spec_from_file_location("gen_drc_conf_man", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drc_conf_5(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("man") / "drc.conf.5"
    assert generator().main([str(out)]) == 0
    return out.read_text()


def test_drc_conf_5_documents_every_section_and_key_with_its_default(drc_conf_5) -> None:
    gen = generator()
    for section, keys in config.SCHEMA.items():
        assert f'.SS "[{section}]"' in drc_conf_5
        for name, key in keys.items():
            entry = f".TP\n\\fB{name}\\fR = \\fB{gen.roff(gen.toml_value(key.default))}\\fR\n"
            assert entry in drc_conf_5, f"[{section}] {name} missing from drc.conf(5)"
            assert gen.roff(key.doc) in drc_conf_5


def test_drc_conf_5_defaults_are_valid_toml_for_the_key(drc_conf_5) -> None:
    gen = generator()
    for section, keys in config.SCHEMA.items():
        for name, key in keys.items():
            value = tomllib.loads(f"v = {gen.toml_value(key.default)}")["v"]
            assert value == key.default, (section, name)


def test_drc_conf_5_is_marked_generated(drc_conf_5) -> None:
    assert drc_conf_5.startswith('.\\" Generated from drc/config.py')


def signature_heading(m) -> str:
    ins = get_signature_tree(m.in_signature).types
    args = ", ".join(f"{t.signature} {n}" for t, n in zip(ins, m.arg_names, strict=True))
    outs = ", ".join(t.signature for t in get_signature_tree(m.out_signature).types)
    return f'.SS "{m.name}({args})' + (f" \\(-> {outs}" if outs else "") + '"'


def interface_section(page: str, interface: str) -> str:
    start = page.index(f'.SH "INTERFACE {interface}"')
    end = page.find("\n.SH ", start + 1)
    return page[start:end]


@pytest.mark.parametrize(
    ("cls", "interface"),
    [(server.BUS_OBJECTS, server.INTERFACE), (node.BUS_OBJECTS, node.INTERFACE)],
    ids=["server", "node"],
)
def test_drc_dbus_7_documents_every_method_with_its_signature_and_callers(cls, interface):
    section = interface_section((MAN / "drc-dbus.7").read_text(), interface)
    table = {name: m for name, (_, m) in merged_table(*cls).items()}
    headings = re.findall(r'^\.SS "(\w+)\(', section, re.M)
    assert sorted(headings) == sorted(table), "drc-dbus(7) and the method table differ"
    for m in table.values():
        assert signature_heading(m) in section, f"{interface}.{m.name}: signature changed?"


def test_drc_dbus_7_names_every_error() -> None:
    page = (MAN / "drc-dbus.7").read_text()
    for code in Code:
        if code is not Code.SUCCESS:
            assert f".B {code.dbus_name}\n" in page


def test_every_program_has_a_man_page() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    generated = {"drccli", "drc"}  # drccli.1 and drc.1: make man
    pages = {p.name.rsplit(".", 1)[0] for p in MAN.iterdir()} | generated
    assert set(scripts) <= pages


needs_groff = pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")


def groff_warnings(path) -> str:
    argv = ["groff", "-ww", "-man", "-z", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True)
    return result.stderr if result.returncode == 0 else f"exit {result.returncode}: {result.stderr}"


@needs_groff
@pytest.mark.parametrize("page", HAND_WRITTEN)
def test_hand_written_pages_are_clean_roff(page) -> None:
    assert groff_warnings(MAN / page) == ""


@needs_groff
def test_generated_drc_conf_5_is_clean_roff(drc_conf_5, tmp_path) -> None:
    page = tmp_path / "drc.conf.5"
    page.write_text(drc_conf_5)
    assert groff_warnings(page) == ""


def generated_page(tmp_path, program: str, source: str) -> str:
    """A command's page as ``make man`` writes it (argparse-manpage over build_parser)."""
    out = tmp_path / f"{program}.1"
    tool = Path(sys.executable).parent / "argparse-manpage"
    argv = [str(tool), "--pyfile", str(REPO / source), "--function", "build_parser"]
    argv += ["--prog", program, "--project-name", "drc", "--output", str(out)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return out.read_text()


def section_of(page: str, heading: str) -> str:
    section = page[page.index(f".SH {heading}") :]
    end = section.find("\n.SH ", 1)
    return section[:end] if end > 0 else section


def test_drccli_1_documents_every_exit_status(tmp_path) -> None:
    from drc.cli.drccli import EXIT_STATUS

    page = generated_page(tmp_path, "drccli", "drc/cli/drccli.py")
    section = section_of(page, "EXIT STATUS")
    for code, _ in EXIT_STATUS:
        assert f".TP\n.B {code}\n" in section
    assert "drcs.service" in section
    if shutil.which("groff"):
        assert groff_warnings(tmp_path / "drccli.1") == ""


def test_drc_1_documents_commands_exit_statuses_and_the_shared_service_example(tmp_path) -> None:
    from drc.cli.exits import documented

    page = generated_page(tmp_path, "drc", "drc/cli/task.py")
    for code, _ in documented("drc"):
        assert f".TP\n.B {code}\n" in section_of(page, "EXIT STATUS")
    assert "not in a job" in section_of(page, "EXIT STATUS")
    for command in ("acquire", "grant", "revoke", "access", "token", "release", "whoami"):
        assert f"drc {command}" in page.replace("\\fB", "").replace("\\fR", "")
    assert "auth\\-key" in section_of(page, "EXAMPLES")
    assert "SLURM_JOB_ID" in section_of(page, "ENVIRONMENT")
    if shutil.which("groff"):
        assert groff_warnings(tmp_path / "drc.1") == ""


def metric_families(service) -> dict[str, set[str]]:
    """Every metric each daemon exposes (family names; counters with their _total)."""
    from drc.metrics.node import NodeMetrics
    from drc.metrics.server import ServerMetrics

    names: dict[str, set[str]] = {}
    for page, registry in (
        ("drcs.8", ServerMetrics(service).registry),
        ("drcc.8", NodeMetrics().registry),
    ):
        names[page] = {
            f.name + ("_total" if f.type == "counter" else "")
            for f in registry.collect()
            if not f.name.startswith("process_")
        }
    return names


def test_every_metric_is_documented_in_its_daemons_page(service) -> None:
    for page, names in metric_families(service).items():
        text = (MAN / page).read_text()
        section = text[text.index(".SH METRICS") :]
        section = section[: section.index("\n.SH ", 1)]
        assert names, page
        for name in names:
            assert name in section, f"{name} missing from {page} METRICS"


def test_grafana_dashboard_uses_only_metrics_the_daemons_expose(service) -> None:
    import json

    dashboard = json.loads((REPO / "packaging/grafana/drc-dashboard.json").read_text())
    exposed = set().union(*metric_families(service).values())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\b(drc[sc]_[a-z_]+)", target["expr"]))
    assert used, "the dashboard queries nothing"
    for name in used:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert name in exposed or base in exposed, f"dashboard queries unknown metric {name}"
    assert {"drcs_credentials_live", "drcc_cache_hits_total"} <= used


def test_rdmacred_3_says_for_every_code_whether_retrying_helps() -> None:
    """Cray clients retry EINVAL forever: the page's table must cover every code, in step
    with drc.core.errors.RETRY_HELPS."""
    page = (MAN / "rdmacred.3").read_text()
    assert page.startswith("'\\\" t\n")  # man runs tbl for the table
    for code in Code:
        if code is not Code.SUCCESS:
            assert f"\n{code.drc_name}\t{RETRY_HELPS[code]}\t" in page, code
            assert f'.B {code.drc_name} " ({int(code)})"\n' in page, code
