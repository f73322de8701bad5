"""A Faust app class whose Kafka consumer long-polls briefly.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for its aiokafka consumer. aiokafka
sends one fetch per broker for the partitions that have no buffered records; a partition
that receives data while such a fetch waits on *other* partitions is read only when that
fetch returns — up to 1.5 s later. A saga step crosses two topics (inbox → step topic →
inbox), so under a steady trickle of traffic every hop paid up to 1.5 s (measured: p50
~2 s per step with the machine mostly idle). A short long-poll bounds that wait.
"""

from __future__ import annotations

from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as driver


def app_class(fetch_max_wait_ms: int) -> type[faust.App]:
    """A ``faust.App`` subclass whose consumer waits at most ``fetch_max_wait_ms``."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by start() -> Fetcher
            return consumer

    class ShortPollConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = ShortPollConsumer

    class App(faust.App):
        def _new_transport(self) -> Any:
            return Transport(self.conf.broker_consumer, self)

    return App
