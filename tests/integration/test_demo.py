"""The demo path (smaller) in `make test`: real processes, real broker, listener database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.processes import free_port
from tests.services import ROOT

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.order_fulfillment.demo",
            "--orders",
            "40",
            "--seed",
            "3",
            "--web-port",
            str(free_port()),
            "--timeout",
            "180",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "OK: every order ended as its injected failure explains" in out
    assert "Orders by status (from the listener database):" in out
    assert "compensation_succeeded" in out and "saga_completed" in out
