"""The one TOML config file of every drc daemon (``/etc/drc/drc.conf``).

Every key is declared here with its type, default and a one-line meaning (``drc.conf(5)`` is
written from the same table). Unknown keys and wrong types are refused with one line naming
the key and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import grp
import pwd
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/drc/drc.conf")

#: Deadlines nest, so whoever gives up first is the one that knows why. Every client of DRCC
#: (drc.client, libdrc's DRC_DEFAULT_TIMEOUT_MS, the SPANK plugin) waits CLIENT_TIMEOUT seconds;
#: DRCC gives up on DRCS after [link] timeout, every fail-over attempt included, which must end
#: DEADLINE_MARGIN earlier: the client then gets DRCC's "no DRCS answered: ..." and not a
#: "drcc did not answer" that would send the admin to a healthy DRCC. The margin covers DRCC's
#: own work before it asks DRCS (finding the caller's job: slurmd's answer takes at most 2 s)
#: and a second of slack.
CLIENT_TIMEOUT = 10
DEADLINE_MARGIN = 3


class ConfigError(Exception):
    """A config file problem, worded as one line for the admin."""


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any
    doc: str


SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "bus_address": Key(str, "", "D-Bus address DRCS serves on; empty = the system bus"),
        "database": Key(
            str,
            "sqlite:////var/lib/drc/drcs.db",
            "store URL: sqlite:////path/to.db or postgresql://user@host/db",
        ),
        "provider": Key(str, "pool", "network resources come from: pool, alps or slingshot"),
        "admin_groups": Key(list, [], "groups (names or gids) whose members are DRC admins"),
        "persistent_users": Key(list, [], "users (names or uids) allowed PERSISTENT credentials"),
        "persistent_groups": Key(list, [], "groups allowed PERSISTENT credentials"),
        "user_limit": Key(
            (int, str),
            "10%",
            "live credentials one user may own or pin while no user-default limit is set "
            '(drccli limit --user-default): a number, a share of the pool such as "10%" '
            '(rounded down, at least 1), or "none"; root is not bound by it',
        ),
        "store_timeout": Key(
            (int, float),
            2,
            "seconds a verb may wait for the store before DRCS answers ECONNREFUSED and reports "
            "the store as not answering; keep it below DRCC's [link] timeout divided by the "
            "number of servers",
        ),
        "db_connect_timeout": Key(
            (int, float), 3, "seconds to open a PostgreSQL connection (libpq connect_timeout)"
        ),
        "db_statement_timeout": Key(
            (int, float),
            1.5,
            "seconds one PostgreSQL statement may run (statement_timeout; a COMMIT waiting "
            "for a synchronous standby is bounded by store_timeout only)",
        ),
        "db_lock_timeout": Key(
            (int, float),
            1,
            "seconds a PostgreSQL statement may wait for a lock (lock_timeout): a change waits "
            "only for one touching the same credential, limit or pool; verbs committed "
            "together wait for none (one whose lock another drcs holds runs alone after them)",
        ),
        "db_idle_in_transaction_timeout": Key(
            (int, float),
            10,
            "seconds PostgreSQL keeps a transaction a client left idle "
            "(idle_in_transaction_session_timeout)",
        ),
        "db_keepalives_idle": Key(
            int, 5, "seconds of silence before TCP keepalive probes to PostgreSQL start"
        ),
        "db_keepalives_interval": Key(int, 2, "seconds between two TCP keepalive probes"),
        "db_keepalives_count": Key(
            int, 3, "unanswered keepalive probes after which the PostgreSQL connection is dead"
        ),
        "sqlite_busy_timeout": Key(
            (int, float),
            1,
            "seconds a SQLite transaction waits for another process's write lock (busy_timeout)",
        ),
    },
    "pool": {
        "cookie_min": Key(int, 0x10000, "first cookie of the range reserved for DRC"),
        "cookie_max": Key(int, 0x1FFFF, "last cookie of the reserved range"),
        "cookie_stride": Key(int, 1, "distance between two cookies handed out"),
        "cookies_per_credential": Key(int, 1, "1 (Slurm-style) or 2 (ALPS-style)"),
        "ptag": Key(int, 0, "protection tag reported with every credential (0..255)"),
    },
    "link": {
        "listen": Key(
            str, "", "host:port DRCS serves the DRC link on (empty: no link); e.g. 0.0.0.0:6820"
        ),
        "server": Key(str, "", "host:port of the DRCS link, for DRCC (one server)"),
        "servers": Key(
            list,
            [],
            "host:port of every DRCS, for DRCC: it follows the first that answers and fails "
            "over to the next (overrides server)",
        ),
        "munge_socket": Key(str, "", "munged socket (empty: libmunge's default)"),
        "server_uid": Key(int, 0, "uid DRCS runs as: DRCC refuses answers from anyone else"),
        "node_uids": Key(list, [0], "uids node daemons run as: DRCS serves only them"),
        "timeout": Key(
            int,
            5,
            "seconds DRCC spends on DRCS for one request, every fail-over attempt included, "
            "before it answers ECONNREFUSED with the reason; "
            f"1 to {CLIENT_TIMEOUT - DEADLINE_MARGIN} (clients wait {CLIENT_TIMEOUT} s)",
        ),
        "heartbeat": Key(
            int,
            4,
            "seconds within which DRCS answers DRCC's change-feed poll (empty when nothing "
            "changed); no answer 2 s after that and DRCC follows the next DRCS. Each heartbeat "
            "costs DRCS ~0.2 ms of CPU per node (1 to 300)",
        ),
        "standby": Key(
            int,
            30,
            "with several servers, DRCC keeps an idle link open to the DRCS it would fail over "
            "to, so a fail-over pays no connect there: opened at a random moment within this "
            "many seconds after start, and again within as many after it closed (that DRCS "
            "restarted, or the node moved); 0: no standby link (0 to 3600)",
        ),
    },
    "node": {
        "bus_address": Key(str, "", "D-Bus address DRCC serves on; empty = the system bus"),
        "name": Key(str, "", "this node's name as DRCS knows it; empty = short host name"),
        "wlm": Key(str, "slurm", "finds a process's job: slurm, alps or none"),
        "scontrol": Key(str, "scontrol", "scontrol used to ask slurmd which job a pid is in"),
        "boot_id_file": Key(
            str,
            "/proc/sys/kernel/random/boot_id",
            "where this boot's id is read; a new id means the node rebooted",
        ),
    },
    "jedi": {
        "wlm": Key(str, "slurm", "asked for active jobs by drc-jedi: slurm, alps or none"),
        "squeue": Key(str, "squeue", "squeue drc-jedi runs when pyslurm does not match Slurm"),
        "squeue_timeout": Key(int, 30, "seconds drc-jedi waits for squeue before giving up"),
        "use_pyslurm": Key(bool, True, "ask pyslurm when it imports and matches Slurm"),
    },
    "alps": {
        "apstat": Key(str, "apstat", "apstat listing reservations (-r -v) and pdomains (-P)"),
        "apmgr": Key(str, "apmgr", "apmgr creating and removing pdomains (pdomain -c / -r)"),
        "libjob": Key(str, "libjob.so.0", "Cray job-container library (job_getjid): pid -> job"),
        "timeout": Key(int, 30, "seconds an apstat or apmgr run may take before it fails"),
        "pdomain_prefix": Key(str, "drc", "protection domain name = prefix + credential id"),
        "max_pdomains": Key(int, 256, "at most this many pdomain-backed credentials at once"),
        "cleanup_retry_interval": Key(
            int, 60, "seconds before a failed pdomain removal is retried (doubles, max 1 hour)"
        ),
    },
    "slingshot": {
        "vni_min": Key(int, 61440, "first VNI of drc's range (outside Slurm's vnis= range)"),
        "vni_max": Key(int, 65535, "last VNI of drc's range; one VNI per credential"),
        "slurm_vni_min": Key(int, 0, "Slurm's SwitchParameters vnis= start; DRCS refuses overlap"),
        "slurm_vni_max": Key(int, 0, "Slurm's SwitchParameters vnis= end (0: not checked)"),
        "quarantine": Key(int, 60, "seconds a released VNI rests after every node cleaned up"),
        "cleanup_retry_interval": Key(
            int, 10, "seconds before DRCS re-checks a VNI waiting for cleanup (doubles, max 1 h)"
        ),
        "nics": Key(list, ["cxi0"], "CXI devices DRCC makes a service on, per access"),
        "traffic_classes": Key(
            list,
            ["best_effort"],
            "traffic classes of drc's services: dedicated, low_latency, bulk_data, best_effort",
        ),
        "limits": Key(
            list, [], 'per-service resource limits, "NAME=MAX:RESERVED" (ptes, txqs, eqs, les, ...)'
        ),
        "libcxi": Key(str, "libcxi.so.1", "libcxi DRCC loads at run time (never linked)"),
        "destroy_retry_interval": Key(
            int, 1, "seconds before DRCC retries a service destroy that got -EBUSY (doubles)"
        ),
        "reconcile_interval": Key(
            int, 30, "seconds between DRCC's passes over CXI services no reference explains"
        ),
    },
    "tokens": {
        "key_file": Key(
            str, "/etc/drc/token.key", "cluster key signing tokens (root-only file, >= 32 bytes)"
        ),
        "ttl": Key(int, 3600, "seconds a token stays valid"),
    },
    "log": {
        "level": Key(str, "info", "debug, info, warning or error"),
    },
    "metrics": {
        "drcs_listen": Key(
            str,
            "",
            "where drcs serves Prometheus metrics: PORT (on localhost) or HOST:PORT; empty: off",
        ),
        "drcc_listen": Key(
            str,
            "",
            "where drcc serves Prometheus metrics: PORT (on localhost) or HOST:PORT; empty: off",
        ),
        "state_min_interval": Key(
            (int, float),
            5,
            "seconds: drcs re-reads credential and pool gauges from the store at most this "
            "often after changes (scrapes never query the store)",
        ),
        "state_max_age": Key(
            (int, float),
            60,
            "seconds: and at least this often (other DRCS sharing the database change it too)",
        ),
    },
}


@dataclass(frozen=True)
class Config:
    path: Path | None
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    # -- derived settings ----------------------------------------------------------------

    def admin_gids(self) -> frozenset[int]:
        return frozenset(
            _gid(g, self._where("server", "admin_groups")) for g in self["server"]["admin_groups"]
        )

    def persistent_uids(self) -> frozenset[int]:
        return frozenset(
            _uid(u, self._where("server", "persistent_users"))
            for u in self["server"]["persistent_users"]
        )

    def persistent_gids(self) -> frozenset[int]:
        return frozenset(
            _gid(g, self._where("server", "persistent_groups"))
            for g in self["server"]["persistent_groups"]
        )

    def user_limit(self, capacity: int) -> int | None:
        """The default per-user limit for a provider backing ``capacity`` credentials at
        once (None: no default). A share keeps one user from emptying the pool for all."""
        value, where = self["server"]["user_limit"], self._where("server", "user_limit")
        if isinstance(value, int):
            if value < 1:
                raise ConfigError(f'{where}: must be >= 1, a share such as "10%", or "none"')
            return value
        text = value.strip().lower()
        if text == "none":
            return None
        try:
            share = float(text.removesuffix("%")) if text.endswith("%") else -1.0
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise ConfigError(
                f'{where}: must be a number, a share of the pool such as "10%", or "none"; '
                f"got {value!r}"
            )
        return max(1, int(capacity * share / 100))

    def _where(self, section: str, key: str) -> str:
        return f"{self.path or '<defaults>'}: [{section}] {key}"


def defaults() -> dict[str, dict[str, Any]]:
    return {s: {k: key.default for k, key in keys.items()} for s, keys in SCHEMA.items()}


def load(path: Path | str | None = None, *, must_exist: bool = True) -> Config:
    """Read ``path`` (default /etc/drc/drc.conf) over the defaults."""
    path = Path(path) if path else DEFAULT_PATH
    values = defaults()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"{path}: config file not found") from None
        return Config(None, values)
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for section, table in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SCHEMA)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a [{section}] table")
        for key, value in table.items():
            spec = SCHEMA[section].get(key)
            if spec is None:
                raise ConfigError(
                    f"{path}: unknown key {key!r} in [{section}] "
                    f"(known: {', '.join(SCHEMA[section])})"
                )
            if (isinstance(value, bool) and spec.type is not bool) or not isinstance(
                value, spec.type
            ):
                raise ConfigError(
                    f"{path}: [{section}] {key} must be {_type_name(spec.type)}, got {value!r}"
                )
            values[section][key] = value
    _check_deadlines(path, values)
    return Config(path, values)


def _check_deadlines(path: Path, values: dict[str, dict[str, Any]]) -> None:
    """[link] timeout must end before DRCC's clients give up (see CLIENT_TIMEOUT)."""
    timeout = values["link"]["timeout"]
    most = CLIENT_TIMEOUT - DEADLINE_MARGIN
    if not 1 <= timeout <= most:
        raise ConfigError(
            f"{path}: [link] timeout = {timeout}: must be 1 to {most} seconds. DRCC's clients "
            f"(libdrc, drc.client, the SPANK plugin) wait {CLIENT_TIMEOUT} s: a longer budget "
            "would have them give up first and blame drcc when DRCS is the one not answering"
        )


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        bool: "true or false",
    }
    return " or ".join(names.get(x, x.__name__) for x in (t if isinstance(t, tuple) else (t,)))


def _uid(user: object, where: str) -> int:
    if isinstance(user, int) and not isinstance(user, bool):
        return user
    try:
        return pwd.getpwnam(str(user)).pw_uid
    except KeyError:
        raise ConfigError(f"{where}: no such user {user!r}") from None


def _gid(group: object, where: str) -> int:
    if isinstance(group, int) and not isinstance(group, bool):
        return group
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise ConfigError(f"{where}: no such group {group!r}") from None
