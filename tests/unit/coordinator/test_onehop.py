"""In-process step attempts in one hop (coordinator._onehop) and the NotSent rule.

The rule: an attempt that provably never left this worker (``NotSent``: launched once,
its deadline passed while it waited for a slot) is a definite failure, even past the
deadline; a step none of whose attempts ever left is *failed*, not maybe applied, so it
is not compensated. Nothing else changes: a remote participant cannot claim it, and an
attempt that did reach the participant keeps the step's key open.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from coordinator import Saga, SagaRegistry, Service, Step, StepContext, remote
from coordinator._deadlines import DeadlineIndex
from coordinator._executor import StepExecutor
from coordinator._inbox import InboxProcessor
from coordinator._messages import NOT_SENT, StartSaga, StepResult, TimerFired, parse_inbox
from coordinator._onehop import StepTasks
from coordinator._routing import partition_for
from coordinator._state import SagaState
from coordinator.events import ErrorInfo
from tests.unit.coordinator.sagas import FAST, Item, Out, undo
from tests.unit.coordinator.shell_kit import (
    CHANGELOG,
    DictStore,
    FakeProducer,
    Inbox,
    never,
    settings,
    start,
)
from tests.unit.coordinator.test_outcomes import T0, Driver, compensated, saga

NOT_SENT_ERROR = ErrorInfo(type=NOT_SENT, message="not run: deadline passed", uncertain=False)


def late(d: Driver) -> None:
    """Move the clock past the pending attempt's deadline."""
    assert d.state is not None and d.state.pending is not None
    d.now = d.state.pending.deadline + timedelta(milliseconds=50)


def fail_attempts_not_sent(d: Driver) -> None:
    """Answer every attempt of the pending action with NotSent (after its deadline)."""
    assert d.state is not None
    step = d.state.pending.step if d.state.pending else None
    while (p := d.state.pending) is not None and (p.step, p.phase) == (step, "action"):
        if p.waiting == "backoff":
            d.now = p.deadline
            d.send(TimerFired(saga_id="x"))
            continue
        late(d)
        d.send(d.last().result(error=NOT_SENT_ERROR))


# -- the rule, on the pure machine ----------------------------------------------------------


def test_a_not_sent_attempt_past_its_deadline_stays_definite() -> None:
    d = Driver(saga()).start()
    late(d)
    d.send(d.last().result(error=NOT_SENT_ERROR))
    assert d.state is not None
    assert not d.state.steps[1].uncertain and d.state.steps[1].not_sent == 1
    assert d.state.pending is not None and d.state.pending.waiting == "backoff"


def test_a_step_no_attempt_of_which_was_ever_sent_is_still_undone_by_its_key() -> None:
    """A zombie worker may have sent the same attempt: NotSent never closes the key."""
    d = Driver(saga()).start()  # s0 succeeded; s1 pending
    fail_attempts_not_sent(d)
    d.compensate_all()
    assert d.state is not None and d.state.status == "compensated"
    assert d.state.steps[1].status == "compensated" and d.state.steps[1].not_sent == 3
    assert compensated(d) == ["s1", "s0"], "the undo by key runs (a tombstone if unneeded)"


def test_a_step_one_attempt_of_which_reached_the_participant_stays_maybe_applied() -> None:
    d = Driver(saga()).start()
    busy = ErrorInfo(type="Busy", message="try later", retryable=True, uncertain=False)
    d.send(d.last().result(error=busy))  # in time: it reached the participant, who said no
    fail_attempts_not_sent(d)  # backoff, then attempts 2 and 3 never sent
    d.compensate_all()
    assert d.state is not None and d.state.steps[1].status == "compensated"
    assert compensated(d) == ["s1", "s0"], "attempt 1's request may still straggle in"


def test_a_timed_out_attempt_keeps_the_step_uncertain_whatever_follows() -> None:
    d = Driver(saga()).start()
    assert d.state is not None and d.state.pending is not None
    d.now = d.state.pending.deadline
    d.send(TimerFired(saga_id="x"))  # no result in time: uncertain
    fail_attempts_not_sent(d)
    d.compensate_all()
    assert compensated(d) == ["s1", "s0"]


def test_a_remote_participant_cannot_claim_not_sent() -> None:
    far = Saga("three", input=Item, steps=[
        Step(f"s{i}", service=Service("far", remote=True), action=remote(output=Out),
             compensation=remote(),
             retry=FAST, timeout=timedelta(seconds=1))
        for i in range(2)
    ])  # fmt: skip
    d = Driver(far).start()
    late(d)
    d.send(d.last().result(error=NOT_SENT_ERROR))
    assert d.state is not None and d.state.steps[1].uncertain
    assert d.state.steps[1].not_sent == 0


# -- the executor ---------------------------------------------------------------------------


def one_step(action: Any, *, timeout: float = 1.0) -> Saga[Item]:
    return Saga("one", input=Item, steps=[
        Step("a", service=Service("svc"), action=action, compensation=undo, retry=FAST,
             timeout=timedelta(seconds=timeout)),
    ])  # fmt: skip


def first_request(definition: Saga[Item]) -> Any:
    from coordinator._machine import transition

    out = transition(
        SagaRegistry([definition]),
        None,
        StartSaga(saga_id="x", saga_type=definition.name, input={}),
        now=T0,
    )
    return out.requests[0]


def expired(by: timedelta) -> tuple[StepExecutor, Any, list[str]]:
    """An executor whose clock is ``by`` past the deadline of a one-step saga's request."""
    ran: list[str] = []

    async def act(ctx: StepContext[Item]) -> Out:
        ran.append(ctx.step)
        return Out(ref="ran")

    definition = one_step(act)
    request = first_request(definition)
    late = request.deadline + by
    return StepExecutor(SagaRegistry([definition]), clock=lambda: late), request, ran


async def test_the_only_sender_of_an_expired_attempt_says_not_sent() -> None:
    executor, request, ran = expired(timedelta(seconds=1))
    result = await executor.execute(request, only_sender=True)
    assert result.error is not None and result.error.type == NOT_SENT
    assert not result.error.uncertain and result.error.retryable and ran == []
    plain = await executor.execute(request)  # a step-topic executor: maybe a re-delivery
    assert plain.error is not None and plain.error.type == "Expired"


async def test_an_inline_attempt_runs_even_if_the_loop_stalled_past_its_deadline() -> None:
    executor, request, ran = expired(timedelta(seconds=5))
    result = await executor.execute(request, inline=True)
    assert result.ok and result.output == {"ref": "ran"} and ran == ["a"]


# -- StepTasks ------------------------------------------------------------------------------


class Gate:
    """An action that waits until the test opens it, recording who ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.running = 0
        self.most = 0
        self.open = asyncio.Event()

    async def action(self, ctx: StepContext[Item]) -> Out:
        self.ran.append(ctx.saga_id)
        self.running += 1
        self.most = max(self.most, self.running)
        await self.open.wait()
        self.running -= 1
        return Out(ref=ctx.saga_id)


def requests_for(definition: Saga[Item], ids: list[str]) -> list[Any]:
    from coordinator._machine import transition

    registry = SagaRegistry([definition])
    return [
        transition(
            registry, None, StartSaga(saga_id=i, saga_type=definition.name, input={}), now=T0
        ).requests[0]
        for i in ids
    ]


def tasks_for(
    definition: Saga[Item], producer: FakeProducer, clock: list[datetime], **kw: Any
) -> StepTasks:
    executor = StepExecutor(SagaRegistry([definition]), clock=lambda: clock[0])
    options: dict[str, Any] = {"concurrency": 2, "queue": 8, "max_result_bytes": 1 << 20}
    options["partitions"] = 4
    return StepTasks(executor, producer, inbox="t.inbox", **(options | kw))


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def results(producer: FakeProducer) -> dict[str, StepResult]:
    out: dict[str, StepResult] = {}
    for sent in producer.to("t.inbox"):
        msg = parse_inbox(sent.value)
        assert isinstance(msg, StepResult)
        out[msg.saga_id] = msg
    return out


async def test_at_most_concurrency_attempts_run_at_once_in_launch_order() -> None:
    gate, producer = Gate(), FakeProducer()
    definition = one_step(gate.action, timeout=60)
    tasks = tasks_for(definition, producer, [T0])
    for request in requests_for(definition, ["a", "b", "c", "d"]):
        tasks.launch(request)
    await settle()
    assert gate.ran == ["a", "b"] and tasks.backlog == 2
    gate.open.set()
    await settle()
    assert gate.ran == ["a", "b", "c", "d"] and gate.most == 2
    assert {k: r.ok for k, r in results(producer).items()} == dict.fromkeys("abcd", True)
    assert all(s.key == s.body()["saga_id"].encode() for s in producer.to("t.inbox"))
    assert len(tasks) == 0 and tasks.running == 0


async def test_results_leave_in_waves_each_wave_waiting_for_the_last_to_be_acked() -> None:
    gate, producer = Gate(), FakeProducer()
    gate.open.set()
    definition = one_step(gate.action, timeout=60)
    tasks = tasks_for(definition, producer, [T0])
    first, *rest = requests_for(definition, same_partition(3))
    batches: list[int] = []
    send_batch = producer.send_batch

    async def counted(topic: str, partition: int, records: Any) -> Any:
        batches.append(len(records))
        return await send_batch(topic, partition, records)

    producer.send_batch = counted  # type: ignore[method-assign]
    producer.hold = True
    tasks.launch(first)
    await settle()
    for request in rest:
        tasks.launch(request)
    await settle()
    assert [s.key for s in producer.enqueued] == [first.saga_id.encode()], "the others wait"
    producer.release()
    await settle()
    assert sorted(results(producer)) == sorted(r.saga_id for r in [first, *rest])
    assert len(producer.enqueued) == 3 and len(tasks) == 0
    assert batches == [1, 2], "the others left together, as one batch after the first's ack"


def same_partition(n: int, partitions: int = 4) -> list[str]:
    ids = [f"w{i}" for i in range(200)]
    target = partition_for(ids[0], partitions)
    return [i for i in ids if partition_for(i, partitions) == target][:n]


async def test_a_partition_whose_results_cannot_leave_holds_back_no_other() -> None:
    """Isolation: each inbox partition has its own wave sender."""
    gate, producer = Gate(), FakeProducer()
    gate.open.set()
    definition = one_step(gate.action, timeout=60)
    tasks = tasks_for(definition, producer, [T0])
    ids = [f"i{i}" for i in range(50)]
    stuck = ids[0]
    free = [i for i in ids if partition_for(i, 4) != partition_for(stuck, 4)][:3]
    producer.hold_partitions = {partition_for(stuck, 4)}  # e.g. its leader is away
    for request in requests_for(definition, [stuck, *free]):
        tasks.launch(request)
        await settle()
    assert sorted(results(producer)) == sorted(free), "the other partitions' results left"
    producer.release()
    await settle()
    assert stuck in results(producer) and len(tasks) == 0


async def test_an_attempt_whose_deadline_passes_while_it_waits_for_a_slot_is_not_sent() -> None:
    gate, producer, clock = Gate(), FakeProducer(), [T0]
    definition = one_step(gate.action)
    tasks = tasks_for(definition, producer, clock, concurrency=1)
    first, second = requests_for(definition, ["a", "b"])
    tasks.launch(first)
    tasks.launch(second)
    await settle()
    clock[0] = second.deadline + timedelta(milliseconds=1)  # "b" still waits for the slot
    gate.open.set()
    await settle()
    assert gate.ran == ["a"], "the expired attempt never ran"
    answer = results(producer)["b"]
    assert answer.error is not None and answer.error.type == NOT_SENT
    assert answer.attempt == second.attempt and not answer.error.uncertain


async def test_the_timer_of_an_answered_attempt_is_postponed_once_by_the_step_timeout() -> None:
    gate, producer = Gate(), FakeProducer()
    gate.open.set()
    definition = one_step(gate.action, timeout=7)
    tasks = tasks_for(definition, producer, [T0])
    answered, waiting = requests_for(definition, ["a", "b"])
    tasks.launch(answered)
    await settle()
    assert "a" in results(producer)
    deadline = answered.deadline.timestamp()
    assert tasks.postpone("a", deadline + 1) is None, "another deadline: a newer attempt"
    assert tasks.postpone("a", deadline) == deadline + 7
    assert tasks.postpone("a", deadline) is None, "postponed once; then it fires"
    assert tasks.postpone("b", waiting.deadline.timestamp()) is None, "no result: it fires"


async def test_room_holds_a_batch_while_the_backlog_is_full_and_frees_it_as_it_drains() -> None:
    gate, producer = Gate(), FakeProducer()
    definition = one_step(gate.action, timeout=60)
    tasks = tasks_for(definition, producer, [T0], concurrency=1, queue=2)
    for request in requests_for(definition, ["a", "b", "c"]):
        tasks.launch(request)  # one runs, two wait: the queue is full
    await settle()
    waiting = asyncio.create_task(tasks.room(never))
    other = asyncio.create_task(tasks.room(never))
    await settle()
    assert not waiting.done() and not other.done(), "batches wait while the queue is full"
    gate.open.set()
    await asyncio.wait_for(asyncio.gather(waiting, other), timeout=5)


async def test_a_stuck_batch_holds_no_room_from_the_other_partitions() -> None:
    """A batch that cannot finish (e.g. a missing definition) keeps nobody else waiting."""
    gate, producer = Gate(), FakeProducer()
    definition = one_step(gate.action, timeout=60)
    tasks = tasks_for(definition, producer, [T0], concurrency=1, queue=2)
    await asyncio.wait_for(tasks.room(never), timeout=5)  # partition 1's batch, then stuck
    for _ in range(3):  # partitions 2..4 go on, one after the other
        await asyncio.wait_for(tasks.room(never), timeout=5)


# -- the inbox processor launches attempts once their records are durable --------------------


def onehop_processor(
    definition: Saga[Item], producer: FakeProducer, store: DictStore, tasks: StepTasks
) -> InboxProcessor:
    registry = SagaRegistry([definition])
    proc = InboxProcessor(
        settings(),
        registry,
        producer,
        store,
        DeadlineIndex(),
        tasks.executor,
        set(),
        tasks=tasks,
        onehop_services={"svc"},
    )
    proc.changelog = CHANGELOG
    return proc


async def test_an_attempt_starts_after_its_record_is_acknowledged_and_skips_the_step_topic() -> (
    None
):
    gate, producer, store = Gate(), FakeProducer(), DictStore()
    definition = one_step(gate.action, timeout=60)
    tasks = tasks_for(definition, producer, [T0])
    proc, inbox = onehop_processor(definition, producer, store, tasks), Inbox()
    event = inbox.event("x", start("one", "x"))
    producer.hold = True
    handled = asyncio.create_task(proc.handle(event.message.partition, [event], never))
    await settle()
    assert gate.ran == [], "nothing runs before the saga record is acknowledged"
    producer.release()
    await handled
    await settle()
    assert gate.ran == ["x"]
    gate.open.set()
    await settle()
    assert [s.topic for s in producer.sent if s.topic.startswith("t.step")] == []
    answer = results(producer)["x"]
    assert answer.ok and answer.output == {"ref": "x"}
    stored = SagaState.model_validate_json(store["x"])
    assert [o["kind"] for o in stored.last_outbox] == ["event", "event"], "no request stored"


async def test_a_redelivered_record_never_launches_its_attempt_again() -> None:
    gate, producer, store = Gate(), FakeProducer(), DictStore()
    gate.open.set()
    definition = one_step(gate.action, timeout=60)
    tasks = tasks_for(definition, producer, [T0])
    proc, inbox = onehop_processor(definition, producer, store, tasks), Inbox()
    event = inbox.event("x", start("one", "x"))
    await proc.handle(event.message.partition, [event], never)
    await settle()
    restarted = onehop_processor(definition, producer, store, tasks)
    await restarted.handle(event.message.partition, [event], never)  # redelivered
    await settle()
    assert gate.ran == ["x"], "one sender per attempt: the durable deadline covers a lost one"
    events = [e["type"] for s in producer.to("t.lifecycle") for e in s.events()]
    assert events == ["saga_started", "step_started"] * 2, "its events are re-sent"
