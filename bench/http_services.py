"""Tiny local HTTP services for the *medium* scenario.

Run in their own process (``python -m bench.http_services --port N``) so their CPU is
not charged to any engine or to the driver. Five services ``/svc1`` .. ``/svc5``, each
with ``POST /step`` and ``POST /compensate``; a step answers 422 (business failure)
when the request's ``fail_at`` equals its step number. ``GET /stats`` returns call
counts, used by the driver as a sanity check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from typing import Any

from aiohttp import web

from bench.scenarios import HTTP_BUSINESS_FAILURE
from infra.processes import free_port

SERVICES = 10  # enough endpoints for any HTTP scenario up to 10 steps


def _make_app() -> web.Application:
    calls: Counter[str] = Counter()

    async def step(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        body: dict[str, Any] = await request.json()
        calls[f"step{n}"] += 1
        if body.get("fail_at") == n:
            return web.json_response({"error": "declined", "step": n}, status=HTTP_BUSINESS_FAILURE)
        key = request.headers.get("Idempotency-Key", "")
        return web.json_response({"step": n, "ok": True, "key": key})

    async def compensate(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        await request.read()
        calls[f"comp{n}"] += 1
        return web.json_response({"compensated": n, "ok": True})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(dict(calls))

    app = web.Application()
    app.router.add_post(r"/svc{n:\d+}/step", step)
    app.router.add_post(r"/svc{n:\d+}/compensate", compensate)
    app.router.add_get("/stats", stats)
    return app


async def _serve(port: int) -> None:
    runner = web.AppRunner(_make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The parent closes our stdin to stop us (and we stop if it dies).
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()
    await runner.cleanup()


class HttpServices:
    """Starts and stops the services process from the driver."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        self.port = free_port()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.http_services",
            "--port",
            str(self.port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout=30)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"http services failed to start: {line!r}")

    async def stats(self) -> dict[str, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"GET /stats HTTP/1.0\r\nHost: x\r\n\r\n")
        await writer.drain()
        raw = await reader.read()
        writer.close()
        body = raw.split(b"\r\n\r\n", 1)[1]
        result: dict[str, int] = json.loads(body)
        return result

    async def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        self._proc = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
