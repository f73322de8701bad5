"""Fixtures of the chaos suite: a cluster factory (cleaned up after the test), the table."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import report
from tests.chaos.cluster import ChaosCluster
from tests.services import fresh_database

ClusterFactory = Callable[..., ChaosCluster]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The reduced run (``make test``) deselects the full-only scenarios: never a skip."""
    if report.mode() == "full":
        return
    full_only = [item for item in items if item.get_closest_marker("chaos_full_only")]
    if full_only:
        config.hook.pytest_deselected(items=full_only)
        items[:] = [item for item in items if item not in full_only]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    table = report.table()
    if table:
        terminalreporter.write_sep("=", "chaos")
        for line in table.splitlines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(table in {report.REPORT})")


@pytest.fixture
def chaos_cluster(
    kafka_bootstrap: str, topic_prefix: str, postgres_server: str
) -> Iterator[ClusterFactory]:
    """``chaos_cluster(**options)`` builds a ``ChaosCluster`` on a fresh listener database
    (or ``database_url=``), on ``bootstrap=`` another broker, ``prefix=`` another prefix;
    all closed at the end."""
    built: list[ChaosCluster] = []
    databases: list[Iterator[str]] = []
    # not ``tmp_path``: concurrent pytest sessions on one machine prune each other's
    # /tmp/pytest-of-<user>/pytest-N while a long scenario still runs
    workdir = tempfile.TemporaryDirectory(prefix="saga-chaos-")

    def make(**options: Any) -> ChaosCluster:
        url = options.pop("database_url", None)
        if url is None:
            database = fresh_database(postgres_server)
            databases.append(database)
            url = next(database)
        bootstrap = options.pop("bootstrap", kafka_bootstrap)
        prefix = options.pop("prefix", topic_prefix)
        cluster = ChaosCluster(bootstrap, prefix, Path(workdir.name) / prefix, url, **options)
        built.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in reversed(built):
            cluster.close()
        for database in databases:
            database.close()
        workdir.cleanup()
