"""Find listeners by name: ``module:attribute`` or a built-in name (``orders``)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from listeners._declarative import Listener
from listeners._errors import ListenerConfigError
from listeners._settings import ListenerSettings

__all__ = ["BUILTIN", "cli_name", "load_listener", "load_listeners"]

#: Built-in listeners by short name.
BUILTIN = {"orders": "listeners.orders._listener:order_listener"}


def cli_name(listener: Listener[Any]) -> str:
    """``listener`` as ``python -m listeners`` names it.

    The spec it was loaded by, or a built-in's name (``LISTENER`` for one built in code:
    the CLI has no name for it).
    """
    return listener.spec or (listener.name if listener.name in BUILTIN else "LISTENER")


def load_listener(spec: str, settings: ListenerSettings | None = None) -> Listener[Any]:
    """The listener ``spec`` names: ``package.module:attribute`` or a built-in name.

    The attribute is a :class:`~listeners._declarative.Listener`, or a function that
    takes :class:`~listeners._settings.ListenerSettings` and returns one.

    Raises:
        ListenerConfigError: The module, the attribute or the listener is missing.
    """
    target = BUILTIN.get(spec, spec)
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ListenerConfigError(
            f"listener {spec!r} is neither module:attribute (e.g. examples.trips:trips) nor a "
            f"built-in name ({', '.join(sorted(BUILTIN))})"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ListenerConfigError(
            f"listener {spec!r}: cannot import module {module_name!r} ({exc}); check the "
            "spelling and that it is installed or on PYTHONPATH"
        ) from exc
    found = getattr(module, attribute, None)
    if found is None:
        raise ListenerConfigError(
            f"listener {spec!r}: module {module_name!r} has no attribute {attribute!r}"
        )
    if not isinstance(found, Listener) and callable(found):
        found = found(settings or ListenerSettings())
    if not isinstance(found, Listener):
        raise ListenerConfigError(
            f"listener {spec!r} is a {type(found).__name__}, not a listeners.Listener (or a "
            "function of the settings returning one)"
        )
    found.spec = spec
    return found


def load_listeners(
    specs: Sequence[str], settings: ListenerSettings | None = None
) -> list[Listener[Any]]:
    """Load ``specs`` (default: ``settings.listeners``); names must be unique."""
    settings = settings or ListenerSettings()
    loaded = [load_listener(spec, settings) for spec in specs or settings.listeners]
    if not loaded:
        raise ListenerConfigError(
            "no listener to run; name them (module:attribute or a built-in name such as "
            "orders) or set LISTENER_LISTENERS"
        )
    names = [listener.name for listener in loaded]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ListenerConfigError(f"listener names must be unique; {twice} given twice")
    return loaded
