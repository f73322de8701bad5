"""The listeners' Faust app: lifecycle topic in, business state out, queries over HTTP.

Built by :func:`create_app` from :class:`~listeners._settings.ListenerSettings`; nothing
is created at import time.

Records: the worker's consumer hands each lifecycle record to an
:class:`~listeners._intake.Intake` as it drains a fetch (no Faust stream per record); the
intake applies them in batches and acks a batch once :class:`BatchProcessor` committed
it. The agent subscribes the topic; under ``agent.test_context()`` it applies what it is
given the same way: it reads with ``Stream.noack_take``, which buffers events and
never acks them, and acks a batch itself, after :class:`BatchProcessor` has
committed it. (``Stream.take`` acks a batch in a ``finally`` when its generator is
resumed *or closed*, so a worker stopping while the database is down would ack, and
Faust would then commit, events that were never written.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import pydantic_core
import sqlalchemy as sa
from faust.streams import Stream
from faust.types import EventT
from faust.web import Request, Response, View

from coordinator._faust_app import app_class
from coordinator._gc import settle_on_first_assignment
from coordinator.events import DeadLetter
from listeners._db import SqlCounter, create_db_engine, session_factory
from listeners._declarative import Listener
from listeners._decoding import RawRecord
from listeners._errors import EntityNotFoundError, InvalidQueryError, ListenerConfigError
from listeners._intake import Intake
from listeners._processor import BatchProcessor, Target
from listeners._queries import get_entity, list_entities
from listeners._registry import load_listeners
from listeners._settings import ListenerSettings
from listeners._topics import LIFECYCLE_TOPIC_CONFIG

__all__ = ["LIFECYCLE_TOPIC_CONFIG", "READY_LINE", "ListenerApp", "create_app"]

log = logging.getLogger(__name__)

#: the consumer's long-poll: an idle partition's first record waits at most this long
FETCH_MAX_WAIT_MS = 100
#: how long a rebalance waits for the batch being applied before abandoning it (re-read)
REVOKE_TIMEOUT = 10.0

#: Printed once the worker's agent is running (tests and scripts wait for it).
READY_LINE = "LISTENER-READY"
_RESERVED = frozenset({"listeners"})


@dataclass(frozen=True)
class ListenerApp:
    """A built listener worker: the Faust app and what it is wired to.

    Attributes:
        app: The Faust app (``app.main()`` runs the worker CLI).
        agent: The agent consuming the lifecycle topic.
        processor: Applies batches; ``processor.stats`` has running totals.
        engine: Engine of the (first) listener database.
        settings: The settings it was built from.
        listeners: The listeners it runs.
        engines: Engine of each listener database, by URL.
    """

    app: faust.App
    agent: Any
    processor: BatchProcessor
    engine: sa.Engine
    settings: ListenerSettings
    listeners: list[Listener[Any]] = field(default_factory=list)
    engines: dict[str, sa.Engine] = field(default_factory=dict)

    def dispose(self) -> None:
        """Close every database engine."""
        for engine in self.engines.values():
            engine.dispose()


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


def raw_message(message: Any) -> RawRecord:
    """The raw record of a consumer message (what the consumer hands over directly)."""
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
    )


def create_app(
    settings: ListenerSettings | None = None,
    *,
    listeners: Sequence[Listener[Any]] | None = None,
    declare_topics: bool = True,
) -> ListenerApp:
    """Build the listeners' Faust app.

    Args:
        settings: Defaults to ``ListenerSettings()`` (the environment).
        listeners: Listeners to run; defaults to ``settings.listeners``. Each writes to
            ``settings.database_url_of(name)``; listeners sharing a database share its
            transaction per batch.
        declare_topics: False when the topics were created beforehand
            (``listeners._topics.ensure_topics``, as the worker command does): Faust's own
            declaration at start-up can die on a fresh cluster.
    """
    settings = settings or ListenerSettings()
    listeners = list(listeners) if listeners is not None else load_listeners([], settings)
    for listener in listeners:
        if listener.name in _RESERVED:
            raise ListenerConfigError(
                f"listener name {listener.name!r} is reserved (GET /listeners/stats); rename it"
            )
    app = app_class(FETCH_MAX_WAIT_MS, settings.fetch_min_bytes)(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        datadir=str(settings.data_dir),
        autodiscover=False,
        topic_allow_declare=declare_topics,
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
    lifecycle = app.topic(settings.lifecycle_topic, config=LIFECYCLE_TOPIC_CONFIG, **topic_options)
    deadletters = app.topic(settings.deadletter_topic, **topic_options)

    async def send_dead_letter(letter: DeadLetter) -> None:
        key = letter.key.encode() if letter.key is not None else None
        delivery = await deadletters.send(key=key, value=letter.to_json())
        await delivery  # the dead letter is on the broker before the batch is acked

    engines: dict[str, sa.Engine] = {}
    grouped: dict[str, list[Listener[Any]]] = {}
    for listener in listeners:
        url = settings.database_url_of(listener.name)
        grouped.setdefault(url, []).append(listener)
        if url not in engines:
            engines[url] = create_db_engine(url)
    counters = [SqlCounter(engine) for engine in engines.values()]
    processor = BatchProcessor(
        targets=[Target(session_factory(engines[url]), group) for url, group in grouped.items()],
        dead_letters=send_dead_letter,
        agent=f"{settings.app_id}.apply",
        max_delay=settings.retry_max_delay,
        max_event_bytes=settings.max_event_bytes,
    )
    batch_size, within = settings.batch_size, settings.batch_window.total_seconds()

    async def apply(stream: faust.StreamT[Any]) -> None:
        async for batch in cast(Stream[Any], stream).noack_take(batch_size, within=within):
            events = cast(Sequence[EventT], batch)  # noack_take buffers events, not values
            await processor.process([raw_record(event) for event in events])
            for event in events:
                await stream.ack(event)

    agent = app.agent(lifecycle, name=f"{settings.app_id}.apply")(apply)

    # the worker's records skip Faust's per-record stream path (the agent above subscribes
    # the topic, and serves ``agent.test_context()``)
    async def apply_messages(messages: list[Any]) -> None:
        await processor.process([raw_message(message) for message in messages])

    intake = Intake(
        apply_messages, lambda m: app.consumer.ack(m), batch_size=batch_size, window=within
    )
    app.direct[settings.lifecycle_topic] = intake.put

    async def on_revoke(revoked: set[Any]) -> None:
        await intake.stop(REVOKE_TIMEOUT)

    app.revoke_hooks.append(on_revoke)
    settle_on_first_assignment(app, settings)  # the latency tail: coordinator._gc

    @app.task
    async def announce() -> None:
        await deadletters.maybe_declare()
        names = ", ".join(listener.name for listener in listeners)
        log.info("listening to %s with listener(s) %s", settings.lifecycle_topic, names)
        print(READY_LINE, flush=True)

    for listener in listeners:
        _add_pages(app, listener, processor)

    @app.page("/listeners/stats")
    async def stats(web: View, request: Request) -> Response:
        """Running totals of the batch processor and SQL sent (all databases)."""
        sql = {"sql_statements": 0, "sql_commits": 0}
        for counter in counters:
            for name, value in counter.as_dict().items():
                sql[name] += value
        return web.json({**processor.stats.as_dict(), **sql})

    first = next(iter(engines.values())) if engines else create_db_engine("sqlite://")
    return ListenerApp(app, agent, processor, first, settings, listeners, engines)


def _add_pages(app: faust.App, listener: Listener[Any], processor: BatchProcessor) -> None:
    """``GET /{name}/{key}`` (one entity) and ``GET /{name}?attr=value&limit=N`` (a list)."""
    sessions = processor.sessions_of(listener)
    name = listener.name

    async def one(web: View, request: Request, key: str) -> Response:
        def query() -> dict[str, Any]:
            with sessions() as session:
                return get_entity(session, listener, key).model_dump(mode="json")

        try:
            return web.json(await asyncio.to_thread(query))
        except EntityNotFoundError as exc:
            return web.json({"error": str(exc)}, status=404)

    async def many(web: View, request: Request) -> Response:
        filters = {k: v for k, v in request.query.items() if k != "limit"}
        try:
            limit = int(request.query.get("limit", "100"))

            def query() -> list[dict[str, Any]]:
                with sessions() as session:
                    found = list_entities(session, listener, filters, limit=limit)
                    return [item.model_dump(mode="json") for item in found]

            found = await asyncio.to_thread(query)
        except (InvalidQueryError, ValueError) as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json({"listener": name, **filters, name: found})

    for path, query in listener.pages.items():
        app.page(path, name=f"{name}-{path}")(_custom_page(query, sessions))
    one.__doc__ = f"One {name} entity: its newest saga, timeline and history."
    many.__doc__ = f"{name} entities filtered by attribute: ?status=...&limit=N."
    app.page(f"/{name}/{{key}}", name=f"{name}-one")(one)
    app.page(f"/{name}", name=f"{name}-list")(many)


def _custom_page(query: Any, sessions: Any) -> Any:
    """A Faust view running a listener's own ``@listener.page`` query in a thread."""

    async def view(web: View, request: Request, **params: Any) -> Response:
        def run() -> Any:
            with sessions() as session:
                found = query(session, **params)
            return pydantic_core.to_jsonable_python(found)

        try:
            return web.json(await asyncio.to_thread(run))
        except EntityNotFoundError as exc:
            return web.json({"error": str(exc)}, status=404)
        except InvalidQueryError as exc:
            return web.json({"error": str(exc)}, status=400)

    view.__doc__ = query.__doc__
    return view
