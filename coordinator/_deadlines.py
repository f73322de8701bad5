"""The deadline index: when each in-flight saga of this worker's partitions needs a timer.

The table holds every saga's durable deadline; this is the in-memory index over it that
the timer reads. Rules that keep an entry from being lost:

* ``set`` is called after every transition, changed or not, so a saga whose timer did
  not move it (an early timer, say) is indexed again;
* ``due`` hands out an entry only if the index still holds that same deadline for that
  saga, and removes it; the caller puts it back with ``restore`` if its send fails;
* on a rebalance the revoked partitions are dropped and the assigned ones rebuilt from
  the table: in chunks that yield to the event loop (a worker holding 100k+ sagas must
  keep heartbeating, or the group rebalances again), while the lanes already run. A saga
  whose entry the lanes or the timer touched since the rebuild began keeps that entry:
  the rebuild's copy of the table may be older (``rebuild``).

Finished sagas wait for their expiry, not for a timer: ``set_state`` puts them in
``expiry`` (``coordinator._expiry.ExpiryQueue``), applied by the owning worker itself.

A heap ordered by deadline makes a tick cost O(due entries); entries replaced or removed
stay in the heap until they surface (lazy deletion), and the heap is rebuilt when stale
entries outnumber live ones.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Container, Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from coordinator._expiry import ExpiryQueue
from coordinator._state import TERMINAL, SagaState, wake_time

log = logging.getLogger("coordinator.deadlines")

#: records indexed between two yields to the event loop during a rebuild
REBUILD_CHUNK = 500


class _Deadline(BaseModel):
    model_config = ConfigDict(extra="ignore")

    deadline: datetime


class Wake(BaseModel):
    """The fields of a saga record that ``wake_at()`` reads (parsing the rest is slow)."""

    model_config = ConfigDict(extra="ignore")

    saga_id: str
    status: str
    pending: _Deadline | None = None
    expires_at: datetime | None = None

    def at(self) -> float | None:
        """``wake_at()`` in epoch seconds."""
        deadline = self.pending.deadline if self.pending is not None else None
        wake = wake_time(self.status, deadline, self.expires_at)
        return None if wake is None else wake.timestamp()


def wake_of(raw: bytes) -> Wake:
    """What ``wake_at()`` needs of a stored saga record."""
    return Wake.model_validate_json(raw)


class DeadlineIndex:
    """Per saga of this worker's partitions: when it needs a ``timer`` record."""

    def __init__(self) -> None:
        self._at: dict[str, tuple[float, int]] = {}  # saga_id -> (deadline, partition)
        self._heap: list[tuple[float, str]] = []
        #: sagas set or fired since the running rebuild began (None: no rebuild runs)
        self._touched: set[str] | None = None
        self._generation = 0
        #: finished sagas (and markers) by when they expire
        self.expiry = ExpiryQueue()

    def __len__(self) -> int:
        return len(self._at)

    def get(self, saga_id: str) -> float | None:
        """Return the indexed deadline of ``saga_id`` (epoch seconds), if any."""
        entry = self._at.get(saga_id)
        return entry[0] if entry else None

    def set(self, saga_id: str, partition: int, deadline: float | None) -> None:
        """Index a saga's current deadline (None: it waits for nothing)."""
        if self._touched is not None:
            self._touched.add(saga_id)
        self._put(saga_id, partition, deadline)

    def _put(self, saga_id: str, partition: int, deadline: float | None) -> None:
        if deadline is None:
            self._at.pop(saga_id, None)
            return
        if self._at.get(saga_id) == (deadline, partition):
            return
        self._at[saga_id] = (deadline, partition)
        heapq.heappush(self._heap, (deadline, saga_id))
        if len(self._heap) > 2 * len(self._at) + 1024:
            self._heap = [(at, saga_id) for saga_id, (at, _) in self._at.items()]
            heapq.heapify(self._heap)

    def set_state(self, state: SagaState, partition: int, *, changed: bool = True) -> None:
        """Index ``state.wake_at()``: call after every transition, changed or not.

        A finished saga goes to ``expiry`` instead, when its record changed (an unchanged
        one is queued already).
        """
        if state.status in TERMINAL:
            self.set(state.saga_id, partition, None)
            if changed:
                self.expiry.add_state(state, partition)
            return
        self.set(state.saga_id, partition, deadline_of(state))

    def due(self, now: float) -> list[tuple[str, float, int]]:
        """Remove and return ``(saga_id, deadline, partition)`` of every deadline passed."""
        found: list[tuple[str, float, int]] = []
        while self._heap and self._heap[0][0] <= now:
            at, saga_id = heapq.heappop(self._heap)
            entry = self._at.get(saga_id)
            if entry is None or entry[0] != at:
                continue  # replaced or removed since it was pushed
            del self._at[saga_id]
            found.append((saga_id, at, entry[1]))
            if self._touched is not None:
                self._touched.add(saga_id)  # fired: a rebuild must not arm it again
        return found

    def restore(self, saga_id: str, deadline: float, partition: int) -> None:
        """Put back an entry whose timer could not be sent, unless the saga moved on."""
        if saga_id not in self._at:
            self.set(saga_id, partition, deadline)

    def drop_partitions(self, keep: Iterable[int]) -> None:
        """Forget the sagas of every partition not in ``keep`` (revoked ones)."""
        kept = set(keep)
        for saga_id in [s for s, (_, p) in self._at.items() if p not in kept]:
            del self._at[saga_id]
        self.expiry.keep_only(kept)

    async def rebuild(
        self,
        partitions: Iterable[int],
        records: Iterable[tuple[int, bytes]],
        *,
        chunk: int = REBUILD_CHUNK,
    ) -> bool:
        """Drop partitions not held any more; index ``records`` (partition, saga record).

        Yields to the event loop every ``chunk`` records. Meanwhile the lanes apply new
        records and the timer fires: an entry they set or fired since this call began is
        newer than the one ``records`` holds, so it is kept. A newer ``rebuild`` call
        ends an older one that is still running: that one returns False.
        """
        held = set(partitions)
        self._generation += 1
        generation = self._generation
        self.drop_partitions(held)
        self.expiry.clear(held)  # the table is the truth: indexed again below
        touched = self._touched = set()
        try:
            for i, (partition, raw) in enumerate(records, 1):
                if partition in held:
                    self._index(partition, raw, touched)
                if i % chunk == 0:
                    await asyncio.sleep(0)
                    if generation != self._generation:
                        return False  # a newer rebalance rebuilds it again
            return True
        finally:
            if generation == self._generation:
                self._touched = None

    def _index(self, partition: int, raw: bytes, touched: Container[str]) -> None:
        try:
            wake = wake_of(raw)
        except ValidationError as exc:  # never written by us: say so, go on
            log.error("deadline index: unreadable saga record in p%d: %s", partition, exc)
            return
        if wake.status in TERMINAL:
            # waits for its expiry; a stale or doubled expiry entry is harmless (the
            # expirer re-reads the record)
            if wake.saga_id not in touched:
                self._put(wake.saga_id, partition, None)
            if wake.expires_at is not None:
                self.expiry.add(partition, wake.saga_id, wake.expires_at.timestamp())
        elif wake.saga_id not in touched:
            self._put(wake.saga_id, partition, wake.at())


def deadline_of(state: SagaState) -> float | None:
    """``state.wake_at()`` in epoch seconds."""
    wake = state.wake_at()
    return None if wake is None else wake.timestamp()
