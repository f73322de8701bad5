"""The system under chaos as real processes: the example HTTP services, N coordinator
workers with one app id, a listener worker on PostgreSQL; and the readers that judge it.

Built on the integration helpers (``OrderStack``, ``ListenerWorker``, ``Process``); this
module only adds what several workers need (a web port and data dir each, restart by
name) and the collection of evidence for :mod:`tests.chaos.oracle`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from coordinator._client import ensure_topics
from infra.processes import Process, free_port
from tests.chaos import oracle
from tests.chaos.oracle import Verdict
from tests.chaos.report import ARTIFACTS
from tests.chaos.workload import Submitted
from tests.integration.listener_kit import ListenerWorker
from tests.integration.stack import COORDINATOR_READY, Lifecycle, OrderStack

WORKER_READY_TIMEOUT = 120.0
SERVICES = ("order", "inventory", "payment", "shipping", "notification")


class ChaosCluster:
    """Services + ``workers`` coordinator workers + a listener worker, on one prefix.

    Args:
        bootstrap: the Kafka cluster.
        prefix: topic prefix and app id stem (unique per scenario).
        workdir: data dirs of the workers.
        database_url: the listener's (empty) PostgreSQL database.
        workers: coordinator workers sharing the app id.
        partitions: of every saga topic.
        definitions: ``SAGA_DEFINITIONS`` of the workers.
    """

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        workdir: Path,
        database_url: str,
        *,
        workers: int = 2,
        partitions: int = 8,
        definitions: str = "examples.order_fulfillment.saga:ORDER_SAGA",
        worker_env: dict[str, str] | None = None,
    ) -> None:
        self.stack = OrderStack(bootstrap, prefix, workdir, partitions=partitions)
        self.prefix = prefix
        self.definitions = definitions
        self.worker_env = worker_env or {}
        self.ports = {f"coordinator-{chr(ord('a') + i)}": free_port() for i in range(workers)}
        self.workers: dict[str, Process] = {}
        self.restarts = 0
        self.listener = ListenerWorker(
            bootstrap=bootstrap, prefix=prefix, database_url=database_url
        )
        self.listener.env["LISTENER_PARTITIONS"] = str(partitions)
        self.database_url = database_url
        self.created = time.monotonic()

    @property
    def settings(self) -> Any:
        return self.stack.settings()

    # -- processes ------------------------------------------------------------------------

    async def start(self, *, knobs: dict[str, Any] | None = None, topics: bool = True) -> None:
        """Services, then every worker and the listener at once (they start in parallel).

        ``topics=False`` starts them before any topic of the prefix exists; otherwise the
        topics are created first, as an operator would (``python -m coordinator topics``).
        """
        if topics:
            await ensure_topics(self.settings, SERVICES)
        await asyncio.to_thread(self._start_processes, knobs)

    def _start_processes(self, knobs: dict[str, Any] | None) -> None:
        self.stack.start_services(knobs)
        for name in self.ports:
            self.workers[name] = self._spawn(name)
        migrate = self.listener.cli("migrate")
        assert migrate.proc is not None and migrate.proc.returncode == 0, migrate.output()
        migrate.close()
        self.listener.start()
        for proc in self.workers.values():
            proc.wait_for_output(COORDINATOR_READY, timeout=WORKER_READY_TIMEOUT)

    def _spawn(self, name: str, extra_env: dict[str, str] | None = None) -> Process:
        env = {
            "SAGA_DATADIR": str(self.stack.datadir / name),
            **self.worker_env,
            **(extra_env or {}),
        }
        return self.stack.coordinator(
            name=name,
            web_port=self.ports[name],
            definitions=self.definitions,
            env=env,
            wait=False,
        )

    def kill(self, name: str) -> None:
        """SIGKILL one worker: nothing flushed, nothing committed."""
        self.workers[name].kill()

    def restart(
        self, name: str, *, wait: bool = True, env: dict[str, str] | None = None
    ) -> Process:
        self.restarts += 1
        self.workers[name] = proc = self._spawn(name, env)
        if wait:
            proc.wait_for_output(COORDINATOR_READY, timeout=WORKER_READY_TIMEOUT)
        return proc

    def keep_logs(self, scenario: str) -> Path:
        """Copy every process log to the artifacts dir (for the bug report)."""
        target = ARTIFACTS / scenario
        target.mkdir(parents=True, exist_ok=True)
        for proc in [*self.stack.processes, self.listener.process]:
            if proc is not None:
                shutil.copyfile(proc.log_path, target / f"{proc.name}-{id(proc)}.log")
        return target

    def close(self) -> None:
        """SIGKILL everything (a graceful stop proves nothing here and costs seconds)."""
        for proc in [*self.stack.processes, *self.workers.values(), self.listener.process]:
            if proc is not None:
                proc.kill()
        self.stack.close()
        self.listener.close()

    # -- services -------------------------------------------------------------------------

    async def knobs(self, **changes: Any) -> None:
        await self.stack.admin("POST", "/admin/knobs", changes)

    # -- evidence -------------------------------------------------------------------------

    async def order_views(self, order_ids: list[str]) -> dict[str, dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.stack.base_url, timeout=30) as client:

            async def one(order_id: str) -> tuple[str, dict[str, Any]]:
                response = await client.get(f"/admin/orders/{order_id}")
                response.raise_for_status()
                return order_id, response.json()

            return dict(await _bounded([one(o) for o in order_ids]))

    async def statuses(self, saga_ids: list[str]) -> dict[str, dict[str, tuple[int, Any]]]:
        """``GET /sagas/{id}/`` of every saga on every worker: (HTTP status, body)."""
        found: dict[str, dict[str, tuple[int, Any]]] = {}
        async with httpx.AsyncClient(timeout=30) as client:
            for name, port in self.ports.items():

                async def one(saga_id: str, port: int = port) -> tuple[str, tuple[int, Any]]:
                    try:
                        response = await client.get(f"http://127.0.0.1:{port}/sagas/{saga_id}/")
                    except httpx.HTTPError as exc:
                        return saga_id, (0, repr(exc))
                    try:
                        return saga_id, (response.status_code, response.json())
                    except ValueError:
                        return saga_id, (response.status_code, response.text[:200])

                found[name] = dict(await _bounded([one(s) for s in saga_ids]))
        return found

    async def cli_status(self, saga_id: str, worker: str) -> tuple[int, str]:
        """``python -m coordinator status ID --json`` against one worker."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coordinator",
            "--url",
            f"http://127.0.0.1:{self.ports[worker]}",
            "status",
            saga_id,
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    def listener_rows(self, saga_ids: list[str]) -> dict[str, tuple[str, int]]:
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT saga_id, status, last_seq FROM orders"),
                ).all()
        except sa.exc.SQLAlchemyError:
            return {}
        finally:
            engine.dispose()
        wanted = set(saga_ids)
        return {r.saga_id: (r.status, r.last_seq) for r in rows if r.saga_id in wanted}


async def _bounded(coros: list[Any], limit: int = 16) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


async def wait_finished(
    life: Lifecycle, sagas: list[str], *, timeout: float, workers: dict[str, Process]
) -> None:
    """Until every saga shows a resting lifecycle event, or ``timeout``; never raises (the
    verdict counts what is missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [
            s
            for s in sagas
            if oracle.resting_status(oracle.unique_by_seq(life.events.get(s, []))[0]) is None
        ]
        if not pending:
            return
        await asyncio.sleep(0.5)


async def judge(
    cluster: ChaosCluster,
    life: Lifecycle,
    submitted: Submitted,
    verdict: Verdict,
    *,
    settle_timeout: float,
    cli_samples: int = 1,
) -> Verdict:
    """Wait for the sagas to finish (up to ``settle_timeout``), then apply every invariant."""
    ids = list(submitted.sagas)
    verdict.submitted += len(ids)
    await wait_finished(life, ids, timeout=settle_timeout, workers=cluster.workers)
    shown: dict[str, str | None] = {}
    for saga_id, planned in submitted.sagas.items():
        shown[saga_id] = oracle.judge_lifecycle(verdict, planned, life.events.get(saga_id, []))
    views = await cluster.order_views([p.order_id for p in submitted.sagas.values()])
    for saga_id, planned in submitted.sagas.items():
        oracle.judge_effects(verdict, planned, shown[saga_id], views[planned.order_id])
    stats = await cluster.stack.admin("GET", "/admin/stats")
    oracle.judge_idempotency(verdict, stats)
    by_saga = oracle.ledgers(stats)
    for saga_id, planned in submitted.sagas.items():
        oracle.judge_ledger(verdict, planned, shown[saga_id], by_saga.get(saga_id, {}))
    oracle.judge_recovery(verdict, life.terminal_seen)
    await _judge_status(cluster, life, submitted, verdict, shown, cli_samples)
    await _judge_listener(cluster, life, submitted, verdict, shown)
    for proc in [*cluster.workers.values(), cluster.listener.process]:
        if proc is not None and not proc.alive():  # a fault stalls a worker, never ends it
            verdict.other.add(proc.name, f"{proc.name} died: {proc.output()[-300:]!r}")
    for saga_id in sorted(verdict.troubled(besides=("status_failures",)))[:40]:
        verdict.timelines[saga_id] = oracle.timeline(life.events.get(saga_id, []))
    return verdict


async def _judge_status(
    cluster: ChaosCluster,
    life: Lifecycle,
    submitted: Submitted,
    verdict: Verdict,
    shown: dict[str, str | None],
    cli_samples: int,
) -> None:
    ids = list(submitted.sagas)
    answers = await cluster.statuses(ids)
    for worker, by_saga in answers.items():
        for saga_id, (code, body) in by_saga.items():
            want = shown[saga_id]
            got = body.get("status") if isinstance(body, dict) else None
            if code != 200 or (want is not None and got != want):
                verdict.status_failures.add(
                    saga_id,
                    f"{worker} GET /sagas/{saga_id}/: HTTP {code} {str(body)[:160]}"
                    f" (lifecycle shows {want})",
                )
    finished = [s for s in ids if shown[s] is not None]
    asked = [(w, s) for w in cluster.ports for s in finished[:cli_samples]]
    replies = await asyncio.gather(*(cluster.cli_status(s, w) for w, s in asked))
    for (worker, saga_id), (code, out) in zip(asked, replies, strict=True):
        try:
            status = json.loads(out).get("status") if code == 0 else None
        except ValueError:
            status = None
        if status != shown[saga_id]:
            verdict.status_failures.add(
                saga_id,
                f"{worker} `python -m coordinator status {saga_id}`: exit {code} "
                f"{out.strip()[-200:]!r} (lifecycle shows {shown[saga_id]})",
            )


async def _judge_listener(
    cluster: ChaosCluster,
    life: Lifecycle,
    submitted: Submitted,
    verdict: Verdict,
    shown: dict[str, str | None],
    timeout: float = 30.0,
) -> None:
    ids = list(submitted.sagas)
    last_seq = {
        s: max((e.seq for e in life.events.get(s, [])), default=0) for s in ids
    }  # the coordinator's seq as the lifecycle shows it

    def mismatches() -> Verdict:
        probe = Verdict(verdict.scenario)
        rows = cluster.listener_rows(ids)
        for saga_id, planned in submitted.sagas.items():
            oracle.judge_listener(
                probe, planned, shown[saga_id], last_seq[saga_id], rows.get(saga_id)
            )
        return probe

    deadline = time.monotonic() + timeout
    probe = mismatches()
    while probe.listener_mismatches and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        probe = mismatches()
    verdict.listener_mismatches.merge(probe.listener_mismatches)
