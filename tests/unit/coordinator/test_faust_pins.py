"""Pins the Faust internals ``coordinator._faust_app`` overrides and wraps.

``FetchThread._fetch_records`` wraps Faust's consumer thread method of that name (it
hands aiokafka ``Active`` instead of Faust's live set: the changelog recovery stall);
``ConsumerThread._create_worker_consumer`` hooks the membership lease and the short
long-poll into the consumer Faust builds; the consumer, transport and app override more.
All are private to faust-streaming. Renamed or re-shaped by a release, an override is
silently never called (the stall is back, the lease sees no heartbeat: every lane waits
for ever) or fails at the first rebalance. These tests fail first, naming what moved, as
tests/unit/coordinator/test_lease_aiokafka.py does for aiokafka.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import faust
import pytest
from faust.transport.drivers import aiokafka as driver

from coordinator._faust_app import FetchThread, HookedApp, app_class

#: the faust-streaming release these were read against
READ_ON = "0.15.3"

#: (Faust class, method) -> its parameters (no annotations) when the overrides were written
OVERRIDDEN: dict[tuple[type, str], str] = {
    (driver.AIOKafkaConsumerThread, "_fetch_records"): (
        "(self, consumer, active_partitions, timeout=None, max_records=None)"
    ),
    (driver.AIOKafkaConsumerThread, "_create_worker_consumer"): "(self, transport)",
    (driver.Consumer, "_drain_messages"): "(self, fetcher)",
    (driver.Consumer, "_new_consumer_thread"): "(self)",
    (driver.Consumer, "ack"): "(self, message)",
    (faust.App, "__init__"): (
        "(self, id, *, monitor=None, config_source=None, loop=None, beacon=None, **options)"
    ),
    (faust.App, "_new_transport"): "(self)",
    (faust.App, "on_first_start"): "(self)",
    (faust.App, "on_stop"): "(self)",
    (faust.App, "_on_partitions_revoked"): "(self, revoked)",
    (faust.App, "_on_partitions_assigned"): "(self, assigned, generation_id=0)",
}


def parameters(function: Callable[..., Any]) -> str:
    """``function``'s signature without annotations: ``(self, fetcher)``."""
    signature = inspect.signature(function)
    return str(
        signature.replace(
            parameters=[
                p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()
            ],
            return_annotation=inspect.Signature.empty,
        )
    )


def our_classes() -> list[type]:
    """Every class of ``coordinator._faust_app`` that subclasses one of Faust's."""
    app = app_class(10)
    transport = inspect.getclosurevars(app._new_transport).nonlocals["Transport"]
    consumer = transport.Consumer
    thread = inspect.getclosurevars(consumer._new_consumer_thread).nonlocals["ConsumerThread"]
    return [HookedApp, app, transport, consumer, thread, FetchThread]


def moved(base: type, name: str) -> str:
    return (
        f"faust-streaming {faust.__version__} (read on {READ_ON}): "
        f"{base.__module__}.{base.__qualname__}.{name}"
    )


@pytest.mark.parametrize(
    ("base", "name"), list(OVERRIDDEN), ids=[f"{b.__name__}.{n}" for b, n in OVERRIDDEN]
)
def test_faust_still_has_what_the_coordinator_overrides_with_the_same_parameters(
    base: type, name: str
) -> None:
    found = base.__dict__.get(name) or getattr(base, name, None)
    assert found is not None, (
        f"{moved(base, name)} is gone: coordinator/_faust_app.py overrides it, and the "
        "override is never called now. Re-read Faust's consumer/app, move the override, "
        "then update OVERRIDDEN"
    )
    assert parameters(found) == OVERRIDDEN[base, name], (
        f"{moved(base, name)} now takes {parameters(found)}, not {OVERRIDDEN[base, name]}: "
        "re-read how Faust calls it, adapt the override in coordinator/_faust_app.py, then "
        "update OVERRIDDEN"
    )


def overrides() -> dict[str, type]:
    """``Class.method`` of ours -> the Faust class whose method it overrides."""
    found = {}
    for ours in our_classes():
        for name, value in vars(ours).items():
            base = next((b for b in ours.__mro__[1:] if name in vars(b)), None)
            if inspect.isfunction(value) and base and base.__module__.startswith("faust"):
                found[f"{ours.__qualname__}.{name}"] = base
    return found


def test_every_override_of_a_faust_method_is_pinned_and_takes_what_faust_s_takes() -> None:
    found = overrides()
    for wraps in ("FetchThread._fetch_records", "ConsumerThread._create_worker_consumer"):
        assert any(where.endswith(wraps) for where in found), (
            f"{wraps} overrides nothing of faust-streaming {faust.__version__} (read on "
            f"{READ_ON}): Faust never calls it. Re-read Faust's consumer thread"
        )
    for where, base in found.items():
        name = where.rsplit(".", 1)[1]
        pins = [key for key in OVERRIDDEN if key[1] == name and issubclass(key[0], base)]
        assert pins, f"{where} overrides {base.__qualname__}.{name}: pin it in OVERRIDDEN"
        ours = getattr(next(c for c in our_classes() if c.__qualname__ in where), name)
        if parameters(ours) == "(self, *args, **kwargs)":
            continue  # passes everything on
        assert parameters(ours) == OVERRIDDEN[pins[0]], (
            f"{where}{parameters(ours)} does not take what Faust's {base.__qualname__}."
            f"{name}{OVERRIDDEN[pins[0]]} takes"
        )


def test_faust_fetches_through_the_method_fetch_thread_wraps() -> None:
    getmany = inspect.getsource(driver.AIOKafkaConsumerThread.getmany)
    assert re.search(r"self\.call_thread\(\s*self\._fetch_records,", getmany), (
        f"{moved(driver.AIOKafkaConsumerThread, 'getmany')} no longer fetches through "
        "self._fetch_records: FetchThread's wrap (coordinator._faust_app.Active) is "
        "bypassed, and a fetch pending across a rebalance consumes the changelog records "
        "the table recovery sought back to (recovery stalls for ever)"
    )
    fetching = getattr(driver.AIOKafkaConsumerThread, "_fetch_records", None)
    fetch = inspect.getsource(fetching) if fetching is not None else ""
    assert re.search(r"fetcher\.fetched_records\(\s*active_partitions,", fetch), (
        f"{moved(driver.AIOKafkaConsumerThread, '_fetch_records')} no longer hands its "
        "active_partitions to aiokafka's Fetcher.fetched_records: re-read it before "
        "trusting FetchThread's Active"
    )


def test_faust_builds_a_worker_s_consumer_through_the_method_the_lease_hooks() -> None:
    create = inspect.getsource(driver.AIOKafkaConsumerThread._create_consumer)
    assert "self._create_worker_consumer(transport)" in create, (
        f"{moved(driver.AIOKafkaConsumerThread, '_create_consumer')} no longer builds a "
        "worker's consumer with _create_worker_consumer: the membership lease would never "
        "be hooked (every lane waits for ever) and the long-poll stays 1.5 s"
    )
