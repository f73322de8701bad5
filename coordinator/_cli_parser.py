"""The command line of ``python -m coordinator``: arguments, help and exit codes."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from enum import IntEnum
from typing import Any, NoReturn

from coordinator._settings import CoordinatorSettings

__all__ = ["LOG_LEVELS", "Exit", "build_parser", "env_name", "fail"]


class Exit(IntEnum):
    """Exit codes of ``python -m coordinator``."""

    OK = 0
    #: an unexpected failure (a bug: please report it with the output)
    FAILED = 1
    #: the command line, its input or a setting is wrong; nothing was sent
    USAGE = 2
    #: the coordinator refused the command; the reason is printed
    REJECTED = 3
    #: no such saga (or dead letter)
    NOT_FOUND = 4
    #: the saga's status does not allow the command (e.g. it already finished)
    NOT_APPLICABLE = 5
    #: no answer in time: the broker or the coordinator is unreachable, or busy
    UNAVAILABLE = 6


def fail(message: str, code: Exit) -> NoReturn:
    """Print one ``error: …`` line and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(int(code))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see `{self.prog} --help`", Exit.USAGE)


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    if field == "kafka_bootstrap_servers":
        return "KAFKA_BOOTSTRAP_SERVERS"
    return f"SAGA_{field.upper()}"


def _settings_help() -> str:
    lines = ["settings (environment variables, default in brackets):"]
    for name, field in CoordinatorSettings.model_fields.items():
        default = field.default
        shown = ",".join(default) if isinstance(default, list) else default
        lines.append(f"  {env_name(name):<34} [{shown if shown not in ('', None) else '-'}]")
    return "\n".join(lines)


#: our level names (and the usual aliases) -> faust's
LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "crit": "crit",
    "critical": "crit",
}


def _seconds(value: str) -> timedelta:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the timeout must be positive")
    return timedelta(seconds=seconds)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m coordinator``."""
    parser = _Parser(
        prog="python -m coordinator",
        description="Run a coordinator worker, start and operate sagas, read dead letters.",
        epilog="exit codes: "
        + ", ".join(f"{c.value} {c.name.lower().replace('_', ' ')}" for c in Exit),
    )
    parser.add_argument("--url", help="a coordinator's web URL (default: SAGA_WEB_HOST/PORT)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, **kwargs)
        return p

    w = command(
        "worker",
        "run a coordinator worker (settings from the environment)",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument(
        "-l",
        "--loglevel",
        default="info",
        choices=sorted(LOG_LEVELS),
        metavar="LEVEL",
        help="debug, info, warn, error or crit (default: info)",
    )

    def confirmable(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument(
            "--no-wait",
            action="store_true",
            help=f"send the command and return; do not wait for the coordinator to {what}",
        )
        p.add_argument(
            "--timeout",
            type=_seconds,
            default=timedelta(seconds=30),
            metavar="SECONDS",
            help="how long to wait for the coordinator (default: 30)",
        )

    s = command("start", "start a saga and wait until the coordinator started or rejected it")
    s.add_argument("saga_type", metavar="SAGA_TYPE")
    s.add_argument("input", metavar="INPUT", help="the saga input as a JSON object, - for stdin")
    s.add_argument("--id", help="the saga id (default: SAGA_TYPE:BUSINESS_KEY)")
    s.add_argument("--business-key", help="e.g. the order id; the saga id derives from it")
    s.add_argument("--version", type=int, help="definition version (default: the latest)")
    confirmable(s, "start it")

    st = command("status", "print a saga's state")
    st.add_argument("saga_id", metavar="SAGA_ID")
    st.add_argument("--json", action="store_true", help="print JSON")

    c = command("cancel", "cancel a running saga: its completed steps are compensated")
    c.add_argument("saga_id", metavar="SAGA_ID")
    c.add_argument("--reason", default="cancelled by operator", help="recorded in the events")
    confirmable(c, "accept it")

    r = command("retry-compensation", "resume a compensation_failed saga at its cursor")
    r.add_argument("saga_id", metavar="SAGA_ID")
    confirmable(r, "resume it")

    v = command(
        "resolve",
        "resolve a parked saga: say whether its uncertain step's effect happened",
    )
    v.add_argument("saga_id", metavar="SAGA_ID")
    verdict = v.add_mutually_exclusive_group(required=True)
    verdict.add_argument(
        "--applied",
        dest="resolution",
        action="store_const",
        const="applied",
        help="the effect happened: the saga goes on (with --output as the step's output)",
    )
    verdict.add_argument(
        "--not-applied",
        dest="resolution",
        action="store_const",
        const="not_applied",
        help="nothing happened: the earlier steps are compensated",
    )
    verdict.add_argument(
        "--retry",
        dest="resolution",
        action="store_const",
        const="retry",
        help="run the step again (same idempotency key, fresh retry budget)",
    )
    v.add_argument("--output", metavar="JSON", help="with --applied: the step's output")
    v.add_argument("--step", help="the parked step (default: the one the saga is parked on)")
    confirmable(v, "apply it")

    d = command("dead-letters", "list recent dead letters with their reasons, or re-submit one")
    d.add_argument("--saga-id", help="only this saga's dead letters")
    d.add_argument("--limit", type=int, default=20, help="how many to show (default: 20)")
    d.add_argument("--json", action="store_true", help="print one JSON object per line")
    d.add_argument(
        "--resubmit",
        metavar="PARTITION:OFFSET",
        help="send this dead letter's original message back to its topic (after a fix)",
    )

    t = command("topics", "create the saga topics (and step topics of SERVICE...)")
    t.add_argument("services", nargs="*", metavar="SERVICE")
    return parser
