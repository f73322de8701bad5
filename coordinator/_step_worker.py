"""The in-process executor of one service: step requests in, results to the inbox.

Requests are handled per partition of the step topic, ``SAGA_EXECUTOR_CONCURRENCY`` at
a time (see ``lanes``): each result is acknowledged by the broker, retried in place if
it is not, before the request's offset may be committed. A request that cannot be
decoded is dead-lettered; a result too large for the inbox becomes a failure of the
step (its effect may have happened), so the saga moves on instead of stalling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from coordinator._delivery import Backoff, Producer, Record, deliver
from coordinator._executor import StepExecutor
from coordinator._letters import dead_letter
from coordinator._messages import StepRequest, StepResult
from coordinator._settings import CoordinatorSettings
from coordinator.events import ErrorInfo

log = logging.getLogger("coordinator.executor")


class StepWorker:
    """Runs the step requests of in-process services and sends their results."""

    def __init__(
        self, settings: CoordinatorSettings, executor: StepExecutor, producer: Producer
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.executor = executor
        self.producer = producer

    async def handle(self, partition: int, events: list[Any], stopping: Callable[[], bool]) -> None:
        """Run ``events``' requests at once; returns when every result is acknowledged."""
        replies = await asyncio.gather(*(self._run(event.message) for event in events))
        records = [r for r in replies if r is not None]
        if records:
            await deliver(self.producer, records, Backoff(stopping), what="executor results")

    async def _run(self, message: Any) -> Record | None:
        try:
            request = StepRequest.model_validate_json(message.value or b"")
        except ValidationError as exc:
            return dead_letter(
                self.topics.deadletters, message, f"invalid step request: {exc}", agent="executor"
            )
        result = await self.executor.execute(request)
        payload = result.to_json()
        limit = self.settings.max_inbox_bytes
        if len(payload) > limit:
            log.error("step %s: result of %d bytes is over %d", request.step, len(payload), limit)
            payload = too_large(result, len(payload), limit).to_json()
        return Record(request.reply_to or self.topics.inbox, request.saga_id.encode(), payload)


def too_large(result: StepResult, size: int, limit: int) -> StepResult:
    """Replace a result too large to send by a failure (the effect may have happened)."""
    error = ErrorInfo(
        type="ResultTooLarge",
        retryable=False,
        uncertain=True,
        message=(
            f"step {result.step!r} replied with a {size}-byte result, over "
            f"SAGA_MAX_INBOX_BYTES={limit}; return less (store large data elsewhere)"
        ),
    )
    return result.model_copy(
        update={"ok": False, "output": None, "error": error, "at": datetime.now(UTC)}
    )
