"""Step attempts of in-process services: tasks of the coordinator worker.

A step of a service that is neither ``remote`` nor ``inline`` (an HTTP call, or a Python
callable) used to cross Kafka twice: a request on the service's step topic, an executor
agent, a result on the inbox. When this worker executes that service (``SAGA_EXECUTORS``,
``SAGA_RUN_EXECUTORS``), the inbox processor hands the attempt to ``StepTasks`` instead:
no request crosses Kafka, and the result joins its saga's partition lane directly while
this worker holds it (``coordinator._local``), or goes to the inbox (a ``StepResult``,
like any executor's) when it does not.

Design, and why it keeps the saga guarantee:

* **Started after the record is durable.** An attempt is launched only once the saga
  record that dispatched it (with its pending deadline) is acknowledged by the changelog.
  A crash at any point after that loses at most the task; the durable deadline then
  fires and the attempt counts as timed out (uncertain), exactly as a lost reply would.
* **Launched once.** Only a fresh transition launches an attempt; a redelivered inbox
  record that re-sends its stored outbox does not launch it again (its durable deadline
  covers it). So each attempt has one sender on a healthy worker, and a task that finds
  the deadline passed before it sent anything says so as ``NotSent`` (not uncertain).
  A zombie worker (partitions lost unaware) may still have sent the same attempt, so
  ``NotSent`` never closes the key: a step that stops on it is undone by its key. A
  task keeps running across a rebalance: its result then goes to the inbox, where the
  partition's new owner applies it.
* **The partition is not held** while a call runs: the inbox lane goes on with its next
  batch; the result joins a later batch.
* **Bounded, with backpressure.** At most ``SAGA_STEP_CONCURRENCY`` attempts run at once;
  the others wait for a slot, in launch order. Before an inbox batch is applied,
  ``room`` waits until fewer than ``SAGA_STEP_QUEUE`` attempts wait for a slot (no
  reservation is held while the batch runs, so a stuck partition holds back no other).
  So under overload the backlog stays in
  the inbox topic, where it costs nothing, instead of in memory, where its deadlines
  would run out and every expiry would add a retry (the timeout storm of session 2).
* **No timer for an answered attempt.** Once an attempt's result is acknowledged on the
  inbox, a timer sent for its deadline would land behind that result and could only
  wake the saga after it: under inbox lag it just adds a record per waiting saga, the
  other half of the storm. The deadline timer of such an attempt is postponed once, by
  the step's timeout (``postpone``): applying the result replaces the deadline; if the
  result is never applied (dead-lettered, say), the saga still wakes.
* **A result skips the inbox when it can** (``coordinator._local``): while this worker
  holds the saga's inbox partition, the result joins that partition's lane directly
  (``local``); otherwise (a rebalance took the partition, a lane that stopped handed it
  back) it is produced to the inbox as before.
* **The participant contract is unchanged**: the same executor sends the same
  ``Idempotency-Key`` and, on compensations, ``Saga-Compensates`` headers.

``SAGA_SERVE_STEP_TOPICS`` (default on) keeps the executor agents on those services'
step topics, for requests from workers that do not execute them or sent before an
upgrade; a deployment where every worker executes every service can turn it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from coordinator._delivery import Abandoned, Backoff, Producer, Record, deliver
from coordinator._errors import UnknownSagaError
from coordinator._executor import StepExecutor
from coordinator._local import LocalResult
from coordinator._messages import StepRequest, StepResult
from coordinator._routing import partition_for
from coordinator._step_worker import too_large

log = logging.getLogger("coordinator.onehop")


class StepTasks:
    """Runs in-process step attempts as bounded concurrent tasks; results to their lanes.

    Args:
        executor: runs one attempt (HTTP or Python callable) into a ``StepResult``.
        producer: sends a result no lane takes to the attempt's ``reply_to`` (the inbox).
        inbox: the inbox topic (when a request names no ``reply_to``).
        concurrency: attempts running at once.
        queue: attempts waiting for a slot beyond which ``room`` makes the inbox wait.
        partitions: the inbox's partition count (a result goes to its saga's).
        max_result_bytes: a larger result fails its step (``ResultTooLarge``).
    """

    def __init__(
        self,
        executor: StepExecutor,
        producer: Producer,
        *,
        inbox: str,
        partitions: int,
        concurrency: int,
        queue: int,
        max_result_bytes: int,
    ) -> None:
        self.executor = executor
        self.partitions = partitions
        self.producer = producer
        self.inbox = inbox
        self.concurrency = concurrency
        self.queue = queue
        self.max_result_bytes = max_result_bytes
        self._waiting: deque[asyncio.Future[None]] = deque()  # slots asked for, in order
        self._running = 0
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        #: per inbox partition: results waiting for its next wave; partitions being sent
        self._outgoing: dict[int, list[tuple[Record, StepRequest, asyncio.Future[None]]]] = {}
        self._sending: set[int] = set()
        #: saga id -> (deadline, grace) of an attempt whose result is on the inbox
        self._answered: dict[str, tuple[float, float]] = {}
        self._pruned_at = 0
        #: ``local(partition, item)``: hand a result to its partition's lane; False when
        #: this worker does not hold it (``coordinator._local``)
        self.local: Callable[[int, LocalResult], bool] | None = None

    # -- backpressure ---------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Attempts launched and still waiting for a slot."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Attempts running (holding a slot; a result is sent after its slot is freed)."""
        return self._running

    def __len__(self) -> int:
        return len(self._tasks)

    async def room(self, stopping: Callable[[], bool]) -> None:
        """Wait until the attempts waiting for a slot are fewer than ``queue``.

        Nothing is reserved and nothing is held while the batch runs: a partition that
        cannot make progress (a missing definition, a changelog without a leader) never
        keeps the others waiting. The queue may overshoot by what the lanes' batches in
        progress launch (at most one attempt per record): bounded by the batch size
        times the partitions a worker holds. Raises ``Abandoned`` when ``stopping()``
        turns true while waiting.
        """
        while self.backlog >= self.queue:
            if stopping():
                raise Abandoned()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.5)

    # -- attempts -------------------------------------------------------------------------

    def partition_of(self, request: StepRequest) -> int:
        """The inbox partition of the request's saga."""
        return partition_for(request.saga_id, self.partitions)

    def grace(self, request: StepRequest) -> float:
        """The step's timeout, in seconds (how long an answered timer is postponed)."""
        try:
            saga = self.executor.registry.get(request.saga_type, request.saga_version)
            return saga.steps[saga.index(request.step)].timeout.total_seconds()
        except (UnknownSagaError, KeyError):
            return 10.0

    def launch(self, request: StepRequest) -> None:
        """Run one attempt as a task (call once per attempt, after its record is acked)."""
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(slot)
        task = asyncio.get_running_loop().create_task(self._attempt(request, slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to the oldest waiting attempts."""
        while self._waiting and self._running < self.concurrency:
            slot = self._waiting.popleft()
            if slot.done():  # cancelled while waiting
                continue
            self._running += 1
            slot.set_result(None)
        self._changed.set()

    async def _attempt(self, request: StepRequest, slot: asyncio.Future[None]) -> None:
        try:
            await slot
        except asyncio.CancelledError:
            self._changed.set()
            raise
        try:
            # the deadline is checked right before anything is sent: this task is the
            # attempt's only sender, so an expiry is a provable NotSent
            result = await self.executor.execute(request, only_sender=True)
        finally:
            self._running -= 1  # a slot bounds the calls; results are sent outside it
            self._grant()
        payload = result.to_json()
        if len(payload) > self.max_result_bytes:
            log.error(
                "step %s of saga %s: result of %d bytes is over SAGA_MAX_INBOX_BYTES=%d",
                request.step,
                request.saga_id,
                len(payload),
                self.max_result_bytes,
            )
            result = too_large(result, len(payload), self.max_result_bytes)
            payload = result.to_json()
        topic = request.reply_to or self.inbox
        partition = self.partition_of(request)
        local = self.local if topic == self.inbox else None
        if local is not None and local(partition, LocalResult(result)):
            self._answer(request)  # applied by the lane's next batch, before any timer
            return
        # the saga's own partition, as the timers use: the result stays ahead of them
        record = Record(topic, request.saga_id.encode(), payload, partition)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outgoing.setdefault(partition, []).append((record, request, done))
        if partition not in self._sending:
            await self._send_waves(partition)
        try:
            await done
        except Abandoned:
            # stopping: the durable deadline covers the attempt (counted uncertain)
            log.warning("result of saga %s step %s not sent (stopping)", *_ids(request))

    async def _send_waves(self, partition: int) -> None:
        """Send the results waiting for one inbox partition, in waves, until none is left.

        Every result that finished while a wave was in flight rides in the next one: one
        batch and one wait per wave (a batch per result would queue each behind the
        previous one's acknowledgement). Each partition has its own sender, so one whose
        leader is away holds back only its own results (isolation).
        """
        self._sending.add(partition)
        queued = self._outgoing.setdefault(partition, [])
        try:
            while queued:
                wave = list(queued)
                queued.clear()
                try:
                    await deliver(
                        self.producer,
                        [record for record, _, _ in wave],
                        Backoff(lambda: self._closing),
                        what=f"{len(wave)} step results",
                    )
                except BaseException as exc:
                    # this wave and whatever queued behind it: their tasks stop waiting,
                    # and the durable deadlines cover the attempts (counted uncertain)
                    failed, rest = wave + list(queued), queued
                    rest.clear()
                    for _, _, done in failed:
                        if not done.done():
                            done.set_exception(exc if isinstance(exc, Abandoned) else Abandoned())
                    if not isinstance(exc, Exception):
                        raise  # cancelled: the task ends
                    if not isinstance(exc, Abandoned):
                        log.error("step results of inbox partition %d not sent: %r", partition, exc)
                    return
                for _, request, done in wave:
                    self._answer(request)
                    done.set_result(None)
        finally:
            self._sending.discard(partition)

    # -- timers of answered attempts ------------------------------------------------------

    def _answer(self, request: StepRequest) -> None:
        """Note that the attempt's result is on the inbox, ahead of any later timer."""
        grace = self.grace(request)
        self._answered[request.saga_id] = (request.deadline.timestamp(), grace)
        if len(self._answered) > 2 * self._pruned_at + 1024:
            now = time.time()
            self._answered = {
                saga_id: (at, g) for saga_id, (at, g) in self._answered.items() if at + g > now
            }
            self._pruned_at = len(self._answered)

    def postpone(self, saga_id: str, deadline: float) -> float | None:
        """When the deadline timer of an answered attempt should fire instead (or None).

        Its result is on the inbox already, ahead of any timer sent now: the timer could
        only wake the saga after that result, which settles the attempt; firing it would
        add a record per waiting saga exactly when the inbox lags (the timeout storm).
        So it is postponed once, by the step's timeout: if the result is applied, the
        saga's next deadline replaces it; if it never is (dead-lettered, say), the saga
        still wakes.
        """
        entry = self._answered.get(saga_id)
        if entry is None or entry[0] != deadline:
            return None
        del self._answered[saga_id]
        return deadline + entry[1]

    def orphaned(self, items: list[object]) -> None:
        """Send to the inbox the local results a stopping lane did not apply."""
        results = [item.result for item in items if isinstance(item, LocalResult)]
        if results:
            task = asyncio.get_running_loop().create_task(self._send_results(results))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_results(self, results: list[StepResult]) -> None:
        records = [
            Record(
                self.inbox,
                r.saga_id.encode(),
                r.to_json(),
                partition_for(r.saga_id, self.partitions),
            )
            for r in results
        ]
        try:
            await deliver(self.producer, records, Backoff(lambda: self._closing), what="results")
        except Exception as exc:  # the durable deadlines cover them (counted uncertain)
            log.error(
                "%d step results handed back by stopped lanes not sent: %r", len(records), exc
            )

    async def close(self, timeout: float) -> None:
        """Start nothing more; let running attempts finish (up to ``timeout``), cancel the rest.

        What never ran or is cancelled is covered by its saga's durable deadline.
        """
        self._closing = True
        for slot in self._waiting:
            slot.cancel()
        self._waiting.clear()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)


def _ids(request: StepRequest) -> tuple[str, str]:
    return request.saga_id, request.step
