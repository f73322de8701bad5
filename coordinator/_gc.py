"""The garbage collector of a long-running worker: start-up objects frozen.

Young objects are collected less often, too. Measured in the simple bench (2 cores,
loaded): without this, the coordinator and the listener workers each paused 120-270 ms
in a full (generation 2) collection every few seconds, and 10-30 ms in generation-1
ones, walking the hundreds of thousands of objects Faust, aiokafka, pydantic and
SQLAlchemy allocate at start-up. Those pauses were the latency tail: every saga in
flight waited them out. ``gc.freeze()`` moves everything alive once the worker is ready
into a generation no collection walks (they are never freed anyway), so a collection
only walks what was allocated since; a larger first threshold makes young collections
rarer (most objects of a batch are gone before the next one).

``python -m bench.gcpauses`` (the coordinator's hot path in a built app, no broker)
measures it: CPython's defaults pause 50-120 ms in a full collection every ~4,000 simple
sagas (190-230 ms with 8,500 decoded in-flight sagas cached), 3-4 % of wall time; tuned,
one young collection of 2-3 ms per ~8,000 sagas and no full one in 32,000. The
coordinator's hot path makes no cyclic garbage (every object dies by its refcount), so
collecting rarely keeps memory flat. The listener (``bench.listener_hotpath
--gc-pauses``): 85-195 ms full collections, 13-19 % of wall, against young ones of 3-18
ms and 3-5 % tuned (its batches of 500 records are alive when a collection comes).

Both workers apply it once, when their first partition assignment completes (the app,
its definitions and its consumer exist by then), through ``settle_on_first_assignment``;
``gc_policy = "off"`` (env ``SAGA_GC_POLICY`` / ``LISTENER_GC_POLICY``) leaves CPython's
collector as it is. Either way, from then on a collection that holds the worker longer
than ``gc_slow_pause`` is logged as a warning (a tail the bench's latency would show).
"""

from __future__ import annotations

import gc
import logging
import time
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings

log = logging.getLogger(__name__)

#: allocations (minus deallocations) between young-generation collections (CPython: 700)
YOUNG_THRESHOLD = 10_000


class GcOptions(BaseSettings):
    """The collector settings both workers' settings objects carry (their env prefix)."""

    #: ``tuned``: freeze the start-up heap once ready, young threshold below; ``off``:
    #: CPython's defaults (nothing frozen, thresholds untouched)
    gc_policy: Literal["tuned", "off"] = "tuned"
    #: allocations between young-generation collections once tuned (CPython's: 700)
    gc_young_threshold: int = Field(default=YOUNG_THRESHOLD, ge=1)
    #: a collection that holds the worker longer than this is logged (0: never)
    gc_slow_pause: timedelta = Field(default=timedelta(milliseconds=50), ge=timedelta(0))


def settle_heap(options: GcOptions) -> None:
    """Collect once, freeze what survives, and collect the young generation less often.

    Call it once the worker is ready (its app built, its first assignment made): cyclic
    garbage among what is frozen is never collected, so what is alive then should live as
    long as the worker does. Does nothing when ``options.gc_policy`` is ``off``.
    """
    if options.gc_policy == "off":
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(options.gc_young_threshold, middle, old)
    log.info(
        "collector tuned: %d objects frozen, young threshold %d (gc_policy=off to keep "
        "CPython's defaults)",
        gc.get_freeze_count(),
        options.gc_young_threshold,
    )


class SlowPauses:
    """A ``gc.callbacks`` entry logging every collection longer than ``slow`` seconds."""

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        if took >= self.slow:
            log.warning(
                "a garbage collection (generation %d) held the worker %.0f ms (%d objects "
                "freed): %s",
                info["generation"],
                took * 1000,
                info["collected"],
                "the start-up heap is walked each time (gc_policy=tuned freezes it)"
                if gc.get_freeze_count() == 0
                else "what lives since start-up (in-flight sagas, caches) is walked",
            )


def settle_on_first_assignment(app: Any, options: GcOptions) -> None:
    """Settle the heap (``settle_heap``) when ``app``'s first rebalance completes.

    From then on, collections longer than ``options.gc_slow_pause`` are logged.
    """
    settled = False

    def settle(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        nonlocal settled
        if not settled:
            settled = True
            settle_heap(options)
            watching = any(isinstance(c, SlowPauses) for c in gc.callbacks)
            if options.gc_slow_pause > timedelta(0) and not watching:  # one per process
                gc.callbacks.append(SlowPauses(options.gc_slow_pause.total_seconds()))

    app.on_rebalance_complete.connect(settle)
