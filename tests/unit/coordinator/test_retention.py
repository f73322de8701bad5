"""Retention of finished sagas on the pure machine: full record → marker → deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator import SagaRegistry
from coordinator._machine import Transition, transition
from coordinator._messages import InboxMessage, StartSaga, StepResult, TimerFired
from coordinator._retention import Retention
from coordinator._state import SagaState
from tests.unit.coordinator.sagas import linear_saga

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RETENTION = Retention(keep=timedelta(minutes=10), dedupe=timedelta(hours=1))
REGISTRY = SagaRegistry([linear_saga(2)])


def step(state: SagaState | None, msg: InboxMessage, now: datetime) -> Transition:
    return transition(REGISTRY, state, msg, now=now, retention=RETENTION)


def finished() -> SagaState:
    out = step(None, StartSaga(saga_id="x", saga_type="linear2", input={}), T0)
    while out.requests:
        result: StepResult = out.requests[0].result(output={"ref": "r"})
        out = step(out.state, result, T0)
    assert out.state is not None and out.state.status == "completed"
    return out.state


def test_a_finished_saga_expires_on_its_timer_then_is_deleted() -> None:
    state = finished()
    assert state.finished_at == T0 and state.wake_at() == T0 + timedelta(minutes=10)
    early = step(state, TimerFired(saga_id="x"), T0 + timedelta(minutes=5))
    assert not early.changed and early.state is state
    at = T0 + timedelta(minutes=10)
    marker = step(state, TimerFired(saga_id="x"), at).state
    assert marker is not None and marker.compact and marker.status == "completed"
    assert marker.steps == [] and marker.last_outbox == [] and marker.input == {}
    assert marker.wake_at() == at + timedelta(hours=1)
    assert len(marker.model_dump_json()) < len(state.model_dump_json()) / 3
    gone = step(marker, TimerFired(saga_id="x"), at + timedelta(hours=1))
    assert gone.changed and gone.deleted and gone.state is None


def test_an_expired_id_cannot_start_twice_within_the_dedupe_window_but_can_after() -> None:
    marker = step(finished(), TimerFired(saga_id="x"), T0 + timedelta(minutes=10)).state
    start = StartSaga(saga_id="x", saga_type="linear2", input={})
    again = step(marker, start, T0 + timedelta(minutes=20))
    assert not again.changed and not again.requests and again.state is marker
    gone = step(marker, TimerFired(saga_id="x"), T0 + timedelta(hours=2))
    fresh = step(gone.state, start, T0 + timedelta(hours=2))
    assert fresh.changed and fresh.requests  # forgotten: a new saga (documented)


def test_a_marker_ignores_late_results_and_stale_timers() -> None:
    state = finished()
    late = StepResult(saga_id="x", step="s0", phase="action", attempt=1, ok=True, output={})
    marker = step(state, TimerFired(saga_id="x"), T0 + timedelta(minutes=10)).state
    assert not step(marker, late, T0 + timedelta(minutes=11)).changed
    assert not step(marker, TimerFired(saga_id="x"), T0 + timedelta(minutes=11)).changed


def test_resting_unfinished_sagas_never_expire() -> None:
    from tests.unit.coordinator.test_outcomes import Driver, saga

    d = Driver(saga("park")).start()
    d.time_out_until_rest()
    assert d.state is not None and d.state.status == "parked"
    assert d.state.wake_at() is None and d.state.expires_at is None
    later = transition(
        d.registry, d.state, TimerFired(saga_id="x"), now=T0 + timedelta(days=365),
        retention=RETENTION,
    )  # fmt: skip
    assert not later.changed


def test_retention_off_keeps_everything() -> None:
    out = transition(REGISTRY, None, StartSaga(saga_id="x", saga_type="linear2", input={}), now=T0)
    while out.requests:
        out = transition(REGISTRY, out.state, out.requests[0].result(output={"ref": "r"}), now=T0)
    assert out.state is not None and out.state.wake_at() is None


def test_a_compensation_failed_saga_is_never_expired_until_an_operator_finishes_it() -> None:
    from coordinator._messages import RetryCompensation
    from coordinator.events import ErrorInfo

    now = T0
    out = step(None, StartSaga(saga_id="x", saga_type="linear2", input={}), now)
    assert out.state is not None
    state = out.state
    while state.status != "compensation_failed":
        for request in out.requests:  # s0 succeeds, s1 is declined, s0's undo keeps failing
            error = None
            if request.phase == "action" and request.step == "s1":
                error = ErrorInfo(type="Declined", message="no", retryable=False)
            elif request.phase == "compensation":
                error = ErrorInfo(type="Down", message="503", retryable=True)
            out = step(state, request.result(output=None if error else {"ref": "r"},
                                             error=error), now)  # fmt: skip
            assert out.state is not None
            state = out.state
        if not out.requests and state.pending is not None:  # a backoff: its timer
            now = state.pending.deadline
            out = step(state, TimerFired(saga_id="x"), now)
            assert out.state is not None
            state = out.state
    assert state.wake_at() is None and state.expires_at is None
    for later in (timedelta(hours=2), timedelta(days=400)):
        assert not step(state, TimerFired(saga_id="x"), now + later).changed
    # the operator retries; the undo succeeds: now the saga is finished and expires
    out = step(state, RetryCompensation(saga_id="x"), now)
    assert out.state is not None and out.requests
    done = step(out.state, out.requests[0].result(), now).state
    assert done is not None and done.status == "compensated"
    assert done.wake_at() == now + RETENTION.keep  # type: ignore[operator]


def test_a_late_success_for_a_marker_is_a_dead_letter_not_silence() -> None:
    marker = step(finished(), TimerFired(saga_id="x"), T0 + timedelta(minutes=10)).state
    late = StepResult(saga_id="x", step="s0", phase="action", attempt=1, ok=True, output={})
    out = step(marker, late, T0 + timedelta(minutes=11))
    assert out.rejected and "retention" in out.rejected and not out.changed
