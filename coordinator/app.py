"""The coordinator's Faust app: a thin imperative shell around the pure state machine.

* ``saga-inbox`` agent: decode → ``machine.transition`` → send step requests and lifecycle
  events → write the saga record to the changelog-backed table. Invalid messages go to
  the dead-letter topic; the agent never raises (Faust would ack and drop the message).
* ``executor-<service>`` agents: run step actions (callables or HTTP) and reply to the
  inbox. Remote services (any language) consume their step topic themselves instead.
* a timer: sends ``timer`` messages for deadlines that passed, for the sagas in the
  partitions this worker holds (an in-memory index, rebuilt from the table periodically).
* ``GET /sagas/{saga_id}/``: the saga's state as JSON, routed to the worker owning it.

Zero SQL: application state lives in Kafka only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.web import Request, Response, View
from pydantic import ValidationError

from coordinator.events import DeadLetter
from coordinator.executor import StepExecutor
from coordinator.faust_app import app_class
from coordinator.machine import Transition, transition
from coordinator.messages import StepRequest, TimerFired, parse_inbox
from coordinator.queries import saga_view
from coordinator.registry import SagaRegistry, load_definitions
from coordinator.settings import CoordinatorSettings
from coordinator.state import SagaState

log = logging.getLogger("coordinator")

#: failures of the broker connection: retried in place, never dead-lettered
TRANSIENT: tuple[type[BaseException], ...] = (KafkaError, ProducerSendError)


class Coordinator:
    """Builds and holds one coordinator Faust app (no work at import time)."""

    def __init__(self, settings: CoordinatorSettings, registry: SagaRegistry | None = None):
        self.settings = settings
        self.registry = registry or load_definitions(settings.definitions)
        self.topics = settings.topics
        self.app = self._make_app()
        raw: dict[str, Any] = {
            "key_serializer": "raw",
            "value_serializer": "raw",
            "partitions": settings.partitions,
            "internal": True,
        }
        # the broker stamps inbox records: transitions never read a sender's clock
        self.inbox = self.app.topic(
            self.topics.inbox, config={"message.timestamp.type": "LogAppendTime"}, **raw
        )
        self.lifecycle = self.app.topic(self.topics.lifecycle, **raw)
        self.deadletters = self.app.topic(self.topics.deadletters, **raw)
        self.services = self.registry.services()
        self.inline_services = {n for n, svc in self.services.items() if svc.inline}
        self.step_topics = {
            name: self.app.topic(self.topics.step(name), **raw) for name in self.services
        }
        self.table = self.app.Table("saga-state", partitions=settings.partitions, key_type=str)
        self.executor = StepExecutor(self.registry, service_urls=settings.service_urls)
        self.deadlines: dict[str, float] = {}
        self._live: dict[str, SagaState] = {}
        self._ready = False
        self._rescan = True  # index the table's pending deadlines once partitions settle
        self._wire()

    def _make_app(self) -> faust.App:
        s = self.settings
        s.datadir.mkdir(parents=True, exist_ok=True)
        brokers = [f"kafka://{b.strip()}" for b in s.kafka_bootstrap_servers.split(",")]
        return app_class(s.fetch_max_wait_ms)(
            s.app_id,
            broker=brokers,
            store=s.store,
            datadir=str(s.datadir / s.app_id),
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            table_standby_replicas=s.standby_replicas,
            web_enabled=s.web_enabled,
            web_port=s.web_port,
            web_bind=s.web_host,
            web_host=s.web_host,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.session_timeout,
            broker_heartbeat_interval=min(3.0, s.session_timeout / 3),
            broker_commit_every=1000,
            broker_commit_interval=1.0,
            producer_linger_ms=1,
        )

    def _wire(self) -> None:
        app = self.app
        app.agent(self.inbox, name="saga-inbox")(self._inbox_agent)
        wanted = set(self.settings.executors)
        if self.settings.run_executors:
            for name, service in self.services.items():
                if service.remote or service.inline or (wanted and name not in wanted):
                    continue
                app.agent(
                    self.step_topics[name],
                    name=f"executor-{name}",
                    concurrency=self.settings.executor_concurrency,
                )(self._executor_agent)
        app.timer(self.settings.timer_interval, name="saga-deadlines")(self._fire_deadlines)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)
        app.task(self._declare_topics)
        table = self.table

        @app.page("/sagas/{saga_id}/")
        @app.table_route(table=table, match_info="saga_id")
        async def get_saga(web: View, request: Request, saga_id: str) -> Response:
            raw = table.get(saga_id)
            if raw is None:
                return web.json({"error": f"no saga {saga_id!r} on this coordinator"}, status=404)
            return web.json(saga_view(SagaState.model_validate(raw)))

    async def _declare_topics(self) -> None:
        for topic in (self.lifecycle, self.deadletters, *self.step_topics.values()):
            await topic.maybe_declare()
        self._ready = True
        print(f"coordinator ready: {self.settings.app_id} ({len(self.registry)} sagas)", flush=True)

    # -- agents -------------------------------------------------------------------------

    async def _inbox_agent(self, stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await self._handle_holding_partition(event)

    async def _handle_holding_partition(self, event: Any) -> None:
        """Apply one inbox message; never let an exception escape (Faust would drop it).

        Kafka unavailable: retry in place with backoff, holding the partition, so nothing
        is lost. Anything else is a bug: the message goes to the dead-letter topic.
        """
        delay = 0.1
        while True:
            try:
                try:
                    await self.handle_inbox(event.key, event.value, event.message)
                except TRANSIENT:
                    raise
                except Exception as exc:
                    log.exception("inbox: unexpected error")
                    self._live.clear()  # a transition that raised may have half-updated one
                    await self.dead_letter(event.message, f"internal error: {exc!r}", exc, "inbox")
                return
            except TRANSIENT as exc:
                # the failed attempt advanced the cached state in place; ``_load`` would
                # notice it no longer matches the table, but do not rely on that alone
                self._live.clear()
                log.warning("inbox: Kafka unavailable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def handle_inbox(self, key: bytes | None, value: bytes, message: Any) -> None:
        """Apply one inbox record: decode, transition, send what it emits, store it."""
        try:
            msg = parse_inbox(value)
        except ValidationError as exc:
            await self.dead_letter(message, f"invalid inbox message: {exc}", exc, "inbox")
            return
        if key is None or key.decode(errors="replace") != msg.saga_id:
            reason = f"inbox key {key!r} must equal saga_id {msg.saga_id!r} (partitioning)"
            await self.dead_letter(message, reason, ValueError(reason), "inbox")
            return
        state = self._load(msg.saga_id)
        msg_id = f"{message.partition}:{message.offset}"
        out = transition(
            self.registry,
            state,
            msg,
            now=broker_time(message),
            message_id=msg_id,
            reply_to=self.topics.inbox,
            copy=False,  # ``state`` was decoded for this message alone; no one else holds it
            retention=self.settings.retention_policy,
        )
        if out.deleted:  # retention ended: a tombstone on the changelog
            self.table.pop(msg.saga_id, None)
            self.deadlines.pop(msg.saga_id, None)
            self._live.pop(msg.saga_id, None)
            return
        if out.rejected:
            await self.dead_letter(message, out.rejected, None, "inbox")
        outbox, final = list(out.outbox), out.state
        if out.changed and final is not None:
            final, outbox = await self._run_inline(out, final, msg_id, outbox)
        # send before the table write: a crash in between replays the message, which
        # re-emits this outbox (same seq, same idempotency keys) — duplicates, never loss
        for item in outbox:
            if item["kind"] == "event":
                await self._send(self.lifecycle, key, item["payload"].encode())
            elif item["service"] not in self.inline_services:
                await self._send(self.step_topics[item["service"]], key, item["payload"].encode())
        if out.changed and final is not None:
            self.table[msg.saga_id] = final.model_dump(mode="json")
            self._index(final)
            if final.resting:
                self._live.pop(msg.saga_id, None)
            else:
                self._live[msg.saga_id] = final

    async def _run_inline(
        self, out: Transition, state: SagaState, msg_id: str, outbox: list[dict[str, str]]
    ) -> tuple[SagaState, list[dict[str, str]]]:
        """Run requests of inline services now and apply their results (local activities).

        The whole chain belongs to this inbox message: its combined outbox is stored as
        the message's outbox, so a redelivery after a crash re-sends all of it.
        """
        requests = [r for r in out.requests if r.service in self.inline_services]
        chained = False
        while requests:
            request = requests.pop(0)
            result = await self.executor.execute(request)
            step = transition(
                self.registry,
                state,
                result,
                now=datetime.now(UTC),  # the chain's record is stored before it is sent
                reply_to=self.topics.inbox,
                copy=False,
            )
            if step.changed:
                chained = True
                outbox.extend(step.outbox)
                requests.extend(r for r in step.requests if r.service in self.inline_services)
            if step.state is not None:
                state = step.state
        if chained:
            state.last_message, state.last_outbox = msg_id, outbox
        return state, outbox

    def _load(self, saga_id: str) -> SagaState | None:
        """The saga's record; the decoded object is reused while the table agrees with it.

        The table is the truth: after a rebalance another worker may have moved the saga
        on, which shows as a different ``seq``/``last_message``, and the record is decoded
        again. Only sagas in flight are cached.
        """
        raw = self.table.get(saga_id)
        if raw is None:
            self._live.pop(saga_id, None)
            return None
        cached = self._live.get(saga_id)
        if cached is not None and (cached.seq, cached.last_message) == (
            raw.get("seq"),
            raw.get("last_message"),
        ):
            return cached
        return SagaState.model_validate(raw)

    async def _executor_agent(self, stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                request = StepRequest.model_validate_json(event.value)
            except ValidationError as exc:
                with contextlib.suppress(*TRANSIENT):
                    await self.dead_letter(
                        event.message, f"invalid step request: {exc}", exc, "executor"
                    )
                continue
            result = await self.executor.execute(request)
            try:
                await self._send(self.inbox, request.saga_id.encode(), result.to_json())
            except Exception:
                # the saga's durable deadline re-sends this attempt, same idempotency key
                log.exception("executor: could not deliver the result of %s", request.step)

    async def _send(self, topic: faust.TopicT, key: bytes | None, value: bytes) -> None:
        """Produce without Faust's per-message bookkeeping (~40% of a send's cost).

        Faust flushes this same producer before it commits offsets, so the at-least-once
        ordering (outputs on the broker before the inbox offset moves) is unchanged.
        """
        await self.app.producer.send(topic.get_topic_name(), key, value, None, None, None)

    # -- deadlines ----------------------------------------------------------------------

    def _index(self, state: SagaState) -> None:
        wake = state.wake_at()
        if wake is None:
            self.deadlines.pop(state.saga_id, None)
        else:
            self.deadlines[state.saga_id] = wake.timestamp()

    def _on_rebalance_complete(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        self._rescan = True  # partitions (and their sagas' deadlines) may have moved here

    async def _fire_deadlines(self) -> None:
        if not self._ready:  # the producer may not run yet
            return
        # A timer that raises crashes the whole Faust app: log and try again next tick.
        try:
            await self._fire_due_deadlines()
        except Exception:
            log.exception("deadline timer: unexpected error (retrying next tick)")

    async def _fire_due_deadlines(self) -> None:
        now = time.time()
        if self._rescan:
            # only after a rebalance: a full scan grows with every saga ever run, and
            # the agent keeps the index current for the partitions it processes
            self._rescan = False
            for saga_id, raw in list(self.table.items()):
                wake = SagaState.model_validate(raw).wake_at()
                if wake is not None:
                    self.deadlines.setdefault(saga_id, wake.timestamp())
        due = [saga_id for saga_id, at in self.deadlines.items() if at <= now]
        for saga_id in due:
            # the inbox agent may have moved this saga on while we awaited a send
            if self.deadlines.pop(saga_id, None) is None:
                continue
            fired = TimerFired(saga_id=saga_id).to_json()
            await self._send(self.inbox, saga_id.encode(), fired)

    # -- dead letters -------------------------------------------------------------------

    async def dead_letter(
        self, message: Any, reason: str, exc: BaseException | None, agent: str
    ) -> None:
        """Send a message this agent cannot use to the dead-letter topic, with why."""
        letter = DeadLetter(
            source_topic=getattr(message, "topic", "?"),
            partition=getattr(message, "partition", None),
            offset=getattr(message, "offset", None),
            key=(message.key.decode(errors="replace") if getattr(message, "key", None) else None),
            value_b64=DeadLetter.encode_value(getattr(message, "value", b"")),
            reason=reason[:4000],
            error_type=type(exc).__name__ if exc else "Rejected",
            agent=agent,
            occurred_at=datetime.now(UTC),
        )
        log.warning("dead letter from %s: %s", agent, reason[:300])
        await self.deadletters.send(
            key=message.key if getattr(message, "key", None) else None, value=letter.to_json()
        )


LOG_APPEND_TIME = 1  # Kafka's timestamp type of a record stamped by the broker


def broker_time(message: Any) -> datetime:
    """The one clock of a transition: the broker's log-append timestamp of the record.

    An inbox created by someone else with ``CreateTime`` carries the *sender's* clock;
    then the owning worker's clock is used instead (the record is stored before anything
    derived from it is sent, and a redelivery re-sends the stored outbox).
    """
    timestamp = getattr(message, "timestamp", None)
    if not timestamp or getattr(message, "timestamp_type", None) != LOG_APPEND_TIME:
        return datetime.now(UTC)
    return datetime.fromtimestamp(float(timestamp), UTC)


def create_app(
    settings: CoordinatorSettings | None = None, registry: SagaRegistry | None = None
) -> Coordinator:
    """Build the coordinator app from settings (env ``SAGA_*`` when omitted)."""
    return Coordinator(settings or CoordinatorSettings(), registry)
