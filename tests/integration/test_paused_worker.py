"""A worker paused past the session timeout (SIGSTOP) resumes as a zombie: expelled from
its consumer group, unaware until its next heartbeat fails. It is frozen inside an inline
step of a batch (the step waits on a gate file when A is stopped), and its consumer
fetches the inbox records the new owner applied meanwhile (sagas started while it is
stopped, on every partition, after its fetch position). The membership lease
(``coordinator._lease``) keeps it from going on: the chain's next inline step does not
run, no saga starts twice, and no stale saga record lands in the changelog after the new
owner's. Before the lease, A ran the rest of the chain at once on resuming (every run).

Real processes and a real broker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator import SagaClient
from infra.processes import Process, free_port
from tests.integration.effect_sagas import DEFINITIONS, EFFECTS, GATE
from tests.integration.stack import Lifecycle, OrderStack
from tests.integration.test_store_retention import bare, spread  # noqa: F401

pytestmark = pytest.mark.integration

#: the pause: longer than the session timeout, so the broker expels the worker
SESSION = "PT6S"
ASSIGNED = "Setting newly assigned partitions"


def env(stack: OrderStack, name: str) -> dict[str, str]:
    return {
        "SAGA_DATADIR": str(stack.datadir / name),
        "SAGA_SESSION_TIMEOUT": SESSION,
        EFFECTS: str(stack.datadir / "effects.txt"),
        GATE: str(stack.datadir / "gate"),
    }


async def view(port: int, saga_id: str) -> dict[str, Any]:
    """``GET /sagas/{id}/`` (routed to the owner), retried while a rebalance is on."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        for _ in range(300):
            try:
                r = await http.get(f"http://127.0.0.1:{port}/sagas/{saga_id}/")
            except httpx.TransportError:  # routed to a worker that just stopped
                r = None
            if r is not None and r.status_code not in (500, 503):
                assert r.status_code == 200, f"{saga_id}: {r.status_code} {r.text}"
                body: dict[str, Any] = r.json()
                return body
            await asyncio.sleep(0.2)
    raise AssertionError(f"{saga_id}: no answer but 500/503 from port {port}")


async def until(proc: Process, text: str, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while proc.output().count(text) < count:
        assert time.monotonic() < deadline, f"{proc.name}: not {count}x {text!r}"
        await asyncio.sleep(0.3)


async def caught_up(life: Lifecycle, timeout: float = 30) -> None:
    consumer = life.consumer
    partitions = list(consumer.assignment())
    ends = await consumer.end_offsets(partitions)
    deadline = time.monotonic() + timeout
    while True:
        behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
        if not behind:
            return
        assert time.monotonic() < deadline, f"the lifecycle reader fell behind on {behind}"
        await asyncio.sleep(0.1)


def text_of(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def effects_of(path: Path) -> Counter[tuple[str, str]]:
    lines = text_of(path).splitlines()
    return Counter((saga_id, step) for saga_id, step, _ in (line.split() for line in lines))


async def test_a_worker_paused_past_its_session_applies_nothing_when_it_resumes(
    bare: OrderStack,  # noqa: F811
) -> None:
    stack = bare
    settings = stack.settings()
    effects, gate = stack.datadir / "effects.txt", stack.datadir / "gate"
    entered = Path(f"{gate}.entered")
    ports = {name: free_port() for name in "abc"}

    def worker(name: str) -> Process:
        return stack.coordinator(
            name=name, definitions=DEFINITIONS, env=env(stack, name), web_port=ports[name]
        )

    def ids(tag: str, per_partition: int) -> list[str]:
        return spread(f"{stack.prefix}-{tag}", stack.partitions, per_partition=per_partition)

    first, second, third = ids("f", 2), ids("s", 3), ids("t", 1)
    held = ids("h", 1)[0]  # A is frozen inside its step a
    every = [*first, held, *second, *third]
    # a worker's rebalance completed (its table restored) with every partition its own
    all_held = f"sagas in partitions {list(range(stack.partitions))}"
    a = worker("a")
    async with (
        SagaClient(settings) as client,
        Lifecycle(stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        for saga_id in first:
            await client.start("traced", {}, saga_id=saga_id)
        await life.wait(first, statuses={"saga_completed"}, timeout=90)
        gate.touch()
        await client.start("traced", {"hold": True}, saga_id=held)
        deadline = time.monotonic() + 60
        while held not in text_of(entered):
            assert time.monotonic() < deadline, "A never entered the held step"
            await asyncio.sleep(0.1)
        os.kill(a.pid, signal.SIGSTOP)  # A's session expires; B takes every partition
        try:
            gate.unlink()  # B runs the held saga's step a at once
            b = worker("b")
            for saga_id in second:  # on every partition, after A's fetch position
                await client.start("traced", {}, saga_id=saga_id)
            await life.wait([held, *second], statuses={"saga_completed"}, timeout=120)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        # A fetches the second sagas' records, learns it was expelled, rejoins
        await until(a, ASSIGNED, 2)
        for saga_id in third:  # A works again: the two share the partitions
            await client.start("traced", {}, saga_id=saga_id)
        await life.wait(third, statuses={"saga_completed"}, timeout=90)
        shared = {saga_id: await view(ports["a"], saga_id) for saga_id in every}

        held_before = a.output().count(all_held)
        b.stop()  # a further rebalance: A takes every partition
        await until(a, all_held, held_before + 1)
        alone = {saga_id: await view(ports["a"], saga_id) for saga_id in every}
        a.stop()  # and a restart: C restores the table from the changelog alone
        c = worker("c")
        await until(c, all_held, 1)
        restored = {saga_id: await view(ports["c"], saga_id) for saga_id in every}
        await caught_up(life)  # every lifecycle record written so far is read
        events = {saga_id: list(life.events[saga_id]) for saga_id in every}

    started = {s: [e for e in events[s] if e.type == "saga_started"] for s in every}
    runs = {s: len({e.model_dump_json() for e in started[s]}) for s in every}
    # a re-send repeats the stored event, byte for byte (an inbox record read again after
    # a rebalance that came before its offset was committed re-sends its saga's outbox);
    # a second run is a new event
    assert runs == dict.fromkeys(every, 1), f"sagas started more than once: {runs}"
    done = effects_of(effects)
    # A was frozen inside the held saga's step a: that step ran on A and on B (at least
    # once); what follows it in A's chain must not run
    assert done[held, "a"] in (1, 2)
    twice = {key: n for key, n in done.items() if n != 1 and key != (held, "a")}
    assert not twice, f"inline steps run more than once: {twice}"
    assert set(done) == {(s, step) for s in every for step in "ab"}
    for where, table in (("shared", shared), ("A alone", alone), ("restored", restored)):
        wrong = {
            s: (v["status"], v["seq"], v["started_at"])
            for s, v in table.items()
            if v["status"] != "completed"
            or v["seq"] != max(e.seq for e in events[s])
            or datetime.fromisoformat(v["started_at"]) != started[s][0].occurred_at
        }
        assert not wrong, f"{where}: sagas not in their true final state: {wrong}"
    # the lease stopped A's batches: expired when looked at, or already known to be lost
    held_back = ("membership lease ran out", "no longer a member of generation")
    leased = [line for line in a.output().splitlines() if any(h in line for h in held_back)]
    assert leased, "the lease never held a batch of A back: the test did not test it"
