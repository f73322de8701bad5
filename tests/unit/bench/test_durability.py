"""Restate's log-server fsync count is read from its Prometheus text, and only that db's."""

from __future__ import annotations

from bench.durability import restate_log_syncs

METRICS = """\
# TYPE restate_rocksdb_wal_synced_total counter
restate_rocksdb_wal_synced_total{cluster_name="c",node_name="n",db="replicated-metadata-server"} 32
restate_rocksdb_wal_synced_total{cluster_name="c",node_name="n",db="db"} 0
restate_rocksdb_wal_synced_total{cluster_name="c",node_name="n",db="log-server"} 259
"""


def test_counts_the_log_server_only() -> None:
    assert restate_log_syncs(METRICS) == 259


def test_none_when_the_metric_is_missing() -> None:
    assert restate_log_syncs("restate_other_total 5\n") is None
