"""An httpx transport backed by aiohttp's connection pool.

httpx stays the API (and ``httpx.MockTransport`` the test double), but httpcore's pool
degrades badly when hundreds of requests are in flight in one process (measured in
``bench/``: ~1,000 req/s at 10 concurrent, ~90 at 100), while aiohttp's connector keeps
its rate. Executors run many step calls concurrently, so they use this transport.
"""

from __future__ import annotations

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one ``aiohttp.ClientSession``.

    Args:
        limit: most connections open at once (all hosts).
        limit_per_host: most connections open to one host.
    """

    def __init__(self, *, limit: int = 200, limit_per_host: int = 100) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit_per_host)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request through the aiohttp session."""
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        headers = [(k.decode(), v.decode()) for k, v in request.headers.raw]
        try:
            async with self._get_session().request(
                request.method,
                str(request.url),
                headers=headers,
                data=await request.aread(),
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                content = await response.read()
                return httpx.Response(
                    response.status,
                    headers=[(k.decode(), v.decode()) for k, v in response.raw_headers],
                    content=content,
                    request=request,
                )
        except TimeoutError as exc:
            raise httpx.ReadTimeout(
                f"{request.method} {request.url}: timed out", request=request
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            # no connection was made: the request provably never left
            raise httpx.ConnectError(
                f"{request.method} {request.url}: {exc}", request=request
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            # disconnected or reset after the request may have been sent: uncertain
            raise httpx.RemoteProtocolError(
                f"{request.method} {request.url}: {exc}", request=request
            ) from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(f"{request.method} {request.url}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the aiohttp session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
