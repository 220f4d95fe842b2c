"""NodeService.job_credential, what DRCC's JobCredential answers (issue 14): the SPANK plugin's
--drc=acquire takes the credential the job already holds, decided by DRCC from its own
references, else by DRCS from the job's references on other nodes (tests/node/
test_node_service.py has the miss). Transport-free: the upstream is an in-process answer table
whose DRCS knows no job's credential."""

from __future__ import annotations

import asyncio
from typing import Any

from drc.core.model import Caller, Holder
from drc.node.service import NodeService

NODE = "n1"


class Upstream:
    """DRCS as NodeService sees it: NodeAcquire hands out 7, 8, ...; NodeAccess admits all;
    a job's end frees nothing."""

    def __init__(self) -> None:
        self.next = 7

    async def call(self, method: str, args: Any = ()) -> list[Any]:
        if method == "NodeAcquire":
            credential, self.next = self.next, self.next + 1
        elif method == "NodeAccess":
            credential = args[1]
        elif method == "NodeJobsEndedHere":
            return [[]]
        elif method == "NodeJobCredential":
            return [0]
        else:
            raise AssertionError(f"unexpected upstream call {method}")
        info = {"credential": credential, "cookie1": 100 + credential, "cookie2": 0, "ptag": 0}
        return [{**info, "flags": 1, "epoch": 0}]


def in_job(job: int, pid: int = 500) -> Caller:
    return Caller(uid=1000, gid=1000, pid=pid, job=job, holder=Holder.for_job(NODE, job))


def outside_jobs(pid: int = 600) -> Caller:
    return Caller(uid=1000, gid=1000, pid=pid, holder=Holder.for_process(NODE, pid, 1))


def test_the_job_gets_the_credential_it_took_on_this_node_and_no_other_job_does() -> None:
    async def scenario() -> None:
        service = NodeService(NODE, "boot", Upstream(), Upstream())
        assert await service.job_credential(in_job(41)) == 0, "nothing taken yet: acquire"
        first = await service.acquire(in_job(41, pid=501), 0)
        await service.acquire(in_job(41, pid=502), 0)  # a second one: the lowest stays the answer
        assert await service.job_credential(in_job(41, pid=503)) == first
        assert await service.job_credential(in_job(42)) == 0
        await service.access(in_job(43), first)  # an accessed one counts like an acquired one
        assert await service.job_credential(in_job(43)) == first

    asyncio.run(scenario())


def test_no_job_no_credential_and_a_job_end_forgets_it() -> None:
    async def scenario() -> None:
        service = NodeService(NODE, "boot", Upstream(), Upstream())
        await service.acquire(outside_jobs(), 0)
        assert await service.job_credential(outside_jobs()) == 0, (
            "a process outside jobs has no job"
        )
        await service.acquire(in_job(41), 0)
        await service.job_ended(41)
        assert await service.job_credential(in_job(41)) == 0

    asyncio.run(scenario())
