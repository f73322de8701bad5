"""Long-run measurement of bounded state (issue #11): ``python -m bench longrun``.

Not part of the quick/full bench. Coordinator worker processes (``python -m coordinator
worker``, memory store) on the broker at ``--kafka-bootstrap``:

* **rss**: two workers at once, one with a short retention (``--retention`` s full
  record, then ``--dedupe`` s marker, then deleted) and one with retention off, each
  running ``--sagas`` simple sagas (3 inline steps, ``bench_simple``), ``--window`` in
  flight; each worker's RSS is sampled every ``--every`` completed sagas. Running both at
  once gives both curves the same machine conditions. Flat means: the last sample within
  1.2x of the sample at ``2 * --every``. ``--budget`` caps each run's seconds.
* **restore**: the worker without retention (or, alone, one filled with ``--retained``
  sagas) gets ``--inflight`` sagas waiting on a remote step (a pending deadline each), is
  SIGKILLed and started again once per ``--stores`` entry, each holding the same sagas:
  seconds from the new process's start to its imports, group join, table restored,
  deadline index rebuilt, and a probe saga sent at the restart completed; changelog
  records replayed (from Faust's recovery log).

Figures go to ``--out``/longrun.json and into ``--results-md`` between the markers
``<!-- longrun:begin -->`` and ``<!-- longrun:end -->`` (only that block is replaced).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.ours_sagas import LOCAL_INLINE, BenchInput, StepOut, _local_saga
from coordinator import CoordinatorSettings, Saga, SagaClient, Service, Step, remote
from coordinator.events import DEFAULT_BOOTSTRAP_SERVERS
from infra.processes import ROOT, Process

BEGIN, END = "<!-- longrun:begin -->", "<!-- longrun:end -->"
REBUILT = re.compile(r"deadline index rebuilt: (\d+) sagas")

#: a remote service nobody serves: its step waits on a deadline an hour away
NOBODY = Service("longrun-nobody", remote=True)


SAGAS = [
    _local_saga("bench_simple", 3, LOCAL_INLINE),
    Saga("longrun_waiting", input=BenchInput, steps=[
        Step("wait", service=NOBODY, action=remote(output=StepOut), timeout=timedelta(hours=1)),
    ]),
]  # fmt: skip


# -- one worker process ---------------------------------------------------------------


@dataclass
class Worker:
    """One coordinator worker process with its own app id, topics and data directory."""

    bootstrap: str
    prefix: str
    datadir: Path
    store: str = "memory://"
    retention: str = "none"
    dedupe: str = "3600"
    partitions: int = 8
    proc: Process | None = None
    started_at: float = 0.0

    @property
    def settings(self) -> CoordinatorSettings:
        return CoordinatorSettings(
            kafka_bootstrap_servers=self.bootstrap,
            topic_prefix=self.prefix,
            app_id=f"{self.prefix}-coordinator",
            partitions=self.partitions,
            web_enabled=False,
        )

    def start(self, name: str) -> None:
        env = {
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "SAGA_TOPIC_PREFIX": self.prefix,
            "SAGA_APP_ID": f"{self.prefix}-coordinator",
            "SAGA_PARTITIONS": str(self.partitions),
            "SAGA_DEFINITIONS": "bench.longrun:SAGAS",
            "SAGA_WEB_ENABLED": "false",
            "SAGA_DATADIR": str(self.datadir / "faust"),
            "SAGA_STORE": self.store,
            "SAGA_RETENTION": self.retention,
            "SAGA_DEDUPE_RETENTION": self.dedupe,
        }
        if self.proc is not None:
            self.proc.close()  # the previous run's (its log file stays)
        self.started_at = time.monotonic()
        self.proc = Process(
            ["-m", "coordinator", "worker", "-l", "info"],
            env=env,
            name=name,
            log=self.datadir / f"{name}.log",
        ).start()

    def log(self) -> str:
        return self.proc.output() if self.proc is not None else ""

    async def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = 600) -> re.Match[str]:
        """Wait until the log matches ``pattern`` (after the process started)."""
        assert self.proc is not None
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        return await self.proc.output_ready(rx, timeout, interval=0.05)

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(60)


# -- driving sagas ---------------------------------------------------------------------


class Driver:
    """Starts sagas with ``SagaClient`` (pipelined) and counts terminal lifecycle events."""

    TERMINAL = (b'"saga_completed"', b'"saga_compensated"', b'"saga_compensation_failed"')

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        self.client = SagaClient(settings)
        self.consumer = AIOKafkaConsumer(
            settings.topics.lifecycle,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=20,
        )
        self.done: set[str] = set()
        self.started_steps: set[str] = set()
        self.progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Driver:
        await self.client.__aenter__()
        await self.consumer.start()
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()
        await self.client.__aexit__(None, None, None)

    async def _follow(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            for records in batch.values():
                for record in records:
                    # one event or a batch of one saga's events: both carry "saga_id" on top
                    value = record.value
                    if any(t in value for t in self.TERMINAL):
                        self.done.add(json.loads(value)["saga_id"])
                    elif b'"step_started"' in value:
                        self.started_steps.add(json.loads(value)["saga_id"])
            if batch:
                self.progress.set()

    async def start(self, saga_type: str, saga_id: str) -> None:
        await self.client.start(saga_type, BenchInput(scenario="simple"), saga_id=saga_id,
                                wait=False)  # fmt: skip

    async def until(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
            self.progress.clear()
            await self.client.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), 1.0)

    async def run(
        self,
        ids: list[str],
        saga_type: str,
        window: int,
        on_done: Any = None,
        stop: Any = None,
        granularity: int = 1,
    ) -> int:
        """Start ``ids`` keeping at most ``window`` unfinished; ``on_done(n)`` as they end.

        Once ``stop()`` says so, it starts only up to the next multiple of ``granularity``;
        returns how many it started (all of them finished).
        """
        base, sent = len(self.done), 0
        while True:
            finished = len(self.done) - base
            if on_done is not None:
                on_done(finished)
            if stop is not None and sent < len(ids) and stop():
                ids = ids[: -(-sent // granularity) * granularity]
                stop = None
            if finished >= len(ids):
                return len(ids)
            while sent < len(ids) and sent - finished < window:
                await self.start(saga_type, ids[sent])
                sent += 1
            await self.client.flush()
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), 1.0)


# -- part 1: RSS over a long run ---------------------------------------------------------


@dataclass
class LongRun:
    """One worker of the RSS part, with its driver and its RSS samples."""

    label: str
    worker: Worker
    samples: list[dict[str, Any]] = field(default_factory=list)
    planned: int = 0
    ran: int = 0
    elapsed: float = 0.0
    driver: Driver | None = None


def _rss_worker(args: argparse.Namespace, retention: bool, tmp: Path) -> LongRun:
    label = f"{args.retention:g} s + dedupe {args.dedupe:g} s" if retention else "off"
    (tmp / label[:3]).mkdir()
    w = Worker(
        args.kafka_bootstrap,
        f"lr{int(time.time())}{'r' if retention else 'k'}",
        tmp / label[:3],
        retention=str(args.retention) if retention else "none",
        dedupe=str(args.dedupe),
        partitions=args.partitions,
    )
    return LongRun(label, w, planned=args.sagas if retention else args.off_sagas or args.sagas)


async def _drive(run: LongRun, args: argparse.Namespace, note: Any) -> None:
    """Run ``args.sagas`` sagas on ``run.worker``, sampling its RSS every ``args.every``."""
    w, d = run.worker, run.driver
    assert d is not None
    t0 = time.monotonic()
    next_mark = args.every

    def on_done(n: int) -> None:
        nonlocal next_mark
        while n >= next_mark:
            sample = {"sagas": next_mark, "rss_mib": round(w.rss_mib(), 1),
                      "elapsed_s": round(time.monotonic() - t0, 1)}  # fmt: skip
            run.samples.append(sample)
            note(f"rss [{run.label}] {next_mark:>7} sagas: {sample['rss_mib']:.1f} MiB "
                 f"({sample['elapsed_s']:.0f} s)")  # fmt: skip
            next_mark += args.every

    def out_of_time() -> bool:
        return bool(args.budget) and time.monotonic() - t0 > args.budget

    ids = [f"{w.prefix}-{i}" for i in range(run.planned)]
    run.ran = await d.run(ids, "bench_simple", args.window, on_done, stop=out_of_time,
                          granularity=args.every)  # fmt: skip
    run.elapsed = time.monotonic() - t0
    if run.ran < run.planned:
        note(f"rss [{run.label}]: time budget ({args.budget:g} s) over after {run.ran} sagas")


def _rss_result(run: LongRun, args: argparse.Namespace) -> dict[str, Any]:
    base = next((s["rss_mib"] for s in run.samples if s["sagas"] == 2 * args.every), None)
    last = run.samples[-1]["rss_mib"] if run.samples else None
    return {
        "retention": run.label,
        "sagas": run.ran,
        "planned": run.planned,
        "elapsed_s": round(run.elapsed, 1),
        "rate_per_s": round(run.ran / run.elapsed, 1) if run.elapsed else None,
        "samples": run.samples,
        "last_over_second": round(last / base, 3) if base and last else None,
    }


async def rss_and_restore(args: argparse.Namespace, note: Any) -> dict[str, Any]:
    """Both RSS runs at once (same machine conditions for both curves); the restore part
    on the state the run without retention left, if asked for, as soon as that run ends
    (``--off-sagas`` may end it early: the retention run goes on meanwhile)."""
    tmp = Path(tempfile.mkdtemp(prefix="longrun-"))
    runs = [_rss_worker(args, True, tmp), _rss_worker(args, False, tmp)]
    out: dict[str, Any] = {"rss": [], "restore": []}
    try:
        for run in runs:
            run.worker.start("worker")
        for run in runs:
            await run.worker.wait_for("coordinator ready", timeout=180)
            run.driver = await Driver(run.worker.settings).__aenter__()

        async def off_then_restore() -> None:
            kept = runs[1]
            await _drive(kept, args, note)
            if "restore" in args.parts:
                assert kept.driver is not None
                out["restore"] = await _restores(kept.worker, kept.driver, kept.ran, args, note)

        await asyncio.gather(_drive(runs[0], args, note), off_then_restore())
        out["rss"] = [_rss_result(run, args) for run in runs]
    finally:
        for run in runs:
            run.worker.stop()
            if run.driver is not None:
                await run.driver.__aexit__(None, None, None)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- part 2: restore time -----------------------------------------------------------------


async def restore_only(args: argparse.Namespace, note: Any) -> list[dict[str, Any]]:
    """Fill a worker with ``--retained`` finished sagas, then measure its restarts."""
    tmp = Path(tempfile.mkdtemp(prefix="longrun-restore-"))
    w = Worker(args.kafka_bootstrap, f"lr{int(time.time())}s", tmp, store="memory://",
               partitions=args.partitions)  # fmt: skip
    try:
        w.start("filling")
        await w.wait_for("coordinator ready", timeout=180)
        async with Driver(w.settings) as d:
            note(f"restore: filling {args.retained} finished sagas ...")
            await d.run([f"{w.prefix}-f{i}" for i in range(args.retained)], "bench_simple",
                        args.window)  # fmt: skip
            return await _restores(w, d, args.retained, args, note)
    finally:
        w.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


async def _restores(
    w: Worker, d: Driver, retained: int, args: argparse.Namespace, note: Any
) -> list[dict[str, Any]]:
    """Add ``--inflight`` waiting sagas to ``w``, SIGKILL it, restart it once per store.

    Every restart holds the same sagas (same app id, same changelog): ``memory://``
    restores from the changelog as every memory-store restart does; the first
    ``rocksdb://`` start has an empty disk (a new machine: the whole changelog too); the
    next ``rocksdb://`` restarts on the disk the previous one left (only what changed).
    """
    note(f"restore: {retained} finished + {args.inflight} in flight ...")
    waiting = [f"{w.prefix}-w{i}" for i in range(args.inflight)]
    for saga_id in waiting:
        await d.start("longrun_waiting", saga_id)
    await d.until(lambda: d.started_steps.issuperset(waiting), 900, "in-flight sagas")
    w.kill()
    results: list[dict[str, Any]] = []
    seen_disk = False
    for n, store in enumerate(args.stores.split(",")):
        w.store = store
        disk = _du(w.datadir / "faust") if store.startswith("rocksdb") else 0
        case = store
        if store.startswith("rocksdb"):
            case = f"{store} (its own disk)" if seen_disk else f"{store} (empty disk)"
            seen_disk = True
        result = await _restart(w, d, n, note)
        results.append({"store": case, "retained": retained, "inflight": args.inflight,
                        "disk_mib": round(disk / 2**20, 1), **result})  # fmt: skip
        note(f"restore [{case}]: {results[-1]}")
        w.kill()
    return results


async def _restart(w: Worker, d: Driver, n: int, note: Any) -> dict[str, Any]:
    w.start(f"restart-{n}-{w.store.split(':')[0]}")
    probe = f"{w.prefix}-probe{n}"
    await d.start("bench_simple", probe)
    await d.until(lambda: probe in d.done, 1800, f"the probe saga after restart {n}")
    ready_s = time.monotonic() - w.started_at
    match = await w.wait_for(REBUILT, timeout=60)
    return {
        "rss_after_restore_mib": round(w.rss_mib(), 1),
        "indexed": int(match.group(1)),
        "changelog_records_replayed": changelog_replayed(w.log()),
        **restart_phases(w.log(), _wall(w)),
        "probe_completed_s": round(ready_s, 2),
    }


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _wall(w: Worker) -> float:
    """The wall-clock time the worker process was started (for log timestamps)."""
    return time.time() - (time.monotonic() - w.started_at)


#: log lines that end the phases of a restart, in order (Faust's and ours)
PHASES = {
    "python_start_s": r"\[\^Worker\]: Starting",
    "group_joined_s": r"Joined group",
    "table_restored_s": r"\[\^---Recovery\]: Recovery complete",
    "index_rebuilt_s": r"deadline index rebuilt",
}
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]", re.M)


def restart_phases(log: str, started_wall: float) -> dict[str, float | None]:
    """Seconds from the process start to the first log line of each phase's end."""
    out: dict[str, float | None] = {}
    for name, pattern in PHASES.items():
        found = re.search(pattern, log)
        out[name] = None
        if found is not None:
            line_start = log.rfind("\n", 0, found.start()) + 1
            stamp = STAMP.match(log, line_start)
            if stamp is not None:
                at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").astimezone()
                out[name] = round(at.timestamp() + int(stamp.group(2)) / 1000 - started_wall, 2)
    return out


def changelog_replayed(log: str) -> int | None:
    """Changelog records the restart read: sum of (highwater - start) from Faust's tables."""
    highwater = _faust_table(log, "Highwater - Active")
    starts = _faust_table(log, "Reading Starts At - Active")
    if not highwater:
        return None
    return sum(max(0, hw - max(starts.get(p, -1), -1)) for p, hw in highwater.items())


def _faust_table(log: str, title: str) -> dict[int, int]:
    at = log.find(title)
    if at < 0:
        return {}
    rows: dict[int, int] = {}
    for line in log[at:].splitlines()[3:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].isdigit():
            break
        rows[int(cells[1])] = int(cells[2])
    return rows


# -- report ---------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    lines = [BEGIN, "", "## Long run: bounded state (issue #11)", ""]
    lines += [f"- Date: {results['date']}; commit {results['commit']}; {results['machine']}"]
    rss = results.get("rss", [])
    if rss:
        lines += ["", "### RSS of one coordinator worker (memory store), simple sagas", ""]
        for r in rss:
            cut = (
                ""
                if r["sagas"] >= r.get("planned", r["sagas"])
                else (f" (of {r['planned']:,} planned: the time budget ran out)")
            )
            lines.append(
                f"- retention {r['retention']}: {r['sagas']:,} sagas{cut} in "
                f"{r['elapsed_s']:.0f} s ({r['rate_per_s']:.0f}/s); last sample / sample at "
                f"{2 * results['every']:,} = {r['last_over_second']}"
            )
        marks = sorted({s["sagas"] for r in rss for s in r["samples"]})
        lines += ["", "| sagas | " + " | ".join(f"RSS MiB, retention {r['retention']}"
                                               for r in rss) + " |"]  # fmt: skip
        lines += ["|---:|" + "---:|" * len(rss)]
        for m in marks:
            cells = []
            for r in rss:
                s = next((s for s in r["samples"] if s["sagas"] == m), None)
                cells.append(f"{s['rss_mib']:.1f}" if s else "")
            lines.append(f"| {m:,} | " + " | ".join(cells) + " |")
    restore = results.get("restore", [])
    if restore:
        lines += ["", "### Restart after SIGKILL: what is restored, and how long it takes", ""]
        lines += [
            "| store | finished (retained) | in flight | RSS after restore (MiB) | table on disk "
            "(MiB) | changelog records replayed | imports done (s) | group joined (s) | "
            "table restored (s) | deadline index rebuilt (s) | probe saga done (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in restore:
            lines.append(
                f"| {r['store']} | {r['retained']:,} | {r['inflight']:,} | "
                f"{r['rss_after_restore_mib']} | {r['disk_mib'] or ''} | "
                f"{r['changelog_records_replayed']:,} | {r['python_start_s']} | "
                f"{r['group_joined_s']} | {r['table_restored_s']} | "
                f"{r['index_rebuilt_s']} ({r['indexed']:,} sagas) | {r['probe_completed_s']} |"
            )
        lines += [
            "",
            "Seconds from the restarted process's start. The deadline index counts the sagas "
            "in flight (their deadlines); finished sagas wait in the expiry queue instead "
            "(none in this worker: its retention is off).",
        ]
    if results.get("notes"):
        lines += ["", *(f"- {n}" for n in results["notes"])]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_section(md_path: Path, section: str) -> None:
    """Replace (or append) the long-run block of ``md_path``; nothing else changes."""
    text = md_path.read_text() if md_path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + (("\n" + tail) if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    md_path.write_text(text)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
    cores = os.cpu_count()
    load = os.getloadavg()[0]
    return f"{cores} cores, load average {load:.2f} at start"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench longrun", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--parts", default="rss,restore", help="rss, restore or both")
    p.add_argument("--sagas", type=int, default=200_000)
    p.add_argument(
        "--off-sagas",
        type=int,
        default=0,
        help="sagas of the run without retention (0: --sagas); then the restore part starts",
    )
    p.add_argument("--every", type=int, default=20_000, help="RSS sample interval (sagas)")
    p.add_argument("--window", type=int, default=400, help="sagas in flight while driving")
    p.add_argument("--retention", type=float, default=5.0, help="SAGA_RETENTION, seconds")
    p.add_argument("--dedupe", type=float, default=10.0, help="SAGA_DEDUPE_RETENTION, seconds")
    p.add_argument(
        "--retained",
        type=int,
        default=20_000,
        help="finished sagas for --parts restore alone (with rss: that run's)",
    )
    p.add_argument("--inflight", type=int, default=2_000, help="waiting sagas (restore)")
    p.add_argument(
        "--stores",
        default="memory://,rocksdb://,rocksdb://",
        help="restarts, in order (a second rocksdb:// restarts on the first one's disk)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=0,
        help="seconds per RSS run; then it stops at the next sample (0: none)",
    )
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--keep", action="store_true", help="keep the workers' data and logs")
    p.add_argument(
        "--kafka-bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP_SERVERS),
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    p.add_argument("--results-md", type=Path, default=Path(__file__).parent / "RESULTS.md")
    return p.parse_args(argv)  # fmt: skip


def _note(msg: str) -> None:
    print(f"[longrun {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "commit": _commit(),
        "machine": _machine(),
        "every": args.every,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rss": [],
        "restore": [],
        "notes": [],
    }
    if "rss" in parts:
        results.update(await rss_and_restore(args, _note))
    elif "restore" in parts:
        results["restore"] = await restore_only(args, _note)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for; write longrun.json and the RESULTS.md section."""
    from infra import kafka

    args = _parse(argv)
    started = False
    if args.kafka_bootstrap == kafka.BrokerConfig().bootstrap and not kafka.external_bootstrap():
        _, started = kafka.up()  # a broker when none answers; stopped again at the end
    try:
        results = asyncio.run(amain(args))
    finally:
        if started:
            kafka.down()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "longrun.json").write_text(json.dumps(results, indent=2) + "\n")
    write_section(args.results_md, render(results))
    _note(f"written: {args.out / 'longrun.json'} and {args.results_md}")
    return 0
