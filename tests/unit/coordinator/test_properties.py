"""Property-based tests of the saga rules on the pure state machine.

For any saga length, any failing step (business or transient), any duplicated, reordered
or (once) lost delivery, and any compensation failures followed by an operator retry:
the compensations that run are exactly the completed steps in reverse order, each
applied once, and the saga ends in exactly one terminal state.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import SagaRegistry
from coordinator._machine import transition
from coordinator._messages import InboxMessage, RetryCompensation, StartSaga, TimerFired
from coordinator._state import TERMINAL
from coordinator.events import TERMINAL_EVENT_TYPES, ErrorInfo
from tests.unit.coordinator.sagas import linear_saga

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 7))
    return {
        "n": n,
        "without": frozenset(draw(st.sets(st.integers(0, n - 1), max_size=n))),
        "fail_at": draw(st.one_of(st.none(), st.integers(0, n - 1))),
        "business": draw(st.booleans()),
        "transient_failures": draw(st.integers(0, 4)),
        "comp_fail_step": draw(st.one_of(st.none(), st.integers(0, n - 1))),
        "comp_failures": draw(st.integers(0, 8)),
    }


def run_scenario(sc: dict, rnd: random.Random) -> None:
    saga = linear_saga(sc["n"], without_compensation=sc["without"])
    registry = SagaRegistry([saga])
    now = T0
    pool: list[InboxMessage] = [StartSaga(saga_id="x", at=now, saga_type=saga.name, input={"n": 1})]
    state = None
    events = []
    effects: dict[str, int] = {}  # idempotency key -> times the participant applied it
    tries: dict[tuple[str, str], int] = {}
    healed = False
    lost_one = False
    for _ in range(3000):
        if not pool:
            assert state is not None
            if state.status == "compensation_failed" and not healed:
                healed = True  # the operator fixes the participant and retries
                pool.append(RetryCompensation(saga_id="x", at=now))
                continue
            if state.resting:
                break
            assert state.pending is not None, state
            now = max(now, state.pending.deadline)
            pool.append(TimerFired(saga_id="x", at=now))
        msg = pool.pop(rnd.randrange(len(pool)))
        if rnd.random() < 0.1:
            pool.append(msg)  # redelivered later
        out = transition(registry, state, msg, now=msg.at or now)
        assert out.rejected is None, out.rejected
        state = out.state
        events.extend(out.events)
        for req in out.requests:
            key = (req.phase, req.step)
            tries[key] = tries.get(key, 0) + 1
            index = int(req.step[1:])
            error = None
            if req.phase == "action" and index == sc["fail_at"]:
                if sc["business"]:
                    error = ErrorInfo(type="Declined", message="no", retryable=False)
                elif tries[key] <= sc["transient_failures"]:
                    error = ErrorInfo(type="Down", message="503")
            if (
                req.phase == "compensation"
                and index == sc["comp_fail_step"]
                and not healed
                and tries[key] <= sc["comp_failures"]
            ):
                error = ErrorInfo(type="Down", message="503")
            if error is None:
                effects[req.idempotency_key] = 1  # idempotent participant: once per key
            result = req.result(
                at=now, output={"ref": req.step} if error is None else None, error=error
            )
            if not lost_one and rnd.random() < 0.05:
                lost_one = True  # a lost reply: only the deadline can recover it
                continue
            pool.append(result)
    assert state is not None and state.status in TERMINAL, state and state.status

    # exactly one terminal event, and it is the last one
    terminal = [e for e in events if e.type in TERMINAL_EVENT_TYPES]
    assert len(terminal) == 1
    # after it, only late successes the unwind already covered (redelivered replies)
    after = events[events.index(terminal[0]) + 1 :]
    assert all(e.type == "step_late_success" for e in after)
    events = events[: events.index(terminal[0]) + 1]
    assert [e.seq for e in events + after] == list(range(1, len(events) + len(after) + 1))

    succeeded = [e.step for e in events if e.type == "step_succeeded"]
    assert len(succeeded) == len(set(succeeded)), "a step succeeded twice"
    compensated = [e.step for e in events if e.type == "compensation_succeeded"]
    if state.status == "completed":
        assert succeeded == [f"s{i}" for i in range(sc["n"])] and compensated == []
    else:
        # the completed steps, and the failed one if any of its attempts was uncertain
        # (a lost reply times out: its effect may have happened)
        maybe = [x.name for x in state.steps if x.uncertain and x.name not in succeeded]
        expected = [s for s in reversed(succeeded + maybe) if int(s[1:]) not in sc["without"]]
        assert compensated == expected
        fail_at = sc["fail_at"]
        assert fail_at is not None
        assert succeeded == [f"s{i}" for i in range(fail_at)]
    # each compensation's effect applied at the participant at most once per key
    assert all(v == 1 for v in effects.values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(), seed=st.integers(0, 2**32))
def test_compensations_are_exactly_the_completed_steps_reversed(sc: dict, seed: int) -> None:
    run_scenario(sc, random.Random(seed))


def test_duplicate_start_runs_once() -> None:
    registry = SagaRegistry([linear_saga(2)])
    start = StartSaga(saga_id="x", at=T0, saga_type="linear2", input={})
    first = transition(registry, None, start, now=T0)
    again = transition(registry, first.state, start, now=T0)
    assert first.requests and not again.requests and not again.events and not again.changed


def test_redelivered_last_message_re_emits_its_outbox() -> None:
    registry = SagaRegistry([linear_saga(2)])
    start = StartSaga(saga_id="x", at=T0, saga_type="linear2", input={})
    first = transition(registry, None, start, now=T0, message_id="0:17")
    replay = transition(registry, first.state, start, now=T0, message_id="0:17")
    assert replay.replayed and not replay.changed
    assert replay.events == first.events and replay.requests == first.requests


def test_timer_before_deadline_does_nothing_and_after_retries_same_key() -> None:
    registry = SagaRegistry([linear_saga(1)])
    start = transition(
        registry, None, StartSaga(saga_id="x", saga_type="linear1", input={}), now=T0
    )
    early = transition(registry, start.state, TimerFired(saga_id="x"), now=T0)
    assert not early.changed and not early.requests
    late_at = T0 + timedelta(seconds=2)
    late = transition(registry, start.state, TimerFired(saga_id="x"), now=late_at)
    assert [e.type for e in late.events] == ["step_failed", "step_started"] or (
        [e.type for e in late.events] == ["step_failed"]
        and late.state
        and late.state.pending
        and late.state.pending.waiting == "backoff"
    )
    retry = (
        late.requests
        or transition(
            registry, late.state, TimerFired(saga_id="x"), now=late_at + timedelta(seconds=5)
        ).requests
    )
    assert retry[0].attempt == 2
    assert retry[0].idempotency_key == start.requests[0].idempotency_key
