"""The Python client: start, inspect, wait for, cancel and resume sagas.

Commands go to the saga inbox (Kafka, keyed by saga id); state is read from a coordinator
worker's web endpoint, which routes to the worker owning the saga. So ``get``/``find``/
``wait``, and the status checks of a confirmed ``cancel``/``retry_compensation``/``resolve``,
need a worker running with ``SAGA_WEB_ENABLED=true`` (the default) at ``web_url``; sending
a command unconfirmed and a confirmed ``start`` (answered on the lifecycle and dead-letter
topics) do not::

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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ValidationError

from coordinator._commands import Resolution, resolve_message, start_message
from coordinator._deadletters import matches
from coordinator._definition import Saga
from coordinator._errors import (
    CommandError,
    CoordinatorUnavailable,
    SagaNotFoundError,
    SagaRejected,
    SagaStatusError,
)
from coordinator._messages import CancelSaga, RetryCompensation
from coordinator._queries import SagaView
from coordinator._settings import CoordinatorSettings
from coordinator._topics import ensure_topics
from coordinator._watch import KeyWatch, partition_counts
from coordinator.events import DeadLetter, unpack_record

__all__ = ["SagaClient", "ensure_topics"]

#: how long ``confirm=True`` waits for the coordinator's answer by default
DEFAULT_CONFIRM_TIMEOUT = timedelta(seconds=30)
#: what a confirmed command could do without a web endpoint
_UNCONFIRMED = (
    "a confirmed {what} checks the saga's status there first; or send it unconfirmed "
    "(--no-wait, confirm=False)"
)


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
        #: commands sent with ``wait=False``: their delivery futures, checked by ``flush``
        self._queued: list[tuple[str, bytes, asyncio.Future[Any]]] = []

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
        await self._confirm(
            saga_id,
            payload,
            exists=lambda view: True,  # an existing saga emits nothing when started again
            event="saga_started",
            timeout=timeout,
            what="start",
            watch=[topics.lifecycle, topics.deadletters],
        )
        return saga_id

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
        before = await self.get(saga_id, needs=_UNCONFIRMED.format(what="cancel"))
        if before.status not in ("running", "parked"):
            raise SagaStatusError(
                f"saga {saga_id!r} is {before.status}: only a running or parked saga can be "
                "cancelled" + _hint(before),
                saga_id=saga_id,
                status=before.status,
            )
        if before.cancel_requested:
            return before

        def accepted(view: SagaView) -> bool:
            if view.cancel_requested or view.status in ("compensating", "cancelled"):
                return True
            if view.resting and view.status != "parked":
                raise SagaStatusError(
                    f"saga {saga_id!r} became {view.status} before the cancel arrived; "
                    "nothing was cancelled" + _hint(view),
                    saga_id=saga_id,
                    status=view.status,
                )
            return False

        return await self._confirm(saga_id, msg, exists=accepted, timeout=timeout, what="cancel")

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
        before = await self.get(saga_id, needs=_UNCONFIRMED.format(what="retry-compensation"))
        if before.status != "compensation_failed":
            raise SagaStatusError(
                f"saga {saga_id!r} is {before.status}: retry-compensation resumes only a "
                "compensation_failed saga" + _hint(before),
                saga_id=saga_id,
                status=before.status,
            )
        return await self._confirm(
            saga_id,
            msg,
            exists=lambda v: v.seq > before.seq,
            timeout=timeout,
            what="retry-compensation",
        )

    async def resolve(
        self,
        saga_id: str,
        resolution: Resolution,
        *,
        step: str | None = None,
        output: BaseModel | dict[str, Any] | None = None,
        confirm: bool = False,
        timeout: timedelta = DEFAULT_CONFIRM_TIMEOUT,
    ) -> SagaView | None:
        """Resolve the step a ``parked`` saga waits on, whose outcome was uncertain.

        Args:
            saga_id: the parked saga.
            resolution: ``"applied"`` (the effect happened: the saga goes on, with
                ``output`` as the step's output), ``"not_applied"`` (nothing happened: the
                earlier steps are compensated) or ``"retry"`` (run the step again).
            step: the parked step; default: the one the saga is parked on (looked up).
            output: with ``"applied"``: the step's output, validated by the coordinator.
            confirm: check that the saga is parked first and wait for the coordinator;
                raises :class:`~coordinator.SagaRejected` if it refuses the resolution
                (e.g. an output that does not match the step's output model).
            timeout: how long ``confirm`` waits.
        """
        needs = (
            _UNCONFIRMED.format(what="resolve")
            if step is not None
            else "resolve looks up the parked step there; or name it and send it unconfirmed "
            "(--step STEP --no-wait; step=, confirm=False)"
        )
        before = await self.get(saga_id, needs=needs) if confirm or step is None else None
        if before is not None and before.status != "parked":
            raise SagaStatusError(
                f"saga {saga_id!r} is {before.status}: only a parked saga is resolved"
                + _hint(before),
                saga_id=saga_id,
                status=before.status,
            )
        step = step or (before.current_step if before is not None else None)
        if step is None:
            raise CommandError(f"resolve {saga_id!r}: name the parked step (step=)")
        msg = resolve_message(saga_id, step, resolution, output).to_json()
        if not confirm or before is None:
            await self._send(saga_id, msg, wait=True)
            return None
        seq = before.seq
        return await self._confirm(
            saga_id, msg, exists=lambda v: v.seq > seq, timeout=timeout, what="resolve"
        )

    async def flush(self, *, timeout: timedelta = timedelta(minutes=5)) -> None:
        """Wait until every queued command (``wait=False``) is on the broker.

        A command whose delivery failed (the broker was away for longer than the
        producer's retries) is sent again until the broker acknowledges it: commands are
        idempotent (starting an existing saga, or cancelling one twice, does nothing).
        Raises :class:`~coordinator.CommandError` naming the saga ids still undelivered
        after ``timeout``: nothing queued is dropped silently.
        """
        if self._producer is None:
            return
        await self._producer.flush()
        queued, self._queued = self._queued, []
        failed: list[tuple[str, bytes]] = []
        for saga_id, value, delivery in queued:
            if not delivery.done():
                await asyncio.wait([delivery])
            if not _acknowledged(delivery):
                failed.append((saga_id, value))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        while failed:
            again: list[tuple[str, bytes]] = []
            for saga_id, value in failed:
                try:
                    await self._send(saga_id, value, wait=True)
                except KafkaError:
                    again.append((saga_id, value))
            failed = again
            if failed and loop.time() >= deadline:
                ids = ", ".join(saga_id for saga_id, _ in failed[:10])
                raise CommandError(
                    f"{len(failed)} queued command(s) never reached the broker within "
                    f"{timeout} (sagas {ids}{', ...' if len(failed) > 10 else ''}); check "
                    "that Kafka runs, then start them again (a start of an existing saga "
                    "does nothing)"
                )
            if failed:
                await asyncio.sleep(1.0)

    # -- queries ------------------------------------------------------------------------

    async def find(self, saga_id: str, *, needs: str = "") -> SagaView | None:
        """The saga's state from the worker that owns it, or None if there is no such saga.

        Read from a coordinator worker's web endpoint (``web_url``); raises
        :class:`~coordinator.CoordinatorUnavailable` naming it when none answers there.

        Args:
            saga_id: the saga.
            needs: why the caller needs the endpoint, and what it could do without (for
                the error).
        """
        url = f"{self.web_url}/sagas/{quote(saga_id, safe='')}/"
        try:
            response = await self._http.get(url)
        except httpx.TransportError as exc:
            raise CoordinatorUnavailable(
                f"no coordinator worker's web endpoint answered at {url} "
                f"({type(exc).__name__}): saga state is read there, so a worker must run "
                "with SAGA_WEB_ENABLED=true (the default) and SAGA_WEB_HOST/SAGA_WEB_PORT "
                f"(--url, web_url=) must point at it{'; ' + needs if needs else ''}"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CoordinatorUnavailable(
                f"{url} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        return SagaView.model_validate_json(response.content)

    async def get(self, saga_id: str, *, needs: str = "") -> SagaView:
        """The saga's state; raises :class:`~coordinator.SagaNotFoundError` if unknown.

        Args:
            saga_id: the saga.
            needs: as for :meth:`find`.
        """
        view = await self.find(saga_id, needs=needs)
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
        limit = self.settings.max_inbox_bytes
        if len(value) > limit:
            raise CommandError(
                f"saga {saga_id!r}: the command is too large ({len(value)} bytes, over "
                f"SAGA_MAX_INBOX_BYTES={limit}); keep large data out of saga inputs and "
                "outputs: store it elsewhere and pass a reference"
            )
        topic = self.settings.topics.inbox
        if wait:
            await self._producer.send_and_wait(topic, value, key=saga_id.encode())
        else:
            delivery = await self._producer.send(topic, value, key=saga_id.encode())
            self._queued.append((saga_id, value, delivery))
            if len(self._queued) > 4096:  # bulk submission: keep only what is unsettled
                self._queued = [q for q in self._queued if not _acknowledged(q[2])]

    async def _confirm(
        self,
        saga_id: str,
        payload: bytes,
        *,
        exists: Callable[[SagaView], bool],
        timeout: timedelta,
        what: str,
        event: str | None = None,
        watch: Sequence[str] | None = None,
    ) -> SagaView | None:
        """Send ``payload`` and wait for the coordinator's verdict on it.

        Accepted: the saga's view satisfies ``exists`` (or a lifecycle ``event`` of the
        saga arrives, when one is named). Refused: a dead letter carries exactly
        ``payload``; raises :class:`SagaRejected` with its reason. Neither within
        ``timeout``: raises :class:`CoordinatorUnavailable`.
        """
        topics = self.settings.topics
        watched = list(watch or [topics.deadletters])
        missing = [t for t in watched if t not in self._partitions]
        if missing:
            brokers = self.settings.kafka_bootstrap_servers
            self._partitions.update(await partition_counts(brokers, missing))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        async with KeyWatch(
            self.settings.kafka_bootstrap_servers,
            {t: self._partitions[t] for t in watched},
            saga_id,
        ) as keys:
            await self._send(saga_id, payload, wait=True)
            next_lookup = loop.time() + 0.3
            web_down = False
            while loop.time() < deadline:
                for record in await keys.poll(0.2):
                    if record.topic == topics.lifecycle and event in _event_types(record.value):
                        return None
                    if record.topic == topics.deadletters:
                        with contextlib.suppress(ValidationError):
                            letter = DeadLetter.model_validate_json(record.value)
                            if matches(letter, payload):
                                raise SagaRejected(saga_id, letter.reason)
                if loop.time() >= next_lookup:
                    next_lookup = loop.time() + 0.5
                    try:
                        view = await self.find(saga_id)
                    except CoordinatorUnavailable:
                        web_down = True
                        continue
                    web_down = False
                    if view is not None and exists(view):
                        return view
        web = (
            f"; no worker's web endpoint answered at {self.web_url} either (an existing saga "
            "is recognized there: check SAGA_WEB_HOST/SAGA_WEB_PORT or --url)"
            if web_down
            else ""
        )
        raise CoordinatorUnavailable(
            f"saga {saga_id!r}: no coordinator answered the {what} within "
            f"{timeout.total_seconds():g}s (the command is on {topics.inbox!r} and runs when "
            "a worker consumes it): is a worker running with this saga type in "
            "SAGA_DEFINITIONS, and the same SAGA_TOPIC_PREFIX?" + web
        )

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


def _event_types(value: bytes) -> list[str]:
    """The types of the lifecycle events a record carries (one, or a batch's)."""
    try:
        _, events = unpack_record(value)
    except ValueError:
        return []
    return [e["type"] for e in events if isinstance(e, dict) and isinstance(e.get("type"), str)]


def _acknowledged(delivery: asyncio.Future[Any]) -> bool:
    """Whether a queued command's delivery finished and the broker acknowledged it."""
    return delivery.done() and not delivery.cancelled() and delivery.exception() is None
