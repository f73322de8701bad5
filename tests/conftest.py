from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from infra import kafka
from tests.services import KafkaService, ensure_postgres, fresh_database, unavailable

_KAFKA = KafkaService()


def pytest_report_header(config: pytest.Config) -> str:
    target = kafka.external_bootstrap() or f"local broker {kafka.BrokerConfig().bootstrap}"
    return f"kafka: Apache Kafka {kafka.KAFKA_VERSION} jars; target {target}"


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _KAFKA.bootstrap:
        how = "started and stopped by the tests" if _KAFKA.started_by_us else "already running"
        version = (
            "external cluster"
            if kafka.external_bootstrap()
            else f"Apache Kafka {kafka.KAFKA_VERSION}"
        )
        terminalreporter.write_line(f"kafka: {version} at {_KAFKA.bootstrap} ({how})")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker: the local one (started if needed, stopped if we started it)."""
    if _KAFKA.bootstrap is None and _KAFKA.error is None:
        _KAFKA.start()
    if _KAFKA.bootstrap is None:
        unavailable(f"Kafka is unavailable: {_KAFKA.error}")
    assert _KAFKA.bootstrap is not None
    yield _KAFKA.bootstrap


@pytest.fixture(scope="session", autouse=True)
def _stop_kafka_at_exit() -> Iterator[None]:
    yield
    _KAFKA.stop()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    return ensure_postgres()


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """An isolated, empty PostgreSQL database for one test."""
    yield from fresh_database(postgres_server)


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic/app-id prefix so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}"
