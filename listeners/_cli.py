"""``python -m listeners``: run workers, migrate, query and replay any listener.

Commands (LISTENER is ``module:attribute`` or a built-in name such as ``orders``; with
none given, ``LISTENER_LISTENERS`` applies, by default the order listener)::

    python -m listeners worker [LISTENER ...] [-l LEVEL] [-- faust worker options]
    python -m listeners migrate [LISTENER ...] [--database-url URL]
    python -m listeners revision LISTENER -m MESSAGE [--database-url URL] [--empty]
    python -m listeners get LISTENER KEY [--json] [--database-url URL]
    python -m listeners list LISTENER [--where ATTR=VALUE ...] [--limit N]
    python -m listeners replay [LISTENER ...] [--into URL] [--no-swap] [--force]
    python -m listeners order-status ORDER_ID      (= get orders ORDER_ID)
    python -m listeners orders --status STATUS     (= list orders --where status=STATUS)

Settings come from ``LISTENER_*`` variables (see ``ListenerSettings``); ``--database-url``
overrides the listeners' database for one command. No command touches a database or
the broker before its arguments are valid, and ``--help`` never does. Exit codes are
those of ``python -m coordinator``: 0 done, 1 unexpected failure, 2 a wrong command line,
setting or database schema (the line names the fix), 4 no such entity, 6 the database
does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from tenacity import Retrying, retry_if_exception, stop_never, wait_exponential

from coordinator._cli_parser import Exit
from listeners._databases import held_listeners
from listeners._db import (
    create_db_engine,
    hide_password,
    is_transient,
    lacks_schema,
    schema_fix,
    session_factory,
    ships_with_package,
)
from listeners._declarative import Listener
from listeners._errors import (
    EntityNotFoundError,
    ListenerConfigError,
    ListenerError,
    SchemaLagsModelError,
)
from listeners._migrations import require_head, revision, upgrade
from listeners._queries import EntityView, get_entity, list_entities
from listeners._registry import BUILTIN, load_listener, load_listeners
from listeners._replay import replay
from listeners._settings import ListenerSettings

__all__ = ["main"]

log = logging.getLogger("listeners")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m listeners",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    named: dict[str, Any] = {
        "nargs": "*",
        "metavar": "LISTENER",
        "help": "module:attribute or built-in name",
    }
    url: dict[str, Any] = {"help": "database instead of LISTENER_DATABASE_URL(S)"}

    worker = commands.add_parser(
        "worker",
        help="run a listener worker",
        epilog="Options after -- go to `faust worker` (e.g. -- --without-web).",
    )
    worker.add_argument("listeners", **named)
    worker.add_argument("-l", "--loglevel", default="warn", help="faust log level")

    migrate = commands.add_parser("migrate", help="upgrade listener tables to head")
    migrate.add_argument("listeners", **named)
    migrate.add_argument("--database-url", **url)

    new = commands.add_parser("revision", help="write a listener migration from its model")
    new.add_argument("listener", metavar="LISTENER")
    new.add_argument("-m", "--message", required=True)
    new.add_argument("--empty", action="store_true", help="do not autogenerate")
    new.add_argument("--database-url", **url)

    get = commands.add_parser("get", help="one entity: newest saga, timeline, history")
    get.add_argument("listener", metavar="LISTENER")
    get.add_argument("key")
    get.add_argument("--json", action="store_true", help="print JSON")
    get.add_argument("--database-url", **url)

    listing = commands.add_parser("list", help="entities, most recently updated first")
    listing.add_argument("listener", metavar="LISTENER")
    listing.add_argument("--where", action="append", default=[], metavar="ATTR=VALUE")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--database-url", **url)

    rebuild = commands.add_parser(
        "replay", help="rebuild listener tables from the lifecycle topic into a fresh database"
    )
    rebuild.add_argument("listeners", **named)
    rebuild.add_argument("--database-url", help="the live database (default: settings)")
    rebuild.add_argument("--into", help="fresh database to build (default: derived, new)")
    rebuild.add_argument("--no-swap", action="store_true", help="build only; do not swap")
    rebuild.add_argument("--force", action="store_true", help="even if the topic lost events")

    status = commands.add_parser("order-status", help="= get orders ORDER_ID")
    status.add_argument("key", metavar="ORDER_ID")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--database-url", **url)
    orders = commands.add_parser("orders", help="= list orders --where status=STATUS")
    orders.add_argument("--status", required=True)
    orders.add_argument("--limit", type=int, default=20)
    orders.add_argument("--database-url", **url)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    faust_args: list[str] = []
    if argv[:1] == ["worker"] and "--" in argv:
        cut = argv.index("--")
        argv, faust_args = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)  # --help and usage errors exit here, untouched
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = ListenerSettings()
    except ValidationError as exc:
        print(f"error: invalid LISTENER_* settings: {exc}", file=sys.stderr)
        return Exit.USAGE
    try:
        if args.command == "worker":
            return _worker(settings, args, faust_args)
        _run(settings, args)
    except EntityNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.NOT_FOUND
    except ListenerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        if is_transient(exc):
            print(
                f"error: listener database does not answer: {first}; check the database URL "
                "and that the database server runs",
                file=sys.stderr,
            )
            return Exit.UNAVAILABLE
        # Each command names the commands that fix a table or column the database lacks
        # (SchemaLagsModelError); one reaching here is still a schema, not a bug.
        gap = "; the database lacks a table or column a listener uses" if lacks_schema(exc) else ""
        print(f"error: listener database failed: {first}{gap}", file=sys.stderr)
        return Exit.USAGE if gap else Exit.FAILED
    return Exit.OK


def _url(settings: ListenerSettings, args: argparse.Namespace, listener: Listener[Any]) -> str:
    return getattr(args, "database_url", None) or settings.database_url_of(listener.name)


def _run(settings: ListenerSettings, args: argparse.Namespace) -> None:
    command = args.command
    if command == "order-status":
        command, args.listener = "get", "orders"
    elif command == "orders":
        command, args.listener, args.where = "list", "orders", [f"status={args.status}"]
    if command == "migrate":
        named = load_listeners(args.listeners, settings)
        for url, group in _by_database(settings, args, named):
            upgrade(url, group)  # a fix names every listener the database holds
            for listener in group:
                print(f"listener {listener.name!r}: database {_shown(url)} is at head")
    elif command == "revision":
        listener = load_listener(args.listener, settings)
        path = revision(
            listener, _url(settings, args, listener), args.message, autogenerate=not args.empty
        )
        print(f"listener {listener.name!r}: wrote {path}")
    elif command == "get":
        listener = load_listener(args.listener, settings)
        entity = _query(
            _url(settings, args, listener),
            listener,
            lambda s: get_entity(s, listener, args.key),
            spec=args.listener,
        )
        print(entity.model_dump_json(indent=2) if args.json else _render(listener, entity))
    elif command == "list":
        listener = load_listener(args.listener, settings)
        filters = dict(_pair(item) for item in args.where)
        found = _query(
            _url(settings, args, listener),
            listener,
            lambda s: list_entities(s, listener, filters, limit=args.limit),
            spec=args.listener,
        )
        print(json.dumps([item.model_dump(mode="json") for item in found], indent=2))
    elif command == "replay":
        listeners = load_listeners(args.listeners, settings)
        report = asyncio.run(
            replay(
                settings,
                listeners=listeners,
                database_url=args.database_url,
                into=args.into,
                swap=not args.no_swap,
                force=args.force,
            )
        )
        print(report.summary())


def _by_database(
    settings: ListenerSettings, args: argparse.Namespace, listeners: Sequence[Listener[Any]]
) -> list[tuple[str, list[Listener[Any]]]]:
    """``listeners`` grouped by their database (in order)."""
    grouped: dict[str, list[Listener[Any]]] = {}
    for listener in listeners:
        grouped.setdefault(_url(settings, args, listener), []).append(listener)
    return list(grouped.items())


def _pair(item: str) -> tuple[str, str]:
    attr, sep, value = item.partition("=")
    if not sep or not attr:
        raise ListenerError(f"--where {item!r} is not ATTR=VALUE, e.g. --where status=completed")
    return attr, value


def _query(url: str, listener: Listener[Any], run: Any, *, spec: str) -> Any:
    """Run a read-only query; a database that is missing or not migrated names `migrate`.

    ``spec``: the listener as the command line named it (quoted in the fix of a database
    lacking a table or column of the model).
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        from pathlib import Path

        if not Path(parsed.database).exists():  # never create a file for a query
            raise ListenerConfigError(
                f"listener {listener.name!r}: database file {parsed.database} does not exist; "
                "check the database URL, or run `python -m listeners migrate` first"
            )
    engine = create_db_engine(url)
    try:
        require_head(engine, [listener])
        with session_factory(engine)() as session:
            return run(session)
    except SQLAlchemyError as exc:
        shipped = ships_with_package(listener.migrations)
        held = held_listeners(url) - {listener.name} if shipped else set()
        fix = schema_fix(
            exc,
            spec,
            _shown(url),
            rebuild=[spec, *sorted(held & BUILTIN.keys())] if shipped else [],
            unnamed=sorted(held - BUILTIN.keys()),
        )
        if not fix:
            raise
        first = str(exc).splitlines()[0]
        raise SchemaLagsModelError(f"listener database failed: {first}; {fix}") from exc
    finally:
        engine.dispose()


def _worker(settings: ListenerSettings, args: argparse.Namespace, faust_args: list[str]) -> int:
    from listeners._app import create_app
    from listeners._topics import ensure_topics

    try:
        listeners = load_listeners(args.listeners, settings)
    except ListenerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE
    for url, group in _by_database(settings, args, listeners):
        engine = create_db_engine(url)
        try:
            # The database may not be up yet: wait for it rather than crash at start.
            for attempt in Retrying(
                retry=retry_if_exception(is_transient),
                wait=wait_exponential(multiplier=0.2, max=settings.retry_max_delay.total_seconds()),
                stop=stop_never,
                before_sleep=lambda state: log.warning("waiting for the listener database..."),
            ):
                with attempt:
                    require_head(engine, group)  # naming each one not at head
        except ListenerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return Exit.USAGE
        finally:
            engine.dispose()
    try:
        asyncio.run(ensure_topics(settings))
    except ListenerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.UNAVAILABLE
    built = create_app(settings, listeners=listeners, declare_topics=False)
    sys.argv = [sys.argv[0], "worker", "-l", args.loglevel, *faust_args]
    built.app.main()
    return 0


def _shown(url: str) -> str:
    return hide_password(create_db_engine(url).url)


def _render(listener: Listener[Any], entity: EntityView) -> str:
    lines = [
        f"{listener.name} {entity.business_key} (saga {entity.saga_id})",
        f"  status:   {entity.status}",
        f"  with:     {entity.current_service or '-'} ({entity.current_step or '-'})",
    ]
    if entity.last_error:
        lines.append(f"  error:    {entity.last_error}")
    lines.extend(f"  {name}: {value}" for name, value in entity.fields.items())
    lines.append("  timeline:")
    for entry in entity.timeline:
        where = " ".join(filter(None, [entry.step, f"@{entry.service}" if entry.service else None]))
        attempt = f" attempt {entry.attempt}" if entry.attempt else ""
        error = f"  [{entry.error}]" if entry.error else ""
        lines.append(
            f"    {entry.seq:>3} {entry.occurred_at.isoformat()} {entry.type:<24} {where}"
            f"{attempt}{error}"
        )
    for saga in entity.history:
        lines.append(f"  earlier saga {saga.saga_id}: {saga.status} ({len(saga.timeline)} events)")
    return "\n".join(lines)
