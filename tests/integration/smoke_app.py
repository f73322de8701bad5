"""A minimal Faust app (agent + changelog-backed table) run as a real worker by the smoke test.

Run: ``python -m tests.integration.smoke_app worker`` with SMOKE_* variables set.
"""

from __future__ import annotations

import os
import sys

import faust


def create_app(*, broker: str, app_id: str, source: str, sink: str, datadir: str) -> faust.App:
    app = faust.App(
        app_id,
        broker=f"kafka://{broker}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_partitions=2,
        topic_replication_factor=1,
    )
    source_topic = app.topic(
        source, key_serializer="raw", value_serializer="raw", partitions=2, internal=True
    )
    sink_topic = app.topic(sink, key_serializer="raw", value_serializer="raw", partitions=2)
    counts = app.Table("counts", default=int, partitions=2, key_type=str, value_type=int)

    @app.agent(source_topic)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            key = event.key.decode()
            counts[key] += 1
            await sink_topic.send(key=event.key, value=f"{key}={counts[key]}".encode())

    @app.task
    async def announce() -> None:
        await sink_topic.maybe_declare()
        print("SMOKE-READY", flush=True)

    return app


def main() -> None:
    env = os.environ
    app = create_app(
        broker=env["SMOKE_BROKER"],
        app_id=env["SMOKE_APP_ID"],
        source=env["SMOKE_SOURCE"],
        sink=env["SMOKE_SINK"],
        datadir=env["SMOKE_DATADIR"],
    )
    sys.argv = [sys.argv[0], *sys.argv[1:]]
    app.main()


if __name__ == "__main__":
    main()
