"""The files an embedded cluster runs with: each host's drc.conf and the bus policy.

Writing them is all this module does; :mod:`drc.embedded.cluster` starts and stops the
processes that read them. Every file is the owner's only (:func:`write_private`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from drc.embedded.polling import free_port
from drc.embedded.private import write_private
from drc.procfs import user_name

if TYPE_CHECKING:
    from drc.embedded.cluster import Embedded

POLICY_FILE = Path(__file__).resolve().parent.parent / "data" / "org.drc.conf"


def write_config(
    state_dir: Path,
    emb: Embedded,
    wlm: str = "none",
    *,
    path: Path | None = None,
    bus_address: str | None = None,
    listen: str | None = None,
    node_name: str = "",
    boot_id_file: str = "/proc/sys/kernel/random/boot_id",
    servers: list[str] | None = None,
) -> Path:
    """The embedded drc.conf: SQLite in the state dir, a small cookie pool, a loopback link.

    ``wlm``: "none" (no jobs), or "slurm" when a Slurm runs on this machine. A multi-host
    instance writes one per host: ``path``, the host's bus, a server's ``listen`` address, a
    node's name and boot id file; every host lists every server (``emb.servers``, a node
    in its own order: ``servers``).
    Metrics are served where ``emb.drcs_metrics`` / ``emb.drcc_metrics`` say (loopback),
    if set, by host 1 only (DRCS 1 and node 1).
    """
    listen = listen or (emb.servers[0] if emb.servers else f"127.0.0.1:{free_port()}")
    servers = servers or emb.servers or [listen]
    bus_address = bus_address or emb.bus.address
    database = emb.database or f"sqlite:///{state_dir}/drcs.db"
    admin = "" if os.getuid() == 0 else f"admin_groups = [{os.getgid()}]\n"
    munge_socket = emb.munged.socket if emb.munged else ""
    q = json.dumps
    path = path or emb.config
    write_private(
        path,
        "# Written by drc-embedded; see drc.conf(5) for every key.\n"
        "[server]\n"
        f"bus_address = {q(bus_address)}\n"
        f"database = {q(database)}\n"
        'provider = "pool"\n'
        "# a fair share: no user (root aside) owns or pins more than this of the pool\n"
        'user_limit = "10%"\n'
        f"{admin}\n"
        "[pool]\n"
        "cookie_min = 0x10000\n"
        "cookie_max = 0x103FF\n"
        "cookies_per_credential = 1\n"
        "ptag = 42\n\n"
        "[link]\n"
        f"listen = {q(listen)}\n"
        f"server = {q(servers[0])}\n"
        f"servers = {q(servers)}\n"
        f"munge_socket = {q(munge_socket)}\n"
        f"server_uid = {os.getuid()}\n"
        f"node_uids = [{os.getuid()}]\n\n"
        "[node]\n"
        f"bus_address = {q(bus_address)}\n"
        f"name = {q(node_name)}\n"
        f"wlm = {q(wlm)}\n"
        f"boot_id_file = {q(boot_id_file)}\n\n"
        "[tokens]\n"
        f"key_file = {q(str(state_dir / 'token.key'))}\n"
        + (_metrics_config(emb) if path == emb.config else ""),
    )
    return path


def _metrics_config(emb: Embedded) -> str:
    if not (emb.drcs_metrics or emb.drcc_metrics):
        return ""
    # One DRCS owns this store: nothing changes it behind its back, so the state gauges
    # need no periodic re-read (a cluster sharing PostgreSQL keeps the default).
    return (
        "\n[metrics]\n"
        f"drcs_listen = {json.dumps(emb.drcs_metrics)}\n"
        f"drcc_listen = {json.dumps(emb.drcc_metrics)}\n"
        "state_min_interval = 1\n"
        "state_max_age = 3600\n"
    )


def policy_files(state_dir: Path) -> list[Path]:
    """drc's policy; as a plain user, also let that user own the daemons' names."""
    files = [POLICY_FILE]
    if os.getuid() != 0:
        local = state_dir / "local-policy.conf"
        user = user_name(os.getuid())
        write_private(
            local,
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            f'<busconfig><policy user="{user}"><allow own="org.drc.Server"/>'
            '<allow own="org.drc.Node"/><allow send_destination="org.drc.Server"/>'
            '<allow send_destination="org.drc.Node"/></policy></busconfig>\n',
        )
        files.append(local)
    return files
