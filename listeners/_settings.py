"""Settings of the listeners' Faust app, from ``LISTENER_*`` environment variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from coordinator._gc import GcOptions
from coordinator.events import DEFAULT_BOOTSTRAP_SERVERS, Topics

__all__ = ["DEFAULT_ORDER_STATUS_BY_STEP", "ListenerSettings"]

#: Status an order reaches when the named step of the order saga succeeds.
DEFAULT_ORDER_STATUS_BY_STEP: dict[str, str] = {
    "create_order": "pending",
    "reserve_inventory": "inventory_reserved",
    "charge_payment": "paid",
    "ship": "shipped",
}


class ListenerSettings(GcOptions):
    """Everything a listener worker, its CLI and its migrations need.

    Read from the environment with the ``LISTENER_`` prefix (``LISTENER_DATABASE_URL``,
    ``LISTENER_BATCH_SIZE``, ...); the broker comes from ``KAFKA_BOOTSTRAP_SERVERS``.
    Durations are seconds (``LISTENER_BATCH_WINDOW=0.2``) or ISO 8601 (``PT0.2S``).
    Dict and list values are given as JSON, e.g.
    ``LISTENER_ORDER_STATUS_BY_STEP='{"pack": "packed"}'``.

    Attributes:
        database_url: SQLAlchemy URL of this listener's own database.
        app_id: Faust app id, also the Kafka consumer group.
        topic_prefix: Prefix shared with the coordinator (``{prefix}.lifecycle``).
        partitions: Partition count of the lifecycle and dead-letter topics.
        replication_factor: Replication factor of topics the listener creates.
        kafka_bootstrap_servers: ``host:port[,host:port]`` of the Kafka cluster.
        web_host: Interface the worker's HTTP endpoint binds to.
        web_port: Port of the worker's HTTP endpoint (``GET /{listener}/{key}``, ...).
        batch_size: Most events applied in one SQL transaction.
        batch_window: Longest wait for a batch to fill before it is applied anyway.
        fetch_min_bytes: The broker answers the worker's fetch once this many bytes are
            there, or after 100 ms (a trickle read in a few full fetches).
        retry_max_delay: Cap of the backoff between retries of a failing database.
        data_dir: Faust's data directory for this worker.
        listeners: Listeners to run when the command line names none, as
            ``module:attribute`` (a ``Listener``, or a function taking these settings
            and returning one) or a built-in name (``orders``).
        database_urls: Per-listener database, by listener name, instead of
            ``database_url`` (e.g. ``'{"trips": "postgresql+psycopg://.../trips"}'``).
        max_event_bytes: Larger lifecycle records are dead-lettered unread.
        order_saga_types: Saga types the order-status listener handles.
        order_status_by_step: Order status reached when a step succeeds.
        gc_policy: ``tuned`` (start-up heap frozen once ready, young collections
            rarer) or ``off`` (CPython's collector untouched); see ``coordinator._gc``.
        gc_young_threshold: Allocations between young collections once tuned.
        gc_slow_pause: A collection holding the worker longer is logged (0: never).
    """

    model_config = SettingsConfigDict(env_prefix="LISTENER_", extra="ignore")

    database_url: str = "sqlite:///orders.db"
    app_id: str = "saga-listeners"
    topic_prefix: str = "saga"
    partitions: int = Field(default=8, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    kafka_bootstrap_servers: str = Field(
        default=DEFAULT_BOOTSTRAP_SERVERS,
        validation_alias=AliasChoices(
            "LISTENER_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6067, ge=0, le=65535)
    batch_size: int = Field(default=500, ge=1)
    batch_window: timedelta = timedelta(milliseconds=200)
    #: the broker answers the worker's fetch once this many bytes are there, or after
    #: 100 ms: a trickle of events is read in a few full fetches, not one per record
    #: (each costs the broker and the worker; half the listener's CPU at 100 sagas/s)
    fetch_min_bytes: int = Field(default=256 * 1024, ge=1)
    retry_max_delay: timedelta = timedelta(seconds=5)
    data_dir: Path = Path(".listeners-data")
    listeners: list[str] = Field(default_factory=lambda: ["orders"])
    database_urls: dict[str, str] = Field(default_factory=dict)
    max_event_bytes: int = Field(default=512 * 1024, ge=1024)
    order_saga_types: frozenset[str] = frozenset({"order_fulfillment"})
    order_status_by_step: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ORDER_STATUS_BY_STEP)
    )

    @field_validator("batch_window", "retry_max_delay", "gc_slow_pause", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        # Environment variables give durations as plain seconds: "0.2".
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value
        return value

    @field_validator("batch_window", "retry_max_delay")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. 0.2 (seconds)")
        return value

    def database_url_of(self, listener: str) -> str:
        """The database URL of the listener named ``listener``."""
        return self.database_urls.get(listener, self.database_url)

    @property
    def lifecycle_topic(self) -> str:
        """Name of the lifecycle topic the coordinator writes (``{prefix}.lifecycle``)."""
        return Topics(self.topic_prefix).lifecycle

    @property
    def deadletter_topic(self) -> str:
        """Name of the dead-letter topic every agent writes (``{prefix}.deadletters``)."""
        return Topics(self.topic_prefix).deadletters

    @property
    def broker_url(self) -> str:
        """Faust broker URL(s) for :attr:`kafka_bootstrap_servers`."""
        return ";".join(
            f"kafka://{host.strip()}" for host in self.kafka_bootstrap_servers.split(",")
        )
