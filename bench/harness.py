"""Load driver and measurement primitives common to every engine.

An engine is anything that implements :class:`Engine`. The driver runs, per scenario:

1. **closed loop** — keep ``concurrency`` sagas in flight (a new one starts as soon as one
   reaches a terminal state) for ``warmup + duration`` seconds; only terminals inside the
   measured window count. Gives saturation throughput (terminal sagas/s), CPU seconds
   per saga and SQL statements/commits per saga.
2. **open loop** — Poisson arrivals at ``open_rate_factor`` (default 0.5) x the measured
   throughput; latency is start -> terminal, measured from each saga's *scheduled* start
   (so a lagging driver or a slow ``start`` counts against the engine: no coordinated
   omission). Sagas scheduled during warm-up are excluded from the percentiles.

Every terminal outcome is checked against the saga rule (see ``scenarios.expected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bench import sysinfo
from bench.progress import Progress
from bench.scenarios import Outcome, SagaInput, Scenario, is_valid, make_input

#: PostgreSQL backends flush their statistics at most once a second.
PG_STATS_SETTLE = 1.2


@dataclass(frozen=True)
class SqlCounts:
    """Cumulative SQL statements and commits an engine has sent (counted at the driver)."""

    statements: int = 0
    commits: int = 0
    #: Optional cross-check from the server side (e.g. pg_stat_database.xact_commit of the
    #: engine's own database); PostgreSQL flushes these with up to ~1 s delay.
    server_commits: int | None = None

    def __sub__(self, other: SqlCounts) -> SqlCounts:
        server = None
        if self.server_commits is not None and other.server_commits is not None:
            server = self.server_commits - other.server_commits
        return SqlCounts(self.statements - other.statements, self.commits - other.commits, server)


@dataclass(frozen=True)
class EngineContext:
    """What the harness gives an engine at setup."""

    scenarios: Mapping[str, Scenario]
    on_terminal: Callable[[Outcome], None]
    """Call once per saga when it reaches a terminal state (from the driver's event loop)."""
    http_base_url: str | None
    postgres_admin_url: str
    """postgresql://user:pw@host:port/postgres — engines create and drop their own DBs."""
    kafka_bootstrap: str
    concurrency: int
    quick: bool
    logs: Path | None = None
    """Where an engine keeps its processes' logs after teardown (None: it need not)."""


@runtime_checkable
class Engine(Protocol):
    """The interface an engine adapter implements (see ``bench/dbos_engine.py``)."""

    name: str

    async def setup(self, ctx: EngineContext) -> None: ...

    async def teardown(self) -> None: ...

    async def start(self, saga_id: str, saga_input: SagaInput) -> None:
        """Start one saga; return as soon as the start is accepted (not when it ends)."""
        ...

    def pids(self) -> list[int]:
        """Processes whose CPU and peak RSS are charged to the engine."""
        ...

    async def sql_counts(self) -> SqlCounts:
        """Cumulative SQL statements/commits issued by the engine so far."""
        ...

    async def kafka_messages(self) -> int | None:
        """Cumulative Kafka messages produced by the engine so far, or None."""
        ...

    async def fsyncs(self) -> int | None:
        """Cumulative fsyncs of the engine's durable store so far, or None (see
        ``bench.durability``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Configuration worth reporting (processes, pool sizes, ...)."""
        ...


@dataclass(frozen=True)
class PhaseTimes:
    warmup: float
    duration: float
    drain_timeout: float = 60.0


def percentiles(values: Sequence[float]) -> dict[str, float | int]:
    """Nearest-rank p50/p95/p99 plus mean and max, in milliseconds (values in seconds)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def pct(p: float) -> float:
        return round(ordered[min(n - 1, max(0, int(p / 100 * n + 0.5) - 1))] * 1000, 3)

    return {
        "n": n,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(sum(ordered) / n * 1000, 3),
    }


def by_second(samples: Sequence[tuple[float, float]], t0: float) -> list[dict[str, Any]]:
    """Latency percentiles of the sagas scheduled in each second after ``t0`` (the tail)."""
    seconds: dict[int, list[float]] = {}
    for scheduled, latency in samples:
        seconds.setdefault(int(scheduled - t0), []).append(latency)
    return [
        {"second": s, **{k: v for k, v in percentiles(lat).items() if k != "mean_ms"}}
        for s, lat in sorted(seconds.items())
    ]


@dataclass
class _Pending:
    saga_input: SagaInput
    scheduled: float
    measured: bool
    on_done: Callable[[], None] | None = None


@dataclass
class _Phase:
    terminals: int = 0
    latencies: list[float] = field(default_factory=list)
    #: (scheduled start, latency) of each measured saga: the tail second by second
    samples: list[tuple[float, float]] = field(default_factory=list)
    invalid: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Snapshot:
    t: float
    terminals: int
    cpu: sysinfo.CpuSnapshot
    sql: SqlCounts
    kafka: int | None
    fsyncs: int | None
    #: CPU of each of the engine's processes by name (engines that name them)
    parts: sysinfo.CpuSnapshot | None = None


def _by_process(a: _Snapshot, b: _Snapshot, div: int) -> dict[str, float] | None:
    if a.parts is None or b.parts is None:
        return None
    used = a.parts.delta(b.parts)
    return {k: round(v / div * 1000, 4) for k, v in used.items() if k in b.parts.groups}


class Driver:
    """Drives one engine through the phases of one scenario after another."""

    def __init__(
        self,
        engine: Engine,
        extra_pid_groups: Mapping[str, Callable[[], list[int]]],
        seed: int = 42,
        progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.progress = progress or Progress(0.0)
        #: "engine/scenario", shown in progress lines.
        self.label = engine.name
        self._extra = extra_pid_groups
        self._rng = random.Random(seed)
        self._pending: dict[str, _Pending] = {}
        self._phase = _Phase()
        self._unknown = 0
        self._drained = asyncio.Event()
        self._order_no = 0

    # -- terminal outcomes -------------------------------------------------------------
    def on_terminal(self, outcome: Outcome) -> None:
        now = time.monotonic()
        pending = self._pending.pop(outcome.saga_id, None)
        if pending is None:
            self._unknown += 1
            return
        phase = self._phase
        phase.terminals += 1
        if pending.measured:
            phase.latencies.append(now - pending.scheduled)
            phase.samples.append((pending.scheduled, now - pending.scheduled))
        if outcome.status not in ("completed", "compensated"):
            phase.errors += 1
        if not is_valid(pending.saga_input, outcome):
            phase.invalid += 1
            if len(phase.examples) < 5:
                phase.examples.append(f"{outcome} for {pending.saga_input}")
        if pending.on_done is not None:
            pending.on_done()
        if not self._pending:
            self._drained.set()

    async def _cpu_by_second(self, start: float, end: float) -> list[dict[str, Any]]:
        """Cores each process group used in each second of [start, end): what the machine
        did in the seconds of the tail (``latency_by_second``), e.g. a listener batch, a
        broker's log roll, PostgreSQL's autovacuum, or other work on the machine.

        The groups' pids are looked up once (a /proc scan costs the driver tenths of a
        second); each sample then reads only their /proc/PID/stat and /proc/stat.
        """
        groups = self._groups()
        named = getattr(self.engine, "process_pids", None)
        if named is not None:
            groups.pop("engine", None)
            groups.update(named())
        seconds: list[dict[str, Any]] = []
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        last = sysinfo.CpuSnapshot.take(groups)
        t = start
        while t + 1.0 <= end:
            t += 1.0
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            now = sysinfo.CpuSnapshot.take(groups)
            cores = {k: round(v, 3) for k, v in last.delta(now).items()}
            seconds.append({"second": len(seconds), "cores": cores})
            last = now
        return seconds

    # -- helpers -----------------------------------------------------------------------
    def _groups(self) -> dict[str, list[int]]:
        groups = {"engine": self.engine.pids(), "driver": [os.getpid()]}
        groups.update({name: fn() for name, fn in self._extra.items()})
        return groups

    async def _snapshot(self) -> _Snapshot:
        sql = await self.engine.sql_counts()
        kafka = await self.engine.kafka_messages()
        fsyncs = await self.engine.fsyncs()
        cpu = sysinfo.CpuSnapshot.take(self._groups())
        named = getattr(self.engine, "process_pids", None)
        parts = sysinfo.CpuSnapshot.take(named()) if named is not None else None
        return _Snapshot(time.monotonic(), self._phase.terminals, cpu, sql, kafka, fsyncs, parts)

    async def _start(
        self, scenario: Scenario, scheduled: float, measured: bool, on_done: Callable[[], None]
    ) -> None:
        self._order_no += 1
        saga_id = uuid.uuid4().hex
        saga_input = make_input(scenario, self._rng, self._order_no)
        self._drained.clear()
        self._pending[saga_id] = _Pending(saga_input, scheduled, measured, on_done)
        await self.engine.start(saga_id, saga_input)

    async def _drain(self, timeout: float) -> int:
        """Wait until no saga is in flight; returns how many were still pending."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        lost = len(self._pending)
        self._pending.clear()
        return lost

    @staticmethod
    def _per_saga(a: _Snapshot, b: _Snapshot, n: int) -> dict[str, Any]:
        cpu = a.cpu.delta(b.cpu)
        sql = b.sql - a.sql
        kafka = None if a.kafka is None or b.kafka is None else b.kafka - a.kafka
        fsyncs = None if a.fsyncs is None or b.fsyncs is None else b.fsyncs - a.fsyncs
        div = max(n, 1)
        return {
            "sagas": n,
            "seconds": round(b.t - a.t, 3),
            "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
            "cpu_ms_per_saga": {k: round(v / div * 1000, 4) for k, v in cpu.items()},
            "sql_statements": sql.statements,
            "sql_commits": sql.commits,
            "sql_statements_per_saga": round(sql.statements / div, 3),
            "sql_commits_per_saga": round(sql.commits / div, 3),
            "server_commits_per_saga": (
                None if sql.server_commits is None else round(sql.server_commits / div, 3)
            ),
            "kafka_messages": kafka,
            "kafka_messages_per_saga": None if kafka is None else round(kafka / div, 3),
            "fsyncs_per_saga": None if fsyncs is None else round(fsyncs / div, 3),
            # the engine's CPU split by process (ours: coordinator workers, listener)
            "engine_cpu_ms_per_saga_by_process": _by_process(a, b, div),
        }

    def _phase_summary(self) -> dict[str, Any]:
        p = self._phase
        return {
            "terminals": p.terminals,
            "invalid_outcomes": p.invalid,
            "error_outcomes": p.errors,
            "invalid_examples": p.examples,
            "unknown_outcomes": self._unknown,
        }

    # -- phases ------------------------------------------------------------------------
    async def closed_loop(
        self, scenario: Scenario, concurrency: int, times: PhaseTimes
    ) -> dict[str, Any]:
        self._phase = _Phase()
        sem = asyncio.Semaphore(concurrency)
        stop = asyncio.Event()
        window: list[float] = [float("inf"), float("inf")]

        async def feeder() -> None:
            while not stop.is_set():
                await sem.acquire()
                if stop.is_set():
                    break
                now = time.monotonic()
                await self._start(scenario, now, window[0] <= now < window[1], sem.release)

        task = asyncio.create_task(feeder())
        async with self.progress.phase(
            f"{self.label} closed loop ({concurrency} in flight)",
            times.warmup + times.duration,
            lambda: self._phase.terminals,
        ):
            await asyncio.sleep(times.warmup)
            first = await self._snapshot()
            window[:] = [first.t, first.t + times.duration]
            await asyncio.sleep(times.duration)
            last = await self._snapshot()
        stop.set()
        sem.release()
        await asyncio.wait_for(task, timeout=30)
        lost = await self._drain(times.drain_timeout)
        n = last.terminals - first.terminals
        result = {
            "concurrency": concurrency,
            "throughput_sagas_per_s": round(n / (last.t - first.t), 2),
            "latency_at_saturation": percentiles(self._phase.latencies),
            "window": self._per_saga(first, last, n),
            "not_terminated_after_drain": lost,
            **self._phase_summary(),
        }
        return result

    async def open_loop(self, scenario: Scenario, rate: float, times: PhaseTimes) -> dict[str, Any]:
        self._phase = _Phase()
        rng = random.Random(7)
        await asyncio.sleep(PG_STATS_SETTLE)  # let server-side counters of the last phase land
        before = await self._snapshot()
        t0 = time.monotonic()
        measure_from = t0 + times.warmup
        t_end = measure_from + times.duration
        sampler = asyncio.create_task(self._cpu_by_second(measure_from, t_end))
        next_t = t0
        started = 0
        max_lag = 0.0
        async with self.progress.phase(
            f"{self.label} open loop ({rate:,.0f} sagas/s offered)",
            times.warmup + times.duration,
            lambda: self._phase.terminals,
        ):
            while next_t < t_end:
                now = time.monotonic()
                while next_t <= now and next_t < t_end:
                    max_lag = max(max_lag, now - next_t)
                    await self._start(scenario, next_t, next_t >= measure_from, _noop)
                    started += 1
                    next_t += rng.expovariate(rate)
                await asyncio.sleep(max(0.0, next_t - time.monotonic()))
        cpu_by_second = await sampler
        lost = await self._drain(times.drain_timeout)
        await asyncio.sleep(PG_STATS_SETTLE)
        after = await self._snapshot()
        return {
            "target_rate_sagas_per_s": round(rate, 2),
            "offered_rate_sagas_per_s": round(started / (t_end - t0), 2),
            "latency": percentiles(self._phase.latencies),
            "latency_by_second": by_second(self._phase.samples, measure_from),
            "cpu_cores_by_second": cpu_by_second,
            "max_driver_lag_ms": round(max_lag * 1000, 3),
            "whole_phase": self._per_saga(before, after, self._phase.terminals),
            "not_terminated_after_drain": lost,
            **self._phase_summary(),
        }


def _noop() -> None:
    return None


async def run_scenario(
    driver: Driver,
    scenario: Scenario,
    concurrency: int,
    closed: PhaseTimes,
    opened: PhaseTimes,
    open_rate_factor: float = 0.5,
    open_rate: float | None = None,
) -> dict[str, Any]:
    """Closed loop at saturation, then open loop at ``open_rate_factor`` x its rate.

    ``open_rate``: offer that many sagas/s instead (two builds compared at one load).
    """
    driver.label = f"{driver.engine.name}/{scenario.name}"
    # the driver's own full collections (100+ ms once it holds a few thousand sagas) would
    # be counted as every engine's latency: what is alive now is frozen, never walked again
    gc.collect()
    gc.freeze()
    try:
        closed_res = await driver.closed_loop(scenario, concurrency, closed)
        rate = open_rate or max(1.0, closed_res["throughput_sagas_per_s"] * open_rate_factor)
        open_res = await driver.open_loop(scenario, rate, opened)
    finally:
        gc.unfreeze()  # what the scenario left behind can be collected again
    pids = driver.engine.pids()
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "closed_loop": closed_res,
        "open_loop": open_res,
        "engine_peak_rss_mib": round(sysinfo.sum_peak_rss(pids) / 2**20, 1),
        "engine_processes": len(pids),
    }
