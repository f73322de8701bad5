"""Garbage-collector pauses of the coordinator's hot path: ``python -m bench.gcpauses``.

Builds a real coordinator app (Faust app, topics, table, the bench's definitions: the
start-up heap a worker carries), applies a GC policy as the worker does once ready, then
drives ``--sagas`` sagas through its ``InboxProcessor`` (a producer that acknowledges at
once, the app's own memory table; no broker) while ``gc.callbacks`` records every
collection: its generation and how long the program stood still.

The sagas stay in the table (retention one hour) and in the deadline index, as the ones
of a 40 s bench at ~800 sagas/s would (``--sagas 32000``); ``--live N`` also keeps N
decoded in-flight states in the processor's cache (``_live``), as sagas waiting on HTTP
steps are kept.

Policies (``--policy``): ``off`` (CPython's defaults), ``tuned`` (the workers' default,
``coordinator._gc``), or a variant such as ``young=2000`` or ``young=10000,freeze=0``.

Prints, per generation: collections per 1,000 sagas, pause p50 / p99 / max, and the
share of wall time in collections; then CPU ms per saga, tracked objects and RSS
(``--drop-finished --rounds 40``: RSS must stay flat once sagas are dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import time

from bench import scenarios
from bench.gcstats import Pauses, apply_policy, rss_mb
from bench.hotpath import PARTITIONS, _Event, _Message, _never, _Producer
from bench.ours_sagas import ALL_SAGAS
from coordinator import CoordinatorSettings, SagaRegistry
from coordinator._app import Coordinator
from coordinator._messages import StartSaga
from coordinator._routing import partition_for
from coordinator._state import SagaState


def _starts(scenario: str, sagas: int, run: str) -> list[tuple[int, bytes, bytes]]:
    """``(partition, key, value)`` of each start: bytes, which the collector never walks."""
    spec = scenarios.SCENARIOS[scenario]
    rng = random.Random(run)
    out = []
    for n in range(sagas):
        saga_id = f"{scenario}-{run}-{n}"
        value = StartSaga(
            saga_id=saga_id,
            saga_type=f"bench_{scenario}",
            input=scenarios.make_input(spec, rng, n).to_json(),
            business_key=saga_id,
        ).to_json()
        out.append((partition_for(saga_id, PARTITIONS), saga_id.encode(), value))
    return out


async def _drive(coord: Coordinator, starts: list[tuple[int, bytes, bytes]], batch: int) -> None:
    """Batches of ``batch`` consecutive starts of one partition, in arrival order.

    The events are made here, as the consumer makes its records while the worker runs.
    """
    pending: dict[int, list[_Event]] = {}
    offsets: dict[int, int] = {}
    for p, key, value in starts:
        offsets[p] = offset = offsets.get(p, -1) + 1
        events = pending.setdefault(p, [])
        events.append(_Event(_Message(key, value, p, offset)))
        if len(events) >= batch:
            await coord.processor.handle(p, events, _never)
            pending[p] = []
    for p, events in pending.items():
        if events:
            await coord.processor.handle(p, events, _never)


def _coordinator() -> Coordinator:
    settings = CoordinatorSettings(
        topic_prefix="gcbench", partitions=PARTITIONS, web_enabled=False, store="memory://"
    )
    coord = Coordinator(settings, SagaRegistry(ALL_SAGAS))
    coord.processor.producer = _Producer()  # acknowledges at once: no broker
    coord.processor.tasks = None  # the bench's scenarios here run inline
    return coord


def _keep_live(coord: Coordinator, n: int) -> list[SagaState]:
    """Decode ``n`` stored records into the in-flight cache, as waiting sagas are kept."""
    kept = []
    for _, raw in coord.store.items(range(PARTITIONS)):
        if len(kept) >= n:
            break
        state = SagaState.model_validate_json(raw)
        coord.processor._live[f"live-{state.saga_id}"] = (raw, state)
        kept.append(state)
    return kept


def run(args: argparse.Namespace) -> None:
    coord = _coordinator()
    asyncio.run(_drive(coord, _starts(args.scenario, 500, "warm"), args.batch))
    step = max(1, args.sagas // args.rounds)
    rounds = [_starts(args.scenario, step, f"r{r}") for r in range(args.rounds)]
    apply_policy(args.policy)  # as the worker does once ready
    print(
        f"policy {args.policy}: threshold {gc.get_threshold()}, frozen {gc.get_freeze_count()}, "
        f"tracked {len(gc.get_objects())}",
        flush=True,
    )
    for r, starts in enumerate(rounds):
        if args.live and r == 1:
            _keep_live(coord, args.live)
        with Pauses() as pauses:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            asyncio.run(_drive(coord, starts, args.batch))
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        held = len(coord.table.data)
        if args.drop_finished:  # as retention would, sooner: memory must then stay flat
            coord.table.data.clear()
            getattr(coord.table.data, "_key_partition", {}).clear()
            coord.deadlines.drop_partitions(())
        print(
            f"round {r}: {step} sagas ({held} held, {len(coord.processor._live)} live), "
            f"CPU {cpu * 1000 / step:.3f} ms/saga, wall {wall:.2f} s, "
            f"tracked {len(gc.get_objects())}, RSS {rss_mb():.0f} MB",
            flush=True,
        )
        print("\n".join(pauses.lines(step, wall)), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gcpauses", description=__doc__)
    p.add_argument("--policy", default="tuned", help="off, tuned or young=N,... (variant)")
    p.add_argument("--scenario", default="simple")
    p.add_argument("--sagas", type=int, default=32000, help="sagas over all rounds")
    p.add_argument("--rounds", type=int, default=4, help="figures per round")
    p.add_argument("--batch", type=int, default=64, help="inbox records per batch")
    p.add_argument("--live", type=int, default=0, help="decoded in-flight states kept")
    p.add_argument(
        "--drop-finished", action="store_true", help="empty the table after each round (RSS)"
    )
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
