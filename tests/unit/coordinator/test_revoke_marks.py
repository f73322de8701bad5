"""The sent marks a revoke writes (``Coordinator._on_revoke`` / ``_mark_sent``).

A mark is written only while this worker is still a member of its consumer group: after
it was expelled (aiokafka resets its generation before calling the revoke), or once its
membership lease ran out (``coordinator._lease``), another worker may own the partitions
and have written after it. And a mark never becomes the local
store's applied changelog offset: a RocksDB restore reads on from that offset, and records
of another owner may lie before the mark.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faust.types import TP

from coordinator import CoordinatorSettings, SagaRegistry
from coordinator._app import Coordinator
from coordinator._local import EPOCH, mark_of
from coordinator._tablestore import mark_key
from tests.unit.coordinator.sagas import linear_saga
from tests.unit.coordinator.shell_kit import FakeProducer
from tests.unit.coordinator.shell_kit import leased as with_lease


def record(saga_id: str, batch: int) -> bytes:
    return f'{{"saga_id":"{saga_id}","batch":{batch}}}'.encode()


async def owner(tmp_path: Path, store: str = "memory://") -> tuple[Coordinator, FakeProducer]:
    """A worker whose lane of inbox partition 0 wrote one batch (changelog offset 0)."""
    settings = CoordinatorSettings.model_validate(
        {"web_enabled": False, "datadir": tmp_path, "topic_prefix": "marks",
         "store": store, "partitions": 4}
    )  # fmt: skip
    worker = Coordinator(settings, SagaRegistry([linear_saga(2)]))
    producer = FakeProducer()
    worker.producer = producer  # type: ignore[assignment]
    await worker.recovery.scan({0}, worker.store.entries({0}), worker.store.mark, generation=3)
    await worker.recovery.prelude(0)
    changelog = worker.processor.changelog
    ack = await (await producer.send_batch(changelog, 0, [(b"f", record("f", 3 * EPOCH))]))
    worker.store.write(0, {"f": record("f", 3 * EPOCH)}, ack.offset)
    worker.processor.batches[0] += 1
    return worker, producer


def revoke_with(
    monkeypatch: pytest.MonkeyPatch,
    worker: Coordinator,
    drained: set[int],
    member: bool,
    *,
    leased: bool | None = None,
) -> None:
    """``member``: aiokafka's generation; ``leased`` (default: ``member``): the lease holds."""

    async def stop() -> set[int]:
        return drained

    monkeypatch.setattr(worker.inbox_lanes, "stop", stop)
    monkeypatch.setattr(worker.app, "in_group", lambda: member)
    worker.membership.assigned = 3
    if member if leased is None else leased:  # a heartbeat of generation 3 answered now
        with_lease(worker, 3)


def marks_sent(worker: Coordinator, producer: FakeProducer) -> dict[int, int]:
    return {
        s.partition: mark_of(s.value)
        for s in producer.to(worker.processor.changelog)
        if s.key == mark_key(s.partition).encode()
    }


async def test_a_mark_never_becomes_the_stores_applied_changelog_offset(
    tmp_path: Path,
) -> None:
    a, producer = await owner(tmp_path, "rocksdb://")
    changelog = a.processor.changelog
    # A lost the partition unaware; the new owner B wrote its saga: changelog offset 1
    await (await producer.send_batch(changelog, 0, [(b"s", record("s", 4 * EPOCH))]))
    await a._mark_sent(a.recovery.sent_marks({0}))  # the mark: offset 2
    assert marks_sent(a, producer) == {0: 3 * EPOCH}
    assert mark_of(a.store.mark(0)) == 3 * EPOCH  # kept locally all the same
    applied = a.table.data.persisted_offset(TP(changelog, 0))
    assert applied == 0, f"A's store says offsets up to {applied} are applied: B's is not"


async def test_a_revoke_after_losing_group_membership_writes_no_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a, producer = await owner(tmp_path)
    revoke_with(monkeypatch, a, {0}, member=False)  # expelled: another worker may own it
    with caplog.at_level(logging.WARNING, logger="coordinator"):
        await a._on_revoke({0})
    assert marks_sent(a, producer) == {}
    assert a.store.mark(0) is None
    assert "lost its consumer group membership" in caplog.text


async def test_a_revoke_whose_membership_lease_ran_out_writes_no_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a, producer = await owner(tmp_path)
    # aiokafka has not heard of the expulsion yet, but no heartbeat got through for a
    # session timeout: the partitions may be another worker's already
    revoke_with(monkeypatch, a, {0}, member=True, leased=False)
    with caplog.at_level(logging.WARNING, logger="coordinator"):
        await a._on_revoke({0})
    assert marks_sent(a, producer) == {}
    assert "lost its consumer group membership" in caplog.text


async def test_a_member_s_revoke_writes_the_marks_of_its_drained_lanes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, producer = await owner(tmp_path)
    revoke_with(monkeypatch, a, {0}, member=True)
    await a._on_revoke({0})
    assert marks_sent(a, producer) == {0: 3 * EPOCH}
    assert mark_of(a.store.mark(0)) == 3 * EPOCH


async def test_a_revoke_with_nothing_held_warns_of_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a, producer = await owner(tmp_path)
    revoke_with(monkeypatch, a, set(), member=False)  # the first revoke, at a start
    with caplog.at_level(logging.WARNING, logger="coordinator"):
        await a._on_revoke(set())
    assert marks_sent(a, producer) == {}
    assert "membership" not in caplog.text


class Member:
    """aiokafka's consumer as the consumer thread holds it: its coordinator's generation."""

    def __init__(self, generation: int) -> None:
        self._coordinator = SimpleNamespace(generation=generation)


def test_membership_is_aiokafkas_generation_and_never_claimed_when_unknown(
    tmp_path: Path,
) -> None:
    settings = CoordinatorSettings.model_validate(
        {"web_enabled": False, "datadir": tmp_path, "topic_prefix": "marks"}
    )
    app = Coordinator(settings, SagaRegistry([linear_saga(2)])).app
    assert app.in_group() is False, "no consumer joined yet"
    thread = cast(Any, app.consumer)._thread
    for generation, member in ((7, True), (-1, False)):  # -1: reset when expelled or left
        thread._ensure_consumer = lambda g=generation: Member(g)
        assert app.in_group() is member
