"""One lane per partition: a partition that cannot make progress never stops the others.

A Faust agent reads its topic with acks disabled and hands each event to the lane of
its partition. Each lane has its own task that takes up to ``batch_size`` events and
calls the handler with them; when the handler returns, the lane acks those events, in
offset order. So an offset is committed only after its whole batch was handled, and
never past a message still in a lane (faust-streaming #606 commits past a single
in-flight message at the head of a partition; in-order acks never leave such a gap).

A lane reads its partition strictly in offset order from the partition's committed
offset (``start_offset``): a record it already handled is dropped, and a record beyond
the next expected one means some were skipped (around rebalances): the lane drops what it
holds and seeks the partition back (``seek``), so nothing is skipped. If the same record
comes first again right after the seek, the offsets before it hold nothing a consumer
can read (a transaction marker, compaction), and the lane goes on from it.

A lane that is not strict (step topics) runs up to ``batch_size`` events at once, one
handler call each, and acks them in offset order as the oldest finishes (``WindowLane``):
a slow step holds its own slot, not a whole batch.

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

from coordinator._delivery import Abandoned

log = logging.getLogger("coordinator.lanes")

#: seconds between seeks back while the offset a lane expects has not arrived
SEEK_AGAIN = 1.0

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
        self.expected: int | None = None  # the next offset to handle
        self.seeked_at = -1.0
        #: a seek back is pending: ``expected`` has not arrived since. Faust may drop the
        #: re-read records (its read offset moves on with a batch it fetched before the
        #: seek), so the lane seeks again every second until ``expected`` arrives.
        self.sought = False
        #: the first offset that came after a gap. Seen first again after a seek back to
        #: ``expected``, the gap is real: the consumer reads on from its position, which
        #: only moves forward between seeks, so only a read from ``expected`` that finds
        #: nothing before it can hand this offset over first again
        self.gap_at = -1
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
                if not self.sought:
                    await self.wakeup.wait()
                    continue
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=SEEK_AGAIN)
                except TimeoutError:  # the re-read never came: seek again
                    await self._seek_back(None)
                continue
            if self.expected is None:
                self.expected = await self.lanes.start_offset(self.partition)
            batch = await self._in_order()
            if not batch:
                continue
            self.sought = False
            try:
                await self._handle(batch)
            except Abandoned:
                return
            for _ in batch:
                self.buffer.popleft()
            self.lanes.ack(batch)
            self.expected = batch[-1].message.offset + 1
            self._resume_if_drained()

    def _resume_if_drained(self) -> None:
        if self.paused and len(self.buffer) <= self.lanes.buffer // 2:
            self.paused = False
            self.lanes.resume(self.partition)

    async def _in_order(self) -> list[Any]:
        """The next batch: consecutive offsets from ``expected`` (empty after a seek)."""
        assert self.expected is not None
        dropped: list[Any] = []
        while self.buffer and self.buffer[0].message.offset < self.expected:
            dropped.append(self.buffer.popleft())  # handled already (a re-read)
        if self.buffer and self.buffer[0].message.offset > self.expected:
            first = self.buffer[0].message.offset
            if self.sought and first == self.gap_at:
                # read again from ``expected`` after a seek, and still ``first``: the
                # offsets between hold no record a consumer sees (a transaction marker,
                # compaction)
                log.warning(
                    "%s partition %d: offsets %d..%d hold no readable record; going on at %d",
                    self.lanes.name,
                    self.partition,
                    self.expected,
                    first - 1,
                    first,
                )
                self.expected, self.sought = first, False
                return await self._in_order()
            dropped.extend(self.buffer)
            self.buffer.clear()
            self.sought = True  # until ``expected`` arrives (the watchdog in ``_run``)
            self.gap_at = first
            if asyncio.get_running_loop().time() - self.seeked_at > SEEK_AGAIN:
                await self._seek_back(first)
        if dropped:
            self.lanes.forget(dropped)
            self._resume_if_drained()  # a paused partition must fetch the re-read
        batch: list[Any] = []
        for event in self.buffer:
            if len(batch) == self.lanes.batch_size:
                break
            if event.message.offset != self.expected + len(batch):
                break
            batch.append(event)
        return batch

    async def _seek_back(self, first: int | None) -> None:
        assert self.expected is not None
        self.seeked_at = asyncio.get_running_loop().time()
        log.warning(
            "%s partition %d: %s, expected %d (skipped by Faust); seeking back to %d",
            self.lanes.name,
            self.partition,
            "nothing re-read since the last seek" if first is None else f"got offset {first}",
            self.expected,
            self.expected,
        )
        await self.lanes.seek(self.partition, self.expected)

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


class WindowLane(Lane):
    """A lane that runs up to ``batch_size`` events at once, one handler call each.

    It acks them in offset order as the oldest finishes: a slow event holds its own
    slot, never a whole batch (step topics, read as delivered).
    """

    async def _run(self) -> None:
        running: deque[tuple[Any, asyncio.Task[None]]] = deque()  # the buffer's head, started
        try:
            while True:
                while running and running[0][1].done():
                    event, task = running.popleft()
                    if task.cancelled() or task.exception() is not None:
                        return  # Abandoned: the partition was taken away
                    self.buffer.popleft()
                    self.lanes.ack([event])
                self._resume_if_drained()
                active = sum(1 for _, task in running if not task.done())
                if self.stopping and not active:
                    return
                while (
                    not self.stopping
                    and len(running) < len(self.buffer)
                    and active < self.lanes.batch_size
                ):
                    event = self.buffer[len(running)]
                    running.append((event, asyncio.ensure_future(self._handle([event]))))
                    active += 1
                self.wakeup.clear()
                woken = asyncio.ensure_future(self.wakeup.wait())
                waiting = [task for _, task in running if not task.done()]
                try:
                    await asyncio.wait([*waiting, woken], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
        finally:
            for _, task in running:
                task.cancel()  # only when this lane's own task is cancelled or returns


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
        ack: Callable[[list[Any]], None] | None = None,
        start_offset: Callable[[int], Awaitable[int]] | None = None,
        seek: Callable[[int, int], Awaitable[None]] | None = None,
        strict: bool = True,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.handler = handler
        self.batch_size = batch_size
        self.buffer = buffer
        self.pause = pause
        self.resume = resume
        self.forget = forget
        self.ack = ack or _ack_each
        self.start_offset = start_offset or _first_buffered(self)
        self.seek = seek or _no_seek
        #: read strictly in offset order from the committed offset (else as delivered)
        self.strict = strict
        self.stop_timeout = stop_timeout
        self.lanes: dict[int, Lane] = {}

    def dispatch(self, event: Any) -> None:
        """Hand ``event`` to the lane of its partition (created on first use)."""
        partition = event.message.partition
        lane = self.lanes.get(partition)
        if lane is None:
            kind = Lane if self.strict else WindowLane
            lane = self.lanes[partition] = kind(self, partition)
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


def _first_buffered(lanes: Lanes) -> Callable[[int], Awaitable[int]]:
    """Without a broker to ask: start at the first offset the lane received."""

    async def start(partition: int) -> int:
        return int(lanes.lanes[partition].buffer[0].message.offset)

    return start


async def _no_seek(partition: int, offset: int) -> None:
    return None


def _ack_each(events: list[Any]) -> None:
    for event in events:
        event.ack()
