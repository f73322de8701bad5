"""The order-fulfillment stack as real processes: HTTP services, coordinator workers,
and a lifecycle-topic reader, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from coordinator import CoordinatorSettings
from coordinator._messages import StepRequest
from coordinator.events import TERMINAL_EVENT_TYPES, LifecycleEvent, parse_events
from examples.order_fulfillment.models import CreateOrderRequest, LineItem
from examples.order_fulfillment.participants import service_urls
from infra.processes import Process, free_port
from tests.integration.postmortem import by_partition

COORDINATOR_READY = "coordinator ready"
READY = re.compile(r"services ready on (http://127\.0\.0\.1:\d+)")


class OrderStack:
    def __init__(self, bootstrap: str, prefix: str, datadir: Path, partitions: int = 4) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.datadir = datadir
        self.partitions = partitions
        self.web_port = free_port()
        self.base_url = ""
        self.processes: list[Process] = []
        #: every process's log is kept here (``postmortem`` prints them for a failed test)
        self.logs = datadir / "logs"

    def _process(self, args: list[str], env: dict[str, str] | None, name: str) -> Process:
        taken = {proc.name for proc in self.processes}
        unique = name if name not in taken else f"{name}-{len(self.processes)}"
        proc = Process(args, env=env, name=unique, log=self.logs / f"{unique}.log")
        self.processes.append(proc.start())
        return proc

    def settings(self) -> CoordinatorSettings:
        return CoordinatorSettings(
            kafka_bootstrap_servers=self.bootstrap,
            topic_prefix=self.prefix,
            app_id=f"{self.prefix}-coordinator",
            partitions=self.partitions,
            web_port=self.web_port,
            datadir=self.datadir,
        )

    def start_services(self, knobs: dict[str, Any] | None = None) -> str:
        proc = self._process(
            [
                "-m",
                "examples.order_fulfillment.services",
                "--port",
                "0",
                *(["--knobs", json.dumps(knobs)] if knobs else []),
            ],
            None,
            "services",
        )
        proc.wait_for_output("services ready on", timeout=30)
        match = READY.search(proc.output())
        assert match, proc.output()
        self.base_url = match.group(1)
        return self.base_url

    def coordinator(
        self,
        *,
        executors: list[str] | None = None,
        name: str = "coordinator",
        web_port: int | None = None,
        definitions: str = "examples.order_fulfillment.saga:ORDER_SAGA",
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Process:
        """Start a coordinator worker; ``wait=False`` returns before it is ready (start
        several, then ``proc.wait_for_output(COORDINATOR_READY)`` each)."""
        env = {
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "SAGA_TOPIC_PREFIX": self.prefix,
            "SAGA_APP_ID": f"{self.prefix}-coordinator",
            "SAGA_PARTITIONS": str(self.partitions),
            "SAGA_WEB_PORT": str(web_port or self.web_port),
            "SAGA_DATADIR": str(self.datadir),
            "SAGA_DEFINITIONS": definitions,
            "SAGA_SERVICE_URLS": json.dumps(service_urls(self.base_url)),
            "SAGA_EXECUTORS": ",".join(executors or []),
            **(env or {}),
        }
        proc = self._process(["-m", "coordinator", "worker", "-l", "info"], env, name)
        if wait:
            proc.wait_for_output(COORDINATOR_READY, timeout=90)
        return proc

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            response = await client.request(method, path, json=body)
            response.raise_for_status()
            return response.json()

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
            proc.close()


class Lifecycle:
    """Reads the lifecycle topic from the beginning into per-saga event lists.

    A record carries one event or a batch of one saga's events (``parse_events``).

    Records that are not lifecycle events (poison injected by chaos tests) are counted in
    ``undecodable`` and skipped; ``terminal_seen`` holds when (``time.monotonic()``) each
    saga's first terminal event was read.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        self.events: dict[str, list[LifecycleEvent]] = defaultdict(list)
        self.terminal_seen: dict[str, float] = {}
        self.undecodable = 0
        self.records = 0  # lifecycle records read (one carries one event, or a batch)
        #: (key, seqs of its events) of every record read, in order
        self.per_record: list[tuple[bytes | None, list[int]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lifecycle:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        events = parse_events(record.value)
                    except (ValueError, TypeError):  # LifecycleRecordError is a ValueError
                        self.undecodable += 1
                        continue
                    self.records += 1
                    self.per_record.append((record.key, [e.seq for e in events]))
                    for event in events:
                        self.events[event.saga_id].append(event)
                        if event.type in TERMINAL_EVENT_TYPES:
                            self.terminal_seen.setdefault(event.saga_id, time.monotonic())

    def terminal(self, saga_id: str) -> LifecycleEvent | None:
        found = [e for e in self.events.get(saga_id, []) if e.type in TERMINAL_EVENT_TYPES]
        return found[-1] if found else None

    def status(self, saga_id: str) -> str | None:
        """The type of the saga's newest event, a ``step_late_success`` record aside."""
        events = [e for e in self.events.get(saga_id, []) if e.type != "step_late_success"]
        if not events:
            return None
        last = max(events, key=lambda e: e.seq)
        return last.type

    def unique(self, saga_id: str) -> list[LifecycleEvent]:
        """Events by seq, duplicates (re-sent after a crash) removed."""
        by_seq = {e.seq: e for e in self.events.get(saga_id, [])}
        return [by_seq[s] for s in sorted(by_seq)]

    def compensations(self, saga_id: str) -> list[str]:
        return [e.step or "" for e in self.unique(saga_id) if e.type == "compensation_succeeded"]

    async def wait(self, saga_ids: list[str], *, statuses: set[str], timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if all(self.status(s) in statuses for s in saga_ids):
                return
            await asyncio.sleep(0.2)
        missing = {s: self.status(s) for s in saga_ids if self.status(s) not in statuses}
        partitions = len(self.consumer.partitions_for_topic(self.topic) or ())
        where = by_partition(list(missing), partitions) if partitions else "partitions unknown"
        raise AssertionError(
            f"not {statuses} after {timeout}s: {len(missing)} of {len(saga_ids)} sagas, "
            f"{dict(list(missing.items())[:10])}; by {where}"
        )


class RemoteService:
    """Plays a participant written in another language: it consumes the service's step
    topic and answers with ``StepResult`` JSON on the topic each request names."""

    def __init__(self, stack: OrderStack, service: str) -> None:
        topic = stack.settings().topics.step(service)
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack.bootstrap,
            auto_offset_reset="earliest",
            group_id=f"{stack.prefix}-remote-{service}",
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)

    async def __aenter__(self) -> RemoteService:
        await self.consumer.start()
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def next_request(self, timeout: float) -> StepRequest:
        record = await asyncio.wait_for(self.consumer.getone(), timeout)
        return StepRequest.model_validate_json(record.value)

    async def succeed(self, request: StepRequest, output: dict[str, Any]) -> None:
        result = request.result(at=datetime.now(UTC), output=output)
        await self.producer.send_and_wait(
            request.reply_to, result.to_json(), key=request.saga_id.encode()
        )


def order(
    order_id: str, *, card: str = "tok_ok", zip_code: str = "10001", sku: str = "SKU-1"
) -> CreateOrderRequest:
    """An order for the example services (a declined card, an outage zip or an OOS SKU)."""
    return CreateOrderRequest(
        order_id=order_id,
        customer_id="c1",
        items=[LineItem(sku=sku, quantity=1)],
        amount_cents=1999,
        card_token=card,
        shipping_zip=zip_code,
    )
