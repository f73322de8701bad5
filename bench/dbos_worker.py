"""One DBOS Transact worker process for the benchmark.

Started by ``bench.dbos_engine`` as ``python -m bench.dbos_worker --db-url ... --index i``.
It launches DBOS on the shared PostgreSQL system database, then reads JSON lines on
stdin and writes JSON lines on stdout:

  in : {"op": "start", "id": saga_id, "input": {...SagaInput}}
       {"op": "stats", "req": n}
  out: {"op": "ready", "pid": pid}
       {"op": "done", "id": saga_id, "status": ..., "compensated": [...], "error": ...}
       {"op": "stats", "req": n, "statements": s, "commits": c}

Each saga is one async ``@DBOS.workflow`` started with ``DBOS.start_workflow_async``
under ``SetWorkflowID(saga_id)``; every step and every compensation is an async
``@DBOS.step``; on a business failure the workflow runs the compensations of the
completed steps in reverse order (each a checkpointed step too).

SQL is counted at the driver: SQLAlchemy ``before_cursor_execute`` and ``commit``
events on every Engine in this process (DBOS's system-database engine is the only one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine as SAEngine

from bench import scenarios as sc


class _SqlCounter:
    def __init__(self) -> None:
        self.statements = 0
        self.commits = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        event.listen(SAEngine, "before_cursor_execute", self._on_execute)
        event.listen(SAEngine, "commit", self._on_commit)

    def _on_execute(self, *_: Any) -> None:
        with self._lock:
            self.statements += 1

    def _on_commit(self, *_: Any) -> None:
        with self._lock:
            self.commits += 1


SagaFn = Callable[[str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


class _Http:
    """POST JSON, return (status, body). aiohttp by default: httpx's connection pool
    collapses under ~100 concurrent requests per process (see bench/RESULTS.md)."""

    def __init__(self, base: str, connections: int, client: str) -> None:
        self.base, self.connections, self.client = base, connections, client
        self._aiohttp: aiohttp.ClientSession | None = None
        self._httpx: httpx.AsyncClient | None = None

    async def post(self, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        headers = {"Idempotency-Key": key}
        if self.client == "httpx":
            if self._httpx is None:
                limits = httpx.Limits(
                    max_connections=self.connections, max_keepalive_connections=self.connections
                )
                self._httpx = httpx.AsyncClient(base_url=self.base, limits=limits, timeout=30)
            resp = await self._httpx.post(path, json=body, headers=headers)
            return resp.status_code, resp.json()
        if self._aiohttp is None:
            self._aiohttp = aiohttp.ClientSession(
                base_url=self.base,
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        async with self._aiohttp.post(path, json=body, headers=headers) as aresp:
            return aresp.status, await aresp.json()


def _define_workflow(http: _Http) -> SagaFn:
    """Register the DBOS steps and the saga workflow; returns the workflow function."""
    from dbos import DBOS

    def retryable(exc: BaseException) -> bool:
        return not isinstance(exc, sc.BusinessFailure)

    @DBOS.step(name="bench.local_step")
    async def local_step(saga_id: str, step: int, fail_at: int | None) -> dict[str, Any]:
        return sc.local_step(saga_id, step, fail_at)

    @DBOS.step(name="bench.local_compensation")
    async def local_compensation(saga_id: str, step: int) -> dict[str, Any]:
        return sc.local_compensation(saga_id, step)

    @DBOS.step(
        name="bench.http_step",
        retries_allowed=True,
        max_attempts=3,
        interval_seconds=0.1,
        should_retry=retryable,
    )
    async def http_step(saga_id: str, step: int, body: dict[str, Any]) -> dict[str, Any]:
        key = sc.idempotency_key(saga_id, step)
        status, result = await http.post(sc.http_step_path(step), body, key)
        if status == sc.HTTP_BUSINESS_FAILURE:
            raise sc.BusinessFailure(step)
        if status != 200:
            raise RuntimeError(f"step {step}: HTTP {status}")
        return dict(result)

    @DBOS.step(name="bench.http_compensation", retries_allowed=True, interval_seconds=0.1)
    async def http_compensation(saga_id: str, step: int) -> dict[str, Any]:
        key = sc.idempotency_key(saga_id, step, compensation=True)
        body = {"saga_id": saga_id, "step": step}
        status, result = await http.post(sc.http_compensation_path(step), body, key)
        if status != 200:
            raise RuntimeError(f"compensation {step}: HTTP {status}")
        return dict(result)

    @DBOS.workflow(name="bench.saga")
    async def saga(saga_id: str, raw_input: dict[str, Any]) -> dict[str, Any]:
        saga_input = sc.SagaInput.from_json(raw_input)
        scenario = sc.SCENARIOS[saga_input.scenario]
        done: list[int] = []
        try:
            for n in range(1, scenario.steps + 1):
                if scenario.kind == "http":
                    await http_step(saga_id, n, sc.http_step_body(saga_id, n, saga_input))
                else:
                    await local_step(saga_id, n, saga_input.fail_at)
                done.append(n)
        except sc.BusinessFailure:
            compensated: list[int] = []
            for n in reversed(done):
                if scenario.kind == "http":
                    await http_compensation(saga_id, n)
                else:
                    await local_compensation(saga_id, n)
                compensated.append(n)
            return {"status": sc.COMPENSATED, "compensated": compensated}
        return {"status": sc.COMPLETED, "compensated": []}

    return saga


class _Worker:
    def __init__(self, saga: SagaFn, counter: _SqlCounter) -> None:
        self._saga = saga
        self._counter = counter
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, msg: dict[str, Any]) -> None:
        self._out.append(json.dumps(msg).encode() + b"\n")
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        data, self._out, self._flush_scheduled = b"".join(self._out), [], False
        view = memoryview(data)
        while view:  # stdout is a blocking pipe; the parent always reads it
            written = os.write(sys.stdout.fileno(), view)
            view = view[written:]

    async def run_saga(self, saga_id: str, raw_input: dict[str, Any]) -> None:
        from dbos import DBOS, SetWorkflowID

        try:
            with SetWorkflowID(saga_id):
                handle = await DBOS.start_workflow_async(self._saga, saga_id, raw_input)
            result = await handle.get_result()
            self.emit({"op": "done", "id": saga_id, **result})
        except Exception as exc:
            self.emit({"op": "done", "id": saga_id, "status": sc.FAILED, "error": repr(exc)})

    def handle(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "start":
            task = asyncio.create_task(self.run_saga(msg["id"], msg["input"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif op == "stats":
            c = self._counter
            self.emit(
                {"op": "stats", "req": msg["req"], "statements": c.statements, "commits": c.commits}
            )

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.emit({"op": "ready", "pid": os.getpid()})
        while line := await reader.readline():
            self.handle(json.loads(line))
        # stdin closed: the driver is done with us.
        for task in list(self._tasks):
            task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--http-base", default=None)
    parser.add_argument("--http-connections", type=int, default=100)
    parser.add_argument("--http-client", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument("--max-threads", type=int, default=0, help="0 = DBOS default")
    args = parser.parse_args()

    from dbos import DBOS, DBOSConfig

    counter = _SqlCounter()
    counter.install()
    config: DBOSConfig = {
        "name": "saga-bench",
        "system_database_url": args.db_url,
        "sys_db_pool_size": args.pool_size,
        "executor_id": f"bench-{args.index}",
        "application_version": "bench",
        "log_level": "WARNING",
    }
    if args.max_threads:
        config["max_executor_threads"] = args.max_threads
    DBOS(config=config)
    http = _Http(args.http_base or "", args.http_connections, args.http_client)
    saga = _define_workflow(http)
    DBOS.launch()
    try:
        asyncio.run(_Worker(saga, counter).serve())
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)


if __name__ == "__main__":
    main()
