"""Lifecycle records straight from the consumer, applied in batches, acked once committed.

The worker's consumer hands every lifecycle record to :class:`Intake` as it drains a fetch
(``HookedApp.direct``), with no Faust stream per record: Faust's per-record path (two
tasks and an ``asyncio.wait`` per record, then the stream) cost more CPU than the SQL of
the record. A task takes up to ``batch_size`` records, waiting at most ``window`` for a
batch to fill, hands them to the batch processor, and acks them only when it returns (the
transaction committed, every dead letter delivered), so Faust commits only what was
written.

At a rebalance (and when the worker stops) the batch being applied finishes first; the
records still waiting are dropped unacked: whoever owns their partition next reads them
again from the committed offset, and the ``seq`` guard makes a second delivery harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

#: applies a batch of consumer messages; returns once they may be acked
Apply = Callable[[list[Any]], Awaitable[None]]


class Intake:
    """A buffer of consumer messages and the task that applies them in batches."""

    def __init__(
        self,
        apply: Apply,
        ack: Callable[[Any], object],
        *,
        batch_size: int,
        window: float,
    ) -> None:
        self.apply = apply
        self.ack = ack
        self.batch_size = batch_size
        self.window = window
        self.buffer: deque[Any] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a batch is being applied
        self._stopping = False  # no new batch starts

    def put(self, message: Any) -> None:
        """Queue one record (called by the consumer's drain loop; never blocks).

        While stopping (a rebalance) a record is not taken: unacked, it is read again.
        """
        if self._stopping:
            return
        self.buffer.append(message)
        if len(self.buffer) == 1 or len(self.buffer) >= self.batch_size:
            self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = loop.time() + self.window
            while len(self.buffer) < self.batch_size:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
            if self._stopping:
                return
            n = min(self.batch_size, len(self.buffer))
            batch = [self.buffer[i] for i in range(n)]
            self._busy = True
            try:
                await self.apply(batch)
            finally:
                self._busy = False
            for _ in range(n):
                self.ack(self.buffer.popleft())

    async def stop(self, timeout: float) -> None:
        """Let the batch in progress finish (up to ``timeout``), then drop the rest unacked."""
        task, self._task = self._task, None
        self._stopping = True
        self._wakeup.set()
        if task is not None:
            if self._busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._idle()), timeout)
                if self._busy:
                    log.warning(
                        "a lifecycle batch still applying after %.0fs at a rebalance: "
                        "abandoned unacked (it is read again)",
                        timeout,
                    )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.buffer.clear()
        self._stopping = False

    async def _idle(self) -> None:
        while self._busy:
            await asyncio.sleep(0.01)
