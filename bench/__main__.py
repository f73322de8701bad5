"""Benchmark CLI: ``python -m bench --quick`` (<= 3 min) or ``python -m bench --full``.

Engines are looked up by name in ``ENGINES`` (module path + factory). A factory takes
the ``--engine-opt NAME.KEY=VALUE`` options for its engine and returns an object that
implements ``bench.harness.Engine``. The pseudo-engine ``kafka`` runs the raw Kafka
round-trip limit (``bench.kafka_limit``). An engine whose module does not exist yet is
reported as "n/a".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PG_ADMIN = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
DEFAULT_KAFKA = "127.0.0.1:19092"

#: name -> "module:factory". The factory gets a dict of string options.
ENGINES: dict[str, str] = {
    "ours": "bench.ours_engine:create",
    "dbos": "bench.dbos_engine:create",
}


@dataclass(frozen=True)
class Mode:
    name: str
    warmup: float
    closed: float
    open_warmup: float
    open: float
    kafka_seconds: float


MODES = {
    "quick": Mode("quick", warmup=2, closed=8, open_warmup=1, open=7, kafka_seconds=5),
    "full": Mode("full", warmup=10, closed=40, open_warmup=5, open=40, kafka_seconds=30),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="short runs (default)")
    g.add_argument("--full", action="store_true", help=">= 30 s measured per phase")
    p.add_argument("--scenarios", default="simple,medium,complex")
    p.add_argument("--engines", default="ours,dbos,kafka")
    p.add_argument("--concurrency", type=int, default=None, help="in-flight sagas")
    p.add_argument(
        "--engine-opt",
        action="append",
        default=[],
        metavar="ENGINE.KEY=VALUE",
        help="engine option, e.g. dbos.processes=3 or dbos.concurrency=200",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    p.add_argument("--results-md", type=Path, default=Path(__file__).parent / "RESULTS.md")
    p.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN))
    p.add_argument(
        "--kafka-bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA)
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--scale", type=float, default=1.0, help="multiply every phase duration (development aid)"
    )
    return p.parse_args(argv)


def _engine_options(specs: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        name_key, _, value = spec.partition("=")
        name, _, key = name_key.partition(".")
        out.setdefault(name, {})[key] = value
    return out


def _load_factory(name: str) -> Callable[[dict[str, str]], Any] | None:
    target = ENGINES.get(name)
    if target is None:
        raise SystemExit(f"unknown engine {name!r}; known: {', '.join([*ENGINES, 'kafka'])}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    factory: Callable[[dict[str, str]], Any] = getattr(module, attr)
    return factory


async def _postgres_version(admin_url: str) -> str | None:
    import psycopg

    try:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as c:
            cur = await c.execute("SHOW server_version")
            row = await cur.fetchone()
            return None if row is None else str(row[0])
    except psycopg.Error:
        return None


async def _run_engine(
    name: str, args: argparse.Namespace, mode: Mode, services_url: str | None, services_pid: int
) -> dict[str, Any]:
    from bench import sysinfo
    from bench.harness import Driver, EngineContext, PhaseTimes, run_scenario
    from bench.scenarios import SCENARIOS

    factory = _load_factory(name)
    if factory is None:
        print(f"[bench] engine {name!r}: adapter not present -> n/a", file=sys.stderr)
        return {"status": "n/a"}
    options = _engine_options(args.engine_opt).get(name, {})
    concurrency = int(options.pop("concurrency", args.concurrency or 0)) or None
    engine = factory(options)
    concurrency = concurrency or int(getattr(engine, "default_concurrency", 100))
    driver = Driver(
        engine,
        {
            "postgres": sysinfo.postgres_pids,
            "kafka_broker": sysinfo.kafka_broker_pids,
            "http_services": lambda: [services_pid] if services_pid else [],
        },
        seed=args.seed,
    )
    ctx = EngineContext(
        scenarios=SCENARIOS,
        on_terminal=driver.on_terminal,
        http_base_url=services_url,
        postgres_admin_url=args.pg_admin_url,
        kafka_bootstrap=args.kafka_bootstrap,
        concurrency=concurrency,
        quick=mode.name == "quick",
    )
    closed = PhaseTimes(mode.warmup, mode.closed)
    opened = PhaseTimes(mode.open_warmup, mode.open)
    out: dict[str, Any] = {"status": "ok", "config": {}, "scenarios": {}}
    t = time.monotonic()
    await engine.setup(ctx)
    print(f"[bench] {name}: setup {time.monotonic() - t:.1f}s", file=sys.stderr)
    try:
        out["config"] = {**engine.describe(), "concurrency": concurrency}
        for scenario_name in args.scenarios.split(","):
            scenario = SCENARIOS[scenario_name]
            t = time.monotonic()
            res = await run_scenario(driver, scenario, concurrency, closed, opened)
            out["scenarios"][scenario_name] = res
            cl, op = res["closed_loop"], res["open_loop"]
            print(
                f"[bench] {name}/{scenario_name}: {cl['throughput_sagas_per_s']} sagas/s, "
                f"open p50/p99 {op['latency'].get('p50_ms')}/{op['latency'].get('p99_ms')} ms, "
                f"invalid {cl['invalid_outcomes'] + op['invalid_outcomes']} "
                f"({time.monotonic() - t:.0f}s)",
                file=sys.stderr,
            )
    finally:
        await engine.teardown()
    return out


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    from bench import report, sysinfo
    from bench.http_services import HttpServices
    from bench.scenarios import SCENARIOS

    mode = MODES["full" if args.full else "quick"]
    if args.scale != 1.0:
        k = args.scale
        mode = dataclasses.replace(
            mode,
            warmup=mode.warmup * k,
            closed=mode.closed * k,
            open_warmup=mode.open_warmup * k,
            open=mode.open * k,
            kafka_seconds=mode.kafka_seconds * k,
        )
    names = [n for n in args.engines.split(",") if n]
    for s in args.scenarios.split(","):
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": mode.__dict__,
        "machine": sysinfo.machine_info(),
        "versions": sysinfo.versions(await _postgres_version(args.pg_admin_url)),
        "engines": {},
    }
    services = HttpServices()
    await services.start()
    try:
        for name in names:
            if name != "kafka":
                results["engines"][name] = await _run_engine(
                    name, args, mode, services.base_url, services.pid or 0
                )
    finally:
        await services.stop()
    if "kafka" in names:
        from bench import kafka_limit

        results["kafka_limit"] = await kafka_limit.run(args.kafka_bootstrap, mode.kafka_seconds)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    report.write(results, args.out, args.results_md)
    return results


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    t = time.monotonic()
    asyncio.run(amain(args))
    print(f"[bench] done in {time.monotonic() - t:.0f}s -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
