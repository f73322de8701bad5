"""``python -m listeners``: run the worker, migrate, query orders, replay.

Commands::

    python -m listeners worker [faust worker options, e.g. -l info]
    python -m listeners migrate [--database-url URL]
    python -m listeners order-status ORDER_ID [--database-url URL] [--json]
    python -m listeners orders --status STATUS [--limit N] [--database-url URL]
    python -m listeners replay [--database-url URL]

Settings come from ``LISTENER_*`` variables (see ``ListenerSettings``);
``--database-url`` overrides ``LISTENER_DATABASE_URL`` for one command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from tenacity import Retrying, retry_if_exception_type, stop_never, wait_exponential

from listeners.db import create_db_engine, session_factory
from listeners.errors import ListenerError
from listeners.migrations import require_head, upgrade
from listeners.orders.queries import OrderView, get_order, list_orders
from listeners.replay import replay
from listeners.settings import ListenerSettings

__all__ = ["main"]

log = logging.getLogger("listeners")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m listeners", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="run the listener Faust worker (faust options follow)")
    for name, text in (
        ("migrate", "upgrade the listener database to the newest schema"),
        ("replay", "rebuild the listener database from the start of the lifecycle topic"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--database-url", help="instead of LISTENER_DATABASE_URL")
    status = commands.add_parser("order-status", help="an order's status, service, timeline")
    status.add_argument("order_id")
    status.add_argument("--database-url", help="instead of LISTENER_DATABASE_URL")
    status.add_argument("--json", action="store_true", help="print JSON")
    listing = commands.add_parser("orders", help="orders in a status, newest first")
    listing.add_argument("--status", required=True)
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--database-url", help="instead of LISTENER_DATABASE_URL")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = ListenerSettings()
    except ValidationError as exc:
        print(f"error: invalid LISTENER_* settings: {exc}", file=sys.stderr)
        return 1
    if argv[:1] == ["worker"]:
        return _worker(settings, argv)
    args = _parser().parse_args(argv)
    url = getattr(args, "database_url", None) or settings.database_url
    try:
        if args.command == "migrate":
            upgrade(url)
            print(f"listener database {_shown(url)} is at head")
        elif args.command == "order-status":
            _order_status(url, args.order_id, as_json=args.json)
        elif args.command == "orders":
            _orders(url, args.status, args.limit)
        elif args.command == "replay":
            report = asyncio.run(replay(settings, database_url=url))
            print(
                f"replayed {report.records} records up to offsets {report.end_offsets}: "
                f"applied {report.applied}, stale {report.stale}, ignored {report.ignored}, "
                f"dead letters {len(report.dead_letters)}"
            )
    except ListenerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _worker(settings: ListenerSettings, argv: list[str]) -> int:
    from listeners.app import create_app

    engine = create_db_engine(settings.database_url)
    try:
        # The database may not be up yet: wait for it rather than crash at start.
        for attempt in Retrying(
            retry=retry_if_exception_type(OperationalError),
            wait=wait_exponential(multiplier=0.2, max=settings.retry_max_delay.total_seconds()),
            stop=stop_never,
            before_sleep=lambda state: log.warning("waiting for the listener database..."),
        ):
            with attempt:
                require_head(engine)
    except ListenerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    built = create_app(settings)
    sys.argv = [sys.argv[0], *argv]
    built.app.main()
    return 0


def _shown(url: str) -> str:
    return create_db_engine(url).url.render_as_string(hide_password=True)


def _order_status(url: str, order_id: str, *, as_json: bool) -> None:
    engine = create_db_engine(url)
    try:
        with session_factory(engine)() as session:
            order = get_order(session, order_id)
    finally:
        engine.dispose()
    print(order.model_dump_json(indent=2) if as_json else _render(order))


def _render(order: OrderView) -> str:
    lines = [
        f"order {order.order_id} (saga {order.saga_id})",
        f"  status:   {order.status}",
        f"  with:     {order.current_service or '-'} ({order.current_step or '-'})",
    ]
    if order.last_error:
        lines.append(f"  error:    {order.last_error}")
    lines.append("  timeline:")
    for entry in order.timeline:
        where = " ".join(filter(None, [entry.step, f"@{entry.service}" if entry.service else None]))
        attempt = f" attempt {entry.attempt}" if entry.attempt else ""
        error = f"  [{entry.error}]" if entry.error else ""
        lines.append(
            f"    {entry.seq:>3} {entry.occurred_at.isoformat()} {entry.type:<24} {where}"
            f"{attempt}{error}"
        )
    return "\n".join(lines)


def _orders(url: str, status: str, limit: int) -> None:
    engine = create_db_engine(url)
    try:
        with session_factory(engine)() as session:
            found = list_orders(session, status, limit=limit)
    finally:
        engine.dispose()
    print(json.dumps([order.model_dump(mode="json") for order in found], indent=2))
