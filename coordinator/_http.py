"""HTTP calls to participants, shared by step actions and compensations.

A call sends JSON with an ``Idempotency-Key`` header (the participant must apply the
effect at most once per key) and classifies the answer:

* 2xx: success; the JSON body (or None) is returned.
* connect errors, timeouts, 408, 429 and 5xx: :class:`TransientHttpError`, retried in
  process with tenacity (honouring ``Retry-After``) within ``transport_retry``. A timeout,
  a 5xx or a connection lost after sending is *uncertain* (the effect may have happened);
  a refused connection, 408 and 429 are definite (the participant did not act).
* any other 4xx: :class:`BusinessHttpError`, never retried; the saga compensates.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from datetime import UTC, timedelta
from typing import Any

import httpx
import tenacity

from compensations import RetryPolicy
from coordinator._errors import BusinessHttpError, HttpCallError, TransientHttpError
from coordinator._transport import HttpClient, HttpxClient, Lost, NotConnected, Reply

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: sent with a compensation: the Idempotency-Key of the action it undoes
COMPENSATES_HEADER = "Saga-Compensates"

#: In-process retries of transport failures inside one durable attempt.
TRANSPORT_RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(milliseconds=50),
    maximum_interval=timedelta(seconds=2),
)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unparsable: fall back to the policy's backoff
    if parsed.tzinfo is None:  # "-0000": HTTP dates are UTC
        parsed = parsed.replace(tzinfo=UTC)
    return max(0.0, parsed.timestamp() - time.time())


def _classify(response: Reply, what: str) -> Any:
    status = response.status
    if 200 <= status < 300:
        if not response.content:
            return None
        return json.loads(response.content)
    body = response.content[:8000].decode("utf-8", errors="replace")[:2000]
    if status in (408, 429) or status >= 500:
        raise TransientHttpError(
            f"{what}: HTTP {status} (transient): {body[:200]}",
            uncertain=status >= 500,
            status=status,
            body=body,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    raise BusinessHttpError(f"{what}: HTTP {status}: {body[:200]}", status=status, body=body)


def _wait_honouring_retry_after(policy: RetryPolicy) -> tenacity.wait.wait_base:
    base = tenacity.wait_exponential_jitter(
        multiplier=policy.initial_interval.total_seconds(),
        max=policy.maximum_interval.total_seconds(),
        exp_base=policy.backoff_coefficient,
    )

    def wait(state: tenacity.RetryCallState) -> float:
        delay = base(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientHttpError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return float(delay)

    return _Wait(wait)


class _Wait(tenacity.wait.wait_base):
    def __init__(self, fn: Any) -> None:
        self._fn = fn

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return float(self._fn(retry_state))


#: one encoder for every body: ``json.dumps`` with options builds a new one per call
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_body(body: Any) -> bytes:
    """JSON bytes of a request body, as httpx's ``json=`` writes them (None: no body)."""
    if body is None:
        return b""
    return _ENCODER.encode(body).encode()


async def send_json(
    client: HttpClient | httpx.AsyncClient,
    method: str,
    url: str,
    *,
    body: Any,
    idempotency_key: str,
    request_timeout: float,
    transport_retry: RetryPolicy = TRANSPORT_RETRY,
    compensates: str | None = None,
) -> Any:
    """Send one participant request; return its JSON reply or raise a classified error.

    ``client`` is an ``HttpClient`` (``coordinator._transport``); an ``httpx.AsyncClient``
    is used through ``HttpxClient``.
    """
    what = f"{method} {url}"
    sender = HttpxClient(client) if isinstance(client, httpx.AsyncClient) else client
    content = encode_body(body)
    headers = {IDEMPOTENCY_HEADER: idempotency_key}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if compensates is not None:
        headers[COMPENSATES_HEADER] = compensates

    reached = False  # some try failed after the request may have been sent

    async def once() -> Any:
        nonlocal reached
        try:
            response = await sender.send(
                method, url, content=content, headers=headers, timeout=request_timeout
            )
        except NotConnected as exc:
            # only a failed connect proves the request never reached the participant
            raise TransientHttpError(f"{what}: {exc.kind}: {exc}", uncertain=False) from exc
        except Lost as exc:
            reached = True
            raise TransientHttpError(f"{what}: {exc.kind}: {exc}", uncertain=True) from exc
        try:
            return _classify(response, what)
        except TransientHttpError as exc:
            reached = reached or exc.uncertain
            raise

    # The first try runs bare: building a tenacity retrier per call cost ~4% of a busy
    # executor's CPU, and most calls succeed at once.
    try:
        return await once()
    except TransientHttpError as first:
        if transport_retry.maximum_attempts <= 1:
            raise
        initial = first
    retrier = transport_retry.tenacity(
        retry_if=lambda exc: isinstance(exc, TransientHttpError),
        wait=_wait_honouring_retry_after(transport_retry),
        stop=tenacity.stop_after_attempt(transport_retry.maximum_attempts - 1),
    )
    await asyncio.sleep(
        max(transport_retry.initial_interval.total_seconds(), initial.retry_after or 0.0)
    )
    try:
        async for attempt in retrier:
            with attempt:
                return await once()
    except HttpCallError as last:
        # any earlier try may have reached the participant: the outcome stays uncertain
        last.uncertain = last.uncertain or initial.uncertain or reached
        raise
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
