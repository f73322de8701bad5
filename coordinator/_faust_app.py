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
committed position is, so it can notice a skipped record and seek back to it.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for its aiokafka consumer. aiokafka
sends one fetch per broker for the partitions that have no buffered records; a partition
that receives data while such a fetch waits on *other* partitions is read only when that
fetch returns — up to 1.5 s later. A saga step crosses two topics (inbox → step topic →
inbox), so under a steady trickle of traffic every hop paid up to 1.5 s (measured: p50
~2 s per step with the machine mostly idle). A short long-poll bounds that wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP


def app_class(fetch_max_wait_ms: int) -> type[HookedApp]:
    """Build a ``faust.App`` subclass whose consumer waits at most ``fetch_max_wait_ms``."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by start() -> Fetcher
            return consumer

    class ShortPollConsumer(driver.Consumer):
        lane_acking = False

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

    class Transport(driver.Transport):
        Consumer = ShortPollConsumer

    class App(HookedApp):
        def _new_transport(self) -> Any:
            return Transport(self.conf.broker_consumer, self)

    return App


class HookedApp(faust.App):
    """``faust.App`` with ``setup_hooks`` and ``revoke_hooks`` (see the module doc)."""

    setup_hooks: list[Callable[[], Awaitable[None]]]
    revoke_hooks: list[Callable[[set[Any]], Awaitable[None]]]
    #: topics whose offsets only the coordinator's lanes ack
    guarded_topics: set[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup_hooks = []
        self.revoke_hooks = []
        self.guarded_topics = set()

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

    async def on_first_start(self) -> None:
        """Run the setup hooks before any child service (the consumer) starts."""
        await super().on_first_start()
        for hook in self.setup_hooks:
            await hook()

    async def on_stop(self) -> None:
        """Stop what the revoke hooks stop, then Faust's own shutdown (offsets committed)."""
        for hook in self.revoke_hooks:
            await hook(set())
        await super().on_stop()

    async def _on_partitions_revoked(self, revoked: set[Any]) -> None:
        if not self.should_stop:
            for hook in self.revoke_hooks:
                await hook(revoked)
        await super()._on_partitions_revoked(revoked)
