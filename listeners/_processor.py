"""One batch of raw records in, one SQL transaction per database out; nothing escapes.

The agent (or a replay) hands :class:`BatchProcessor` a batch. Undecodable or oversized
records go to the dead-letter sink. The valid events of the batch are applied to every
listener of a database in ONE transaction, retried in place while that database is
down (listeners with databases of their own get one transaction each). If a batch fails for a
non-transient reason (a bug, a value the schema rejects, a table or column the database
lacks), its events are applied one by one so only the offending events become dead
letters. The caller acks the batch only after :meth:`BatchProcessor.process` returns: by
then the transaction is committed and every dead letter delivered.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential

from coordinator.events import DeadLetter
from listeners._db import retry_in_place, schema_fix, ships_with_package, shown_url
from listeners._declarative import Listener
from listeners._decoding import (
    DEFAULT_MAX_EVENT_BYTES,
    RawRecord,
    dead_letter,
    decode_batch,
    event_record,
)
from listeners._events import Event
from listeners._framework import BatchResult, apply_batch
from listeners._registry import cli_name

__all__ = ["BatchProcessor", "DeadLetterSink", "ProcessorStats", "Target", "commit_batch"]

log = logging.getLogger(__name__)

#: Delivers one dead letter durably (raises if it could not).
DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]


@dataclass(frozen=True)
class Target:
    """Listeners sharing one database, and that database's sessions."""

    sessions: sessionmaker[Session]
    listeners: Sequence[Listener[Any]]


def commit_batch(
    sessions: sessionmaker[Session],
    listeners: Sequence[Listener[Any]],
    events: Sequence[Event],
) -> BatchResult:
    """Apply ``events`` to every listener in one transaction (blocking; run in a thread)."""
    total = BatchResult()
    if not events:
        return total
    with sessions() as session, session.begin():
        for listener in listeners:
            total += apply_batch(session, listener, events)
    return total


@dataclass
class ProcessorStats:
    """Running totals of a processor, served on the worker's ``/listeners/stats``."""

    batches: int = 0
    records: int = 0
    applied: int = 0
    stale: int = 0
    ignored: int = 0
    dead_letters: int = 0
    db_retries: int = 0
    isolated_batches: int = 0
    last_batch_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return dict(self.__dict__)


class BatchProcessor:
    """Decodes, applies and dead-letters batches for listeners in one or more databases.

    Args:
        listeners: Listeners whose tables live in the database of ``sessions``.
        sessions: Session factory of that database.
        targets: Instead of ``listeners`` and ``sessions``: one entry per database.
        dead_letters: Where undecodable or unappliable records go.
        agent: Name recorded in dead letters.
        max_delay: Cap of the backoff while the database (or Kafka) is unavailable.
        max_event_bytes: Records larger than this are dead letters.
    """

    def __init__(
        self,
        *,
        listeners: Sequence[Listener[Any]] = (),
        sessions: sessionmaker[Session] | None = None,
        targets: Sequence[Target] = (),
        dead_letters: DeadLetterSink,
        agent: str,
        max_delay: timedelta = timedelta(seconds=5),
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.targets = list(targets)
        if sessions is not None:
            self.targets.insert(0, Target(sessions, list(listeners)))
        self.dead_letters = dead_letters
        self.agent = agent
        self.max_delay = max_delay
        self.max_event_bytes = max_event_bytes
        self.stats = ProcessorStats()

    @property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions of the first database (the only one in most workers)."""
        return self.targets[0].sessions

    def sessions_of(self, listener: Listener[Any]) -> sessionmaker[Session]:
        """Sessions of the database ``listener`` writes to."""
        for target in self.targets:
            if any(item is listener for item in target.listeners):
                return target.sessions
        raise KeyError(listener.name)

    async def process(self, records: Sequence[RawRecord]) -> BatchResult:
        """Handle one batch; returns only when it is committed and dead letters are sent.

        Never raises, except ``CancelledError`` when the worker stops (the batch is then
        not acked and will be redelivered).
        """
        started = time.monotonic()
        decoded, dead = decode_batch(records, agent=self.agent, max_bytes=self.max_event_bytes)
        result = BatchResult()
        for target in self.targets:
            try:
                result += await self._commit(target, [event for _, event in decoded])
            except Exception as exc:
                log.exception(
                    "%s: batch of %d events failed; isolating%s",
                    self.agent,
                    len(decoded),
                    f" ({fix})" if (fix := _schema_fix(exc, target)) else "",
                )
                self.stats.isolated_batches += 1
                isolated, more_dead = await self._isolate(target, decoded, exc)
                result += isolated
                dead.extend(more_dead)
        for letter in dead:
            await self._send_dead_letter(letter)
        self._count(records, result, dead, started)
        return result

    async def _commit(self, target: Target, events: Sequence[Event]) -> BatchResult:
        def on_retry(_exc: BaseException, _attempt: int) -> None:
            self.stats.db_retries += 1

        result: BatchResult = await retry_in_place(
            lambda: asyncio.to_thread(commit_batch, target.sessions, target.listeners, events),
            what=self.agent,
            max_delay=self.max_delay,
            on_retry=on_retry,
        )
        return result

    async def _isolate(
        self,
        target: Target,
        decoded: Sequence[tuple[RawRecord, Event]],
        batch_error: Exception,
    ) -> tuple[BatchResult, list[DeadLetter]]:
        """Apply events one transaction each; the ones that still fail become dead letters."""
        total = BatchResult()
        dead: list[DeadLetter] = []
        for record, event in decoded:
            try:
                total += await self._commit(target, [event])
            except Exception as exc:
                log.error("%s: event %s cannot be applied: %r", self.agent, event.event_id, exc)
                fix = _schema_fix(exc, target)  # first: the reason is cut at 2000 characters
                reason = (
                    f"listener could not apply event {event.event_id}: "
                    f"{fix + ': ' if fix else ''}{type(exc).__name__}: "
                    f"{exc} (batch error: {type(batch_error).__name__})"
                )
                dead.append(
                    dead_letter(
                        event_record(record, event),
                        reason=reason,
                        error_type=type(exc).__name__,
                        agent=self.agent,
                    )
                )
        return total, dead

    async def _send_dead_letter(self, letter: DeadLetter) -> None:
        log.warning(
            "%s: dead letter from %s[%s]@%s: %s",
            self.agent,
            letter.source_topic,
            letter.partition,
            letter.offset,
            letter.reason.splitlines()[0],
        )
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.1, max=self.max_delay.total_seconds()),
            stop=stop_never,
            reraise=True,
        )
        attempts = 0

        async def send() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 3:  # the broker refuses it: keep the reason, drop the value
                await self.dead_letters(letter.model_copy(update={"value_b64": ""}))
            else:
                await self.dead_letters(letter)

        await retrying(send)

    def _count(
        self,
        records: Sequence[RawRecord],
        result: BatchResult,
        dead: Sequence[DeadLetter],
        started: float,
    ) -> None:
        stats = self.stats
        stats.batches += 1
        stats.records += len(records)
        stats.applied += result.applied
        stats.stale += result.stale
        stats.ignored += result.ignored
        stats.dead_letters += len(dead)
        stats.last_batch_ms = round((time.monotonic() - started) * 1000, 2)
        log.info(
            "%s: batch of %d: applied %d, stale %d, ignored %d, dead letters %d (%.1f ms)",
            self.agent,
            len(records),
            result.applied,
            result.stale,
            result.ignored,
            len(dead),
            stats.last_batch_ms,
        )


def _schema_fix(exc: BaseException, target: Target) -> str:
    """``schema_fix`` with the commands for the listener whose table ``exc`` names."""
    concerned = list(target.listeners)
    if len(concerned) > 1:  # listeners sharing the database: the statement names its table
        text = str(exc)
        concerned = [
            listener
            for listener in concerned
            if any(
                re.search(rf"\b{re.escape(table.name)}\b", text)
                for table in (listener.table, listener.timeline)
            )
        ]
    spec, rebuild = "LISTENER", []
    if len(concerned) == 1:
        spec = cli_name(concerned[0])
        if ships_with_package(concerned[0].migrations):  # rebuilt with those sharing it
            rebuild = [cli_name(listener) for listener in target.listeners]
    return schema_fix(exc, spec, shown_url(target.sessions), rebuild=rebuild)
