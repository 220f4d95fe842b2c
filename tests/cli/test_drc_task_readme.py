"""The README's one-machine example of ``drc`` (two allocations sharing a credential) runs as
written: the block is read from README.md and run by a shell, with the test's own state
directory and the world-readable runtime copy in place of the checkout's .venv."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from drc.embedded import cluster as embedded
from drc.embedded.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("Try it on\none machine")
    return re.search(r"```sh\n(.*?)```", text[start:], re.S).group(1)


def test_the_readme_example_runs_as_written(runtime: Runtime, users) -> None:
    block = readme_block()
    assert "drc acquire --flex" in block and "drc access" in block
    state = Path(tempfile.mkdtemp(prefix="drc-readme-", dir="/tmp"))
    state.chmod(0o755)
    script = "set -e\n" + block.replace('"$PWD/.venv/bin', f'"{runtime.bin}').replace(
        "drc-embedded ", f"drc-embedded --state-dir {state} "
    )
    # carol's refused access is the one line expected to fail: report, don't stop there
    script = script.replace('drc access "$cred"  ', 'drc access "$cred" || echo "exit $?" ')
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
    finally:
        embedded.stop(state)
        shutil.rmtree(state, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1:3] == ["65536", "65536"], lines  # both jobs' auth key: the cookie
    assert "exit 1" in lines
    assert "drc: DRC_EPERM: uid" in done.stderr
    assert "job 202 ended; freed credential(s): 1" in lines
