"""Expiry of finished sagas, applied by the worker that owns their partition.

At its ``expires_at`` a finished saga's record shrinks to a marker, and the marker is
deleted at its own (``coordinator._retention``). No timer record crosses Kafka for that:
the owning worker applies due expiries itself, per partition, in batches, holding the
partition's lock (the one its inbox batches hold, so the two never interleave):

1. take the partition's due entries from :class:`ExpiryQueue`;
2. read each record from the local store; one still due gets its next stage
   (``retention.expire``, pure): a marker, or a tombstone;
3. write them to the changelog and wait for every acknowledgement, then to the local
   store; nothing is derived from a marker or a tombstone, so that is the whole durable
   order. Written only under the worker's membership lease (``coordinator._lease``), and
   kept from the local store if acknowledged after it ran out (unless a heartbeat then
   confirms the membership).

Idempotent: a record no longer due (an unwind re-opened, a marker already written) is
left alone. Crash-safe: what was not acknowledged is still the old record in the
changelog, the queue is rebuilt from the table at the restart (``DeadlineIndex.rebuild``)
and the expiry fires again. Only partitions this worker holds are expired: at a revoke
the expirer stops first and waits for the round in progress. A partition just assigned
is expired only once its inbox lane re-sent its last batch (``ready``), and none while its
lane tries again a batch that failed after its records were acknowledged (``waits``).

The queue holds one ``(expires_at, saga_id)`` per finished saga, in a heap per
partition (no per-saga dict: a retained saga costs a tuple and its id). An entry may be
stale or doubled; the record read in step 2 decides.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from pydantic import ValidationError

from coordinator._delivery import Abandoned, Producer, Record, deliver
from coordinator._lease import Membership, fenced
from coordinator._retention import Retention, expire, is_due
from coordinator._state import TERMINAL, SagaState
from coordinator._tablestore import Store, changelog_offset

log = logging.getLogger("coordinator.expiry")

#: a partition's expiries are applied at most once per this many seconds (batched)
EVERY = 1.0
#: records per expiry round (one changelog wait each)
ROUND = 1000


class ExpiryQueue:
    """Per partition: when each finished saga (or marker) expires."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[float, str]]] = {}

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())

    def add(self, partition: int, saga_id: str, at: float) -> None:
        """Expire ``saga_id`` at ``at`` (epoch seconds)."""
        heapq.heappush(self._heaps.setdefault(partition, []), (at, saga_id))

    def add_state(self, state: SagaState, partition: int) -> None:
        """Queue a finished saga's ``expires_at`` (nothing for any other record)."""
        if state.status in TERMINAL and state.expires_at is not None:
            self.add(partition, state.saga_id, state.expires_at.timestamp())

    def due_partitions(self, now: float) -> list[int]:
        """Partitions whose earliest entry is due."""
        return [p for p, heap in self._heaps.items() if heap and heap[0][0] <= now]

    def pop_due(self, partition: int, now: float, limit: int) -> list[str]:
        """Remove and return up to ``limit`` due saga ids of ``partition``."""
        heap = self._heaps.get(partition, [])
        found: list[str] = []
        while heap and heap[0][0] <= now and len(found) < limit:
            found.append(heapq.heappop(heap)[1])
        return found

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget every partition not in ``partitions`` (revoked ones)."""
        kept = set(partitions)
        for partition in [p for p in self._heaps if p not in kept]:
            del self._heaps[partition]

    def clear(self, partitions: Iterable[int]) -> None:
        """Empty ``partitions`` (before they are indexed again from the table)."""
        for partition in partitions:
            self._heaps.pop(partition, None)


class Expirer:
    """Applies the due expiries of the partitions this worker holds (see the module doc)."""

    def __init__(
        self,
        queue: ExpiryQueue,
        store: Store,
        producer: Producer,
        retention: Retention,
        *,
        written: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        waits: Callable[[int], bool] = lambda partition: False,
    ) -> None:
        self.queue = queue
        self.store = store
        self.producer = producer
        self.retention = retention
        self.changelog = ""  # set by the app once the table exists
        self.written = written  # called after each batch of records (fault injection)
        self.clock = clock
        #: ``waits(partition)``: a batch of it failed after its records were acknowledged,
        #: and its lane's retry has not re-sent them yet (``InboxProcessor.unsent``); the
        #: lane waits between the tries without the partition's lock, and a marker written
        #: meanwhile would drop the outbox the retry re-sends
        self.waits = waits
        #: the membership lease, checked before each write (``coordinator._lease``)
        self.fence: Membership | None = None
        #: partitions this worker holds (set after a rebalance, emptied at a revoke)
        self.assigned: set[int] = set()
        #: of those, the partitions it may expire: their lane is ``ready``
        self.held: set[int] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._last: dict[int, float] = {}

    def lock(self, partition: int) -> asyncio.Lock:
        """The partition's lock: held by its inbox batches and its expiry rounds."""
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        return lock

    def ready(self, partition: int) -> None:
        """``partition``'s inbox lane re-sent what its last batch may not have sent.

        Only then may its sagas expire: a marker keeps no outbox, and a saga of that batch
        (finished, its events unsent by a worker killed before its sends) is re-sent from
        its stored record (``coordinator._local``). Ignored for a partition not assigned
        (any more): a lane that finished its prelude as its partition was revoked.
        """
        if partition in self.assigned:
            self.held.add(partition)

    def tick(self) -> None:
        """Start an expiry task for each held partition with due entries (timer)."""
        now = self.clock()
        for partition in self.queue.due_partitions(now):
            if partition not in self.held or partition in self._tasks or self.waits(partition):
                continue
            if now - self._last.get(partition, 0.0) < EVERY:
                continue
            self._last[partition] = now
            task = asyncio.get_running_loop().create_task(self._run(partition))
            self._tasks[partition] = task

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop expiring (a revoke): wait up to ``timeout`` for the rounds in progress.

        A round still waiting after that (e.g. for the partition's lock, held by an inbox
        batch retrying in place) is cancelled before it writes anything: it only writes
        while its partition is held, and the next owner rebuilds its queue from the
        table. The app stops the lanes at the same time, so a lock is never waited on
        for a lane that would only stop after this returns.
        """
        self.assigned, self.held = set(), set()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("expiry: %d round(s) cancelled at a revoke", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self, partition: int) -> None:
        try:
            while partition in self.held:
                async with self.lock(partition):
                    if partition not in self.held or self.waits(partition):
                        return
                    saga_ids = self.queue.pop_due(partition, self.clock(), ROUND)
                    if not saga_ids:
                        return
                    try:
                        await self.expire(partition, saga_ids)
                    except Abandoned:
                        return  # revoked: the next owner rebuilds its queue from the table
                    except Exception:
                        log.exception("expiry of partition %d failed; retrying", partition)
                        for saga_id in saga_ids:
                            self.queue.add(partition, saga_id, self.clock() + EVERY)
                        return
        finally:
            self._tasks.pop(partition, None)

    async def expire(self, partition: int, saga_ids: list[str]) -> int:
        """Apply the due expiries among ``saga_ids`` (one partition); returns how many."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        stored: dict[str, bytes | None] = {}
        later: list[SagaState] = []
        for saga_id in dict.fromkeys(saga_ids):
            state = self._load(saga_id)
            if state is None or state.status not in TERMINAL:
                continue  # gone, or re-opened: its own transitions index it again
            if not is_due(state, now):
                later.append(state)
                continue
            after = expire(state, now=now, retention=self.retention)
            stored[saga_id] = None if after is None else after.model_dump_json().encode()
            if after is not None:
                later.append(after)
        if stored:
            records = [
                Record(self.changelog, saga_id.encode(), raw, partition)
                for saga_id, raw in stored.items()
            ]
            what = f"expiry of partition {partition}"
            backoff = await fenced(self.fence, what, lambda: partition not in self.held)
            acks = await deliver(self.producer, records, backoff, what=f"expiry p{partition}")
            if self.fence is not None:  # acknowledged after the lease: maybe after a takeover
                await self.fence.confirm(what)
            self.store.write(partition, stored, changelog_offset(acks))
            self.written()
        for state in later:
            self.queue.add_state(state, partition)
        return len(stored)

    def _load(self, saga_id: str) -> SagaState | None:
        raw = self.store.get(saga_id)
        if raw is None:
            return None
        try:
            return SagaState.model_validate_json(raw)
        except ValidationError as exc:  # the inbox dead-letters what concerns it
            log.error("expiry: saga %r record is unreadable (%s); not expired", saga_id, exc)
            return None
