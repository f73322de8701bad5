"""The membership lease: how long this worker may still take itself for its group's member.

A worker paused past the session timeout (a frozen VM or container, CPU starvation, a
network partition from the group coordinator) is expelled from the consumer group and
its partitions go to another worker, which restores the table and runs the sagas. When
the paused worker resumes, its consumer fetches new inbox records (fetches are not
fenced by group membership) before a heartbeat tells it it was expelled. Applied against
a table that lacks the new owner's records, they would start sagas again, run inline
steps again and write stale saga records to the changelog after the new owner's (which
a later restore would take for the newest).

The group coordinator expels a member at (its receipt of the member's last heartbeat)
+ session timeout. A request is sent before it is received, so after a heartbeat (or a
SyncGroup) sent at ``t`` was answered OK for generation ``g``, no other member can be
given this worker's partitions before ``t + session_timeout``: the worker holds a lease
until ``t + session_timeout - SAGA_LEASE_MARGIN`` on its own clock (``CLOCK_BOOTTIME``,
which also counts a suspended system). A healthy worker heartbeats every few seconds,
so the lease is always fresh and a check costs one clock read.

A rebalance can expel a member earlier: once it began (after the broker received every
heartbeat it answered OK: it answers later ones "rebalance in progress"), a member that
has not rejoined when the join phase ends (the rebalance timeout, Faust's
``broker_rebalance_timeout``) is removed, however it heartbeats meanwhile. So a
heartbeat answered "rebalance in progress" (which renews the session: the broker's own
rule) extends the lease only up to the send of the last request answered OK + the
rebalance timeout - the margin, and no lease outlasts the rebalance timeout either. Our
own revoke stops the lanes first and is bounded (a few seconds), so this bites only a
revoke that outlasts the rebalance timeout.

* ``Membership.watch`` hooks the consumer's Kafka client (aiokafka, in Faust's consumer
  thread): it notes the send time and generation of each Heartbeat and SyncGroup request
  answered as a member, and ends the lease on "unknown member" / "illegal generation" and
  when the worker leaves the group. The state is one tuple, replaced whole: the main
  loop reads it without a lock.
* ``valid()``: the lease holds and is of the generation of the current assignment.
* ``hold()``: wait until it holds again (a heartbeat got through) or give up
  (``Abandoned``) once the generation is over or the caller must stop (the revoke).
* ``confirm()``: after a changelog acknowledgement. Acknowledged within the lease, the
  write preceded any takeover. Acknowledged later, it may have landed after another
  owner's records: nothing derived from it is sent until a heartbeat sent after the
  acknowledgement is answered for the same generation (OK or "rebalance in progress":
  the group is still at that generation, so no other member holds the partition yet).
  It waits for that through a revoke too (heartbeats go on meanwhile), as long as the
  revoke lets its batch run (the lanes' stop timeout, then the batch is cancelled); if
  the generation is over instead, the batch ends there. Either way without it: an
  ERROR log, nothing derived is sent.

What remains (README: "A paused worker"): a pause between the last check and the
broker's append of the records (including the producer's own retries of that batch) can
still land them after a takeover; ``confirm`` then keeps their effects from being sent,
but the records are in the changelog, after the new owner's. Closing that needs the
broker to refuse the write: Kafka transactions with a transactional id per partition,
so a new owner's ``init_transactions`` fences the old producer. That costs a producer
per partition (one transaction at a time per producer, while lanes of different
partitions write at once), two more round trips per batch (AddPartitionsToTxn, EndTxn)
and transaction markers in every topic a batch writes, with ``read_committed`` readers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from aiokafka.errors import (
    IllegalGenerationError,
    NoError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from aiokafka.protocol.group import HeartbeatRequest, LeaveGroupRequest, SyncGroupRequest

from coordinator._delivery import Abandoned, Backoff
from coordinator._errors import SagaError

log = logging.getLogger("coordinator.lease")

#: seconds between looks at the lease while waiting for it
POLL = 0.05
#: a wait for the lease is logged again this often (seconds, on the lease's clock)
HOLD_LOG_EVERY = 30.0

#: answers of a heartbeat that mean "still a member of that generation" (the second one:
#: "and the group rebalances", bounded by the rebalance timeout)
_OK, _REBALANCING = NoError.errno, RebalanceInProgressError.errno
#: answers that mean "no longer a member of that generation"
_LOST = frozenset({UnknownMemberIdError.errno, IllegalGenerationError.errno})
#: no lease: (send time, generation, valid until)
_NONE = (-math.inf, -1, -math.inf)


class LeaseSettingsError(SagaError, ValueError):
    """The timeouts leave no membership lease a healthy worker keeps (names the fix)."""


#: the lease's clock: monotonic, and counting time the system was suspended (Linux)
clock: Callable[[], float] = (
    partial(time.clock_gettime, time.CLOCK_BOOTTIME)
    if hasattr(time, "CLOCK_BOOTTIME")
    else time.monotonic
)


class Membership:
    """This worker's membership lease (see the module doc).

    Written by the consumer thread (``watch``), read by the main loop; ``assigned`` is
    set by the main loop at each assignment.
    """

    def __init__(
        self,
        session_timeout: float,
        margin: float,
        *,
        rebalance_timeout: float,
        heartbeat_interval: float | None = None,
        now: Callable[[], float] = clock,
    ) -> None:
        if margin >= min(session_timeout, rebalance_timeout):
            raise LeaseSettingsError(
                f"a lease margin of {margin}s leaves nothing of a {session_timeout}s session "
                f"timeout or a {rebalance_timeout}s rebalance timeout: lower SAGA_LEASE_MARGIN"
            )
        lease = min(session_timeout, rebalance_timeout) - margin
        if heartbeat_interval is not None and lease < 2 * heartbeat_interval:
            # CoordinatorSettings checks SAGA_SESSION_TIMEOUT; Faust's env sets the
            # consumer's timeouts over it, and the rebalance timeout is Faust's alone
            if rebalance_timeout < session_timeout:
                fix = (
                    "Set BROKER_REBALANCE_TIMEOUT to at least "
                    f"{2 * heartbeat_interval + margin:g}s (Faust's default is 60s)"
                )
            else:
                fix = (
                    "Faust's env BROKER_SESSION_TIMEOUT or BROKER_HEARTBEAT_INTERVAL sets them "
                    "over SAGA_SESSION_TIMEOUT: unset them (SAGA_SESSION_TIMEOUT leaves enough)"
                )
            most = min(session_timeout, rebalance_timeout) - 2 * heartbeat_interval
            if most > 0:
                fix += f", or lower SAGA_LEASE_MARGIN to at most {most:g}s"
            raise LeaseSettingsError(
                f"the consumer's session timeout ({session_timeout:g}s), rebalance timeout "
                f"({rebalance_timeout:g}s, Faust's env BROKER_REBALANCE_TIMEOUT) and "
                f"SAGA_LEASE_MARGIN={margin:g}s leave a membership lease of {lease:g}s, less "
                f"than two heartbeat intervals (2 x {heartbeat_interval:g}s): a healthy worker "
                f"would hold its batches at every heartbeat. {fix}"
            )
        self.session_timeout = session_timeout
        self.rebalance_timeout = rebalance_timeout
        #: the lease lasts this long after the send of the last request answered OK
        self.ttl = min(session_timeout, rebalance_timeout) - margin
        #: a heartbeat answered "rebalance in progress" renews it for this long after its
        #: send, but never past the last OK's send + ``rebalance_ttl``
        self.session_ttl = session_timeout - margin
        self.rebalance_ttl = rebalance_timeout - margin
        self.clock = now
        #: (send time of the last renewing request, its generation, the lease's end);
        #: replaced whole
        self._lease: tuple[float, int, float] = _NONE
        #: (send time, generation) of the last request answered OK (consumer thread only)
        self._ok: tuple[float, int] = (-math.inf, -1)
        #: generations at or below this one are over (consumer thread only)
        self._over = -1
        #: the generation of the current assignment (main loop)
        self.assigned = -1

    # -- the consumer thread -----------------------------------------------------------

    def renewed(self, sent_at: float, generation: int, *, rebalancing: bool = False) -> None:
        """A heartbeat sent at ``sent_at`` was answered: still a member of ``generation``.

        ``rebalancing``: answered "rebalance in progress" (see the module doc).
        """
        at, current, _ = self._lease
        if generation <= self._over or generation < current:
            return  # (generations only grow: an answer of an older one is stale)
        if generation == current and sent_at <= at:
            return
        if not rebalancing:
            self._ok = (sent_at, generation)
            self._lease = (sent_at, generation, sent_at + self.ttl)
            return
        ok_at, ok_generation = self._ok
        if ok_generation != generation:
            return  # no OK of it known, so no bound (its SyncGroup answers OK first)
        until = min(sent_at + self.session_ttl, ok_at + self.rebalance_ttl)
        self._lease = (sent_at, generation, until)

    def joined(self, sent_at: float, generation: int) -> None:
        """A SyncGroup sent at ``sent_at`` was answered OK: a member of ``generation`` now.

        Whatever generation was lost before: generations grow only within one incarnation
        of the group, and the broker deletes an empty group without committed offsets, so
        a worker expelled at generation 7 (suspended for long) may rejoin it at 1.
        """
        self._over = min(self._over, generation - 1)
        self._ok = (sent_at, generation)
        self._lease = (sent_at, generation, sent_at + self.ttl)

    def lost(self, generation: int) -> None:
        """``generation`` is over for this worker (expelled, or leaving the group).

        A lease of a newer generation (joined since) is kept.
        """
        self._over = max(self._over, generation)
        if self._lease[1] <= generation:
            self._lease = _NONE

    def watch(self, client: Any) -> None:
        """Hook the Kafka client of the group's consumer (before it starts).

        aiokafka's group coordinator sends every group request through
        ``client.send(node_id, request, group=...)`` (pinned by
        tests/unit/coordinator/test_lease_aiokafka.py against the installed aiokafka).
        """
        send = client.send

        def watched(node_id: Any, request: Any, **kwargs: Any) -> Any:
            kind = type(request)
            if kind is HeartbeatRequest or kind is SyncGroupRequest:
                sent_at = self.clock()  # before the request leaves
                generation = int(request._generation_id)
                return self._answer(send(node_id, request, **kwargs), kind, generation, sent_at)
            if kind is LeaveGroupRequest:  # once it lands, the partitions are others'
                self.lost(self._lease[1])
            return send(node_id, request, **kwargs)

        client.send = watched

    async def _answer(self, sending: Any, kind: type, generation: int, sent_at: float) -> Any:
        response = await sending
        code = getattr(response, "error_code", None)
        if kind is SyncGroupRequest:
            if code == _OK:
                self.joined(sent_at, generation)
        elif code in (_OK, _REBALANCING):
            self.renewed(sent_at, generation, rebalancing=code == _REBALANCING)
        if code in _LOST:
            self.lost(generation)
        return response

    @property
    def confirmed(self) -> tuple[float, int]:
        """``(send time, generation)`` of the last request answered as a member."""
        return self._lease[:2]

    # -- the main loop -----------------------------------------------------------------

    def valid(self) -> bool:
        """The lease holds now, for the generation of the current assignment."""
        _, generation, until = self._lease
        return generation == self.assigned and self.clock() < until

    def _why(self, now: float) -> str:
        """How long ago the lease ran out, and why, for a log line."""
        at, _, until = self._lease
        return (
            f"membership lease ran out {now - until:.1f}s ago (last heartbeat answered as a "
            f"member sent {now - at:.1f}s ago, last answered OK {now - self._ok[0]:.1f}s ago; "
            f"session timeout {self.session_timeout:g}s, rebalance timeout "
            f"{self.rebalance_timeout:g}s: paused, cut off from the group coordinator, or in "
            "a rebalance it has not rejoined?)"
        )

    async def hold(self, what: str, stopping: Callable[[], bool]) -> None:
        """Return once the lease holds; ``Abandoned`` when its generation is over or on stop.

        ``what`` names the writer in the logs (``inbox partition 3``). A long wait is
        logged again every ``HOLD_LOG_EVERY`` seconds.
        """
        began = logged = -math.inf
        while not self.valid():
            generation = self._lease[1]
            if generation != self.assigned:
                log.warning(
                    "%s: this worker is no longer a member of generation %d of its consumer "
                    "group (expelled: paused or cut off past the session timeout?); nothing "
                    "is written for it, the partition's next owner applies its records",
                    what,
                    self.assigned,
                )
                raise Abandoned()
            if stopping():
                raise Abandoned()
            now = self.clock()
            if began == -math.inf:
                began = logged = now
                log.warning(
                    "%s: %s; writing nothing until a heartbeat confirms generation %d or the "
                    "partition is revoked",
                    what,
                    self._why(now),
                    self.assigned,
                )
            elif now - logged >= HOLD_LOG_EVERY:
                logged = now
                log.warning(
                    "%s: still waiting after %.0fs: %s; writing nothing until a heartbeat "
                    "confirms generation %d or the partition is revoked",
                    what,
                    now - began,
                    self._why(now),
                    self.assigned,
                )
            await asyncio.sleep(POLL)
        if began != -math.inf:
            log.warning(
                "%s: membership of generation %d confirmed after %.1fs; going on",
                what,
                self.assigned,
                self.clock() - began,
            )

    async def confirm(self, what: str) -> None:
        """Call right after a changelog acknowledgement (see the module doc).

        Returns when the write is known to precede any takeover; otherwise raises
        ``Abandoned`` (the generation is over) or is cancelled (a revoke's stop timeout)
        after an ERROR log: nothing derived from it may be sent. It does not give up at a
        revoke on its own: the heartbeats that go on meanwhile can still confirm it.
        """
        acked_at = self.clock()
        at, generation, until = self._lease
        if generation == self.assigned and acked_at < until:
            return
        log.warning(
            "%s: records acknowledged %.1fs after this worker's membership lease ran out; "
            "sending nothing derived from them until a heartbeat confirms generation %d",
            what,
            acked_at - until,
            self.assigned,
        )
        try:
            while True:
                at, generation, _ = self._lease
                if generation == self.assigned and at > acked_at:
                    log.warning("%s: generation %d confirmed; sending", what, generation)
                    return
                if generation != self.assigned:
                    raise Abandoned()
                await asyncio.sleep(POLL)
        except (Abandoned, asyncio.CancelledError):
            log.error(
                "%s: records were acknowledged after this worker's membership lease ran "
                "out and generation %d was not confirmed since (expelled, or revoked before "
                "a heartbeat got through): another worker may own the partition and have "
                "written these sagas first. Nothing derived from them is sent and the local "
                "table keeps its older records; the changelog may hold them after the new "
                "owner's until those sagas change again (README: A paused worker)",
                what,
                self.assigned,
            )
            raise


async def fenced(fence: Membership | None, what: str, stopping: Callable[[], bool]) -> Backoff:
    """The pacing of a changelog write under ``fence`` (``None``: unfenced).

    Returns once the lease holds, with a ``Backoff`` whose every retry waits for it again
    (``hold``): the first attempt and each retry are written under the lease.
    """
    if fence is None:
        return Backoff(stopping)
    if not fence.valid():
        await fence.hold(what, stopping)
    return Backoff(stopping, hold=partial(fence.hold, what, stopping))
