"""Every org.drc.Node member the C code calls exists with the signature the C code sends and
reads (issue 14). The C code calls drcc only through drc_call() and its one table,
drc_verbs[] in lib/drc_call.c; this holds that table against the shipped introspection XML,
which tests/packaging/test_introspection_xml.py holds against the daemon's exports. Plain
file reading: no bus, no daemon, no root."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from clib.support import LIB, REPO

NODE_XML = REPO / "packaging" / "dbus" / "org.drc.Node.xml"
C_SOURCES = [*LIB.glob("*.c"), *(REPO / "plugins" / "spank").glob("*.c")]
ENTRY = re.compile(r'\[(DRC_VERB_\w+)\]\s*=\s*\{\s*"(\w*)",\s*"([^"]*)",\s*"([^"]*)"\s*\}')


def c_table(source: str) -> dict[str, tuple[str, str, str]]:
    """drc_verbs[] of drc_call.c: enum name -> (member, in signature, out signature)."""
    body = source.split("drc_verbs[DRC_N_VERBS] = {", 1)[1].split("};", 1)[0]
    return {name: (member, sin, sout) for name, member, sin, sout in ENTRY.findall(body)}


def exported(xml: str, interface: str = "org.drc.Node") -> dict[str, tuple[str, str]]:
    """member -> (in signature, out signature), from introspection XML."""
    iface = next(i for i in ET.fromstring(xml).iter("interface") if i.get("name") == interface)
    return {
        m.get("name"): tuple(  # type: ignore[misc]
            "".join(a.get("type", "") for a in m.iter("arg") if a.get("direction") == way)
            for way in ("in", "out")
        )
        for m in iface.iter("method")
    }


def mismatches(table: dict[str, tuple[str, str, str]], methods: dict) -> list[str]:
    wrong = []
    for name, (member, sig_in, sig_out) in sorted(table.items()):
        if member not in methods:
            wrong.append(f"{name}: org.drc.Node has no member {member!r}")
        elif methods[member] != (sig_in, sig_out):
            have = "({}) -> ({})".format(*methods[member])
            wrong.append(f"{name}: C calls {member}({sig_in}) -> ({sig_out}), drcc has {have}")
    return wrong


def test_every_member_the_c_code_calls_exists_with_its_signature() -> None:
    table = c_table((LIB / "drc_call.c").read_text())
    assert mismatches(table, exported(NODE_XML.read_text())) == []


def test_the_table_has_one_entry_per_verb_and_the_c_code_uses_only_those() -> None:
    header = (LIB / "drc_call.h").read_text()
    enum = re.findall(r"^\s*(DRC_VERB_\w+),", header, re.M)
    table = c_table((LIB / "drc_call.c").read_text())
    assert sorted(table) == sorted(enum) and len(enum) == len(set(enum))
    used = {v for src in C_SOURCES for v in re.findall(r"\bDRC_VERB_\w+", src.read_text())}
    assert used <= set(enum)
    # Each verb is called somewhere: an unused row would be checked for nothing.
    callers = "".join(s.read_text() for s in C_SOURCES if s.name != "drc_call.c")
    assert {v for v in enum if v not in callers} == set()


def test_no_c_file_calls_drcc_around_the_table() -> None:
    """Only drc_call.c builds method calls, and only with a member from drc_verbs[]."""
    for source in C_SOURCES:
        text = source.read_text()
        builds = re.findall(r"sd_bus_(?:message_new_method_call|call_method\w*)\s*\(", text)
        if source.name == "drc_call.c":
            assert len(builds) == 1 and "v->member)" in text
        else:
            assert builds == [], f"{source.name} calls D-Bus around drc_call()"


def test_a_renamed_or_retyped_verb_is_reported(tmp_path: Path) -> None:
    source = (LIB / "drc_call.c").read_text()
    methods = exported(NODE_XML.read_text())
    renamed = c_table(source.replace('"JobCredential"', '"StepCredential"'))
    assert mismatches(renamed, methods) == [
        "DRC_VERB_JOB_CREDENTIAL: org.drc.Node has no member 'StepCredential'"
    ]
    retyped = c_table(source.replace('{ "Access", "uu", "uuuu" }', '{ "Access", "uu", "uuu" }'))
    assert mismatches(retyped, methods) == [
        "DRC_VERB_ACCESS: C calls Access(uu) -> (uuu), drcc has (uu) -> (uuuu)"
    ]
    # And the daemon side: a verb renamed in the exports (so in the regenerated XML).
    xml = NODE_XML.read_text().replace('name="GetWlmId"', 'name="GetJobId"')
    assert mismatches(c_table(source), exported(xml)) == [
        "DRC_VERB_GET_WLM_ID: org.drc.Node has no member 'GetWlmId'"
    ]
