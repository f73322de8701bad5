"""Writes ``results.json`` (all raw figures) and the markdown summary ``RESULTS.md``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.report_rows import ROWS, TITLES, VERSUS
from bench.report_rows import fmt as _fmt
from bench.report_rows import getter as _getter
from bench.report_rows import label as _label
from bench.report_rows import quotient as _quotient
from bench.report_rows import ratio as _ratio


def _scenario_table(name: str, results: dict[str, Any], kafka_rate: float | None) -> list[str]:
    per_engine: dict[str, dict[str, Any]] = {}
    for eng_name, eng in results["engines"].items():
        r = eng.get("scenarios", {}).get(name)
        if r is not None:
            per_engine[eng_name] = {**r, "engine": eng_name}
    order = [n for n in TITLES if n in per_engine] + [n for n in per_engine if n not in TITLES]
    versus = [n for n in VERSUS if n in per_engine and "ours" in per_engine]
    desc = next(iter(per_engine.values()), {}).get("description", "")
    head = [TITLES.get(n, n) for n in order] + [f"ours/{TITLES[n]}" for n in versus]
    lines = [
        f"### {name} — {desc}",
        "",
        "| metric | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(head),
    ]
    for label, get in ROWS:
        values = {n: get(per_engine[n]) for n in order}
        cells = [_fmt(values[n]) for n in order]
        cells += [_ratio(values["ours"], values[n]) for n in versus]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for eng_name, eng in results["engines"].items():
        error = eng.get("failed_scenarios", {}).get(name)
        if error is not None:
            lines.append(f"\n{TITLES.get(eng_name, eng_name)} failed in this scenario: {error}")
    for eng_name in order:
        worst = _worst_second_cpu(per_engine[eng_name])
        if worst:
            lines.append(f"\n{TITLES.get(eng_name, eng_name)}: {worst}")
    ours = per_engine.get("ours")
    if ours and kafka_rate:
        per = _getter("log messages/saga")(ours)
        ceiling = kafka_rate / per if per else None
        throughput = ours["closed_loop"]["throughput_sagas_per_s"]
        share = f"{throughput / ceiling:.1%}" if ceiling else "n/a"
        lines.append(
            f"\nOurs against the raw Kafka limit: ceiling = limit msgs/s / msgs per saga = "
            f"{_fmt(ceiling)} sagas/s; measured throughput is {share} of it."
        )
    return [*lines, ""]


def _worst_second_cpu(r: dict[str, Any]) -> str | None:
    """The open loop's worst second (highest p99) and the cores each process group used
    in it, beside the median second's: what else the machine did while the tail grew."""
    lat = {s["second"]: s for s in r["open_loop"].get("latency_by_second") or [] if s.get("n")}
    cpu = {s["second"]: s["cores"] for s in r["open_loop"].get("cpu_cores_by_second") or []}
    if not lat or not cpu:
        return None
    worst = max(lat, key=lambda s: lat[s]["p99_ms"])
    if worst not in cpu:
        return None
    median = sorted(lat, key=lambda s: lat[s]["p99_ms"])[len(lat) // 2]

    def cores(second: int) -> str:
        used = cpu.get(second, {})
        ranked = sorted(used.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {v:.2f}" for k, v in ranked if v >= 0.005)

    return (
        f"worst second of the open loop: s{worst}, p99 {lat[worst]['p99_ms']:,.0f} ms; "
        f"cores used in it: {cores(worst)} (median second s{median}, p99 "
        f"{lat[median]['p99_ms']:,.0f} ms: {cores(median)})"
    )


def load_baseline(path: Path) -> dict[str, Any]:
    """Our engine's figures from an earlier run's results.json (before/after table)."""
    data = json.loads(path.read_text())
    return {
        "source": str(path),
        "commit": data.get("commit", "unknown"),
        "date": data.get("date"),
        "mode": data.get("mode", {}).get("name"),
        "loadavg_at_start": data.get("machine", {}).get("loadavg_at_start"),
        "note": data.get("note"),
        "ours": data["engines"]["ours"],
        "dbos": data["engines"].get("dbos"),
    }


#: Rows of the before/after table (prefixes of ROWS labels).
BEFORE_AFTER = (
    "throughput",
    "latency p50",
    "latency p95",
    "latency p99",
    "CPU ms/saga, engine",
    "CPU ms/saga, Kafka",
    "CPU ms/saga, all",
    "log messages/saga",
    "invalid",
    "noise",
)


def _baseline_section(results: dict[str, Any]) -> list[str]:
    base = results.get("baseline")
    now = results["engines"].get("ours", {}).get("scenarios", {})
    if not base or not now:
        return []
    before = base["ours"].get("scenarios", {})
    lines = [
        "## Our engine, before and after",
        "",
        f"Before: commit {base['commit']}, {base['mode']} mode, run {base['date']} "
        f"(load average at start {(base.get('loadavg_at_start') or [0])[0]:.2f}). "
        f"After: commit {results.get('commit', 'unknown')}, this run. Same machine, same "
        "harness settings. The machine is shared, so each run has its own noise (noise "
        "row); DBOS did not change between the runs, so the rows against DBOS in the same "
        "run are the fairer before/after.",
        "",
    ]
    if base.get("note"):
        lines += [f"Baseline note: {base['note']}", ""]
    dbos_before = (base.get("dbos") or {}).get("scenarios", {})
    dbos_now = results["engines"].get("dbos", {}).get("scenarios", {})
    for name, after in now.items():
        prev = before.get(name)
        if prev is None:
            continue
        a, b = {**after, "engine": "ours"}, {**prev, "engine": "ours"}
        lines += [
            f"### {name}",
            "",
            "| metric | before | after | after/before |",
            "|---|---:|---:|---:|",
        ]
        for row in BEFORE_AFTER:
            get = _getter(row)
            va, vb = get(a), get(b)
            lines.append(f"| {_label(row)} | {_fmt(vb)} | {_fmt(va)} | {_ratio(va, vb)} |")
        db, da = dbos_before.get(name), dbos_now.get(name)
        if db and da:
            for row in ("throughput", "latency p50", "latency p99"):
                get = _getter(row)
                rb, ra = _quotient(get(b), get(db)), _quotient(get(a), get(da))
                lines.append(
                    f"| {_label(row)}: ours ÷ DBOS in the same run | {_fmt(rb)} | {_fmt(ra)} "
                    f"| {_ratio(ra, rb)} |"
                )
        lines.append("")
    return lines


def _kafka_section(k: dict[str, Any]) -> list[str]:
    sat, half = k["saturation"], k["half_rate"]
    lat, cpu, sat_lat = half["latency"], sat["cpu_us_per_msg"], sat["latency_at_saturation"]
    return [
        "## Raw Kafka round trip (the physical limit)",
        "",
        f"aiokafka producer (this process, {k['producer_config']}) -> topic `{k['topic']}` "
        f"({k['partitions']} partitions, {k['key_bytes']}-byte keys, {k['value_bytes']}-byte "
        f"values) -> consumer in a second process. Closed loop with at most "
        f"{k['closed_loop_window_msgs']:,} messages in flight.",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| round-trip throughput at saturation (msgs/s) | {_fmt(sat['throughput_msgs_per_s'])} |",
        f"| latency at saturation p50 / p99 (ms) | {_fmt(sat_lat.get('p50_ms'))}"
        f" / {_fmt(sat_lat.get('p99_ms'))} |",
        f"| half rate (msgs/s) | {_fmt(half['target_rate_msgs_per_s'])} |",
        f"| latency at half rate p50 / p95 / p99 (ms) | {_fmt(lat.get('p50_ms'))} / "
        f"{_fmt(lat.get('p95_ms'))} / {_fmt(lat.get('p99_ms'))} |",
        f"| CPU µs/msg producer / consumer / broker | {_fmt(cpu.get('producer'))} / "
        f"{_fmt(cpu.get('consumer'))} / {_fmt(cpu.get('kafka_broker'))} |",
        f"| noise: other processes' CPU in window (s) | "
        f"{_fmt(sat['cpu_seconds'].get('other_processes'))} |",
        "",
        "Theoretical saga ceiling of a Kafka-only engine = throughput above ÷ its Kafka "
        "messages per saga (row in the scenario tables once the adapter reports it).",
        "",
    ]


NOTES = """## Method and caveats

- Same machine, same run, engines one after another; every figure is from this run.
  Each scenario runs on a freshly set-up engine (`--reuse-engine` to share one), so sagas
  a scenario leaves unfinished cannot slow down the next (the 28c377a baseline reused one).
- Closed loop: a fixed number of sagas in flight; warm-up excluded; throughput = terminal
  sagas in the measured window / its length. CPU per saga = CPU seconds of the group's
  processes in that window (utime+stime from /proc) / sagas in it.
- Open loop: Poisson arrivals at half the measured throughput; latency = terminal seen by
  the driver - *scheduled* start (no coordinated omission); warm-up arrivals excluded.
- SQL per saga: counted over the whole open-loop phase (every saga in it starts and ends
  inside it). DBOS: SQLAlchemy `before_cursor_execute` / `commit` events on DBOS's system
  database engine inside each worker; the server column is the `pg_stat_database.xact_commit`
  delta of the bench database, which also sees what SQLAlchemy events do not (connection
  pre-ping round trips, autocommit statements).
- Every outcome is checked against the saga rule (all steps, or compensations k-1..1 in
  reverse for a failure at step k); invalid, error and lost sagas are counted above.
- Durability differs, and is measured rather than described: PostgreSQL fsyncs each
  commit by default (`synchronous_commit=on`, column DBOS); the column DBOS
  sync_commit=off sets `synchronous_commit=off` on DBOS's own database only, so commits
  return before their WAL fsync (a PostgreSQL crash may lose the last few hundred ms of
  commits, as a Kafka broker crash may). The Kafka broker acknowledges from the page cache
  (acks=all with one replica, no fsync). Restate runs with its defaults (read back from
  `restate-server --dump-config`, listed under Engines): the replicated loglet with one
  copy on this node's log-server, which acknowledges a record after its RocksDB WAL fsync.
- fsyncs/saga, over the open-loop phase: PostgreSQL's `pg_stat_wal.wal_sync` is
  server-wide (other databases on the shared server add to it: an upper bound); Restate's
  is its log-server's RocksDB WAL syncs; the Kafka broker does not fsync per message, so
  ours counts only its listener's PostgreSQL (see `bench/durability.py`).
- Restate: the saga is one handler of a Python `restate-sdk` service (Hypercorn, HTTP/2,
  2 processes like DBOS), every step and every compensation a `ctx.run` side effect,
  compensations in reverse as in Restate's saga guide; the driver calls it through the
  HTTP ingress and holds the request until the outcome. Its log-records row counts
  records committed to Restate's log (Bifrost), its analogue of Kafka messages.
- "CPU ms/saga, all the engine uses": engine processes + the services it runs on (ours:
  PostgreSQL for the listener, the Kafka broker, HTTP services; DBOS: PostgreSQL, HTTP
  services; Restate: HTTP services, its server is in "engine"). The broker and PostgreSQL
  are shared with other work on the machine, so those rows carry its noise.
- DBOS tuning: async workflows/steps via `DBOS.start_workflow_async`, 2 worker processes
  on one system database, 100 sagas in flight (50 per process), pool 20 per process. On
  2 cores one DBOS process is GIL-bound at roughly 80 simple sagas/s; a second process
  adds little (PostgreSQL competes for the same cores), a third none, and more than
  ~100 in flight per process lowers throughput. HTTP steps use aiohttp: httpx 0.28's pool
  fell from ~1,000 req/s at 10 concurrent requests to ~90 req/s at 100 in one process.
- Earlier runs stay in git: the full-mode run (40 s windows) of ours vs DBOS is
  `git show 25039c4:bench/RESULTS.md`; the quick run of the engine before this session's
  changes is `bench/results/baseline-28c377a.json` (the before/after table above).
- Noise: 2 cores shared with other engineers' test runs; the "other processes" row is the
  machine's busy CPU not used by any measured group. Treat differences under ~20 % as noise
  for quick runs.
"""


#: (column title, ROWS label prefix) of the summary table.
SUMMARY = (
    ("sagas/s", "throughput"),
    ("p50 ms", "latency p50"),
    ("p99 ms", "latency p99"),
    ("SQL stmts/saga", "SQL statements"),
    ("log msgs/saga", "log messages"),
    ("fsyncs/saga", "fsyncs"),
    ("CPU ms/saga (all)", "CPU ms/saga, all"),
    ("bad", "invalid"),
)


def _noise_share(r: dict[str, Any]) -> str:
    cpu = r["closed_loop"]["window"]["cpu_seconds"]
    busy = cpu.get("machine_busy") or 0.0
    return f"{cpu.get('other_processes', 0.0) / busy:.0%}" if busy else "n/a"


def _summary_section(results: dict[str, Any], names: list[str]) -> list[str]:
    titles = [t for t, _ in SUMMARY]
    lines = [
        "## Summary",
        "",
        "Throughput at saturation; latency at half that rate; per-saga counts over the "
        "open-loop phase. `noise` = share of the machine's busy CPU in the measured window "
        "used by processes outside the bench (other work on the shared machine): figures "
        "with a high share are depressed by it, and only ratios within one run compare.",
        "",
        "| scenario | engine | " + " | ".join(titles) + " | noise |",
        "|---|---|" + "---:|" * (len(titles) + 1),
    ]
    for scenario in names:
        for eng_name in [*TITLES, *(n for n in results["engines"] if n not in TITLES)]:
            r = results["engines"].get(eng_name, {}).get("scenarios", {}).get(scenario)
            if r is None:
                continue
            row = {**r, "engine": eng_name}
            cells = [_fmt(_getter(prefix)(row)) for _, prefix in SUMMARY]
            lines.append(
                f"| {scenario} | {TITLES.get(eng_name, eng_name)} | "
                + " | ".join(cells)
                + f" | {_noise_share(r)} |"
            )
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    m, v, mode = results["machine"], results["versions"], results["mode"]
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {results['date']}; mode: **{mode['name']}** (closed loop {mode['warmup']:g} s "
        f"warm-up + {mode['closed']:g} s; open loop {mode['open_warmup']:g} s + "
        f"{mode['open']:g} s; Kafka phases {mode['kafka_seconds']:g} s each)",
        f"- Machine: {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['cpu_model']}, "
        f"Linux {m['kernel']}; load average at start {m['loadavg_at_start'][0]:.2f}, "
        f"at end {m.get('loadavg_at_end', [0.0])[0]:.2f}",
        f"- Commit: {results.get('commit', 'unknown')}",
        *(
            [f"- Kafka: started by this run, warmed with {w:g} s of raw round trips first"]
            if (w := results.get("broker_warmup_s"))
            else []
        ),
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        "## Engines",
        "",
    ]
    for name, eng in results["engines"].items():
        if eng.get("status") == "failed":
            lines.append(f"- **{name}**: failed in this run: {eng.get('error')}")
        elif eng.get("status") != "ok":
            lines.append(f"- **{name}**: n/a (adapter not present)")
        else:
            cfg = ", ".join(f"{k}={val}" for k, val in eng["config"].items())
            lines.append(f"- **{name}**: {cfg}")
        for scenario, error in eng.get("failed_scenarios", {}).items():
            lines.append(f"  - **{scenario} failed in this run** (no figures): {error}")
    names: list[str] = []
    for eng in results["engines"].values():
        names += [n for n in eng.get("scenarios", {}) if n not in names]
        names += [n for n in eng.get("failed_scenarios", {}) if n not in names]
    lines += ["", *_summary_section(results, names), "## Scenarios", ""]
    kafka = results.get("kafka_limit")
    kafka_rate = kafka["saturation"]["throughput_msgs_per_s"] if kafka else None
    for name in names:
        lines += _scenario_table(name, results, kafka_rate)
    if kafka:
        lines += _kafka_section(kafka)
    lines += _baseline_section(results)
    return "\n".join([*lines, NOTES])


#: Sections other tools write into RESULTS.md (e.g. ``python -m bench longrun``) between
#: ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; a rewrite carries them over.
_KEPT_BLOCK = re.compile(r"<!-- (?P<name>[\w-]+):begin -->.*?<!-- (?P=name):end -->", re.S)


def kept_blocks(markdown: str) -> list[str]:
    """The marked sections of an existing RESULTS.md, in order."""
    return [m.group(0) for m in _KEPT_BLOCK.finditer(markdown)]


def write(results: dict[str, Any], out_dir: Path, md_path: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    kept = kept_blocks(md_path.read_text()) if md_path.exists() else []
    md_path.write_text("\n".join([render(results), *kept]) + ("\n" if kept else ""))
