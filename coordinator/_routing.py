"""Which partition a saga lives on, and how its id is written as a Kafka key.

Every saga topic is keyed by the saga id, encoded as UTF-8 with no framing, and
partitioned the way Kafka's Java client does it: ``murmur2(key) & 0x7fffffff %
partitions``. aiokafka's default partitioner is the same function, so a client, an
executor and a timer that send keyed records all land on the saga's partition.

Remote participants must use that partitioner too (librdkafka's default,
``consistent_random``, is CRC32-based and differs): the coordinator re-routes a result
that arrives on another partition, at the cost of one extra hop.

The table's changelog uses the same key bytes (``SagaIdCodec``), so Faust's
``table_route`` hashes exactly what the inbox partitioner hashed: a web request for a
saga reaches the worker that owns it.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.serializers.codecs import Codec

from coordinator._watch import partition_for

__all__ = ["SagaIdCodec", "SagaTable", "partition_for", "saga_table"]


class SagaIdCodec(Codec):
    """Table keys as plain UTF-8 (Faust's default ``json`` codec would add quotes)."""

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, bytes):
            return obj
        return str(obj).encode()

    def _loads(self, s: bytes) -> Any:
        return s.decode(errors="replace")


class SagaTable(faust.Table):
    """A Faust table keyed by saga id as plain UTF-8 (see ``SagaIdCodec``)."""

    def _serializer_from_type(self, typ: Any) -> Any:
        if typ is str:
            return SagaIdCodec()
        return super()._serializer_from_type(typ)


def saga_table(app: faust.App, name: str, partitions: int) -> Any:
    """Create the saga table (raw saga-id keys, JSON bytes values) registered with ``app``."""
    table = SagaTable(
        app,
        name=name,
        beacon=app.tables.beacon,
        partitions=partitions,
        key_type=str,
        value_type=bytes,
    )
    return app.tables.add(table)
