"""The idempotent batch apply every listener shares.

A listener (:class:`~listeners._declarative.Listener`) says which saga types it handles,
loads the rows of many sagas at once, changes a row per event (pure, no I/O), and
writes the changed rows back in bulk. :func:`apply_batch` does the rest: it filters a
batch, orders each saga's events by ``seq``, drops duplicates and anything not newer
than the ``seq`` stored *for that saga* (never compared across sagas that share a
business key), and calls ``load`` and ``write`` once per batch, whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from listeners._declarative import Listener
from listeners._events import Event

__all__ = ["BatchResult", "apply_batch", "fold", "plan_batch"]


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
    listener: Listener[Any], events: Iterable[Event]
) -> tuple[dict[str, list[Event]], int, int]:
    """Group the handled events of a batch by saga, each saga's events by rising ``seq``.

    Returns:
        ``(events by saga id, ignored count, in-batch duplicate count)``.
    """
    by_saga: dict[str, dict[int, Event]] = {}
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
    listener: Listener[Any],
    stored: Mapping[str, Any],
    planned: Mapping[str, Sequence[Event]],
) -> tuple[list[Any], list[Event], int]:
    """Apply planned events newer than the stored ``seq``; pure, no I/O.

    Returns:
        ``(changed states, applied events, stale count)``.
    """
    listener.check_hooks()  # hooks on the model may have been added since the last batch
    changed: list[Any] = []
    applied: list[Event] = []
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


def apply_batch(session: Session, listener: Listener[Any], events: Sequence[Event]) -> BatchResult:
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
