"""A Faust app class whose Kafka consumer long-polls briefly, with two lifecycle hooks.

* ``setup_hooks`` run once before any child service starts: the consumer subscribes only
  after they return (the coordinator creates its topics there).
* ``revoke_hooks`` run first thing in a rebalance, before Faust waits for in-flight
  messages (the coordinator stops its partition lanes there), and first thing when the
  app stops (so a graceful stop finishes the batches in progress and commits them).

Its consumer also guards the offsets of the topics the coordinator reads through its
partition lanes (``guarded_topics``): only the lanes' own acks count there. Faust acks
records it skips on its own (fetched before flow control resumed, or of an older
generation); counted, they let a commit pass records no agent ever saw, and a crash then
loses them (a start that never ran). ``start_offset`` tells a lane where its partition's
committed position is, so it can notice a skipped record and seek back to it;
``fetch_position`` tells an idle lane whether the consumer moved past the offset it
expects (every record Faust skipped, and no later one arrived to show the gap).

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for its aiokafka consumer. aiokafka
sends one fetch per broker for the partitions that have no buffered records; a partition
that receives data while such a fetch waits on *other* partitions is read only when that
fetch returns — up to 1.5 s later. A saga step crosses two topics (inbox → step topic →
inbox), so under a steady trickle of traffic every hop paid up to 1.5 s (measured: p50
~2 s per step with the machine mostly idle). A short long-poll bounds that wait.

Its consumer's Kafka client reports the group's heartbeats and SyncGroups to the app's
``membership`` lease (``coordinator._lease``), hooked before the consumer starts.

Records of the topics the coordinator reads through its lanes go to the lanes directly
(``direct``): Faust's drain loop hands each record to a stream through two tasks and an
``asyncio.wait`` (``wait_first``), several turns of the event loop per record, which
bounded the whole worker to one record per lane per turn (measured: lanes applying
batches of 1.02 records while 5,000 waited in the consumer). The direct path calls the
lane synchronously and drops nothing on its own (no read-offset filter: a re-read after a
seek back always reaches the lane); the lane keeps the offset order itself, dropping what
it handled already or what comes out of order.

Each fetch is told which partitions Faust reads now, never "all of them" (``Active``).
Faust hands aiokafka's ``fetched_records`` its *live* set of active partitions, and
aiokafka reads an empty set as every assigned partition. A rebalance empties that set
(revoke, then every assigned partition paused until the table recovery resumes its
changelog partitions); a fetch call pending from before it (an idle worker's drain loop is
always in one) waits for the new assignment without a timeout and then consumes every
partition's records, the changelog partitions the recovery has just sought back to
included. Faust drops them (flow stopped, partition paused) and re-seeks only to committed
offsets, which changelog partitions have none of: the recovery waited for records the
consumer was past, for ever (logging "No event received for active tp"; faust-streaming
0.15 with aiokafka 0.14).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from coordinator._lease import Membership


def app_class(fetch_max_wait_ms: int, fetch_min_bytes: int = 1) -> type[HookedApp]:
    """Build a ``faust.App`` subclass whose consumer waits at most ``fetch_max_wait_ms``.

    ``fetch_min_bytes``: the broker answers a fetch once that much is there (or the wait
    is over). 1 answers at the first record: under a steady trickle every record costs a
    fetch, on the broker and in the consumer thread; a larger value reads a trickle in
    fewer, fuller fetches, each record waiting at most ``fetch_max_wait_ms`` for them.
    """

    class ConsumerThread(FetchThread):
        def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            membership: Membership | None = getattr(transport.app, "membership", None)
            if membership is not None:  # before it starts: its first SyncGroup counts
                membership.watch(consumer._client)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by start() -> Fetcher
            consumer._fetch_min_bytes = fetch_min_bytes
            return consumer

    class ShortPollConsumer(driver.Consumer):
        lane_acking = False

        async def _drain_messages(self, fetcher: Any) -> None:
            direct: dict[str, Callable[[Any], None]] = getattr(self.app, "direct", {})
            if not direct:
                await super()._drain_messages(fetcher)
                return
            await drain(self, fetcher, direct)

        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        def ack(self, message: Any) -> bool:
            guarded = getattr(self.app, "guarded_topics", ())
            if message.topic in guarded and not self.lane_acking:
                return False  # skipped by Faust, not handled: must be read again
            return bool(super().ack(message))

        async def start_offset(self, tp: TP) -> int:
            """The partition's committed offset (its log start when none, or older)."""
            thread: Any = self._thread

            async def ask() -> int:
                consumer = thread._ensure_consumer()
                ktp = driver.ensure_aiokafka_TP(tp)
                committed = await consumer.committed(ktp)
                begin = (await consumer.beginning_offsets([ktp]))[ktp]
                return max(committed or 0, begin)

            return int(await thread.call_thread(ask))

        async def fetch_position(self, tp: TP) -> int | None:
            """The offset the consumer fetches next on ``tp`` (None: not known yet).

            Unlike ``position`` it never waits for a position to be reset.
            """
            thread: Any = self._thread

            async def read() -> int | None:
                subscription = thread._ensure_consumer()._subscription.subscription
                assignment = subscription.assignment if subscription is not None else None
                state = (
                    assignment.state_value(driver.ensure_aiokafka_TP(tp)) if assignment else None
                )
                return (
                    int(state.position) if state is not None and state.has_valid_position else None
                )

            result: int | None = await thread.call_thread(read)
            return result

    class Transport(driver.Transport):
        Consumer = ShortPollConsumer

    class App(HookedApp):
        def _new_transport(self) -> Any:
            return Transport(self.conf.broker_consumer, self)

    return App


class FetchThread(driver.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, fetching only what Faust reads now (``Active``)."""

    async def _fetch_records(
        self,
        consumer: AIOKafkaConsumer,
        active_partitions: set[TP] | None,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # the partitions Faust reads when the fetch drains its buffer; none while it reads
        # none (None: a client-only app, which reads every partition)
        active: Any = active_partitions if active_partitions is None else Active(active_partitions)
        return await super()._fetch_records(
            consumer, active, timeout=timeout, max_records=max_records
        )


class Active:
    """Faust's live set of active partitions, as aiokafka's ``fetched_records`` reads it.

    Membership follows the live set (a partition resumed while the fetch waits is read at
    once, as before); empty, it holds nothing, where aiokafka would read every partition
    (see the module doc).
    """

    __slots__ = ("tps",)

    def __init__(self, tps: set[TP]) -> None:
        self.tps = tps

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.tps


async def drain(consumer: Any, fetcher: Any, direct: dict[str, Callable[[Any], None]]) -> None:
    """Faust's drain loop, with the records of ``direct`` topics handed over synchronously.

    Other topics' records take Faust's own path (read-offset filter, gap tracking, the
    stream callback), as in ``faust.transport.consumer.Consumer._drain_messages``.
    """
    app = consumer.app
    inbound = app.monitor.stream_inbound_time  # Faust's "stream is idle" check
    read_offset = consumer._read_offset
    try:
        while not (consumer._stopped.is_set() or fetcher._stopped.is_set()):
            records = consumer.getmany(timeout=1.0)
            await asyncio.sleep(0)
            if consumer.should_stop:
                continue
            handed = 0
            async for tp, message in records:
                handed += 1
                if handed % 1000 == 0:
                    await asyncio.sleep(0)  # a big fetch never starves the loop
                lane = direct.get(tp.topic)
                if lane is not None:
                    if app.direct_closed:
                        continue  # a revoke is stopping the lanes: read again later
                    read_offset[tp] = message.offset
                    inbound[tp] = time.monotonic()
                    lane(message)
                    continue
                await _faust_path(consumer, tp, message)
            pausing = getattr(app, "pausing", None)
            if pausing:
                consumer.pause_partitions(list(pausing))
                pausing.clear()
    except consumer.consumer_stopped_errors:
        if not consumer.transport.app.should_stop:
            raise
    except asyncio.CancelledError:
        if not consumer.transport.app.should_stop:
            raise


async def _faust_path(consumer: Any, tp: TP, message: Any) -> None:
    """One record of a topic Faust's streams read, as Faust's own drain loop does."""
    offset = message.offset
    r_offset = consumer._read_offset[tp]
    if r_offset is not None and offset < r_offset:
        return  # Faust drops a record before its read offset
    if r_offset and offset - r_offset > 1 and consumer.app.topics.acks_enabled_for(tp.topic):
        await consumer._add_gap(tp, r_offset + 1, offset)
    every = consumer._commit_every
    if every is not None and consumer._n_acked >= every:
        consumer._n_acked = 0
        await consumer.commit()
    await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())
    consumer._read_offset[tp] = offset


class HookedApp(faust.App):
    """``faust.App`` with ``setup_hooks`` and ``revoke_hooks`` (see the module doc)."""

    setup_hooks: list[Callable[[], Awaitable[None]]]
    revoke_hooks: list[Callable[[set[Any]], Awaitable[None]]]
    #: topics whose offsets only the coordinator's lanes ack
    guarded_topics: set[str]
    #: topics whose records go straight to a lane: ``direct[topic](message)``
    direct: dict[str, Callable[[Any], None]]
    #: the consumer's membership lease (``coordinator._lease``), if the app keeps one
    membership: Membership | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup_hooks = []
        self.revoke_hooks = []
        self.guarded_topics = set()
        self.direct = {}
        self.pausing: set[TP] = set()
        #: set from a revoke until the next assignment: direct records are not handed over
        self.direct_closed = False

    def lane_ack(self, events: list[Any]) -> None:
        """Ack ``events`` on behalf of a lane (the only acks guarded topics accept)."""
        consumer: Any = self.consumer
        consumer.lane_acking = True
        try:
            for event in events:
                event.ack()
        finally:
            consumer.lane_acking = False

    async def start_offset(self, topic: str, partition: int) -> int:
        """Where reading ``topic``/``partition`` must start (its committed offset)."""
        consumer: Any = self.consumer
        return int(await consumer.start_offset(TP(topic, partition)))

    async def fetch_position(self, topic: str, partition: int) -> int | None:
        """The offset the consumer fetches next on ``topic``/``partition`` (None: unknown).

        Past the offset a lane expects while the lane got nothing, it shows records that
        Faust skipped (see the module doc).
        """
        consumer: Any = self.consumer
        position: int | None = await consumer.fetch_position(TP(topic, partition))
        return position

    def in_group(self) -> bool:
        """Whether the consumer is a member of its group now (False when not known).

        aiokafka resets its generation to -1 when a heartbeat or commit finds the member
        expelled (paused past the session timeout, say) and when it leaves, and only then
        calls the revoke: the partitions revoked may be another worker's already.
        """
        try:
            thread: Any = cast(Any, self.consumer)._thread
            generation = thread._ensure_consumer()._coordinator.generation
        except Exception:  # no consumer (thread) yet
            return False
        return isinstance(generation, int) and generation > 0

    async def on_first_start(self) -> None:
        """Run the setup hooks before any child service (the consumer) starts."""
        await super().on_first_start()
        for hook in self.setup_hooks:
            await hook()

    async def on_stop(self) -> None:
        """Stop what the revoke hooks stop, then Faust's own shutdown (offsets committed)."""
        self.direct_closed = True
        for hook in self.revoke_hooks:
            await hook(set())
        await super().on_stop()

    async def _on_partitions_revoked(self, revoked: set[Any]) -> None:
        # nothing more reaches a lane or intake while the hooks stop them: what the drain
        # loop still hands over is skipped, unacked (read again once the partitions are
        # assigned: every assignment starts at the committed offsets). Not Faust's
        # stop_flow: its getmany would seek to the committed offsets meanwhile, and the
        # hooks' own commit would then count for nothing.
        self.direct_closed = True
        if not self.should_stop:
            for hook in self.revoke_hooks:
                await hook(revoked)
        await super()._on_partitions_revoked(revoked)

    async def _on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        if self.membership is not None:  # before any record of it reaches a lane
            self.membership.assigned = generation_id
        self.direct_closed = False
        await super()._on_partitions_assigned(assigned, generation_id)

    def lag_recovery_seeks(self, seconds: float) -> None:
        """Fault injection for tests: each table recovery waits ``seconds`` after seeking.

        Between its seek of the changelog partitions and their resume, as on a loaded
        machine whose event loop lags: the window the module doc's lost fetch needs.
        """

        async def lag() -> None:
            recovery: Any = cast(Any, self.tables).recovery
            seek = recovery._seek_offsets

            async def lagged(*args: Any, **kwargs: Any) -> None:
                await seek(*args, **kwargs)
                await asyncio.sleep(seconds)

            recovery._seek_offsets = lagged

        self.setup_hooks.append(lag)

    def pause_after_fetch(self, tp: TP) -> None:
        """Pause ``tp`` once the drain loop is done with the fetch it is handing over.

        Paused at once, Faust's ``getmany`` would drop the rest of that fetch's records of
        ``tp`` (its position already past them): holes a lane must seek back over, and
        that a window lane would ack around, stalling the partition's commits.
        """
        self.pausing.add(tp)

    def resume_now(self, tp: TP) -> None:
        """Resume ``tp`` (and forget a pause not yet applied)."""
        self.pausing.discard(tp)
        cast(Any, self.consumer).resume_partitions([tp])
