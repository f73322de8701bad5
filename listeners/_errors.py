"""Exceptions raised by the listeners package.

Every exception derives from one root, so callers can catch the package as a whole::

    ListenerError                  root of everything raised here
    ├── ListenerConfigError        a listener or its settings are inconsistent
    ├── SchemaNotAtHeadError       the listener database is not migrated to the newest
    │                              revision (run ``python -m listeners migrate``)
    ├── SchemaLagsModelError       the listener database lacks a table or column its model
    │                              or its revisions use (the message quotes the commands)
    ├── EntityNotFoundError        a business-state query named an unknown key
    │   └── OrderNotFoundError     ... of the order-status listener
    ├── InvalidQueryError          a business-state query has a bad argument
    └── ReplayError                the lifecycle topic could not be replayed

Database outages are *not* errors of this package: the worker retries them in place,
holding its partitions, until the database answers again.
"""

from __future__ import annotations

__all__ = [
    "EntityNotFoundError",
    "InvalidQueryError",
    "ListenerConfigError",
    "ListenerError",
    "OrderNotFoundError",
    "ReplayError",
    "SchemaLagsModelError",
    "SchemaNotAtHeadError",
]


class ListenerError(Exception):
    """Root of every exception raised by ``listeners``."""


class ListenerConfigError(ListenerError):
    """A listener definition or its settings are inconsistent."""


class SchemaNotAtHeadError(ListenerError):
    """The listener database is not at the newest Alembic revision."""


class SchemaLagsModelError(ListenerError):
    """The listener database lacks a table or column of the model or its revisions.

    The model's: its migrations lag it (write the revision, then migrate; a built-in's
    database is rebuilt). The revisions': the database was changed outside them, or they
    are wrong (fix them); either way it is rebuilt. The message quotes the commands.
    """


class EntityNotFoundError(ListenerError, LookupError):
    """No saga with the requested business key has been written by the listener."""


class OrderNotFoundError(EntityNotFoundError):
    """No order with the requested id has been written by the order-status listener."""


class InvalidQueryError(ListenerError, ValueError):
    """A business-state query got an argument it cannot use (unknown status, bad limit)."""


class ReplayError(ListenerError):
    """The lifecycle topic could not be replayed into the listener database."""
