"""A cache miss on the fast lane (NodeService.access_soon, drc.dispatch.Prompt): sent to DRCS
in the bus message's loop turn, answered to the caller in the turn DRCS's answer is read, with
the coroutine path's outcomes (cached, refused, asked once per association)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_node_service import ScriptedDrcs, cred_dict, job_caller, service

from drc.core.errors import Code, DrcError
from drc.dispatch import Dispatcher, Prompt
from drc.export import PeerCredentials, method


class SendingDrcs(ScriptedDrcs):
    """The scripted DRCS with the link's fast lane: ``send`` answers through ``answered``
    from a task of its own, as a frame read later would (False: "no link open")."""

    def __init__(self, **verbs: Any) -> None:
        super().__init__(**verbs)
        self.open = True
        self.sent: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, method: str, args: list[Any], answered: Any) -> bool:
        if not self.open:
            return False
        self.sent.append(method)

        async def answer() -> None:
            try:
                ok = await self.call(method, args)
            except DrcError as err:
                answered(None, err)
            else:
                answered(ok, None)

        task = asyncio.ensure_future(answer())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True


def same(info: Any) -> Any:
    return info


def run(test: Any, **verbs: Any) -> SendingDrcs:
    drcs = SendingDrcs(**verbs)
    asyncio.run(test(drcs))
    return drcs


def test_a_miss_sent_soon_is_answered_shaped_and_cached() -> None:
    async def test(drcs: SendingDrcs) -> None:
        node = service(drcs)
        alice = job_caller(5)
        soon = node.access_soon(alice, 3, lambda info: ("shaped", info.cookie1))
        assert isinstance(soon, Prompt) and not soon.done()
        assert await soon == ("shaped", 103)
        assert node.cached(alice, 3) is not None
        assert node.counters()["access_forwarded"] == 1
        assert not node._in_flight

    drcs = run(test, NodeAccess=lambda caller, cred: cred_dict(cred))
    assert drcs.sent == ["NodeAccess"]


def test_a_refused_miss_sent_soon_fails_its_caller_and_is_not_cached() -> None:
    def refuse(caller: dict, cred: int) -> dict:
        raise DrcError(Code.EPERM, "not yours")

    async def test(drcs: SendingDrcs) -> None:
        node = service(drcs)
        soon = node.access_soon(job_caller(5), 3, same)
        assert soon is not None
        with pytest.raises(DrcError) as err:
            await soon
        assert err.value.code is Code.EPERM
        assert node.cached(job_caller(5), 3) is None and not node._in_flight

    run(test, NodeAccess=refuse)


def test_a_second_miss_of_the_same_association_waits_for_the_first() -> None:
    """The coroutine path's rule holds across both: one DRCS call per association."""

    async def test(drcs: SendingDrcs) -> None:
        node = service(drcs)
        first = node.access_soon(job_caller(5), 3, same)
        assert first is not None
        assert node.access_soon(job_caller(5), 3, same) is None  # asked already
        second = asyncio.ensure_future(node.access(job_caller(5), 3))
        await first
        assert (await second).credential == 3
        assert node.counters()["access_forwarded"] == 1
        assert node.counters()["access_local"] == 1

    drcs = run(test, NodeAccess=lambda caller, cred: cred_dict(cred))
    assert len(drcs.calls_of("NodeAccess")) == 1


def test_without_an_open_link_the_miss_takes_the_coroutine_path() -> None:
    async def test(drcs: SendingDrcs) -> None:
        node = service(drcs)
        drcs.open = False
        assert node.access_soon(job_caller(5), 3, same) is None
        assert not node._in_flight  # nothing left claiming the association
        assert (await node.access(job_caller(5), 3)).credential == 3

    drcs = run(test, NodeAccess=lambda caller, cred: cred_dict(cred))
    assert drcs.sent == [] and len(drcs.calls_of("NodeAccess")) == 1


class Verbs:
    """One verb answering a Prompt the test sets (or set at once: ``at_once``)."""

    def __init__(self, at_once: bool = False) -> None:
        self.prompt: Prompt | None = None
        self.at_once = at_once

    @method("u", "u")
    def wait(self, peer: PeerCredentials, value: int) -> Prompt:
        self.prompt = Prompt()
        if self.at_once:
            self.prompt.set_result(value * 2)
        return self.prompt


PEER = PeerCredentials(uid=0, gids=frozenset(), pid=1, sender=":1.1")


def test_a_prompt_is_answered_in_the_callback_that_sets_it() -> None:
    """No done-callback turn between the verb's answer and the transport's: the dispatcher's
    ``then`` runs inside set_result (and set_exception)."""

    async def body() -> None:
        verbs = Verbs()
        dispatcher = Dispatcher(verbs, transport="test")
        for outcome in ([7], DrcError(Code.EPERM, "no")):
            heard: list[tuple[Any, Any]] = []
            dispatcher.dispatch(
                PEER, "Wait", [1], then=lambda out, err, h=heard: h.append((out, err))
            )
            assert verbs.prompt is not None
            if isinstance(outcome, DrcError):
                verbs.prompt.set_exception(outcome)
                assert heard == [(None, outcome)]
            else:
                verbs.prompt.set_result(outcome[0])
                assert heard == [(outcome, None)]

    asyncio.run(body())


def test_a_prompt_set_before_it_reached_the_dispatcher_is_answered_too() -> None:
    async def body() -> None:
        dispatcher = Dispatcher(Verbs(at_once=True), transport="test")
        heard: list[tuple[Any, Any]] = []
        dispatcher.dispatch(PEER, "Wait", [4], then=lambda out, err: heard.append((out, err)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert heard == [([8], None)]

    asyncio.run(body())


def test_a_transport_failing_to_answer_a_prompt_is_logged_not_raised_to_its_setter(caplog):
    """The setter (DRCC's link reading DRCS's answer) must not fail for a bus that could not
    take the reply: the link would drop every other call waiting on it."""

    async def body() -> None:
        prompt = Prompt()

        def told(_future: asyncio.Future[Any]) -> None:
            raise RuntimeError("the bus is gone")

        assert prompt.then(told)
        prompt.set_result(1)  # does not raise
        assert prompt.result() == 1

    asyncio.run(body())
    assert "answering a call failed" in caplog.text
