"""What a failed integration test prints so that a failure in CI explains itself.

``conftest.pytest_runtest_makereport`` adds these sections to the report of a failed test
that used an :class:`~tests.integration.stack.OrderStack`:

* every process the stack started: name, pid, exit status, where its full log is kept,
  its warnings and errors, and the end of its log;
* where the coordinator's consumer group stands on each inbox partition (committed offset
  against the log end): a partition whose committed offset stays behind its end while
  sagas of it are stuck was not read.

``Lifecycle.wait`` names, for the sagas it waited for in vain, the inbox partition of each
(``partition_for``), so a stall of one partition shows as such.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from coordinator._routing import partition_for

if TYPE_CHECKING:
    from tests.integration.stack import OrderStack

#: lines of a worker's log shown at its end
TAIL_LINES = 60
#: warning/error lines of a worker's log shown (the newest)
NOTABLE_LINES = 60
NOTABLE = re.compile(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback|seeking back|Exception")


def by_partition(saga_ids: list[str], partitions: int) -> str:
    """``"partition 0: 8 (a, b, ...)"`` lines for ``saga_ids`` (sagas stuck somewhere)."""
    counts = Counter(partition_for(s, partitions) for s in saga_ids)
    lines = []
    for partition in sorted(counts):
        some = [s for s in saga_ids if partition_for(s, partitions) == partition]
        shown = ", ".join(some[:6]) + (", ..." if len(some) > 6 else "")
        lines.append(f"inbox partition {partition}: {counts[partition]} ({shown})")
    return "; ".join(lines)


def log_excerpt(text: str) -> str:
    """A log's warnings and errors (the newest), then its last lines (HTTP request lines
    of the participants' client left out: one per step attempt, they bury the rest)."""
    lines = [line for line in text.splitlines() if "HTTP Request:" not in line]
    notable = [line for line in lines if NOTABLE.search(line)][-NOTABLE_LINES:]
    return "\n".join(
        [
            f"-- {len(notable)} warning/error lines (newest) --",
            *notable,
            f"-- last {TAIL_LINES} of {len(lines)} lines --",
            *lines[-TAIL_LINES:],
        ]
    )


async def inbox_positions(stack: OrderStack) -> str:
    """Per inbox partition: the coordinator group's committed offset and the log end."""
    settings = stack.settings()
    topic = settings.topics.inbox
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(stack.partitions)]
        committed = await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)
        ends = await consumer.end_offsets(tps)
        lines = []
        for tp in tps:
            got = committed.get(tp)
            at = got.offset if got is not None and got.offset >= 0 else None
            behind = "" if at is None else f", {ends[tp] - at} behind"
            lines.append(f"{topic}[{tp.partition}]: committed {at}, end {ends[tp]}{behind}")
        return "\n".join(lines)
    finally:
        await consumer.stop()
        await admin.close()


def _positions_aside(stack: OrderStack) -> str:
    """``inbox_positions`` on a loop of its own thread (the test's loop is gone here)."""
    result: list[str] = []

    def run() -> None:
        try:
            result.append(asyncio.run(asyncio.wait_for(inbox_positions(stack), 20)))
        except Exception as exc:  # a diagnosis must never hide the failure
            result.append(f"(could not read the inbox positions: {exc!r})")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    return result[0] if result else "(reading the inbox positions timed out)"


def sections(stack: OrderStack) -> list[tuple[str, str]]:
    """Report sections (title, text) for a failed test that used ``stack``."""
    found: list[tuple[str, str]] = []
    for proc in stack.processes:
        state = "running" if proc.alive() else f"exit status {proc.returncode}"
        title = f"process {proc.name} (pid {proc.proc.pid if proc.proc else '-'}, {state})"
        try:
            text = proc.output()
        except OSError as exc:
            text = f"(log unreadable: {exc!r})"
        found.append((title, f"full log: {proc.log_path}\n{log_excerpt(text)}"))
    if any(proc.name.startswith("coordinator") for proc in stack.processes):
        found.append(("coordinator group on the inbox", _positions_aside(stack)))
    return found
