"""Coordinator settings: one object, read from ``SAGA_*`` environment variables."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from coordinator._gc import GcOptions
from coordinator._retention import Retention
from coordinator.events import DEFAULT_BOOTSTRAP_SERVERS, Topics

#: the table stores ``SAGA_STORE`` accepts (Faust store URLs; see coordinator._tablestore)
STORE_SCHEMES = ("memory://", "rocksdb://")


class CoordinatorSettings(GcOptions):
    """Every coordinator setting, with its default. Env: ``SAGA_<NAME>``.

    The collector settings (``gc_policy``, ``gc_young_threshold``, ``gc_slow_pause``) come
    from ``coordinator._gc.GcOptions``.
    """

    model_config = SettingsConfigDict(env_prefix="SAGA_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default=DEFAULT_BOOTSTRAP_SERVERS,
        validation_alias=AliasChoices("SAGA_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    app_id: str = "saga-coordinator"
    topic_prefix: str = "saga"
    partitions: int = Field(default=8, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    #: saga definitions to load, as ``package.module:NAME`` (comma-separated in env)
    definitions: Annotated[list[str], NoDecode] = []
    #: base URL per service for HTTP steps, e.g. {"payment": "http://127.0.0.1:8700/payments"}
    service_urls: dict[str, str] = {}
    #: services run by this worker's executors (empty = every non-remote service)
    executors: Annotated[list[str], NoDecode] = []
    #: step attempts run at once per step-topic partition (results are acked in order)
    executor_concurrency: int = Field(default=8, ge=1)
    run_executors: bool = True
    #: step attempts of the services this worker executes that run at once as its own
    #: tasks, one Kafka hop each (``coordinator._onehop``); remote services excepted
    step_concurrency: int = Field(default=64, ge=1)
    #: attempts waiting for one of those slots beyond which the inbox waits (backpressure)
    step_queue: int = Field(default=256, ge=1)
    #: also consume the step topics of the services this worker executes in-process
    #: (requests sent by workers that do not execute them, or before an upgrade); off
    #: saves the polling of topics nobody writes to
    serve_step_topics: bool = True
    #: time between looks at the deadline heap (a look costs O(due sagas))
    timer_interval: timedelta = Field(default=timedelta(milliseconds=100), gt=timedelta(0))
    #: inbox records applied per partition per batch (one broker round trip per batch)
    batch_size: int = Field(default=500, ge=1)
    #: records buffered per partition before its fetching pauses
    partition_buffer: int = Field(default=2000, ge=1)
    #: largest inbox record accepted; a larger step result fails its step, others are
    #: dead-lettered
    max_inbox_bytes: int = Field(default=512 * 1024, ge=1024)
    #: largest step request sent; a larger one fails its step before it is sent
    max_request_bytes: int = Field(default=512 * 1024, ge=1024)
    #: largest saga record, lifecycle event or dead letter written (under the broker's
    #: ``message.max.bytes``, 1 MiB by default)
    max_record_bytes: int = Field(default=960 * 1024, ge=1024)
    #: fault injection for tests: the worker kills itself (SIGKILL) right after its Nth
    #: batch of saga records is acknowledged, before anything derived is sent (0: never)
    fault_kill_after_records: int = Field(default=0, ge=0)
    #: fault injection for tests: the first N inbox records the consumer passes never reach
    #: a lane (unhandled, unacked), as when Faust skips records around a restart
    fault_skip_inbox_records: int = Field(default=0, ge=0)
    #: fault injection for tests: the table recovery waits this long after seeking the
    #: changelog partitions it restores, before it resumes them (a loaded machine's lag)
    fault_recovery_seek_lag: timedelta = Field(default=timedelta(0), ge=timedelta(0))
    #: lifecycle topic retention when the coordinator creates it (None/"forever": kept
    #: forever, as listener workers create it too: replay rebuilds from its first event)
    lifecycle_retention: timedelta | None = None
    #: lifecycle records: ``batch`` (one record per saga and inbox batch, carrying its
    #: events) or ``single`` (one record per event, for consumers that need it); both are
    #: read by ``coordinator.events.parse_events``
    lifecycle_format: Literal["batch", "single"] = "batch"
    #: longest Kafka long-poll; bounds the wait of each hop (faust hard-codes 1500 ms)
    fetch_max_wait: timedelta = Field(default=timedelta(milliseconds=10), ge=timedelta(0))
    #: the broker answers a fetch once this many bytes are there (or ``fetch_max_wait``
    #: passed): 1 reads each record as it comes, one fetch per record under a trickle
    fetch_min_bytes: int = Field(default=1, ge=1)
    #: a crashed worker's partitions move to the survivors after this long
    session_timeout: timedelta = Field(default=timedelta(seconds=10), gt=timedelta(0))
    #: the membership lease (``coordinator._lease``) ends this long before the broker could
    #: expel this worker (the send of its last answered heartbeat + ``session_timeout``):
    #: no saga record is written after it until a heartbeat gets through again
    lease_margin: timedelta = Field(default=timedelta(seconds=1), ge=timedelta(0))
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_enabled: bool = True
    datadir: Path = Path.home() / ".cache" / "saga-coordinator" / "faust"
    store: str = "memory://"
    standby_replicas: int = Field(default=0, ge=0)
    #: a finished saga keeps its full record this long, then shrinks to a marker
    #: (``none``: keep every saga forever). ISO 8601 (``PT1H``) or seconds.
    retention: timedelta | None = timedelta(hours=1)
    #: the marker keeps "starting this id does nothing" this much longer, then is deleted
    #: (0: no marker, the full record is deleted at once)
    dedupe_retention: timedelta = timedelta(days=7)

    @field_validator("definitions", "executors", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("retention", "lifecycle_retention", mode="before")
    @classmethod
    def _none_keeps_forever(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off", "forever"):
            return None
        return _seconds(value)

    @field_validator(
        "dedupe_retention",
        "timer_interval",
        "fetch_max_wait",
        "session_timeout",
        "lease_margin",
        "gc_slow_pause",
        "fault_recovery_seek_lag",
        mode="before",
    )
    @classmethod
    def _duration_seconds(cls, value: Any) -> Any:
        return _seconds(value)

    @field_validator("retention", "lifecycle_retention", "dedupe_retention", mode="after")
    @classmethod
    def _not_negative(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError(
                "a retention cannot be negative: give seconds, ISO 8601 (PT1H) or none"
            )
        return value

    @model_validator(mode="after")
    def _lease_outlives_a_heartbeat(self) -> CoordinatorSettings:
        # The lease is renewed when a heartbeat's answer arrives, and runs from that
        # heartbeat's send; the next one is sent an interval after the previous send. So a
        # lease of L outlasts the gap between two renewals while a heartbeat's round trip
        # stays under L - interval: two intervals tolerate a round trip of one interval.
        lease = self.session_timeout - self.lease_margin
        interval = self.heartbeat_interval
        if lease < 2 * interval:
            margin = self.lease_margin.total_seconds()
            # the fixes, rounded to the millisecond on the safe side
            most = (self.session_timeout - 2 * interval).total_seconds()
            least = 3 * margin if margin <= 3 else margin + 6
            most, least = math.floor(round(most * 1e3, 6)), math.ceil(round(least * 1e3, 6))
            raise ValueError(
                f"SAGA_LEASE_MARGIN={margin:g}s leaves a membership lease of "
                f"{lease.total_seconds():g}s after each heartbeat's send, less than two "
                f"heartbeat intervals (2 x {interval.total_seconds():g}s; an interval is a "
                f"third of SAGA_SESSION_TIMEOUT={self.session_timeout.total_seconds():g}s, at "
                "most 3s): a heartbeat answered more than "
                f"{(lease - interval).total_seconds():.3g}s after its send would let the lease "
                "lapse before the next one renews it, and a healthy worker would hold every "
                f"batch. Set SAGA_LEASE_MARGIN to at most {most / 1000:g}s, or "
                f"SAGA_SESSION_TIMEOUT to at least {least / 1000:g}s"
            )
        return self

    @property
    def heartbeat_interval(self) -> timedelta:
        """Time between the consumer's heartbeats: a third of the session, at most 3 s."""
        return min(timedelta(seconds=3), self.session_timeout / 3)

    @property
    def retention_policy(self) -> Retention:
        """Retention of finished sagas, for the state machine."""
        return Retention(keep=self.retention, dedupe=self.dedupe_retention)

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(STORE_SCHEMES):
            raise ValueError(
                f"SAGA_STORE={value!r}: use memory:// (RAM, restores the whole changelog at "
                "start) or rocksdb:// (on disk under SAGA_DATADIR, restores only what changed)"
            )
        return value

    @property
    def topics(self) -> Topics:
        """The topic names of this deployment's prefix."""
        return Topics(self.topic_prefix)


def _seconds(value: Any) -> Any:
    """A duration given as a plain number of seconds (``SAGA_RETENTION=90``)."""
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            return value  # ISO 8601 (``PT1H``) and the rest: pydantic parses it
    return value
