"""Restate as a benchmark engine: a log-based durable-execution engine with no database.

What runs: ``restate-server`` (native binary from npm, see ``bench.restate_server``) with
its defaults, and the bench's saga service (``bench.restate_service``) in Python, served
by Hypercorn with ``processes`` worker processes (DBOS gets 2 as well). The driver calls
the handler through Restate's HTTP ingress (``POST /SagaBench/run``), one request per
saga held open until the saga's outcome comes back — the ingress appends the invocation
to Restate's log before anything runs, so "started" means durable as for the others.

Counted: SQL = 0 (Restate uses no database). Messages per saga = records appended to
Restate's log (Bifrost), from the server's Prometheus metrics — the analogue of our
Kafka messages per saga; None when the metric is not exposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.durability import restate_log_syncs
from bench.harness import EngineContext, SqlCounts
from bench.restate_server import VERSION, RestateServer
from bench.restate_service import HANDLER, SERVICE
from bench.scenarios import FAILED, Outcome, SagaInput
from bench.sysinfo import local_http
from infra.processes import Process, free_port

#: Prometheus counters of records appended to the log, tried in order.
_APPEND_METRICS = (
    "restate_bifrost_sequencer_committed_records_total",
    "restate_log_server_store_records_total",
)


class RestateEngine:
    """Adapter implementing ``bench.harness.Engine`` for Restate."""

    name = "restate"
    #: In-flight sagas at saturation: 250 gave ~25 % more simple sagas/s than 100 (and
    #: less engine CPU per saga: bigger log batches) in back-to-back runs on this machine.
    default_concurrency = 250

    def __init__(self, processes: int = 2, partitions: int = 8) -> None:
        self.processes = processes
        self.partitions = partitions
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-restate-"))
        self.server = RestateServer(self.tmp / "server", partitions=partitions)
        self.service: Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._durability: dict[str, Any] = {}
        self._metric: str | None = None

    async def setup(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        await asyncio.to_thread(self.server.start)
        self._durability = await asyncio.to_thread(self.server.durability)
        port = free_port()
        self.service = Process(
            [
                "-m",
                "hypercorn",
                "bench.restate_service:create_app()",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(self.processes),
                "--log-level",
                "WARNING",
            ],
            env={"BENCH_HTTP_BASE": ctx.http_base_url or "http://127.0.0.1:1"},
            name="restate-service",
            log=self.tmp / "service.log",
        ).start()
        await asyncio.to_thread(self._wait_service, port)
        await asyncio.to_thread(self.server.register, f"http://127.0.0.1:{port}")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=300),
        )
        self._metric = await self._find_metric()

    def _wait_service(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.service is not None
            if not self.service.alive():
                raise RuntimeError(
                    f"Restate service exited: {(self.tmp / 'service.log').read_text()[-3000:]}"
                )
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"Restate service did not listen on {port} within {timeout:.0f}s")

    async def teardown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
        if self.service is not None:
            await asyncio.to_thread(self.service.stop, 20)
            self.service.close()
        await asyncio.to_thread(self.server.stop)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- driving -------------------------------------------------------------------------
    async def start(self, saga_id: str, saga_input: SagaInput) -> None:
        task = asyncio.create_task(self._call(saga_id, saga_input))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, saga_id: str, saga_input: SagaInput) -> None:
        assert self._session is not None
        url = f"{self.server.ingress_url}/{SERVICE}/{HANDLER}"
        body = {"saga_id": saga_id, "input": saga_input.to_json()}
        try:
            async with self._session.post(url, json=body) as resp:
                if resp.status != 200:
                    error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                    self.ctx.on_terminal(Outcome(saga_id, FAILED, error=error))
                    return
                result = await resp.json()
        except aiohttp.ClientError as exc:
            self.ctx.on_terminal(Outcome(saga_id, FAILED, error=repr(exc)))
            return
        comps = tuple(result.get("compensated") or ())
        self.ctx.on_terminal(Outcome(saga_id, str(result["status"]), comps))

    def pids(self) -> list[int]:
        roots = [p.pid for p in (self.server.proc, self.service) if p and p.alive()]
        return [pid for root in roots for pid in _tree(root)]

    async def sql_counts(self) -> SqlCounts:
        return SqlCounts()

    async def _metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.server.node_port}/metrics"
        async with local_http() as client:
            return (await client.get(url, timeout=10)).text

    async def _find_metric(self) -> str | None:
        with contextlib.suppress(httpx.HTTPError):
            text = await self._metrics_text()
            for name in _APPEND_METRICS:
                if re.search(rf"^{name}(\{{|\s)", text, re.M):
                    return name
        return None

    async def fsyncs(self) -> int | None:
        """WAL syncs of Restate's log-server (its durable log)."""
        with contextlib.suppress(httpx.HTTPError):
            return restate_log_syncs(await self._metrics_text())
        return None

    async def kafka_messages(self) -> int | None:
        """Records appended to Restate's log so far (its analogue of Kafka messages)."""
        if self._metric is None:
            return None
        text = await self._metrics_text()
        pattern = rf"^{self._metric}(?:\{{[^}}]*\}})?\s+([0-9.e+]+)"
        return int(sum(float(v) for v in re.findall(pattern, text, re.M)))

    def describe(self) -> dict[str, Any]:
        return {
            "engine": f"Restate {VERSION} (restate-server from npm, defaults) + Python "
            f"restate-sdk service under Hypercorn (HTTP/2)",
            "service_processes": self.processes,
            "partitions": self.partitions,
            "durability": ", ".join(f"{k}={v}" for k, v in self._durability.items()),
            "sql": "0 (no database)",
            "messages": f"log records appended ({self._metric})" if self._metric else "n/a",
        }


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (Hypercorn's worker processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def create(options: dict[str, str]) -> RestateEngine:
    """Factory for ``python -m bench``; options: processes, partitions."""
    return RestateEngine(
        processes=int(options.get("processes", 2)), partitions=int(options.get("partitions", 8))
    )
