"""Idempotency-Key handling shared by the five services.

Every mutating POST goes through :func:`idempotent_handler`, which:

1. requires the ``Idempotency-Key`` header (400 naming the header otherwise);
2. validates the JSON body against the operation's pydantic model (400/422);
3. under a per-(operation, key) :class:`asyncio.Lock`, either replays the
   stored reply or applies the effect once and stores its reply.

Stored: 2xx and 4xx replies (business failures such as a declined card must
give the same answer on retry). Not stored: 5xx replies, which are transient
by contract, so a retry with the same key runs the operation again.

A key reused with a different body or path gets 422 ``idempotency_key_reused``
instead of a replay: silently answering a different question would hide a bug
in the caller's key scheme.

The participant contract (README, "Participant contract") is implemented here for every
service by :func:`undo_handler`: an undo names the action it undoes by that action's
key (header ``Saga-Compensates``), under the same per-key lock as the action (do and
undo of one key are serialized). An undo whose do never arrived is accepted and leaves a
*tombstone*: a later do with that key is refused with 409 ``compensated_before_applied``
(a definite failure: nothing happened). So no order of late messages leaves an effect
standing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from examples.order_fulfillment.models import (
    COMPENSATES_HEADER,
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    ErrorReply,
    UndoReply,
)

M = TypeVar("M", bound=BaseModel)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Outcome:
    """What an operation answers: an HTTP status and a reply model."""

    status: int
    body: BaseModel

    @property
    def transient(self) -> bool:
        """True for 5xx: not stored, the caller may retry with the same key."""
        return self.status >= 500


@dataclass(frozen=True)
class Call(Generic[M]):
    """One validated call of an operation, handed to the service code.

    Attributes:
        key: the Idempotency-Key header.
        body: the validated request body.
        path: path parameters, e.g. ``{"charge_id": "ch_..."}``.
    """

    key: str
    body: M
    path: Mapping[str, str]


@dataclass(frozen=True)
class _Stored:
    fingerprint: str
    status: int
    text: str


@dataclass(frozen=True)
class Reply:
    """A reply ready to send; ``replayed`` when it came from the store."""

    status: int
    text: str
    replayed: bool = False


def dump(body: BaseModel) -> str:
    """Serialise a reply model the way every endpoint does.

    Error replies drop their unused optional fields (``sku``, ``header``, ...);
    other replies keep nulls, so "not refunded" reads as ``"refund_id": null``.
    """
    return body.model_dump_json(exclude_none=isinstance(body, ErrorReply))


class IdempotencyStore:
    """Stored replies and counters of one service, keyed by (operation, key)."""

    def __init__(self) -> None:
        self._stored: dict[tuple[str, str], _Stored] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._applications: Counter[tuple[str, str]] = Counter()
        self._tombstones: set[tuple[str, str]] = set()
        self._undone: set[tuple[str, str]] = set()
        self.effects: Counter[str] = Counter()
        self.replays = 0
        self.transient_failures = 0

    def clear(self) -> None:
        """Forget every stored reply and counter (``POST /admin/reset``)."""
        self._stored.clear()
        self._locks.clear()
        self._applications.clear()
        self._tombstones.clear()
        self._undone.clear()
        self.effects.clear()
        self.replays = 0
        self.transient_failures = 0

    def ledger(self) -> dict[str, str]:
        """Each action key's effect: ``applied``, ``undone`` or ``tombstone`` (the oracle
        of the tests: an ``applied`` key must belong to a completed saga)."""
        out: dict[str, str] = {}
        for scope, stored in self._stored.items():
            if 200 <= stored.status < 300 and self._applications[scope]:
                out[f"{scope[0]}:{scope[1]}"] = "undone" if scope in self._undone else "applied"
        for scope in self._tombstones:
            out[f"{scope[0]}:{scope[1]}"] = "tombstone"
        return out

    @property
    def max_applications_per_key(self) -> int:
        """Most times one key's effect was applied; anything above 1 is a bug."""
        return max(self._applications.values(), default=0)

    async def run(
        self,
        operation: str,
        key: str,
        fingerprint: str,
        apply: Callable[[], Awaitable[Outcome]],
    ) -> Reply:
        """Replay the stored reply for ``(operation, key)`` or apply the effect once.

        Args:
            operation: the operation name, e.g. ``"charge"``; keys are scoped by it.
            key: the Idempotency-Key.
            fingerprint: digest of path and body, to detect a reused key.
            apply: runs the effect; called at most once per stored key.

        Returns:
            The reply to send.
        """
        scope = (operation, key)
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            if scope in self._tombstones:
                return _compensated_before_applied(operation, key)
            stored = self._stored.get(scope)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    return _key_reused(operation, key)
                self.replays += 1
                return Reply(stored.status, stored.text, replayed=True)
            outcome = await apply()
            text = dump(outcome.body)
            if outcome.transient:
                # Keep the lock: a concurrent duplicate waiting on it must run
                # the operation again, never alongside a newcomer's fresh lock.
                self.transient_failures += 1
                return Reply(outcome.status, text)
            self._stored[scope] = _Stored(fingerprint, outcome.status, text)
            self._applications[scope] += 1
            self.effects[operation] += 1
            # Safe to drop once stored: waiters holding this lock and newcomers
            # taking a fresh one all find the stored reply first.
            self._locks.pop(scope, None)
            return Reply(outcome.status, text)

    async def undo(
        self,
        operation: str,
        key: str,
        apply: Callable[[str], Awaitable[Outcome]],
    ) -> Reply:
        """Undo the effect of ``(operation, key)``, or leave a tombstone if it never ran.

        ``apply`` receives the action's stored reply (to find the resource it created)
        and must itself be idempotent by state (a second undo changes nothing).
        """
        scope = (operation, key)
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            stored = self._stored.get(scope)
            if stored is None or scope in self._tombstones:
                self._tombstones.add(scope)
                return Reply(200, dump(UndoReply(action_key=key, outcome="tombstone")))
            if not 200 <= stored.status < 300:
                # the action answered a definite failure: nothing to undo
                return Reply(200, dump(UndoReply(action_key=key, outcome="nothing_applied")))
            outcome = await apply(stored.text)
            if outcome.transient:
                self.transient_failures += 1
            elif 200 <= outcome.status < 300:
                self._undone.add(scope)
            return Reply(outcome.status, dump(outcome.body))


def _compensated_before_applied(operation: str, key: str) -> Reply:
    error = ErrorReply(
        error="compensated_before_applied",
        message=f"'{operation}' with {IDEMPOTENCY_HEADER} {key!r} was compensated before it "
        "arrived; it is refused and will never apply (nothing happened)",
    )
    return Reply(409, dump(error))


def undo_handler(
    store: IdempotencyStore, operation: str, apply: Callable[[str], Awaitable[Outcome]]
) -> Handler:
    """An aiohttp handler that undoes ``operation`` by the key in ``Saga-Compensates``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        key = request.headers.get(COMPENSATES_HEADER, "").strip()
        if not key or len(key) > _MAX_KEY_LENGTH:
            error = ErrorReply(
                error="missing_compensates_header",
                header=COMPENSATES_HEADER,
                message=f"{request.method} {request.path} requires a {COMPENSATES_HEADER} "
                f"header naming the {IDEMPOTENCY_HEADER} of the '{operation}' to undo",
            )
            return json_response(400, error)
        return _text_response(await store.undo(operation, key, apply))

    return handler


def _key_reused(operation: str, key: str) -> Reply:
    error = ErrorReply(
        error="idempotency_key_reused",
        message=(
            f"{IDEMPOTENCY_HEADER} {key!r} was already used for a different "
            f"'{operation}' request; use one key per distinct request "
            "(e.g. '<saga_id>:<step>')"
        ),
    )
    return Reply(422, dump(error))


def json_response(status: int, body: BaseModel, *, replayed: bool = False) -> web.Response:
    """Build the JSON response of a reply model."""
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return web.Response(
        status=status, text=dump(body), content_type="application/json", headers=headers
    )


def _text_response(reply: Reply) -> web.Response:
    headers = {REPLAYED_HEADER: "true"} if reply.replayed else None
    return web.Response(
        status=reply.status, text=reply.text, content_type="application/json", headers=headers
    )


async def parse_body(request: web.Request, model: type[M]) -> M | web.Response:
    """Validate a JSON body (an empty body counts as ``{}``) or build the error reply."""
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        error = ErrorReply(
            error="invalid_json",
            message=f"{request.method} {request.path}: body is not JSON ({exc}); send a "
            f"JSON object matching {model.__name__}",
        )
        return json_response(400, error)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = ErrorReply(
            error="invalid_request",
            message=f"{request.method} {request.path}: body does not match "
            f"{model.__name__}; see details",
            details=json.loads(exc.json(include_url=False)),
        )
        return json_response(422, error)


def idempotent_handler(
    store: IdempotencyStore,
    operation: str,
    model: type[M],
    apply: Callable[[Call[M]], Awaitable[Outcome]],
) -> Handler:
    """Wrap a service operation as an aiohttp handler with Idempotency-Key semantics.

    Args:
        store: the service's idempotency store.
        operation: name of the operation, used in counters and key scoping.
        model: pydantic model of the request body.
        apply: the operation; receives the validated call.

    Returns:
        An aiohttp request handler.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
        if not key or len(key) > _MAX_KEY_LENGTH:
            error = ErrorReply(
                error="missing_idempotency_key",
                header=IDEMPOTENCY_HEADER,
                message=(
                    f"{request.method} {request.path} requires an {IDEMPOTENCY_HEADER} "
                    f"header of 1-{_MAX_KEY_LENGTH} characters; send a stable key per "
                    "saga step (e.g. '<saga_id>:<step>') and reuse it on every retry"
                ),
            )
            return json_response(400, error)
        body = await parse_body(request, model)
        if isinstance(body, web.Response):
            return body
        call = Call(key=key, body=body, path=dict(request.match_info))
        digest = hashlib.sha256(f"{request.path}\n{body.model_dump_json()}".encode())
        reply = await store.run(operation, key, digest.hexdigest(), lambda: apply(call))
        return _text_response(reply)

    return handler
