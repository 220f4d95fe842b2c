"""``make demo``: two users in two jobs share a credential, on the embedded default.

alice (job 101) acquires a FLEX credential and grants it to bob; bob (job 202) accesses it;
``drccli list`` shows both references; DRCC's counters show the node cache at work; a token
lets carol's job in without a round trip to DRCS; releases return the cookie to the pool. Two
nodes (``drc-embedded start --nodes 2``) show that a non-FLEX credential serves one job per
node while a FLEX one is shared.
Needs root: it creates the demo users and runs their jobs as them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from drc.embedded import cluster as embedded
from drc.embedded.main import command_line, python_task
from drc.embedded.runtime import Runtime, install_runtime

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"\n{BOLD}{text}{RESET}", flush=True)


def show(argv: list[str], env: dict[str, str], *, label: str | None = None) -> str:
    print(f"{DIM}$ {label or ' '.join(argv)}{RESET}", flush=True)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd="/")
    text = (out.stdout + out.stderr).rstrip()
    if text:
        print(textwrap.indent(text, "  "), flush=True)
    if out.returncode not in (0, 1):
        raise SystemExit(f"demo step failed (exit {out.returncode})")
    return out.stdout


def ensure_user(name: str) -> None:
    if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--user-group", name], check=True)


def main() -> int:
    if os.geteuid() != 0:
        print(
            "make demo needs root: it creates the demo users alice, bob and carol and runs "
            "their jobs as them.",
            file=sys.stderr,
        )
        return 2
    for user in ("alice", "bob", "carol"):
        ensure_user(user)
    # Fresh directories with unguessable names: root runs what is in them, so no other user
    # may have made them first (drc.embedded.private refuses such a directory anyway).
    runtime_dir = Path(tempfile.mkdtemp(prefix="drc-demo-runtime-", dir="/tmp"))
    state = Path(tempfile.mkdtemp(prefix="drc-demo-", dir="/tmp"))
    try:
        return _demo(install_runtime(runtime_dir), state)
    finally:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(runtime_dir, ignore_errors=True)


def _demo(rt: Runtime, state: Path) -> int:
    say(
        "1. Start the embedded default on two nodes: private D-Bus buses, munged, DRCS "
        "(SQLite, cookie pool) and a DRCC per node"
    )
    emb = embedded.start(state, nodes=2)
    env = {**os.environ, **rt.env(), **emb.exports()}
    drccli = str(rt.bin / "drccli")
    cli = rt.bin / "drc-embedded"  # the world-readable copy: root runs it for the demo users
    print(
        f"  bus {emb.bus.address}\n  DRCS pid {emb.drcs_pid}, DRCC pid {emb.drcc_pid}, "
        f"state in {state}"
    )

    def job(job_id: int, user: str, code: str, node: int = 1) -> str:
        script = textwrap.dedent(code).strip()
        argv = python_task(cli, state, job_id, user, script, node)
        shown = script if "\n  " in script else script.replace("\n", "; ")
        return show(argv, env, label=f"[{user}, job {job_id}, node{node}] {shown}")

    try:
        say("2. alice, in job 101, acquires a FLEX credential and grants it to bob")
        out = job(
            101,
            "alice",
            """
            cred = client.acquire(client.FLEX)
            client.grant(cred, uid=__import__('pwd').getpwnam('bob').pw_uid)
            print('credential', cred, 'cookie1', client.access(cred).cookie1)
        """,
        )
        cred = int(out.split()[1])

        say("3. bob, in job 202, accesses it: same cookie, no retry loop needed")
        job(
            202,
            "bob",
            f"print('cookie1', client.access({cred}).cookie1, 'my job', client.get_wlm_id())",
        )
        say("   carol was not granted: refused")
        job(
            303,
            "carol",
            f"""
            try:
                client.access({cred})
            except client.DrcError as e:
                print('refused:', e)
        """,
        )

        say("4. Two nodes: a non-FLEX credential serves one job per node, a FLEX one is shared")
        bob_uid = __import__("pwd").getpwnam("bob").pw_uid
        out = job(101, "alice", f"c = client.acquire(0); client.grant(c, uid={bob_uid}); print(c)")
        plain = int(out.split()[0])
        job(
            202,
            "bob",
            f"""
            try:
                client.access({plain})
            except client.DrcError as e:
                print('node1 refused:', e)
        """,
        )
        job(202, "bob", f"print('cookie1', client.access({plain}).cookie1)", node=2)
        job(202, "bob", f"client.release({plain})", node=2)
        job(101, "alice", f"print('freed:', client.release({plain}))")

        say("5. drccli list: the credential, its cookie and two references (jobs 101 and 202)")
        show([drccli, "list"], env, label="drccli list")

        say("6. The node cache: bob's second process in job 202 is answered by DRCC alone")
        job(202, "bob", f"print('cookie1', client.access({cred}).cookie1)")
        show(
            command_line(cli, state, "counters"),
            env,
            label="drc-embedded counters",
        )

        say("7. Tokens: alice hands a signed token to carol's job, checked by DRCC alone")
        out = job(
            101,
            "alice",
            f"client.grant({cred}, wlm=404); print(client.get_credential_token({cred}))",
        )
        token = out.strip()
        job(
            404, "carol", f"print('cookie1 via token', client.access_with_token({token!r}).cookie1)"
        )

        say("8. Releases: bob and carol drop their references, alice's release frees the cookie")
        job(202, "bob", f"client.release({cred})")
        show(
            command_line(cli, state, "end-job", "404"),
            env,
            label="drc-embedded end-job 404   # what the job epilog does",
        )
        job(101, "alice", f"print('freed:', client.release({cred}))")
        show([drccli, "list"], env, label="drccli list")
        show([drccli, "status"], env, label="drccli status")
    finally:
        say("9. Stop everything")
        embedded.stop(state)
        print('  stopped; try it yourself with: eval "$(.venv/bin/drc-embedded start)"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
