"""Child processes for the demo, the benchmarks and the tests: one way to run them.

A :class:`Process` runs a command in a session of its own (so a stop or a kill reaches
its children too) with stdout and stderr in a log file. ``wait_for_output`` waits until
the log shows the process's "ready" line, or fails with the log's tail if the process
dies or the wait times out. ``stop`` is SIGTERM then SIGKILL after a grace period (a
graceful stop: Faust commits its offsets); ``kill`` is SIGKILL (a crash: nothing
flushed). :class:`ProcessGroup` starts several processes and stops them all, last
started first. :func:`free_port` picks an unused TCP port on 127.0.0.1.

Python modules are run with the interpreter running the caller, from the repository root
(``examples``, ``bench`` and ``tests`` are not installed: they import from the checkout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["ROOT", "Process", "ProcessGroup", "ProcessNotReady", "free_port"]

#: the repository root: the working directory of every Python child process
ROOT = Path(__file__).resolve().parents[1]


class ProcessNotReady(RuntimeError):
    """A process died, or did not print its ready line in time (the message has its log)."""


def _pattern(needle: str | re.Pattern[str]) -> re.Pattern[str]:
    return re.compile(re.escape(needle)) if isinstance(needle, str) else needle


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Process:
    """One child process with its output in a log file; always reaped by ``stop``/``kill``.

    Args:
        args: the arguments; run with ``executable`` (the current Python by default), so
            ``["-m", "coordinator", "worker"]`` runs a module.
        env: variables added to (and overriding) the caller's environment.
        name: a name for messages and the log file.
        log: where the output goes (kept); default: a temporary file removed by ``close``.
        cwd: working directory (the repository root by default).
        executable: the program to run instead of the current Python.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        name: str = "worker",
        log: Path | None = None,
        cwd: Path | None = None,
        executable: str | None = None,
    ) -> None:
        self.args = [executable or sys.executable, *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.name = name
        self.cwd = cwd or ROOT
        self._temporary = log is None
        self._log: IO[bytes]
        if log is None:
            self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
                prefix=f"{name}-", suffix=".log", delete=False
            )
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            self._log = log.open("wb")
        self.log_path = Path(self._log.name)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        """Start the process (in a new session); returns itself."""
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """The process id (the process must have been started)."""
        if self.proc is None:
            raise ProcessNotReady(f"{self.name}: not started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_for_output(
        self, needle: str | re.Pattern[str], timeout: float = 60.0, *, interval: float = 0.2
    ) -> re.Match[str]:
        """Wait until the output contains ``needle`` (text, or a regular expression).

        Raises:
            ProcessNotReady: the process exited first, or ``timeout`` seconds passed; the
                message carries the end of the log.
        """
        pattern, deadline = _pattern(needle), time.monotonic() + timeout
        while (found := self._look(pattern, deadline, timeout)) is None:
            time.sleep(interval)
        return found

    async def output_ready(
        self, needle: str | re.Pattern[str], timeout: float = 60.0, *, interval: float = 0.2
    ) -> re.Match[str]:
        """:meth:`wait_for_output` for a caller on an event loop (the loop keeps running)."""
        pattern, deadline = _pattern(needle), time.monotonic() + timeout
        while (found := self._look(pattern, deadline, timeout)) is None:
            await asyncio.sleep(interval)
        return found

    async def exited(self, timeout: float = 30.0) -> int:
        """Wait until the process ends on its own (e.g. an injected fault); its exit status."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.alive():
            raise ProcessNotReady(f"{self.name}: still running after {timeout:.0f}s")
        return self.proc.returncode if self.proc is not None else 0

    def _look(
        self, pattern: re.Pattern[str], deadline: float, timeout: float
    ) -> re.Match[str] | None:
        found = pattern.search(self.output())
        if found is not None:
            return found
        if self.alive() and time.monotonic() < deadline:
            return None
        raise ProcessNotReady(
            f"{self.name}: {pattern.pattern!r} not seen in {timeout:.0f}s; "
            f"exit status {self.returncode}; log {self.log_path}:\n{self.output()[-4000:]}"
        )

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; its exit status."""
        if self.proc is None:
            raise ProcessNotReady(f"{self.name}: not started")
        return self.proc.wait(timeout)

    def terminate(self) -> None:
        """Send SIGTERM to the process's session (a graceful stop); does not wait."""
        self._signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful: offsets committed), then SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or committed."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def close(self) -> None:
        """Kill the process if it still runs, and remove a temporary log."""
        self.kill()
        self._log.close()
        if self._temporary:
            self.log_path.unlink(missing_ok=True)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)


class ProcessGroup:
    """Processes started together and stopped together (last started, first stopped).

    Args:
        logs: directory of the processes' logs (``{name}.log``); temporary files if None.
    """

    def __init__(self, logs: Path | None = None) -> None:
        self.logs = logs
        self.processes: list[Process] = []

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        ready: str | re.Pattern[str] | None = None,
        timeout: float = 120.0,
        executable: str | None = None,
        cwd: Path | None = None,
    ) -> Process:
        """Start a process and, given ``ready``, wait until its output shows it."""
        log = self.logs / f"{name}.log" if self.logs is not None else None
        proc = Process(args, env=env, name=name, log=log, executable=executable, cwd=cwd)
        self.processes.append(proc.start())
        if ready is not None:
            proc.wait_for_output(ready, timeout)
        return proc

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM every process, then SIGKILL those still running after ``timeout``."""
        for proc in reversed(self.processes):
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in reversed(self.processes):
            proc.stop(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop every process (without waiting for a graceful stop) and release the logs."""
        for proc in reversed(self.processes):
            proc.close()
        self.processes.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        self.close()
