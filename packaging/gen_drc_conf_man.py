"""Write drc.conf(5) from the config schema (``drc.config.SCHEMA``), so the page can't drift.

Usage: python3 packaging/gen_drc_conf_man.py [OUTPUT]   (default: man/drc.conf.5)
Needs only the standard library and the ``drc`` package on the path (run it from the tree).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import drc
from drc.config import DEFAULT_PATH, SCHEMA, Key

SECTIONS = {
    "server": "Read by \\fBdrcs\\fR(8) on the service node. Members of \\fBadmin_groups\\fR "
    "also need a D\\-Bus policy drop\\-in to reach the admin methods: see \\fBdrc\\-dbus\\fR(7).",
    "pool": "The \\fBpool\\fR provider of \\fBdrcs\\fR: cookies reserved for DRC by the admin.",
    "alps": 'The \\fBalps\\fR provider of \\fBdrcs\\fR (provider = "alps"): credentials backed '
    "by ALPS protection domains, two cookies each.",
    "link": "The DRC link between \\fBdrcc\\fR and \\fBdrcs\\fR: TCP, every request a MUNGE "
    "credential, every answer authenticated by a key its request carried or sealed by MUNGE. "
    "\\fBdrcs\\fR reads \\fBlisten\\fR and \\fBnode_uids\\fR; \\fBdrcc\\fR reads "
    "\\fBserver\\fR, \\fBserver_uid\\fR and \\fBtimeout\\fR.",
    "node": "Read by \\fBdrcc\\fR(8) on every compute node.",
    "jedi": "Read by \\fBdrc\\-jedi\\fR(8) on the service node: where the list of active jobs "
    "comes from.",
    "tokens": "Credential tokens (\\fBrdmacred\\fR(3)): signed by \\fBdrcs\\fR, "
    "checked by \\fBdrcc\\fR alone. Without the key file, tokens are disabled (a warning is "
    "logged).",
    "metrics": "Prometheus metrics of \\fBdrcs\\fR and \\fBdrcc\\fR, served at "
    "\\fBhttp://ADDRESS/metrics\\fR. Off unless an address is set; a bare port binds to "
    "localhost (127.0.0.1). The metrics are listed in \\fBdrcs\\fR(8) and \\fBdrcc\\fR(8) "
    "(section METRICS); a Grafana dashboard ships as "
    "\\fB/usr/share/drc/grafana\\-dashboard.json\\fR.",
    "log": "Logging of every daemon (stderr in the foreground, syslog with \\fB\\-\\-syslog\\fR).",
}

HEADER = r""".\" Generated from drc/config.py by packaging/gen_drc_conf_man.py; do not edit.
.TH DRC.CONF 5 "" "drc {version}" "drc manual"
.SH NAME
drc.conf \- configuration of the Dynamic RDMA Credentials daemons
.SH SYNOPSIS
.B {path}
.SH DESCRIPTION
One TOML file configures \fBdrcs\fR(8), \fBdrcc\fR(8) and \fBdrc\-jedi\fR(8); every daemon reads
the sections it uses and ignores the others, so one file can serve the whole cluster.
Every key is optional: a missing key takes the default shown below.
.PP
The file is checked strictly. An unknown section or key, or a value of the wrong type, stops
the daemon with one line naming the file and the key, and exit status 2, for example:
.PP
.RS
.nf
drcs: /etc/drc/drc.conf: unknown key 'databse' in [server] (known: bus_address, database, ...)
drcc: /etc/drc/drc.conf: [link] timeout must be an integer, got '5'
drcs: /etc/drc/drc.conf: config file not found
.fi
.RE
.PP
A daemon reads the file once, at start: restart it after a change
(\fBsystemctl restart drcs\fR).
"""

FOOTER = r""".SH FILES
.TP
.B {path}
This file. Root-owned; readable by all is fine (it holds no secret).
.TP
.B /etc/drc/token.key
The token key ([tokens] key_file): at least 32 random bytes, mode 0600, the same on every node,
for example \fBhead \-c 64 /dev/urandom > /etc/drc/token.key; chmod 600 /etc/drc/token.key\fR.
.TP
.B /var/lib/drc/drcs.db
The default SQLite store of \fBdrcs\fR.
.SH EXAMPLE
A cluster with DRCS on host \fBsvc1\fR, a cookie range of 4096, and group \fBhpcadmin\fR as
DRC admins:
.PP
.RS
.nf
[server]
admin_groups = ["hpcadmin"]

[pool]
cookie_min = 0x20000
cookie_max = 0x20FFF

[link]
listen = "0.0.0.0:6820"
server = "svc1:6820"
.fi
.RE
.SH SEE ALSO
\fBdrcs\fR(8), \fBdrcc\fR(8), \fBdrc\-jedi\fR(8), \fBdrccli\fR(1), \fBdrc\-dbus\fR(7),
\fBdrc\-embedded\fR(1)
"""


def roff(text: str) -> str:
    """Plain text safe inside a roff paragraph."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return hex(value) if value >= 0x10000 else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def type_name(key: Key) -> str:
    names = {int: "integer", float: "number", str: "string", list: "list", bool: "boolean"}
    types = key.type if isinstance(key.type, tuple) else (key.type,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def render() -> str:
    out = [HEADER.format(version=drc.__version__, path=DEFAULT_PATH)]
    out.append('.SH "SECTIONS AND KEYS"\n')
    for section, keys in SCHEMA.items():
        out.append(f'.SS "[{section}]"\n')
        if section in SECTIONS:
            out.append(SECTIONS[section] + "\n")
        for name, key in keys.items():
            default = roff(toml_value(key.default))
            out.append(f".TP\n\\fB{name}\\fR = \\fB{default}\\fR\n")
            out.append(f"({type_name(key)}) {roff(key.doc)}.\n")
    out.append(FOOTER.format(path=DEFAULT_PATH))
    return "".join(out)


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "man" / "drc.conf.5"
    target.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
