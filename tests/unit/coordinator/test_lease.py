"""The membership lease (``coordinator._lease``): no batch runs, writes or sends for a
partition once this worker may have been expelled from its consumer group.

The lease lasts ``session_timeout - lease_margin`` after the send of the last heartbeat
answered OK. Expired, a batch waits for a heartbeat (same generation) or the revoke;
records acknowledged after it ran out send nothing until a heartbeat sent after the
acknowledgement confirms the generation.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from coordinator import (
    CoordinatorSettings,
    Saga,
    SagaError,
    SagaRegistry,
    Service,
    Step,
    StepContext,
)
from coordinator._app import Coordinator
from coordinator._delivery import Abandoned
from coordinator._lanes import Lanes
from coordinator._lease import HOLD_LOG_EVERY, POLL, Membership
from tests.unit.coordinator.sagas import SVC, undo
from tests.unit.coordinator.shell_kit import (
    CHANGELOG,
    DictStore,
    FakeProducer,
    Inbox,
    never,
    processor,
    start,
)
from tests.unit.coordinator.test_expiry import KEEP, T0, World, record

GENERATION = 5
SESSION, MARGIN, REBALANCE = 6.0, 1.0, 60.0
TTL = SESSION - MARGIN

#: effects of the inline step, per saga (a second run would count 2)
RUNS: Counter[str] = Counter()


class Item(BaseModel):
    n: int = 1


class Out(BaseModel):
    ref: str


async def effect(ctx: StepContext[Item]) -> Out:
    RUNS[ctx.saga_id] += 1
    return Out(ref=ctx.saga_id)


#: set by a test: the first inline step of ``chain`` pauses the worker past its lease
PAUSES: list[Clock] = []


async def pausing(ctx: StepContext[Item]) -> Out:
    RUNS[f"{ctx.saga_id}/{ctx.step}"] += 1
    for clock in PAUSES:
        clock.t += TTL + 1  # frozen inside the step; the lease ran out meanwhile
    return Out(ref=ctx.saga_id)


async def traced(ctx: StepContext[Item]) -> Out:
    RUNS[f"{ctx.saga_id}/{ctx.step}"] += 1
    return Out(ref=ctx.saga_id)


LOCAL = Service("local", inline=True)
INLINE = Saga("inline", input=Item, steps=[
    Step("a", service=LOCAL, action=effect, compensation=undo),
    Step("b", service=SVC, action=effect, compensation=undo),
])  # fmt: skip
CHAIN = Saga("chain", input=Item, steps=[
    Step("a", service=LOCAL, action=pausing, compensation=undo),
    Step("b", service=LOCAL, action=traced, compensation=undo),
])  # fmt: skip
REGISTRY = SagaRegistry([INLINE, CHAIN])


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def member(generation: int = GENERATION) -> tuple[Membership, Clock]:
    """A member of ``generation`` whose heartbeat was just answered."""
    clock = Clock()
    lease = Membership(SESSION, MARGIN, rebalance_timeout=REBALANCE, now=clock)
    lease.assigned = generation
    lease.renewed(clock.t, generation)
    return lease, clock


async def looks(n: int = 4) -> None:
    """Let a waiting batch look at the lease ``n`` times."""
    for _ in range(n):
        await asyncio.sleep(POLL)


# -- the lease itself --------------------------------------------------------------------


def test_the_lease_lasts_the_session_timeout_less_the_margin_after_the_heartbeats_send() -> None:
    lease, clock = member()
    clock.t += TTL - 0.01
    assert lease.valid()
    clock.t += 0.01
    assert not lease.valid(), "the broker may expel it a margin later"
    lease.renewed(clock.t - 0.5, GENERATION)  # a heartbeat sent 0.5 s ago was answered
    assert lease.valid()
    lease.renewed(clock.t - 3.0, GENERATION)  # an older answer never shortens it
    clock.t += TTL - 0.6
    assert lease.valid()


def test_a_lease_holds_only_for_the_generation_of_the_assignment() -> None:
    lease, clock = member()
    lease.assigned = GENERATION + 1
    assert not lease.valid(), "a lease of another generation than the lanes'"
    lease.assigned = GENERATION
    lease.lost(GENERATION)  # a heartbeat answered "unknown member"
    assert not lease.valid()
    lease.renewed(clock.t, GENERATION)  # a late answer of the lost generation
    assert not lease.valid(), "an expelled member's generation never comes back"
    lease.joined(clock.t, GENERATION + 1)  # rejoined: SyncGroup answered
    lease.assigned = GENERATION + 1
    assert lease.valid()
    lease.renewed(clock.t + 1, GENERATION - 1)  # a stale answer of an older generation
    assert lease.confirmed == (clock.t, GENERATION + 1)


def test_losing_a_generation_keeps_the_lease_of_a_newer_one() -> None:
    lease, clock = member()
    lease.joined(clock.t, GENERATION + 1)  # rejoined
    lease.assigned = GENERATION + 1
    lease.lost(GENERATION)  # a late "unknown member" of the generation it left
    assert lease.valid(), "only a lease of the lost generation (or older) ends"
    lease.lost(GENERATION + 1)
    assert not lease.valid()


def test_rebalance_in_progress_renews_the_lease_only_until_the_rebalance_could_expel_it() -> None:
    """A member that has not rejoined when the join phase ends is removed, however it
    heartbeats; the phase began after the broker received the last heartbeat it answered
    OK, so it ends no earlier than that heartbeat's send + the rebalance timeout
    (review-fence F3)."""
    lease, clock = member()  # its heartbeat, sent now, answered OK
    ok = clock.t
    while clock.t + 2 < ok + REBALANCE - MARGIN:
        clock.t += 2
        lease.renewed(clock.t, GENERATION, rebalancing=True)  # answered at once
        assert lease.valid()
    clock.t = ok + REBALANCE - MARGIN - 0.01
    lease.renewed(clock.t, GENERATION, rebalancing=True)
    assert lease.valid()
    clock.t += 0.01
    lease.renewed(clock.t, GENERATION, rebalancing=True)
    assert not lease.valid(), "the join phase may end a margin later: no rejoin, no member"
    assert lease.confirmed == (clock.t, GENERATION), "but it is still a member now"
    lease.joined(clock.t, GENERATION + 1)  # it rejoined (the lanes stopped meanwhile)
    lease.assigned = GENERATION + 1
    assert lease.valid()


def test_no_lease_outlasts_a_rebalance_timeout_shorter_than_the_session() -> None:
    clock = Clock()
    lease = Membership(10.0, 1.0, rebalance_timeout=4.0, now=clock)
    lease.assigned = GENERATION
    lease.joined(clock.t, GENERATION)
    clock.t += 2.99
    assert lease.valid()
    clock.t += 0.01
    assert not lease.valid(), "a rebalance begun right after that SyncGroup may end it"


def test_a_margin_must_leave_a_lease_of_two_heartbeat_intervals() -> None:
    """The next heartbeat leaves an interval after the last one, and renews the lease only
    once answered: a lease barely over an interval lapses between two heartbeats of a
    healthy worker as soon as their round trip is a few tens of milliseconds (review-fence
    F4: 4 s session, 2.6 s margin: lease 1.4 s, interval 1.33 s)."""
    with pytest.raises(ValueError, match="lower SAGA_LEASE_MARGIN"):
        Membership(6.0, 6.0, rebalance_timeout=60.0)
    with pytest.raises(ValidationError) as refused:
        CoordinatorSettings(
            session_timeout=timedelta(seconds=4), lease_margin=timedelta(seconds=2.6)
        )
    message = str(refused.value)
    assert "SAGA_LEASE_MARGIN=2.6s leaves a membership lease of 1.4s" in message
    assert "less than two heartbeat intervals (2 x 1.33333s" in message
    fixes = re.search(
        r"Set SAGA_LEASE_MARGIN to at most ([\d.]+)s, or SAGA_SESSION_TIMEOUT to at least "
        r"([\d.]+)s",
        message,
    )
    assert fixes is not None, message
    margin, session = (float(value) for value in fixes.groups())
    for fixed in (
        {"session_timeout": timedelta(seconds=4), "lease_margin": timedelta(seconds=margin)},
        {"session_timeout": timedelta(seconds=session), "lease_margin": timedelta(seconds=2.6)},
    ):
        settings = CoordinatorSettings(**fixed)  # either fix is accepted
        lease = settings.session_timeout - settings.lease_margin
        assert lease >= 2 * settings.heartbeat_interval
    settings = CoordinatorSettings(session_timeout=timedelta(seconds=6))
    assert settings.heartbeat_interval == timedelta(seconds=2)
    assert settings.lease_margin == timedelta(seconds=1)
    CoordinatorSettings(session_timeout=timedelta(seconds=30), lease_margin=timedelta(seconds=24))
    with pytest.raises(ValidationError, match=r"at most 24s, or SAGA_SESSION_TIMEOUT .* 31s"):
        CoordinatorSettings(
            session_timeout=timedelta(seconds=30), lease_margin=timedelta(seconds=25)
        )


def test_a_rebalance_timeout_that_leaves_a_lease_under_two_heartbeat_intervals_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No lease outlasts the rebalance timeout (Faust's, env BROKER_REBALANCE_TIMEOUT), which
    CoordinatorSettings does not know: 4 s leaves 3 s at the default 1 s margin, one 3 s
    heartbeat interval, so the lease would lapse at every heartbeat (was: accepted)."""
    monkeypatch.setenv("BROKER_REBALANCE_TIMEOUT", "4")
    with pytest.raises(ValueError, match=r"BROKER_REBALANCE_TIMEOUT to at least 7s") as refused:
        Coordinator(CoordinatorSettings(), SagaRegistry())
    assert "leave a membership lease of 3s" in str(refused.value)
    monkeypatch.setenv("BROKER_REBALANCE_TIMEOUT", "7")  # the fix it names
    lease = Coordinator(CoordinatorSettings(), SagaRegistry()).membership
    assert lease.ttl == 6.0


def test_the_lease_is_of_the_session_timeout_the_consumer_really_gets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust's own env BROKER_SESSION_TIMEOUT sets the session timeout Faust hands aiokafka
    over the one the Coordinator passes it (SAGA_SESSION_TIMEOUT). A lease of the latter
    outlived the real session: with 6 s, a worker paused 7 s is expelled and its partitions
    taken while its lease (9 s) still let it write saga records and send their effects."""
    monkeypatch.setenv("BROKER_SESSION_TIMEOUT", "6")
    monkeypatch.setenv("BROKER_HEARTBEAT_INTERVAL", "2")
    coordinator = Coordinator(CoordinatorSettings(), SagaRegistry())  # SAGA_SESSION_TIMEOUT 10
    consumer_session = coordinator.app.conf.broker_session_timeout  # what aiokafka gets
    assert consumer_session == 6.0
    lease = coordinator.membership
    assert (lease.session_timeout, lease.ttl) == (6.0, 5.0), "no lease outlives the session"


def test_a_faust_heartbeat_interval_that_leaves_no_lease_between_heartbeats_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_HEARTBEAT_INTERVAL", "9")  # the lease is 9 s
    with pytest.raises(SagaError, match="unset them") as refused:
        Coordinator(CoordinatorSettings(), SagaRegistry())
    assert "less than two heartbeat intervals (2 x 9s)" in str(refused.value)


def test_a_static_group_member_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's env CONSUMER_GROUP_INSTANCE_ID makes the consumer a static member (KIP-345):
    a process joining with the same id is handed its assignment at once, without a
    rebalance or a session timeout, while this one's lease still runs (was: accepted)."""
    monkeypatch.setenv("CONSUMER_GROUP_INSTANCE_ID", "worker-1")
    # a SagaError: the package's root exception catches every refusal of a worker's settings
    with pytest.raises(SagaError, match=r"CONSUMER_GROUP_INSTANCE_ID='worker-1'.*Unset it"):
        Coordinator(CoordinatorSettings(), SagaRegistry())


# -- inbox batches -----------------------------------------------------------------------


class Fenced:
    """An inbox processor under a lease (a member of ``GENERATION``, just confirmed)."""

    def __init__(self) -> None:
        self.lease, self.clock = member()
        self.producer, self.store = FakeProducer(), DictStore()
        self.proc = processor(REGISTRY, self.producer, self.store)
        self.proc.fence = self.lease

    def start(
        self, saga_id: str, saga_type: str = "inline", stopping: Callable[[], bool] = never
    ) -> asyncio.Future[None]:
        """A batch of one record (a start) in a task of its own."""
        event = Inbox().event(saga_id, start(saga_type, saga_id))
        return asyncio.ensure_future(self.proc.handle(event.message.partition, [event], stopping))

    def nothing_written(self) -> bool:
        return self.producer.enqueued == [] and dict(self.store) == {}


async def test_an_expired_lease_holds_a_batch_before_anything_runs_until_a_heartbeat() -> None:
    f = Fenced()
    f.clock.t += TTL  # paused past the lease
    batch = f.start("held")
    await looks()
    assert not batch.done()
    assert RUNS["held"] == 0, "an inline step is an effect: it waits too"
    assert f.nothing_written()
    f.lease.renewed(f.clock.t, GENERATION)  # a heartbeat got through: still the member
    await batch
    assert RUNS["held"] == 1 and "held" in f.store
    assert f.producer.to("t.step.svc"), "its effects were sent"


async def test_a_long_wait_for_the_lease_is_logged_again_with_how_long_it_waited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Fenced()
    f.clock.t += TTL + 2
    with caplog.at_level(logging.WARNING, logger="coordinator.lease"):
        batch = f.start("waiting")
        await looks()
        assert len(caplog.records) == 1 and "membership lease ran out 2.0s ago" in caplog.text
        f.clock.t += HOLD_LOG_EVERY - 1
        await looks()
        assert len(caplog.records) == 1, "not at every look"
        f.clock.t += 1
        await looks()
        assert len(caplog.records) == 2
        assert "still waiting after 30s: membership lease ran out 32.0s ago" in caplog.text
        f.clock.t += HOLD_LOG_EVERY
        await looks()
        assert len(caplog.records) == 3 and "still waiting after 60s" in caplog.text
        f.lease.renewed(f.clock.t, GENERATION)
        await batch
    assert "membership of generation 5 confirmed after 60.0s; going on" in caplog.text


async def test_a_revoke_while_the_batch_waits_abandons_it_unwritten() -> None:
    f = Fenced()
    f.clock.t += TTL + 3
    stopping = False
    batch = f.start("revoked", stopping=lambda: stopping)
    await looks()
    stopping = True  # the revoke stops the lane
    with pytest.raises(Abandoned):
        await batch
    assert RUNS["revoked"] == 0 and f.nothing_written()


async def test_an_expelled_member_drops_the_batch_at_once(caplog: pytest.LogCaptureFixture) -> None:
    f = Fenced()
    f.lease.lost(GENERATION)  # the heartbeat was answered "unknown member id"
    with caplog.at_level(logging.WARNING, logger="coordinator.lease"), pytest.raises(Abandoned):
        await f.start("expelled")
    assert RUNS["expelled"] == 0 and f.nothing_written()
    assert "no longer a member of generation 5" in caplog.text


async def test_an_inline_step_after_a_pause_waits_for_the_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Fenced()
    PAUSES.append(f.clock)
    try:
        batch = f.start("chained", "chain")
        await looks()
        assert RUNS["chained/a"] == 1 and not batch.done()
        assert RUNS["chained/b"] == 0, "the chain's next step waits for a heartbeat"
        f.lease.lost(GENERATION)  # the heartbeat: expelled
        with pytest.raises(Abandoned):
            await batch
    finally:
        PAUSES.clear()
    assert RUNS["chained/b"] == 0 and f.nothing_written()
    assert "dead" not in caplog.text.lower(), "abandoned, not dead-lettered"


async def late_ack(
    saga_id: str, stopping: Callable[[], bool] = never
) -> tuple[Fenced, asyncio.Future[None]]:
    """A batch whose changelog records are acknowledged after the lease ran out (paused
    between the check and the acknowledgement)."""
    f = Fenced()
    f.producer.hold = True
    batch = f.start(saga_id, stopping=stopping)
    while not f.producer.enqueued:
        await asyncio.sleep(0)
    f.clock.t += TTL + 2  # the pause
    f.producer.release()  # the acknowledgement arrives after it
    await looks()
    assert [s.topic for s in f.producer.sent] == [CHANGELOG], "nothing derived is sent"
    return f, batch


async def test_records_acknowledged_after_the_lease_send_nothing_once_the_generation_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="coordinator.lease"):
        f, batch = await late_ack("late")
        f.lease.lost(GENERATION)  # then the heartbeat: expelled
        with pytest.raises(Abandoned):
            await batch
    assert [s.topic for s in f.producer.sent] == [CHANGELOG], "no event, no step request"
    assert dict(f.store) == {}, "the local table keeps its older records"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "acknowledged after this worker's membership lease" in errors[0]


async def test_records_acknowledged_late_are_followed_by_their_effects_once_confirmed() -> None:
    f, batch = await late_ack("confirmed")
    f.lease.renewed(f.clock.t - 0.1, GENERATION)  # answered, but sent before the ack
    await looks()
    assert not batch.done(), "a heartbeat sent before the acknowledgement proves nothing"
    f.lease.renewed(f.clock.t + 0.1, GENERATION)  # sent after it: nobody took the partition
    await batch
    assert "confirmed" in f.store and f.producer.to("t.step.svc") and f.producer.to("t.lifecycle")


async def test_records_acknowledged_late_at_a_revoke_are_confirmed_by_its_heartbeats() -> None:
    """The revoke lets the batch in progress finish (the lanes' stop timeout), and aiokafka
    heartbeats on meanwhile, answered "rebalance in progress": one sent after the
    acknowledgement proves the group is still at this generation, so nobody took the
    partition before the records landed (review-fence F5)."""
    revoked = False
    f, batch = await late_ack("revoked late", stopping=lambda: revoked)
    revoked = True  # the revoke: the lane is told to stop
    await looks()
    assert not batch.done(), "it waits for the heartbeat the revoke leaves time for"
    f.lease.renewed(f.clock.t + 0.1, GENERATION, rebalancing=True)
    await batch
    assert "revoked late" in f.store and f.producer.to("t.step.svc")
    assert f.producer.to("t.lifecycle"), "no re-send left to the next owner"


async def test_records_acknowledged_late_and_never_confirmed_before_the_stop_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="coordinator.lease"):
        f, batch = await late_ack("cancelled", stopping=lambda: True)
        await looks()
        batch.cancel()  # the lanes' stop timeout (Lane.stop)
        with pytest.raises(asyncio.CancelledError):
            await batch
    assert [s.topic for s in f.producer.sent] == [CHANGELOG] and dict(f.store) == {}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "was not confirmed since" in errors[0]


async def test_a_changelog_write_is_tried_again_only_under_the_lease() -> None:
    f = Fenced()
    f.producer.failures[CHANGELOG] = 1  # the first attempt fails (broker trouble)
    batch = f.start("retried")
    while not f.producer.enqueued:
        await asyncio.sleep(0)
    f.clock.t += TTL  # and the lease runs out before the retry
    await looks(8)  # (the retry's backoff is 0.1 s)
    assert not batch.done() and f.producer.to(CHANGELOG) == []
    assert len(f.producer.enqueued) == 1, "not tried again"
    f.lease.renewed(f.clock.t, GENERATION)
    await batch
    assert len(f.producer.to(CHANGELOG)) == 1 and "retried" in f.store


# -- a lane ------------------------------------------------------------------------------


async def test_a_lane_abandoned_by_the_lease_acks_nothing_and_is_not_drained() -> None:
    f = Fenced()
    f.lease.lost(GENERATION)
    lanes = Lanes("inbox", f.proc.handle, batch_size=10, buffer=100)
    event = Inbox().event("lane", start("inline", "lane"))
    lanes.dispatch(event)
    lane = lanes.lanes[event.message.partition]
    await asyncio.wait_for(lane.task, timeout=5)  # the lane ended on its own
    assert not event.acked and RUNS["lane"] == 0
    assert await lanes.stop() == set(), "no sent mark may vouch for it"


# -- expiry ------------------------------------------------------------------------------


async def test_expiry_waits_for_the_lease_and_a_revoke_abandons_it() -> None:
    w = World()
    lease, clock = member()
    w.expirer.fence = lease
    p = w.put(record("x", "completed", expires_at=T0))
    w.now = (T0 + KEEP).timestamp()
    clock.t += TTL
    expiry = asyncio.ensure_future(w.expire_due(p))
    await looks()
    assert not expiry.done() and w.producer.enqueued == []
    w.expirer.held.discard(p)  # revoked
    with pytest.raises(Abandoned):
        await expiry
    assert w.producer.enqueued == []


async def test_expiry_acknowledged_after_the_lease_leaves_the_local_store_alone() -> None:
    w = World()
    lease, clock = member()
    w.expirer.fence = lease
    p = w.put(record("x", "completed", expires_at=T0))
    before = w.store["x"]
    w.now = (T0 + KEEP).timestamp()
    w.producer.hold = True
    expiry = asyncio.ensure_future(w.expire_due(p))
    while not w.producer.enqueued:
        await asyncio.sleep(0)
    clock.t += TTL + 1
    w.producer.release()
    await looks()
    lease.lost(GENERATION)
    with pytest.raises(Abandoned):
        await expiry
    assert w.store["x"] == before and w.store.offsets.get(p) is None
