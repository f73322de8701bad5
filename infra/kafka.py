"""Provision and run a real single-node Apache Kafka broker (KRaft) for development and tests.

The broker jars are resolved from Maven Central by ``infra/kafka/pom.xml`` into a cache
outside the repository (``$SAGA_CACHE_DIR``, default ``~/.cache/saga-coordinator``) and
reused on later runs. The broker listens on 127.0.0.1 only.

Commands (``python -m infra.kafka COMMAND``)::

    jars     resolve the jars into the cache (no-op when cached)
    up       start a broker unless one already answers; wait until a real client round trip works
    down     stop the broker this module started (SIGTERM, then SIGKILL) and remove its data dir
    status   print whether a broker answers

If ``KAFKA_BOOTSTRAP_SERVERS`` is set, ``up`` only checks that cluster and starts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from coordinator.events import DEFAULT_BOOTSTRAP_SERVERS

KAFKA_VERSION = "3.9.1"
_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"


class KafkaProvisionError(RuntimeError):
    """The broker could not be provisioned or started; the message says what to do."""


@dataclass(frozen=True)
class BrokerConfig:
    """Where the local broker lives. Every field has an environment override."""

    port: int = int(os.environ.get("SAGA_KAFKA_PORT", DEFAULT_BOOTSTRAP_SERVERS.split(":")[1]))
    controller_port: int = int(os.environ.get("SAGA_KAFKA_CONTROLLER_PORT", "19093"))
    cache_dir: Path = Path(
        os.environ.get("SAGA_CACHE_DIR", str(Path.home() / ".cache" / "saga-coordinator"))
    )
    #: a full test run creates thousands of partitions (a topic prefix per test); with
    #: 512m the broker died of OutOfMemoryError near 17,000 partitions
    heap: str = os.environ.get("SAGA_KAFKA_HEAP", "2g")

    @property
    def lib_dir(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "lib"

    @property
    def run_dir(self) -> Path:
        return self.cache_dir / f"kafka-run-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def external_bootstrap() -> str | None:
    """The cluster named by ``KAFKA_BOOTSTRAP_SERVERS``, if any."""
    value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    return value or None


def _require(tool: str, install_hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaProvisionError(
            f"'{tool}' is not on PATH: install {install_hint}, "
            "or point KAFKA_BOOTSTRAP_SERVERS at an existing Kafka cluster"
        )
    return path


def ensure_jars(cfg: BrokerConfig) -> Path:
    """Resolve the Kafka jars into the cache with Maven, unless they are already there."""
    marker = cfg.lib_dir / ".complete"
    if marker.exists():
        return cfg.lib_dir
    mvn = _require("mvn", "Maven 3.8+ (Debian: apt-get install -y maven)")
    _require("java", "Java 17+ (Debian: apt-get install -y openjdk-17-jre-headless)")
    cfg.lib_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib-", dir=cfg.lib_dir.parent))
    started = time.monotonic()
    print(f"kafka: resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central...", flush=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaProvisionError(
            f"mvn could not resolve Kafka {KAFKA_VERSION} (exit {result.returncode}); "
            f"check Maven Central access.\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    shutil.rmtree(cfg.lib_dir, ignore_errors=True)
    staging.rename(cfg.lib_dir)
    marker.touch()
    print(f"kafka: jars cached in {cfg.lib_dir} ({time.monotonic() - started:.1f}s)", flush=True)
    return cfg.lib_dir


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _server_properties(cfg: BrokerConfig, log_dir: Path) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cfg.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{cfg.port},CONTROLLER://127.0.0.1:{cfg.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={log_dir}",
            "num.partitions=1",
            # One broker: every internal topic must live with a single replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=8",
            "share.coordinator.state.topic.replication.factor=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "group.initial.rebalance.delay.ms=0",
            # Topics are declared explicitly (Faust does); a typo must fail loudly.
            "auto.create.topics.enable=false",
            "log.retention.hours=24",
            "log.segment.bytes=67108864",
            "",
        ]
    )


_LOG4J = """\
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={path}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


def _cluster_id() -> str:
    """A KRaft cluster id (22 chars of URL-safe base64) that cannot look like an option:
    one in 64 random ids starts with '-', which kafka-storage's parser rejects."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _read_pid(cfg: BrokerConfig) -> int | None:
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def up(
    cfg: BrokerConfig | None = None, *, timeout: float = 120.0, keep_data: bool = False
) -> tuple[str, bool]:
    """Make a broker answer. Returns ``(bootstrap, started_by_us)``.

    ``keep_data=True`` restarts on the data dir a previous run left (after
    ``down(keep_data=True)`` or :func:`kill`): topics, offsets and records survive.
    """
    cfg = cfg or BrokerConfig()
    external = external_bootstrap()
    if external:
        wait_ready(external, timeout=timeout)
        return external, False
    if _port_open("127.0.0.1", cfg.port):
        wait_ready(cfg.bootstrap, timeout=timeout)
        return cfg.bootstrap, False
    java = _require("java", "Java 17+ (Debian: apt-get install -y openjdk-17-jre-headless)")
    lib = ensure_jars(cfg)
    classpath = f"{lib}/*"
    props = cfg.run_dir / "server.properties"
    log4j = cfg.run_dir / "log4j.properties"
    if not (keep_data and (cfg.run_dir / "data" / "meta.properties").exists()):
        _format(cfg, java, classpath, props, log4j)
    stdout = (cfg.run_dir / "stdout.log").open("ab")
    proc = subprocess.Popen(
        broker_command(cfg, java, classpath, props, log4j),
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cfg.pid_file.write_text(str(proc.pid))
    try:
        wait_ready(cfg.bootstrap, timeout=timeout, proc=proc)
    except BaseException:
        down(cfg)
        raise
    return cfg.bootstrap, True


def broker_command(
    cfg: BrokerConfig, java: str, classpath: str, props: Path, log4j: Path
) -> list[str]:
    """The broker's command line.

    Each collection of the broker is logged (``gc.log`` in its run directory), so a
    latency spike can be checked against the broker's pauses. Kafka's own G1 options
    (``kafka-run-class.sh``: ``-XX:MaxGCPauseMillis=20``, ``InitiatingHeapOccupancyPercent
    =35``), measured against these (session 9, simple at 560 sagas/s, 3 alternating pairs
    of 40 s windows): pauses of 10-30 ms instead of 7-75 ms, three times as many, and a p99
    no better (179-294 ms against 114-221 ms), so the JVM's defaults stay.
    """
    return [
        java,
        f"-Xmx{cfg.heap}",
        f"-Xms{cfg.heap}",
        "-XX:+UseG1GC",
        f"-Xlog:gc:file={cfg.run_dir / 'gc.log'}:time,uptime:filecount=2,filesize=10m",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(props),
    ]


def _format(cfg: BrokerConfig, java: str, classpath: str, props: Path, log4j: Path) -> None:
    """A fresh run dir: config files and a newly formatted KRaft storage."""
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    (cfg.run_dir / "data").mkdir(parents=True)
    props.write_text(_server_properties(cfg, cfg.run_dir / "data"))
    log4j.write_text(_LOG4J.format(path=cfg.run_dir / "server.log"))
    cluster_id = _cluster_id()
    fmt = subprocess.run(
        [
            java,
            "-cp",
            classpath,
            f"-Dlog4j.configuration=file:{log4j}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "-g",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if fmt.returncode != 0:
        raise KafkaProvisionError(f"kafka storage format failed:\n{fmt.stdout}{fmt.stderr}")


def down(cfg: BrokerConfig | None = None, *, keep_data: bool = False) -> bool:
    """Stop the broker started by :func:`up`. Returns whether one was running."""
    cfg = cfg or BrokerConfig()
    pid = _read_pid(cfg)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
            _reap(pid)
    if not keep_data:
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
    return pid is not None


def kill(cfg: BrokerConfig | None = None) -> bool:
    """SIGKILL the broker started by :func:`up` (a crash: nothing flushed); keep its data.
    Returns whether one was running."""
    cfg = cfg or BrokerConfig()
    pid = _read_pid(cfg)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGKILL)
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def _round_trip(bootstrap: str) -> None:
    """Create a topic, produce one record and consume it back: the broker really works."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    topic = "saga-coordinator.readiness"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    token = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, token)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=5000)
        values = [record.value for record in batch.get(tp, [])]
        if token not in values:
            raise ConnectionError("produced record was not consumed back")
    finally:
        await consumer.stop()


def wait_ready(
    bootstrap: str, *, timeout: float = 120.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until a produce/consume round trip succeeds against ``bootstrap``."""
    deadline = time.monotonic() + timeout
    # "connection refused" is the expected answer while the broker boots: keep it quiet
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        _poll_until_ready(bootstrap, deadline, proc)
        return
    except _NotReady as exc:
        last = exc.__cause__
    finally:
        quiet.setLevel(level)
    raise KafkaProvisionError(
        f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s ({last!r}); "
        "run `make kafka-up`, or set KAFKA_BOOTSTRAP_SERVERS to a reachable cluster"
    )


class _NotReady(Exception):
    pass


def _poll_until_ready(
    bootstrap: str, deadline: float, proc: subprocess.Popen[bytes] | None
) -> None:
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise KafkaProvisionError(
                f"the Kafka JVM exited with {proc.returncode}; see its log in "
                f"{BrokerConfig().run_dir}/stdout.log"
            )
        try:
            asyncio.run(asyncio.wait_for(_round_trip(bootstrap), timeout=20))
            return
        except Exception as exc:
            last = exc
            time.sleep(1.0)
    raise _NotReady() from last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.kafka",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["jars", "up", "down", "status"])
    args = parser.parse_args(argv)
    cfg = BrokerConfig()
    try:
        if args.command == "jars":
            print(ensure_jars(cfg))
        elif args.command == "up":
            started = time.monotonic()
            bootstrap, ours = up(cfg)
            how = "started" if ours else "already running"
            print(
                f"kafka {KAFKA_VERSION}: {how} at {bootstrap} "
                f"(ready in {time.monotonic() - started:.1f}s)"
            )
        elif args.command == "down":
            print("kafka: stopped" if down(cfg) else "kafka: nothing of ours was running")
        else:
            target = external_bootstrap() or cfg.bootstrap
            wait_ready(target, timeout=5)
            print(f"kafka: answering at {target}")
    except KafkaProvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
