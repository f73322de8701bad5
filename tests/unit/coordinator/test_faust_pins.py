"""Pins the Faust internals ``coordinator._faust_app`` overrides and wraps.

``FetchThread._fetch_records`` wraps Faust's consumer thread method of that name (it
hands aiokafka ``Active`` instead of Faust's live set: the changelog recovery stall);
``ConsumerThread._create_worker_consumer`` hooks the membership lease and the short
long-poll into the consumer Faust builds; the consumer, transport and app override more.
All are private to faust-streaming. Renamed or re-shaped by a release, an override is
silently never called (the stall is back, the lease sees no heartbeat: every lane waits
for ever) or fails at the first rebalance. These tests fail first, naming what moved, as
tests/unit/coordinator/test_lease_aiokafka.py does for aiokafka.

``drain`` (Faust's drain loop with direct lanes) and the coordinator's lanes
(coordinator/_app.py) also read attributes that only a constructed consumer has
(``_read_offset``, ``suspend_flow``, ...): those are pinned on a real consumer, built
(not started) by the app class the coordinator uses.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import faust
import pytest
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

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


def _coroutine(params: str) -> Callable[[Any], bool]:
    """A coroutine function (bound) taking ``params``."""
    return lambda value: inspect.iscoroutinefunction(value) and parameters(value) == params


def _callable(params: str) -> Callable[[Any], bool]:
    return lambda value: callable(value) and parameters(value) == params


def _event(value: Any) -> bool:
    """An asyncio.Event-like: ``is_set()`` and an awaitable ``wait()``."""
    return callable(getattr(value, "is_set", None)) and inspect.iscoroutinefunction(
        getattr(value, "wait", None)
    )


def _read_offsets(value: Any) -> bool:
    """A mapping keyed by TP whose unseen partitions read None (Faust's defaultdict)."""
    if not isinstance(value, MutableMapping):
        return False
    tp = TP("pin.topic", 0)
    fresh = value[tp] is None
    value[tp] = 7
    kept = value[TP("pin.topic", 0)] == 7
    del value[tp]
    return fresh and kept


#: consumer attribute (dotted: reached through it) -> (what it must be, who reads it)
CONSUMER_READS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "_read_offset": (_read_offsets, "a mapping TP -> last offset read, None when unread"),
    "_add_gap": (_coroutine("(tp, offset_from, offset_to)"), "a coroutine (tp, from, to)"),
    "suspend_flow": (_event, "an asyncio.Event-like with is_set() and async wait()"),
    "wait_first": (_coroutine("(*coros, timeout=None)"), "a coroutine (*coros, timeout=None)"),
    "callback": (_callable("(message)"), "a callable (message): hands a record to Faust"),
    "_commit_every": (lambda v: v is None or isinstance(v, int), "int or None"),
    "_n_acked": (lambda v: isinstance(v, int), "int, the acks since the last commit"),
    "commit": (inspect.iscoroutinefunction, "a coroutine"),
    "_stopped": (_event, "an Event-like: the consumer stopped"),
    "should_stop": (lambda v: isinstance(v, bool), "bool"),
    "getmany": (
        lambda v: inspect.isasyncgenfunction(v) and parameters(v) == "(timeout)",
        "an async generator (timeout) of (TP, message)",
    ),
    "pause_partitions": (_callable("(tps)"), "a callable (tps)"),
    "consumer_stopped_errors": (
        lambda v: isinstance(v, tuple) and all(issubclass(e, BaseException) for e in v),
        "a tuple of exception classes",
    ),
    "transport.app.should_stop": (lambda v: isinstance(v, bool), "bool"),
    "app.monitor.stream_inbound_time": (
        lambda v: isinstance(v, MutableMapping),
        "a mapping TP -> monotonic time (Faust's idle check)",
    ),
    "app._fetcher._stopped": (_event, "an Event-like: the fetcher stopped"),
    "app.topics.acks_enabled_for": (
        _callable("(topic)"),
        "a callable (topic) -> bool: whether _faust_path records a gap (_add_gap)",
    ),
    "unacked": (lambda v: callable(getattr(v, "discard", None)), "a set-like with discard()"),
    "seek": (_coroutine("(partition, offset)"), "a coroutine (partition, offset)"),
    "assignment": (_callable("()"), "a callable () -> set of TP"),
    "_thread._ensure_consumer": (_callable("()"), "the thread's aiokafka consumer, built"),
    "_thread.call_thread": (inspect.iscoroutinefunction, "a coroutine running on the thread"),
}


@pytest.fixture
def consumer() -> Iterator[Any]:
    """The consumer the coordinator's app builds, constructed and never started."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = app_class(10)("pin-consumer", broker="kafka://127.0.0.1:1", store="memory://")
        yield app.consumer
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def unlike_what_we_read(consumer: Any) -> list[str]:
    """The attributes of CONSUMER_READS that ``consumer`` lacks or has in another shape."""
    wrong = []
    for path, (fits, shape) in CONSUMER_READS.items():
        value: Any = consumer
        try:
            for name in path.split("."):
                value = getattr(value, name)
        except AttributeError:
            wrong.append(f"consumer.{path} is gone (must be {shape})")
            continue
        if getattr(value, "__isabstractmethod__", False):  # Faust's stub: the body is gone
            wrong.append(f"consumer.{path} is only declared (abstract), not {shape}")
            continue
        try:
            ok = fits(value)
        except Exception as exc:  # a shape that cannot even be tried
            ok, shape = False, f"{shape}; trying it raised {exc!r}"
        if not ok:
            wrong.append(f"consumer.{path} is {value!r}, not {shape}")
    return wrong


def test_a_constructed_consumer_has_what_drain_and_the_lanes_read(consumer: Any) -> None:
    assert type(consumer).__mro__[1] is driver.Consumer  # ours, on Faust's aiokafka one
    wrong = unlike_what_we_read(consumer)
    assert not wrong, (
        f"faust-streaming {faust.__version__} (read on {READ_ON}): "
        + "; ".join(wrong)
        + ". coordinator/_faust_app.py drain/_faust_path copy Faust's "
        "Consumer._drain_messages and coordinator/_app.py's lanes use these: re-read "
        "faust/transport/consumer.py, adapt them, then update CONSUMER_READS"
    )
