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
Every record a partition has may also be skipped, with none after them to show the gap
(seen: a worker restarted after its predecessor died before its first commit skipped the
first fetch of every partition; with no committed offset, Faust's seek "to the committed
offsets" does not rewind a partition). So each assigned partition gets its lane at once
(``open``), and an idle lane checks every ``SEEK_AGAIN`` that the consumer's position
(``position``) is not past the offset it expects; if it stays past, it seeks back.

A lane that is not strict (step topics) runs up to ``batch_size`` events at once, one
handler call each, and acks them in offset order as the oldest finishes (``WindowLane``):
a slow step holds its own slot, not a whole batch.

A strict lane also takes *local* items (``Lanes.put_local``): step results of this
worker's own tasks, applied without a trip through the topic (``coordinator._local``).
They have no offset: each batch takes the records in offset order and then every local
item waiting; only the records are acked. A lane that stops hands its local items to
``orphaned`` (they go to the topic instead). ``Lanes.stop`` names the partitions whose
lane stopped cleanly (its prelude and every batch it began finished): their last batch
was sent in full.

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
#: seeks back of an idle lane logged as warnings; later ones, every 30th (a partition
#: that ends with a transaction marker has the consumer past the last record for good)
WATCH_SEEKS = 3

#: ``handler(partition, events, stopping)``; returns when every event may be acked
Handler = Callable[[int, list[Any], Callable[[], bool]], Awaitable[None]]


class Lane:
    """The queue and task of one partition."""

    def __init__(self, lanes: Lanes, partition: int) -> None:
        self.lanes = lanes
        self.partition = partition
        self.buffer: deque[Any] = deque()
        self.local: deque[Any] = deque()  # items without an offset (``put_local``)
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
        self.watched = False  # the idle watch logged where the partition stands
        self.past: int | None = None  # ``expected`` when the watch last saw the consumer past it
        self.watch_seeks = 0  # seeks of the idle watch since ``expected`` last moved
        #: stopped cleanly: the prelude and every batch the lane began finished (sends
        #: acknowledged); not when a batch was abandoned or cancelled, or it never ran
        self.drained = False
        #: a handler call failed and its batch was tried again: the failed try may have
        #: written records whose sends did not all leave (the inbox's retry re-sends them:
        #: ``InboxProcessor.unsent``); after a bug, no sent mark vouches: never ``drained``
        self.retried = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    def put(self, event: Any) -> None:
        """Queue an event; pause the partition's fetching if the buffer is full."""
        self.buffer.append(event)
        self.wakeup.set()
        if not self.paused and len(self.buffer) > self.lanes.buffer:
            self.paused = True
            log.info(
                "%s partition %d: %d buffered, pausing",
                self.lanes.name,
                self.partition,
                len(self.buffer),
            )
            self.lanes.pause(self.partition)

    def put_local(self, item: Any) -> None:
        """Queue an item that has no offset: it joins the next batch."""
        self.local.append(item)
        self.wakeup.set()

    async def _prelude(self) -> bool:
        """Await the lanes' prelude and handle what it returns; False: stop the lane."""
        prelude = self.lanes.prelude
        while prelude is not None and not self.stopping:
            try:
                first = await prelude(self.partition)
                if first:
                    await self._handle(first)
                return True
            except Abandoned:
                return False
            except Exception:  # never quietly, never without it: tried again
                log.exception(
                    "%s partition %d: prelude failed; again in %.1fs",
                    self.lanes.name,
                    self.partition,
                    SEEK_AGAIN,
                )
                await asyncio.sleep(SEEK_AGAIN)
        return not self.stopping

    async def _run(self) -> None:
        if not await self._prelude():
            return
        if not self.stopping:
            self.lanes.ready(self.partition)
        while not self.stopping:
            if not self.buffer and not self.local:
                self.wakeup.clear()
                if not self.sought and self.lanes.position is None:
                    await self.wakeup.wait()
                    continue
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=SEEK_AGAIN)
                except TimeoutError:  # nothing arrived: was anything skipped?
                    await self._watch()
                continue
            try:
                batch = []
                if self.buffer:  # (local items alone need no position)
                    if self.expected is None:
                        await self._start()
                    batch = await self._in_order()
            except Exception:  # broker trouble: the lane must not die quietly
                log.exception(
                    "%s partition %d: reading its position failed; retrying in %.1fs",
                    self.lanes.name,
                    self.partition,
                    SEEK_AGAIN,
                )
                await asyncio.sleep(SEEK_AGAIN)
                continue
            take = min(len(self.local), self.lanes.batch_size)
            local = [self.local.popleft() for _ in range(take)]
            if not batch and not local:
                continue
            if batch:
                self.sought, self.watch_seeks = False, 0
            try:
                await self._handle(batch + local)
            except BaseException as exc:  # Abandoned, or cancelled at the stop timeout
                self.local.extendleft(reversed(local))  # handed on by ``stop``
                if isinstance(exc, Abandoned):
                    return
                raise
            if not batch:
                continue
            for _ in batch:
                self.buffer.popleft()
            self.lanes.ack(batch)
            self.expected = batch[-1].message.offset + 1
            self._resume_if_drained()
        self.drained = not self.retried  # (only a loop left for ``stopping`` gets here)

    def _resume_if_drained(self) -> None:
        if self.paused and len(self.buffer) <= self.lanes.buffer // 2:
            self.paused = False
            log.info("%s partition %d: resuming", self.lanes.name, self.partition)
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
                await self.lanes.gap(self.partition, self.expected, first - 1)
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

    async def _start(self) -> None:
        self.expected = await self.lanes.start_offset(self.partition)
        log.info(
            "%s partition %d: reading from offset %d (first delivered: %s)",
            self.lanes.name,
            self.partition,
            self.expected,
            self.buffer[0].message.offset if self.buffer else "none yet",
        )

    async def _watch(self) -> None:
        """Idle for ``SEEK_AGAIN``: seek back if a seek is pending or if nothing came.

        Nothing came but the consumer moved past ``expected`` (seen at two checks in a
        row): Faust skipped records and no later record of the partition arrived to show
        the gap. A failure (the broker or the consumer not ready) is logged and tried
        again when next idle: the lane's task never ends on it.
        """
        try:
            at = await self._position()
            past = at is not None and self.expected is not None and at > self.expected
            # twice in a row: once may be a record still on its way from the consumer
            before, self.past = self.past, self.expected if past else None
            if past and before is not None and before == self.expected:
                # never taken as "nothing there": a seek's re-read may be dropped too
                self.sought, self.watch_seeks = True, self.watch_seeks + 1
                await self._seek_back(
                    f"consumer at offset {at}, nothing delivered (seek {self.watch_seeks})",
                    quiet=self.watch_seeks > WATCH_SEEKS and self.watch_seeks % 30 != 0,
                )
            elif self.sought:
                await self._seek_back("nothing re-read since the last seek")
        except Exception as exc:
            log.warning(
                "%s partition %d: checking for skipped records failed (%r); again in %.0fs",
                self.lanes.name,
                self.partition,
                exc,
                SEEK_AGAIN,
            )

    async def _position(self) -> int | None:
        """The consumer's fetch position (None: not watched, or not known yet)."""
        if self.lanes.position is None:
            return None
        if self.expected is None:
            await self._start()
        at = await self.lanes.position(self.partition)
        if not self.watched:  # once per lane: where an idle partition stands
            self.watched = True
            log.info(
                "%s partition %d: idle at offset %s, consumer at %s",
                self.lanes.name,
                self.partition,
                self.expected,
                at,
            )
        return at

    async def _seek_back(self, why: int | str, *, quiet: bool = False) -> None:
        assert self.expected is not None
        self.seeked_at = asyncio.get_running_loop().time()
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "%s partition %d: %s, expected %d (skipped by Faust); seeking back to %d",
            self.lanes.name,
            self.partition,
            why if isinstance(why, str) else f"got offset {why}",
            self.expected,
            self.expected,
        )
        try:
            await self.lanes.seek(self.partition, self.expected)
        except Exception:  # retried: the watchdog seeks again while ``sought``
            log.exception("%s partition %d: seek failed", self.lanes.name, self.partition)

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
                self.retried = True
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
        position: Callable[[int], Awaitable[int | None]] | None = None,
        gap: Callable[[int, int, int], Awaitable[None]] | None = None,
        orphaned: Callable[[list[Any]], None] = lambda items: None,
        prelude: Callable[[int], Awaitable[list[Any]]] | None = None,
        ready: Callable[[int], None] = lambda partition: None,
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
        #: the consumer's next fetch offset of a partition (None: unknown); given it, an
        #: idle strict lane checks every ``SEEK_AGAIN`` that nothing was skipped
        self.position = position
        #: ``gap(partition, first, last)``: offsets that hold no readable record, passed
        self.gap = gap or _no_gap
        #: local items a stopping lane did not handle (``put_local``)
        self.orphaned = orphaned
        #: ``prelude(partition)``: awaited by a new strict lane before its first batch;
        #: the items it returns are handled first, as a batch of their own
        self.prelude = prelude
        #: ``ready(partition)``: a strict lane's prelude (and the batch it returned) is done
        self.ready = ready
        #: stopping at a rebalance: records handed over meanwhile are not taken (unacked,
        #: they are read again by the partition's next owner)
        self.closed = False
        #: read strictly in offset order from the committed offset (else as delivered)
        self.strict = strict
        self.stop_timeout = stop_timeout
        self.lanes: dict[int, Lane] = {}

    def dispatch(self, event: Any) -> None:
        """Hand ``event`` to the lane of its partition (created on first use)."""
        if self.closed:
            return
        self._lane(event.message.partition).put(event)

    def put_local(self, partition: int, item: Any) -> bool:
        """Queue ``item`` for ``partition``'s next batch, if this worker holds it.

        False when the partition has no lane (not held, or between a revoke and the next
        assignment): the caller sends the item through the topic instead.
        """
        lane = self.lanes.get(partition)
        if self.closed or lane is None or lane.stopping or not self.strict:
            return False
        lane.put_local(item)
        return True

    def open(self, partitions: set[int]) -> None:
        """Give each assigned partition its strict lane now, not at its first event.

        A partition all of whose records Faust skipped gets no event: only its lane's
        watch (``position``) notices, and seeks back.
        """
        if self.strict:
            for partition in partitions:
                self._lane(partition)

    def _lane(self, partition: int) -> Lane:
        lane = self.lanes.get(partition)
        if lane is None:
            kind = Lane if self.strict else WindowLane
            lane = self.lanes[partition] = kind(self, partition)
        return lane

    def busy(self) -> int:
        """Events buffered in every lane."""
        return sum(len(lane.buffer) for lane in self.lanes.values())

    async def stop(self) -> set[int]:
        """Stop every lane (a rebalance revokes all partitions first).

        Returns the partitions whose lane stopped cleanly (``Lane.drained``).
        """
        lanes, self.lanes = list(self.lanes.values()), {}
        self.closed = True
        try:
            left = await asyncio.gather(*(lane.stop(self.stop_timeout) for lane in lanes))
        finally:
            self.closed = False
        dropped = [event for events in left for event in events]
        local = [item for lane in lanes for item in lane.local]
        for lane in lanes:
            lane.local.clear()
        if local:
            self.orphaned(local)
        if lanes:
            log.info(
                "%s: lanes of partitions %s stopped (%d events dropped, %d local items "
                "handed on, paused: %s)",
                self.name,
                sorted(lane.partition for lane in lanes),
                len(dropped),
                len(local),
                sorted(lane.partition for lane in lanes if lane.paused),
            )
        if dropped:
            self.forget(dropped)
        return {lane.partition for lane in lanes if lane.drained}


def _first_buffered(lanes: Lanes) -> Callable[[int], Awaitable[int]]:
    """Without a broker to ask: start at the first offset the lane received."""

    async def start(partition: int) -> int:
        return int(lanes.lanes[partition].buffer[0].message.offset)

    return start


async def _no_seek(partition: int, offset: int) -> None:
    return None


async def _no_gap(partition: int, first: int, last: int) -> None:
    return None


def _ack_each(events: list[Any]) -> None:
    for event in events:
        event.ack()
