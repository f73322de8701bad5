"""The Python client: start, inspect, wait for, cancel and resume sagas.

Commands go to the saga inbox (Kafka, keyed by saga id); state is read from the
coordinator worker's HTTP endpoint, which routes to the worker owning the saga::

    async with SagaClient(settings) as client:
        saga_id = await client.start(ORDER_SAGA, order, business_key=order.order_id,
                                     confirm=True)
        view = await client.wait(saga_id)

Saga ids are never random: pass ``saga_id=``, or a ``business_key=`` from which the id is
derived (``"{saga_type}:{business_key}"``), so a retried start finds the saga it started
instead of running the order twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel, ValidationError

from coordinator.definition import Saga
from coordinator.errors import (
    CommandError,
    CoordinatorUnavailable,
    SagaNotFoundError,
    SagaRejected,
    SagaStatusError,
)
from coordinator.events import DeadLetter
from coordinator.messages import CancelSaga, RetryCompensation, StartSaga
from coordinator.queries import SagaView
from coordinator.settings import CoordinatorSettings
from coordinator.watch import KeyWatch, partition_counts

__all__ = ["SagaClient", "derive_saga_id", "ensure_topics", "start_message"]

#: how long ``confirm=True`` waits for the coordinator's answer by default
DEFAULT_CONFIRM_TIMEOUT = timedelta(seconds=30)


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


def derive_saga_id(saga_type: str, business_key: str) -> str:
    """The saga id used when only a business key is given: ``"{saga_type}:{business_key}"``.

    Deterministic, so starting the same saga type for the same business key twice finds
    the first saga instead of running a second one.
    """
    return f"{saga_type}:{business_key}"


def start_message(
    saga: Saga[Any] | str,
    input: BaseModel | dict[str, Any],
    *,
    saga_id: str | None = None,
    business_key: str | None = None,
    version: int | None = None,
) -> StartSaga:
    """The start command :meth:`SagaClient.start` sends; raises :class:`CommandError`."""
    saga_type = saga if isinstance(saga, str) else saga.name
    if saga_id is None:
        if business_key is None:
            raise CommandError(
                f"start {saga_type!r}: pass saga_id= or business_key= (the id is then "
                f"{derive_saga_id(saga_type, '<business_key>')!r}); ids are never random, "
                "so a retried start cannot run the saga twice"
            )
        saga_id = derive_saga_id(saga_type, business_key)
    data = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
    if not isinstance(data, dict):
        raise CommandError(
            f"start {saga_type!r}: the input must be a JSON object (a dict or a pydantic "
            f"model), not {type(data).__name__}"
        )
    try:
        return StartSaga(
            saga_id=saga_id,
            at=datetime.now(UTC),
            saga_type=saga_type,
            saga_version=version,
            input=data,
            business_key=business_key,
        )
    except ValidationError as exc:
        raise CommandError(f"start {saga_type!r}: {_first_error(exc)}") from exc


class SagaClient:
    """Starts and operates sagas; use as ``async with SagaClient(settings) as client``.

    Args:
        settings: the coordinator settings (``SAGA_*`` environment variables if omitted);
            the client uses the broker, the topic prefix and the web host/port.
        web_url: a coordinator worker's web endpoint, if not ``SAGA_WEB_HOST``/``_PORT``.
    """

    def __init__(
        self, settings: CoordinatorSettings | None = None, *, web_url: str | None = None
    ) -> None:
        self.settings = settings or CoordinatorSettings()
        self.web_url = web_url or f"http://{self.settings.web_host}:{self.settings.web_port}"
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}  # fixed once sagas run
        self._http = httpx.AsyncClient(timeout=10.0)

    async def __aenter__(self) -> SagaClient:
        """Create missing topics and start the Kafka producer."""
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
        """Flush and stop the producer, close the HTTP client."""
        if self._producer is not None:
            await self._producer.stop()
        await self._http.aclose()

    # -- commands -----------------------------------------------------------------------

    async def start(
        self,
        saga: Saga[Any] | str,
        input: BaseModel | dict[str, Any],
        *,
        saga_id: str | None = None,
        business_key: str | None = None,
        version: int | None = None,
        wait: bool = True,
        confirm: bool = False,
        timeout: timedelta = DEFAULT_CONFIRM_TIMEOUT,
    ) -> str:
        """Start a saga; returns its id. Idempotent: an existing id is never run twice.

        Args:
            saga: the saga definition or its type name.
            input: the saga input (its pydantic model, or a dict the worker validates).
            saga_id: the saga's id. Required unless ``business_key`` is given.
            business_key: e.g. the order id; without ``saga_id`` the id is
                :func:`derive_saga_id` of the saga type and this key.
            version: the definition version to run (default: the worker's latest).
            wait: wait until the broker has the command (False: queue it and return;
                call :meth:`flush` before exiting).
            confirm: also wait for the coordinator: return once the saga exists, raise
                :class:`~coordinator.SagaRejected` with the reason if it refused it.
            timeout: how long ``confirm`` waits before raising
                :class:`~coordinator.CoordinatorUnavailable`.
        """
        msg = start_message(
            saga, input, saga_id=saga_id, business_key=business_key, version=version
        )
        saga_id = msg.saga_id
        payload = msg.to_json()
        if not confirm:
            await self._send(saga_id, payload, wait=wait)
            return saga_id
        topics = self.settings.topics
        watched = [topics.lifecycle, topics.deadletters]
        if not all(t in self._partitions for t in watched):
            self._partitions.update(
                await partition_counts(self.settings.kafka_bootstrap_servers, watched)
            )
        async with KeyWatch(
            self.settings.kafka_bootstrap_servers,
            {t: self._partitions[t] for t in watched},
            saga_id,
        ) as watch:
            await self._send(saga_id, payload, wait=True)
            await self._await_start(watch, saga_id, payload, timeout)
        return saga_id

    async def _await_start(
        self, watch: KeyWatch, saga_id: str, payload: bytes, timeout: timedelta
    ) -> None:
        """Until ``saga_started`` for the id, a dead letter of ``payload``, or the saga exists."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        next_lookup = loop.time() + 1.0
        lifecycle, deadletters = self.settings.topics.lifecycle, self.settings.topics.deadletters
        while loop.time() < deadline:
            for record in await watch.poll(0.2):
                if record.topic == lifecycle and _event_type(record.value) == "saga_started":
                    return
                if record.topic == deadletters:
                    with contextlib.suppress(ValidationError):
                        letter = DeadLetter.model_validate_json(record.value)
                        if letter.value() == payload:
                            raise SagaRejected(saga_id, letter.reason)
            if loop.time() >= next_lookup:
                # a saga that existed already emits nothing when started again
                next_lookup = loop.time() + 1.0
                with contextlib.suppress(CoordinatorUnavailable):
                    if await self.find(saga_id) is not None:
                        return
        raise CoordinatorUnavailable(
            f"saga {saga_id!r}: no coordinator answered the start within "
            f"{timeout.total_seconds():g}s (the command is on {self.settings.topics.inbox!r} "
            "and runs when a worker consumes it): is a worker running with this saga type in "
            "SAGA_DEFINITIONS, and the same SAGA_TOPIC_PREFIX?"
        )

    async def cancel(
        self,
        saga_id: str,
        reason: str = "cancelled by operator",
        *,
        confirm: bool = False,
        timeout: timedelta = DEFAULT_CONFIRM_TIMEOUT,
    ) -> SagaView | None:
        """Cancel a running saga: its completed steps are compensated.

        With ``confirm=True`` the saga is looked up first (raises
        :class:`~coordinator.SagaNotFoundError` or :class:`~coordinator.SagaStatusError`
        when there is nothing to cancel) and the view once the coordinator accepted the
        cancel is returned.
        """
        msg = CancelSaga(saga_id=saga_id, at=datetime.now(UTC), reason=reason).to_json()
        if not confirm:
            await self._send(saga_id, msg, wait=True)
            return None
        before = await self.get(saga_id)
        if before.status != "running":
            raise SagaStatusError(
                f"saga {saga_id!r} is {before.status}: only a running saga can be cancelled"
                + _hint(before),
                saga_id=saga_id,
                status=before.status,
            )
        if before.cancel_requested:
            return before
        await self._send(saga_id, msg, wait=True)

        def accepted(view: SagaView) -> bool:
            if view.cancel_requested or view.status in ("compensating", "cancelled"):
                return True
            if view.resting:
                raise SagaStatusError(
                    f"saga {saga_id!r} became {view.status} before the cancel arrived; "
                    "nothing was cancelled" + _hint(view),
                    saga_id=saga_id,
                    status=view.status,
                )
            return False

        return await self._poll(saga_id, accepted, timeout, "accept the cancel")

    async def retry_compensation(
        self, saga_id: str, *, confirm: bool = False, timeout: timedelta = DEFAULT_CONFIRM_TIMEOUT
    ) -> SagaView | None:
        """Resume a ``compensation_failed`` saga at its compensation cursor.

        ``confirm=True`` checks the status first and waits for the coordinator, as
        :meth:`cancel` does.
        """
        msg = RetryCompensation(saga_id=saga_id, at=datetime.now(UTC)).to_json()
        if not confirm:
            await self._send(saga_id, msg, wait=True)
            return None
        before = await self.get(saga_id)
        if before.status != "compensation_failed":
            raise SagaStatusError(
                f"saga {saga_id!r} is {before.status}: retry-compensation resumes only a "
                "compensation_failed saga" + _hint(before),
                saga_id=saga_id,
                status=before.status,
            )
        await self._send(saga_id, msg, wait=True)
        return await self._poll(
            saga_id, lambda v: v.seq > before.seq, timeout, "resume the compensation"
        )

    async def flush(self) -> None:
        """Wait until every queued command (``wait=False``) is on the broker."""
        if self._producer is not None:
            await self._producer.flush()

    # -- queries ------------------------------------------------------------------------

    async def find(self, saga_id: str) -> SagaView | None:
        """The saga's state from the worker that owns it, or None if there is no such saga."""
        url = f"{self.web_url}/sagas/{quote(saga_id, safe='')}/"
        try:
            response = await self._http.get(url)
        except httpx.TransportError as exc:
            raise CoordinatorUnavailable(
                f"no coordinator answered at {url} ({type(exc).__name__}); is a worker "
                "running, and are SAGA_WEB_HOST/SAGA_WEB_PORT (or --url) right?"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CoordinatorUnavailable(
                f"{url} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        return SagaView.model_validate_json(response.content)

    async def get(self, saga_id: str) -> SagaView:
        """The saga's state; raises :class:`~coordinator.SagaNotFoundError` if unknown."""
        view = await self.find(saga_id)
        if view is None:
            raise SagaNotFoundError(f"no saga {saga_id!r}: it was never started, or not yet")
        return view

    async def wait(self, saga_id: str, *, timeout: timedelta = timedelta(minutes=5)) -> SagaView:
        """Wait until the saga rests (terminal, or waiting for an operator); its view."""
        return await self._poll(saga_id, lambda v: v.resting, timeout, "finish", missing_ok=True)

    # -- internals ----------------------------------------------------------------------

    async def _send(self, saga_id: str, value: bytes, *, wait: bool) -> None:
        if self._producer is None:
            raise CoordinatorUnavailable("SagaClient is not started: use `async with SagaClient()`")
        topic = self.settings.topics.inbox
        if wait:
            await self._producer.send_and_wait(topic, value, key=saga_id.encode())
        else:
            await self._producer.send(topic, value, key=saga_id.encode())

    async def _poll(
        self,
        saga_id: str,
        done: Callable[[SagaView], bool],
        timeout: timedelta,
        what: str,
        *,
        missing_ok: bool = False,
    ) -> SagaView:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        delay = 0.05
        view: SagaView | None = None
        while True:
            view = await (self.find(saga_id) if missing_ok else self.get(saga_id))
            if view is not None and done(view):
                return view
            if loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        now = f"it is {view.status}" if view is not None else "it does not exist yet"
        raise CoordinatorUnavailable(
            f"saga {saga_id!r} did not {what} within {timeout.total_seconds():g}s ({now})"
        )


def _hint(view: SagaView) -> str:
    status: str = view.status
    if status == "compensation_failed":
        return "; resume it with `retry-compensation`"
    if status == "parked":
        return "; an operator resolves it with `resolve`"
    return ""


def _event_type(value: bytes) -> str | None:
    try:
        event = json.loads(value)
    except ValueError:
        return None
    return event.get("type") if isinstance(event, dict) else None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"
