"""Step results applied where they were produced: no trip through the inbox.

An attempt of a service this worker executes itself runs as one of its tasks
(``coordinator._onehop``). Its result used to be produced to the inbox and fetched back:
a produce, a fetch and a decode per step, and two broker round trips of latency. When
the worker still holds the saga's inbox partition, the result now joins that partition's
lane directly (``LocalResult``), and the next batch applies it like any inbox record:
its saga record is written to the changelog and acknowledged before anything derived
from it is sent or launched (the durable order of effects is unchanged). A lane that
stops before applying it hands it back, and it goes to the inbox as before.

What the inbox gave for free is redelivery: a record whose batch was written but whose
sends were not all acknowledged (a crash between the two) is read again, and the record
at the saga's ``last_message`` re-sends its stored outbox. A local result has no record
to read again. So every saga record carries the number of the batch that wrote it
(``SagaState.batch``, per inbox partition, increasing across owners). A lane finishes a
batch's sends before it starts the next batch, so only the sagas of a partition's
*last* batch can have sends that never left. Before a new owner's lane applies anything,
it re-sends the stored outbox of those sagas (``Resend``); the receivers' ``seq`` guard
absorbs the copies that did leave. Its own batches are numbered after the highest number
the table holds, and after the partition's sent mark (below).

Only when the last batch is not known to be sent: a lane that stops at a clean revoke
(or a clean stop) has finished every batch it began, sends included, so the worker then
writes the partition's *sent mark* to the changelog (``coordinator._tablestore.mark_key``:
"every batch up to N was sent"), once per partition and rebalance, nothing per batch. A
new owner re-sends only if the table holds a batch numbered above the mark; a worker
killed between a batch's records and its sends leaves such a batch, and it is re-sent.

Batch numbers are fenced: a number is ``epoch * EPOCH + counter``, and each owner's
epoch is the consumer group's generation of its assignment, so a newer owner's batches
outnumber anything a stale writer (a worker that lost the partition unaware, a late
producer write) adds after it took over, and the scan finds the real last batch. A group
deleted and created anew starts its generations again at 1: an owner whose generation
does not exceed the table's highest epoch takes that epoch plus its generation (still
above it, and above the owner before it unless that one's every record expired). The
sent mark counts as the table's highest number there: records expire, the mark does not,
and a number at or under it would be taken for sent (a killed owner's unsent batch then
lost, and the mark never moving again). Records of versions before epochs hold plain
counters: epoch 0.

Durability of the result itself is a lost reply's: a crash before its batch is written
loses it, and the attempt's durable deadline fires (uncertain: retried by its key).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from coordinator._delivery import Abandoned
from coordinator._messages import StepResult
from coordinator._tablestore import Entry

log = logging.getLogger("coordinator.local")

#: the field a saga record ends with (``SagaState.batch``), as written
_BATCH = b'"batch":'

#: a batch number is ``epoch * EPOCH + counter`` (a counter never reaches it: 30 years
#: of 1,000 batches a second)
EPOCH = 10**12

_keys = itertools.count(1)


def local_key() -> int:
    """A unique negative key: names a local item where a record has its offset."""
    return -next(_keys)


@dataclass(frozen=True)
class LocalResult:
    """A step result of this worker's own task, for its saga's partition lane."""

    result: StepResult
    key: int = field(default_factory=local_key)


@dataclass(frozen=True)
class Resend:
    """Re-send a saga's stored outbox (its record is from the partition's last batch).

    ``again``: also store the record again, as it is, in the batch that re-sends it (a
    failed try's saga: its number moves to that batch, which a next owner re-sends if it
    was not sent in full).
    """

    saga_id: str
    key: int = field(default_factory=local_key)
    again: bool = False


def batch_of(raw: bytes) -> int | None:
    """The ``batch`` a stored saga record was written by (None: older, or a marker).

    Read from the bytes: the field is the record's last one, written by pydantic in
    declaration order, so the field itself ends the record; a ``"batch":`` anywhere else
    (an input key of a record written before the field existed) is not at the end.
    """
    at = raw.rfind(_BATCH, max(0, len(raw) - 48))  # the record's tail: no need to read it all
    if at < 0:
        return None
    value = raw[at + len(_BATCH) :].rstrip()
    if not value.endswith(b"}"):
        return None
    value = value[:-1].strip()  # the field ends the record: nothing else follows it
    return int(value) if value.isdigit() else None


def epoch_of(number: int) -> int:
    """The epoch of a batch number (0 for a plain counter, and for -1, which means none)."""
    return max(number, 0) // EPOCH


def batch_name(number: int) -> str:
    """A batch number as logged: ``epoch.counter``."""
    return f"{epoch_of(number)}.{max(number, 0) % EPOCH}"


def owner_epoch(generation: int, last_epoch: int) -> int:
    """The epoch a new owner numbers its batches in, given the table's highest.

    Its group generation, which exceeds every earlier owner's; after the group was
    deleted (generations restart at 1), the table's highest epoch plus the generation.
    Generation 0 (unknown) keeps the table's epoch: counters go on from its last batch.
    """
    return generation if generation > last_epoch else last_epoch + generation


def sent_mark(number: int) -> bytes:
    """A partition's sent mark: every batch numbered up to ``number`` was sent in full."""
    return json.dumps({"sent": number}).encode()


def mark_of(raw: bytes | None) -> int:
    """The batch number a stored sent mark vouches for (-1: none, or unreadable)."""
    if raw is None:
        return -1
    try:
        number = json.loads(raw)["sent"]
    except (ValueError, TypeError, KeyError):
        log.warning("unreadable sent mark %r: the partition's last batch is re-sent", raw)
        return -1
    return number if isinstance(number, int) else -1


@dataclass
class LastBatch:
    """The highest batch number a partition's records hold, and the sagas it wrote."""

    number: int = -1
    sagas: list[str] = field(default_factory=list)

    def add(self, saga_id: str, batch: int | None) -> None:
        if batch is None or batch < self.number:
            return
        if batch > self.number:
            self.number, self.sagas = batch, []
        self.sagas.append(saga_id)


@dataclass(frozen=True)
class Scanned:
    """What a partition's scan found: its last batch, its sent mark, the group generation."""

    last: LastBatch
    mark: int = -1
    generation: int = 0


class Recovery:
    """Per assignment: the partitions' last batches, found before their lanes apply anything.

    ``reset`` at a revoke (lanes waiting for the old assignment's scan are abandoned),
    ``scan`` once the assignment's table is restored (each partition is released as soon
    as it is scanned), ``prelude`` by each new inbox lane before its first batch: it sets
    where the partition's batch numbers go on and returns the ``Resend`` items of the
    sagas its last batch wrote, unless the partition's sent mark vouches for that batch.
    ``sent_marks`` at a revoke: the marks to write for the lanes that stopped cleanly.
    """

    def __init__(self, batches: dict[int, int]) -> None:
        #: the inbox processor's next batch number per partition (set here per assignment)
        self.batches = batches
        self._found: dict[int, asyncio.Future[Scanned]] = {}
        self._scans = 0  # bumped by ``reset``: a scan of an older assignment stops
        #: per partition whose prelude ran: what its scan found, and its first number
        self._numbered: dict[int, tuple[Scanned, int]] = {}

    def _future(self, partition: int) -> asyncio.Future[Scanned]:
        found = self._found.get(partition)
        if found is None:  # made inside the running loop, on first use
            found = self._found[partition] = asyncio.get_running_loop().create_future()
        return found

    def reset(self) -> None:
        """A revoke: the next assignment is scanned anew; waiting lanes stop waiting."""
        self._scans += 1
        found, self._found = self._found, {}
        for future in found.values():
            if not future.done():
                future.set_exception(Abandoned())
                future.exception()  # retrieved: no "never retrieved" warning

    def scan(
        self,
        held: Iterable[int],
        entries: AsyncIterable[list[Entry]],
        marks: Callable[[int], bytes | None] = lambda partition: None,
        *,
        generation: int = 0,
    ) -> Coroutine[Any, Any, None]:
        """Find each held partition's last batch; release its lane once it is scanned.

        ``entries``: the held partitions' records, grouped by partition (a partition is
        done when the next one begins), in lists (the stores' ``entries``: they yield to
        the event loop between two, heartbeats go on); ``marks``: a partition's sent mark;
        ``generation``: the consumer group's generation of this assignment. The scan is
        of the assignment current when this is called (not when it is awaited): if a
        revoke comes first, it releases nothing.
        """
        return self._scan(self._scans, set(held), entries, marks, max(generation, 0))

    async def _scan(
        self,
        scans: int,
        held: set[int],
        entries: AsyncIterable[list[Entry]],
        marks: Callable[[int], bytes | None],
        generation: int,
    ) -> None:
        def found(partition: int, last: LastBatch) -> None:
            if scans != self._scans:
                return  # revoked: a newer assignment scans again
            mark = mark_of(marks(partition)) if partition in held else -1
            future = self._future(partition)
            if not future.done():
                future.set_result(Scanned(last, mark, generation))

        at, last = -1, LastBatch()
        async for chunk in entries:
            for partition, saga_id, raw in chunk:
                if scans != self._scans:
                    return
                if partition != at:
                    if at >= 0:
                        found(at, last)
                    at, last = partition, LastBatch()
                last.add(saga_id, batch_of(raw))
        if at >= 0:
            found(at, last)
        for partition in held | set(self._found):  # empty ones; lanes of none held
            found(partition, LastBatch())

    async def prelude(self, partition: int) -> list[Any]:
        """Wait for the partition's scan; number its batches; its last batch's re-sends."""
        target = self._future(partition)
        scanned = await asyncio.shield(target)  # Abandoned at a revoke
        if self._found.get(partition) is not target:
            raise Abandoned()  # revoked since: its scan is of an assignment gone
        last = scanned.last
        # never at or under the mark: it vouches for every number up to it, and records
        # of the epochs it saw may have expired (a group reset restarts generations)
        top = max(last.number, scanned.mark)
        epoch = owner_epoch(scanned.generation, epoch_of(top))
        first = max(self.batches.get(partition, 0), top + 1, epoch * EPOCH)
        self.batches[partition] = first
        self._numbered[partition] = (scanned, first)
        if last.number <= scanned.mark:
            if last.sagas:
                log.info(
                    "inbox partition %d: its last batch (%s) was sent in full; nothing to re-send",
                    partition,
                    batch_name(last.number),
                )
            return []
        log.info(
            "inbox partition %d: re-sending the outbox of %d sagas of its last batch (%s)",
            partition,
            len(last.sagas),
            batch_name(last.number),
        )
        return [Resend(saga_id) for saga_id in last.sagas]

    def sent_marks(self, drained: Iterable[int]) -> dict[int, int]:
        """The sent marks to write at a revoke, for the partitions whose lane ``drained``.

        Such a lane finished its prelude and every batch it began, sends included: every
        batch it wrote, and the last batch it found (not re-sent only if already marked),
        was sent in full. A mark is written only where it moves; the record is forgotten.
        """
        marks: dict[int, int] = {}
        for partition in drained:
            numbered = self._numbered.get(partition)
            if numbered is None:
                continue
            scanned, first = numbered
            now = self.batches.get(partition, first)
            through = now - 1 if now > first else scanned.last.number
            if through > scanned.mark:
                marks[partition] = through
        self._numbered.clear()  # a revoke takes every partition: scanned anew
        return marks
