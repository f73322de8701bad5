"""The bench driver loop: one scenario failing loses only that scenario's figures."""

from __future__ import annotations

import io
from typing import Any

import pytest

import bench.__main__ as cli
from bench import harness
from bench.progress import Progress
from bench.scenarios import SCENARIOS


class FakeEngine:
    name = "fake"
    default_concurrency = 5
    torn_down = 0

    async def setup(self, ctx: Any) -> None:
        return None

    async def teardown(self) -> None:
        FakeEngine.torn_down += 1

    def describe(self) -> dict[str, Any]:
        return {"kind": "fake"}


async def test_a_scenario_that_fails_mid_run_is_marked_and_the_others_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run_scenario(driver: Any, scenario: Any, *rest: Any, **kw: Any) -> dict[str, Any]:
        if scenario.name == "medium":
            raise RuntimeError("RequestTimedOutError from the broker")
        return {"closed_loop": {"throughput_sagas_per_s": 1.0, "invalid_outcomes": 0},
                "open_loop": {"latency": {}, "invalid_outcomes": 0}}  # fmt: skip

    FakeEngine.torn_down = 0
    monkeypatch.setattr(cli, "_load_factory", lambda name: lambda options: FakeEngine())
    monkeypatch.setattr(harness, "run_scenario", run_scenario)
    args = cli._parse(["--engines", "fake", "--scenarios", "simple,medium,complex"])
    out = await cli._run_engine(
        "fake", args, cli.MODES["quick"], None, 0, Progress(1.0, io.StringIO())
    )
    assert list(out["scenarios"]) == ["simple", "complex"], "finished scenarios are kept"
    assert "RequestTimedOutError" in out["failed_scenarios"]["medium"]
    assert out["status"] == "ok" and FakeEngine.torn_down == 3, "every engine torn down"


def test_open_rates_are_parsed_per_scenario_and_bad_ones_name_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = cli._parse(["--open-rate", "medium=100", "--open-rate", "simple=400.5"])
    assert args.open_rates == {"medium": 100.0, "simple": 400.5}
    assert cli._parse([]).open_rates == {}, "by default: half the closed loop's rate"
    for bad in ("medium", "medium=fast", "medium=0"):
        with pytest.raises(SystemExit):
            cli._parse(["--open-rate", bad])
        assert "--open-rate" in capsys.readouterr().err


async def test_a_fixed_open_rate_is_what_the_open_loop_offers() -> None:
    offered: list[float] = []

    class FakeDriver:
        engine = FakeEngine()
        label = ""

        async def closed_loop(self, *args: Any) -> dict[str, Any]:
            return {"throughput_sagas_per_s": 900.0}

        async def open_loop(self, scenario: Any, rate: float, times: Any) -> dict[str, Any]:
            offered.append(rate)
            return {}

    FakeEngine.pids = lambda self: []  # type: ignore[attr-defined]

    scenario = SCENARIOS["simple"]
    times = harness.PhaseTimes(0.0, 0.0)
    await harness.run_scenario(FakeDriver(), scenario, 5, times, times)  # type: ignore[arg-type]
    await harness.run_scenario(FakeDriver(), scenario, 5, times, times, open_rate=123.0)  # type: ignore[arg-type]
    assert offered == [450.0, 123.0]


async def test_a_broker_this_run_started_is_warmed_before_any_engine_is_measured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from bench import http_services, kafka_limit, report

    calls: list[str] = []

    class Services:
        base_url, pid = "http://services", 0

        async def start(self) -> None:
            return None

        async def stop(self) -> None:
            return None

    async def version(url: str) -> str:
        return "15"

    async def warm(bootstrap: str, seconds: float) -> dict[str, Any]:
        calls.append(f"warm {seconds * 2.4:.0f}s")
        return {}

    async def engine(name: str, *rest: Any) -> dict[str, Any]:
        calls.append(name)
        return {"status": "ok", "config": {}, "scenarios": {}}

    monkeypatch.setattr(http_services, "HttpServices", Services)
    monkeypatch.setattr(cli, "_postgres_version", version)
    monkeypatch.setattr(kafka_limit, "run", warm)
    monkeypatch.setattr(cli, "_run_engine", engine)
    args = cli._parse(["--engines", "ours", "--out", str(tmp_path), "--results-md",
                       str(tmp_path / "r.md")])  # fmt: skip
    progress = Progress(100.0, io.StringIO())
    results = await cli.amain(args, progress, warm_broker=True)
    assert calls == ["warm 40s", "ours"], "the broker is warm before the first engine"
    assert progress.planned == 140.0, "the warm-up counts in what is left"
    assert "warmed with 40 s of raw round trips" in report.render(results)
    calls.clear()
    cold = await cli.amain(args, Progress(1.0, io.StringIO()))
    assert calls == ["ours"] and "warmed" not in report.render(cold), "a running broker: as is"
