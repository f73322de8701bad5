"""The bench report: one column per engine, ratios against ours, before/after table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import report


def _scenario(throughput: float, p50: float, msgs: float | None) -> dict[str, Any]:
    window = {
        "cpu_ms_per_saga": {"engine": 2.0, "postgres": 1.0, "kafka_broker": 0.5},
        "cpu_seconds": {"other_processes": 0.1},
    }
    whole = {
        "sql_statements_per_saga": 0.0,
        "sql_commits_per_saga": 0.0,
        "server_commits_per_saga": None,
        "kafka_messages_per_saga": msgs,
    }
    phase = {"invalid_outcomes": 0, "error_outcomes": 0, "not_terminated_after_drain": 0}
    return {
        "description": "3 in-process steps",
        "closed_loop": {
            "throughput_sagas_per_s": throughput,
            "concurrency": 100,
            "window": window,
            **phase,
        },
        "open_loop": {
            "latency": {"p50_ms": p50, "p95_ms": p50 * 2, "p99_ms": p50 * 3},
            "offered_rate_sagas_per_s": throughput / 2,
            "whole_phase": whole,
            **phase,
        },
        "engine_peak_rss_mib": 100.0,
    }


def _results() -> dict[str, Any]:
    engines = {
        "ours": _scenario(400.0, 10.0, 10.0),
        "dbos": _scenario(80.0, 20.0, None),
        "dbos-sync-off": _scenario(100.0, 16.0, None),
        "restate": _scenario(200.0, 12.0, 10.0),
    }
    return {
        "date": "2026-11-21 20:00:00 UTC",
        "commit": "abc1234",
        "mode": {
            "name": "quick",
            "warmup": 2,
            "closed": 8,
            "open_warmup": 1,
            "open": 7,
            "kafka_seconds": 5,
        },
        "machine": {
            "cores": 2,
            "ram_gib": 23.5,
            "cpu_model": "x",
            "kernel": "6",
            "loadavg_at_start": [1.0, 1.0, 1.0],
        },
        "versions": {"python": "3.11"},
        "engines": {
            name: {"status": "ok", "config": {}, "scenarios": {"simple": s}}
            for name, s in engines.items()
        },
    }


def _row(markdown: str, label: str) -> list[str]:
    line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| {label}"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_every_engine_has_a_column_and_ours_is_compared_with_each_other() -> None:
    md = report.render(_results())
    header = next(ln for ln in md.splitlines() if ln.startswith("| metric"))
    assert header == (
        "| metric | ours | DBOS | DBOS sync_commit=off | Restate | ours/DBOS | "
        "ours/DBOS sync_commit=off | ours/Restate |"
    )
    assert _row(md, "throughput at saturation") == [
        "400.0", "80.0", "100.0", "200.0", "5.00x", "4.00x", "2.00x"
    ]  # fmt: skip


def test_all_in_cpu_counts_only_the_services_an_engine_uses() -> None:
    md = report.render(_results())
    # ours: engine + PostgreSQL + broker; DBOS: engine + PostgreSQL; Restate: engine only
    assert _row(md, "CPU ms/saga, all the engine uses")[:4] == ["3.500", "3.000", "3.000", "2.000"]


def test_a_failed_engine_is_named_with_its_error() -> None:
    results = _results()
    results["engines"]["restate"] = {"status": "failed", "error": "RestateSetupError('npm')"}
    md = report.render(results)
    assert "- **restate**: failed in this run: RestateSetupError('npm')" in md
    assert "ours/Restate" not in md


def test_a_failed_scenario_is_marked_and_the_engines_other_scenarios_are_kept() -> None:
    results = _results()
    ours = results["engines"]["ours"]
    ours["failed_scenarios"] = {"complex": "RequestTimedOutError()"}
    md = report.render(results)
    assert "  - **complex failed in this run** (no figures): RequestTimedOutError()" in md
    assert "ours failed in this scenario: RequestTimedOutError()" in md
    assert _row(md, "throughput at saturation")[0] == "400.0", "simple is still reported"


def test_before_after_table_from_a_baseline_file(tmp_path: Path) -> None:
    before = _results()
    before["commit"] = "28c377a"
    before["engines"]["ours"]["scenarios"]["simple"] = _scenario(200.0, 20.0, 12.0)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(before))
    results = _results()
    results["baseline"] = report.load_baseline(path)
    md = report.render(results)
    section = md[md.index("## Our engine, before and after") :]
    assert "Before: commit 28c377a" in section
    assert _row(section, "throughput at saturation") == ["200.0", "400.0", "2.00x"]
    assert _row(section, "latency p50") == ["20.0", "10.0", "0.50x"]


def test_a_baseline_without_our_engine_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"engines": {"dbos": {}}}))
    with pytest.raises(KeyError):
        report.load_baseline(path)


def test_a_rewrite_keeps_the_sections_other_tools_wrote(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    block = "<!-- longrun:begin -->\n## Long run\n\n| a | b |\n<!-- longrun:end -->"
    md.write_text(f"# old results\n\n{block}\n")
    report.write(_results(), tmp_path / "out", md)
    text = md.read_text()
    assert text.startswith("# Benchmark results")
    assert "# old results" not in text
    assert text.count(block) == 1
    report.write(_results(), tmp_path / "out", md)  # and again: not duplicated
    assert md.read_text().count(block) == 1


def test_summary_has_one_row_per_engine_and_scenario_with_the_noise_share() -> None:
    results = _results()
    window = results["engines"]["ours"]["scenarios"]["simple"]["closed_loop"]["window"]
    window["cpu_seconds"] = {"other_processes": 1.0, "machine_busy": 4.0}
    md = report.render(results)
    summary = md[md.index("## Summary") : md.index("## Scenarios")]
    assert _row(summary, "simple | ours") == [
        "ours", "400.0", "10.0", "30.0", "0.000", "10.0", "n/a", "3.500", "0", "25%"
    ]  # fmt: skip
    assert summary.count("| simple |") == 4


def test_the_worst_second_of_the_open_loop_is_shown_with_the_cores_used_in_it() -> None:
    r = _scenario(100.0, 10.0, 3.0)
    r["open_loop"]["latency_by_second"] = [
        {"second": 0, "n": 50, "p99_ms": 40.0},
        {"second": 1, "n": 50, "p99_ms": 900.0},
        {"second": 2, "n": 50, "p99_ms": 50.0},
    ]
    r["open_loop"]["cpu_cores_by_second"] = [
        {"second": s, "cores": {"coordinator0": 0.5, "postgres": pg, "idle_group": 0.0}}
        for s, pg in ((0, 0.1), (1, 0.95), (2, 0.1))
    ]
    line = report._worst_second_cpu(r)
    assert line is not None
    assert line.startswith("worst second of the open loop: s1, p99 900 ms; cores used in it: ")
    assert "postgres 0.95, coordinator0 0.50 (median second s2, p99 50 ms:" in line
    assert "idle_group" not in line  # groups that used nothing are left out


def test_no_worst_second_line_without_per_second_cpu() -> None:
    r = _scenario(100.0, 10.0, 3.0)
    r["open_loop"]["latency_by_second"] = [{"second": 0, "n": 5, "p99_ms": 40.0}]
    assert report._worst_second_cpu(r) is None
