"""The deadline index: when each in-flight saga of this worker's partitions needs a timer.

The table holds every saga's durable deadline; this is the in-memory index over it that
the timer reads. Rules that keep an entry from being lost:

* ``set`` is called after every transition, changed or not, so a saga whose timer did
  not move it (an early timer, say) is indexed again;
* ``due`` hands out an entry only if the index still holds that same deadline for that
  saga, and removes it; the caller puts it back with ``restore`` if its send fails;
* on a rebalance the revoked partitions are dropped and the assigned ones rebuilt from
  the table.

Finished sagas wait for their expiry, not for a timer: ``set_state`` puts them in
``expiry`` (``coordinator.expiry.ExpiryQueue``), applied by the owning worker itself.

A heap ordered by deadline makes a tick cost O(due entries); entries replaced or removed
stay in the heap until they surface (lazy deletion), and the heap is rebuilt when stale
entries outnumber live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from coordinator.expiry import ExpiryQueue
from coordinator.state import TERMINAL, SagaState


class DeadlineIndex:
    """Per saga of this worker's partitions: when it needs a ``timer`` record."""

    def __init__(self) -> None:
        self._at: dict[str, tuple[float, int]] = {}  # saga_id -> (deadline, partition)
        self._heap: list[tuple[float, str]] = []
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

    def rebuild(self, partitions: Iterable[int], records: Iterable[tuple[int, bytes]]) -> None:
        """Drop partitions not held any more; index ``records`` (partition, saga record)."""
        held = set(partitions)
        self.drop_partitions(held)
        self.expiry.clear(held)  # the table is the truth: indexed again below
        for partition, raw in records:
            if partition in held:
                self.set_state(SagaState.model_validate_json(raw), partition)


def deadline_of(state: SagaState) -> float | None:
    """``state.wake_at()`` in epoch seconds."""
    wake = state.wake_at()
    return None if wake is None else wake.timestamp()
