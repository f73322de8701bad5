"""How an HTTP step's request is sent: one small interface, two clients behind it.

``send_json`` (``coordinator._http``) needs one thing of a client: send these bytes,
return the status, headers and body, or say whether the request may have left. Each
client answers with a ``Reply`` or raises one of two errors, and that split is what the
outcome rules stand on (ARCHITECTURE.md section 4):

* ``NotConnected``: no connection was made (refused, no route, a connect timeout, an
  invalid URL). The request provably never left: a definite failure.
* ``Lost``: the request may have been sent (a read timeout, a connection reset or
  closed before the reply, a malformed reply). Uncertain: the effect may have happened.

Clients:

* ``AiohttpClient``: one ``aiohttp.ClientSession`` with a keep-alive pool; the executors
  use it for ``https://`` (``coordinator._http1.StepHttpClient``; plain ``http://`` goes
  through the leaner ``Http1Client`` there). A step's call used to go through httpx on
  top of aiohttp; httpx's request building (URL merging, header models) cost as much CPU
  again as aiohttp's own send, about 15 % of a busy worker's event loop in the medium
  bench (five HTTP steps per saga), and httpcore's own pool degrades with hundreds of
  requests in flight.
* ``HttpxClient``: any ``httpx.AsyncClient`` (a test's ``httpx.MockTransport``, the
  ``SagaTestKit``'s transport, or a client of the caller's own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

import aiohttp
import httpx


class Reply(NamedTuple):
    """A participant's answer: status, headers (case-insensitive lookup), body."""

    status: int
    headers: Mapping[str, str]
    content: bytes


class TransportFailure(Exception):
    """A request without a usable reply; ``kind`` names the failure (``ConnectError``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class NotConnected(TransportFailure):
    """No connection was made: the request never left (definite)."""


class Lost(TransportFailure):
    """The request may have been sent, and no reply came back (uncertain)."""


class HttpClient(Protocol):
    """What ``send_json`` needs of an HTTP client."""

    async def send(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str], timeout: float
    ) -> Reply:
        """Send one request; return its reply or raise ``NotConnected`` / ``Lost``.

        ``timeout`` bounds the connect and each read (the caller bounds the whole call).
        """
        ...

    async def aclose(self) -> None:
        """Release the client's connections."""
        ...


class AiohttpClient:
    """Sends through one ``aiohttp.ClientSession`` (created on first use, on its loop).

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
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def send(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str], timeout: float
    ) -> Reply:
        """Send one request (see ``HttpClient.send``)."""
        limits = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        try:
            async with self._get_session().request(
                method,
                url,
                data=content,
                headers=headers,
                timeout=limits,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return Reply(response.status, response.headers, body)
        except aiohttp.ConnectionTimeoutError as exc:
            # raised only while a connection is acquired: nothing was written yet
            raise NotConnected("ConnectTimeout", f"connect timed out: {exc}") from exc
        except TimeoutError as exc:
            raise Lost("ReadTimeout", "timed out waiting for the reply") from exc
        except aiohttp.ClientConnectorError as exc:
            raise NotConnected("ConnectError", str(exc)) from exc
        except aiohttp.InvalidURL as exc:
            raise NotConnected("InvalidURL", f"invalid URL: {exc}") from exc
        except aiohttp.ClientError as exc:
            # disconnected, reset or a malformed reply after the request may have left
            raise Lost(type(exc).__name__, repr(exc)) from exc

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxClient:
    """Sends through an ``httpx.AsyncClient`` (tests' mock transports, callers' clients)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str], timeout: float
    ) -> Reply:
        """Send one request (see ``HttpClient.send``)."""
        try:
            response = await self.client.request(
                method, url, content=content, headers=headers, timeout=timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise NotConnected(type(exc).__name__, str(exc)) from exc
        except httpx.TransportError as exc:
            # only a failed connect proves the request never reached the participant
            raise Lost(type(exc).__name__, str(exc)) from exc
        return Reply(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        """Close the httpx client."""
        await self.client.aclose()
