"""The persistent table store and retention of finished sagas, on a real broker with real
worker processes: a SIGKILLed RocksDB worker resumes from its own disk, an expired saga id
is deduplicated for the dedupe window and forgotten after it, a crash during expiry loses
nothing and resurrects nothing, and ``compensation_failed`` and ``parked`` sagas are never
expired."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from coordinator import SagaClient
from coordinator._routing import partition_for
from tests.integration.retention_sagas import DEFINITIONS
from tests.integration.stack import Lifecycle, OrderStack, RemoteService
from tests.integration.store_kit import (
    changelog,
    changelog_end,
    rocksdb_offsets,
    same_partition,
)

pytestmark = pytest.mark.integration

ROCKSDB = {"SAGA_STORE": "rocksdb://"}


@pytest.fixture
async def bare(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[OrderStack]:
    """Coordinator workers only (the test sagas call no HTTP service)."""
    s = OrderStack(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        yield s
    finally:
        s.close()


async def saga_record(stack: OrderStack, saga_id: str) -> tuple[int, dict[str, object]]:
    """``GET /sagas/{id}/`` on the worker, retried while a rebalance makes it answer 503."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        for _ in range(150):
            response = await http.get(f"http://127.0.0.1:{stack.web_port}/sagas/{saga_id}/")
            if response.status_code != 503:
                return response.status_code, response.json()
            await asyncio.sleep(0.2)
    raise AssertionError(f"the worker kept answering 503 for {saga_id}")


def spread(prefix: str, partitions: int, per_partition: int) -> list[str]:
    ids: list[str] = []
    counts = dict.fromkeys(range(partitions), 0)
    i = 0
    while len(ids) < partitions * per_partition:
        saga_id, i = f"{prefix}-{i}", i + 1
        p = partition_for(saga_id, partitions)
        if counts[p] < per_partition:
            counts[p] += 1
            ids.append(saga_id)
    return ids


async def test_a_rocksdb_worker_restarted_after_sigkill_resumes_in_flight_sagas_and_timers(
    bare: OrderStack,
) -> None:
    stack = bare
    first = stack.coordinator(definitions=DEFINITIONS, env=ROCKSDB)
    settings = stack.settings()
    waiting = spread(f"{stack.prefix}-w", stack.partitions, per_partition=2)
    finished = spread(f"{stack.prefix}-f", stack.partitions, per_partition=1)
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
        RemoteService(stack, "gate") as gate,
    ):
        for saga_id in finished:
            await client.start("quick", {}, saga_id=saga_id)
        await life.wait(finished, statuses={"saga_completed"}, timeout=90)
        for saga_id in waiting:
            await client.start("gated", {}, saga_id=saga_id)
        asked = [await gate.next_request(timeout=60) for _ in waiting]
        assert sorted(r.saga_id for r in asked) == sorted(waiting)
        assert {r.attempt for r in asked} == {1}
        first.kill()  # before any gate attempt times out: every saga waits on its deadline

        # every acknowledged changelog record reached the disk, with its offset
        offsets = rocksdb_offsets(stack.datadir)
        ends = {p: await changelog_end(settings, p) for p in range(stack.partitions)}
        assert offsets == {p: end - 1 for p, end in ends.items()}

        stack.coordinator(name="restarted", definitions=DEFINITIONS, env=ROCKSDB)
        answered: set[str] = set()
        while answered != set(waiting):  # the attempts' deadlines fire on the new worker
            request = await gate.next_request(timeout=90)
            if request.attempt >= 2 and request.saga_id not in answered:
                await gate.succeed(request, {"step": request.step})
                answered.add(request.saga_id)
        await life.wait(waiting, statuses={"saga_completed"}, timeout=90)
    for saga_id in finished:  # the retained records were restored too
        code, body = await saga_record(stack, saga_id)
        assert code == 200 and body["status"] == "completed", body


def started(life: Lifecycle, saga_id: str) -> int:
    """How many runs of ``saga_id`` began (raw events: a re-run reuses the seq numbers)."""
    return sum(1 for e in life.events.get(saga_id, []) if e.type == "saga_started")


def completed(life: Lifecycle, saga_id: str) -> int:
    """How many runs of ``saga_id`` completed (raw events, as for ``started``)."""
    return sum(1 for e in life.events.get(saga_id, []) if e.type == "saga_completed")


async def until(check: object, what: str, timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_an_expired_saga_id_is_deduplicated_within_the_window_and_runs_again_after(
    bare: OrderStack,
) -> None:
    stack = bare
    # full record for 1 s, then a marker for 30 s, then deleted
    stack.coordinator(
        definitions=DEFINITIONS, env={"SAGA_RETENTION": "1", "SAGA_DEDUPE_RETENTION": "30"}
    )
    settings = stack.settings()
    x = f"{stack.prefix}-x"
    sentinel = same_partition(f"{stack.prefix}-s", x, stack.partitions, 1)[0]
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        await client.start("quick", {}, saga_id=x)

        async def marked() -> bool:
            return any(r.compact for r in await changelog(settings, x))

        await until(marked, f"{x} shrunk to its marker")
        await client.start("quick", {}, saga_id=x)  # within the dedupe window: ignored
        await client.start("quick", {}, saga_id=sentinel)  # after it, on the same partition
        await life.wait([sentinel], statuses={"saga_completed"}, timeout=60)
        assert started(life, x) == 1 and completed(life, x) == 1
        records = await changelog(settings, x)
        assert records[-1].compact, "the second start wrote nothing"

        async def deleted() -> bool:
            return (await changelog(settings, x))[-1].value is None

        await until(deleted, f"{x}'s marker deleted (tombstone)")
        await client.start("quick", {}, saga_id=x)  # forgotten: a new saga runs

        async def ran_again() -> bool:
            return completed(life, x) == 2

        await until(ran_again, f"{x} run a second time")
        assert started(life, x) == 2


@pytest.mark.parametrize(
    "kill_after", [2, 3], ids=["after-the-marker-is-stored", "after-the-tombstone-is-stored"]
)
async def test_a_crash_during_expiry_expires_the_saga_exactly_once(
    bare: OrderStack, kill_after: int
) -> None:
    """Record batches: 1 = the start (the inline chain completes it), 2 = its marker,
    3 = its tombstone (the worker expires its sagas itself: no timer record). It SIGKILLs
    itself right after batch ``kill_after`` is acknowledged and stored; the restarted
    worker (same RocksDB directory) rebuilds its expiry queue from the table and applies
    what is left, once."""
    stack = bare
    retention = {"SAGA_RETENTION": "1", "SAGA_DEDUPE_RETENTION": "3", **ROCKSDB}
    crashing = stack.coordinator(
        definitions=DEFINITIONS,
        env={**retention, "SAGA_FAULT_KILL_AFTER_RECORDS": str(kill_after)},
    )
    settings = stack.settings()
    x = f"{stack.prefix}-x"
    sentinel = same_partition(f"{stack.prefix}-s", x, stack.partitions, 1)[0]
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        await client.start("quick", {}, saga_id=x)
        await life.wait([x], statuses={"saga_completed"}, timeout=60)

        async def died() -> bool:
            return not crashing.alive()

        await until(died, "the fault to fire")
        assert "SAGA_FAULT_KILL_AFTER_RECORDS reached" in crashing.output()
        before = await changelog(settings, x)
        assert len(before) == kill_after
        restarted = stack.coordinator(name="restarted", definitions=DEFINITIONS, env=retention)

        async def deleted() -> bool:
            return (await changelog(settings, x))[-1].value is None

        await until(deleted, f"{x} deleted")
        await client.start("quick", {}, saga_id=sentinel)  # later records of the partition
        await life.wait([sentinel], statuses={"saga_completed"}, timeout=60)
        records = await changelog(settings, x)
        kinds = ["gone" if r.value is None else "marker" if r.compact else "full" for r in records]
        assert kinds == ["full", "marker", "gone"]
        assert started(life, x) == 1
    code, _ = await saga_record(stack, x)
    assert code == 404
    restarted.stop()  # and again from the same disk: still gone
    stack.coordinator(name="restarted-again", definitions=DEFINITIONS, env=retention)
    code, _ = await saga_record(stack, x)
    assert code == 404


async def test_compensation_failed_and_parked_sagas_are_never_expired(bare: OrderStack) -> None:
    stack = bare
    stack.coordinator(
        definitions=DEFINITIONS,
        env={"SAGA_RETENTION": "1", "SAGA_DEDUPE_RETENTION": "1", **ROCKSDB},
    )
    settings = stack.settings()
    broken = f"{stack.prefix}-broken"
    stuck = same_partition(f"{stack.prefix}-p", broken, stack.partitions, 1)[0]
    later = same_partition(f"{stack.prefix}-q", broken, stack.partitions, 1)[0]
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        await client.start("broken", {}, saga_id=broken)
        await client.start("stuck", {}, saga_id=stuck)
        await life.wait([broken], statuses={"saga_compensation_failed"}, timeout=90)
        await life.wait([stuck], statuses={"saga_parked"}, timeout=90)
        await client.start("quick", {}, saga_id=later)  # finished after them, same retention

        async def later_deleted() -> bool:
            records = await changelog(settings, later)
            return bool(records) and records[-1].value is None

        await until(later_deleted, f"{later} expired and deleted")
    for saga_id, status in ((broken, "compensation_failed"), (stuck, "parked")):
        records = await changelog(settings, saga_id)
        assert all(r.value is not None and not r.compact for r in records)
        code, body = await saga_record(stack, saga_id)
        assert code == 200 and body["status"] == status, body
        assert body["steps"], "the full record, not a marker"
