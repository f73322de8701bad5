"""A small client: start, cancel, resume and inspect sagas.

Commands go to the saga inbox (Kafka, keyed by saga id); state is read from the
coordinator worker's HTTP endpoint, which Faust routes to the worker owning the saga.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel

from coordinator.definition import Saga
from coordinator.errors import CoordinatorUnavailable, SagaNotFoundError
from coordinator.messages import CancelSaga, RetryCompensation, StartSaga
from coordinator.settings import CoordinatorSettings


async def ensure_topics(settings: CoordinatorSettings, services: Sequence[str] = ()) -> None:
    """Create the saga topics (same partition count, keyed by saga id) if missing."""
    t = settings.topics
    names = [t.inbox, t.lifecycle, t.deadletters, *(t.step(s) for s in services)]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            n,
                            num_partitions=settings.partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=(
                                {"message.timestamp.type": "LogAppendTime"} if n == t.inbox else {}
                            ),
                        )
                        for n in missing
                    ]
                )
    finally:
        await admin.close()


class SagaClient:
    """Use as ``async with SagaClient(settings) as client: await client.start(...)``."""

    def __init__(
        self, settings: CoordinatorSettings | None = None, *, web_url: str | None = None
    ) -> None:
        self.settings = settings or CoordinatorSettings()
        self.web_url = web_url or f"http://{self.settings.web_host}:{self.settings.web_port}"
        self._producer: AIOKafkaProducer | None = None
        self._http = httpx.AsyncClient(timeout=10.0)

    async def __aenter__(self) -> SagaClient:
        await ensure_topics(self.settings)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, linger_ms=2, acks="all"
        )
        await self._producer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()
        await self._http.aclose()

    async def _send(self, saga_id: str, value: bytes, *, wait: bool) -> None:
        if self._producer is None:
            raise CoordinatorUnavailable("SagaClient is not started: use `async with SagaClient()`")
        topic = self.settings.topics.inbox
        if wait:
            await self._producer.send_and_wait(topic, value, key=saga_id.encode())
        else:
            await self._producer.send(topic, value, key=saga_id.encode())

    async def start(
        self,
        saga: Saga[Any] | str,
        input: BaseModel | dict[str, Any],
        *,
        saga_id: str | None = None,
        business_key: str | None = None,
        version: int | None = None,
        wait: bool = True,
    ) -> str:
        """Start a saga; returns its id. Idempotent: an existing id is never run twice."""
        saga_id = saga_id or str(uuid.uuid4())
        data = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
        msg = StartSaga(
            saga_id=saga_id,
            at=datetime.now(UTC),
            saga_type=saga if isinstance(saga, str) else saga.name,
            saga_version=version,
            input=data,
            business_key=business_key,
        )
        await self._send(saga_id, msg.to_json(), wait=wait)
        return saga_id

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def cancel(self, saga_id: str, reason: str = "cancelled by operator") -> None:
        """Cancel a running saga: its completed steps are compensated."""
        msg = CancelSaga(saga_id=saga_id, at=datetime.now(UTC), reason=reason)
        await self._send(saga_id, msg.to_json(), wait=True)

    async def retry_compensation(self, saga_id: str) -> None:
        """Resume a ``compensation_failed`` saga at its compensation cursor."""
        msg = RetryCompensation(saga_id=saga_id, at=datetime.now(UTC))
        await self._send(saga_id, msg.to_json(), wait=True)

    async def get(self, saga_id: str) -> dict[str, Any]:
        """The saga's state from the worker that owns it."""
        url = f"{self.web_url}/sagas/{saga_id}/"
        try:
            response = await self._http.get(url)
        except httpx.TransportError as exc:
            raise CoordinatorUnavailable(
                f"no coordinator answered at {url} ({type(exc).__name__}); is a worker "
                "running, and are SAGA_WEB_HOST/SAGA_WEB_PORT right?"
            ) from exc
        if response.status_code == 404:
            raise SagaNotFoundError(f"no saga {saga_id!r}: it was never started, or not yet")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body
