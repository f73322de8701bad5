"""DBOS Transact as a benchmark engine (the comparison baseline).

Tuned the way DBOS documents for many concurrent workflows: async workflows and async
steps started with ``DBOS.start_workflow_async`` on the worker's event loop (no thread
per workflow), a system-database pool sized for the concurrency, and several worker
processes on the same system database (DBOS scales out by adding processes, each with
its own executor id). The driver hands sagas to the workers round-robin over pipes
(JSON lines), the way a load balancer hands requests to DBOS application servers.

SQL is counted inside each worker with SQLAlchemy engine events on DBOS's system
database engine (statements = ``before_cursor_execute``, commits = ``commit``), and
cross-checked from the server with ``pg_stat_database.xact_commit`` of the bench database.

Durability: PostgreSQL's default (``synchronous_commit=on``: every commit waits for its WAL
fsync) for ``dbos``; ``dbos-sync-off`` sets ``synchronous_commit=off`` on its own database
only (``ALTER DATABASE``), so commits return before the fsync (a crash of the server may
lose the last ~0.6 s of commits, never corrupts). The value a session of the bench
database really sees is read back and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from typing import Any

import psycopg

from bench.durability import postgres_wal_syncs
from bench.harness import EngineContext, SqlCounts
from bench.scenarios import Outcome, SagaInput


class _WorkerProc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.reader_task: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")


class DbosEngine:
    """Adapter implementing ``bench.harness.Engine`` for DBOS Transact."""

    name = "dbos"
    #: In-flight sagas the driver keeps at saturation unless told otherwise.
    default_concurrency = 100

    def __init__(
        self,
        processes: int = 2,
        pool_size: int = 20,
        db_name: str = "bench_dbos",
        http_connections: int = 100,
        http_client: str = "aiohttp",
        max_threads: int = 0,
        synchronous_commit: str = "on",
    ) -> None:
        self.synchronous_commit = synchronous_commit
        self._seen_synchronous_commit = "unknown"
        self.max_threads = max_threads
        self.http_client = http_client
        self.processes = processes
        self.pool_size = pool_size
        self.db_name = db_name
        self.http_connections = http_connections
        self._workers: list[_WorkerProc] = []
        self._rr = itertools.cycle([0])
        self._ctx: EngineContext | None = None
        self._stats_req = itertools.count(1)
        self._stats_waiters: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._admin_url = ""

    # -- lifecycle -----------------------------------------------------------------------
    def _db_url(self, database: str) -> str:
        base = self._admin_url.rsplit("/", 1)[0]
        return f"{base}/{database}"

    async def _admin(self, sql: str) -> None:
        async with await psycopg.AsyncConnection.connect(self._admin_url, autocommit=True) as c:
            await c.execute(sql)

    async def setup(self, ctx: EngineContext) -> None:
        self._ctx = ctx
        self._admin_url = ctx.postgres_admin_url
        await self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        await self._admin(f'CREATE DATABASE "{self.db_name}"')
        if self.synchronous_commit != "on":
            setting = f"synchronous_commit = {self.synchronous_commit}"
            await self._admin(f'ALTER DATABASE "{self.db_name}" SET {setting}')
        async with await psycopg.AsyncConnection.connect(self._db_url(self.db_name)) as c:
            row = await (await c.execute("SHOW synchronous_commit")).fetchone()
            self._seen_synchronous_commit = str(row[0]) if row else "unknown"
        # The first worker creates the DBOS schema; the others start once it is ready.
        await self._spawn(0, ctx)
        await asyncio.gather(*(self._spawn(i, ctx) for i in range(1, self.processes)))
        self._rr = itertools.cycle(range(self.processes))

    async def _spawn(self, index: int, ctx: EngineContext) -> None:
        cmd = [
            sys.executable,
            "-m",
            "bench.dbos_worker",
            "--db-url",
            self._db_url(self.db_name).replace("postgresql://", "postgresql+psycopg://"),
            "--index",
            str(index),
            "--pool-size",
            str(self.pool_size),
            "--http-connections",
            str(self.http_connections),
            "--http-client",
            self.http_client,
            "--max-threads",
            str(self.max_threads),
        ]
        if ctx.http_base_url:
            cmd += ["--http-base", ctx.http_base_url]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            limit=2**20,
        )
        worker = _WorkerProc(proc)
        worker.reader_task = asyncio.create_task(self._read(worker))
        self._workers.append(worker)
        await asyncio.wait_for(worker.ready, timeout=120)

    async def _read(self, worker: _WorkerProc) -> None:
        assert worker.proc.stdout is not None and self._ctx is not None
        on_terminal = self._ctx.on_terminal
        while line := await worker.proc.stdout.readline():
            msg = json.loads(line)
            op = msg["op"]
            if op == "done":
                on_terminal(
                    Outcome(
                        saga_id=msg["id"],
                        status=msg["status"],
                        compensated=tuple(msg.get("compensated") or ()),
                        error=msg.get("error"),
                    )
                )
            elif op == "stats":
                fut = self._stats_waiters.pop(msg["req"], None)
                if fut is not None and not fut.done():
                    fut.set_result((msg["statements"], msg["commits"]))
            elif op == "ready" and not worker.ready.done():
                worker.ready.set_result(None)
        if not worker.ready.done():
            worker.ready.set_exception(RuntimeError("DBOS worker exited during startup"))

    async def teardown(self) -> None:
        for w in self._workers:
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        for w in self._workers:
            try:
                await asyncio.wait_for(w.proc.wait(), timeout=20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
            if w.reader_task is not None:
                w.reader_task.cancel()
        self._workers.clear()
        if self._admin_url:
            await self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    # -- driving ---------------------------------------------------------------------------
    async def start(self, saga_id: str, saga_input: SagaInput) -> None:
        worker = self._workers[next(self._rr)]
        worker.send({"op": "start", "id": saga_id, "input": saga_input.to_json()})
        assert worker.proc.stdin is not None
        transport = worker.proc.stdin.transport
        if transport.get_write_buffer_size() > 2**20:
            await worker.proc.stdin.drain()

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc.returncode is None]

    async def sql_counts(self) -> SqlCounts:
        loop = asyncio.get_running_loop()
        futures = []
        for w in self._workers:
            req = next(self._stats_req)
            fut: asyncio.Future[tuple[int, int]] = loop.create_future()
            self._stats_waiters[req] = fut
            w.send({"op": "stats", "req": req})
            futures.append(fut)
        results = await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
        return SqlCounts(
            statements=sum(r[0] for r in results),
            commits=sum(r[1] for r in results),
            server_commits=await self._server_commits(),
        )

    async def _server_commits(self) -> int | None:
        query = "SELECT xact_commit FROM pg_stat_database WHERE datname = %s"
        async with await psycopg.AsyncConnection.connect(self._admin_url, autocommit=True) as c:
            cur = await c.execute(query, (self.db_name,))
            row = await cur.fetchone()
        return None if row is None else int(row[0])

    async def kafka_messages(self) -> int | None:
        return None

    async def fsyncs(self) -> int | None:
        return await postgres_wal_syncs(self._admin_url)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "DBOS Transact (async workflows, start_workflow_async)",
            "processes": self.processes,
            "sys_db_pool_size_per_process": self.pool_size,
            "http_max_connections_per_process": self.http_connections,
            "http_client": self.http_client,
            "max_executor_threads": self.max_threads or "DBOS default (unbounded)",
            "database": self.db_name,
            "durability": f"PostgreSQL synchronous_commit={self._seen_synchronous_commit} "
            "(as a session of the bench database sees it)",
            "sql_counting": "SQLAlchemy before_cursor_execute/commit events in each worker; "
            "server_commits = pg_stat_database.xact_commit delta of the bench database",
        }


def create(options: dict[str, str]) -> DbosEngine:
    """Factory for ``python -m bench``; options: processes, pool_size, http_connections,
    http_client (aiohttp | httpx)."""
    engine = DbosEngine(
        processes=int(options.get("processes", 2)),
        pool_size=int(options.get("pool_size", 20)),
        http_connections=int(options.get("http_connections", 100)),
        http_client=options.get("http_client", "aiohttp"),
        max_threads=int(options.get("max_threads", 0)),
        synchronous_commit=options.get("synchronous_commit", "on"),
    )
    return engine


def create_sync_off(options: dict[str, str]) -> DbosEngine:
    """Factory for the ``dbos-sync-off`` engine: DBOS with ``synchronous_commit=off`` on
    its own database (same options as ``create``)."""
    engine = create({"synchronous_commit": "off", **options})
    engine.name = "dbos-sync-off"
    engine.db_name = "bench_dbos_sync_off"
    return engine
