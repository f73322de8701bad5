"""Which partitions' records a fetch takes from aiokafka (``_faust_app.FetchThread``).

Faust hands aiokafka's ``Fetcher.fetched_records`` its live set of active partitions, and
aiokafka reads an empty set as every assigned partition. A rebalance empties the set while
a fetch is pending: that fetch then consumed the changelog records the table recovery had
just sought back to, Faust dropped them, and the recovery waited for ever. Here the real
``fetched_records`` and ``FetchResult`` of aiokafka run over buffered changelog records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, cast

from aiokafka.consumer.fetcher import Fetcher, FetchResult
from faust.types import TP

from coordinator._faust_app import Active, FetchThread

CHANGELOG = TP("app-saga-state-changelog", 2)
INBOX = TP("app.inbox", 2)


class State:
    """An assigned partition's fetch state (what ``FetchResult`` reads and moves)."""

    def __init__(self, position: int) -> None:
        self.paused = False
        self.position = position

    def consumed_to(self, position: int) -> None:
        self.position = position


class Buffered:
    """A partition's records aiokafka already fetched (``PartitionRecords``)."""

    def __init__(self, first: int, count: int) -> None:
        self.next_fetch_offset = first
        self._left = list(range(first, first + count))

    def __iter__(self) -> Iterator[Any]:
        while self._left:
            offset = self._left.pop(0)
            self.next_fetch_offset = offset + 1
            yield SimpleNamespace(offset=offset)


class Subscriptions:
    """aiokafka's ``SubscriptionState`` as a fetch sees it; ``rebalance()`` makes the next
    fetch wait for the assignment, as a fetch pending across a rebalance does."""

    def __init__(self) -> None:
        self.reassignment_in_progress = False
        self.waiting = asyncio.Event()  # a fetch waits for the assignment
        self._assigned = asyncio.Event()

    def rebalance(self) -> None:
        self.reassignment_in_progress = True
        self._assigned.clear()

    def assign(self) -> None:
        self.reassignment_in_progress = False
        self._assigned.set()

    async def wait_for_assignment(self) -> None:
        self.waiting.set()
        await self._assigned.wait()

    def is_assigned(self, tp: Any) -> bool:
        return True

    @contextmanager
    def fetch_context(self) -> Iterator[None]:
        yield


def aiokafka_with_buffered(*tps: TP) -> tuple[Any, dict[TP, State]]:
    """An aiokafka consumer whose fetcher holds 7 records (offsets 0..6) of each of ``tps``."""
    states = {tp: State(0) for tp in tps}
    assignment = SimpleNamespace(active=True, state_value=states.__getitem__)
    fetcher = cast(Any, object.__new__(Fetcher))
    fetcher._subscriptions = Subscriptions()
    fetcher._closed = False
    fetcher._wait_consume_future = None
    fetcher._records = {
        tp: FetchResult(tp, assignment=assignment, partition_records=Buffered(0, 7), backoff=0)
        for tp in tps
    }
    return SimpleNamespace(_fetcher=fetcher, _closed=False), states


def thread() -> FetchThread:
    fetching = cast(Any, object.__new__(FetchThread))
    fetching.consumer = SimpleNamespace(flow_active=True)  # Faust's consumer
    return cast(FetchThread, fetching)


async def test_a_fetch_while_faust_reads_no_partition_consumes_nothing() -> None:
    consumer, states = aiokafka_with_buffered(CHANGELOG, INBOX)
    active: set[TP] = set()  # a rebalance paused every partition (the recovery seeks)

    records = await thread()._fetch_records(consumer, active, timeout=0)

    assert records == {}
    assert states[CHANGELOG].position == 0, "the recovery reads the changelog from its seek"


async def waiting_fetch(consumer: Any, active: set[TP]) -> asyncio.Task[dict[TP, list[Any]]]:
    """A fetch begun while a rebalance is in progress: it waits for the assignment (as an
    idle worker's pending fetch does), and is waiting when this returns."""
    subscriptions = consumer._fetcher._subscriptions
    subscriptions.rebalance()
    fetch = asyncio.ensure_future(thread()._fetch_records(consumer, active, timeout=0))
    await subscriptions.waiting.wait()
    assert not fetch.done()
    return fetch


async def test_a_fetch_waiting_across_a_rebalance_consumes_nothing_once_none_is_active() -> None:
    """The stall itself: the fetch began with the inbox active; the rebalance paused every
    partition while it waited; it drained every buffered partition, the changelog ones the
    recovery had just sought back to included."""
    consumer, states = aiokafka_with_buffered(CHANGELOG, INBOX)
    active = {INBOX}
    fetch = await waiting_fetch(consumer, active)
    active.clear()  # revoked, then every assigned partition paused (the recovery seeks)
    consumer._fetcher._subscriptions.assign()

    assert await fetch == {}
    assert states[CHANGELOG].position == 0, "the recovery reads the changelog from its seek"
    assert states[INBOX].position == 0


async def test_a_fetch_takes_the_partitions_active_when_it_returns() -> None:
    """Faust's live set, not a copy of it: a partition resumed while the fetch waits is
    read at once (no latency added), one paused meanwhile is not read."""
    consumer, states = aiokafka_with_buffered(CHANGELOG, INBOX)
    active = {INBOX}
    fetch = await waiting_fetch(consumer, active)
    active.add(CHANGELOG)  # resumed by the recovery while the fetch waits
    active.discard(INBOX)  # paused meanwhile
    consumer._fetcher._subscriptions.assign()

    records = await fetch

    assert [r.offset for r in records[CHANGELOG]] == list(range(7))
    assert INBOX not in records and states[INBOX].position == 0


def test_active_is_a_live_view_that_never_reads_as_every_partition() -> None:
    live: set[TP] = set()
    view = Active(live)
    assert view and CHANGELOG not in view
    live.add(CHANGELOG)
    assert CHANGELOG in view
