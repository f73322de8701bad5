"""The listener contract and the idempotent batch apply every listener shares.

A listener turns lifecycle events into business state in its own database. It says
which saga types and event types it handles, how to load the state of many sagas at
once, how one event changes that state (a pure function), and how to write the changed
states back in bulk. :func:`apply_batch` does the rest: it filters a batch, orders each
saga's events by ``seq``, drops duplicates and anything not newer than the stored
``seq``, and calls ``load`` and ``write`` once per batch, whatever its size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from coordinator.events import LifecycleEvent

__all__ = ["BatchResult", "Listener", "apply_batch", "plan_batch"]

StateT = TypeVar("StateT")


class Listener(ABC, Generic[StateT]):
    """Writes business state of one kind from lifecycle events.

    Subclasses set :attr:`name`, :attr:`saga_types` and optionally :attr:`event_types`,
    and implement the four methods below. ``apply`` must be pure (no I/O, no clock):
    replaying the same events must give the same state.

    Attributes:
        name: Short, unique name, used in logs and dead letters.
        saga_types: Saga types whose events this listener applies.
        event_types: Event types it applies; ``None`` means all of them. Skipped types
            leave gaps in the stored ``seq``, which is fine: only "newer than stored"
            matters, never "exactly one more".
    """

    name: str
    saga_types: frozenset[str]
    event_types: frozenset[str] | None = None

    def handles(self, event: LifecycleEvent) -> bool:
        """Whether this listener applies ``event``."""
        if event.saga_type not in self.saga_types:
            return False
        return self.event_types is None or event.type in self.event_types

    @abstractmethod
    def load(self, session: Session, saga_ids: Collection[str]) -> dict[str, StateT]:
        """Load the stored state of ``saga_ids`` (one query), keyed by saga id."""

    @abstractmethod
    def last_seq(self, state: StateT) -> int:
        """The ``seq`` of the newest event already applied to ``state``."""

    @abstractmethod
    def apply(self, state: StateT | None, event: LifecycleEvent) -> StateT:
        """Return the state after ``event`` (``state`` is ``None`` for a new saga)."""

    @abstractmethod
    def write(
        self,
        session: Session,
        changed: Sequence[StateT],
        applied: Sequence[LifecycleEvent],
    ) -> None:
        """Write changed states and the events that changed them (bulk statements)."""

    @abstractmethod
    def reset(self, session: Session) -> None:
        """Delete everything this listener wrote (before a replay from the start)."""


@dataclass(frozen=True)
class BatchResult:
    """What one batch did to one listener's database.

    Attributes:
        applied: Events that changed state.
        stale: Events skipped because their ``seq`` was not newer (duplicates, replays).
        ignored: Events of saga or event types the listener does not handle.
    """

    applied: int = 0
    stale: int = 0
    ignored: int = 0

    def __add__(self, other: BatchResult) -> BatchResult:
        return BatchResult(
            self.applied + other.applied,
            self.stale + other.stale,
            self.ignored + other.ignored,
        )


def plan_batch(
    listener: Listener[StateT], events: Iterable[LifecycleEvent]
) -> tuple[dict[str, list[LifecycleEvent]], int, int]:
    """Group the handled events of a batch by saga, each saga's events by rising ``seq``.

    Returns:
        ``(events by saga id, ignored count, in-batch duplicate count)``.
    """
    by_saga: dict[str, dict[int, LifecycleEvent]] = {}
    ignored = duplicates = 0
    for event in events:
        if not listener.handles(event):
            ignored += 1
            continue
        seen = by_saga.setdefault(event.saga_id, {})
        if event.seq in seen:
            duplicates += 1
            continue
        seen[event.seq] = event
    ordered = {saga: [seen[seq] for seq in sorted(seen)] for saga, seen in by_saga.items()}
    return ordered, ignored, duplicates


def fold(
    listener: Listener[StateT],
    stored: Mapping[str, StateT],
    planned: Mapping[str, Sequence[LifecycleEvent]],
) -> tuple[list[StateT], list[LifecycleEvent], int]:
    """Apply planned events newer than the stored ``seq``; pure, no I/O.

    Returns:
        ``(changed states, applied events, stale count)``.
    """
    changed: list[StateT] = []
    applied: list[LifecycleEvent] = []
    stale = 0
    for saga_id, saga_events in planned.items():
        state = stored.get(saga_id)
        last = listener.last_seq(state) if state is not None else 0
        moved = False
        for event in saga_events:
            if event.seq <= last:
                stale += 1
                continue
            state = listener.apply(state, event)
            last = event.seq
            applied.append(event)
            moved = True
        if moved and state is not None:
            changed.append(state)
    return changed, applied, stale


def apply_batch(
    session: Session, listener: Listener[StateT], events: Sequence[LifecycleEvent]
) -> BatchResult:
    """Apply a batch to ``listener`` inside the caller's transaction.

    Issues at most one ``load`` and one ``write`` whatever the batch size, and none at
    all when no event of the batch is handled.
    """
    planned, ignored, duplicates = plan_batch(listener, events)
    if not planned:
        return BatchResult(ignored=ignored, stale=duplicates)
    stored = listener.load(session, list(planned))
    changed, applied, stale = fold(listener, stored, planned)
    if changed:
        listener.write(session, changed, applied)
    return BatchResult(applied=len(applied), stale=stale + duplicates, ignored=ignored)
