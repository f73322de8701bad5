"""The bench driver loop: one scenario failing loses only that scenario's figures."""

from __future__ import annotations

import io
from typing import Any

import pytest

import bench.__main__ as cli
from bench import harness
from bench.progress import Progress


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
