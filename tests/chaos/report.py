"""The chaos table: one row per scenario, printed at the end of the run and kept in a file.

Rows are recorded before a scenario asserts, so a failing scenario still shows its numbers.
The table goes to ``$TMPDIR/saga-chaos/report.txt`` (with the process logs of failing
scenarios next to it) and to the end of the pytest output.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.oracle import Verdict

ARTIFACTS = Path(tempfile.gettempdir()) / "saga-chaos"
REPORT = ARTIFACTS / "report.txt"

COLUMNS = (
    "scenario",
    "submitted",
    "finished",
    "lost",
    "wrong status",
    "double effects",
    "wrong compensations",
    "seq errors",
    "listener mismatches",
    "status errors",
    "other",
    "recovery after each fault",
    "duration",
)

_rows: list[tuple[str, ...]] = []


def mode() -> str:
    """``reduced`` (in ``make test``) or ``full`` (``make chaos``: ``SAGA_CHAOS=full``)."""
    return "full" if os.environ.get("SAGA_CHAOS", "").lower() == "full" else "reduced"


def record(verdict: Verdict) -> None:
    """Add the scenario's row to the table (and rewrite the report file)."""
    recovery = ", ".join(
        f"{f.label} {f.recovered_in:.1f}s" if f.recovered_in is not None else f"{f.label} never"
        for f in verdict.faults
    )
    _rows.append(
        (
            verdict.scenario,
            str(verdict.submitted),
            str(verdict.finished),
            str(len(verdict.lost.subjects)),
            str(len(verdict.wrong_status.subjects)),
            str(len(verdict.double_effects.subjects)),
            str(len(verdict.wrong_compensations.subjects)),
            str(len(verdict.seq_problems.subjects)),
            str(len(verdict.listener_mismatches.subjects)),
            str(len(verdict.status_failures.subjects)),
            str(len(verdict.other.subjects)),
            recovery or "-",
            f"{time.monotonic() - verdict.started:.0f}s",
        )
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(table() + "\n")
    if not verdict.ok:
        detail = ARTIFACTS / f"{verdict.scenario}.txt"
        timelines = [
            f"\n{saga_id}:\n" + "\n".join(f"  {line}" for line in lines)
            for saga_id, lines in sorted(verdict.timelines.items())
        ]
        detail.write_text(verdict.explain(limit=50) + "\n" + "".join(timelines) + "\n")


def table() -> str:
    if not _rows:
        return ""
    widths = [max(len(c), *(len(r[i]) for r in _rows)) for i, c in enumerate(COLUMNS)]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    head = f"chaos ({mode()}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([head, line(COLUMNS), rule, *(line(r) for r in _rows)])
