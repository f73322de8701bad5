"""The rows of the bench's tables: what is shown per engine and scenario, and formatting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Getter = Callable[[dict[str, Any]], Any]

#: (label, getter over one scenario result) — rows of every scenario table.
ROWS: list[tuple[str, Getter]] = [
    ("throughput at saturation (sagas/s)", lambda r: r["closed_loop"]["throughput_sagas_per_s"]),
    ("in-flight sagas (closed loop)", lambda r: r["closed_loop"]["concurrency"]),
    ("latency p50 at half rate (ms)", lambda r: r["open_loop"]["latency"].get("p50_ms")),
    ("latency p95 at half rate (ms)", lambda r: r["open_loop"]["latency"].get("p95_ms")),
    ("latency p99 at half rate (ms)", lambda r: r["open_loop"]["latency"].get("p99_ms")),
    ("worst one-second p99 at half rate (ms)", lambda r: worst_second(r)),
    ("half rate offered (sagas/s)", lambda r: r["open_loop"]["offered_rate_sagas_per_s"]),
    ("CPU ms/saga, engine processes", lambda r: cpu(r, "engine")),
    ("CPU ms/saga, PostgreSQL (all backends)", lambda r: cpu(r, "postgres")),
    ("CPU ms/saga, Kafka broker", lambda r: cpu(r, "kafka_broker")),
    ("CPU ms/saga, HTTP services", lambda r: cpu(r, "http_services")),
    ("CPU ms/saga, all the engine uses (see notes)", lambda r: cpu_all(r)),
    ("peak RSS, engine processes (MiB)", lambda r: r["engine_peak_rss_mib"]),
    (
        "SQL statements/saga (driver)",
        lambda r: r["open_loop"]["whole_phase"]["sql_statements_per_saga"],
    ),
    ("SQL commits/saga (driver)", lambda r: r["open_loop"]["whole_phase"]["sql_commits_per_saga"]),
    (
        "commits/saga (server, pg_stat_database)",
        lambda r: r["open_loop"]["whole_phase"]["server_commits_per_saga"],
    ),
    (
        "log messages/saga (ours: Kafka records; Restate: log records)",
        lambda r: r["open_loop"]["whole_phase"]["kafka_messages_per_saga"],
    ),
    (
        "fsyncs/saga (PostgreSQL WAL syncs, server-wide; Restate log-server WAL syncs)",
        lambda r: r["open_loop"]["whole_phase"].get("fsyncs_per_saga"),
    ),
    ("invalid or error outcomes", lambda r: bad(r)),
    ("noise: other processes' CPU in window (s)", lambda r: noise(r)),
]


def cpu(r: dict[str, Any], group: str) -> Any:
    return r["closed_loop"]["window"]["cpu_ms_per_saga"].get(group)


#: Process groups each engine really uses (the others' CPU in its window is noise from
#: other work on the machine: the broker and PostgreSQL are shared).
USES: dict[str, tuple[str, ...]] = {
    "ours": ("engine", "postgres", "kafka_broker", "http_services"),
    "dbos": ("engine", "postgres", "http_services"),
    "dbos-sync-off": ("engine", "postgres", "http_services"),
    "restate": ("engine", "http_services"),
}


def cpu_all(r: dict[str, Any]) -> Any:
    groups = USES.get(r.get("engine", ""), ())
    values = [cpu(r, g) for g in groups]
    return round(sum(v for v in values if v is not None), 3) if groups else None


def bad(r: dict[str, Any]) -> int:
    return sum(
        r[p]["invalid_outcomes"] + r[p]["error_outcomes"] + r[p]["not_terminated_after_drain"]
        for p in ("closed_loop", "open_loop")
    )


def noise(r: dict[str, Any]) -> Any:
    return r["closed_loop"]["window"]["cpu_seconds"].get("other_processes")


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def quotient(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, 3)
    return None


def ratio(a: Any, b: Any) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return f"{a / b:.2f}x"
    return "n/a"


#: Column titles, in the order engines appear in the tables.
TITLES: dict[str, str] = {
    "ours": "ours",
    "dbos": "DBOS",
    "dbos-sync-off": "DBOS sync_commit=off",
    "restate": "Restate",
}
#: Ratio columns: ours / each of these.
VERSUS = ("dbos", "dbos-sync-off", "restate")


def label(row: str) -> str:
    return next(label for label, _ in ROWS if label.startswith(row))


def getter(row: str) -> Getter:
    return next(get for label, get in ROWS if label.startswith(row))


def worst_second(r: dict[str, Any]) -> float | None:
    """The highest p99 of any one second of the open loop (where the tail is)."""
    seconds = r["open_loop"].get("latency_by_second") or []
    values = [s["p99_ms"] for s in seconds if s.get("n")]
    return max(values) if values else None
