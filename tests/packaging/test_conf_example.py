"""packaging/drc.conf.example, installed as /etc/drc/drc.conf: every key, commented, with its
real default, and loadable both as shipped and with every line uncommented."""

from __future__ import annotations

import re

from drc import config

from pkgtools import REPO

EXAMPLE = REPO / "packaging" / "drc.conf.example"
COMMENTED_KEY = re.compile(r"^#(\w+) = (.*)$")


def uncommented(tmp_path):
    text = "\n".join(
        line[1:] if COMMENTED_KEY.match(line) else line for line in EXAMPLE.read_text().splitlines()
    )
    path = tmp_path / "drc.conf"
    path.write_text(text + "\n")
    return path


def test_shipped_example_loads_as_the_defaults() -> None:
    assert config.load(EXAMPLE).values == config.defaults()


def test_every_key_is_there_commented_with_its_default(tmp_path) -> None:
    cfg = config.load(uncommented(tmp_path))
    assert cfg.values == config.defaults()
    seen: dict[str, set[str]] = {}
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif m := COMMENTED_KEY.match(line):
            seen.setdefault(section, set()).add(m.group(1))
    assert seen == {s: set(keys) for s, keys in config.SCHEMA.items()}


def test_every_key_has_a_comment_line_above_it() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if COMMENTED_KEY.match(line):
            above = lines[i - 1]
            assert above.startswith("# ") and len(above) > 10, f"no explanation for {line!r}"


def test_the_ha_example_has_two_servers_on_a_multi_host_postgresql() -> None:
    from peewee import PostgresqlDatabase

    from drc.node.main import link_servers
    from drc.store.database import open_database

    cfg = config.load(REPO / "packaging" / "drc.conf.ha-example")
    assert link_servers(cfg) == ["svc1.cluster:6820", "svc2.cluster:6820"]
    url = cfg["server"]["database"]
    assert "target_session_attrs=read-write" in url and "," in url
    assert isinstance(open_database(url), PostgresqlDatabase)  # libpq gets the URL whole


def test_the_ha_examples_url_is_a_primary_and_standby_pair_to_libpq() -> None:
    """As libpq reads it: two hosts, each with its port, only a writable one will do."""
    from psycopg.conninfo import conninfo_to_dict

    url = config.load(REPO / "packaging" / "drc.conf.ha-example")["server"]["database"]
    parsed = conninfo_to_dict(url)
    assert len(parsed["host"].split(",")) == len(parsed["port"].split(",")) == 2
    assert parsed["target_session_attrs"] == "read-write"
    assert "password" not in parsed  # it belongs in root's ~/.pgpass
    assert "connect_timeout" not in parsed  # [server] db_connect_timeout overrides it
