"""The listener worker's topics, created (or waited for) before Faust starts.

Faust declares every topic at start-up through a client whose metadata may not be loaded
yet; on a fresh cluster that sometimes fails with "Controller node not found" and the
worker dies. So the worker creates the lifecycle and dead-letter topics itself, retrying
broker errors, waits until the broker's metadata lists them, and tells Faust not to
declare topics at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from listeners._errors import ListenerConfigError
from listeners._settings import ListenerSettings

log = logging.getLogger(__name__)

#: the lifecycle topic when a listener worker creates it: kept forever, so a listener can
#: always be rebuilt by replaying it from offset 0
LIFECYCLE_TOPIC_CONFIG = {"retention.ms": "-1"}


async def ensure_topics(settings: ListenerSettings, *, timeout: float = 120.0) -> None:
    """Create the missing topics and wait until the broker lists them (retrying)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.2
    while True:
        try:
            await _create_and_check(settings)
            return
        except (KafkaError, OSError, RuntimeError) as exc:
            if loop.time() + delay > deadline:
                raise ListenerConfigError(
                    f"could not create or find the topics {settings.lifecycle_topic!r} and "
                    f"{settings.deadletter_topic!r} on {settings.kafka_bootstrap_servers} "
                    f"within {timeout:g}s ({exc!r}); is the broker running?"
                ) from exc
            log.warning("waiting for the broker to create the listener topics (%r)", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _create_and_check(settings: ListenerSettings) -> None:
    wanted = {
        settings.lifecycle_topic: LIFECYCLE_TOPIC_CONFIG,
        settings.deadletter_topic: {},
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=config,
            )
            for name, config in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        if not set(wanted) <= set(await admin.list_topics()):
            raise RuntimeError("the broker does not list the new topics yet")
    finally:
        await admin.close()
