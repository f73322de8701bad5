"""Pins the aiokafka internals the membership lease hooks (``Membership.watch``).

The lease learns of heartbeats, SyncGroups and LeaveGroups by wrapping ``send`` of the
group consumer's ``AIOKafkaClient`` and reading ``_generation_id`` of the requests: both
private to aiokafka. These tests drive aiokafka's own ``GroupCoordinator`` code (the
heartbeat, the follower's SyncGroup, the leave) through a hooked client, so a release
that routes them elsewhere or renames the field fails here, loudly, not in production
(where every lane would wait for a lease that never comes, or never stop for one that
ran out).
"""

from __future__ import annotations

import inspect
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiokafka
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance, GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    IllegalGenerationError,
    NoError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from aiokafka.protocol.group import HeartbeatRequest, LeaveGroupRequest, SyncGroupRequest
from packaging.requirements import Requirement

from coordinator._lease import Membership

#: the aiokafka release these hooks were read against (group_coordinator.py)
PINNED = "0.14.0"
#: the rebalance timeout the lease assumes (seconds; the group's may only be longer)
REBALANCE = 30.0


class Broker:
    """Answers the group requests the hooked client sends, with a chosen error code."""

    def __init__(self) -> None:
        self.code = NoError.errno
        self.requests: list[Any] = []

    async def send(self, node_id: Any, request: Any, **kwargs: Any) -> Any:
        self.requests.append(request)
        return SimpleNamespace(error_code=self.code, member_assignment=b"")


class Clock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def group() -> AsyncIterator[tuple[GroupCoordinator, Membership, Broker, Clock]]:
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9")  # never started: no I/O
    broker, clock = Broker(), Clock()
    client.send = broker.send  # type: ignore[method-assign]
    lease = Membership(10.0, 1.0, rebalance_timeout=REBALANCE, now=clock)
    lease.watch(client)
    coordinator = GroupCoordinator(client, SubscriptionState(), group_id="g")
    coordinator.coordinator_id = 0
    coordinator.member_id, coordinator.generation = "m-1", 7
    lease.assigned = 7
    try:
        yield coordinator, lease, broker, clock
    finally:
        await coordinator.close()


def test_the_installed_aiokafka_is_the_one_the_hooks_were_read_against() -> None:
    assert aiokafka.__version__ == PINNED, (
        f"aiokafka {aiokafka.__version__} is installed; coordinator._lease hooks its private "
        f"API as of {PINNED} (AIOKafkaClient.send, the requests' _generation_id, "
        "GroupCoordinator._do_heartbeat / _send_sync_group_request / _maybe_leave_group). "
        "Re-read aiokafka/consumer/group_coordinator.py, run these tests, then update PINNED"
    )


def test_the_group_consumer_s_coordinator_uses_the_client_the_lease_hooks() -> None:
    start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert re.search(r"GroupCoordinator\(\s*self\._client,", start), (
        "AIOKafkaConsumer.start no longer gives its own _client to the GroupCoordinator: "
        "Membership.watch(consumer._client) would see no heartbeat"
    )
    send = inspect.getsource(GroupCoordinator._send_req)
    assert "self._client.send(" in send


@pytest.mark.parametrize("request_type", [HeartbeatRequest, SyncGroupRequest])
def test_group_requests_carry_their_generation_where_the_lease_reads_it(
    request_type: type,
) -> None:
    args = ("g", 7, "m-1") if request_type is HeartbeatRequest else ("g", 7, "m-1", None, [])
    assert request_type(*args)._generation_id == 7


async def test_a_heartbeat_answered_ok_renews_the_lease_from_its_send(
    group: tuple[GroupCoordinator, Membership, Broker, Clock],
) -> None:
    coordinator, lease, broker, clock = group
    assert not lease.valid(), "no heartbeat answered yet"
    assert await coordinator._do_heartbeat() is True
    assert [type(r) for r in broker.requests] == [HeartbeatRequest]
    assert lease.valid()
    clock.t += 9.0
    assert not lease.valid(), "9 s after the send (session 10 s, margin 1 s)"
    broker.code = RebalanceInProgressError.errno  # the broker renews the session too
    assert await coordinator._do_heartbeat() is True
    assert lease.valid()


async def test_rebalance_in_progress_renews_the_lease_only_until_the_join_phase_could_end(
    group: tuple[GroupCoordinator, Membership, Broker, Clock],
) -> None:
    """aiokafka heartbeats on through the revoke callback, every answer "rebalance in
    progress", and the broker renews the session for each; but a member that has not
    rejoined when the join phase ends (the rebalance timeout after it began, which is
    after the last heartbeat answered OK) is removed all the same (review-fence F3)."""
    coordinator, lease, broker, clock = group
    assert await coordinator._do_heartbeat() is True  # OK, sent at 50
    ok = clock.t
    broker.code = RebalanceInProgressError.errno  # a rebalance began; a long revoke
    while clock.t + 3 < ok + REBALANCE - 1:
        clock.t += 3
        assert await coordinator._do_heartbeat() is True
        assert lease.valid()
    clock.t = ok + REBALANCE - 1  # (margin 1 s)
    assert await coordinator._do_heartbeat() is True
    assert not lease.valid(), (
        "a lease past the last OK heartbeat's send + the rebalance timeout: the group may "
        "have gone on without this member"
    )


@pytest.mark.parametrize("error", [UnknownMemberIdError, IllegalGenerationError])
async def test_a_heartbeat_answered_expelled_ends_the_lease_as_aiokafka_resets_its_generation(
    group: tuple[GroupCoordinator, Membership, Broker, Clock], error: type
) -> None:
    coordinator, lease, broker, _ = group
    await coordinator._do_heartbeat()
    assert lease.valid()
    broker.code = error.errno
    assert await coordinator._do_heartbeat() is False
    assert coordinator.generation == -1, "aiokafka resets it (then revokes)"
    assert not lease.valid()
    broker.code = NoError.errno
    coordinator.generation = 7  # (a stale heartbeat of the lost generation answered OK)
    await coordinator._do_heartbeat()
    assert not lease.valid(), "an expelled member's generation never comes back"


async def test_a_sync_group_answered_ok_starts_the_lease_of_its_generation(
    group: tuple[GroupCoordinator, Membership, Broker, Clock],
) -> None:
    coordinator, lease, broker, _ = group
    coordinator.generation = 8  # JoinGroup answered: generation 8
    lease.assigned = 8
    rebalance = CoordinatorGroupRebalance(
        coordinator, "g", 0, None, (RoundRobinPartitionAssignor,), 10000, 100
    )
    assert await rebalance._on_join_follower() == b""
    assert [type(r) for r in broker.requests] == [SyncGroupRequest]
    assert lease.valid()


async def test_leaving_the_group_ends_the_lease_before_the_leave_lands(
    group: tuple[GroupCoordinator, Membership, Broker, Clock],
) -> None:
    coordinator, lease, broker, _ = group
    await coordinator._do_heartbeat()
    assert lease.valid()
    await coordinator._maybe_leave_group()
    assert type(broker.requests[-1]) is LeaveGroupRequest
    assert not lease.valid()


async def test_a_group_created_anew_after_the_expulsion_gives_a_lease_from_generation_1(
    group: tuple[GroupCoordinator, Membership, Broker, Clock],
) -> None:
    """Generations grow only within one incarnation of the group: the broker deletes an
    empty group without committed offsets (offsets.retention.check.interval.ms, 10 min)
    and the next JoinGroup creates it at generation 1. A worker expelled at generation 7
    (suspended longer than that, say) then joins generation 1: its SyncGroup answered OK
    is its membership, whatever generation it lost before (review-fence F1)."""
    coordinator, lease, broker, _ = group
    await coordinator._do_heartbeat()
    broker.code = UnknownMemberIdError.errno  # expelled at generation 7; the group goes
    assert await coordinator._do_heartbeat() is False
    assert not lease.valid()
    broker.code = NoError.errno
    coordinator.member_id, coordinator.generation = "m-2", 1  # JoinGroup: a new group
    rebalance = CoordinatorGroupRebalance(
        coordinator, "g", 0, None, (RoundRobinPartitionAssignor,), 10000, 100
    )
    assert await rebalance._on_join_follower() == b""
    lease.assigned = 1  # Faust's assignment of generation 1
    assert lease.valid(), "a member of generation 1 holds no lease: every lane stalls"
    assert await coordinator._do_heartbeat() is True
    assert lease.valid()


def test_the_package_admits_only_the_aiokafka_release_the_hooks_were_read_against() -> None:
    """The pin above guards CI only; an install resolves pyproject's requirement. Let it
    admit a release whose group requests the hook does not recognise (before 0.14 they
    were other classes; later ones are unread) and every worker waits for a lease that
    never comes, or is not fenced at all (review-fence F2)."""
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    (spec,) = [r.specifier for r in wanted if r.name == "aiokafka"]
    assert spec.contains(PINNED)
    assert not spec.contains("0.13.0") and not spec.contains("0.15.0"), (
        f"pyproject.toml requires aiokafka{spec}: pin it to the {PINNED} series"
    )
