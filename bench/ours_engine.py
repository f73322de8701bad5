"""saga-coordinator as a benchmark engine.

Runs what a user runs: coordinator worker process(es) (`python -m coordinator worker`)
with the scenario sagas of ``bench.ours_sagas``, and the order-status listener worker
(`python -m listeners worker`) writing every saga's business state to PostgreSQL. The
driver starts sagas with ``SagaClient`` and learns outcomes from the lifecycle topic.

Counted: coordinator SQL = 0 by construction (the package imports no SQL library; a
unit test pins that); listener SQL at its driver (SQLAlchemy events, served on
``/listeners/stats``); Kafka messages per saga = growth of the end offsets of every
topic the engine writes (inbox, step requests, lifecycle, table changelog).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.durability import postgres_wal_syncs
from bench.harness import EngineContext, SqlCounts
from bench.scenarios import Outcome, SagaInput
from bench.sysinfo import local_http
from coordinator import CoordinatorSettings, SagaClient
from coordinator._client import ensure_topics
from coordinator._topics import changelog_topic
from infra.kafka import BrokerConfig
from infra.processes import ROOT, ProcessGroup, free_port

if TYPE_CHECKING:  # confluent-kafka is needed only for client=rdkafka
    from bench.rdkafka_driver import RdKafkaDriver

#: terminal lifecycle event -> the outcome status the harness checks
STATUS = {"saga_completed": "completed", "saga_compensated": "compensated"}
TERMINAL = {*STATUS, "saga_cancelled", "saga_compensation_failed"}

#: (saga id, status, compensated step numbers in order)
Finished = tuple[str, str, tuple[int, ...]]


def finished_sagas(raw: bytes, comps: dict[str, list[int]]) -> list[Finished]:
    """The sagas one lifecycle record finishes; ``comps`` collects compensated steps.

    Reads only type/saga_id/step (json.loads, no model validation): the driver shares the
    2 cores with the engine, so its own cost must stay small, as DBOS's pipe is. A record
    is one event or a batch {"schema_version", "saga_id", "events": [...]}
    (coordinator.events); the engine writes batches unless SAGA_LIFECYCLE_FORMAT=single.
    """
    value = json.loads(raw)
    finished: list[Finished] = []
    for event in value.get("events", (value,)):
        kind, saga_id = event["type"], event["saga_id"]
        if kind == "compensation_succeeded":
            comps.setdefault(saga_id, []).append(int(event["step"][1:]))
        elif kind in TERMINAL:
            steps = tuple(comps.pop(saga_id, []))
            finished.append((saga_id, STATUS.get(kind, "failed"), steps))
    return finished


class OursEngine:
    """Adapter implementing ``bench.harness.Engine`` for saga-coordinator."""

    name = "ours"
    default_concurrency = 400

    def __init__(
        self,
        workers: int = 1,
        partitions: int = 8,
        listener: bool = True,
        inline: bool = True,
        client: str = "aiokafka",
    ) -> None:
        if client not in ("rdkafka", "aiokafka"):
            raise ValueError(f"ours: client={client!r}; use client=rdkafka or client=aiokafka")
        self.client = client
        self.inline = inline
        self.workers = workers
        self.partitions = partitions
        self.listener = listener
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-ours-"))
        self.procs = ProcessGroup(self.tmp)
        self.prefix = f"bench{int(time.time())}{uuid.uuid4().hex[:6]}"
        self.listener_port = 0
        self.db_name = f"bench_listener_{self.prefix}"
        self.admin_url = ""
        self._task: asyncio.Task[None] | None = None
        self._comps: dict[str, list[int]] = {}
        self._client: SagaClient | None = None
        self._topics: list[str] = []
        self._offsets: AIOKafkaConsumer | None = None
        self._driver: RdKafkaDriver | None = None

    async def setup(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.settings = CoordinatorSettings(
            kafka_bootstrap_servers=ctx.kafka_bootstrap,
            topic_prefix=self.prefix,
            app_id=f"{self.prefix}-coordinator",
            partitions=self.partitions,
            web_enabled=False,
        )
        services = ["bench-local", *(f"svc{n}" for n in range(1, 6))]
        await ensure_topics(self.settings, services)
        t = self.settings.topics
        self._topics = [
            t.inbox,
            t.lifecycle,
            *(t.step(s) for s in services),
            changelog_topic(self.settings),
        ]
        base = ctx.http_base_url or "http://127.0.0.1:1"
        env = {
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": ctx.kafka_bootstrap,
            "SAGA_TOPIC_PREFIX": self.prefix,
            "SAGA_APP_ID": self.settings.app_id,
            "SAGA_PARTITIONS": str(self.partitions),
            "SAGA_DEFINITIONS": "bench.ours_sagas:"
            + ("ALL_SAGAS" if self.inline else "ALL_SAGAS_QUEUED"),
            "SAGA_WEB_ENABLED": "false",
            "SAGA_DATADIR": str(self.tmp / "faust"),
            "SAGA_SERVICE_URLS": json.dumps({f"svc{n}": f"{base}/svc{n}" for n in range(1, 6)}),
            # every worker executes every service in-process: nobody writes step topics
            "SAGA_SERVE_STEP_TOPICS": "false",
        }
        for i in range(self.workers):
            self._spawn(
                f"coordinator{i}",
                ["-m", "coordinator", "worker", "-l", "warn"],
                env,
                "coordinator ready",
            )
        if self.listener:
            await self._start_listener(ctx)
        if self.client == "rdkafka":
            from bench.rdkafka_driver import RdKafkaDriver

            self._driver = RdKafkaDriver(
                ctx.kafka_bootstrap, t.inbox, t.lifecycle, self.partitions, self._finished
            )
            self._driver.start_following()
            return
        self._client = SagaClient(self.settings)
        await self._client.__aenter__()
        self._consumer = AIOKafkaConsumer(
            t.lifecycle,
            bootstrap_servers=ctx.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=5,  # the default 500 ms long-poll would add to measured latency
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow())

    async def _start_listener(self, ctx: EngineContext) -> None:
        self.admin_url = ctx.postgres_admin_url
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        url = self.admin_url.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
        url = f"{url}/{self.db_name}"
        subprocess.run(  # noqa: ASYNC221 - one-time setup, before any load
            [sys.executable, "-m", "listeners", "migrate", "--database-url", url],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        self.listener_port = free_port()
        self._spawn(
            "listener",
            ["-m", "listeners", "worker", "-l", "warn"],
            {
                "KAFKA_BOOTSTRAP_SERVERS": ctx.kafka_bootstrap,
                "LISTENER_TOPIC_PREFIX": self.prefix,
                "LISTENER_APP_ID": f"{self.prefix}-listeners",
                "LISTENER_PARTITIONS": str(self.partitions),
                "LISTENER_DATABASE_URL": url,
                "LISTENER_WEB_PORT": str(self.listener_port),
                "LISTENER_DATA_DIR": str(self.tmp / "listener"),
                "LISTENER_ORDER_SAGA_TYPES": json.dumps(
                    ["bench_simple", "bench_medium", "bench_complex"]
                ),
            },
            "LISTENER-READY",
        )

    def _spawn(self, name: str, args: list[str], env: dict[str, str], ready: str) -> None:
        self.procs.start(name, args, env=env, ready=ready)

    async def _follow(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            for records in batch.values():
                for record in records:
                    self._finished(finished_sagas(record.value, self._comps))

    def _finished(self, finished: list[Finished]) -> None:
        for saga_id, status, comps in finished:
            self.ctx.on_terminal(Outcome(saga_id, status, comps))

    async def teardown(self) -> None:
        if self._driver is not None:
            await asyncio.to_thread(self._driver.close)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            await self._consumer.stop()
        if self._client:
            await self._client.__aexit__(None, None, None)
        if self._offsets is not None:
            await self._offsets.stop()
        for proc in self.procs.processes:
            cpu = _cpu_seconds(proc.pid)
            print(f"[bench] ours: {proc.name} used {cpu:.1f} CPU-s in total", file=sys.stderr)
        self.procs.stop_all()
        self.procs.close()
        if self.ctx.logs is not None:  # the workers' logs, to explain a stall after the run
            self.ctx.logs.mkdir(parents=True, exist_ok=True)
            for log in self.tmp.glob("*.log"):
                shutil.copy(log, self.ctx.logs / log.name)
            broker = BrokerConfig()  # the project's broker logs its collections (wall clock)
            if (
                self.ctx.kafka_bootstrap == broker.bootstrap
                and (broker.run_dir / "gc.log").exists()
            ):
                shutil.copy(broker.run_dir / "gc.log", self.ctx.logs / "broker-gc.log")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.admin_url:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    async def start(self, saga_id: str, saga_input: SagaInput) -> None:
        if self._driver is not None:
            self._driver.start(f"bench_{saga_input.scenario}", saga_id, saga_input.to_json())
            return
        assert self._client is not None
        await self._client.start(
            f"bench_{saga_input.scenario}",
            saga_input.to_json(),
            saga_id=saga_id,
            business_key=saga_id,
            wait=False,
        )

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.processes if p.alive()]

    def process_pids(self) -> dict[str, list[int]]:
        """The engine's processes by name (coordinator0, ..., listener)."""
        return {p.name: [p.pid] for p in self.procs.processes if p.alive()}

    async def sql_counts(self) -> SqlCounts:
        if not self.listener_port:
            return SqlCounts()
        async with local_http() as client:
            stats = (
                await client.get(f"http://127.0.0.1:{self.listener_port}/listeners/stats")
            ).json()
        return SqlCounts(statements=stats["sql_statements"], commits=stats["sql_commits"])

    async def fsyncs(self) -> int | None:
        """The listener's PostgreSQL WAL syncs; the broker adds none (page cache)."""
        return await postgres_wal_syncs(self.ctx.postgres_admin_url) if self.listener else 0

    async def kafka_messages(self) -> int | None:
        # One long-lived client: a new one per snapshot cost seconds on a loaded machine,
        # stretching the measured windows.
        if self._offsets is None:
            self._offsets = AIOKafkaConsumer(bootstrap_servers=self.ctx.kafka_bootstrap)
            await self._offsets.start()
        tps = [TopicPartition(t, p) for t in self._topics for p in range(self.partitions)]
        ends = await self._offsets.end_offsets(tps)
        return sum(ends.values())

    def describe(self) -> dict[str, Any]:
        return {
            "driver_client": "librdkafka (confluent-kafka), sending the start commands "
            "SagaClient sends (the same start_message, key and partition)"
            if self.client == "rdkafka"
            else "SagaClient (aiokafka)",
            "coordinator_workers": self.workers,
            "partitions": self.partitions,
            "listener": "order-status listener on PostgreSQL" if self.listener else "off",
            "coordinator_sql": "0 (imports no SQL library)",
            "in_process_steps": "inline (local activities)"
            if self.inline
            else "tasks of the worker, results applied in its lanes (no inbox hop)",
            "http_steps": "tasks of the worker, results applied in its lanes (no inbox hop), "
            "SAGA_STEP_CONCURRENCY=64",
        }


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (0.0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create(options: dict[str, str]) -> OursEngine:
    """Factory for ``python -m bench``; options: workers, partitions, listener (0/1),
    inline (0/1), client (aiokafka: the driver starts sagas with SagaClient, the default;
    rdkafka: with librdkafka, see ``bench.rdkafka_driver``)."""
    return OursEngine(
        workers=int(options.get("workers", 1)),
        partitions=int(options.get("partitions", 8)),
        listener=options.get("listener", "1") != "0",
        inline=options.get("inline", "1") != "0",
        client=options.get("client", "aiokafka"),
    )
