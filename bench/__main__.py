"""Benchmark CLI: ``python -m bench --quick`` (a few minutes) or ``python -m bench --full``.

It stands up what it needs, like ``make demo``: a Kafka broker when none answers at the
default address (``infra.kafka.up``; stopped again at the end if it started one), and
Restate's server from npm into the cache (``bench.restate_server``). PostgreSQL must
answer (``make bench`` runs ``infra/postgres-up.sh`` first). Progress goes to stderr.

Engines are looked up by name in ``ENGINES`` (module path + factory). A factory takes
the ``--engine-opt NAME.KEY=VALUE`` options for its engine and returns an object that
implements ``bench.harness.Engine``. The pseudo-engine ``kafka`` runs the raw Kafka
round-trip limit (``bench.kafka_limit``). An engine whose module does not exist yet is
reported as "n/a".

``python -m bench longrun ...`` runs the long-run measurement of bounded state instead
(``bench.longrun``: RSS over 200,000 sagas with and without retention, restart times of
both table stores); it is not part of the quick or full bench.
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

from bench.progress import Progress
from infra.kafka import BrokerConfig

DEFAULT_PG_ADMIN = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"

#: name -> "module:factory". The factory gets a dict of string options.
ENGINES: dict[str, str] = {
    "ours": "bench.ours_engine:create",
    "dbos": "bench.dbos_engine:create",
    "dbos-sync-off": "bench.dbos_engine:create_sync_off",
    "restate": "bench.restate_engine:create",
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
    p.add_argument("--engines", default="ours,dbos,dbos-sync-off,restate,kafka")
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
        "--kafka-bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or BrokerConfig().bootstrap,
        help="default: the project's local broker (infra.kafka), started if none answers",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--reuse-engine",
        action="store_true",
        help="run all scenarios on one engine instance (default: a fresh one per scenario)",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="results.json of an earlier run (e.g. the engine before a change): RESULTS.md "
        "gets a before/after table for our engine",
    )
    p.add_argument(
        "--scale", type=float, default=1.0, help="multiply every phase duration (development aid)"
    )
    p.add_argument(
        "--open-rate",
        action="append",
        default=[],
        metavar="SCENARIO=RATE",
        help="offer this many sagas/s in a scenario's open loop instead of half the "
        "closed loop's rate: latency of two builds compared at the same load",
    )
    args = p.parse_args(argv)
    args.open_rates = _open_rates(p, args.open_rate)
    return args


def _open_rates(p: argparse.ArgumentParser, specs: list[str]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for spec in specs:
        scenario, _, rate = spec.partition("=")
        try:
            rates[scenario] = float(rate)
        except ValueError:
            p.error(f"--open-rate {spec!r}: expected SCENARIO=RATE, e.g. medium=100")
        if rates[scenario] <= 0:
            p.error(f"--open-rate {spec!r}: the rate must be above 0 sagas/s")
    return rates


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
    name: str,
    args: argparse.Namespace,
    mode: Mode,
    services_url: str | None,
    services_pid: int,
    progress: Progress,
) -> dict[str, Any]:
    from bench import sysinfo
    from bench.harness import Driver, EngineContext, PhaseTimes, run_scenario
    from bench.scenarios import SCENARIOS

    factory = _load_factory(name)
    if factory is None:
        progress.note(f"engine {name!r}: adapter not present -> n/a")
        return {"status": "n/a"}
    options = _engine_options(args.engine_opt).get(name, {})
    concurrency_opt = int(options.pop("concurrency", args.concurrency or 0)) or None
    closed = PhaseTimes(mode.warmup, mode.closed)
    opened = PhaseTimes(mode.open_warmup, mode.open)
    out: dict[str, Any] = {"status": "ok", "config": {}, "scenarios": {}}
    engine: Any = None
    for index, scenario_name in enumerate(args.scenarios.split(",")):
        t = time.monotonic()
        try:
            # A fresh engine per scenario (unless --reuse-engine): sagas one scenario
            # leaves unfinished (e.g. after an overload) must not slow down or fail the next.
            if engine is None or not args.reuse_engine:
                engine = factory(dict(options))
                concurrency = concurrency_opt or int(getattr(engine, "default_concurrency", 100))
                driver = Driver(
                    engine,
                    {
                        "postgres": sysinfo.postgres_pids,
                        "kafka_broker": sysinfo.kafka_broker_pids,
                        "http_services": lambda: [services_pid] if services_pid else [],
                    },
                    seed=args.seed + index,
                    progress=progress,
                )
                ctx = EngineContext(
                    scenarios=SCENARIOS,
                    on_terminal=driver.on_terminal,
                    http_base_url=services_url,
                    postgres_admin_url=args.pg_admin_url,
                    kafka_bootstrap=args.kafka_bootstrap,
                    concurrency=concurrency,
                    quick=mode.name == "quick",
                    logs=args.out / "logs" / f"{name}-{scenario_name}",
                )
                progress.note(f"{name}: setting up for {scenario_name} ...")
                await engine.setup(ctx)
                progress.note(f"{name}: setup {time.monotonic() - t:.1f}s")
                out["config"] = {**engine.describe(), "concurrency": concurrency}
            res = await run_scenario(
                driver,
                SCENARIOS[scenario_name],
                concurrency,
                closed,
                opened,
                open_rate=args.open_rates.get(scenario_name),
            )
        except (KeyboardInterrupt, asyncio.CancelledError):
            if engine is not None:
                await _teardown_quietly(engine, name, progress)
            raise
        except Exception as exc:
            # only this scenario is lost: the engine's finished scenarios stay in the
            # results, and the next scenario gets a fresh engine
            progress.note(f"{name}/{scenario_name}: FAILED ({exc!r}); going on")
            out["failed_scenarios"] = {
                **out.get("failed_scenarios", {}),
                scenario_name: repr(exc)[:2000],
            }
            if engine is not None:
                await _teardown_quietly(engine, name, progress)
            engine = None
            continue
        if not args.reuse_engine:
            await engine.teardown()
        out["scenarios"][scenario_name] = res
        cl, op = res["closed_loop"], res["open_loop"]
        progress.note(
            f"{name}/{scenario_name}: {cl['throughput_sagas_per_s']} sagas/s, "
            f"open p50/p99 {op['latency'].get('p50_ms')}/{op['latency'].get('p99_ms')} ms, "
            f"invalid {cl['invalid_outcomes'] + op['invalid_outcomes']} "
            f"({time.monotonic() - t:.0f}s)"
        )
    if args.reuse_engine and engine is not None:
        await engine.teardown()
    out["config"]["engine_per_scenario"] = "reused" if args.reuse_engine else "fresh"
    return out


async def _teardown_quietly(engine: Any, name: str, progress: Progress) -> None:
    """Tear down an engine after a failure; a second failure is reported, not raised."""
    try:
        await engine.teardown()
    except Exception as exc:
        progress.note(f"{name}: teardown after the failure failed too ({exc!r})")


class BenchSetupError(RuntimeError):
    """A service the bench needs is missing; the message names the fix."""


def _scaled(mode: Mode, k: float) -> Mode:
    if k == 1.0:
        return mode
    return dataclasses.replace(
        mode,
        warmup=mode.warmup * k,
        closed=mode.closed * k,
        open_warmup=mode.open_warmup * k,
        open=mode.open * k,
        kafka_seconds=mode.kafka_seconds * k,
    )


def _planned_seconds(mode: Mode, names: list[str], scenarios: list[str]) -> float:
    """Seconds of measured phases (warm-ups included) the run will take at least."""
    from bench import kafka_limit

    per_scenario = mode.warmup + mode.closed + mode.open_warmup + mode.open
    engines = [n for n in names if n != "kafka"]
    kafka = kafka_limit.planned_seconds(mode.kafka_seconds) if "kafka" in names else 0.0
    return len(engines) * len(scenarios) * per_scenario + kafka


def _git_commit() -> str:
    import subprocess

    root = str(Path(__file__).resolve().parents[1])

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


#: seconds of raw round trips a broker this run started gets before any engine: a fresh
#: JVM spends several times the CPU per message until its hot paths are compiled, and
#: the first engine measured would pay for it (seen: 5x the broker CPU per saga)
BROKER_WARMUP_S = 40.0


async def amain(
    args: argparse.Namespace,
    progress: Progress,
    baseline: dict[str, Any] | None = None,
    *,
    warm_broker: bool = False,
) -> dict[str, Any]:
    from bench import report, sysinfo
    from bench.http_services import HttpServices

    mode = _scaled(MODES["full" if args.full else "quick"], args.scale)
    names = [n for n in args.engines.split(",") if n]
    pg_version = await _postgres_version(args.pg_admin_url)
    if pg_version is None and any(n != "kafka" for n in names):
        raise BenchSetupError(
            f"PostgreSQL does not answer at {args.pg_admin_url}: run `make postgres-up` "
            "(infra/postgres-up.sh), or pass --pg-admin-url"
        )
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": _git_commit(),
        "mode": mode.__dict__,
        "machine": sysinfo.machine_info(),
        "versions": sysinfo.versions(pg_version),
        "engines": {},
    }
    if warm_broker:
        from bench import kafka_limit

        warmup = BROKER_WARMUP_S * args.scale
        seconds = kafka_limit.planned_seconds(warmup / 2.4)
        progress.planned += seconds  # known only now: whether this run started the broker
        async with progress.phase("warming the broker this run started", seconds, None):
            await kafka_limit.run(args.kafka_bootstrap, warmup / 2.4)
        results["broker_warmup_s"] = round(seconds, 1)
    services = HttpServices()
    await services.start()
    try:
        for name in names:
            if name == "kafka":
                continue
            try:
                results["engines"][name] = await _run_engine(
                    name, args, mode, services.base_url, services.pid or 0, progress
                )
            except Exception as exc:  # one engine failing must not lose the others' figures
                progress.note(f"{name}: FAILED ({exc!r}); going on with the next engine")
                results["engines"][name] = {"status": "failed", "error": repr(exc)[:2000]}
            report.write(results, args.out, args.results_md)  # a late crash loses nothing
    finally:
        await services.stop()
    if "kafka" in names:
        from bench import kafka_limit

        seconds = kafka_limit.planned_seconds(mode.kafka_seconds)
        async with progress.phase("raw Kafka round trip", seconds, None):
            results["kafka_limit"] = await kafka_limit.run(args.kafka_bootstrap, mode.kafka_seconds)
    if baseline is not None:
        results["baseline"] = baseline
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    report.write(results, args.out, args.results_md)
    return results


def _stand_up(args: argparse.Namespace, names: list[str], progress: Progress) -> bool:
    """Make Kafka answer and Restate's server be installed. Returns: we started Kafka."""
    started = False
    if "ours" in names or "kafka" in names:
        from infra import kafka

        if (
            args.kafka_bootstrap == kafka.BrokerConfig().bootstrap
            and not kafka.external_bootstrap()
        ):
            progress.note(f"Kafka: checking {args.kafka_bootstrap} (starting a broker if none) ...")
            bootstrap, started = kafka.up()
            progress.note(f"Kafka at {bootstrap}: " + ("started for this run" if started else "up"))
        else:
            kafka.wait_ready(args.kafka_bootstrap, timeout=30)
    if "restate" in names:
        from bench import restate_server

        progress.note(f"Restate server: {restate_server.ensure_installed()}")
    return started


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["longrun"]:
        from bench import longrun

        return longrun.main(argv[1:])
    from bench.restate_server import RestateSetupError
    from bench.scenarios import SCENARIOS
    from infra.kafka import KafkaProvisionError

    args = _parse(argv)
    names = [n for n in args.engines.split(",") if n]
    scenarios = args.scenarios.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"error: unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    for n in names:
        if n != "kafka" and n not in ENGINES:
            raise SystemExit(
                f"error: unknown engine {n!r}; known: {', '.join([*ENGINES, 'kafka'])}"
            )
    baseline = None
    if args.baseline is not None:
        from bench.report import load_baseline

        try:
            baseline = load_baseline(args.baseline)
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(
                f"error: --baseline {args.baseline}: not a bench results.json with our "
                f"engine's figures ({exc!r})"
            ) from None
    mode = _scaled(MODES["full" if args.full else "quick"], args.scale)
    planned = _planned_seconds(mode, names, scenarios)
    progress = Progress(planned)
    progress.note(
        f"{mode.name} mode: engines {', '.join(names)}; scenarios {', '.join(scenarios)}; "
        f"measured phases {planned / 60:.1f} min (+ setup and drains)"
    )
    t = time.monotonic()
    started_kafka = False
    try:
        started_kafka = _stand_up(args, names, progress)
        warm = started_kafka and "ours" in names
        asyncio.run(amain(args, progress, baseline, warm_broker=warm))
    except (KafkaProvisionError, RestateSetupError, BenchSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted; finished engines are in {args.out}", file=sys.stderr)
        return 130
    finally:
        if started_kafka:
            from infra import kafka

            kafka.down()
            progress.note("Kafka: stopped the broker this run started")
    progress.note(f"done in {time.monotonic() - t:.0f}s -> {args.out} and {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
