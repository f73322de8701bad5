"""One lane per partition: a partition that cannot make progress never stops the others.

A Faust agent reads its topic with acks disabled and hands each event to the lane of
its partition. Each lane has its own task that takes up to ``batch_size`` events and
calls the handler with them; when the handler returns, the lane acks those events, in
offset order. So an offset is committed only after its whole batch was handled, and
never past a message still in a lane (faust-streaming #606 commits past a single
in-flight message at the head of a partition; in-order acks never leave such a gap).

A lane whose buffer passes ``buffer`` pauses fetching of its partition and resumes it
once drained to half. On a rebalance (or shutdown) every lane finishes the handler call
it is in (bounded by ``stop_timeout``), then is dropped with its buffer: those events
were not acked, so they are delivered again to whoever owns the partition next. The
consumer is told to stop waiting for them, which would otherwise hold the rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from coordinator.delivery import Abandoned

log = logging.getLogger("coordinator.lanes")

#: ``handler(partition, events, stopping)``; returns when every event may be acked
Handler = Callable[[int, list[Any], Callable[[], bool]], Awaitable[None]]


class Lane:
    """The queue and task of one partition."""

    def __init__(self, lanes: Lanes, partition: int) -> None:
        self.lanes = lanes
        self.partition = partition
        self.buffer: deque[Any] = deque()
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.paused = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    def put(self, event: Any) -> None:
        """Queue an event; pause the partition's fetching if the buffer is full."""
        self.buffer.append(event)
        self.wakeup.set()
        if not self.paused and len(self.buffer) > self.lanes.buffer:
            self.paused = True
            self.lanes.pause(self.partition)

    async def _run(self) -> None:
        while not self.stopping:
            if not self.buffer:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            n = min(len(self.buffer), self.lanes.batch_size)
            batch = [self.buffer[i] for i in range(n)]
            try:
                await self._handle(batch)
            except Abandoned:
                return
            for _ in range(n):
                self.buffer.popleft()
            for event in batch:
                event.ack()
            if self.paused and len(self.buffer) <= self.lanes.buffer // 2:
                self.paused = False
                self.lanes.resume(self.partition)

    async def _handle(self, batch: list[Any]) -> None:
        """Call the handler until it succeeds: a handler bug is retried, never skipped."""
        delay = 0.5
        while True:
            try:
                await self.lanes.handler(self.partition, batch, lambda: self.stopping)
                return
            except Abandoned:
                raise
            except Exception:
                log.exception(
                    "%s partition %d: batch handler failed; retrying in %.1fs",
                    self.lanes.name,
                    self.partition,
                    delay,
                )
                if self.stopping:
                    raise Abandoned() from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self, timeout: float) -> list[Any]:
        """Stop after the current handler call; returns the events left un-acked."""
        self.stopping = True
        self.wakeup.set()
        done, _ = await asyncio.wait({self.task}, timeout=timeout)
        if not done:
            log.warning(
                "%s partition %d: still busy after %.0fs at a rebalance; abandoning it",
                self.lanes.name,
                self.partition,
                timeout,
            )
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        return list(self.buffer)


class Lanes:
    """The lanes of one topic (one per partition, created on first event)."""

    def __init__(
        self,
        name: str,
        handler: Handler,
        *,
        batch_size: int,
        buffer: int,
        pause: Callable[[int], None] = lambda p: None,
        resume: Callable[[int], None] = lambda p: None,
        forget: Callable[[list[Any]], None] = lambda events: None,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.handler = handler
        self.batch_size = batch_size
        self.buffer = buffer
        self.pause = pause
        self.resume = resume
        self.forget = forget
        self.stop_timeout = stop_timeout
        self.lanes: dict[int, Lane] = {}

    def dispatch(self, event: Any) -> None:
        """Hand ``event`` to the lane of its partition (created on first use)."""
        partition = event.message.partition
        lane = self.lanes.get(partition)
        if lane is None:
            lane = self.lanes[partition] = Lane(self, partition)
        lane.put(event)

    def busy(self) -> int:
        """Events buffered in every lane."""
        return sum(len(lane.buffer) for lane in self.lanes.values())

    async def stop(self) -> None:
        """Stop every lane (a rebalance revokes all partitions first)."""
        lanes, self.lanes = list(self.lanes.values()), {}
        left = await asyncio.gather(*(lane.stop(self.stop_timeout) for lane in lanes))
        dropped = [event for events in left for event in events]
        if dropped:
            self.forget(dropped)
