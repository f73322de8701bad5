"""The aiohttp-backed httpx transport behaves like httpx's own, against a real server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from coordinator import BusinessHttpError, RetryPolicy, TransientHttpError
from coordinator._http import send_json
from coordinator._transport import AiohttpTransport


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

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_json_round_trip_with_idempotency_key(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        reply = await send_json(
            client,
            "POST",
            f"{server}/echo",
            body={"a": 1},
            idempotency_key="k-1",
            request_timeout=5,
        )
    assert reply == {"got": {"a": 1}, "key": "k-1"}


async def test_status_codes_are_classified(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
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


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
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


async def test_a_connection_dropped_after_sending_is_uncertain() -> None:
    import asyncio

    seen: list[bytes] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(65536))  # the request arrived...
        writer.transport.abort()  # ...and the connection died before any reply

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
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


async def test_a_refused_connection_is_definite() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            with pytest.raises(TransientHttpError) as caught:
                await send_json(
                    client, "POST", f"http://127.0.0.1:{port}/x", body={}, idempotency_key="k",
                    request_timeout=5, transport_retry=RetryPolicy(maximum_attempts=1),
                )  # fmt: skip
    assert not caught.value.uncertain
