"""The listener worker's intake: records from the consumer, applied in batches, acked after."""

from __future__ import annotations

import asyncio
from typing import Any

from listeners._intake import Intake


class Recorder:
    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.acked: list[int] = []
        self.hold = hold

    async def apply(self, messages: list[Any]) -> None:
        if self.hold is not None:
            await self.hold.wait()
        self.batches.append(list(messages))

    def ack(self, message: Any) -> None:
        assert any(message in b for b in self.batches), "acked before its batch was applied"
        self.acked.append(message)


async def settle(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)


async def test_records_are_applied_in_batches_and_acked_after_their_batch() -> None:
    r = Recorder()
    intake = Intake(r.apply, r.ack, batch_size=3, window=0.05)
    for n in range(7):
        intake.put(n)
    await settle(lambda: len(r.acked) == 7)
    assert r.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert r.acked == list(range(7))
    await intake.stop(1.0)


async def test_a_lone_record_waits_at_most_the_window() -> None:
    r = Recorder()
    intake = Intake(r.apply, r.ack, batch_size=100, window=0.05)
    intake.put("a")
    await asyncio.sleep(0.01)
    assert r.batches == []
    await settle(lambda: r.acked == ["a"])
    assert r.batches == [["a"]]
    await intake.stop(1.0)


async def test_a_rebalance_lets_the_batch_in_progress_finish_and_drops_the_rest() -> None:
    hold = asyncio.Event()
    r = Recorder(hold)
    intake = Intake(r.apply, r.ack, batch_size=2, window=0.0)
    for n in range(5):
        intake.put(n)
    await asyncio.sleep(0.02)  # batch [0, 1] is being applied
    stopping = asyncio.ensure_future(intake.stop(5.0))
    await asyncio.sleep(0.02)
    assert not stopping.done(), "waits for the batch in progress"
    hold.set()
    await stopping
    assert r.acked == [0, 1] and r.batches == [[0, 1]]
    assert not intake.buffer, "the rest is dropped unacked (read again by the next owner)"


async def test_a_batch_stuck_past_the_timeout_is_abandoned_unacked() -> None:
    r = Recorder(asyncio.Event())  # never released: a database that stays down
    intake = Intake(r.apply, r.ack, batch_size=10, window=0.0)
    intake.put(1)
    await asyncio.sleep(0.02)
    await intake.stop(0.05)
    assert r.acked == [] and not intake.buffer


async def test_a_record_handed_over_while_stopping_is_not_taken_and_the_intake_lives_on() -> None:
    """A fetch on its way when the rebalance came: dropped (read again), not a dead task."""
    hold = asyncio.Event()
    r = Recorder(hold)
    intake = Intake(r.apply, r.ack, batch_size=3, window=0.0)
    for n in range(3):
        intake.put(n)
    await asyncio.sleep(0.02)  # [0, 1, 2] is being applied
    stopping = asyncio.ensure_future(intake.stop(5.0))
    await asyncio.sleep(0.01)
    for n in range(100, 106):  # handed over during the stop
        intake.put(n)
    hold.set()
    await stopping
    assert r.acked == [0, 1, 2] and not intake.buffer
    for n in range(200, 203):  # after the rebalance: applied again
        intake.put(n)
    await settle(lambda: len(r.acked) == 6)
    assert r.acked == [0, 1, 2, 200, 201, 202]
    await intake.stop(1.0)
