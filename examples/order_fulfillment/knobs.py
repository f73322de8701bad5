"""Failure knobs at run time, and the startup settings (environment and CLI).

Knobs (:class:`~examples.order_fulfillment.models.Knobs`) can be set:

- at startup from the environment, as JSON or per field::

      ORDER_SERVICES_KNOBS='{"refund_outage": true}'
      ORDER_SERVICES_KNOBS__FLAKY_FAILURES=3

- at startup from the CLI, as a JSON patch over the environment:
  ``--knobs '{"declined_cards": ["tok_x"]}'``;
- at run time with ``POST /admin/knobs`` (a partial JSON object, same patch
  semantics) and read back with ``GET /admin/knobs``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from examples.order_fulfillment.models import Knobs

ENV_PREFIX = "ORDER_SERVICES_"


class KnobsBox:
    """Holds the current knobs for all five services.

    The knobs object is frozen and replaced whole on every update, so a request
    reads one consistent set even if an update lands while it sleeps.
    """

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.current = knobs if knobs is not None else Knobs()

    def patch(self, changes: Mapping[str, Any]) -> Knobs:
        """Apply a partial update and return the new knobs.

        Args:
            changes: knob names to new values, e.g. ``{"refund_outage": True}``.

        Raises:
            pydantic.ValidationError: a name is unknown or a value is invalid;
                the current knobs are then left unchanged.
        """
        self.current = patched(self.current, changes)
        return self.current


def patched(knobs: Knobs, changes: Mapping[str, Any]) -> Knobs:
    """Return ``knobs`` with ``changes`` applied, validated as a whole."""
    return Knobs.model_validate({**knobs.model_dump(), **changes})


class ServicesSettings(BaseSettings):
    """Startup settings of the services process, from ``ORDER_SERVICES_*`` variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    knobs: Knobs = Field(default_factory=Knobs)


def parse_args(argv: Sequence[str] | None = None) -> ServicesSettings:
    """Build the settings from the environment, then apply command-line overrides.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The settings to start the services with.
    """
    parser = argparse.ArgumentParser(
        prog="python -m examples.order_fulfillment.services",
        description="Run the five order-fulfillment HTTP services in one process.",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--knobs",
        metavar="JSON",
        help="failure knobs as a JSON object patch, e.g. '{\"refund_outage\": true}'",
    )
    args = parser.parse_args(argv)
    try:
        settings = ServicesSettings()
    except ValidationError as exc:
        parser.error(f"invalid {ENV_PREFIX}* environment variable: {exc}")
    updates: dict[str, Any] = {}
    if args.host is not None:
        updates["host"] = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            parser.error(f"--port {args.port}: use 0-65535 (0 picks a free port)")
        updates["port"] = args.port
    if args.knobs is not None:
        updates["knobs"] = _parse_knobs(parser, settings.knobs, args.knobs)
    return settings.model_copy(update=updates)


def _parse_knobs(parser: argparse.ArgumentParser, base: Knobs, text: str) -> Knobs:
    try:
        changes = json.loads(text)
    except ValueError as exc:
        parser.error(
            f"--knobs is not JSON ({exc}); pass an object like '{{\"flaky_failures\": 3}}'"
        )
    if not isinstance(changes, dict):
        parser.error("--knobs must be a JSON object of knob names to values")
    try:
        return patched(base, changes)
    except ValidationError as exc:
        parser.error(f"--knobs: {exc}")
