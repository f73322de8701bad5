"""``make demo``: the whole system, end to end, for a new user.

Provisions Kafka, migrates the listener database (SQLite at ``.demo/orders.db``, or
``DATABASE_URL``), starts the five HTTP services, a coordinator worker and a listener
worker as real processes, submits orders with a mix of injected failures, waits (with a
progress bar) until every order is terminal in the listener's database, prints counts per
status and a few timelines, checks every outcome against its injected failure and the
services' counters, then stops everything it started. Exits 1 if anything is off.

    python -m examples.order_fulfillment.demo [--orders 300] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from coordinator import CoordinatorSettings, SagaClient
from examples.order_fulfillment.models import CreateOrderRequest, LineItem
from examples.order_fulfillment.participants import service_urls
from examples.order_fulfillment.saga import ORDER_SAGA
from infra import kafka
from infra.processes import ROOT, ProcessGroup
from listeners import create_db_engine, session_factory
from listeners.orders import Order, get_order

TERMINAL = {"completed", "cancelled", "compensation_failed"}
SERVICES_READY = re.compile(r"services ready on (\S+)")

#: scenario -> (share of orders, expected final status, what is injected)
SCENARIOS: dict[str, tuple[float, str, str]] = {
    "ok": (0.70, "completed", "nothing"),
    "declined": (0.10, "cancelled", "card tok_declined (402)"),
    "out_of_stock": (0.05, "cancelled", "SKU-OOS (409)"),
    "shipping_outage": (0.07, "cancelled", "zip 99999: shipping 503 on every attempt"),
    "flaky_shipping": (0.08, "completed", "zip 55555: shipping 503 twice, then 201"),
}


def make_order(order_id: str, scenario: str, rng: random.Random) -> CreateOrderRequest:
    sku = "SKU-OOS" if scenario == "out_of_stock" else f"SKU-{rng.randint(1, 20)}"
    card = "tok_declined" if scenario == "declined" else "tok_visa"
    zip_code = {"shipping_outage": "99999", "flaky_shipping": "55555"}.get(scenario, "10001")
    return CreateOrderRequest(
        order_id=order_id,
        customer_id=f"cust-{rng.randint(1, 50)}",
        items=[LineItem(sku=sku, quantity=rng.randint(1, 3))],
        amount_cents=rng.randint(500, 20000),
        card_token=card,
        shipping_zip=zip_code,
    )


def progress(done: int, total: int, started: float) -> None:
    width = 40
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    print(
        f"\r  [{bar}] {done}/{total} terminal  {time.monotonic() - started:5.1f}s",
        end="",
        flush=True,
    )


async def submit(settings: CoordinatorSettings, orders: dict[str, CreateOrderRequest]) -> None:
    async with SagaClient(settings) as client:
        for order_id, order in orders.items():
            await client.start(
                ORDER_SAGA, order, saga_id=f"saga-{order_id}", business_key=order_id, wait=False
            )
        await client.flush()


def wait_terminal(engine: sa.Engine, total: int, timeout: float) -> dict[str, str]:
    started = time.monotonic()
    query = sa.select(Order.order_id, Order.status)
    statuses: dict[str, str] = {}
    while time.monotonic() - started < timeout:
        with engine.connect() as conn:
            statuses = {row.order_id: row.status for row in conn.execute(query)}
        done = sum(1 for s in statuses.values() if s in TERMINAL)
        progress(done, total, started)
        if done >= total:
            break
        time.sleep(0.5)
    print()
    return statuses


def print_report(engine: sa.Engine, statuses: dict[str, str], scenario_of: dict[str, str]) -> None:
    print("\nOrders by status (from the listener database):")
    for status, count in sorted(Counter(statuses.values()).items()):
        print(f"  {status:<22} {count:>5}")
    print("\nOrders by injected failure → final status:")
    table: Counter[tuple[str, str]] = Counter(
        (scenario_of[o], statuses.get(o, "missing")) for o in scenario_of
    )
    for (scenario, status), count in sorted(table.items()):
        print(f"  {scenario:<18} {SCENARIOS[scenario][2]:<44} → {status:<12} {count:>4}")
    sessions = session_factory(engine)
    print("\nWhat is the status of order X, and which service is it with?")
    for scenario in SCENARIOS:
        order_id = next((o for o, s in scenario_of.items() if s == scenario), None)
        if order_id is None:
            continue
        with sessions() as session:
            view = get_order(session, order_id)
        print(
            f"\n  order {order_id} ({scenario}): {view.status}, "
            f"with {view.current_service or '-'}"
            + (f", last error: {view.last_error}" if view.last_error else "")
        )
        for entry in view.timeline:
            where = f"{entry.step or '':<18} {entry.service or '':<13}"
            extra = f" attempt {entry.attempt}" if entry.attempt else ""
            err = f"  ({entry.error[:60]})" if entry.error else ""
            print(f"    {entry.seq:>3} {entry.type:<25} {where}{extra}{err}")


def verify(
    engine: sa.Engine,
    statuses: dict[str, str],
    scenario_of: dict[str, str],
    stats: dict[str, Any],
    charges: dict[str, list[Any]],
) -> list[str]:
    problems = [
        f"order {o} ({s}) ended {statuses.get(o)!r}, expected {SCENARIOS[s][1]!r}"
        for o, s in scenario_of.items()
        if statuses.get(o) != SCENARIOS[s][1]
    ]
    for name, svc in stats["services"].items():
        if svc["max_applications_per_key"] > 1:
            problems.append(f"service {name} applied an effect twice for one key")
    for order_id, found in charges.items():
        if found:
            problems.append(f"declined order {order_id} has charges {found}")
    sessions = session_factory(engine)
    with sessions() as session:
        for order_id in [o for o, s in scenario_of.items() if s == "flaky_shipping"][:20]:
            retries = [
                e
                for e in get_order(session, order_id).timeline
                if e.type == "step_failed" and e.step == "ship"
            ]
            if len(retries) != 2:
                problems.append(f"flaky order {order_id}: {len(retries)} visible ship retries")
    return problems


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)
    started_at = time.monotonic()
    print("1/6 Kafka:", end=" ", flush=True)
    bootstrap, kafka_started = kafka.up()
    print(
        f"Apache Kafka {kafka.KAFKA_VERSION} at {bootstrap}"
        + (" (started for the demo)" if kafka_started else " (already running)")
    )
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'orders.db'}"
    prefix = f"demo{int(time.time())}"
    procs = ProcessGroup(workdir / "logs")
    try:
        print(f"2/6 listener database: {sa.make_url(database_url).render_as_string()}")
        subprocess.run(
            [sys.executable, "-m", "listeners", "migrate", "--database-url", database_url],
            check=True,
            cwd=ROOT,
        )
        print("3/6 starting services, coordinator worker, listener worker...")
        services = procs.start(
            "services",
            ["-m", "examples.order_fulfillment.services", "--port", "0"],
            ready=SERVICES_READY,
        )
        base_url = services.wait_for_output(SERVICES_READY).group(1)
        settings = CoordinatorSettings(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=prefix,
            app_id=f"{prefix}-coordinator",
            partitions=4,
            datadir=workdir / "faust",
        )
        procs.start(
            "coordinator",
            ["-m", "coordinator", "worker", "-l", "warn"],
            env={
                "SAGA_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "SAGA_TOPIC_PREFIX": prefix,
                "SAGA_APP_ID": settings.app_id,
                "SAGA_PARTITIONS": "4",
                "SAGA_DATADIR": str(workdir / "faust"),
                "SAGA_WEB_PORT": str(args.web_port),
                "SAGA_DEFINITIONS": "examples.order_fulfillment.saga:ORDER_SAGA",
                "SAGA_SERVICE_URLS": json.dumps(service_urls(base_url)),
            },
            ready="coordinator ready",
        )
        procs.start(
            "listener",
            ["-m", "listeners", "worker", "-l", "warn"],
            env={
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "LISTENER_TOPIC_PREFIX": prefix,
                "LISTENER_APP_ID": f"{prefix}-listeners",
                "LISTENER_PARTITIONS": "4",
                "LISTENER_DATABASE_URL": database_url,
                "LISTENER_WEB_PORT": str(args.web_port + 1),
                "LISTENER_DATA_DIR": str(workdir / "listener-data"),
            },
            ready="LISTENER-READY",
        )

        rng = random.Random(args.seed)
        names, weights = list(SCENARIOS), [SCENARIOS[s][0] for s in SCENARIOS]
        scenario_of = {
            f"{prefix}-{i:04d}": rng.choices(names, weights)[0] for i in range(args.orders)
        }
        orders = {o: make_order(o, s, rng) for o, s in scenario_of.items()}
        print(
            f"4/6 submitting {len(orders)} orders "
            f"({', '.join(f'{n} {int(w * 100)}%' for n, w in zip(names, weights, strict=True))})"
        )
        asyncio.run(submit(settings, orders))
        print("5/6 waiting for every order to be terminal in the listener database")
        engine = create_db_engine(database_url)
        statuses = wait_terminal(engine, len(orders), args.timeout)
        print_report(engine, statuses, scenario_of)
        with httpx.Client(base_url=base_url) as http:
            stats = http.get("/admin/stats").json()
            charges = {
                o: http.get(f"/admin/orders/{o}").json()["charges"]
                for o, s in scenario_of.items()
                if s == "declined"
            }
        problems = verify(engine, statuses, scenario_of, stats, charges)
        engine.dispose()
        counters = {n: s["counters"] for n, s in stats["services"].items()}
        print("\nServices' own counters (each effect applied once per idempotency key):")
        for name, values in counters.items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            replays = stats["services"][name]["replays"]
            print(f"  {name:<14} {shown}; replays={replays}")
    finally:
        print("6/6 stopping everything the demo started")
        procs.stop_all()
        procs.close()
        if kafka_started:
            kafka.down()
    elapsed = time.monotonic() - started_at
    if problems:
        print(f"\nFAILED after {elapsed:.0f}s: {len(problems)} problem(s)")
        for problem in problems[:20]:
            print(f"  - {problem}")
        return 1
    print(
        f"\nOK: every order ended as its injected failure explains ({elapsed:.0f}s). "
        f"Logs: {workdir / 'logs'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.order_fulfillment.demo")
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--web-port", type=int, default=6066)
    parser.add_argument(
        "--workdir",
        default=str(ROOT / ".demo"),
        help="logs, Faust data and the SQLite database (recreated)",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
