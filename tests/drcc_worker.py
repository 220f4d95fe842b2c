"""One application process driving DRCC through drc.client with a random mix of verbs.

Run by the stress tests as ``python3 drcc_worker.py SEED OPERATIONS SECONDS``. Prints one line
per acknowledged change, flushed, so the test knows exactly what DRCC acknowledged even when
the process is stopped or DRCC is killed mid-call::

    A id    acquire acknowledged (this process holds a reference)
    r id    release about to be sent (in doubt until R)
    R id    release acknowledged
    E name message    an error other than "DRCC is down"
    DONE n  n operations done; then the process waits for stdin to close and exits

DRCC being down (ECONNREFUSED) is retried after a short pause: the operation counts only once
it is answered. Bounded by OPERATIONS and SECONDS.
"""

from __future__ import annotations

import random
import sys
import time

from drc import client

MAX_HELD = 8  # the embedded pool holds 1024 cookies; 64 processes x 8 fit


def release(cred: int, deadline: float) -> None:
    """Release until DRCC answers: a release refused as "DRCC is down" was never sent, and
    dropping it would leave the reference (and its cookie) with this process until it exits.
    Gone already means an earlier attempt went through before DRCC was killed."""
    while True:
        try:
            client.release(cred)
            return
        except client.DrcError as e:
            if e.name == "DRC_ECONNREFUSED" and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            if e.name == "DRC_CRED_NOT_FOUND":
                return
            raise


def main() -> int:
    seed, operations, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rng = random.Random(seed)
    client.set_timeout(10)
    held: list[int] = []
    done = 0
    deadline = time.monotonic() + seconds
    while done < operations and time.monotonic() < deadline:
        action = rng.random()
        try:
            if not held or (action < 0.15 and len(held) < MAX_HELD):
                cred = client.acquire(client.FLEX)
                held.append(cred)
                print("A", cred, flush=True)
            elif action < 0.75:
                info = client.access(rng.choice(held))  # answered from DRCC's cache
                assert info.cookie1, info
            elif action < 0.85:
                client.grant(rng.choice(held), uid=rng.randrange(5000, 5100))
            else:
                cred = held.pop(rng.randrange(len(held)))
                print("r", cred, flush=True)
                release(cred, deadline)
                print("R", cred, flush=True)
            done += 1
        except client.DrcError as e:
            if e.name == "DRC_ECONNREFUSED":
                time.sleep(0.02)  # DRCC is restarting
                continue
            if e.name == "DRC_ALREADY_GRANTED":
                done += 1
                continue
            print("E", e.name, str(e).replace("\n", " "), flush=True)
            done += 1
    print("DONE", done, flush=True)
    sys.stdin.read()  # hold the references until the test lets go
    return 0


if __name__ == "__main__":
    sys.exit(main())
