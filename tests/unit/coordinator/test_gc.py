"""The worker's garbage-collector settings (the latency tail)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from coordinator._gc import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_what_is_alive_when_the_worker_is_ready_is_never_walked_again() -> None:
    alive = [[n] for n in range(1000)]  # start-up objects, alive for good
    settle_heap()
    assert gc.get_freeze_count() >= len(alive)
    assert gc.get_threshold()[0] >= YOUNG_THRESHOLD
