"""The Python client in a forked child: the child is the caller, on a connection of its own.

DRCC answers a connection only while the process that opened it lives, so a child must not
call on its parent's connection; libdrc reconnects after fork, and so does the Python client.
"""

from __future__ import annotations

from cluster import Cluster

CHILD_OUTLIVES_PARENT = """
import os
client.get_wlm_id()  # the parent connects
done_r, done_w = os.pipe()
if os.fork() == 0:
    os.close(done_w)
    os.read(done_r, 1)  # end of file: the parent has exited
    try:
        cred = client.acquire(client.FLEX)
        print('ok', cred, client.access(cred).credential == cred, flush=True)
    except Exception as e:
        print('failed', type(e).__name__, e, flush=True)
    os._exit(0)
"""


def test_a_forked_child_calls_on_its_own_connection_after_its_parent_exits(
    cluster: Cluster, users
) -> None:
    r = cluster.outside_job("alice", CHILD_OUTLIVES_PARENT, timeout=30)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    assert words[0] == "ok" and words[2] == "True", r.stdout
