"""How long finished sagas are kept: bounded state without losing "never run twice".

A finished saga (completed, compensated, cancelled) keeps its full record for ``keep``;
its next timer then shrinks it to a compact *marker* (id, type, status, ``seq``), which
still makes a second start of that id a no-op, for ``dedupe`` more; the timer after that
deletes it (a tombstone on the compacted changelog). Sagas resting unfinished
(``compensation_failed``, ``parked``) are never expired: they wait for an operator.

Expiry rides the deadline mechanism (``SagaState.wake_at``): no scans. The worker owning
the partition applies it itself, in batches, with no timer record crossing Kafka
(``coordinator._expiry``); :func:`expire` is the pure step it applies. A step applies only
to a record still due, so it is idempotent and crash-safe. With ``dedupe`` zero there is no
marker: the full record is deleted at once. Business state is unaffected: the lifecycle
events carried everything listeners need.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from coordinator._state import TERMINAL, SagaState


@dataclass(frozen=True, kw_only=True)
class Retention:
    """Retention of finished sagas.

    Attributes:
        keep: how long a finished saga keeps its full record (``status`` shows its steps);
            None keeps it forever (no expiry at all).
        dedupe: how long the compact marker then keeps "starting this id does nothing".
            After it, the id is forgotten and a new start with it runs a new saga.
    """

    keep: timedelta | None = timedelta(hours=1)
    dedupe: timedelta = timedelta(days=7)


#: keep every saga forever (the pure machine's default, for tests and the test kit)
FOREVER = Retention(keep=None)


def is_due(state: SagaState, now: datetime) -> bool:
    """Whether a finished saga's record (or marker) has reached its expiry."""
    return state.status in TERMINAL and state.expires_at is not None and state.expires_at <= now


def expire(state: SagaState, *, now: datetime, retention: Retention) -> SagaState | None:
    """The next stage of a due record: a full record's marker; None (deleted) for a marker.

    The marker keeps the record's ``last_message``, so a redelivered inbox record it
    already applied is still recognised as old. No marker when ``retention.dedupe`` is
    zero: nothing would read it.
    """
    if state.compact or retention.dedupe <= timedelta(0):
        return None
    marker = state.marker(now=now, expires_at=now + retention.dedupe)
    marker.last_message = state.last_message
    return marker
