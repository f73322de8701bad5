"""Recognising a dead letter: its own bytes, or the kept start of an oversized value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordinator import CommandError
from coordinator._cli_deadletters import format_entry
from coordinator._deadletters import DeadLetterEntry, matches, parse_ref, truncated
from coordinator.events import DEAD_LETTER_VALUE_LIMIT, DeadLetter


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


def test_a_dead_letter_cut_to_the_limit_says_so() -> None:
    fields = {
        "source_topic": "saga.inbox",
        "reason": "too large",
        "error_type": "RecordTooLarge",
        "agent": "inbox",
        "occurred_at": datetime(2026, 11, 21, tzinfo=UTC),
    }
    big = b"x" * (DEAD_LETTER_VALUE_LIMIT + 1)
    cut = DeadLetter.of(big, **fields)
    assert cut.truncated and truncated(cut) and cut.original_size == len(big)
    assert cut.value() == big[:DEAD_LETTER_VALUE_LIMIT] and matches(cut, big)
    whole = DeadLetter.of(big[:-1], **fields)
    assert not whole.truncated and not truncated(whole) and whole.value() == big[:-1]
    entry = DeadLetterEntry(partition=0, offset=7, letter=cut)
    assert f"first {DEAD_LETTER_VALUE_LIMIT} of {len(big)} bytes kept" in format_entry(entry)


def test_a_dead_letter_of_an_older_version_says_it_in_its_reason() -> None:
    old = letter(b"x", "too large [value truncated: first 1 of 9 bytes kept]")
    assert not old.truncated and truncated(old)


@pytest.mark.parametrize("bad", ["3", "a:b", "3:-1", ""])
def test_refs_name_partition_and_offset(bad: str) -> None:
    assert parse_ref("3:17") == (3, 17)
    with pytest.raises(CommandError, match="PARTITION:OFFSET"):
        parse_ref(bad)
