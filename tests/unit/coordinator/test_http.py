"""send_json over both executor clients (aiohttp, lean HTTP/1.1), against real servers.

The same replies and the same outcome classes from each: a request that never left is
definite, one that may have left is uncertain.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import httpx
import pytest
from aiohttp import web

from coordinator import BusinessHttpError, RetryPolicy, TransientHttpError
from coordinator._http import send_json
from coordinator._http1 import Http1Client
from coordinator._transport import AiohttpClient, HttpClient

#: each executor client, built with at most ``limit`` connections per host
CLIENTS: dict[str, Callable[[int], HttpClient]] = {
    "aiohttp": lambda limit: AiohttpClient(limit=limit, limit_per_host=limit),
    "http1": lambda limit: Http1Client(limit_per_host=limit),
}


@pytest.fixture(params=sorted(CLIENTS))
def make(request: pytest.FixtureRequest) -> Callable[[int], HttpClient]:
    """A factory of the client under test."""
    factory: Callable[[int], HttpClient] = CLIENTS[request.param]
    return factory


async def serve(
    path: str, handler: Callable[[web.Request], Awaitable[web.Response]]
) -> tuple[web.AppRunner, str]:
    """Serve ``handler`` at POST ``path`` on a free port; returns the runner and the base URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Idempotency-Key", ""))
        body = await request.json()
        status = int(request.query.get("status", "200"))
        return web.json_response(
            {"got": body, "key": seen[-1]}, status=status, headers={"Retry-After": "0"}
        )

    runner, base = await serve("/echo", echo)
    yield base
    await runner.cleanup()


async def test_json_round_trip_with_idempotency_key(
    server: str, make: Callable[[int], HttpClient]
) -> None:
    async with aclosing(make(100)) as client:
        reply = await send_json(
            client,
            "POST",
            f"{server}/echo",
            body={"a": 1},
            idempotency_key="k-1",
            request_timeout=5,
        )
    assert reply == {"got": {"a": 1}, "key": "k-1"}


async def test_status_codes_are_classified(server: str, make: Callable[[int], HttpClient]) -> None:
    async with aclosing(make(100)) as client:
        with pytest.raises(BusinessHttpError) as business:
            await send_json(
                client,
                "POST",
                f"{server}/echo?status=402",
                body={},
                idempotency_key="k",
                request_timeout=5,
            )
        assert business.value.status == 402
        with pytest.raises(TransientHttpError) as transient:
            await send_json(
                client,
                "POST",
                f"{server}/echo?status=503",
                body={},
                idempotency_key="k",
                request_timeout=5,
            )
        assert transient.value.status == 503 and transient.value.retry_after == 0.0


async def test_connection_refused_is_transient(make: Callable[[int], HttpClient]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        async with aclosing(make(100)) as client:
            with pytest.raises(TransientHttpError, match="ConnectError"):
                await send_json(
                    client,
                    "POST",
                    f"http://127.0.0.1:{port}/x",
                    body={},
                    idempotency_key="k",
                    request_timeout=2,
                )


async def test_an_uncertain_try_keeps_the_outcome_uncertain_through_later_tries() -> None:
    from datetime import timedelta

    from coordinator import RetryPolicy

    answers = iter(["connect", "timeout", 409])

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if answer == "connect":
            raise httpx.ConnectError("refused", request=request)
        if answer == "timeout":
            raise httpx.ReadTimeout("no reply", request=request)
        return httpx.Response(409, json={"error": "in_progress"})

    policy = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=1))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(BusinessHttpError) as caught:
            await send_json(
                client, "POST", "http://p/charges", body={}, idempotency_key="k",
                request_timeout=1, transport_retry=policy,
            )  # fmt: skip
    assert caught.value.uncertain, "the timed-out try may have applied the charge"


async def test_a_connection_dropped_after_sending_is_uncertain(
    make: Callable[[int], HttpClient],
) -> None:
    seen: list[bytes] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(65536))  # the request arrived...
        writer.transport.abort()  # ...and the connection died before any reply

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aclosing(make(100)) as client:
            with pytest.raises(TransientHttpError) as caught:
                await send_json(
                    client, "POST", f"http://127.0.0.1:{port}/charges", body={"a": 1},
                    idempotency_key="k", request_timeout=5,
                    transport_retry=RetryPolicy(maximum_attempts=1),
                )  # fmt: skip
    finally:
        server.close()
    assert seen and b"POST /charges" in seen[0]
    assert caught.value.uncertain


async def test_a_refused_connection_is_definite(make: Callable[[int], HttpClient]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        async with aclosing(make(100)) as client:
            with pytest.raises(TransientHttpError) as caught:
                await send_json(
                    client, "POST", f"http://127.0.0.1:{port}/x", body={}, idempotency_key="k",
                    request_timeout=5, transport_retry=RetryPolicy(maximum_attempts=1),
                )  # fmt: skip
    assert not caught.value.uncertain


@pytest.fixture
async def slow() -> AsyncIterator[tuple[str, list[bytes], asyncio.Event]]:
    """A server that holds every request until ``release`` is set; ``seen``: request bodies."""
    seen: list[bytes] = []
    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        seen.append(await request.read())
        await release.wait()
        return web.json_response({"ok": True})

    runner, base = await serve("/hold", hold)
    yield f"{base}/hold", seen, release
    release.set()
    await runner.cleanup()


async def test_a_reply_that_never_comes_is_uncertain(
    slow: tuple[str, list[bytes], asyncio.Event], make: Callable[[int], HttpClient]
) -> None:
    url, seen, _ = slow
    async with aclosing(make(100)) as client:
        with pytest.raises(TransientHttpError, match="ReadTimeout") as caught:
            await send_json(
                client, "POST", url, body={"a": 1}, idempotency_key="k",
                request_timeout=0.3, transport_retry=RetryPolicy(maximum_attempts=1),
            )  # fmt: skip
    assert seen == [b'{"a":1}'], "the request reached the participant"
    assert caught.value.uncertain


async def test_waiting_for_a_pooled_connection_past_the_timeout_is_definite(
    slow: tuple[str, list[bytes], asyncio.Event], make: Callable[[int], HttpClient]
) -> None:
    url, seen, release = slow
    async with aclosing(make(1)) as client:
        first = asyncio.create_task(
            send_json(client, "POST", url, body={"n": 1}, idempotency_key="k1", request_timeout=10)
        )
        while not seen:  # the only connection is taken by the first request
            await asyncio.sleep(0.01)
        with pytest.raises(TransientHttpError, match="ConnectTimeout") as caught:
            await send_json(
                client, "POST", url, body={"n": 2}, idempotency_key="k2",
                request_timeout=0.3, transport_retry=RetryPolicy(maximum_attempts=1),
            )  # fmt: skip
        release.set()
        assert await first == {"ok": True}
    assert seen == [b'{"n":1}'], "the second request never left"
    assert not caught.value.uncertain


async def test_a_request_without_body_sends_none_and_an_empty_reply_is_none() -> None:
    got: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        got.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        reply = await send_json(
            client, "DELETE", "http://p/holds/1", body=None, idempotency_key="k",
            request_timeout=1, compensates="k0",
        )  # fmt: skip
    assert reply is None
    (request,) = got
    assert request.content == b"" and "content-type" not in request.headers
    assert request.headers["Idempotency-Key"] == "k"
    assert request.headers["Saga-Compensates"] == "k0"
