"""How long finished sagas are kept: bounded state without losing "never run twice".

A finished saga (completed, compensated, cancelled) keeps its full record for ``keep``;
its next timer then shrinks it to a compact *marker* (id, type, status, ``seq``), which
still makes a second start of that id a no-op, for ``dedupe`` more; the timer after that
deletes it (a tombstone on the compacted changelog). Sagas resting unfinished
(``compensation_failed``, ``parked``) are never expired: they wait for an operator.

Expiry rides the deadline mechanism (``SagaState.wake_at``): no scans. Each step is an
ordinary transition, so it is idempotent and crash-safe like any other. Business state is
unaffected: the lifecycle events carried everything listeners need.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


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
