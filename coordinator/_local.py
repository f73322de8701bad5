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
the table holds (``LastBatches``).

Durability of the result itself is a lost reply's: a crash before its batch is written
loses it, and the attempt's durable deadline fires (uncertain: retried by its key).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coordinator._delivery import Abandoned
from coordinator._messages import StepResult

log = logging.getLogger("coordinator.local")

#: the field a saga record ends with (``SagaState.batch``), as written
_BATCH = b'"batch":'

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
    """Re-send a saga's stored outbox (its record is from the partition's last batch)."""

    saga_id: str
    key: int = field(default_factory=local_key)


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


class Recovery:
    """Per assignment: the partitions' last batches, found before their lanes apply anything.

    ``reset`` at a revoke (lanes waiting for the old assignment's scan are abandoned),
    ``scan`` once the assignment's table is restored, ``prelude`` by each new inbox lane
    before its first batch: it sets where the partition's batch numbers go on and returns
    the ``Resend`` items of the sagas its last batch wrote.
    """

    def __init__(self, batches: dict[int, int], *, chunk: int = 2000) -> None:
        #: the inbox processor's next batch number per partition (set here per assignment)
        self.batches = batches
        self.chunk = chunk
        self._current: asyncio.Future[dict[int, LastBatch]] | None = None

    @property
    def _found(self) -> asyncio.Future[dict[int, LastBatch]]:
        if self._current is None:  # made inside the running loop, on first use
            self._current = asyncio.get_running_loop().create_future()
        return self._current

    def reset(self) -> None:
        """A revoke: the next assignment is scanned anew; waiting lanes stop waiting."""
        current, self._current = self._current, None
        if current is not None and not current.done():
            current.set_exception(Abandoned())
            current.exception()  # retrieved: no "never retrieved" warning

    async def scan(self, entries: Iterable[tuple[int, str, bytes]]) -> None:
        """Find each partition's last batch (``entries``: the held partitions' records)."""
        found: dict[int, LastBatch] = {}
        target = self._found
        for i, (partition, saga_id, raw) in enumerate(entries, 1):
            found.setdefault(partition, LastBatch()).add(saga_id, batch_of(raw))
            if i % self.chunk == 0:
                await asyncio.sleep(0)  # heartbeats go on while a big table is read
                if target is not self._found:
                    return  # a newer assignment scans again
        if not target.done():
            target.set_result(found)

    async def prelude(self, partition: int) -> list[Any]:
        """Wait for the scan; number the partition's batches; its last batch's re-sends."""
        while True:
            target = self._found
            found = await asyncio.shield(target)  # Abandoned at a revoke
            if target is self._found:
                break
        last = found.get(partition, LastBatch())
        self.batches[partition] = max(self.batches.get(partition, 0), last.number + 1)
        if last.sagas:
            log.info(
                "inbox partition %d: re-sending the outbox of %d sagas of its last batch (%d)",
                partition,
                len(last.sagas),
                last.number,
            )
        return [Resend(saga_id) for saga_id in last.sagas]
