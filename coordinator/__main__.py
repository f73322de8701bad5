"""``python -m coordinator COMMAND``: worker, status, start, cancel, retry-compensation, topics."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from coordinator.errors import SagaError
from coordinator.queries import format_view
from coordinator.settings import CoordinatorSettings


def _worker(rest: list[str]) -> int:
    from coordinator.app import create_app

    settings = CoordinatorSettings()
    coordinator = create_app(settings)
    # faust and aiokafka build a DEBUG record per message sent (~7% of a busy worker's
    # CPU) because mode leaves the root logger at DEBUG and filters in the handler.
    for name in ("faust.topics", "aiokafka"):
        logging.getLogger(name).setLevel(logging.INFO)
    args = rest or ["-l", "info"]
    if not settings.web_enabled:
        args = [*args, "--without-web"]  # faust's CLI default would re-enable it
    sys.argv = ["coordinator", "worker", *args]
    coordinator.app.main()
    return 0


async def _command(args: argparse.Namespace) -> int:
    from coordinator.client import SagaClient, ensure_topics

    settings = CoordinatorSettings()
    if args.command == "topics":
        await ensure_topics(settings, args.services)
        print("topics ready")
        return 0
    async with SagaClient(settings, web_url=args.url) as client:
        if args.command == "status":
            view = await client.get(args.saga_id)
            print(json.dumps(view, indent=2) if args.json else format_view(view))
        elif args.command == "start":
            saga_id = await client.start(
                args.saga_type,
                json.loads(args.input),
                saga_id=args.id,
                business_key=args.business_key,
            )
            print(saga_id)
        elif args.command == "cancel":
            await client.cancel(args.saga_id)
            print(f"cancel sent for {args.saga_id}")
        elif args.command == "retry-compensation":
            await client.retry_compensation(args.saga_id)
            print(f"compensation retry sent for {args.saga_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        return _worker(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m coordinator")
    parser.add_argument("--url", help="coordinator web URL (default from SAGA_WEB_HOST/PORT)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a coordinator worker (Faust options follow)")
    status = sub.add_parser("status", help="print a saga's state")
    status.add_argument("saga_id")
    status.add_argument("--json", action="store_true")
    start = sub.add_parser("start", help="start a saga")
    start.add_argument("saga_type")
    start.add_argument("input", help="the saga input as JSON")
    start.add_argument("--id")
    start.add_argument("--business-key")
    for name in ("cancel", "retry-compensation"):
        sub.add_parser(name).add_argument("saga_id")
    topics = sub.add_parser("topics", help="create the saga topics")
    topics.add_argument("services", nargs="*")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_command(args))
    except SagaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
