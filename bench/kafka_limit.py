"""The physical limit: raw produce -> consume round trips on the same broker (aiokafka).

A producer (this process) sends keyed ~300-byte messages to a multi-partition topic; a
consumer in a second process (spawned) reads them and timestamps each one on arrival
(``time.monotonic_ns`` is system-wide on Linux, so send and receive clocks agree).

1. saturation: closed loop — the producer keeps at most ``window`` messages produced
   but not yet consumed (the consumer reports progress over a pipe every 50 ms), for
   ``seconds``; round-trip throughput = messages consumed per second after warm-up.
2. half rate: Poisson arrivals at 0.5 x that throughput for ``seconds``; round-trip
   latency = arrival at the consumer - *scheduled* send time (p50/p95/p99).

Divide the saturation throughput by an engine's Kafka messages per saga for its ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import struct
import time
from array import array
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from bench import sysinfo
from bench.harness import percentiles

TOPIC = "bench.kafka-limit"
PARTITIONS = 8
VALUE_BYTES = 300
_HEADER = struct.Struct(">BQq")  # phase, seq, scheduled send time (monotonic ns)
_STOP = 255
PRODUCER_CONFIG: dict[str, Any] = {"acks": "all", "linger_ms": 0, "enable_idempotence": False}


async def ensure_topic(bootstrap: str, topic: str = TOPIC, partitions: int = PARTITIONS) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            resp = await admin.create_topics([NewTopic(topic, partitions, 1)])
            for _, code, *_rest in getattr(resp, "topic_errors", []):
                if code not in (0, 36):  # 36 = TOPIC_ALREADY_EXISTS
                    raise RuntimeError(f"create_topics failed with error code {code}")
    finally:
        await admin.close()


# --- consumer process --------------------------------------------------------------------


def _consumer_main(bootstrap: str, topic: str, conn: Connection) -> None:
    asyncio.run(_consume(bootstrap, topic, conn))


async def _consume(bootstrap: str, topic: str, conn: Connection) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)
    conn.send("ready")
    phases, sent, recv = array("b"), array("q"), array("q")
    stops = 0
    last_report = 0
    while stops < PARTITIONS:
        batch = await consumer.getmany(timeout_ms=100, max_records=5000)
        now = time.monotonic_ns()
        for msgs in batch.values():
            for m in msgs:
                phase, _seq, t_sched = _HEADER.unpack_from(m.value or b"")
                if phase == _STOP:
                    stops += 1
                    continue
                phases.append(phase)
                sent.append(t_sched)
                recv.append(now)
        if now - last_report > 50_000_000:
            conn.send(len(recv))
            last_report = now
    await consumer.stop()
    conn.send((phases.tobytes(), sent.tobytes(), recv.tobytes()))


# --- producer side -----------------------------------------------------------------------


class _Progress:
    """Consumed-message count reported by the consumer process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.consumed = 0
        self.final: Any = None
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                msg = self.conn.recv()
                if isinstance(msg, int):
                    self.consumed = msg
                elif msg != "ready":
                    self.final = msg
        except EOFError:  # consumer exited
            self.final = self.final or ()
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())


def _value(phase: int, seq: int, t_sched: int) -> bytes:
    head = _HEADER.pack(phase, seq, t_sched)
    return head + b"x" * (VALUE_BYTES - len(head))


async def _saturate(
    producer: Any,
    progress: _Progress,
    warm: float,
    seconds: float,
    window: int,
    on_warm: Callable[[], None],
) -> tuple[int, float]:
    """Closed loop; returns (messages sent, consumed msgs/s measured after warm-up)."""
    seq = 0
    t_start = time.monotonic()
    t_warm, t_end = t_start + warm, t_start + warm + seconds
    mark: tuple[float, int] | None = None
    while (now := time.monotonic()) < t_end:
        if mark is None and now >= t_warm:
            mark = (now, progress.consumed)
            on_warm()
        if seq - progress.consumed >= window:
            await asyncio.sleep(0.005)
            continue
        for _ in range(200):
            seq += 1
            await producer.send(TOPIC, _value(1, seq, time.monotonic_ns()), key=os.urandom(16))
    assert mark is not None
    return seq, (progress.consumed - mark[1]) / (time.monotonic() - mark[0])


async def _paced(
    producer: Any, rate: float, seconds: float, start_seq: int, lag: list[float]
) -> int:
    """Poisson arrivals at ``rate``; yields to the event loop every 64 sends so the
    producer's sender task ships batches even when the loop is behind schedule."""
    rng = random.Random(11)
    seq = start_seq
    t0 = time.monotonic_ns()
    t_end = t0 + int(seconds * 1e9)
    next_t = t0
    while next_t < t_end:
        now = time.monotonic_ns()
        burst = 0
        while next_t <= now and next_t < t_end and burst < 64:
            lag[0] = max(lag[0], (now - next_t) / 1e9)
            seq += 1
            burst += 1
            await producer.send(TOPIC, _value(2, seq, next_t), key=os.urandom(16))
            next_t += int(rng.expovariate(rate) * 1e9)
        await asyncio.sleep(max(0.0, (next_t - time.monotonic_ns()) / 1e9))
    return seq


def _cpu_groups(consumer_pid: int) -> dict[str, list[int]]:
    return {
        "producer": [os.getpid()],
        "consumer": [consumer_pid],
        "kafka_broker": sysinfo.kafka_broker_pids(),
    }


def planned_seconds(seconds: float) -> float:
    """How long :func:`run` measures for (two phases, each with its warm-up)."""
    return 2 * (_warmup(seconds) + seconds)


def _warmup(seconds: float) -> float:
    return max(2.0, seconds * 0.2)


async def run(bootstrap: str, seconds: float, window: int = 20_000) -> dict[str, Any]:
    """Run both phases; returns raw figures for results.json."""
    from aiokafka import AIOKafkaProducer

    await ensure_topic(bootstrap)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_consumer_main, args=(bootstrap, TOPIC, child), daemon=True)
    proc.start()
    assert proc.pid is not None
    if not await asyncio.to_thread(parent.poll, 60) or parent.recv() != "ready":
        raise RuntimeError("kafka-limit consumer did not start")
    progress = _Progress(parent)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_CONFIG)
    await producer.start()
    warm = _warmup(seconds)
    marks: dict[str, int] = {}
    lag = [0.0]
    cpu: list[sysinfo.CpuSnapshot] = []

    def on_warm() -> None:
        marks["sat_warm"] = time.monotonic_ns()
        cpu.append(sysinfo.CpuSnapshot.take(_cpu_groups(pid)))

    pid = proc.pid
    try:
        sent, rate = await _saturate(producer, progress, warm, seconds, window, on_warm)
        marks["sat_end"] = time.monotonic_ns()
        cpu.append(sysinfo.CpuSnapshot.take(_cpu_groups(pid)))
        await progress.wait_for(lambda: progress.consumed >= sent)  # drain before pacing
        marks["open_warm"] = time.monotonic_ns() + int(warm * 1e9)
        await _paced(producer, rate * 0.5, warm + seconds, sent, lag)
        for p in range(PARTITIONS):
            await producer.send_and_wait(TOPIC, _value(_STOP, 0, 0), partition=p)
    finally:
        await producer.stop()
        await progress.wait_for(lambda: progress.final is not None)
        progress.close()
        proc.join(timeout=10)
    phases, sent_ns, recv_ns = array("b"), array("q"), array("q")
    for arr, raw in zip((phases, sent_ns, recv_ns), progress.final, strict=True):
        arr.frombytes(raw)
    sat_lat: list[float] = []
    open_lat: list[float] = []
    timeline: dict[int, list[float]] = {}
    in_window = 0
    for phase, t_s, t_r in zip(phases, sent_ns, recv_ns, strict=True):
        if phase == 1 and marks["sat_warm"] <= t_r < marks["sat_end"]:
            in_window += 1
            sat_lat.append((t_r - t_s) / 1e9)
        elif phase == 2 and t_s >= marks["open_warm"]:
            open_lat.append((t_r - t_s) / 1e9)
            timeline.setdefault((t_s - marks["open_warm"]) // 10**9, []).append(open_lat[-1])
    sat_seconds = (marks["sat_end"] - marks["sat_warm"]) / 1e9
    throughput = in_window / sat_seconds
    cpu_used = cpu[0].delta(cpu[1])
    return {
        "topic": TOPIC,
        "partitions": PARTITIONS,
        "value_bytes": VALUE_BYTES,
        "key_bytes": 16,
        "producer_config": PRODUCER_CONFIG,
        "consumer": "second process, AIOKafkaConsumer.getmany (defaults), manual assignment",
        "closed_loop_window_msgs": window,
        "saturation": {
            "seconds_measured": round(sat_seconds, 3),
            "throughput_msgs_per_s": round(throughput, 1),
            "throughput_by_progress_msgs_per_s": round(rate, 1),
            "latency_at_saturation": percentiles(sat_lat),
            "cpu_seconds": {k: round(v, 3) for k, v in cpu_used.items()},
            "cpu_us_per_msg": {
                k: round(v / max(in_window, 1) * 1e6, 2) for k, v in cpu_used.items()
            },
        },
        "half_rate": {
            "target_rate_msgs_per_s": round(rate * 0.5, 1),
            "max_producer_lag_ms": round(lag[0] * 1000, 3),
            "latency": percentiles(open_lat),
            "p99_ms_per_second": [
                percentiles(v).get("p99_ms") for _, v in sorted(timeline.items())
            ],
        },
    }
