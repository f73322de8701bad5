"""Progress of a benchmark run on stderr: what runs now, and how much of the plan is left.

The plan is the sum of the measured phases' planned seconds (warm-up included); setup and
drain times are not planned, so the estimate of what is left is a lower bound. On a
terminal the current line is rewritten in place every second; otherwise (CI logs, pipes)
a line is printed every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TextIO


class Progress:
    """Reports each phase while it runs and the share of the whole plan done so far."""

    def __init__(self, planned_seconds: float, stream: TextIO | None = None) -> None:
        self.planned = max(planned_seconds, 1.0)
        self.done = 0.0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 1.0 if self.tty else 5.0
        self.started = time.monotonic()

    def note(self, text: str) -> None:
        """A line of its own (setup, per-scenario summary)."""
        if self.tty:
            self.stream.write("\r\033[K")
        print(f"[bench] {text}", file=self.stream, flush=True)

    def _line(self, label: str, elapsed: float, seconds: float, count: int | None) -> str:
        share = min(1.0, (self.done + min(elapsed, seconds)) / self.planned)
        left = max(0.0, self.planned - self.done - elapsed)
        finished = "" if count is None else f", {count:,} sagas finished"
        return (
            f"[bench] {label}: {min(elapsed, seconds):3.0f}/{seconds:.0f} s{finished} | "
            f"plan {share:4.0%} done, >= {left / 60:.1f} min left"
        )

    @contextlib.asynccontextmanager
    async def phase(
        self, label: str, seconds: float, count: Callable[[], int] | None
    ) -> AsyncIterator[None]:
        """Report ``label`` every interval while the body runs; ``seconds`` is its plan;
        ``count`` gives the sagas finished so far in the phase (None: not about sagas)."""
        t0 = time.monotonic()

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.interval)
                line = self._line(
                    label, time.monotonic() - t0, seconds, None if count is None else count()
                )
                if self.tty:
                    self.stream.write("\r\033[K" + line)
                    self.stream.flush()
                else:
                    print(line, file=self.stream, flush=True)

        task = asyncio.create_task(tick())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.done += seconds
            if self.tty:
                self.stream.write("\r\033[K")
                self.stream.flush()
