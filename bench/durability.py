"""Counting what each engine does to make a saga durable: fsyncs of its store.

- PostgreSQL (DBOS; our listener): ``pg_stat_wal.wal_sync``, the WAL syncs of the whole
  server (PostgreSQL 14+). It is server-wide: other databases on the same server add to
  it, so on a shared server it is an upper bound. With ``synchronous_commit=on`` a commit
  waits for a WAL sync (group commit may share one among concurrent commits); with
  ``off`` only the WAL writer syncs, every ``wal_writer_delay``.
- Restate: ``restate_rocksdb_wal_synced_total{db="log-server"}`` from its Prometheus
  metrics, the WAL syncs of the log-server that stores the log.
- Kafka (our engine's state): the broker acknowledges from the page cache and does not
  fsync per message (``log.flush.interval.messages`` unset), so it adds none.
"""

from __future__ import annotations

import re

import psycopg


async def postgres_wal_syncs(admin_url: str) -> int | None:
    """``pg_stat_wal.wal_sync`` of the server behind ``admin_url`` (None if unavailable)."""
    try:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as c:
            row = await (await c.execute("SELECT wal_sync FROM pg_stat_wal")).fetchone()
    except psycopg.Error:
        return None
    return None if row is None else int(row[0])


def restate_log_syncs(metrics_text: str) -> int | None:
    """WAL syncs of Restate's log-server, from its Prometheus metrics text."""
    pattern = r'^restate_rocksdb_wal_synced_total\{[^}]*db="log-server"[^}]*\}\s+([0-9.e+]+)'
    values = re.findall(pattern, metrics_text, re.M)
    return int(sum(float(v) for v in values)) if values else None
