"""Recognising a dead letter: its own bytes, or the kept start of an oversized value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordinator.deadletters import matches, parse_ref, truncated
from coordinator.errors import CommandError
from coordinator.events import DeadLetter


def letter(value: bytes, reason: str = "invalid inbox message") -> DeadLetter:
    return DeadLetter(
        source_topic="saga.inbox",
        key="s-1",
        value_b64=DeadLetter.encode_value(value),
        reason=reason,
        error_type="Rejected",
        agent="inbox",
        occurred_at=datetime(2026, 11, 21, tzinfo=UTC),
    )


def test_a_dead_letter_matches_its_own_bytes_only() -> None:
    assert matches(letter(b'{"a": 1}'), b'{"a": 1}')
    assert not matches(letter(b'{"a": 1}'), b'{"a": 1, "b": 2}')
    assert not truncated(letter(b"x"))


def test_a_truncated_dead_letter_matches_the_message_it_starts() -> None:
    big = b"x" * 100_000
    cut = letter(big[:65536], "too large [value truncated: first 65536 of 100000 bytes kept]")
    assert truncated(cut)
    assert matches(cut, big)
    assert not matches(cut, b"y" * 100_000)


@pytest.mark.parametrize("bad", ["3", "a:b", "3:-1", ""])
def test_refs_name_partition_and_offset(bad: str) -> None:
    assert parse_ref("3:17") == (3, 17)
    with pytest.raises(CommandError, match="PARTITION:OFFSET"):
        parse_ref(bad)
