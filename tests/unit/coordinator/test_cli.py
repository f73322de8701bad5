"""The CLI's user errors and help, without a broker: one ``error:`` line naming the fix,
the right exit code, no traceback, and ``--help`` without side effects.

The outcomes that need a coordinator (started, rejected, cancelled, ...) are in
tests/integration/test_cli.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator._cli import Exit, main

ROOT = Path(__file__).resolve().parents[3]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        cwd=cwd,
        env={
            **clean,
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: Exit) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    return one_error_line(capsys.readouterr().err)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may reach Kafka: checks happen before any I/O."""
    for name in list(os.environ):
        if name.startswith("SAGA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("not json", "INPUT is not valid JSON"),
        (
            "[1, 2]",
            "INPUT must be a JSON object ({...}) matching the saga input model, not a JSON list",
        ),
        ('"x"', "not a JSON str"),
    ],
)
def test_start_input_must_be_a_json_object(
    capsys: pytest.CaptureFixture[str], raw: str, needle: str
) -> None:
    line = fails(capsys, ["start", "order", raw, "--business-key", "42"], Exit.USAGE)
    assert needle in line


def test_start_needs_an_id_or_a_business_key(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, ["start", "order", "{}"], Exit.USAGE)
    assert "pass --id ID or --business-key KEY" in line and "order:KEY" in line


def test_saga_id_over_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, ["start", "order", "{}", "--id", "x" * 201], Exit.USAGE)
    assert line == "error: start 'order': saga_id: String should have at most 200 characters"


def test_malformed_service_urls(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGA_SERVICE_URLS", "{payment: http://x}")
    line = fails(capsys, ["status", "s-1"], Exit.USAGE)
    assert line == (
        "error: SAGA_SERVICE_URLS is not valid JSON: write it as "
        """'{"payment": "http://payments:8000"}'"""
    )


def test_invalid_setting_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGA_PARTITIONS", "eight")
    line = fails(capsys, ["status", "s-1"], Exit.USAGE)
    assert line.startswith("error: SAGA_PARTITIONS='eight': Input should be a valid integer")


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, ["stat", "x"], Exit.USAGE)
    assert "invalid choice: 'stat'" in line and "see `python -m coordinator --help`" in line


def test_missing_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, ["cancel"], Exit.USAGE)
    assert "SAGA_ID" in line and "python -m coordinator cancel --help" in line


def test_unreachable_broker_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, ["start", "order", "{}", "--business-key", "42"], Exit.UNAVAILABLE)
    assert "Kafka at 127.0.0.1:1" in line and "is the broker running" in line


def test_worker_without_definitions_refuses_to_start(tmp_path: Path) -> None:
    out = run_cli("worker", cwd=tmp_path, env={"SAGA_DATADIR": str(tmp_path / "data")})
    assert out.returncode == Exit.USAGE
    assert one_error_line(out.stderr).startswith(
        "error: no saga definitions: set SAGA_DEFINITIONS=package.module:NAME"
    )
    assert list(tmp_path.iterdir()) == []


def test_worker_with_a_missing_definitions_module(tmp_path: Path) -> None:
    out = run_cli(
        "worker",
        cwd=tmp_path,
        env={"SAGA_DEFINITIONS": "shop.sagas:ORDER", "SAGA_DATADIR": str(tmp_path / "data")},
    )
    assert out.returncode == Exit.USAGE
    line = one_error_line(out.stderr)
    assert line.startswith("error: SAGA_DEFINITIONS: definition spec 'shop.sagas:ORDER'")
    assert "No module named 'shop'" in line


def test_worker_whose_rebalance_timeout_leaves_no_lease_refuses_to_start(tmp_path: Path) -> None:
    out = run_cli(
        "worker",
        cwd=tmp_path,
        env={
            "SAGA_DEFINITIONS": "examples.order_fulfillment.saga:ORDER_SAGA",
            "SAGA_DATADIR": str(tmp_path / "data"),
            "BROKER_REBALANCE_TIMEOUT": "4",  # Faust's: the lease would lapse at each heartbeat
        },
    )
    assert out.returncode == Exit.USAGE
    line = one_error_line(out.stderr)
    assert line.startswith("error: the consumer's session timeout (10s), rebalance timeout (4s")
    assert "Set BROKER_REBALANCE_TIMEOUT to at least 7s" in line


def test_worker_whose_producer_does_not_wait_for_every_replica_refuses_to_start(
    tmp_path: Path,
) -> None:
    env = {
        "SAGA_DEFINITIONS": "examples.order_fulfillment.saga:ORDER_SAGA",
        "SAGA_DATADIR": str(tmp_path / "data"),
        "PRODUCER_ACKS": "1",  # Faust's
    }
    out = run_cli("worker", cwd=tmp_path, env=env)
    assert out.returncode == Exit.USAGE
    assert one_error_line(out.stderr).startswith("error: PRODUCER_ACKS=1 (Faust's producer_acks)")


def test_help_has_no_side_effects(tmp_path: Path) -> None:
    env = {"SAGA_DATADIR": str(tmp_path / "data"), "SAGA_DEFINITIONS": "nope:X"}
    for args in (["--help"], ["worker", "--help"], ["start", "--help"], ["dead-letters", "-h"]):
        out = run_cli(*args, cwd=tmp_path, env=env)
        assert out.returncode == 0 and out.stderr == "", (args, out.stderr)
        assert out.stdout.startswith("usage: python -m coordinator")
    assert list(tmp_path.iterdir()) == []


def test_worker_help_shows_our_options_and_defaults(tmp_path: Path) -> None:
    out = run_cli("worker", "--help", cwd=tmp_path)
    assert out.returncode == 0
    assert "--loglevel" in out.stdout and "(default: info)" in out.stdout
    assert "SAGA_DEFINITIONS" in out.stdout and "SAGA_PARTITIONS" in out.stdout
    assert "[8]" in out.stdout  # the partition default
    assert "--web-transport" not in out.stdout  # none of faust's worker options


def test_worker_log_levels_of_faust_and_python_are_accepted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # reaches the definitions check, so the level itself was accepted
    for level in ("warn", "warning", "crit", "debug"):
        line = fails(capsys, ["worker", "-l", level], Exit.USAGE)
        assert line.startswith("error: no saga definitions"), level
    assert "invalid choice: 'loud'" in fails(capsys, ["worker", "-l", "loud"], Exit.USAGE)
