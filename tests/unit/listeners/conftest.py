from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from listeners import create_db_engine, session_factory
from listeners.orders import OrderStatusListener, metadata


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    engine = create_db_engine("sqlite://")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: sa.Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def listener() -> OrderStatusListener:
    return OrderStatusListener()
