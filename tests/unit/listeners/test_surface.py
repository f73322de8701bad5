"""The package's public surface and settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

import listeners
from listeners import ListenerConfigError, ListenerError, ListenerSettings, OrderStatusListener


def test_exported_names_are_pinned() -> None:
    assert sorted(listeners.__all__) == [
        "BatchResult",
        "EntityNotFoundError",
        "EntityView",
        "Event",
        "GenericEvent",
        "InvalidQueryError",
        "Listener",
        "ListenerApp",
        "ListenerConfigError",
        "ListenerError",
        "ListenerSettings",
        "NAMING_CONVENTION",
        "OrderNotFoundError",
        "OrderStatusListener",
        "OrderView",
        "ReplayError",
        "ReplayReport",
        "SagaRow",
        "SagaView",
        "SchemaNotAtHeadError",
        "apply_batch",
        "create_app",
        "create_db_engine",
        "get_entity",
        "get_order",
        "list_entities",
        "list_orders",
        "load_listener",
        "replay",
        "session_factory",
    ]
    for name in listeners.__all__:
        attr = getattr(listeners, name)
        if isinstance(attr, type) and issubclass(attr, Exception):
            assert issubclass(attr, ListenerError), name


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("LISTENER_TOPIC_PREFIX", "shop")
    monkeypatch.setenv("LISTENER_BATCH_WINDOW", "0.5")
    monkeypatch.setenv("LISTENER_ORDER_STATUS_BY_STEP", '{"pay": "paid"}')
    settings = ListenerSettings()
    assert settings.database_url == "sqlite:///orders.db"
    assert (settings.app_id, settings.partitions, settings.web_port) == ("saga-listeners", 8, 6067)
    assert settings.lifecycle_topic == "shop.lifecycle"
    assert settings.deadletter_topic == "shop.deadletters"
    assert settings.broker_url == "kafka://k1:9092;kafka://k2:9092"
    assert settings.batch_window == timedelta(seconds=0.5)
    assert settings.order_status_by_step == {"pay": "paid"}


def test_unknown_status_in_mapping_names_the_fix() -> None:
    with pytest.raises(ListenerConfigError, match="LISTENER_ORDER_STATUS_BY_STEP"):
        OrderStatusListener(status_by_step={"pay": "settled"})
