"""CPU per saga of the coordinator's hot path, in-process: ``python -m bench.hotpath``.

Drives sagas of the bench scenarios (``bench.ours_sagas``, in-process inline steps)
through ``InboxProcessor.handle`` in batches of a given size, with a producer that
acknowledges at once and the memory store over a plain dict: no broker, no Faust. What it
measures is the coordinator's own work per saga (decode, state machine, inline steps,
records, lifecycle records, deadline index), in CPU milliseconds (``time.process_time``),
not what the broker, the listener or the driver spend.

Every saga's inbox record is a start built as ``SagaClient.start`` builds it; a simple
or complex saga then runs its whole chain of inline steps inside that one record. The
sagas are spread over ``--partitions`` like the bench's; a batch holds consecutive
records of one partition, as a lane hands them over.

Options: ``--sagas``, ``--batches 1,8,64``, ``--scenarios simple,complex``, ``--repeat``
(the best of the repeats is printed: the least disturbed by other processes),
``--profile SCENARIO:BATCH`` (cProfile of that case, top functions by own time),
``--gc-policy`` (the collector policy applied after the warm-up, as the worker applies
it once ready: ``tuned`` by default, ``off`` for CPython's; see ``bench.gcpauses``).

To compare two checkouts in one run, run this file from each (``cd other && python -m
bench.hotpath`` with the same interpreter), alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from bench import scenarios
from bench.gcstats import apply_policy
from bench.ours_sagas import ALL_SAGAS
from coordinator import CoordinatorSettings, SagaRegistry
from coordinator._deadlines import DeadlineIndex
from coordinator._executor import StepExecutor
from coordinator._inbox import InboxProcessor
from coordinator._messages import StartSaga
from coordinator._routing import partition_for
from coordinator._tablestore import MemoryTableStore

PARTITIONS = 8


@dataclass
class _Message:
    key: bytes
    value: bytes
    partition: int
    offset: int
    topic: str = "hot.inbox"


@dataclass
class _Event:
    message: _Message


@dataclass
class _Meta:
    offset: int


class _Producer:
    """Acknowledges every batch at once; counts what it was given."""

    def __init__(self) -> None:
        self.records = 0
        self.offsets: dict[tuple[str, int], int] = {}

    async def partition_of(self, topic: str, key: bytes | None) -> int:
        return 0 if key is None else partition_for(key.decode(), PARTITIONS)

    async def send_batch(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> Any:
        self.records += len(records)
        first = self.offsets.get((topic, partition), 0)
        self.offsets[topic, partition] = first + len(records)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(_Meta(first))
        return fut


def _never() -> bool:
    return False


def _processor(registry: SagaRegistry) -> tuple[InboxProcessor, _Producer]:
    settings = CoordinatorSettings(topic_prefix="hot", partitions=PARTITIONS, web_enabled=False)
    producer = _Producer()
    inline = {n for n, svc in registry.services().items() if svc.inline}
    proc = InboxProcessor(
        settings,
        registry,
        producer,
        MemoryTableStore(SimpleNamespace(data={}), PARTITIONS),  # the default store
        DeadlineIndex(),
        StepExecutor(registry),
        inline,
    )
    proc.changelog = "hot-saga-state-changelog"
    return proc, producer


def _batches(scenario: str, sagas: int, batch: int, run: int) -> list[tuple[int, list[_Event]]]:
    """The inbox batches of ``sagas`` starts, per partition in offset order, interleaved."""
    spec = scenarios.SCENARIOS[scenario]
    rng = random.Random(run)
    per_partition: dict[int, list[_Event]] = {p: [] for p in range(PARTITIONS)}
    for n in range(sagas):
        saga_id = f"{scenario}-{run}-{n}"
        saga_input = scenarios.make_input(spec, rng, n)
        value = StartSaga(
            saga_id=saga_id,
            saga_type=f"bench_{scenario}",
            input=saga_input.to_json(),
            business_key=saga_id,
        ).to_json()
        p = partition_for(saga_id, PARTITIONS)
        events = per_partition[p]
        events.append(_Event(_Message(saga_id.encode(), value, p, len(events))))
    chunks = [
        [(p, events[i : i + batch]) for i in range(0, len(events), batch)]
        for p, events in per_partition.items()
    ]
    out: list[tuple[int, list[_Event]]] = []
    for i in range(max(len(c) for c in chunks)):
        out.extend(c[i] for c in chunks if i < len(c))
    return out


async def _drive(proc: InboxProcessor, batches: list[tuple[int, list[_Event]]]) -> float:
    started = time.process_time()
    for partition, events in batches:
        await proc.handle(partition, events, _never)
    return time.process_time() - started


def measure(
    registry: SagaRegistry, scenario: str, sagas: int, batch: int, run: int
) -> tuple[float, float]:
    """CPU ms per saga of one pass, and records sent per saga."""
    proc, producer = _processor(registry)
    batches = _batches(scenario, sagas, batch, run)
    gc.collect()
    seconds = asyncio.run(_drive(proc, batches))
    return seconds * 1000 / sagas, producer.records / sagas


def profile(registry: SagaRegistry, scenario: str, sagas: int, batch: int, top: int) -> None:
    """cProfile one pass; print the top functions by own time, then by cumulative time."""
    proc, _ = _processor(registry)
    batches = _batches(scenario, sagas, batch, 0)
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(_drive(proc, batches))
    prof.disable()
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--scenarios", default="simple,complex")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", metavar="SCENARIO:BATCH")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--gc-policy", default="tuned", help="off, tuned (the workers'), young=N,... (gcpauses)"
    )
    args = parser.parse_args(argv)
    registry = SagaRegistry(ALL_SAGAS)
    if args.profile:
        scenario, _, batch = args.profile.partition(":")
        profile(registry, scenario, args.sagas, int(batch or 8), args.top)
        return 0
    measure(registry, "simple", 200, 8, 99)  # warm up imports and caches
    apply_policy(args.gc_policy)  # as the worker does once ready (coordinator._gc)
    print(f"{'scenario':<9} {'batch':>5} {'CPU ms/saga':>11} {'records/saga':>12}")
    for scenario in args.scenarios.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            results = [
                measure(registry, scenario, args.sagas, batch, run) for run in range(args.repeat)
            ]
            best = min(ms for ms, _ in results)
            print(f"{scenario:<9} {batch:>5} {best:>11.3f} {results[0][1]:>12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
