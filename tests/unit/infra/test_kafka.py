"""Provisioning details that must never flake."""

from __future__ import annotations

import base64

from infra import kafka


def test_cluster_ids_never_look_like_command_line_options() -> None:
    ids = [kafka._cluster_id() for _ in range(5000)]  # ~78 would start with '-' unguarded
    assert all(not i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_server_properties_make_one_broker_work() -> None:
    props = kafka._server_properties(kafka.BrokerConfig(), kafka.Path("/tmp/x"))
    for line in (
        "offsets.topic.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.replication.factor=1",
        "group.initial.rebalance.delay.ms=0",
        "listeners=PLAINTEXT://127.0.0.1:",
    ):
        assert line in props


def test_the_broker_logs_its_collections_in_its_run_directory() -> None:
    cfg = kafka.BrokerConfig()
    run = cfg.run_dir
    cmd = kafka.broker_command(cfg, "java", "lib/*", run / "server.properties", run / "l.p")
    gc_log = [a for a in cmd if a.startswith("-Xlog:gc")]
    assert gc_log == [f"-Xlog:gc:file={run / 'gc.log'}:time,uptime:filecount=2,filesize=10m"]
    assert cmd.index(gc_log[0]) < cmd.index("kafka.Kafka")
    assert cmd[-2:] == ["kafka.Kafka", str(run / "server.properties")]
