"""The lean HTTP/1.1 client (coordinator._http1) against raw servers: framing, reuse, outcomes.

Each server here writes exactly the bytes a test gives it, so every way a reply can be
framed (Content-Length, chunked, read until close, an interim 1xx) and every way a
connection can end is exercised on the wire, not through a library on the other side.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest

from coordinator._http1 import Http1Client, StepHttpClient
from coordinator._transport import Lost, NotConnected


@dataclass
class Raw:
    """A server answering each request with the next scripted reply (bytes, or None to close)."""

    replies: list[bytes | None]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    close_after_reply: bool = False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[Raw]]]:
    servers: list[asyncio.Server] = []

    async def start(*replies: bytes | None, close_after_reply: bool = False) -> Raw:
        script = Raw(list(replies), close_after_reply=close_after_reply)
        server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
        servers.append(server)
        script.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/p?q=1"
        return script

    yield start
    for server in servers:
        server.close()


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


async def send(client: Http1Client, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    reply = await client.send(
        "POST", url, content=b'{"a":1}', headers={"Idempotency-Key": "k"}, timeout=timeout
    )
    return reply.status, reply.content


async def test_a_kept_alive_connection_carries_the_next_request(
    raw: Callable[..., Awaitable[Raw]],
) -> None:
    server = await raw(ok(b"one"), ok(b"two"))
    async with aclosing(Http1Client()) as client:
        assert await send(client, server.url) == (200, b"one")
        assert await send(client, server.url) == (200, b"two")
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /p?q=1 HTTP/1.1\r\n") and first.endswith(b'\r\n\r\n{"a":1}')
    assert b"\r\nIdempotency-Key: k\r\n" in first and b"\r\nContent-Length: 7\r\n" in first


async def test_chunked_interim_and_gzip_replies_are_read_whole(
    raw: Callable[..., Awaitable[Raw]],
) -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    packed = gzip.compress(b'{"z":true}')
    server = await raw(chunked, ok(packed, "Content-Encoding: gzip"))
    async with aclosing(Http1Client()) as client:
        assert await send(client, server.url) == (200, b"abcdefg")
        assert await send(client, server.url) == (200, b'{"z":true}')
    assert server.connections == 1, "both replies were framed exactly: the connection stayed"


async def test_a_reply_read_until_close_or_marked_close_is_not_reused(
    raw: Callable[..., Awaitable[Raw]],
) -> None:
    server = await raw(
        b"HTTP/1.1 200 OK\r\n\r\nuntil the end", ok(b"x", "Connection: close"), ok(b"y"),
        close_after_reply=True,
    )  # fmt: skip
    async with aclosing(Http1Client()) as client:
        assert await send(client, server.url) == (200, b"until the end")
        assert await send(client, server.url) == (200, b"x")
        assert await send(client, server.url) == (200, b"y")
    assert server.connections == 3


async def test_an_idle_connection_the_server_closed_is_replaced(
    raw: Callable[..., Awaitable[Raw]],
) -> None:
    server = await raw(ok(b"one"), ok(b"two"), close_after_reply=True)
    async with aclosing(Http1Client()) as client:
        assert await send(client, server.url) == (200, b"one")
        (idle,) = client._pools.values()
        while not idle.idle[0].eof:  # the server's close reaches the idle connection
            await asyncio.sleep(0.01)
        assert await send(client, server.url) == (200, b"two")
    assert server.connections == 2


async def test_a_connection_closed_mid_reply_is_lost(raw: Callable[..., Awaitable[Raw]]) -> None:
    server = await raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close_after_reply=True)
    async with aclosing(Http1Client()) as client:
        with pytest.raises(Lost, match="closed the connection"):
            await send(client, server.url)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"],
)  # fmt: skip
async def test_a_malformed_reply_is_lost(raw: Callable[..., Awaitable[Raw]], reply: bytes) -> None:
    server = await raw(reply, close_after_reply=True)
    async with aclosing(Http1Client()) as client:
        with pytest.raises(Lost):
            await send(client, server.url)


async def test_a_header_with_a_line_break_is_never_sent(raw: Callable[..., Awaitable[Raw]]) -> None:
    server = await raw(ok(b"x"))
    async with aclosing(Http1Client()) as client:
        with pytest.raises(NotConnected, match="CR or LF"):
            await client.send(
                "POST", server.url, content=b"", headers={"Idempotency-Key": "k\r\nX: 1"},
                timeout=1,
            )  # fmt: skip
        with pytest.raises(NotConnected, match="not a plain http"):
            await client.send("POST", "ftp://h/x", content=b"", headers={}, timeout=1)
    assert server.connections == 0


async def test_the_step_client_sends_plain_http_itself(raw: Callable[..., Awaitable[Raw]]) -> None:
    server = await raw(ok(b"{}"))
    async with aclosing(StepHttpClient()) as client:
        reply = await client.send("POST", server.url, content=b"", headers={}, timeout=5)
        assert reply.status == 200 and reply.headers.get("CONTENT-LENGTH") == "2"
        assert client._other is None, "aiohttp is only for other schemes (https)"
