"""Fixtures: the five services in-process on a free port, and a client for them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from examples.order_fulfillment.services import ServiceSet, run_services


@pytest.fixture
def service_set() -> ServiceSet:
    """The services' state, for assertions that the admin API does not cover."""
    return ServiceSet()


@pytest.fixture
async def base_url(service_set: ServiceSet) -> AsyncIterator[str]:
    async with run_services(port=0, service_set=service_set) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        yield http
