"""Poison on the inbox, step and lifecycle topics, and sagas too large to run: other
sagas keep finishing, every poison record lands in the dead-letter topic with a reason,
and an oversized saga fails visibly without leaving an effect standing."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from tests.chaos import poison
from tests.chaos.cluster import SERVICES, ChaosCluster
from tests.chaos.conftest import ClusterFactory
from tests.chaos.scenario import SIZES, Run, scenario
from tests.chaos.workload import OK, Planned, plan, submit

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

OVERSIZED = 2 * poison.MB  # a saga input no coordinator should try to carry


@pytest.mark.timeout(SIZES.poison_rounds * 120 + SIZES.settle + 240)
async def test_poison_and_oversized_sagas(chaos_cluster: ClusterFactory) -> None:
    cluster = chaos_cluster()
    await cluster.start()
    topics = cluster.settings.topics
    name = f"poison x{SIZES.poison_rounds}"
    async with scenario(cluster, name) as run:
        step_topics = [topics.step(s) for s in SERVICES]
        await poison.raise_size_limits(
            cluster.stack.bootstrap, [topics.inbox, topics.lifecycle, *step_topics]
        )
        per_round = SIZES.poison_sagas // (SIZES.poison_rounds + 1)
        landed: list[poison.Landed] = []
        special: list[tuple[str, Planned]] = []
        for n in range(SIZES.poison_rounds):
            batch = plan(cluster.prefix, per_round, start=n * per_round)
            await submit(run.client, batch, run.submitted, interval=0.05)
            tag = f"{cluster.prefix}-p{n}"
            big = Planned(f"{tag}-big", f"{tag}-big", OK)
            rerouted = Planned(f"{tag}-wk", f"{tag}-wk", OK)
            records = [
                *poison.inbox_poison(topics.inbox, tag),
                *poison.step_poison(step_topics[n % len(step_topics)], tag),
                *poison.lifecycle_poison(topics.lifecycle, tag),
                poison.start_record(topics.inbox, big.saga_id, oversized(big), "oversized input"),
                poison.wrong_key_start(
                    topics.inbox, rerouted.saga_id, rerouted.order().model_dump()
                ),
            ]
            landed += await poison.inject(cluster.stack.bootstrap, records)
            run.fault(f"poison {n + 1}")
            special += [("oversized", big), ("wrong key", rerouted)]
            special.append(await client_oversized(run, f"{tag}-cbig"))
        rest = plan(cluster.prefix, per_round, start=SIZES.poison_rounds * per_round)
        await submit(run.client, rest, run.submitted, interval=0.05)
        await run.finish()
        await judge_poison(run, cluster, landed, special)


def oversized(planned: Planned) -> dict[str, object]:
    return planned.order(customer_id="c" * OVERSIZED).model_dump()


async def client_oversized(run: Run, saga_id: str) -> tuple[str, Planned]:
    """``SagaClient.start`` with an input over the size limit: refused at dispatch with an
    error, or accepted and then failing visibly like the raw record (judged later)."""
    planned = Planned(saga_id, saga_id, OK)
    try:
        await run.client.start(
            "order_fulfillment",
            oversized(planned),
            saga_id=saga_id,
            business_key=saga_id,
            confirm=True,  # the coordinator's verdict: started, or rejected with the reason
            timeout=timedelta(seconds=20),
        )
    except Exception as exc:  # the refusal must name the limit
        if "size" not in str(exc).lower() and "large" not in str(exc).lower():
            run.verdict.other.add(
                saga_id, f"client refused {saga_id} without naming the size: {exc!r}"
            )
        return "client refused", planned  # no dead letter owed; no effect may exist
    return "client oversized", planned


async def judge_poison(
    run: Run,
    cluster: ChaosCluster,
    landed: list[poison.Landed],
    special: list[tuple[str, Planned]],
) -> None:
    topics = cluster.settings.topics
    deadline = time.monotonic() + 15
    while True:
        letters = await poison.read_dead_letters(
            cluster.stack.bootstrap, topics.deadletters, cluster.stack.partitions
        )
        missing = poison.owed_but_missing(landed, letters)
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    for subject, text in missing:
        run.verdict.other.add(subject, text)
    keys = {d.key for d in letters if d.reason.strip()}
    views = await cluster.order_views([p.order_id for _, p in special])
    answers = await cluster.statuses([p.saga_id for _, p in special])
    for what, planned in special:
        events = run.life.unique(planned.saga_id)
        shown = events[-1].type if events else None
        statuses = {w: a[planned.saga_id] for w, a in answers.items()}
        view = views[planned.order_id]
        standing = bool(
            (view["order"] and view["order"]["status"] != "cancelled")
            or any(r["status"] != "released" for r in view["reservations"])
            or any(c["status"] != "refunded" for c in view["charges"])
            or any(s["status"] != "cancelled" for s in view["shipments"])
        )
        who = f"{what} saga {planned.saga_id}"
        if what == "wrong key" and shown == "saga_completed":
            continue  # re-routed to its partition and run: fine (effects judged like others)
        if what != "client refused" and not {planned.saga_id, f"not-{planned.saga_id}"} & keys:
            run.verdict.other.add(
                planned.saga_id, f"{who}: no dead letter keyed by it (lifecycle: {shown})"
            )
        if standing:
            run.verdict.other.add(planned.saga_id, f"{who}: effects left standing {view}"[:300])
        for worker, (code, body) in statuses.items():
            status = body.get("status") if isinstance(body, dict) else None
            if code == 200 and status in ("running", "compensating"):
                run.verdict.other.add(
                    planned.saga_id, f"{who}: {worker} says {status}, must fail visibly"
                )
