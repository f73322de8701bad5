"""The coordinator's Faust app: a thin imperative shell around the pure state machine.

* Before the consumer subscribes, every topic the worker uses is created (or found) and
  visible in the broker's metadata (``topics``), so no subscription is ever ignored.
* ``saga-inbox`` agent: its records go to their partition's lane (``lanes``) straight
  from the consumer (``HookedApp.direct``: Faust's per-record stream path cost several
  event-loop turns per record); the agent subscribes the topic. A lane
  applies its records in batches in the durable order of effects (``inbox``): saga
  records acknowledged by the changelog, then everything derived from them
  acknowledged, then the inbox offsets acked.
* in-process step attempts (``onehop``): the services this worker executes run as its
  own bounded tasks, started once the saga record is acknowledged, replying through the
  inbox: one Kafka hop per step. ``executor-<service>`` agents (``step_worker``) still
  serve those services' step topics (requests from workers that do not execute them).
  Remote services (any language) consume their step topic themselves.
* a timer: sends ``timer`` records for deadlines that passed (``deadlines``: a heap over
  the partitions this worker owns, rebuilt from the table after each rebalance), and
  starts the expiry of finished sagas, which the worker applies itself per partition
  (``expiry``), holding the partition's lock that its inbox batches also hold.
* a membership lease (``lease``): inbox batches, expiry rounds, timers and sent marks
  write nothing once this worker may have been expelled from its consumer group.
* ``GET /sagas/{saga_id}/``: the saga's state as JSON, routed to the worker owning it
  (table keys are the raw saga id, so routing agrees with the inbox partitioner).

Zero SQL: application state lives in Kafka only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import faust
from faust.types import TP
from faust.web import Request, Response, View
from pydantic import ValidationError

from coordinator._deadlines import DeadlineIndex, wake_of
from coordinator._delivery import (
    BATCH_BUFFER,
    AiokafkaBatches,
    Backoff,
    Record,
    deliver,
    is_too_large,
)
from coordinator._errors import CoordinatorUnavailable, SagaError
from coordinator._executor import StepExecutor
from coordinator._expiry import Expirer
from coordinator._faust_app import HookedApp, app_class
from coordinator._gc import settle_on_first_assignment
from coordinator._inbox import InboxProcessor
from coordinator._lanes import Lanes
from coordinator._lease import LeaseSettingsError, Membership
from coordinator._local import Recovery, batch_name, sent_mark
from coordinator._messages import TimerFired
from coordinator._onehop import StepTasks
from coordinator._queries import saga_view
from coordinator._registry import SagaRegistry, load_definitions
from coordinator._routing import saga_table
from coordinator._settings import CoordinatorSettings
from coordinator._state import SagaState
from coordinator._step_worker import StepWorker
from coordinator._tablestore import mark_key, table_store
from coordinator._topics import TABLE_NAME, changelog_topic, ensure_topics

log = logging.getLogger("coordinator")

#: seconds a revoke waits for the sent marks' acknowledgements (then the next owner of
#: those partitions re-sends their last batch, which is only a duplicate)
MARK_TIMEOUT = 5.0


class FaustSettingsError(SagaError, ValueError):
    """A Faust setting (set through Faust's own env) breaks a rule of the coordinator."""


class AppProducer(AiokafkaBatches):
    """The app's producer, looked up at send time (Faust builds it when the app starts)."""

    def __init__(self, app: faust.App) -> None:
        super().__init__(lambda: cast(Any, app.producer)._producer)
        self.app = app

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        """Faust's ``Producer.send``: enqueue a record; returns its delivery future."""
        return await self.app.producer.send(*args, **kwargs)


class _Received:
    """A record handed to a lane by the consumer (``HookedApp.direct``), with its ack."""

    __slots__ = ("consumer", "message")

    def __init__(self, message: Any, consumer: Any) -> None:
        self.message = message
        self.consumer = consumer

    def ack(self) -> bool:
        """Mark the record handled (counted by the consumer's next commit)."""
        return bool(self.consumer.ack(self.message))


def _nothing(partition: int) -> None:
    return None


def _skipping(hand: Callable[[Any], None], n: int) -> Callable[[Any], None]:
    """Fault injection (``SAGA_FAULT_SKIP_INBOX_RECORDS``): skip the first ``n`` records.

    The consumer passes them, they never reach a lane: as when Faust skips records.
    """
    left = n

    def skip_then_hand(message: Any) -> None:
        nonlocal left
        if left > 0:
            left -= 1
            return
        hand(message)

    return skip_then_hand


class Coordinator:
    """Builds and holds one coordinator Faust app (no work at import time)."""

    def __init__(self, settings: CoordinatorSettings, registry: SagaRegistry | None = None):
        self.settings = settings
        self.registry = registry or load_definitions(settings.definitions)
        self.topics = settings.topics
        self.app = self._make_app()
        #: the consumer's membership lease: no saga record or timer leaves without it. Of
        #: the timeouts the consumer really gets (Faust's conf, which Faust's own env
        #: BROKER_SESSION_TIMEOUT / BROKER_HEARTBEAT_INTERVAL set over SAGA_SESSION_TIMEOUT)
        conf = self.app.conf
        if conf.producer_acks != -1:  # Faust's env PRODUCER_ACKS sets it over the default
            raise FaustSettingsError(
                f"PRODUCER_ACKS={conf.producer_acks} (Faust's producer_acks): a saga record "
                "must be acknowledged by every in-sync replica before anything derived from "
                "it is sent (with 1, a leader lost before replicating drops a record whose "
                "effects went out; with 0 nothing is acknowledged at all). Unset it (or set "
                "it to all)"
            )
        if conf.consumer_group_instance_id:
            # a static member is replaced at once by a process that joins with its id
            # (the group hands it the assignment, no session timeout waited for)
            raise LeaseSettingsError(
                f"CONSUMER_GROUP_INSTANCE_ID={conf.consumer_group_instance_id!r} (Faust's "
                "consumer_group_instance_id) makes this worker a static group member: "
                "another process joining with that id takes its partitions at once, while "
                "the membership lease (coordinator._lease) lets this one write until its "
                "session timeout. Unset it: coordinator workers join as dynamic members"
            )
        self.membership = Membership(
            conf.broker_session_timeout,
            settings.lease_margin.total_seconds(),
            rebalance_timeout=conf.broker_rebalance_timeout,
            heartbeat_interval=conf.broker_heartbeat_interval,
        )
        self.app.membership = self.membership
        raw: dict[str, Any] = {
            "key_serializer": "raw",
            "value_serializer": "raw",
            "partitions": settings.partitions,
            "internal": True,
        }
        self.inbox = self.app.topic(self.topics.inbox, **raw)
        self.services = self.registry.services()
        self.inline_services = {n for n, svc in self.services.items() if svc.inline}
        self.executed = self._executed_services()
        self.step_topics = {
            name: self.app.topic(self.topics.step(name), **raw) for name in self.services
        }
        self.table = saga_table(self.app, TABLE_NAME, settings.partitions)
        self.store = table_store(self.table, settings.store, settings.partitions)
        self.executor = StepExecutor(self.registry, service_urls=settings.service_urls)
        self.deadlines = DeadlineIndex()
        self.producer = AppProducer(self.app)
        self.step_tasks = StepTasks(
            self.executor,
            self.producer,
            inbox=self.topics.inbox,
            partitions=settings.partitions,
            concurrency=settings.step_concurrency,
            queue=settings.step_queue,
            max_result_bytes=settings.max_inbox_bytes,
        )
        self.processor = InboxProcessor(
            settings,
            self.registry,
            self.producer,
            self.store,
            self.deadlines,
            self.executor,
            self.inline_services,
            tasks=self.step_tasks,
            onehop_services=self.executed,
            fence=self.membership,
        )
        self.processor.changelog = changelog_topic(settings)
        self.recovery = Recovery(self.processor.batches)
        self.expirer = Expirer(
            self.deadlines.expiry,
            self.store,
            self.producer,
            settings.retention_policy,
            written=self.processor.maybe_fault,
            waits=self.processor.unsent.__contains__,  # (the retry re-sends them first)
        )
        self.expirer.changelog = self.processor.changelog
        self.expirer.fence = self.membership
        self.inbox_lanes = self._lanes("inbox", self._handle_inbox, settings.batch_size)
        if self.executed:  # results of this worker's tasks skip the inbox (coordinator._local)
            self.step_tasks.local = self.inbox_lanes.put_local
        self.step_worker = StepWorker(settings, self.executor, self.producer)
        self.executor_lanes: dict[str, Lanes] = {}
        self._ready = False
        self._rebuilding: asyncio.Future[None] | None = None
        self._scanning: asyncio.Future[None] | None = None
        self._wire()

    def _executed_services(self) -> set[str]:
        """Services whose steps this worker runs in-process (neither remote nor inline)."""
        if not self.settings.run_executors:
            return set()
        wanted = set(self.settings.executors)
        return {
            name
            for name, service in self.services.items()
            if not (service.remote or service.inline) and (not wanted or name in wanted)
        }

    def _make_app(self) -> HookedApp:
        s = self.settings
        s.datadir.mkdir(parents=True, exist_ok=True)
        brokers = [f"kafka://{b.strip()}" for b in s.kafka_bootstrap_servers.split(",")]
        return app_class(int(s.fetch_max_wait.total_seconds() * 1000), s.fetch_min_bytes)(
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
            broker_session_timeout=s.session_timeout.total_seconds(),
            broker_heartbeat_interval=s.heartbeat_interval.total_seconds(),
            broker_commit_every=1000,
            broker_commit_interval=1.0,
            producer_linger_ms=1,
            producer_max_batch_size=BATCH_BUFFER,
            # lanes hold un-acked records on purpose; a rebalance stops them instead
            stream_wait_empty=False,
        )

    def _lanes(self, name: str, handler: Any, batch_size: int) -> Lanes:
        topic = self.topics.inbox if name == "inbox" else self.topics.step(name)
        # the inbox is read strictly in order (a skipped record is a lost command); a
        # skipped step request is retried by its saga's durable deadline
        strict = name == "inbox"

        def tp(partition: int) -> Any:
            return TP(topic, partition)

        def forget(events: list[Any]) -> None:
            unacked = self.app.consumer.unacked
            for event in events:
                unacked.discard(event.message)

        async def start_offset(partition: int) -> int:
            return await self.app.start_offset(topic, partition)

        async def seek(partition: int, offset: int) -> None:
            await self.app.consumer.seek(tp(partition), offset)

        async def position(partition: int) -> int | None:
            return await self.app.fetch_position(topic, partition)

        async def gap(partition: int, first: int, last: int) -> None:
            # offsets no consumer reads: Faust commits past them only if told
            await cast(Any, self.app.consumer)._add_gap(tp(partition), first, last)

        if strict:
            self.app.guarded_topics.add(topic)
        lanes = Lanes(
            name,
            handler,
            batch_size=batch_size,
            buffer=self.settings.partition_buffer,
            pause=lambda p: self.app.pause_after_fetch(tp(p)),
            resume=lambda p: self.app.resume_now(tp(p)),
            forget=forget,
            ack=self.app.lane_ack,
            start_offset=start_offset,
            seek=seek,
            position=position if strict else None,
            gap=gap,
            orphaned=self.step_tasks.orphaned,
            prelude=self.recovery.prelude if strict else None,
            ready=self.expirer.ready if strict else _nothing,
            strict=strict,
        )
        app = self.app  # records reach the lane without a Faust stream

        def hand(message: Any) -> None:
            lanes.dispatch(_Received(message, app.consumer))

        skip = self.settings.fault_skip_inbox_records if strict else 0
        self.app.direct[topic] = _skipping(hand, skip) if skip else hand
        return lanes

    def _wire(self) -> None:
        app = self.app
        app.setup_hooks.append(self._create_topics)
        if self.settings.fault_recovery_seek_lag:
            app.lag_recovery_seeks(self.settings.fault_recovery_seek_lag.total_seconds())
        app.revoke_hooks.append(self._on_revoke)
        app.agent(self.inbox, name="saga-inbox")(self._make_agent(self.inbox_lanes))
        served = self.executed if self.settings.serve_step_topics else set()
        for name in sorted(served):
            lanes = self._lanes(name, self.step_worker.handle, self.settings.executor_concurrency)
            self.executor_lanes[name] = lanes
            app.agent(self.step_topics[name], name=f"executor-{name}")(self._make_agent(lanes))
        interval = self.settings.timer_interval.total_seconds()
        app.timer(interval, name="saga-deadlines")(self._fire_deadlines)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)
        settle_on_first_assignment(app, self.settings)  # the latency tail: coordinator._gc
        app.task(self._announce)
        store = self.store

        @app.page("/sagas/{saga_id}/")
        @app.table_route(table=self.table, match_info="saga_id")
        async def get_saga(web: View, request: Request, saga_id: str) -> Response:
            raw = store.get(saga_id)
            if raw is None:
                return web.json({"error": f"no saga {saga_id!r} on this coordinator"}, status=404)
            return web.json(saga_view(SagaState.model_validate_json(raw)))

    @staticmethod
    def _make_agent(lanes: Lanes) -> Any:
        async def agent(stream: faust.StreamT[Any]) -> None:
            async for event in cast(Any, stream).noack().events():
                lanes.dispatch(event)

        return agent

    async def _create_topics(self) -> None:
        await ensure_topics(self.settings, sorted(self.services), changelog=True, timeout=120)

    async def _announce(self) -> None:
        self._ready = True
        print(f"coordinator ready: {self.settings.app_id} ({len(self.registry)} sagas)", flush=True)

    async def _handle_inbox(self, partition: int, events: list[Any], stopping: Any) -> None:
        async with self.expirer.lock(partition):  # never interleaved with its expiry
            await self.processor.handle(partition, events, stopping)

    # -- rebalances ---------------------------------------------------------------------

    async def _on_revoke(self, revoked: set[Any]) -> None:
        self.recovery.reset()  # lanes still waiting for the last batches stop waiting
        # No expiry writes to a partition another worker takes. The lanes stop at the same
        # time: an inbox batch retrying in place holds its partition's expiry lock until
        # its lane is told to stop, so stopping the expirer first could wait forever.
        inbox = asyncio.ensure_future(self.inbox_lanes.stop())
        await asyncio.gather(
            self.expirer.stop(self.inbox_lanes.stop_timeout),
            inbox,
            *(lanes.stop() for lanes in self.executor_lanes.values()),
        )
        # a lane that stopped cleanly sent everything it wrote: the next owner need not
        # re-send its partition's last batch (coordinator._local)
        marks = self.recovery.sent_marks(inbox.result())
        if marks and not (self.app.in_group() and self.membership.valid()):
            # expelled (or left) before this revoke: another worker may own them and have
            # written after this one; a mark behind its records would hide its last batch
            log.warning(
                "inbox partitions %s revoked after this worker lost its consumer group "
                "membership (paused past the session timeout?): no sent marks written, "
                "their next owner re-sends their last batch",
                sorted(marks),
            )
        else:
            await self._mark_sent(marks)
        if self.app.should_stop:
            # stopping: running step attempts get a few seconds to send their results;
            # at a mere rebalance they go on (their results reach the new owner)
            await self.step_tasks.close(timeout=5.0)
        self.processor.forget()
        try:  # what the lanes finished is committed before another worker takes over
            await self.app.consumer.commit()
        except Exception as exc:  # the next owner re-reads from the older offset
            log.warning("commit at a rebalance failed (%r); records will be re-read", exc)

    async def _mark_sent(self, marks: dict[int, int]) -> None:
        """Write ``marks`` (partition -> last batch sent in full) to the changelog, bounded.

        Unwritten, a partition's next owner re-sends its last batch: duplicates only.
        Kept locally too, but never as the store's applied changelog offset: records of
        another owner may lie between this worker's last one and the mark, and a restore
        (RocksDB) reads on from that offset. Missing locally, a mark is read back from the
        changelog at the next restore (or costs a re-send).
        """
        if not marks:
            return
        records = [
            Record(self.processor.changelog, mark_key(p).encode(), sent_mark(n), p)
            for p, n in marks.items()
        ]
        try:
            await asyncio.wait_for(
                deliver(self.producer, records, Backoff(lambda: False), what="sent marks"),
                timeout=MARK_TIMEOUT,
            )
        except Exception as exc:
            log.warning(
                "sent marks of inbox partitions %s not written (%r): their next owner "
                "re-sends their last batch",
                sorted(marks),
                exc,
            )
            return
        for record in records:
            assert record.partition is not None and record.key is not None
            self.store.write(record.partition, {record.key.decode(): record.value}, None)
        log.info(
            "sent marks written (partition: its last batch sent in full): %s",
            ", ".join(f"{p}: {batch_name(marks[p])}" for p in sorted(marks)),
        )

    def _on_rebalance_complete(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        held = {
            tp.partition
            for tp in self.app.consumer.assignment()
            if tp.topic == self.inbox.get_topic_name()
        }
        # expiry re-reads each record: an entry not yet queued waits; a partition waits
        # for its lane's prelude (a marker would drop the outbox the prelude re-sends)
        self.expirer.assigned = held
        # each lane waits for its partition's last batch before applying anything (the
        # scan is of this assignment: begun now, a revoke before it runs voids it)
        scan = self.recovery.scan(  # the generation fences stale writers
            held,
            self.store.entries(held),
            self.store.mark,
            generation=self.app.consumer_generation_id,
        )
        self._scanning = asyncio.ensure_future(self._scan_last_batches(scan, held))
        # a lane per held partition now: one whose every record Faust skipped (a worker
        # that died before its first commit, say) would otherwise never get a lane
        self.inbox_lanes.open(held)
        # in the background, yielding to the loop: parsing 100k+ records in one go blocks
        # heartbeats past the session timeout (another rebalance, and so on)
        self._rebuilding = asyncio.ensure_future(self._rebuild_deadlines(held))

    async def _scan_last_batches(self, scan: Coroutine[Any, Any, None], held: set[int]) -> None:
        try:
            await scan
        except Exception as exc:  # a bug: the lanes would wait for it forever
            log.exception("finding the last batches of partitions %s failed", sorted(held))
            await self.app.crash(exc)

    async def _rebuild_deadlines(self, held: set[int]) -> None:
        started = time.monotonic()
        try:
            stale = self._stale_changelog(held)
            if stale is not None:
                log.critical("%s", stale)
                await self.app.crash(CoordinatorUnavailable(stale))
                return
            if not await self.deadlines.rebuild(held, self.store.items(held)):
                return  # a newer rebalance rebuilds it
        except Exception:  # a bug: log it (a timer that raises would stop the app)
            log.exception("deadline index rebuild failed for partitions %s", sorted(held))
            return
        log.info(
            "deadline index rebuilt: %d sagas in partitions %s; %d finished sagas to expire "
            "(%.1fs)",
            len(self.deadlines),
            sorted(held),
            len(self.deadlines.expiry),
            time.monotonic() - started,
        )

    def _stale_changelog(self, held: set[int]) -> str | None:
        """An error naming the fix if the table holds records under JSON-quoted keys.

        Versions before raw-key routing wrote the table's changelog with keys ``"id"``
        (JSON); this one looks sagas up by the raw id, so it would not find them.
        """
        first = next(iter(self.store.items(held)), None)
        if first is None:
            return None
        try:
            saga_id = wake_of(first[1]).saga_id
        except ValidationError:
            return None  # not a saga record at all: the rebuild logs it
        if self.store.get(saga_id) is not None:
            return None
        return (
            f"the saga table's changelog {changelog_topic(self.settings)!r} holds saga "
            f"{saga_id!r} under another key (JSON-quoted ids, written by a version before "
            "raw-key routing): this version cannot read it. Start it with a new SAGA_APP_ID "
            "and SAGA_TOPIC_PREFIX and let the old deployment drain (README: Upgrading)"
        )

    # -- deadlines ----------------------------------------------------------------------

    async def _fire_deadlines(self) -> None:
        if not self._ready:  # the producer may not run yet
            return
        # A timer that raises crashes the whole Faust app: log and try again next tick.
        try:
            self.expirer.tick()
            await self._fire_due()
        except Exception:
            log.exception("deadline timer: unexpected error (retrying next tick)")

    async def _fire_due(self) -> None:
        if not self.membership.valid():  # the partitions may be another worker's now
            return
        due = self.deadlines.due(time.time())
        if not due:
            return
        sent: list[tuple[tuple[str, float, int], Any]] = []
        for entry in due:
            saga_id, deadline, partition = entry
            later = self.step_tasks.postpone(saga_id, deadline)
            if later is not None:  # its attempt's result is on the inbox, ahead of a timer
                self.deadlines.restore(saga_id, later, partition)
                continue
            fired = TimerFired(saga_id=saga_id).to_json()
            r = Record(self.topics.inbox, saga_id.encode(), fired, partition)
            try:
                fut = await self.producer.send(r.topic, r.key, r.value, r.partition, None, None)
                sent.append((entry, fut))
            except Exception as exc:
                self._timer_failed(entry, exc)
        for entry, fut in sent:
            try:
                await fut
            except Exception as exc:
                self._timer_failed(entry, exc)

    def _timer_failed(self, entry: tuple[str, float, int], exc: BaseException) -> None:
        saga_id, deadline, partition = entry
        level = logging.ERROR if is_too_large(exc) else logging.WARNING
        log.log(level, "timer for saga %r not sent (%r); retrying next tick", saga_id, exc)
        self.deadlines.restore(saga_id, deadline, partition)


def create_app(
    settings: CoordinatorSettings | None = None, registry: SagaRegistry | None = None
) -> Coordinator:
    """Build the coordinator app from settings (env ``SAGA_*`` when omitted)."""
    return Coordinator(settings or CoordinatorSettings(), registry)
