"""Garbage-collector pauses, as ``gc.callbacks`` sees them, and the policies to compare.

Shared by ``bench.gcpauses``, ``bench.hotpath`` and ``bench.listener_hotpath``.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator import CoordinatorSettings
from coordinator._gc import YOUNG_THRESHOLD, settle_heap


@dataclass
class Pauses:
    """Every collection seen by ``gc.callbacks`` while recording."""

    by_gen: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 2: []})
    #: unreachable objects each generation's collections freed (cyclic garbage)
    collected: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0, 2: 0})
    _start: float = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.by_gen[info["generation"]].append(time.perf_counter() - self._start)
            self.collected[info["generation"]] += info["collected"]

    def __enter__(self) -> Pauses:
        gc.callbacks.append(self.callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self.callback)

    def lines(self, sagas: int, wall: float) -> list[str]:
        """Per generation: collections per 1,000 sagas, pauses, freed objects; share of wall."""
        out = []
        for gen, ps in self.by_gen.items():
            out.append(
                f"  gen{gen}: {len(ps) * 1000 / sagas:7.2f} per 1k sagas, pause ms "
                f"p50 {_pct(ps, 0.5) * 1000:6.2f} p99 {_pct(ps, 0.99) * 1000:6.2f} "
                f"max {max(ps, default=0) * 1000:7.2f}, mean "
                f"{(statistics.fmean(ps) if ps else 0) * 1000:6.2f}; "
                f"{self.collected[gen] / sagas:.2f} freed per saga"
            )
        in_gc = sum(sum(ps) for ps in self.by_gen.values())
        out.append(f"  in GC: {in_gc * 100 / wall:.1f}% of wall")
        return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def apply_policy(text: str) -> None:
    """Apply ``off`` (CPython's defaults), ``tuned`` (the workers' default) or a variant.

    A variant is ``young=N`` (the shipped policy with that young threshold) with, after a
    comma, ``freeze=0`` (thresholds only) and/or ``middle=N``/``old=N``.
    """
    if text == "off":
        return
    fields = {} if text == "tuned" else dict(part.split("=", 1) for part in text.split(","))
    young = int(fields.get("young", YOUNG_THRESHOLD))
    if fields.get("freeze", "1") == "1":
        settle_heap(CoordinatorSettings(gc_young_threshold=young))
    middle, old = int(fields.get("middle", 10)), int(fields.get("old", 10))
    gc.set_threshold(young, middle, old)


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
