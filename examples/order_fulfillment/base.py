"""Base of the five participants' HTTP servers: knobs, idempotency store, counters, sub-app.

A concrete server (see :mod:`examples.order_fulfillment.servers`) names its participant
(:mod:`examples.order_fulfillment.participants`: mount path, endpoints and models), its
business counters, how to clear its state, and its routes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from examples.order_fulfillment.idempotency import (
    Call,
    Handler,
    IdempotencyStore,
    Outcome,
    idempotent_handler,
    undo_handler,
)
from examples.order_fulfillment.knobs import KnobsBox
from examples.order_fulfillment.models import ErrorReply, ServiceName, ServiceStats
from examples.order_fulfillment.participants import Endpoint, Participant

M = TypeVar("M", bound=BaseModel)


def new_id(prefix: str) -> str:
    """A fresh opaque id such as ``ch_1f0c...``."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def error_outcome(status: int, error: str, message: str, *, sku: str | None = None) -> Outcome:
    """An :class:`ErrorReply` outcome; 5xx are marked retryable."""
    body = ErrorReply(error=error, message=message, retryable=status >= 500, sku=sku)
    return Outcome(status, body)


class ParticipantServer:
    """Base of the five participants' HTTP servers: knobs, idempotency store, counters."""

    participant: Participant
    counter_names: tuple[str, ...] = ()

    def __init__(self, knobs: KnobsBox) -> None:
        self.knobs = knobs
        self.store = IdempotencyStore()
        self.counters: Counter[str] = Counter()
        self.reset()

    @property
    def name(self) -> ServiceName:
        """The server's mount path segment (also its key in knobs and stats)."""
        return self.participant.mount

    def reset(self) -> None:
        """Drop all state, stored replies and counters."""
        self.store.clear()
        self.counters = Counter(dict.fromkeys(self.counter_names, 0))
        self._clear_state()

    def _clear_state(self) -> None:
        raise NotImplementedError

    def routes(self) -> Iterable[web.RouteDef]:
        """Routes of the service, relative to its mount prefix."""
        raise NotImplementedError

    def stats(self) -> ServiceStats:
        """Counters for ``GET /admin/stats``."""
        return ServiceStats(
            effects=dict(self.store.effects),
            replays=self.store.replays,
            max_applications_per_key=self.store.max_applications_per_key,
            transient_failures=self.store.transient_failures,
            counters=dict(self.counters),
            ledger=self.store.ledger(),
        )

    async def _pause(self) -> None:
        delay_ms = self.knobs.current.latency_ms.get(self.name, 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)

    def idempotent(
        self, operation: str, model: type[M], apply: Callable[[Call[M]], Awaitable[Outcome]]
    ) -> Handler:
        """Handler for a mutating operation: Idempotency-Key semantics plus latency.

        Args:
            operation: name used in the ``effects`` counter and to scope keys.
            model: pydantic model of the request body.
            apply: the operation itself.
        """

        async def slow_apply(call: Call[M]) -> Outcome:
            # The delay runs inside the per-key lock, where a real service does
            # its I/O: concurrent duplicates overlap here, so tests of the lock
            # with a latency knob are meaningful. Replays stay fast.
            await self._pause()
            return await apply(call)

        return idempotent_handler(self.store, operation, model, slow_apply)

    def undo(self, operation: str, apply: Callable[[str], Awaitable[Outcome]]) -> Handler:
        """Handler undoing ``operation`` by the action's key (the participant contract).

        Args:
            operation: the action to undo, e.g. ``"charge"``.
            apply: receives the action's stored reply text and undoes its effect.
        """

        # no latency knob here: the knob models a slow action; an undo queued behind a
        # slow do (same key, same lock) is already as slow as that do
        return undo_handler(self.store, operation, apply)

    def endpoint(
        self,
        endpoint: Endpoint[M, Any],
        apply: Callable[[Call[M]], Awaitable[Outcome]],
        *,
        undo: Callable[[str], Awaitable[Outcome]] | None = None,
    ) -> list[web.RouteDef]:
        """Routes of a declared endpoint: the idempotent POST and, given ``undo``, its undo.

        Args:
            endpoint: the declaration (path, request model, operation name).
            apply: the operation.
            undo: receives the call's stored reply text and undoes its effect.
        """
        routes = [
            web.post(endpoint.path, self.idempotent(endpoint.operation, endpoint.request, apply))
        ]
        if undo is not None:
            routes.append(web.post(endpoint.undo_path, self.undo(endpoint.operation, undo)))
        return routes

    def read_only(self, handler: Handler) -> Handler:
        """Handler for a read (no Idempotency-Key), with the latency knob."""

        async def slow_handler(request: web.Request) -> web.StreamResponse:
            await self._pause()
            return await handler(request)

        return slow_handler

    def app(self) -> web.Application:
        """Build the sub-application of the service."""
        app = web.Application()
        app.add_routes(self.routes())
        return app
