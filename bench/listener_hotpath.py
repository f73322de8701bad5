"""The listener worker's per-batch work, alone: ``python -m bench.listener_hotpath``.

Feeds lifecycle records shaped as the coordinator writes them (each saga's events of one
inbox batch in one batch-form record, made by the real state machine through
``coordinator.testing.SagaTestKit`` and packed by ``coordinator._lifecycle``) through the
code the listener worker's intake calls (``raw_message`` then ``BatchProcessor.process``),
in batches of ``--batch`` records, into the order-status listener on a fresh PostgreSQL
database migrated like a real one. No broker: what is left is decoding, the listener's
fold and the SQL of a batch.

Prints, per scenario, CPU per saga of this process (``time.process_time``: decoding,
handlers, SQLAlchemy, the driver) and of the PostgreSQL backends serving its
connections (``/proc/<pid>/stat``), SQL statements and commits per batch, and the
machine's load average (other processes share the 2 cores: compare runs made back to
back, alternating, and read ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event

from bench.gcstats import Pauses, apply_policy, rss_mb
from bench.ours_sagas import ALL_SAGAS, BenchInput
from coordinator._lifecycle import lifecycle_records
from coordinator.events import DeadLetter
from coordinator.testing import SagaTestKit
from listeners._app import raw_message
from listeners._db import create_db_engine, session_factory
from listeners._processor import BatchProcessor, Target
from listeners._registry import load_listeners
from listeners._settings import ListenerSettings

DEFAULT_PG_ADMIN = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "@@saga@@"
TOPIC = "hotpath.lifecycle"
FAILURE_RATE = {"simple": 0.0, "complex": 0.10}
SAGAS = {"simple": "bench_simple", "complex": "bench_complex"}


@dataclass
class Message:
    """What the consumer hands the intake (the fields ``raw_message`` reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


async def _templates(scenario: str) -> dict[int | None, tuple[bytes, list[bytes]]]:
    """Key and values of one saga's lifecycle records, per ``fail_at``, id left open."""
    saga = next(s for s in ALL_SAGAS if s.name == SAGAS[scenario])
    outcomes: list[int | None] = [None]
    if FAILURE_RATE[scenario]:
        outcomes += list(range(1, len(saga.steps) + 1))
    found = {}
    async with SagaTestKit(saga, start=datetime.now(UTC)) as kit:
        for fail_at in outcomes:
            saga_id = f"{PLACEHOLDER}{fail_at}"
            run = await kit.run(
                BenchInput(scenario=scenario, fail_at=fail_at),
                saga_id=saga_id,
                business_key=saga_id,
            )
            records = lifecycle_records(TOPIC, saga_id, [e.to_json() for e in run.events])
            found[fail_at] = (saga_id.encode(), [r.value for r in records])
    return found


def make_messages(
    templates: dict[int | None, tuple[bytes, list[bytes]]],
    scenario: str,
    sagas: int,
    prefix: str,
    seed: int = 7,
) -> list[Message]:
    """``sagas`` sagas' records; ids ``{prefix}-{n}``, failures drawn as the bench draws them."""
    rng = random.Random(seed)
    steps = len(templates) - 1
    messages: list[Message] = []
    for n in range(sagas):
        fail_at = rng.randint(1, steps) if rng.random() < FAILURE_RATE[scenario] else None
        placeholder, values = templates[fail_at]
        saga_id = f"{prefix}-{n:07d}".encode()
        for value in values:
            messages.append(
                Message(TOPIC, n % 8, len(messages), saga_id, value.replace(placeholder, saga_id))
            )
    return messages


def _backend_cpu(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) of the given PostgreSQL backends so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


@dataclass
class Figures:
    sagas: int
    batches: int
    cpu_s: float
    pg_cpu_s: float
    wall_s: float
    statements: int
    commits: int
    dead_letters: int

    def line(self, label: str) -> str:
        return (
            f"{label:8} sagas {self.sagas:6d} batches {self.batches:4d} | "
            f"listener {1000 * self.cpu_s / self.sagas:.3f} ms/saga | "
            f"postgres {1000 * self.pg_cpu_s / self.sagas:.3f} ms/saga | "
            f"wall {1000 * self.wall_s / self.batches:.1f} ms/batch | "
            f"sql {self.statements / self.batches:.1f} statements, "
            f"{self.commits / self.batches:.1f} commits per batch | "
            f"dead letters {self.dead_letters}"
        )


class HotPath:
    """The processor the listener worker builds, on one database, with its counters."""

    def __init__(self, url: str) -> None:
        settings = ListenerSettings(order_saga_types=[*SAGAS.values(), "bench_medium"])
        listeners = load_listeners([], settings)
        self.engine = create_db_engine(url)
        self.pids: set[int] = set()
        event.listen(self.engine, "connect", self._on_connect)
        self.statements = self.commits = 0
        event.listen(self.engine, "before_cursor_execute", self._on_statement)
        event.listen(self.engine, "commit", self._on_commit)
        self.dead: list[DeadLetter] = []
        self.processor = BatchProcessor(
            targets=[Target(session_factory(self.engine), listeners)],
            dead_letters=self._dead_letter,
            agent="hotpath.apply",
            max_event_bytes=settings.max_event_bytes,
        )

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        self.pids.add(dbapi_connection.info.backend_pid)

    def _on_statement(
        self, _conn: Any, _cursor: Any, _sql: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        # what the server executes: an executemany is one statement per parameter row
        self.statements += len(parameters) if many else 1

    def _on_commit(self, _conn: Any) -> None:
        self.commits += 1

    async def _dead_letter(self, letter: DeadLetter) -> None:
        self.dead.append(letter)

    async def feed(self, messages: Sequence[Message], batch: int) -> Figures:
        statements, commits, dead = self.statements, self.commits, len(self.dead)
        cpu, pg, wall = time.process_time(), _backend_cpu(list(self.pids)), time.perf_counter()
        batches = 0
        for start in range(0, len(messages), batch):
            chunk = messages[start : start + batch]
            await self.processor.process([raw_message(m) for m in chunk])
            batches += 1
        return Figures(
            sagas=len({m.key for m in messages}),
            batches=batches,
            cpu_s=time.process_time() - cpu,
            pg_cpu_s=_backend_cpu(list(self.pids)) - pg,
            wall_s=time.perf_counter() - wall,
            statements=self.statements - statements,
            commits=self.commits - commits,
            dead_letters=len(self.dead) - dead,
        )


def _load_average() -> str:
    """The machine's one-minute load average (other processes share the cores)."""
    return Path("/proc/loadavg").read_text().split()[0]


def _fresh_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
    url = f"{url}/{name}"
    subprocess.run(
        [sys.executable, "-m", "listeners", "migrate", "--database-url", url],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return url


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run(args: argparse.Namespace) -> None:
    name = f"lstn_hotpath_{os.getpid()}_{int(time.time())}"
    url = _fresh_database(args.pg_admin_url, name)
    try:
        hot = HotPath(url)
        apply_policy(args.gc_policy)  # as the worker does once ready (coordinator._gc)
        for scenario in args.scenarios.split(","):
            templates = await _templates(scenario)
            warm = make_messages(templates, scenario, args.batch, f"{scenario}-warm")
            await hot.feed(warm, args.batch)
            for r in range(args.rounds):
                messages = make_messages(templates, scenario, args.sagas, f"{scenario}-{r}")
                load = _load_average()
                with Pauses() as pauses:
                    figures = await hot.feed(messages, args.batch)
                print(f"{figures.line(scenario)} | load {load}", flush=True)
                if args.gc_pauses:
                    print("\n".join(pauses.lines(figures.sagas, figures.wall_s)), flush=True)
                    print(f"  RSS {rss_mb():.0f} MB", flush=True)
        hot.engine.dispose()
    finally:
        _drop_database(args.pg_admin_url, name)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.listener_hotpath", description=__doc__)
    p.add_argument("--scenarios", default="simple,complex", help="simple,complex")
    p.add_argument("--sagas", type=int, default=5000, help="sagas per round")
    p.add_argument("--batch", type=int, default=500, help="records per batch (intake)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--gc-policy", default="tuned", help="off, tuned, young=N,... (gcpauses)")
    p.add_argument("--gc-pauses", action="store_true", help="print GC pauses per round")
    p.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN))
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
