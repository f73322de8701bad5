"""Creating the saga topics, and waiting until the broker reports every one of them.

A worker calls ``ensure_topics`` before its consumer subscribes: Faust's partition
assignor ignores a subscribed topic that has no metadata yet ("Ignoring missing topic")
and never revisits it, so a worker started on a fresh cluster could idle forever.

Topic settings chosen here (every saga topic has ``settings.partitions`` partitions):

* inbox: ``message.timestamp.type=LogAppendTime`` — the broker's clock stamps each
  record, and that stamp is the time the state machine sees.
* lifecycle: ``retention.ms`` from ``SAGA_LIFECYCLE_RETENTION`` (default: forever, as
  listener workers create it). A listener can be rebuilt from the topic only while it
  still holds its beginning.
* the saga table's changelog: compacted (one record per saga).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from coordinator._errors import CoordinatorUnavailable
from coordinator._settings import CoordinatorSettings

#: name of the saga table (its changelog is ``{app_id}-saga-state-changelog``)
TABLE_NAME = "saga-state"


def changelog_topic(settings: CoordinatorSettings) -> str:
    """Return the saga table's changelog topic name."""
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def topic_specs(
    settings: CoordinatorSettings, services: Iterable[str] = (), *, changelog: bool = False
) -> list[NewTopic]:
    """Every saga topic with its configuration (the changelog only for workers)."""
    t = settings.topics

    def spec(name: str, **config: str) -> NewTopic:
        return NewTopic(
            name,
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs=config,
        )

    retention = settings.lifecycle_retention
    retention_ms = "-1" if retention is None else str(int(retention.total_seconds() * 1000))
    specs = [
        spec(t.inbox, **{"message.timestamp.type": "LogAppendTime"}),
        spec(t.lifecycle, **{"retention.ms": retention_ms}),
        spec(t.deadletters),
        *(spec(t.step(s)) for s in sorted(set(services))),
    ]
    if changelog:
        specs.append(spec(changelog_topic(settings), **{"cleanup.policy": "compact"}))
    return specs


async def ensure_topics(
    settings: CoordinatorSettings,
    services: Sequence[str] = (),
    *,
    changelog: bool = False,
    timeout: float = 0.0,
) -> None:
    """Create the missing saga topics, then wait until the broker's metadata has them all.

    Broker errors are retried for ``timeout`` seconds (a worker waits for its broker;
    a client command fails at once with the ``KafkaError``), then raised as
    ``CoordinatorUnavailable``. An existing topic with another partition count raises
    ``CoordinatorUnavailable`` at once (partitioning would disagree).
    """
    specs = topic_specs(settings, services, changelog=changelog)
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.2
    while True:
        try:
            await _create_and_check(settings, specs)
            return
        except KafkaError as exc:
            if not timeout:
                raise
            if asyncio.get_running_loop().time() + delay > deadline:
                raise CoordinatorUnavailable(
                    f"could not create the saga topics on {settings.kafka_bootstrap_servers} "
                    f"within {timeout:g}s ({exc!r}); is the broker running?"
                ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _create_and_check(settings: CoordinatorSettings, specs: list[NewTopic]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        await _wait_for_metadata(admin, settings, [s.name for s in specs])
    finally:
        await admin.close()


async def _wait_for_metadata(
    admin: AIOKafkaAdminClient, settings: CoordinatorSettings, names: list[str]
) -> None:
    for _ in range(100):
        described = await admin.describe_topics(names)
        counts = {d["topic"]: len(d.get("partitions") or []) for d in described}
        for name, count in counts.items():
            if count and count != settings.partitions:
                raise CoordinatorUnavailable(
                    f"topic {name!r} has {count} partitions but SAGA_PARTITIONS is "
                    f"{settings.partitions}; every saga topic needs the same count "
                    "(use another SAGA_TOPIC_PREFIX or fix SAGA_PARTITIONS)"
                )
        if all(counts.get(n) == settings.partitions for n in names):
            return
        await asyncio.sleep(0.1)
    raise KafkaError(f"topics {names} have no partition metadata yet")
