"""The workers' garbage-collector policy (``coordinator._gc``), applied once they are ready."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from coordinator import CoordinatorSettings, SagaRegistry
from coordinator._app import Coordinator
from coordinator._gc import YOUNG_THRESHOLD, SlowPauses, settle_heap
from listeners import ListenerSettings, create_app
from listeners._migrations import upgrade
from tests.unit.coordinator.sagas import linear_saga


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # CPython's defaults, whatever ran before
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.callbacks[:] = callbacks


def _watchers() -> list[SlowPauses]:
    return [c for c in gc.callbacks if isinstance(c, SlowPauses)]


def _defaults() -> tuple[tuple[int, int, int], int]:
    return gc.get_threshold(), gc.get_freeze_count()


def test_what_is_alive_when_the_worker_is_ready_is_never_walked_again() -> None:
    alive = [[n] for n in range(1000)]  # start-up objects, alive for good
    settle_heap(CoordinatorSettings())
    assert gc.get_freeze_count() >= len(alive)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)


def test_the_policy_off_leaves_the_collector_alone() -> None:
    settle_heap(CoordinatorSettings(gc_policy="off"))
    assert _defaults() == ((700, 10, 10), 0)


def test_the_policy_is_read_from_each_workers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGA_GC_POLICY", "off")
    monkeypatch.setenv("LISTENER_GC_YOUNG_THRESHOLD", "2500")
    monkeypatch.setenv("SAGA_GC_SLOW_PAUSE", "0.02")
    monkeypatch.setenv("LISTENER_GC_SLOW_PAUSE", "0")
    assert CoordinatorSettings().gc_policy == "off"
    assert CoordinatorSettings().gc_slow_pause == timedelta(milliseconds=20)
    assert ListenerSettings().gc_slow_pause == timedelta(0)
    assert ListenerSettings().gc_young_threshold == 2500
    assert ListenerSettings().gc_policy == "tuned"


def _coordinator(tmp_path: Path, **gc_settings: object) -> Coordinator:
    settings = CoordinatorSettings.model_validate(
        {"web_enabled": False, "datadir": tmp_path, "topic_prefix": "gcunit", **gc_settings}
    )
    coordinator = Coordinator(settings, SagaRegistry([linear_saga(2)]))
    # the rest of what a completed rebalance does needs a broker; the policy does not
    coordinator.app.on_rebalance_complete.disconnect(coordinator._on_rebalance_complete)
    return coordinator


async def test_the_coordinator_applies_its_policy_at_its_first_assignment(
    tmp_path: Path,
) -> None:
    coordinator = _coordinator(tmp_path, gc_young_threshold=12_345)
    assert _defaults() == ((700, 10, 10), 0)  # building the app applies nothing
    await coordinator.app.on_rebalance_complete.send()
    assert gc.get_threshold() == (12_345, 10, 10)
    frozen = gc.get_freeze_count()
    assert frozen > 0
    more = [[n] for n in range(1000)]  # objects of later work: a later rebalance
    await coordinator.app.on_rebalance_complete.send()  # freezes nothing again
    assert gc.get_freeze_count() == frozen
    assert more
    assert [w.slow for w in _watchers()] == [0.05]  # slow pauses logged from then on
    await _coordinator(tmp_path / "2").app.on_rebalance_complete.send()
    assert len(_watchers()) == 1  # another app in the process: no second log line each


def test_a_collection_longer_than_the_limit_is_logged_with_its_generation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gc.callbacks.append(SlowPauses(3600.0))
    with caplog.at_level(logging.WARNING, logger="coordinator._gc"):
        gc.collect()
    assert not caplog.records
    gc.callbacks.append(SlowPauses(0.0))  # every collection is "slow"
    with caplog.at_level(logging.WARNING, logger="coordinator._gc"):
        gc.collect()
    [record] = caplog.records
    assert "(generation 2) held the worker" in record.getMessage()
    assert "gc_policy=tuned freezes it" in record.getMessage()  # nothing frozen here


async def test_a_coordinator_with_the_policy_off_keeps_the_defaults(tmp_path: Path) -> None:
    coordinator = _coordinator(tmp_path, gc_policy="off", gc_slow_pause=timedelta(0))
    await coordinator.app.on_rebalance_complete.send()
    assert _defaults() == ((700, 10, 10), 0)
    assert not _watchers()


@pytest.mark.parametrize("policy", ["tuned", "off"])
async def test_the_listener_worker_applies_its_policy_at_its_first_assignment(
    tmp_path: Path, policy: str
) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    upgrade(url)
    settings = ListenerSettings(
        database_url=url,
        data_dir=tmp_path / "data",
        gc_policy=policy,  # type: ignore[arg-type]
        gc_young_threshold=4321,
    )
    built = create_app(settings)
    try:
        assert _defaults() == ((700, 10, 10), 0)
        await built.app.on_rebalance_complete.send()
        if policy == "off":
            assert _defaults() == ((700, 10, 10), 0)
        else:
            assert gc.get_threshold() == (4321, 10, 10)
            assert gc.get_freeze_count() > 0
    finally:
        built.dispose()
