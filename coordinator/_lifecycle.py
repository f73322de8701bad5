"""A saga's lifecycle events of one inbox batch, packed into as few records as allowed.

The inbox sends, per saga and batch, the events of its re-sent stored outbox and of its
new outbox, in that order (``seq`` order). :func:`lifecycle_records` turns them into
records of the lifecycle topic keyed by the saga id (format in :mod:`coordinator.events`):

* ``batch`` (``SAGA_LIFECYCLE_FORMAT``, the default): consecutive events share one
  :class:`~coordinator.events.EventBatch` record while it stays within
  ``LIFECYCLE_BATCH_BYTES`` (and ``SAGA_MAX_RECORD_BYTES``); a group of one event, and an
  event too large to share, go alone in the single form. So no record is larger than the
  largest single event, which the inbox already bounds by ``SAGA_MAX_RECORD_BYTES``.
* ``single``: one record per event, as before batching.

The envelope is written around the stored payloads as bytes (no decoding, no
re-serializing): the payloads are the events exactly as they travel alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Literal

from coordinator._delivery import Record
from coordinator.events import BATCH_SCHEMA_VERSION, LIFECYCLE_BATCH_BYTES

#: ``SAGA_LIFECYCLE_FORMAT``: several events per record, or one
LifecycleFormat = Literal["batch", "single"]


def lifecycle_records(
    topic: str,
    saga_id: str,
    payloads: Sequence[bytes],
    *,
    form: LifecycleFormat = "batch",
    limit: int = LIFECYCLE_BATCH_BYTES,
) -> list[Record]:
    """The records carrying ``payloads`` (one saga's events, in ``seq`` order).

    Args:
        topic: the lifecycle topic.
        saga_id: the saga the events belong to (the records' key).
        payloads: each event's JSON, as it travels alone.
        form: ``batch`` packs consecutive events; ``single`` sends one per record.
        limit: most bytes of a record that carries several events.
    """
    key = saga_id.encode()
    if form == "single" or len(payloads) < 2:
        return [Record(topic, key, payload) for payload in payloads]
    head = b'{"schema_version":%d,"saga_id":%s,"events":[' % (
        BATCH_SCHEMA_VERSION,
        json.dumps(saga_id).encode(),
    )
    records = []
    for group in _groups(payloads, limit - len(head) - 2):
        if len(group) == 1:
            records.append(Record(topic, key, group[0]))
        else:
            records.append(Record(topic, key, head + b",".join(group) + b"]}"))
    return records


def _groups(payloads: Sequence[bytes], room: int) -> Iterator[list[bytes]]:
    """Consecutive payloads whose comma-joined size stays within ``room`` bytes."""
    group: list[bytes] = []
    size = -1  # no comma before the first payload
    for payload in payloads:
        if group and size + 1 + len(payload) > room:
            yield group
            group, size = [], -1
        group.append(payload)
        size += 1 + len(payload)
    if group:
        yield group
