"""Settings: durations are timedeltas, topic names and the broker are defined once."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from pydantic import ValidationError

from coordinator import CoordinatorSettings
from coordinator.events import DEFAULT_BOOTSTRAP_SERVERS, Topics
from infra.kafka import BrokerConfig
from listeners import ListenerSettings


def test_durations_are_timedeltas_from_seconds_or_iso_8601(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGA_TIMER_INTERVAL", "0.25")
    monkeypatch.setenv("SAGA_SESSION_TIMEOUT", "PT30S")
    monkeypatch.setenv("SAGA_FETCH_MAX_WAIT", "0")
    settings = CoordinatorSettings()
    assert settings.timer_interval == timedelta(milliseconds=250)
    assert settings.session_timeout == timedelta(seconds=30)
    assert settings.fetch_max_wait == timedelta(0)
    durations = {
        name
        for name, field in CoordinatorSettings.model_fields.items()
        if "timedelta" in str(field.annotation)
    }
    # every duration of the coordinator's settings is a timedelta (none in floats or *_ms)
    assert durations >= {"timer_interval", "session_timeout", "fetch_max_wait", "retention"}
    assert not [n for n in CoordinatorSettings.model_fields if n.endswith(("_ms", "_seconds"))]


@pytest.mark.parametrize("name", ["SAGA_TIMER_INTERVAL", "SAGA_SESSION_TIMEOUT"])
def test_a_duration_that_must_be_positive_refuses_zero(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "0")
    field = name.removeprefix("SAGA_").lower()
    with pytest.raises(ValidationError, match=rf"(?s){field}.*greater than 0"):
        CoordinatorSettings()


@pytest.mark.parametrize("name", ["SAGA_RETENTION", "SAGA_DEDUPE_RETENTION"])
def test_a_retention_refuses_a_negative_duration(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "-5")
    with pytest.raises(ValidationError, match="a retention cannot be negative"):
        CoordinatorSettings()


def test_coordinator_and_listeners_name_topics_and_broker_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("SAGA_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    coordinator = CoordinatorSettings(topic_prefix="shop")
    listener = ListenerSettings(topic_prefix="shop")
    assert listener.lifecycle_topic == coordinator.topics.lifecycle == Topics("shop").lifecycle
    assert listener.deadletter_topic == coordinator.topics.deadletters
    assert coordinator.kafka_bootstrap_servers == DEFAULT_BOOTSTRAP_SERVERS
    assert listener.kafka_bootstrap_servers == DEFAULT_BOOTSTRAP_SERVERS
    if "SAGA_KAFKA_PORT" not in os.environ:
        assert BrokerConfig().bootstrap == DEFAULT_BOOTSTRAP_SERVERS


def test_fetch_min_bytes_per_worker_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CoordinatorSettings().fetch_min_bytes == 1, "the coordinator reads each record"
    assert ListenerSettings().fetch_min_bytes == 256 * 1024, "a listener reads full fetches"
    monkeypatch.setenv("SAGA_FETCH_MIN_BYTES", "4096")
    monkeypatch.setenv("LISTENER_FETCH_MIN_BYTES", "1")
    assert CoordinatorSettings().fetch_min_bytes == 4096
    assert ListenerSettings().fetch_min_bytes == 1
    monkeypatch.setenv("SAGA_FETCH_MIN_BYTES", "0")
    with pytest.raises(ValidationError, match="fetch_min_bytes"):
        CoordinatorSettings()


async def test_app_class_gives_the_consumer_its_fetch_wait_and_min_bytes() -> None:
    from coordinator._faust_app import app_class

    app = app_class(10, 4096)("t-fetch", broker="kafka://127.0.0.1:1")
    consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    try:
        assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (10, 4096)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("acks", ["0", "1"])
def test_a_producer_that_does_not_wait_for_every_replica_is_refused(
    monkeypatch: pytest.MonkeyPatch, acks: str
) -> None:
    """Faust's env PRODUCER_ACKS sets the acks of the producer that writes saga records:
    with 1 a leader lost before replicating drops a record whose effects went out, with 0
    nothing is acknowledged (was: accepted, the durable order of effects void)."""
    from coordinator import SagaError, SagaRegistry
    from coordinator._app import Coordinator

    monkeypatch.setenv("PRODUCER_ACKS", acks)
    with pytest.raises(SagaError, match=rf"PRODUCER_ACKS={acks} .*Unset it"):
        Coordinator(CoordinatorSettings(), SagaRegistry())
    monkeypatch.setenv("PRODUCER_ACKS", "all")
    assert Coordinator(CoordinatorSettings(), SagaRegistry()).app.conf.producer_acks == -1
