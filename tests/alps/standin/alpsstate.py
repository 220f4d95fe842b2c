"""State of the ALPS stand-in (NOT ALPS; see README.md): one JSON file, locked while used."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FIRST_COOKIE = 0xA92C0000  # as in a published `apstat -P` example on an Aries system


def state_dir() -> Path:
    value = os.environ.get("ALPS_STANDIN_DIR")
    if not value:
        raise SystemExit("ALPS stand-in: ALPS_STANDIN_DIR is not set")
    return Path(value)


def empty() -> dict[str, Any]:
    return {
        "layout": "aries",  # or "gemini": the apstat -P columns
        "reservations": {},  # resid -> {apid, pagg, batch, user, active}
        "pdomains": {},  # name -> {type, uid, cookie, cookie2, ptag}
        "next_cookie": FIRST_COOKIE,
        "next_ptag": 200,
        "fail": {"create": 0, "remove": 0, "apstat": 0},  # injected failures still to come
        "busy": [],  # pdomains an application still uses: removal refused
    }


@contextmanager
def locked(directory: Path | None = None) -> Iterator[dict[str, Any]]:
    """The state, exclusively; written back when the block ends without an error."""
    directory = directory or state_dir()
    path = directory / "state.json"
    with open(directory / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text()) if path.exists() else empty()
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)


class StandIn:
    """What a test does to the stand-in: the batch system's and the admin's side of ALPS."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.dir):
            pass
        (self.dir / "containers").touch()

    def reserve(self, resid: int, pagg: int, user: str = "root", apid: int = 0) -> None:
        """A reservation CONFIRMed with job container ``pagg`` (0: not yet confirmed)."""
        with locked(self.dir) as s:
            s["reservations"][str(resid)] = {
                "apid": apid or resid + 1000,
                "pagg": pagg,
                "batch": f"batch:{resid + 100000}",
                "user": user,
                "active": True,
            }

    def end(self, resid: int) -> None:
        """The reservation is released (the batch job ended)."""
        with locked(self.dir) as s:
            s["reservations"].pop(str(resid), None)

    def place(self, pid: int, container: int) -> None:
        """Put ``pid`` (and so its future descendants) in job container ``container``."""
        with open(self.dir / "containers", "a") as f:
            f.write(f"{pid} {container:#x}\n")

    def fail_next(self, what: str, times: int = 1) -> None:
        """The next ``times`` runs of ``what`` (create, remove, apstat) fail."""
        with locked(self.dir) as s:
            s["fail"][what] = times

    def set_busy(self, name: str, busy: bool = True) -> None:
        with locked(self.dir) as s:
            s["busy"] = sorted(set(s["busy"]) - {name} | ({name} if busy else set()))

    def set_layout(self, layout: str) -> None:
        with locked(self.dir) as s:
            s["layout"] = layout

    def pdomains(self) -> dict[str, dict[str, Any]]:
        with locked(self.dir) as s:
            return dict(s["pdomains"])
