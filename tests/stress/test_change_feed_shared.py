"""The change log answers a burst of polls with one shared answer: a first slice in one loop
turn, then up to FAN_OUT a turn."""

from __future__ import annotations

import asyncio

from drc.link.protocol import Shared
from drc.server.changes import FAN_OUT, FIRST_SLICE, ChangeLog


def test_every_poll_from_one_since_gets_the_same_answer_a_slice_per_turn():
    async def body() -> None:
        log = ChangeLog()
        gen = log.generation
        polls = [log.poll(gen, 0, 60) for _ in range(FIRST_SLICE + FAN_OUT + 7)]
        behind = log.poll(gen, 0, 60)
        log.record("revoked", 5, 2)
        answered_at: dict[int, int] = {}  # poll -> how many were answered when its callback ran

        def note(index: int) -> None:
            polls[index].add_done_callback(
                lambda _f: answered_at.setdefault(index, sum(p.done() for p in polls))
            )

        note(0)  # the first slice, before the next one was answered
        note(FIRST_SLICE)  # the second slice, all of FAN_OUT, before the third one
        await asyncio.wait_for(asyncio.gather(*polls, behind), 5)
        assert answered_at == {0: FIRST_SLICE, FIRST_SLICE: FIRST_SLICE + FAN_OUT}
        answers = {id(p.result()) for p in polls}
        assert len(answers) == 1  # one object: the link seals it once
        answer = polls[0].result()
        assert type(answer) is Shared and answer.asked == [gen, 0]
        assert answer == (gen, True, 1, [(5, 2)])

        # a poll of a replaced generation learns the new one, with nothing to apply
        parked = log.poll(gen, 1, 60)
        log.new_generation()
        resync = await asyncio.wait_for(parked, 1)
        assert resync == (log.generation, False, 1, []) and resync.asked == [gen, 1]

    asyncio.run(asyncio.wait_for(body(), 30))
