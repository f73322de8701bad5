"""``python -m coordinator`` against a real broker and a real worker, as an operator uses it:
every command reports its outcome with a distinct exit code and one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from coordinator._cli import Exit
from coordinator.events import DeadLetter
from infra.processes import ROOT, Process, free_port
from tests.integration.polling import eventually

pytestmark = pytest.mark.integration

ERRAND = "tests.integration.cli_sagas:ERRAND,tests.integration.cli_sagas:PARCEL"
CHORE = "tests.integration.cli_sagas:CHORE"


class Deployment:
    """One coordinator deployment (its own topic prefix) and the CLI pointed at it."""

    def __init__(self, bootstrap: str, datadir: Path) -> None:
        prefix = f"cli{uuid.uuid4().hex[:8]}"
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SAGA_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SAGA_TOPIC_PREFIX": prefix,
            "SAGA_APP_ID": f"{prefix}-coordinator",
            "SAGA_PARTITIONS": "4",
            "SAGA_WEB_PORT": str(free_port()),
            "SAGA_DATADIR": str(datadir),
        }
        self.worker: Process | None = None

    def start_worker(self, definitions: str) -> None:
        self.stop_worker()
        env = {**self.env, "SAGA_DEFINITIONS": definitions}
        self.worker = Process(["-m", "coordinator", "worker"], env=env, name="cli-worker")
        self.worker.start().wait_for_output("coordinator ready", timeout=90)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker.close()
            self.worker = None

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
        return subprocess.run(
            [sys.executable, "-m", "coordinator", *args],
            cwd=ROOT,
            env={**clean, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def status(self, saga_id: str) -> str | None:
        out = self.cli("status", saga_id, "--json")
        return json.loads(out.stdout)["status"] if out.returncode == 0 else None


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    d = Deployment(kafka_bootstrap, tmp_path_factory.mktemp("cli-data"))
    d.start_worker(ERRAND)
    try:
        yield d
    finally:
        d.stop_worker()


def error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def key() -> str:
    return uuid.uuid4().hex[:8]


def test_start_waits_until_the_saga_started(deployment: Deployment) -> None:
    k = key()
    out = deployment.cli("start", "errand", "{}", "--business-key", k)
    assert out.returncode == Exit.OK, out.stderr
    assert out.stdout.strip() == f"errand:{k}"
    assert out.stderr.strip() == f"saga errand:{k} started (errand)"
    # started means the coordinator holds it: status answers at once
    assert deployment.status(f"errand:{k}") in {"running", "completed"}

    again = deployment.cli("start", "errand", "{}", "--business-key", k)
    assert again.returncode == Exit.OK
    assert again.stdout.strip() == f"errand:{k}"
    assert "already exists" in again.stderr and "starting it again does nothing" in again.stderr


def test_start_rejected_prints_the_reason_and_fails(deployment: Deployment) -> None:
    bad_input = deployment.cli("start", "errand", '{"fail_at": 7}', "--id", f"bad-{key()}")
    assert bad_input.returncode == Exit.REJECTED
    line = error_line(bad_input)
    assert "was rejected: saga 'errand' v1: input does not match Errand: fail_at:" in line

    unknown = deployment.cli("start", "invoice", "{}", "--business-key", key())
    assert unknown.returncode == Exit.REJECTED
    assert "saga type 'invoice' is not registered on this worker" in error_line(unknown)
    assert "add its definition to SAGA_DEFINITIONS" in error_line(unknown)


def test_start_no_wait_returns_without_a_verdict(deployment: Deployment) -> None:
    k = key()
    out = deployment.cli("start", "errand", "{}", "--business-key", k, "--no-wait")
    assert out.returncode == Exit.OK
    assert "(not confirmed: --no-wait)" in out.stderr
    eventually(lambda: deployment.status(f"errand:{k}") == "completed", timeout=60, what="run")


def test_start_without_a_worker_times_out(deployment: Deployment, tmp_path: Path) -> None:
    idle = Deployment(deployment.env["KAFKA_BOOTSTRAP_SERVERS"], tmp_path)
    assert idle.cli("topics").returncode == Exit.OK
    out = idle.cli("start", "errand", "{}", "--business-key", key(), "--timeout", "2")
    assert out.returncode == Exit.UNAVAILABLE
    line = error_line(out)
    assert "no coordinator answered the start within 2s" in line
    assert "is a worker running with this saga type in SAGA_DEFINITIONS" in line
    assert (
        f"no worker's web endpoint answered at http://127.0.0.1:{idle.env['SAGA_WEB_PORT']}" in line
    )


def test_commands_that_read_state_name_the_web_endpoint_they_need(
    deployment: Deployment, tmp_path: Path
) -> None:
    """No worker's web endpoint answers: a confirmed command says so and how to go without."""
    idle = Deployment(deployment.env["KAFKA_BOOTSTRAP_SERVERS"], tmp_path)
    web = f"http://127.0.0.1:{idle.env['SAGA_WEB_PORT']}"
    for command, without in [
        (["status", "errand:x"], None),
        (["cancel", "errand:x"], "a confirmed cancel checks the saga's status there first"),
        (["retry-compensation", "errand:x"], "a confirmed retry-compensation checks"),
        (["resolve", "errand:x", "--applied"], "--step STEP --no-wait"),
    ]:
        out = idle.cli(*command)
        assert out.returncode == Exit.UNAVAILABLE, out
        line = error_line(out)
        assert f"no coordinator worker's web endpoint answered at {web}" in line
        assert "SAGA_WEB_ENABLED=true" in line
        assert without is None or (without in line and "--no-wait" in line), line
    out = idle.cli("cancel", "errand:x", "--no-wait")
    assert out.returncode == Exit.OK, out.stderr
    assert "(not confirmed: --no-wait)" in out.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["start", "errand", "{oops"], {}, "error: INPUT is not valid JSON"),
        (["start", "errand", "[1]"], {}, "error: INPUT must be a JSON object"),
        (["start", "errand", "{}", "--id", "x" * 201], {}, "at most 200 characters"),
        (["start", "errand", "{}"], {}, "pass --id ID or --business-key KEY"),
        (
            ["start", "errand", json.dumps({"fail_at": "x" * 20_000}), "--id", "big"],
            {"SAGA_MAX_INBOX_BYTES": "8192"},
            "the command is too large (",
        ),
        (["status", "s"], {"SAGA_SERVICE_URLS": "{payment: x}"}, "SAGA_SERVICE_URLS is not"),
        (["worker"], {"SAGA_DEFINITIONS": "shop.sagas:ORDER"}, "error: SAGA_DEFINITIONS: "),
        (["worker"], {"SAGA_DEFINITIONS": ""}, "error: no saga definitions: set SAGA_DEF"),
    ],
    ids=[
        "not-json",
        "json-list",
        "long-id",
        "no-id",
        "too-large",
        "service-urls",
        "no-module",
        "no-defs",
    ],
)
def test_user_errors_are_one_line_naming_the_fix(
    deployment: Deployment, args: list[str], env: dict[str, str], message: str
) -> None:
    out = deployment.cli(*args, env=env)
    assert out.returncode == Exit.USAGE
    assert message in error_line(out)


def test_status_of_an_unknown_saga(deployment: Deployment) -> None:
    out = deployment.cli("status", "errand:never")
    assert out.returncode == Exit.NOT_FOUND
    assert error_line(out) == "error: no saga 'errand:never': it was never started, or not yet"


def test_cancel_reports_what_happened(deployment: Deployment, tmp_path: Path) -> None:
    unknown = deployment.cli("cancel", "errand:never")
    assert unknown.returncode == Exit.NOT_FOUND
    assert "no saga 'errand:never'" in error_line(unknown)

    k = key()
    saga_id = f"errand:{k}"
    hold = tmp_path / "hold"
    hold.touch()  # "work" is in flight until the file goes
    errand = json.dumps({"hold_while": str(hold)})
    assert deployment.cli("start", "errand", errand, "--business-key", k).returncode == 0
    accepted = deployment.cli("cancel", saga_id)
    assert accepted.returncode == Exit.OK, accepted.stderr
    assert accepted.stdout == (
        f"cancel accepted: saga {saga_id} compensates once its step in flight (work) answers\n"
    )
    hold.unlink()
    eventually(lambda: deployment.status(saga_id) == "cancelled", timeout=60, what="cancel")

    finished = deployment.cli("cancel", saga_id)
    assert finished.returncode == Exit.NOT_APPLICABLE
    assert error_line(finished) == (
        f"error: saga '{saga_id}' is cancelled: only a running or parked saga can be cancelled"
    )


def test_retry_compensation_reports_what_happened(deployment: Deployment, tmp_path: Path) -> None:
    assert deployment.cli("retry-compensation", "errand:never").returncode == Exit.NOT_FOUND

    blocker = tmp_path / "undo-blocked"
    blocker.touch()
    k = key()
    saga_id = f"errand:{k}"
    errand = json.dumps({"fail_at": "work", "undo_blocked_by": str(blocker)})
    assert deployment.cli("start", "errand", errand, "--business-key", k).returncode == 0
    eventually(
        lambda: deployment.status(saga_id) == "compensation_failed", timeout=60, what="stuck"
    )

    blocker.unlink()  # the operator fixed the participant
    resumed = deployment.cli("retry-compensation", saga_id)
    assert resumed.returncode == Exit.OK, resumed.stderr
    assert resumed.stdout.startswith(f"compensation resumed: saga {saga_id} is ")
    eventually(lambda: deployment.status(saga_id) == "compensated", timeout=60, what="undo")

    again = deployment.cli("retry-compensation", saga_id)
    assert again.returncode == Exit.NOT_APPLICABLE
    assert "is compensated: retry-compensation resumes only a compensation_failed saga" in (
        error_line(again)
    )


def test_dead_letters_list_filter_and_resubmit(deployment: Deployment) -> None:
    chore, other = f"chore:{key()}", f"chore:{key()}"
    for saga_id in (chore, other):
        out = deployment.cli("start", "chore", "{}", "--id", saga_id)
        assert out.returncode == Exit.REJECTED  # this worker does not know 'chore' yet

    listed = deployment.cli("dead-letters")
    assert listed.returncode == Exit.OK
    assert chore in listed.stdout and other in listed.stdout
    assert "saga type 'chore' is not registered on this worker" in listed.stdout

    mine = deployment.cli("dead-letters", "--saga-id", chore, "--json")
    letters = [json.loads(line) for line in mine.stdout.splitlines()]
    assert [letter["key"] for letter in letters] == [chore]
    assert letters[0]["source_topic"] == f"{deployment.env['SAGA_TOPIC_PREFIX']}.inbox"

    deployment.start_worker(f"{ERRAND},{CHORE}")  # the fix: deploy the definition
    resubmitted = deployment.cli("dead-letters", "--resubmit", letters[0]["ref"])
    assert resubmitted.returncode == Exit.OK, resubmitted.stderr
    assert resubmitted.stdout.startswith(f"re-submitted dead letter {letters[0]['ref']} to ")
    eventually(lambda: deployment.status(chore) == "completed", timeout=60, what="resubmit")
    assert deployment.status(other) is None  # only the one re-submitted

    missing = deployment.cli("dead-letters", "--resubmit", "0:999999")
    assert missing.returncode == Exit.NOT_FOUND
    assert "list them with `python -m coordinator dead-letters`" in error_line(missing)


def test_resolve_a_parked_saga(deployment: Deployment) -> None:
    assert deployment.cli("resolve", "parcel:never", "--retry").returncode == Exit.NOT_FOUND

    def parked(k: str) -> str:
        assert deployment.cli("start", "parcel", "{}", "--business-key", k).returncode == 0
        saga_id = f"parcel:{k}"
        eventually(lambda: deployment.status(saga_id) == "parked", timeout=60, what="park")
        return saga_id

    retried = parked(key())
    out = deployment.cli("resolve", retried, "--retry")
    assert out.returncode == Exit.OK, out.stderr
    assert out.stdout.startswith(f"resolved as retry: saga {retried} is ")
    eventually(lambda: deployment.status(retried) == "completed", timeout=60, what="retry")
    again = deployment.cli("resolve", retried, "--retry")
    assert again.returncode == Exit.NOT_APPLICABLE
    assert error_line(again) == (
        f"error: saga '{retried}' is completed: only a parked saga is resolved"
    )

    applied = parked(key())
    bad = deployment.cli("resolve", applied, "--applied", "--output", '{"track": 1}')
    assert bad.returncode == Exit.REJECTED
    assert "was rejected: resolve 'send' as applied" in error_line(bad)
    good = deployment.cli("resolve", applied, "--applied", "--output", '{"tracking": "T-9"}')
    assert good.returncode == Exit.OK, good.stderr
    eventually(lambda: deployment.status(applied) == "completed", timeout=60, what="applied")

    undone = parked(key())
    out = deployment.cli("resolve", undone, "--not-applied")
    assert out.returncode == Exit.OK, out.stderr
    eventually(lambda: deployment.status(undone) == "compensated", timeout=60, what="undo")

    cancelled = parked(key())
    out = deployment.cli("cancel", cancelled)
    assert out.returncode == Exit.OK, out.stderr
    assert out.stdout.startswith(f"cancel accepted: saga {cancelled} is ")
    eventually(lambda: deployment.status(cancelled) == "cancelled", timeout=60, what="cancel")


def test_resubmit_refuses_a_truncated_dead_letter(deployment: Deployment) -> None:
    """An oversized message's dead letter keeps only its start: re-sending it would send
    a different, broken message."""
    letter = DeadLetter(
        source_topic=f"{deployment.env['SAGA_TOPIC_PREFIX']}.inbox",
        key="errand:big",
        value_b64=DeadLetter.encode_value(b"x" * 1024),
        truncated=True,
        original_size=900_000,
        reason="too large",
        error_type="RecordTooLarge",
        agent="inbox",
        occurred_at=datetime.now(UTC),
    )

    async def write() -> str:
        producer = AIOKafkaProducer(bootstrap_servers=deployment.env["KAFKA_BOOTSTRAP_SERVERS"])
        await producer.start()
        try:
            topic = f"{deployment.env['SAGA_TOPIC_PREFIX']}.deadletters"
            sent = await producer.send_and_wait(topic, letter.to_json(), key=b"errand:big")
        finally:
            await producer.stop()
        return f"{sent.partition}:{sent.offset}"

    ref = asyncio.run(write())
    out = deployment.cli("dead-letters", "--resubmit", ref)
    assert out.returncode == Exit.USAGE
    assert "keeps only the start of the original message" in error_line(out)
