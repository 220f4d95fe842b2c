"""NodeService without a transport, without root: the decisions DRCC makes on its own.

The upstream is a scripted DRCS built on the exported node-verb table: a call to a verb the
server does not export, or with arguments or an answer its signature would not carry, fails
the test. So renaming a node verb on one side only breaks here, fast, not in a root-only
cluster test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from drc.core.errors import Code, DrcError
from drc.core.model import FREED, Caller, Credential, Flags, Holder, Resources, State
from drc.core.tokens import issue_token
from drc.export import check_args, check_result, exported_methods
from drc.node.service import NodeService
from drc.server.exports import ServerNodeVerbs

NODE = "n1"
KEY = b"k" * 32


#: The verbs DRCS serves to node daemons: names, signatures, argument names.
NODE_VERBS = exported_methods(ServerNodeVerbs)


class ScriptedDrcs:
    """An upstream (``call(method, args) -> out args``) answering from per-verb functions.

    Every call is checked against the exported table, both ways: the verb exists, its
    arguments fit the signature (as the link checks them) and so does the scripted answer.
    """

    def __init__(self, **verbs: Callable[..., Any]) -> None:
        self.verbs: dict[str, Callable[..., Any]] = dict(verbs)
        self.calls: list[tuple[str, list[Any]]] = []

    def calls_of(self, verb: str) -> list[list[Any]]:
        return [args for name, args in self.calls if name == verb]

    async def call(self, method: str, args: list[Any] | tuple[Any, ...] = ()) -> list[Any]:
        exported = NODE_VERBS.get(method)
        assert exported is not None, f"DRCS exports no node verb {method!r}"
        args = list(args)
        try:
            check_args(exported, _json(args))
        except DrcError as e:
            raise AssertionError(f"{method}: bad argument: {e}") from None
        self.calls.append((method, args))
        verb = self.verbs.get(method)
        assert verb is not None, f"the test did not script {method}"
        result = verb(*args)
        if asyncio.iscoroutine(result):
            result = await result
        out = (
            [] if exported.out_count == 0 else [result] if exported.out_count == 1 else list(result)
        )
        try:
            check_result(exported, _json(out))
        except TypeError as e:
            raise AssertionError(f"{method}: the scripted answer does not fit: {e}") from None
        return _json(out)


def _json(value: Any) -> Any:
    """As the DRC link carries it: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def job_caller(job: int, uid: int = 1000) -> Caller:
    return Caller(
        uid=uid, gid=uid, gids=frozenset({uid}), job=job, holder=Holder.for_job(NODE, job)
    )


def cred_dict(cred: int, epoch: int = 0, flags: int = 0) -> dict[str, Any]:
    """What NodeAccess/NodeAcquire answer (see the wire module's credential dictionary)."""
    return {
        "credential": cred,
        "uid": 1000,
        "gid": 1000,
        "wlm": 0,
        "flags": flags,
        "state": "ACTIVE",
        "provider": "pool",
        "cookie1": 100 + cred,
        "cookie2": 200 + cred,
        "ptag": 7,
        "refs": 0,
        "epoch": epoch,
        "created": 1.0,
        "grants": [],
    }


def run(test: Callable[[ScriptedDrcs], Awaitable[None]], **verbs: Any) -> ScriptedDrcs:
    drcs = ScriptedDrcs(**verbs)
    asyncio.run(test(drcs))
    return drcs


def service(drcs: ScriptedDrcs, **kwargs: Any) -> NodeService:
    return NodeService(NODE, "boot-1", drcs, drcs, **kwargs)


def test_a_miss_asks_drcs_once_then_the_node_answers_alone():
    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs)
        alice = job_caller(5)
        assert node.cached(alice, 3) is None
        first = await node.access(alice, 3)
        assert (first.credential, first.cookie1, first.cookie2, first.ptag) == (3, 103, 203, 7)
        assert await node.access(alice, 3) == first
        assert node.cached(alice, 3) == first
        # another job is another association: its first access is DRCS's decision
        await node.access(job_caller(6), 3)
        assert node.counters()["access_forwarded"] == 2
        assert node.counters()["access_local"] == 2
        assert node.counters()["associations"] == 2

    drcs = run(test, NodeAccess=lambda caller, cred: cred_dict(cred))
    calls = drcs.calls_of("NodeAccess")
    assert [(c[0]["job"], c[0]["node"], c[1]) for c in calls] == [(5, NODE, 3), (6, NODE, 3)]


def test_a_refused_miss_is_not_cached():
    def refuse(caller: dict, cred: int) -> dict:
        raise DrcError(Code.EPERM, "not yours")

    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs)
        for _ in range(2):
            with pytest.raises(DrcError) as err:
                await node.access(job_caller(5), 3)
            assert err.value.code is Code.EPERM
        assert node.cached(job_caller(5), 3) is None

    assert len(run(test, NodeAccess=refuse).calls_of("NodeAccess")) == 2


def test_concurrent_misses_of_one_association_share_one_drcs_call():
    async def test(drcs: ScriptedDrcs) -> None:
        opened = asyncio.Event()

        async def slow_access(caller: dict, cred: int) -> dict:
            await opened.wait()
            return cred_dict(cred)

        drcs.verbs["NodeAccess"] = slow_access
        node = service(drcs)
        same = [asyncio.ensure_future(node.access(job_caller(5), 3)) for _ in range(8)]
        other = asyncio.ensure_future(node.access(job_caller(6), 3))
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(drcs.calls_of("NodeAccess")) == 2  # one per association, not per call
        opened.set()
        answers = await asyncio.gather(*same, other)
        assert {a.credential for a in answers} == {3}
        assert node.counters()["access_forwarded"] == 2
        assert node.counters()["access_local"] == 7
        assert not node._in_flight

    run(test)


def test_a_failed_miss_lets_its_waiters_ask_again():
    async def test(drcs: ScriptedDrcs) -> None:
        opened = asyncio.Event()
        answers = iter([DrcError(Code.ECONNREFUSED, "DRCS down"), cred_dict(3)])

        async def flaky(caller: dict, cred: int) -> dict:
            await opened.wait()
            answer = next(answers)
            if isinstance(answer, DrcError):
                raise answer
            return answer

        drcs.verbs["NodeAccess"] = flaky
        node = service(drcs)
        first = asyncio.ensure_future(node.access(job_caller(5), 3))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(node.access(job_caller(5), 3))
        await asyncio.sleep(0)
        opened.set()
        with pytest.raises(DrcError):
            await first
        assert (await second).credential == 3

    assert len(run(test).calls_of("NodeAccess")) == 2


def token_for(cred: int, uid: int = 1000, epoch: int = 0) -> str:
    credential = Credential(
        id=cred,
        uid=uid,
        gid=uid,
        wlm=0,
        flags=Flags.FLEX_CREDENTIAL,
        state=State.ACTIVE,
        resources=Resources("pool", 100 + cred, 200 + cred, 7),
        created=1.0,
        epoch=epoch,
    )
    return issue_token(KEY, credential, now=1000.0, ttl=3600)


def test_release_reports_token_references_before_the_release():
    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs, token_key=KEY, clock=lambda: 1000.0)
        alice = job_caller(5)
        info = await node.access_with_token(alice, token_for(3))
        assert info.cookie1 == 103
        # decided on the node, once it learnt the epoch of a credential it had not seen
        assert [name for name, _ in drcs.calls] == ["NodeEpochs"]
        assert (await node.access_with_token(job_caller(6), token_for(3))).cookie1 == 103
        assert len(drcs.calls) == 1  # known now: the node alone
        drcs.calls.clear()
        assert node.counters()["pending_token_references"] == 2
        assert await node.release(alice, 3) is True
        assert node.cached(alice, 3) is None

    drcs = run(
        test,
        NodeTokenReferences=lambda node, refs: [],
        NodeRelease=lambda caller, cred: True,
        NodeEpochs=lambda node, creds: [(c, 0) for c in creds],
    )
    assert [name for name, _ in drcs.calls] == ["NodeTokenReferences", "NodeRelease"]
    node, refs = drcs.calls[0][1]
    assert node == NODE
    assert [(r["credential"], r["epoch"], r["caller"]["job"]) for r in refs] == [
        (3, 0, 5),
        (3, 0, 6),
    ]


def test_release_is_not_sent_while_token_references_cannot_be_reported():
    def down(*args: Any) -> Any:
        raise DrcError(Code.ECONNREFUSED, "DRCS down")

    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs, token_key=KEY, clock=lambda: 1000.0)
        await node.access_with_token(job_caller(5), token_for(3))
        with pytest.raises(DrcError):
            await node.release(job_caller(5), 3)
        assert node.counters()["pending_token_references"] == 1  # kept for the next flush

    drcs = run(
        test,
        NodeTokenReferences=down,
        NodeRelease=lambda caller, cred: True,
        NodeEpochs=lambda node, creds: [(c, 0) for c in creds],
    )
    assert drcs.calls_of("NodeRelease") == []


def test_a_refused_token_reference_drops_the_association():
    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs, token_key=KEY, clock=lambda: 1000.0)
        await node.access_with_token(job_caller(5), token_for(3))
        await node._flush()
        assert node.cached(job_caller(5), 3) is None
        assert node.counters()["token_references_reported"] == 0

    run(
        test,
        NodeTokenReferences=lambda node, refs: [3],
        NodeEpochs=lambda node, creds: [(c, 0) for c in creds],
    )


@pytest.mark.parametrize(("epoch", "why"), [(1, "revoked"), (FREED, "freed")])
def test_a_token_for_a_credential_the_node_never_saw_is_checked_with_drcs(epoch, why):
    """A DRCC started after the revoke (or free) has no epoch for the credential: it asks
    DRCS instead of taking the token's epoch as current."""

    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs, token_key=KEY, clock=lambda: 1000.0)
        with pytest.raises(DrcError, match="revoked or freed") as err:
            await node.access_with_token(job_caller(7), token_for(4, epoch=0))
        assert err.value.code is Code.BAD_TOKEN, why
        assert node.cached(job_caller(7), 4) is None
        assert node.counters()["pending_token_references"] == 0

    drcs = run(test, NodeEpochs=lambda node, creds: [(c, epoch) for c in creds])
    assert drcs.calls_of("NodeEpochs") == [[NODE, [4]]]


def test_while_drcs_is_down_tokens_work_only_for_credentials_the_node_knew():
    def down(*args: Any) -> Any:
        raise DrcError(Code.ECONNREFUSED, "DRCS down")

    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs, token_key=KEY, clock=lambda: 1000.0)
        await node.access(job_caller(5), 3)  # known: DRCS said its epoch with the answer
        drcs.verbs["NodeEpochs"] = down
        assert (await node.access_with_token(job_caller(6), token_for(3))).cookie1 == 103
        with pytest.raises(DrcError, match="DRCS is unreachable") as err:
            await node.access_with_token(job_caller(6), token_for(4))
        assert err.value.code is Code.ECONNREFUSED
        assert node.cached(job_caller(6), 4) is None
        assert node.counters()["token_epoch_unknown"] == 1

    run(test, NodeAccess=lambda caller, cred: cred_dict(cred))


class Feed:
    """NodeWatch as a queue of answers the test puts; an empty queue is a quiet long poll."""

    def __init__(self, *answers: tuple[str, bool, int, list[tuple[int, int]]]) -> None:
        self.queue: asyncio.Queue[tuple | DrcError] = asyncio.Queue()
        for answer in answers:
            self.queue.put_nowait(answer)
        self.asked: list[tuple[str, int]] = []
        self.waiting = asyncio.Event()

    async def __call__(self, generation: str, since: int, timeout: int) -> tuple:
        self.asked.append((generation, since))
        if self.queue.empty():
            self.waiting.set()  # everything put so far was handled
        answer = await self.queue.get()  # cancelled by stop()
        self.waiting.clear()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def answer(
        self, *answers: tuple[str, bool, int, list[tuple[int, int]]] | DrcError
    ) -> None:
        """Answer the waiting poll(s), and return once DRCC handled them and asks again."""
        self.waiting.clear()
        for answer in answers:
            self.queue.put_nowait(answer)
        await asyncio.wait_for(self.waiting.wait(), 5)


async def started(drcs: ScriptedDrcs, feed: Feed, **kwargs: Any) -> NodeService:
    drcs.verbs["NodeWatch"] = feed
    node = service(drcs, **kwargs)
    await node.start()
    return node


def test_start_says_hello_and_rechecks_the_holders_of_the_same_boot():
    async def test(drcs: ScriptedDrcs) -> None:
        feed = Feed()
        node = await started(drcs, feed)
        await feed.answer(("g1", True, 0, []))
        assert node.synced.is_set()
        await node.stop()

    drcs = run(
        test,
        NodeHello=lambda node, boot: False,
        NodeProcesses=lambda node: [],
        NodeEpochs=lambda node, creds: [],
    )
    assert drcs.calls[0] == ("NodeHello", [NODE, "boot-1"])
    assert drcs.calls[1] == ("NodeProcesses", [NODE])


def test_start_with_node_connect_feed_polls_first_where_the_feed_stood():
    """One request on the feed link says hello, records the DRCS followed, tells the feed's
    position and (over the link) parks the first long poll there: the node's first poll asks
    exactly that (the link then waits for the parked one's answer, sending nothing)."""

    async def test(drcs: ScriptedDrcs) -> None:
        feed = Feed()
        drcs.verbs["NodeWatch"] = feed
        node = service(drcs)
        assert await node.start(lambda: "10.0.0.1:7000")  # DRCS recorded the follow
        await feed.answer(("g7", True, 43, [(3, 2)]))
        assert feed.asked == [("g7", 42), ("g7", 43)]
        assert drcs.calls_of("NodeEpochs") == []  # the same generation: nothing to resync
        await node.stop()

    drcs = run(
        test,
        NodeConnectFeed=lambda node, boot, server, timeout: (False, "g7", 42),
        NodeProcesses=lambda node: [],
    )
    assert drcs.calls[0] == ("NodeConnectFeed", [NODE, "boot-1", "10.0.0.1:7000", 4])
    assert drcs.calls_of("NodeWatch")[0] == ["g7", 42, 4]  # the question NodeConnectFeed parked
    assert drcs.calls_of("NodeHello") == drcs.calls_of("NodeConnect") == []


@pytest.mark.parametrize(
    "refusal",
    [
        DrcError(Code.EPROTO, "no method 'NodeConnectFeed' is served here"),
        DrcError(Code.ECONNREFUSED, "connection refused"),  # the feed link does not move on
    ],
    ids=["older-drcs", "drcs-down"],
)
def test_start_without_node_connect_feed_connects_over_the_calls_link(refusal: DrcError):
    """A DRCS older than NodeConnectFeed, or one the feed link found down (it does not retry
    on the next DRCS), gets NodeConnect over the calls link, which does."""

    def refuse(node: str, boot: str, server: str, timeout: int) -> None:
        raise refusal

    async def test(calls: ScriptedDrcs) -> None:
        feed = Feed()
        feed_link = ScriptedDrcs(NodeConnectFeed=refuse, NodeWatch=feed)
        node = NodeService(NODE, "boot-1", calls, feed_link)
        assert await node.start(lambda: "10.0.0.1:7000")
        await feed.answer(("g7", True, 43, []))
        assert feed.asked == [("g7", 42), ("g7", 43)]
        assert [name for name, _ in feed_link.calls[:1]] == ["NodeConnectFeed"]
        await node.stop()

    calls = run(
        test,
        NodeConnect=lambda node, boot, server: (False, "g7", 42),
        NodeProcesses=lambda node: [],
    )
    assert calls.calls[0] == ("NodeConnect", [NODE, "boot-1", "10.0.0.1:7000"])


def test_start_on_a_drcs_without_node_connect_says_hello_and_learns_the_feed_from_it():
    def older_drcs(node: str, boot: str, server: str) -> None:
        raise DrcError(Code.EPROTO, "no method 'NodeConnect' is served here")

    def oldest_drcs(node: str, boot: str, server: str, timeout: int) -> None:
        raise DrcError(Code.EPROTO, "no method 'NodeConnectFeed' is served here")

    async def test(drcs: ScriptedDrcs) -> None:
        feed = Feed()
        drcs.verbs["NodeWatch"] = feed
        node = service(drcs)
        assert not await node.start(lambda: "10.0.0.1:7000")  # DRCC says NodeFollow itself
        await feed.answer(("g1", True, 0, []))
        assert feed.asked == [("", 0), ("g1", 0)]
        await node.stop()

    drcs = run(
        test,
        NodeConnectFeed=oldest_drcs,
        NodeConnect=older_drcs,
        NodeHello=lambda node, boot: False,
        NodeProcesses=lambda node: [],
    )
    assert drcs.calls_of("NodeHello") == [[NODE, "boot-1"]]


def test_a_freed_credential_on_the_feed_ends_its_associations():
    async def test(drcs: ScriptedDrcs) -> None:
        feed = Feed()
        drcs.verbs["NodeAccess"] = lambda caller, cred: cred_dict(cred)
        node = service(drcs)
        await node.access(job_caller(5), 3)
        await node.access(job_caller(5), 4)
        drcs.verbs["NodeWatch"] = feed
        await node.start()
        await feed.answer(("g1", True, 0, []))
        assert drcs.calls_of("NodeEpochs") == [[NODE, [3, 4]]]  # a first answer: resync
        assert node.cached(job_caller(5), 3) is not None
        await feed.answer(("g1", True, 1, [(3, FREED)]))
        assert node.cached(job_caller(5), 3) is None
        assert node.cached(job_caller(5), 4) is not None
        assert feed.asked == [("", 0), ("g1", 0), ("g1", 1)]
        await node.stop()

    run(
        test,
        NodeHello=lambda node, boot: False,
        NodeProcesses=lambda node: [],
        NodeEpochs=lambda node, creds: [(c, 0) for c in creds],
    )


def test_a_new_generation_resyncs_the_epochs_of_every_known_credential():
    """DRCS restarted (or this node now follows another DRCS): the feed cannot say what
    changed meanwhile, so DRCC asks the epoch of every credential it knows."""

    async def test(drcs: ScriptedDrcs) -> None:
        feed = Feed()
        drcs.verbs["NodeAccess"] = lambda caller, cred: cred_dict(cred)
        node = service(drcs, token_key=KEY, clock=lambda: 1000.0)
        drcs.verbs["NodeWatch"] = feed
        await node.start()
        await feed.answer(("g1", True, 0, []))
        assert node.synced.is_set()
        await node.access(job_caller(5), 3)
        await node.access(job_caller(5), 4)
        drcs.verbs["NodeEpochs"] = lambda n, creds: [(3, FREED), (4, 2)]
        await feed.answer(("g2", False, 9, []))
        assert feed.asked[-1] == ("g2", 9)
        assert node.cached(job_caller(5), 3) is None  # freed while the feed was away
        assert node.cached(job_caller(5), 4) is not None  # revoked: only new tokens refused
        with pytest.raises(DrcError) as err:
            await node.access_with_token(job_caller(7), token_for(4, epoch=1))
        assert err.value.code is Code.BAD_TOKEN
        await node.stop()

    drcs = run(
        test,
        NodeHello=lambda node, boot: False,
        NodeProcesses=lambda node: [],
        NodeEpochs=lambda node, creds: [(c, 0) for c in creds],
    )
    # the first answer (nothing known yet) asked nothing; the new generation asked all
    assert drcs.calls_of("NodeEpochs") == [[NODE, [3, 4]]]


def test_job_credential_hit_is_the_lowest_cached_id_and_asks_nobody():
    """Deterministic: the lowest of the job's credentials here, not the first cached."""

    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs)
        await node.access(job_caller(5), 9)
        await node.access(job_caller(5), 4)
        await node.access(job_caller(6), 2)  # another job's: not this one's answer
        assert await node.job_credential(job_caller(5)) == 4
        assert node.counters()["job_credential_local"] == 1

    drcs = run(test, NodeAccess=lambda caller, cred: cred_dict(cred))
    assert drcs.calls_of("NodeJobCredential") == []


def test_job_credential_miss_asks_drcs_for_the_job_with_the_callers_identity():
    """A node the batch step never ran on: DRCS answers from the job's references anywhere."""

    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs)
        assert await node.job_credential(job_caller(5)) == 11
        assert await node.job_credential(job_caller(7)) == 0  # a job holding none

    drcs = run(test, NodeJobCredential=lambda caller: 11 if caller["job"] == 5 else 0)
    asked = drcs.calls_of("NodeJobCredential")
    assert [(c["job"], c["uid"], c["node"]) for (c,) in asked] == [(5, 1000, NODE), (7, 1000, NODE)]


def test_job_credential_outside_a_job_is_0_without_asking_drcs():
    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs)
        alone = Caller(uid=1000, gid=1000, pid=77, holder=Holder.for_process(NODE, 77, 1))
        await node.access(alone, 3)  # a process's own reference is no job's credential
        assert await node.job_credential(alone) == 0

    drcs = run(test, NodeAccess=lambda caller, cred: cred_dict(cred))
    assert drcs.calls_of("NodeJobCredential") == []


def test_job_credential_miss_with_drcs_unreachable_is_the_drc_error():
    def down(caller: dict) -> int:
        raise DrcError(Code.ECONNREFUSED, "DRCS down")

    async def test(drcs: ScriptedDrcs) -> None:
        with pytest.raises(DrcError) as err:
            await service(drcs).job_credential(job_caller(5))
        assert err.value.code is Code.ECONNREFUSED

    run(test, NodeJobCredential=down)


def test_job_end_drops_the_job_here_and_tells_drcs_for_this_node():
    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs)
        await node.access(job_caller(5), 3)
        await node.access(job_caller(6), 3)
        assert await node.job_ended(5) == [3]
        assert node.cached(job_caller(5), 3) is None
        assert node.cached(job_caller(6), 3) is not None
        node.job_end_everywhere = True  # ALPS: one epilog per reservation
        await node.job_ended(6)

    drcs = run(
        test,
        NodeAccess=lambda caller, cred: cred_dict(cred),
        NodeJobsEndedHere=lambda node, jobs: [3],
        NodeJobsEnded=lambda node, jobs: [],
    )
    assert drcs.calls_of("NodeJobsEndedHere") == [[NODE, [5]]]
    assert drcs.calls_of("NodeJobsEnded") == [[NODE, [6]]]


def test_acquire_grant_revoke_and_token_go_to_drcs_with_the_callers_identity():
    async def test(drcs: ScriptedDrcs) -> None:
        node = service(drcs)
        alice = job_caller(5)
        cred = await node.acquire(alice, 0)
        assert node.cached(alice, cred) is not None  # the owner's reference is an association
        await node.grant(alice, cred, 1001, int(Flags.TARGET_UID))
        await node.revoke(alice, cred, 1001, int(Flags.TARGET_UID))
        assert await node.token(alice, cred) == "tok"

    drcs = run(
        test,
        NodeAcquire=lambda caller, flags: cred_dict(9),
        NodeGrant=lambda caller, cred, target, flags: None,
        NodeRevoke=lambda caller, cred, target, flags: None,
        NodeToken=lambda caller, cred: "tok",
    )
    assert [name for name, _ in drcs.calls] == [
        "NodeAcquire",
        "NodeGrant",
        "NodeRevoke",
        "NodeToken",
    ]
    for _, args in drcs.calls:
        assert args[0] == {
            "uid": 1000,
            "gid": 1000,
            "gids": [1000],
            "pid": 0,
            "job": 5,
            "node": NODE,
            "start": 0,
        }


def test_the_scripted_drcs_refuses_what_the_server_does_not_export():
    """The guard of every test above: a renamed verb or a wrong argument fails fast."""

    async def test(drcs: ScriptedDrcs) -> None:
        with pytest.raises(AssertionError, match="exports no"):
            await drcs.call("NodeAccessRenamed", [{}, 1])
        with pytest.raises(AssertionError, match="argument"):
            await drcs.call("NodeAccess", [{"uid": 1}, "3"])
        with pytest.raises(AssertionError, match="answer"):
            await drcs.call("NodeHello", ["n1", "b"])

    run(test, NodeHello=lambda node, boot: "yes")


def test_after_the_feed_broke_drcc_asks_again_and_resyncs_a_new_server():
    """The link to DRCS dropped (DRCS restarted, or the node failed over): DRCC retries the
    long poll, and the new generation makes it re-learn every epoch it relies on."""

    async def test(drcs: ScriptedDrcs) -> None:
        feed = Feed()
        drcs.verbs["NodeAccess"] = lambda caller, cred: cred_dict(cred)
        node = service(drcs)
        drcs.verbs["NodeWatch"] = feed
        await node.start()
        await feed.answer(("g1", True, 4, []))
        await node.access(job_caller(5), 3)
        drcs.verbs["NodeEpochs"] = lambda n, creds: [(3, FREED)]
        await feed.answer(DrcError(Code.ECONNREFUSED, "connection closed"), ("g9", False, 1, []))
        assert feed.asked[-3:] == [("g1", 4), ("g1", 4), ("g9", 1)]  # the same poll, retried
        assert drcs.calls_of("NodeEpochs") == [[NODE, [3]]]
        assert node.cached(job_caller(5), 3) is None
        await node.stop()

    run(
        test,
        NodeHello=lambda node, boot: False,
        NodeProcesses=lambda node: [],
        NodeEpochs=lambda node, creds: [],
    )


def test_a_node_that_moved_says_node_moved_and_its_next_poll_parks_there(caplog):
    """A fail-over costs two requests on the DRCS moved to: one NodeMoved (the follow
    recorded, the epochs of what the node relies on, where that DRCS's feed stands), then
    the poll from that position. No poll answered "another generation", no NodeEpochs, no
    NodeFollow, and no pause: the failed poll's DRCS is gone, the node asks the new one now."""
    following = ["10.0.0.1:7000"]

    async def test(drcs: ScriptedDrcs) -> None:
        feed = Feed()
        drcs.verbs["NodeWatch"] = feed
        node = service(drcs)
        assert await node.start(lambda: following[0])
        await feed.answer(("g7", True, 42, []))
        await node.access(job_caller(5), 3)
        await node.access(job_caller(5), 4)
        following[0] = "10.0.0.2:7000"  # the poll's DRCS died: the node moved
        await feed.answer(DrcError(Code.ECONNREFUSED, "connection closed"))
        assert drcs.calls_of("NodeMoved") == [[NODE, "10.0.0.2:7000", [3, 4]]]
        assert feed.asked == [("g7", 42), ("g7", 42), ("h1", 9)]  # parks where h1 stood
        assert node.cached(job_caller(5), 3) is None  # freed while the node moved
        assert node.cached(job_caller(5), 4) is not None
        await node.stop()

    caplog.set_level("WARNING", logger="drc.node")
    drcs = run(
        test,
        NodeConnectFeed=lambda node, boot, server, timeout: (False, "g7", 42),
        NodeProcesses=lambda node: [],
        NodeAccess=lambda caller, cred: cred_dict(cred),
        NodeMoved=lambda node, server, creds: ("h1", 9, [(3, FREED), (4, 1)]),
    )
    assert [name for name, _ in drcs.calls[-2:]] == ["NodeMoved", "NodeWatch"]
    for verb in ("NodeEpochs", "NodeFollow", "NodeHello"):
        assert drcs.calls_of(verb) == []
    assert "interrupted" not in caplog.text  # no pause of a second before NodeMoved


def test_a_node_that_moved_to_a_drcs_without_node_moved_follows_and_resyncs_as_before():
    """A DRCS older than NodeMoved answers EPROTO: the node says NodeFollow, learns that
    DRCS's feed from a first poll answered at once, and resyncs with NodeEpochs; it does not
    ask that DRCS for NodeMoved again."""
    following = ["10.0.0.1:7000"]

    def moved(node: str, server: str, creds: list[int]) -> tuple:
        if server == "10.0.0.2:7000":  # the older one
            raise DrcError(Code.EPROTO, "no method 'NodeMoved' is served here")
        return ("g8", 1, [])

    async def test(drcs: ScriptedDrcs) -> None:
        feed = Feed()
        drcs.verbs["NodeWatch"] = feed
        node = service(drcs)
        assert await node.start(lambda: following[0])
        await feed.answer(("g7", True, 42, []))
        await node.access(job_caller(5), 3)
        following[0] = "10.0.0.2:7000"
        await feed.answer(DrcError(Code.ECONNREFUSED, "connection closed"), ("old", True, 5, []))
        assert drcs.calls_of("NodeFollow") == [[NODE, "10.0.0.2:7000"]]
        assert feed.asked[-2:] == [("", 0), ("old", 5)]
        assert drcs.calls_of("NodeEpochs") == [[NODE, [3]]]
        assert node.cached(job_caller(5), 3) is None
        following[0] = "10.0.0.1:7000"  # back, then over to the old one again
        await feed.answer(DrcError(Code.ECONNREFUSED, "connection closed"), ("g8", True, 1, []))
        assert feed.asked[-2:] == [("g8", 1), ("g8", 1)]  # NodeMoved there, parked from it
        following[0] = "10.0.0.2:7000"
        await feed.answer(DrcError(Code.ECONNREFUSED, "connection closed"), ("old", True, 6, []))
        await node.stop()

    drcs = run(
        test,
        NodeConnectFeed=lambda node, boot, server, timeout: (False, "g7", 42),
        NodeProcesses=lambda node: [],
        NodeAccess=lambda caller, cred: cred_dict(cred),
        NodeMoved=moved,
        NodeFollow=lambda node, server: None,
        NodeEpochs=lambda node, creds: [(c, FREED) for c in creds],
    )
    assert [args[1] for args in drcs.calls_of("NodeMoved")] == ["10.0.0.2:7000", "10.0.0.1:7000"]
    assert [args[1] for args in drcs.calls_of("NodeFollow")] == ["10.0.0.2:7000"] * 2
