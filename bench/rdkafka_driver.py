"""The bench driver's Kafka client for our engine: librdkafka (confluent-kafka).

The driver is the load generator: it starts sagas and learns their outcomes from the
lifecycle topic. It shares the machine's two cores with the engine, so whatever it spends
is taken from the engine under test. With aiokafka (what ``SagaClient`` uses) it spent
0.9 ms of CPU per simple saga at half load, as much as half the coordinator; in C it
spends about half (0.5 ms), but the sagas' latency measured through it was higher at the
same offered rate (simple at 460/s: p50/p99 68/171 against 45/115 ms with aiokafka, after
Nagle was turned off and the follower stopped waiting for full batches; the rest is not
explained yet), so it is not the default: ``--engine-opt ours.client=rdkafka``.

What it sends is byte for byte what ``SagaClient.start(..., wait=False)`` sends: the
command comes from the same ``start_message`` and is keyed by the saga id, to the same
partition (murmur2), with ``acks=all`` and a 2 ms linger, as ``SagaClient``'s producer.
A delivery failure is kept and raised at the next start, never dropped.

The lifecycle topic is read by a thread (librdkafka's ``consume`` blocks) that parses
each record and hands the finished sagas to the event loop in one call per fetch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

try:
    from confluent_kafka import (
        Consumer,
        KafkaError,
        KafkaException,
        Message,
        Producer,
        TopicPartition,
    )
except ModuleNotFoundError as exc:  # the bench extra is not installed
    raise ModuleNotFoundError(
        "the bench's driver needs confluent-kafka, from the bench extra: run `make bench` "
        "(it installs it), or `.venv/bin/pip install -e '.[bench]'`"
    ) from exc

from bench.ours_engine import Finished, finished_sagas
from coordinator._commands import start_message


class DriverError(RuntimeError):
    """A start command was not delivered (raised at the next start). A consumer error ends
    the following thread with its traceback; the sagas it would report then never finish."""


class RdKafkaDriver:
    """Starts sagas on ``inbox`` and reports finished ones from ``lifecycle``."""

    def __init__(
        self,
        bootstrap: str,
        inbox: str,
        lifecycle: str,
        partitions: int,
        on_finished: Callable[[list[Finished]], None],
    ) -> None:
        self.inbox = inbox
        self.lifecycle = lifecycle
        self.partitions = partitions
        self._on_finished = on_finished
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 2,
                "acks": "all",
                # a key's partition as Java's and aiokafka's producers pick it (murmur2), where
                # the coordinator expects a saga's records; librdkafka's default (CRC32) puts
                # 7 of 8 starts elsewhere, and the coordinator forwards each (one more hop)
                "partitioner": "murmur2_random",
                "socket.nagle.disable": True,  # as asyncio's sockets: Nagle delays small writes
            }
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{lifecycle}-bench-driver",  # required; offsets never committed
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,  # as the aiokafka driver: a long poll adds latency
                "fetch.min.bytes": 1,
                "socket.nagle.disable": True,
            }
        )
        self._failures: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._comps: dict[str, list[int]] = {}

    def start_following(self) -> None:
        """Read the lifecycle topic from its beginning, on a thread of its own."""
        self._loop = asyncio.get_running_loop()
        self._consumer.assign(
            [TopicPartition(self.lifecycle, p, 0) for p in range(self.partitions)]
        )
        self._thread = threading.Thread(target=self._follow, name="bench-follow", daemon=True)
        self._thread.start()

    def start(self, saga_type: str, saga_id: str, saga_input: dict[str, Any]) -> None:
        """Queue the start command of one saga (as ``SagaClient.start(wait=False)``)."""
        if self._failures:
            raise DriverError(f"start commands not delivered: {self._failures[:3]}")
        msg = start_message(saga_type, saga_input, saga_id=saga_id, business_key=saga_id)
        self._producer.produce(self.inbox, msg.to_json(), saga_id.encode(), on_delivery=self._ack)
        self._producer.poll(0)  # serve delivery reports; never blocks

    def _ack(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.key()!r}: {err}")

    def _follow(self) -> None:
        loop = self._loop
        assert loop is not None
        while not self._stop.is_set():
            # consume(n, timeout) waits for n records or the timeout: a wait for the first
            # record, then whatever else is already fetched, adds no latency to any record
            first = self._consumer.poll(0.1)
            if first is None:
                continue
            records = [first, *self._consumer.consume(num_messages=2000, timeout=0)]
            finished: list[Finished] = []
            for record in records:
                err = record.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                finished += finished_sagas(record.value() or b"", self._comps)
            if finished:
                loop.call_soon_threadsafe(self._on_finished, finished)

    def close(self) -> None:
        """Stop following, deliver every queued start, close both clients."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._producer.flush(10)
        self._consumer.close()
