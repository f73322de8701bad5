"""SagaClient.flush: a queued command whose delivery failed is sent again, never dropped."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from coordinator import CommandError, CoordinatorSettings, SagaClient


class FlakyProducer:
    """``send`` futures fail while the broker is "down"; ``send_and_wait`` counts."""

    def __init__(self, down_for: int) -> None:
        self.down_for = down_for  # send_and_wait calls that fail before the broker is back
        self.delivered: list[bytes] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if key == b"lost":
            future.set_exception(KafkaConnectionError("broker away longer than the retries"))
        else:
            future.set_result(None)
            self.delivered.append(key)
        return future

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        if self.down_for > 0:
            self.down_for -= 1
            raise KafkaConnectionError("still down")
        self.delivered.append(key)

    async def flush(self) -> None:
        return None


def client_with(producer: FlakyProducer) -> SagaClient:
    client = SagaClient(CoordinatorSettings())
    client._producer = producer  # type: ignore[assignment]
    return client


async def test_a_failed_queued_command_is_sent_again_until_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    producer = FlakyProducer(down_for=2)
    client = client_with(producer)
    for saga_id in ("a", "lost", "b"):
        await client._send(saga_id, b"{}", wait=False)
    await client.flush()
    assert sorted(producer.delivered) == [b"a", b"b", b"lost"]
    await client._http.aclose()


async def test_flush_names_what_never_reached_the_broker() -> None:
    producer = FlakyProducer(down_for=10**6)
    client = client_with(producer)
    await client._send("lost", b"{}", wait=False)
    with pytest.raises(CommandError, match=r"1 queued command\(s\) never reached the broker.*lost"):
        await client.flush(timeout=timedelta(0))
    await client._http.aclose()


_real_sleep = asyncio.sleep


async def _no_sleep(delay: float, *args: Any) -> None:
    await _real_sleep(0)
