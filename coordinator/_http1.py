"""A lean HTTP/1.1 client for plain-``http://`` participants: keep-alive pool, one write.

Why: an HTTP step's call through aiohttp cost ~290 µs of the worker's CPU on loopback,
~120 µs of which is the socket's; a request written in one piece on a pooled connection
and a reply parsed with ``bytes.find`` cost ~120 µs in all. With five calls per saga
(the medium bench) that is ~1 ms per saga on a worker whose event loop is its limit.
``https://`` URLs go through aiohttp (``coordinator._transport``): TLS is not done here.

What it does (and all it does): ``POST``/``PUT``/... with a byte body and headers; the
reply's status, headers and body, read by ``Content-Length``, ``chunked`` or until the
server closes; ``gzip``/``deflate`` bodies are inflated; no redirects, no cookies, no
proxies (like the aiohttp session it replaces). Connections are kept per host and port
and reused unless the reply said ``Connection: close``.

The outcome split (``NotConnected``: never left; ``Lost``: may have left) holds here as
in every client: a request whose header or URL cannot be written (a CR or LF in it), a
refused connection, a connect timeout and a wait for a pooled connection past the
timeout are ``NotConnected``; anything after the first byte is written is ``Lost``
(a read timeout, a reset, a malformed reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from coordinator._transport import AiohttpClient, Lost, NotConnected, Reply

#: a reply's status line and headers may not be longer than this
MAX_HEAD = 64 * 1024


class _Headers(dict[str, str]):
    """Reply headers: lower-case names; ``get`` in any case."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class _Connection(asyncio.Protocol):
    """One keep-alive connection: bytes in, one reply awaited at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.eof = False
        self._wakeup: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def more(self) -> None:
        """Wait for more bytes (or the end of the stream: raises ``Lost``)."""
        if self.eof:
            raise Lost("RemoteProtocolError", "the server closed the connection mid-reply")
        self._wakeup = asyncio.get_running_loop().create_future()
        await self._wakeup
        self._wakeup = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def read_reply(self, method: str) -> tuple[Reply, bool]:
        """Read one reply; returns it and whether the connection may be reused."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise Lost("RemoteProtocolError", f"reply head over {MAX_HEAD} bytes")
                await self.more()
                end = self.buffer.find(b"\r\n\r\n")
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            version, status, headers = _parse_head(head)
            if not 100 <= status < 200:
                break  # an interim 1xx reply is followed by the real one
        keep = _keep_alive(version, headers)
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif (length := headers.get("content-length")) is not None:
            body = await self._exactly(_length(length))
        else:
            body, keep = await self._until_closed(), False
        encoding = headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            try:
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else 0)
            except zlib.error as exc:
                raise Lost("DecodingError", f"{encoding} body: {exc}") from exc
        return Reply(status, headers, body), keep

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self.more()
        body = bytes(self.buffer[:n])
        del self.buffer[:n]
        return body

    async def _line(self) -> bytes:
        end = self.buffer.find(b"\r\n")
        while end < 0:
            if len(self.buffer) > MAX_HEAD:
                raise Lost("RemoteProtocolError", "chunk line too long")
            await self.more()
            end = self.buffer.find(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = (await self._line()).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError as exc:
                raise Lost("RemoteProtocolError", f"bad chunk size {size_line!r}") from exc
            if size == 0:
                while await self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(await self._exactly(size))
            if await self._line():
                raise Lost("RemoteProtocolError", "chunk not followed by CRLF")

    async def _until_closed(self) -> bytes:
        while not self.eof:
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
            self._wakeup = None
        body = bytes(self.buffer)
        self.buffer.clear()
        return body


def _parse_head(head: str) -> tuple[str, int, _Headers]:
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Lost("RemoteProtocolError", f"not an HTTP/1.x status line: {lines[0][:100]!r}")
    headers = _Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise Lost("RemoteProtocolError", f"malformed header line {line[:100]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], int(parts[1]), headers


def _length(value: str) -> int:
    if not value.isdigit():
        raise Lost("RemoteProtocolError", f"bad Content-Length {value!r}")
    return int(value)


def _keep_alive(version: str, headers: _Headers) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _check(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise NotConnected("InvalidRequest", f"{what} contains CR or LF: {value[:100]!r}")
    return value


class _Pool:
    """Idle connections to one host and port, and the slots that bound them."""

    def __init__(self, limit: int) -> None:
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(limit)


class Http1Client:
    """``HttpClient`` for ``http://`` URLs (see the module doc).

    Args:
        limit_per_host: most connections open to one host and port at once; a request
            waits for a free one up to its timeout (then ``NotConnected``: never sent).
    """

    def __init__(self, *, limit_per_host: int = 100) -> None:
        self.limit_per_host = limit_per_host
        self._pools: dict[tuple[str, int], _Pool] = {}

    async def send(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str], timeout: float
    ) -> Reply:
        """Send one request (see ``HttpClient.send``)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise NotConnected("InvalidURL", f"not a plain http:// URL: {url!r}")
        try:
            host, port = parts.hostname, parts.port or 80
        except ValueError as exc:  # a port that is no number
            raise NotConnected("InvalidURL", f"{url!r}: {exc}") from exc
        target = _check(parts.path or "/", "URL path") + (
            f"?{_check(parts.query, 'URL query')}" if parts.query else ""
        )
        lines = [f"{_check(method, 'method')} {target} HTTP/1.1"]
        lines.append(f"Host: {parts.netloc.rpartition('@')[2]}")  # never the credentials
        lines += [f"{_check(k, 'header')}: {_check(v, 'header')}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(content)}")
        try:
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content
        except UnicodeEncodeError as exc:
            raise NotConnected("InvalidRequest", f"a header is not latin-1: {exc}") from exc
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[host, port] = _Pool(self.limit_per_host)
        if pool.slots.locked():
            try:
                await asyncio.wait_for(pool.slots.acquire(), timeout)
            except TimeoutError as exc:
                raise NotConnected(
                    "ConnectTimeout", "no free connection within the timeout"
                ) from exc
        else:
            await pool.slots.acquire()  # free: returns at once
        try:
            conn = await self._connection(pool, host, port, timeout)
            return await self._exchange(pool, conn, method, request, timeout)
        finally:
            pool.slots.release()

    async def _connection(self, pool: _Pool, host: str, port: int, timeout: float) -> _Connection:
        while pool.idle:
            conn = pool.idle.pop()
            if not conn.closed and not conn.eof:
                return conn
        loop = asyncio.get_running_loop()
        try:
            connecting = loop.create_connection(_Connection, host, port)
            _, conn = await asyncio.wait_for(connecting, timeout)
        except TimeoutError as exc:
            raise NotConnected("ConnectTimeout", f"connect to {host}:{port} timed out") from exc
        except OSError as exc:
            raise NotConnected("ConnectError", f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    async def _exchange(
        self, pool: _Pool, conn: _Connection, method: str, request: bytes, timeout: float
    ) -> Reply:
        assert conn.transport is not None
        keep = False
        try:
            conn.transport.write(request)
            async with asyncio.timeout(timeout):
                reply, keep = await conn.read_reply(method)
        except TimeoutError as exc:
            raise Lost("ReadTimeout", "timed out waiting for the reply") from exc
        finally:
            if keep and not conn.closed and not conn.buffer:
                pool.idle.append(conn)
            else:
                conn.close()
        return reply

    async def aclose(self) -> None:
        """Close every idle connection."""
        for pool in self._pools.values():
            while pool.idle:
                with contextlib.suppress(Exception):
                    pool.idle.pop().close()
        self._pools.clear()


class StepHttpClient:
    """The executors' client: ``http://`` through ``Http1Client``, others through aiohttp."""

    def __init__(self) -> None:
        self.plain = Http1Client()
        self._other: AiohttpClient | None = None

    async def send(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str], timeout: float
    ) -> Reply:
        """Send one request (see ``HttpClient.send``)."""
        if url[:7].lower() == "http://":
            return await self.plain.send(
                method, url, content=content, headers=headers, timeout=timeout
            )
        if self._other is None:
            self._other = AiohttpClient()
        return await self._other.send(
            method, url, content=content, headers=headers, timeout=timeout
        )

    async def aclose(self) -> None:
        """Close both clients' connections."""
        await self.plain.aclose()
        if self._other is not None:
            await self._other.aclose()
