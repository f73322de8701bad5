"""Dead letters: a record an agent cannot use, kept with the reason, never dropped silently."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from coordinator._delivery import Record
from coordinator.events import DeadLetter

log = logging.getLogger("coordinator.deadletters")


def dead_letter(
    topic: str, message: Any, reason: str, *, agent: str, error_type: str = "Rejected"
) -> Record:
    """Build the dead-letter record for ``message`` (Faust/aiokafka), keyed as it was."""
    key: bytes | None = getattr(message, "key", None)
    letter = DeadLetter.of(
        getattr(message, "value", None),
        source_topic=getattr(message, "topic", "?"),
        partition=getattr(message, "partition", None),
        offset=getattr(message, "offset", None),
        key=key.decode(errors="replace") if key else None,
        reason=reason[:4000],
        error_type=error_type,
        agent=agent,
        occurred_at=datetime.now(UTC),
    )
    log.warning(
        "dead letter from %s (%s:%s@%s): %s",
        agent,
        letter.source_topic,
        letter.partition,
        letter.offset,
        reason[:300],
    )
    return Record(topic, key or None, letter.to_json())
