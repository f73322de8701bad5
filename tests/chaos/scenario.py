"""Sizes of the reduced and full runs, and the frame every scenario runs in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from coordinator import SagaClient
from tests.chaos import report
from tests.chaos.cluster import ChaosCluster, judge
from tests.chaos.oracle import Fault, Verdict
from tests.chaos.workload import Submitted
from tests.integration.stack import Lifecycle


@dataclass(frozen=True)
class Sizes:
    """How much chaos: ``REDUCED`` runs in ``make test`` (<= 8 minutes), ``FULL`` in
    ``make chaos``."""

    kill_sagas: int
    kills: int
    kill_window: float  # seconds over which the sagas are submitted
    broker_sagas: int
    broker_rounds: int  # each: one SIGTERM and one SIGKILL of the broker
    poison_rounds: int
    poison_sagas: int
    topic_starts: int  # fresh clusters (prefixes) whose workers start before any topic
    topic_workers: int  # coordinator workers per such cluster
    topic_sagas: int
    slow_sagas: int
    listener_outage: float  # seconds the listener database is down (0: scenario skipped)
    settle: float  # seconds the sagas get to finish after the last fault


REDUCED = Sizes(
    kill_sagas=200,
    kills=3,
    kill_window=30.0,
    broker_sagas=80,
    broker_rounds=1,
    poison_rounds=1,
    poison_sagas=40,
    topic_starts=5,
    topic_workers=1,
    topic_sagas=8,
    slow_sagas=6,
    listener_outage=0.0,
    settle=45.0,
)
FULL = Sizes(
    kill_sagas=1000,
    kills=10,
    kill_window=200.0,
    broker_sagas=300,
    broker_rounds=2,
    poison_rounds=3,
    poison_sagas=150,
    topic_starts=20,
    topic_workers=2,
    topic_sagas=8,
    slow_sagas=20,
    listener_outage=30.0,
    settle=120.0,
)
SIZES = FULL if report.mode() == "full" else REDUCED


def xfail_reduced(reason: str) -> pytest.MarkDecorator:
    """A known bug, not fixed yet: strict xfail in the reduced run (``make test``) only, so
    CI stays green and fails loudly once the fix lands; ``make chaos`` always asserts."""
    return pytest.mark.xfail(report.mode() == "reduced", reason=reason, strict=True)


#: open at landing time (21:22 UTC), seen in every SIGKILL and broker run


@dataclass
class Run:
    """A scenario in progress: its client, lifecycle reader, submissions and faults."""

    cluster: ChaosCluster
    client: SagaClient
    life: Lifecycle
    verdict: Verdict
    submitted: Submitted = field(default_factory=Submitted)

    def fault(self, label: str) -> None:
        now = time.monotonic()
        self.verdict.faults.append(Fault(label, now, self.submitted.before(now)))

    async def finish(self, *, settle: float = SIZES.settle) -> Verdict:
        """Judge every invariant, record the table row, keep logs if broken, assert."""
        await judge(self.cluster, self.life, self.submitted, self.verdict, settle_timeout=settle)
        return self.verdict


@asynccontextmanager
async def scenario(
    cluster: ChaosCluster, name: str, *, verdict: Verdict | None = None, last: bool = True
) -> AsyncIterator[Run]:
    """Open a client and a lifecycle reader; afterwards record the row and assert.

    The scenario body calls ``run.finish()`` (and may add its own findings to
    ``run.verdict.other``) before leaving the block. A scenario of several rounds (one
    cluster each) passes one ``verdict`` to every round and ``last=False`` but to the last.
    """
    settings = cluster.settings
    verdict = verdict or Verdict(name, started=cluster.created)
    async with (
        SagaClient(settings) as client,
        Lifecycle(cluster.stack.bootstrap, settings.topics.lifecycle) as life,
    ):
        yield Run(cluster, client, life, verdict)
    if not verdict.ok:
        where = cluster.keep_logs(f"{name}-{cluster.prefix}".replace(" ", "-"))
        verdict.logs.append(str(where))
    if last:
        report.record(verdict)
        assert verdict.ok, verdict.explain()
