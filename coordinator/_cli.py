"""``python -m coordinator COMMAND``: run a worker, start and operate sagas, read dead letters.

Every command reports what happened. The exit code says which outcome it was
(:class:`Exit`); a user's mistake is one ``error: …`` line on stderr that names the fix,
never a traceback. ``--help`` never has side effects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import ValidationError
from pydantic_settings import SettingsError

from coordinator._cli_parser import LOG_LEVELS, Exit, build_parser, env_name, fail
from coordinator._errors import (
    CommandError,
    CoordinatorUnavailable,
    DefinitionError,
    SagaError,
    SagaNotFoundError,
    SagaRejected,
    SagaStatusError,
)
from coordinator._settings import CoordinatorSettings

__all__ = ["Exit", "main"]


class UsageError(Exception):
    """A mistake in the command line or the environment; the message names the fix."""


_FIELD = re.compile(r'field "(\w+)"')
_EXAMPLES = {
    "service_urls": '{"payment": "http://payments:8000"}',
    "definitions": "examples.order_fulfillment.saga:ORDER_SAGA",
}


def load_settings() -> CoordinatorSettings:
    """The settings from the environment; a bad variable is a :class:`UsageError`."""
    try:
        return CoordinatorSettings()
    except SettingsError as exc:
        match = _FIELD.search(str(exc))
        field = match.group(1) if match else "?"
        example = _EXAMPLES.get(field, "")
        raise UsageError(
            f"{env_name(field)} is not valid JSON"
            + (f": write it as '{example}'" if example else "")
        ) from exc
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        raise UsageError(
            f"{env_name(field)}={error.get('input')!r}: {error['msg']}"
            + (f"; e.g. '{_EXAMPLES[field]}'" if field in _EXAMPLES else "")
        ) from exc


# -- worker ------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    """Run a coordinator worker in this process (until SIGTERM/SIGINT)."""
    from coordinator._app import FaustSettingsError, create_app
    from coordinator._lease import LeaseSettingsError

    settings = load_settings()
    if not settings.definitions:
        raise UsageError(
            "no saga definitions: set SAGA_DEFINITIONS=package.module:NAME[,...] "
            f"(e.g. {_EXAMPLES['definitions']}); a worker without them rejects every saga"
        )
    try:
        coordinator = create_app(settings)
    except DefinitionError as exc:
        raise UsageError(f"SAGA_DEFINITIONS: {exc}") from exc
    except (LeaseSettingsError, FaustSettingsError) as exc:  # Faust env against our rules
        raise UsageError(str(exc)) from exc
    # faust and aiokafka build a DEBUG record per message sent (~7% of a busy worker's
    # CPU) because mode leaves the root logger at DEBUG and filters in the handler.
    for name in ("faust.topics", "aiokafka"):
        logging.getLogger(name).setLevel(logging.INFO)
    faust_args = ["worker", "-l", LOG_LEVELS[args.loglevel]]
    if not settings.web_enabled:
        faust_args.append("--without-web")  # faust's CLI default would re-enable it
    sys.argv = ["coordinator", *faust_args]
    coordinator.app.main()
    return Exit.OK


# -- commands that talk to a running coordinator -----------------------------------------


def _read_json(raw: str, name: str = "INPUT", what: str = "saga input") -> dict[str, Any]:
    if raw == "-":
        raw = sys.stdin.read()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UsageError(
            f"{name} is not valid JSON ({exc}): pass the {what} as a JSON object, "
            """e.g. '{"order_id": "42"}', or - to read it from stdin"""
        ) from exc
    if not isinstance(value, dict):
        raise UsageError(
            f"{name} must be a JSON object ({{...}}) matching the {what} model, "
            f"not a JSON {type(value).__name__}"
        )
    return value


async def _run(args: argparse.Namespace) -> int:
    from coordinator._client import SagaClient

    settings = load_settings()
    if args.command == "start":  # everything that can be checked here is, before any I/O
        from coordinator._commands import start_message

        args.data = _read_json(args.input)
        if args.id is None and args.business_key is None:
            raise UsageError(
                f"start {args.saga_type}: pass --id ID or --business-key KEY (the id is then "
                f"{args.saga_type}:KEY); ids are never random, so a retried start cannot run "
                "the saga twice"
            )
        args.saga_id = start_message(
            args.saga_type,
            args.data,
            saga_id=args.id,
            business_key=args.business_key,
            version=args.version,
        ).saga_id
    if args.command == "resolve" and args.output is not None:
        args.output = _read_json(args.output, "--output", "step output")
    if args.command == "topics":
        from coordinator._topics import ensure_topics

        await ensure_topics(settings, args.services)
        print("topics ready")
        return Exit.OK
    if args.command == "dead-letters":
        from coordinator._cli_deadletters import dead_letters

        return await dead_letters(settings, args)
    async with SagaClient(settings, web_url=args.url) as client:
        command: Callable[[SagaClient, argparse.Namespace], Awaitable[int]] = _COMMANDS[
            args.command
        ]
        return await command(client, args)


async def _status(client: Any, args: argparse.Namespace) -> int:
    from coordinator._queries import format_view

    view = await client.get(args.saga_id)
    print(view.model_dump_json(indent=2) if args.json else format_view(view))
    return Exit.OK


async def _start(client: Any, args: argparse.Namespace) -> int:
    if not args.no_wait:
        existing = None
        with contextlib.suppress(CoordinatorUnavailable):  # the start below still answers
            existing = await client.find(args.saga_id)
        if existing is not None:
            print(args.saga_id)
            print(
                f"saga {args.saga_id} already exists ({existing.saga_type}, {existing.status}); "
                "starting it again does nothing",
                file=sys.stderr,
            )
            return Exit.OK
    saga_id = await client.start(
        args.saga_type,
        args.data,
        saga_id=args.id,
        business_key=args.business_key,
        version=args.version,
        confirm=not args.no_wait,
        timeout=args.timeout,
    )
    print(saga_id)
    if args.no_wait:
        print(
            f"start sent for saga {saga_id} (not confirmed: --no-wait); "
            f"see `python -m coordinator status {saga_id}`",
            file=sys.stderr,
        )
    else:
        print(f"saga {saga_id} started ({args.saga_type})", file=sys.stderr)
    return Exit.OK


async def _cancel(client: Any, args: argparse.Namespace) -> int:
    view = await client.cancel(
        args.saga_id, args.reason, confirm=not args.no_wait, timeout=args.timeout
    )
    if view is None:
        print(f"cancel sent for saga {args.saga_id} (not confirmed: --no-wait)")
    elif view.status == "running":
        print(
            f"cancel accepted: saga {args.saga_id} compensates once its step in flight "
            f"({view.current_step}) answers"
        )
    else:
        print(f"cancel accepted: saga {args.saga_id} is {view.status}")
    return Exit.OK


async def _retry(client: Any, args: argparse.Namespace) -> int:
    view = await client.retry_compensation(
        args.saga_id, confirm=not args.no_wait, timeout=args.timeout
    )
    if view is None:
        print(f"compensation retry sent for saga {args.saga_id} (not confirmed: --no-wait)")
    else:
        print(f"compensation resumed: saga {args.saga_id} is {view.status}")
    return Exit.OK


async def _resolve(client: Any, args: argparse.Namespace) -> int:
    view = await client.resolve(
        args.saga_id,
        args.resolution,
        step=args.step,
        output=args.output,
        confirm=not args.no_wait,
        timeout=args.timeout,
    )
    resolution = args.resolution.replace("_", "-")
    if view is None:
        print(f"resolve --{resolution} sent for saga {args.saga_id} (not confirmed: --no-wait)")
    else:
        print(f"resolved as {resolution}: saga {args.saga_id} is {view.status}")
    return Exit.OK


_COMMANDS: dict[str, Callable[[Any, argparse.Namespace], Awaitable[int]]] = {
    "status": _status,
    "start": _start,
    "cancel": _cancel,
    "retry-compensation": _retry,
    "resolve": _resolve,
}


# -- parser ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see :class:`Exit`)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "worker":
            return worker(args)
        # we report Kafka failures ourselves, as one line; aiokafka would log each retry
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        return asyncio.run(_run(args))
    except (UsageError, CommandError) as exc:
        fail(str(exc), Exit.USAGE)
    except SagaRejected as exc:
        fail(str(exc), Exit.REJECTED)
    except SagaNotFoundError as exc:
        fail(str(exc), Exit.NOT_FOUND)
    except SagaStatusError as exc:
        fail(str(exc), Exit.NOT_APPLICABLE)
    except CoordinatorUnavailable as exc:
        fail(str(exc), Exit.UNAVAILABLE)
    except KafkaError as exc:
        servers = load_settings().kafka_bootstrap_servers
        fail(
            f"Kafka at {servers}: {exc}: is the broker running, and is "
            "KAFKA_BOOTSTRAP_SERVERS right?",
            Exit.UNAVAILABLE,
        )
    except SagaError as exc:
        fail(str(exc), Exit.FAILED)
    except KeyboardInterrupt:
        return 130
