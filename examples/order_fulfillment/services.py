"""The five HTTP services of the order-fulfillment example, in one process.

Run them (``--port 0`` picks a free port; prints one line once listening)::

    python -m examples.order_fulfillment.services --port 8700
    services ready on http://127.0.0.1:8700

or in-process, e.g. in a test::

    async with run_services(port=0, knobs=Knobs(flaky_failures=3)) as base_url:
        ...

Bodies are JSON; models are in :mod:`examples.order_fulfillment.models`. Every
POST marked ``[idem]`` requires an ``Idempotency-Key`` header (400 without it) and
replays its stored reply on a repeat (header ``Idempotent-Replayed: true``);
4xx replies are stored, 5xx are not. Errors are :class:`ErrorReply`.

Routes, as ``METHOD path [idem]: request -> replies``::

    POST /orders [idem]: CreateOrderRequest -> 201 OrderReply | 409 order_exists
    POST /orders/{order_id}/cancel [idem]: CompensationRequest -> 200 OrderReply | 404
    GET  /orders/{order_id} -> 200 OrderRecord | 404
    POST /inventory/reservations [idem]: ReserveInventoryRequest
         -> 201 ReservationReply | 409 out_of_stock (ErrorReply.sku names the SKU)
    POST /inventory/reservations/{reservation_id}/release [idem]: CompensationRequest
         -> 200 ReservationReply | 404
    GET  /inventory/stock/{sku} -> 200 StockReply
    POST /payments/charges [idem]: ChargeRequest -> 201 ChargeReply | 402 card_declined
    POST /payments/charges/{charge_id}/refund [idem]: CompensationRequest
         -> 200 RefundReply | 404 | 503 refund_unavailable
    POST /shipping/shipments [idem]: CreateShipmentRequest
         -> 201 ShipmentReply | 503 shipping_unavailable
    POST /shipping/shipments/{shipment_id}/cancel [idem]: CompensationRequest
         -> 200 ShipmentReply | 404
    POST /notifications [idem]: NotificationRequest -> 201 NotificationReply
    GET  /admin/knobs -> 200 Knobs
    POST /admin/knobs: partial Knobs (JSON object) -> 200 Knobs | 422 invalid_knobs
    GET  /admin/stats -> 200 StatsReply
    GET  /admin/orders/{order_id} -> 200 OrderEffects
    POST /admin/reset: ResetRequest (optional) -> 200 ResetReply

A :class:`CompensationRequest` body is optional (an empty body is fine).
Failure knobs and their defaults: see :class:`Knobs` and
:mod:`examples.order_fulfillment.knobs`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress

from aiohttp import web

from examples.order_fulfillment.admin import ServiceSet, admin_app
from examples.order_fulfillment.knobs import ServicesSettings, parse_args
from examples.order_fulfillment.models import Knobs

__all__ = ["ServiceSet", "build_app", "main", "run_services", "serve"]

READY_PREFIX = "services ready on "


def build_app(service_set: ServiceSet) -> web.Application:
    """Build the root application: one sub-app per service, plus ``/admin``.

    Args:
        service_set: the services (state and knobs) to serve.

    Returns:
        The aiohttp application, not yet started.
    """
    app = web.Application()
    for name, service in service_set.services.items():
        app.add_subapp(f"/{name}", service.app())
    app.add_subapp("/admin", admin_app(service_set))
    return app


@asynccontextmanager
async def run_services(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    knobs: Knobs | None = None,
    service_set: ServiceSet | None = None,
) -> AsyncIterator[str]:
    """Serve the five services until the block exits.

    Args:
        host: interface to bind.
        port: port to bind; 0 picks a free one.
        knobs: initial failure knobs (ignored if ``service_set`` is given).
        service_set: services to serve; pass one to inspect state in-process.

    Yields:
        The base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash).
    """
    services = service_set if service_set is not None else ServiceSet(knobs)
    runner = web.AppRunner(build_app(services), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        # With port 0 the kernel picked the port; read it back from the socket.
        bound_port = runner.addresses[0][1]
        yield f"http://{host}:{bound_port}"
    finally:
        await runner.cleanup()


async def serve(settings: ServicesSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set), printing the ready line.

    Args:
        settings: host, port and initial knobs.
        stop: optional event that ends serving when set.
    """
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on every platform (e.g. Windows); Ctrl-C then raises instead.
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with run_services(host=settings.host, port=settings.port, knobs=settings.knobs) as url:
        # Tests and the demo wait for exactly this line on stdout.
        print(f"{READY_PREFIX}{url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m examples.order_fulfillment.services``."""
    settings = parse_args(argv)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        print(
            f"cannot listen on {settings.host}:{settings.port}: {exc}; "
            "choose another --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
