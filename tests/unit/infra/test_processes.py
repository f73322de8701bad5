"""The one process helper of the demo, the benchmarks and the tests."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from infra.processes import Process, ProcessGroup, ProcessNotReady, free_port

SLEEPER = ["-c", "import time; print('ready', flush=True); time.sleep(600)"]


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_ready_line_is_matched_and_stop_terminates() -> None:
    proc = Process(SLEEPER, name="sleeper").start()
    try:
        assert proc.wait_for_output("ready", timeout=30).group(0) == "ready"
        assert proc.alive()
        assert proc.stop(timeout=30) == -15  # SIGTERM
        assert not proc.alive()
    finally:
        proc.close()
    assert not proc.log_path.exists()  # a temporary log goes with close()


def test_a_process_that_dies_first_is_reported_with_its_log() -> None:
    proc = Process(["-c", "print('boom'); raise SystemExit(3)"], name="dier").start()
    try:
        with pytest.raises(ProcessNotReady, match=r"(?s)exit status 3.*boom"):
            proc.wait_for_output(re.compile("never"), timeout=30)
    finally:
        proc.close()


def test_group_keeps_named_logs_and_stops_everything(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path) as group:
        first = group.start("first", SLEEPER, ready="ready")
        second = group.start("second", SLEEPER, env={"X": "1"}, ready="ready")
        assert first.alive() and second.alive()
    assert not first.alive() and not second.alive()
    assert (tmp_path / "first.log").read_text().strip() == "ready"


async def test_output_ready_waits_without_blocking_the_event_loop() -> None:
    proc = Process(SLEEPER, name="sleeper").start()
    try:
        assert (await proc.output_ready(re.compile("rea(dy)"), timeout=30)).group(1) == "dy"
    finally:
        proc.close()


async def test_exited_returns_the_exit_status_of_a_process_that_ends_by_itself() -> None:
    proc = Process(["-c", "raise SystemExit(4)"], name="quitter").start()
    try:
        assert await proc.exited(timeout=30) == 4
    finally:
        proc.close()
