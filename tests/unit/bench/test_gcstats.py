"""What ``bench.gcpauses`` records: each collection, by generation, while recording only."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bench.gcstats import Pauses, apply_policy


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_each_collection_is_recorded_under_its_generation() -> None:
    with Pauses() as pauses:
        gc.collect(1)
        gc.collect(2)
    gc.collect(0)  # after recording: not counted
    assert [len(pauses.by_gen[g]) for g in (0, 1, 2)] == [0, 1, 1]
    assert pauses.callback not in gc.callbacks
    assert pauses.lines(sagas=1000, wall=1.0)[1].startswith("  gen1:    1.00 per 1k sagas")


def test_a_variant_sets_the_thresholds_it_names() -> None:
    apply_policy("young=2000,middle=20,old=5,freeze=0")
    assert gc.get_threshold() == (2000, 20, 5)
