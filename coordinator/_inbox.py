"""Applying one partition's inbox records in a batch, in the durable order of effects.

``InboxProcessor.handle(partition, events)``:

1. **Apply** (in memory): each record is decoded and given to the state machine; inline
   steps run and their results are applied at once (the chain belongs to the record);
   step requests over ``SAGA_MAX_REQUEST_BYTES`` are never sent: their step fails at
   once (``StepRequestTooLarge``), so earlier steps are compensated. A record that
   cannot be applied (undecodable, invalid, too large, or one whose saga record would
   exceed ``SAGA_MAX_RECORD_BYTES``, or that raised) is dead-lettered with the reason
   and the batch is applied again without it.
2. **Records**: one new record per changed saga goes to the table's changelog; the batch
   waits for every acknowledgement before anything derived from them is sent. Each
   record holds its saga's whole outbox of this batch and the offset of the last
   record that changed it (``last_message``).
   Right after that acknowledgement, the attempts of services this worker executes
   itself are launched as its tasks (``coordinator._onehop``: one Kafka hop per step,
   never stored in the outbox, so a redelivery never launches them again).
3. **Sends**: step requests, lifecycle events (one record per saga carrying its events
   of the batch, re-sent ones first: ``coordinator._lifecycle``), dead letters and
   re-routed records are sent; the batch waits for every acknowledgement. Only then does
   the lane ack the batch, so the inbox offset can be committed.

Nothing of this runs without the worker's membership lease (``coordinator._lease``):
a batch waits for it before it applies anything, before each inline step and before its
changelog write (and each retry of it); records acknowledged after the lease ran out
send nothing until a heartbeat sent after them confirms the membership. A batch the
lease gives up on (the worker was expelled, or the partition revoked meanwhile) raises
``Abandoned``: its records are not acked, the partition's next owner applies them.

The lane starts its next batch only after these sends (not pipelined). Writing batch N+1
while N's sends fly was built and measured (branch ``pipe``, session 6): in 10 pairs of
runs at the same offered load on 2 cores, neither p50 nor p99 improved consistently, and
in the quietest pairs closed-loop throughput fell by 15-30 %: the wait for the sends is
when the next batch fills up, smaller batches cost more CPU per saga, and latency here
is CPU queueing more than round trips.

Results of this worker's own step tasks may come without a record (``LocalResult``, see
``coordinator._local``): applied the same way, in the same order of effects; every saga
record carries its batch's number, so a new owner can re-send what the partition's last
batch may not have sent (``Resend``, handled first). A batch that fails after its records
were acknowledged (a send raising a bug, not broker trouble) is tried again by its lane;
applied again it changes nothing, and a local result in it sends nothing (a stale
duplicate of its record), so the retry first re-sends the stored outbox of every saga the
failed try stored (``unsent``), before the partition's next batch, and stores them again
with its own number (the retry's batch is then the partition's last one).

A redelivered batch (after a crash or a rebalance) is recognised per saga: a record
before the saga's ``last_message`` was applied already and is skipped; the record at
``last_message`` re-sends the stored outbox (same payloads, same ``seq``). An inline
chain is therefore never recomputed once its record is stored, and nothing derived from
it leaves the process before that.

Broker trouble is retried in place (this partition only). A saga whose definition
version this worker lacks holds its partition, with an error log line, until a worker
that has it takes over or this one is upgraded: never dead-lettered.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from coordinator._deadlines import DeadlineIndex
from coordinator._delivery import Abandoned, Backoff, Producer, Record, deliver
from coordinator._errors import UnknownSagaError
from coordinator._executor import StepExecutor
from coordinator._lease import Membership, fenced
from coordinator._letters import dead_letter
from coordinator._lifecycle import lifecycle_records
from coordinator._local import LocalResult, Resend
from coordinator._machine import Definitions, transition
from coordinator._messages import StartSaga, StepRequest, StepResult, parse_inbox
from coordinator._onehop import StepTasks
from coordinator._outbox import render, stored_request
from coordinator._routing import partition_for
from coordinator._settings import CoordinatorSettings
from coordinator._state import TERMINAL, SagaState
from coordinator._step_worker import too_large
from coordinator._tablestore import Store, changelog_offset
from coordinator.events import LIFECYCLE_BATCH_BYTES, ErrorInfo

log = logging.getLogger("coordinator.inbox")


class MissingDefinition(Exception):
    """A saga's definition version is not registered on this worker."""


@dataclass
class _Poison(Exception):
    offset: int
    reason: str
    error_type: str


@dataclass
class _Saga:
    """One saga touched by the batch."""

    state: SagaState | None
    changed: bool = False
    outbox: list[dict[str, str]] = field(default_factory=list)  # produced in this batch
    resend: list[dict[str, str]] = field(default_factory=list)  # stored, re-sent
    last_offset: int = -1  # the last record that changed it
    raw: bytes = b""  # the new record, encoded
    launch: list[StepRequest] = field(default_factory=list)  # in-process attempts


@dataclass
class _Plan:
    what: str  # the partition, as logs name it
    stopping: Callable[[], bool]
    sagas: dict[str, _Saga] = field(default_factory=dict)
    sends: list[Record] = field(default_factory=list)  # dead letters and re-routed records


def applied_offset(state: SagaState, partition: int) -> int | None:
    """Return the inbox offset of the last record that changed ``state`` there."""
    if not state.last_message:
        return None
    where, _, offset = state.last_message.partition(":")
    if where != str(partition) or not offset.isdigit():
        return None
    return int(offset)


class InboxProcessor:
    """Applies one partition's inbox records in batches (see the module doc)."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        registry: Definitions,
        producer: Producer,
        store: Store,
        deadlines: DeadlineIndex,
        executor: StepExecutor,
        inline_services: set[str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        tasks: StepTasks | None = None,
        onehop_services: set[str] | frozenset[str] = frozenset(),
        fence: Membership | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.registry = registry
        self.producer = producer
        self.store = store
        self.deadlines = deadlines
        self.executor = executor
        self.inline = inline_services
        #: services whose attempts run as this worker's tasks (``coordinator._onehop``)
        self.tasks = tasks
        self.onehop = set(onehop_services) if tasks is not None else set()
        #: services whose requests this worker runs itself: never stored, never sent
        self.unstored = frozenset(self.inline | self.onehop)
        self.clock = clock
        #: the membership lease: nothing runs or is written without it (``coordinator._lease``)
        self.fence = fence
        self.retention = settings.retention_policy
        self.changelog = ""  # set by the app once the table exists
        self._live: dict[str, tuple[bytes, SagaState]] = {}  # decoded in-flight records
        self._record_batches = 0
        #: per inbox partition: the number its next batch writes (``coordinator._local``)
        self.batches: dict[int, int] = {}
        #: per inbox partition: sagas a batch stored whose sends may not all have left (it
        #: failed after its changelog acknowledgement); the lane's retry re-sends them
        self.unsent: dict[int, dict[str, None]] = {}

    # -- the batch ----------------------------------------------------------------------

    async def handle(self, partition: int, events: list[Any], stopping: Callable[[], bool]) -> None:
        """Apply ``events``; returns once everything derived is acknowledged by the broker.

        With in-process step tasks, it first waits while their queue is full
        (backpressure: see ``coordinator._onehop``). Raises ``Abandoned`` when
        ``stopping()`` turns true while it waits or retries in place.
        """
        if self.tasks is not None:
            await self.tasks.room(stopping)
        await self._handle(partition, events, stopping)

    async def _handle(
        self, partition: int, events: list[Any], stopping: Callable[[], bool]
    ) -> None:
        fence, what = self.fence, f"inbox partition {partition}"
        if fence is not None and not fence.valid():  # (inline steps are effects too)
            await fence.hold(what, stopping)
        if self.unsent:  # a try of this batch failed after its records were acknowledged
            unsent = self.unsent.get(partition, ())
            events = [Resend(saga_id, again=True) for saga_id in unsent] + events
        backoff = Backoff(stopping)
        poisoned: dict[int, _Poison] = {}
        while True:
            try:
                plan = await self._apply(partition, events, poisoned, stopping)
                break
            except _Poison as poison:
                poisoned[poison.offset] = poison
            except MissingDefinition as exc:
                log.error("inbox partition %d held: %s", partition, exc)
                await backoff.wait()
        # a deleted saga (retention ended) is written as a tombstone (``None``)
        stored = {sid: s.raw if s.state else None for sid, s in plan.sagas.items() if s.changed}
        if stored:
            records = [
                Record(self.changelog, saga_id.encode(), raw, partition)
                for saga_id, raw in stored.items()
            ]
            written = await fenced(fence, what, stopping)  # (an apply may take long)
            acks = await deliver(self.producer, records, written, what=f"changelog p{partition}")
            if fence is not None:  # acknowledged in time, or nothing derived leaves
                await fence.confirm(what)
            self.batches[partition] = self.batches.get(partition, 0) + 1
            try:
                self.store.write(partition, stored, changelog_offset(acks))
                self.maybe_fault()
                self._launch(plan)  # in-process attempts: only once their records are acked
                await self._send(partition, plan, backoff)
            except BaseException:
                # Applied again, this batch changes nothing (a local result is a stale
                # duplicate of its record) and would send nothing: its retry re-sends them
                unsent = self.unsent.setdefault(partition, {})
                unsent.update((saga_id, None) for saga_id, raw in stored.items() if raw)
                raise
        else:
            await self._send(partition, plan, backoff)
        if self.unsent:
            self.unsent.pop(partition, None)  # sent, re-sends included
        for saga_id, saga in plan.sagas.items():
            if saga.state is None:
                self.deadlines.set(saga_id, partition, None)
                continue
            # a re-sent record may be of a batch that failed before indexing its expiry (a
            # doubled expiry entry is harmless)
            changed = saga.changed or bool(saga.resend)
            self.deadlines.set_state(saga.state, partition, changed=changed)
            current = stored.get(saga_id) or self.store.get(saga_id)
            if current is not None and not saga.state.resting:
                self._live[saga_id] = (current, saga.state)

    async def _send(self, partition: int, plan: _Plan, backoff: Backoff) -> None:
        """Send everything derived from the batch and await every acknowledgement."""
        sends = list(plan.sends)
        for saga_id, saga in plan.sagas.items():
            sends.extend(self._outgoing(saga_id, saga.resend + saga.outbox, saga.state))
        if sends:
            await deliver(self.producer, sends, backoff, what=f"inbox p{partition} outbox")

    def _launch(self, plan: _Plan) -> None:
        """Start the in-process attempts the batch dispatched and its sagas still await.

        Called once per batch, after its records are acknowledged; a redelivered record
        never launches again (its stored outbox holds no in-process attempt), so each
        attempt has one sender (see ``coordinator._onehop``).
        """
        if self.tasks is None:
            return
        for saga in plan.sagas.values():
            state = saga.state
            p = state.pending if state is not None else None
            if state is None or p is None or p.waiting != "result":
                continue
            for request in saga.launch:
                awaited = (request.step, request.phase, request.attempt)
                if awaited == (state.steps[p.step].name, p.phase, p.attempt):
                    self.tasks.launch(request)

    def maybe_fault(self) -> None:
        """SIGKILL this process after ``SAGA_FAULT_KILL_AFTER_RECORDS`` record batches (tests)."""
        left = self.settings.fault_kill_after_records - self._record_batches - 1
        self._record_batches += 1
        if left == 0:
            log.error("SAGA_FAULT_KILL_AFTER_RECORDS reached: SIGKILL before the sends")
            os.kill(os.getpid(), signal.SIGKILL)

    def _outgoing(
        self, saga_id: str, items: list[dict[str, str]], state: SagaState | None
    ) -> list[Record]:
        """The records of a saga's outbox items: its step requests, then its events.

        The events go as few lifecycle records as ``SAGA_LIFECYCLE_FORMAT`` allows
        (``coordinator._lifecycle``), in ``seq`` order.
        """
        key = saga_id.encode()
        records: list[Record] = []
        events: list[bytes] = []
        for item in items:
            if item["kind"] == "event":
                events.append(item["payload"].encode())
            elif item["service"] not in self.inline and state is not None:
                # (an inline request ran inside the chain that produced it)
                payload = render(item, state)
                records.append(Record(self.topics.step(item["service"]), key, payload.encode()))
        if events:
            records += lifecycle_records(
                self.topics.lifecycle,
                saga_id,
                events,
                form=self.settings.lifecycle_format,
                limit=min(LIFECYCLE_BATCH_BYTES, self.settings.max_record_bytes),
            )
        return records

    # -- applying -----------------------------------------------------------------------

    async def _apply(
        self,
        partition: int,
        events: list[Any],
        poisoned: dict[int, _Poison],
        stopping: Callable[[], bool],
    ) -> _Plan:
        plan = _Plan(f"inbox partition {partition}", stopping)
        for event in events:
            if isinstance(event, LocalResult | Resend):
                await self._apply_local_item(plan, event, poisoned)
                continue
            message = event.message
            poison = poisoned.get(message.offset)
            if poison is not None:
                plan.sends.append(self._dead(message, poison.reason, poison.error_type))
                continue
            try:
                await self._apply_one(plan, partition, message)
            except (_Poison, MissingDefinition, Abandoned):
                raise
            except Exception as exc:
                log.exception("inbox: unexpected error applying %s", _where(message))
                self._drop_cache(plan)
                raise _Poison(
                    message.offset, f"internal error: {exc!r}", type(exc).__name__
                ) from exc
        self._check_sizes(plan, partition)
        return plan

    async def _apply_local_item(
        self,
        plan: _Plan,
        item: LocalResult | Resend,
        poisoned: dict[int, _Poison],
    ) -> None:
        """Apply a local result, or queue a saga's stored outbox again (``Resend``).

        A local result that cannot be applied goes to the inbox instead, where a bad one
        is dead-lettered like any record.
        """
        if isinstance(item, Resend):
            try:
                saga = self._saga(plan, item.saga_id)
            except ValidationError as exc:  # raised, it would hold the partition for good
                log.error(
                    "saga %r: its stored record is unreadable by this worker (written by "
                    "another version?), so its outbox cannot be re-sent; records concerning "
                    "it are dead-lettered: %s",
                    item.saga_id,
                    exc,
                )
                return
            if not saga.changed and saga.state is not None:
                saga.resend = list(saga.state.last_outbox)
                # a failed try's saga is stored again with this batch: were it the only one
                # the retry changes, a kill before its sends would leave a last batch without
                # the failed try's sagas, and a next owner would re-send none of them
                if item.again and item.key not in poisoned:  # (poisoned: re-sent only)
                    saga.changed, saga.last_offset = True, item.key
            return
        result = item.result
        if item.key in poisoned:
            plan.sends.append(self._to_inbox(result))
            return
        try:
            saga = self._saga(plan, result.saga_id)
            if saga.state is None:  # to the inbox: dead-lettered there, with its reason
                plan.sends.append(self._to_inbox(result))
                return
            previous = saga.state.last_message  # a local result is no inbox record
            await self._step(plan, saga, result, None, item.key)
            if saga.state is not None:
                saga.state.last_message = previous
        except (MissingDefinition, Abandoned):
            raise
        except Exception as exc:
            log.exception("inbox: unexpected error applying a local result of %s", result.saga_id)
            self._drop_cache(plan)
            raise _Poison(item.key, f"internal error: {exc!r}", type(exc).__name__) from exc

    def _to_inbox(self, result: StepResult) -> Record:
        """A local result as an inbox record, on its saga's partition (applied there)."""
        home = partition_for(result.saga_id, self.settings.partitions)
        return Record(self.topics.inbox, result.saga_id.encode(), result.to_json(), home)

    def _saga(self, plan: _Plan, saga_id: str) -> _Saga:
        saga = plan.sagas.get(saga_id)
        if saga is None:
            saga = plan.sagas[saga_id] = _Saga(self._load(saga_id))
        return saga

    async def _apply_one(self, plan: _Plan, partition: int, message: Any) -> None:
        value: bytes = message.value or b""
        limit = self.settings.max_inbox_bytes
        try:
            msg = parse_inbox(value)
        except ValidationError as exc:
            plan.sends.append(self._dead(message, f"invalid inbox message: {exc}"))
            return
        key = message.key
        if key is None or key.decode(errors="replace") != msg.saga_id:
            reason = f"inbox key {key!r} must equal saga_id {msg.saga_id!r} (partitioning)"
            plan.sends.append(self._dead(message, reason))
            return
        home = partition_for(msg.saga_id, self.settings.partitions)
        if home != partition:
            # a producer with another partitioner (librdkafka's default, say)
            plan.sends.append(Record(self.topics.inbox, key, value, home))
            return
        if len(value) > limit:
            if not isinstance(msg, StepResult):
                reason = f"inbox record of {len(value)} bytes is over SAGA_MAX_INBOX_BYTES={limit}"
                if isinstance(msg, StartSaga):
                    reason += "; start the saga with a smaller input (keep large data elsewhere)"
                plan.sends.append(self._dead(message, reason, "RecordTooLarge"))
                return
            plan.sends.append(self._dead(message, "result too large: failed its step"))
            msg = too_large(msg, len(value), limit)
        saga = self._saga(plan, msg.saga_id)
        state = saga.state
        if state is not None:
            applied = applied_offset(state, partition)
            if applied is not None and message.offset < applied:
                return  # applied before a crash or rebalance
        await self._step(plan, saga, msg, message, message.offset, f"{partition}:{message.offset}")

    async def _step(
        self,
        plan: _Plan,
        saga: _Saga,
        msg: Any,
        message: Any,
        offset: int,
        msg_id: str | None = None,
    ) -> None:
        """Apply one message to its saga (``message``: its inbox record, None if local)."""
        state = saga.state
        if state is not None and not state.compact and state.status not in TERMINAL:
            self._require_definition(state)
        out = transition(
            self.registry,
            state,
            msg,
            now=self.clock(),  # the owning worker's clock: see machine's docstring
            message_id=msg_id,
            reply_to=self.topics.inbox,
            copy=False,
            retention=self.retention,
            unstored=self.unstored,
        )
        if out.rejected:
            if message is None:  # to the inbox: dead-lettered there, with its reason
                plan.sends.append(self._to_inbox(msg))
            else:
                plan.sends.append(self._dead(message, out.rejected))
        if out.replayed:
            if not saga.changed:
                saga.resend = list(out.outbox)
            return
        if out.deleted:  # retention ended: the record goes (a tombstone)
            saga.state, saga.changed, saga.last_offset = None, True, offset
            saga.outbox, saga.resend = [], []
            return
        if not out.changed or out.state is None:
            if out.state is not None:
                saga.state = out.state
            return
        state, outbox, launch = await self._settle(
            plan, out.state, list(out.outbox), list(out.requests)
        )
        saga.outbox.extend(outbox)
        saga.launch.extend(launch)
        state.last_message, state.last_outbox = msg_id, list(saga.resend) + saga.outbox
        saga.state, saga.changed, saga.last_offset = state, True, offset

    async def _settle(
        self,
        plan: _Plan,
        state: SagaState,
        items: list[dict[str, str]],
        requests: list[StepRequest],
    ) -> tuple[SagaState, list[dict[str, str]], list[StepRequest]]:
        """Run inline steps and fail oversized requests, applying their results now.

        ``items`` is the transition's stored outbox, which holds no request of the
        services this worker runs itself (``transition(unstored=...)``). Returns the
        saga's state after the whole chain, the chain's outbox without the requests that
        are not sent to a step topic, and the in-process attempts to launch once the
        record is acknowledged (never stored: a redelivery does not relaunch).
        """
        limit = self.settings.max_request_bytes
        outbox: list[dict[str, str]] = []
        launch: list[StepRequest] = []
        todo = [(items, requests)]
        while todo:
            items, requests = todo.pop(0)
            results: list[StepResult] = []
            sent = [r for r in requests if r.service not in self.unstored]
            stored = {id(r): item for item, r in _pair(items, sent)} if sent else {}
            unsent: list[dict[str, str]] = []
            for request in requests:
                if request.service in self.inline:
                    # runs now, inside the chain: never sent, never stored; an effect, so
                    # only under the membership lease (a pause may end a step before it)
                    fence = self.fence
                    if fence is not None and not fence.valid():
                        await fence.hold(plan.what, plan.stopping)
                    results.append(await self.executor.execute(request, inline=True))
                elif request.service in self.onehop:
                    launch.append(request)  # a task of this worker, once the record is acked
                elif (size := len(render(item := stored[id(request)], state))) > limit:
                    unsent.append(item)
                    results.append(_too_large_request(request, size, limit))
            if unsent:
                items = [item for item in items if all(item is not u for u in unsent)]
            outbox.extend(items)
            for result in results:
                out = transition(
                    self.registry,
                    state,
                    result,
                    now=self.clock(),  # the chain's record is stored before it is sent
                    reply_to=self.topics.inbox,
                    copy=False,
                    retention=self.retention,
                    unstored=self.unstored,
                )
                if out.changed and out.state is not None:
                    state = out.state
                    todo.append((list(out.outbox), list(out.requests)))
        return state, outbox, launch

    def _check_sizes(self, plan: _Plan, partition: int) -> None:
        """Encode each changed saga's record; fail the one that made it too large.

        It is dead-lettered and the batch is applied again without it.
        """
        limit = self.settings.max_record_bytes
        number = self.batches.setdefault(partition, 0)
        for saga in plan.sagas.values():
            if not saga.changed or saga.state is None:
                continue
            saga.state.batch = number
            saga.raw = saga.state.model_dump_json().encode()
            size = len(saga.raw)
            biggest = max((len(render(o, saga.state)) for o in saga.outbox), default=0)
            if size > limit or biggest > limit:
                self._drop_cache(plan)
                raise _Poison(
                    saga.last_offset,
                    f"saga {saga.state.saga_id!r}: applying this record makes its saga record "
                    f"{size} bytes (largest message {biggest}), over "
                    f"SAGA_MAX_RECORD_BYTES={limit}; the saga stays as it was",
                    "RecordTooLarge",
                )

    def _require_definition(self, state: SagaState) -> None:
        try:
            self.registry.get(state.saga_type, state.saga_version)
        except UnknownSagaError as exc:
            raise MissingDefinition(
                f"saga {state.saga_id!r} runs {state.saga_type!r} v{state.saga_version}, "
                f"which this worker lacks ({exc}); deploy a worker with that definition"
            ) from exc

    # -- records ------------------------------------------------------------------------

    def _load(self, saga_id: str) -> SagaState | None:
        """Decode the saga's stored record (reused while the table holds the same bytes).

        The cache entry is taken, not shared: the batch updates the state in place, and
        a batch that is abandoned or applied again must decode the stored record anew.
        """
        raw = self.store.get(saga_id)
        cached = self._live.pop(saga_id, None)
        if raw is None:
            return None
        if cached is not None and cached[0] is raw:
            return cached[1]
        return SagaState.model_validate_json(raw)

    def _drop_cache(self, plan: _Plan) -> None:
        for saga_id in plan.sagas:
            self._live.pop(saga_id, None)

    def forget(self) -> None:
        """Drop every decoded record (after a rebalance the table is the only truth)."""
        self._live.clear()
        self.batches.clear()  # numbered again from the table (``coordinator._local``)
        self.unsent.clear()  # the next owner re-sends the last batch, unless marked sent

    def _dead(self, message: Any, reason: str, error_type: str = "Rejected") -> Record:
        return dead_letter(
            self.topics.deadletters, message, reason, agent="inbox", error_type=error_type
        )


# Kafka's timestamp type of a record stamped by the broker


def _pair(
    items: list[dict[str, str]], requests: list[StepRequest]
) -> list[tuple[dict[str, str], StepRequest]]:
    """Pair each request with its outbox item (a transition lists its requests first)."""
    pairs = list(zip(items, requests, strict=False))
    if len(pairs) == len(requests) and all(
        item["kind"] == "request" and item["service"] == r.service for item, r in pairs
    ):
        return pairs
    by_payload = {item["payload"]: item for item in items if item["kind"] == "request"}
    return [(by_payload[stored_request(r)["payload"]], r) for r in requests]


def _too_large_request(request: StepRequest, size: int, limit: int) -> StepResult:
    """Fail a step whose request is too large to send: nothing was sent or happened."""
    return request.result(
        at=datetime.now(UTC),
        error=ErrorInfo(
            type="StepRequestTooLarge",
            retryable=False,
            message=(
                f"step {request.step!r} request is {size} bytes, over "
                f"SAGA_MAX_REQUEST_BYTES={limit}; it was not sent"
            ),
        ),
    )


def _where(message: Any) -> str:
    return f"{getattr(message, 'topic', '?')}:{message.partition}@{message.offset}"
