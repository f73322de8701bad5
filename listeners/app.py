"""The listeners' Faust app: lifecycle topic in, business state out, queries over HTTP.

Built by :func:`create_app` from :class:`~listeners.settings.ListenerSettings`; nothing
is created at import time.

Acks and offsets: the agent reads with ``Stream.noack_take``, which buffers events and
never acks them; the agent acks a batch itself, after :class:`BatchProcessor` has
committed it. (``Stream.take`` acks a batch in a ``finally`` when its generator is
resumed *or closed*, so a worker stopping while the database is down would ack, and
Faust would then commit, events that were never written.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
import sqlalchemy as sa
from faust.streams import Stream
from faust.types import EventT
from faust.web import Request, Response, View

from coordinator.events import DeadLetter
from listeners.builtin import default_listeners
from listeners.db import SqlCounter, create_db_engine, session_factory
from listeners.decoding import RawRecord
from listeners.errors import InvalidQueryError, OrderNotFoundError
from listeners.framework import Listener
from listeners.orders.queries import get_order, list_orders
from listeners.processor import BatchProcessor
from listeners.settings import ListenerSettings

__all__ = ["READY_LINE", "ListenerApp", "create_app"]

log = logging.getLogger(__name__)

#: Printed once the worker's agent is running (tests and scripts wait for it).
READY_LINE = "LISTENER-READY"


@dataclass(frozen=True)
class ListenerApp:
    """A built listener worker: the Faust app and what it is wired to.

    Attributes:
        app: The Faust app (``app.main()`` runs the worker CLI).
        agent: The agent consuming the lifecycle topic.
        processor: Applies batches; ``processor.stats`` has running totals.
        engine: Engine of the listener database.
        settings: The settings it was built from.
    """

    app: faust.App
    agent: Any
    processor: BatchProcessor
    engine: sa.Engine
    settings: ListenerSettings


def raw_record(event: EventT) -> RawRecord:
    """The raw record behind a Faust event (raw serializers: bytes in, bytes out)."""
    message = event.message
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=cast(bytes | None, event.key),
        value=cast(bytes | None, event.value),
    )


def create_app(
    settings: ListenerSettings | None = None,
    *,
    listeners: Sequence[Listener[Any]] | None = None,
) -> ListenerApp:
    """Build the listeners' Faust app.

    Args:
        settings: Defaults to ``ListenerSettings()`` (the environment).
        listeners: Listeners sharing the settings' database; defaults to
            :func:`default_listeners`.
    """
    settings = settings or ListenerSettings()
    listeners = list(listeners) if listeners is not None else default_listeners(settings)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        datadir=str(settings.data_dir),
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
    )
    topic_options: dict[str, Any] = {
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": settings.partitions,
        "internal": True,
    }
    lifecycle = app.topic(settings.lifecycle_topic, **topic_options)
    deadletters = app.topic(settings.deadletter_topic, **topic_options)

    async def send_dead_letter(letter: DeadLetter) -> None:
        key = letter.key.encode() if letter.key is not None else None
        delivery = await deadletters.send(key=key, value=letter.to_json())
        await delivery  # the dead letter is on the broker before the batch is acked

    engine = create_db_engine(settings.database_url)
    sql = SqlCounter(engine)
    processor = BatchProcessor(
        listeners=listeners,
        sessions=session_factory(engine),
        dead_letters=send_dead_letter,
        agent=f"{settings.app_id}.apply",
        max_delay=settings.retry_max_delay,
    )
    batch_size, within = settings.batch_size, settings.batch_window.total_seconds()

    async def apply(stream: faust.StreamT[Any]) -> None:
        async for batch in cast(Stream[Any], stream).noack_take(batch_size, within=within):
            events = cast(Sequence[EventT], batch)  # noack_take buffers events, not values
            await processor.process([raw_record(event) for event in events])
            for event in events:
                await stream.ack(event)

    agent = app.agent(lifecycle, name=f"{settings.app_id}.apply")(apply)

    @app.task
    async def announce() -> None:
        await deadletters.maybe_declare()
        log.info("listening to %s with %d listener(s)", settings.lifecycle_topic, len(listeners))
        print(READY_LINE, flush=True)

    _add_pages(app, processor, sql)
    return ListenerApp(app, agent, processor, engine, settings)


def _add_pages(app: faust.App, processor: BatchProcessor, sql: SqlCounter) -> None:
    sessions = processor.sessions

    @app.page("/orders/{order_id}")
    async def order(web: View, request: Request, order_id: str) -> Response:
        """One order: status, the service it is with, its timeline."""

        def query() -> dict[str, Any]:
            with sessions() as session:
                return get_order(session, order_id).model_dump(mode="json")

        try:
            return web.json(await asyncio.to_thread(query))
        except OrderNotFoundError as exc:
            return web.json({"error": str(exc)}, status=404)

    @app.page("/orders")
    async def orders(web: View, request: Request) -> Response:
        """Orders by status: ``GET /orders?status=paid&limit=50``."""
        status = request.query.get("status", "")
        try:
            limit = int(request.query.get("limit", "100"))

            def query() -> list[dict[str, Any]]:
                with sessions() as session:
                    found = list_orders(session, status, limit=limit)
                    return [item.model_dump(mode="json") for item in found]

            return web.json({"status": status, "orders": await asyncio.to_thread(query)})
        except (InvalidQueryError, ValueError) as exc:
            return web.json({"error": str(exc)}, status=400)

    @app.page("/listeners/stats")
    async def stats(web: View, request: Request) -> Response:
        """Running totals of the batch processor."""
        return web.json({**processor.stats.as_dict(), **sql.as_dict()})
