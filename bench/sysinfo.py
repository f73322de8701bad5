"""Process and machine measurements from /proc (Linux), no psutil needed.

CPU time is utime+stime of a process (all its threads) in seconds; peak RSS is
``VmHWM`` from /proc/PID/status. Machine facts (cores, RAM, CPU model, load) and
library versions go into the report header.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime+stime of ``pid`` in seconds, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces; fields after the closing paren are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM (peak resident set) of ``pid`` in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pids_matching(pattern: str) -> list[int]:
    """Pids whose command line matches the regular expression ``pattern``."""
    rx = re.compile(pattern)
    return [pid for pid in _all_pids() if rx.search(_cmdline(pid))]


def postgres_pids() -> list[int]:
    """All PostgreSQL server processes (postmaster and backends) on this machine."""
    result = []
    for pid in _all_pids():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "postgres" or comm.startswith("postgres:"):
            result.append(pid)
    return result


def kafka_broker_pids() -> list[int]:
    return pids_matching(r"kafka\.Kafka ")


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot (all cores)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / _CLK_TCK


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds per pid at one instant, per named group of processes."""

    groups: Mapping[str, Mapping[int, float]]
    machine_busy: float

    @classmethod
    def take(cls, groups: Mapping[str, Iterable[int]]) -> CpuSnapshot:
        snap: dict[str, dict[int, float]] = {}
        for name, pids in groups.items():
            values = {pid: cpu_seconds(pid) for pid in pids}
            snap[name] = {pid: v for pid, v in values.items() if v is not None}
        return cls(snap, machine_busy_seconds())

    def delta(self, later: CpuSnapshot) -> dict[str, float]:
        """CPU seconds used per group between two snapshots (pids new in ``later`` count
        from zero; pids that exited in between are lost, so keep groups long-lived)."""
        out: dict[str, float] = {}
        for name, after in later.groups.items():
            before = self.groups.get(name, {})
            out[name] = sum(v - before.get(pid, 0.0) for pid, v in after.items())
        busy = later.machine_busy - self.machine_busy
        out["other_processes"] = max(0.0, busy - sum(out.values()))  # noise: not ours
        out["machine_busy"] = busy
        return out


def sum_peak_rss(pids: Iterable[int]) -> int:
    return sum(peak_rss_bytes(pid) or 0 for pid in pids)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def kafka_version() -> str:
    for pid in kafka_broker_pids():
        m = re.search(r"kafka[_-](?:\d+\.\d+-)?(\d+\.\d+\.\d+)", _cmdline(pid))
        if m:
            return m.group(1)
    return "unknown (broker not local)"


def machine_info() -> dict[str, Any]:
    model = "unknown"
    mem_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def versions(postgres_version: str | None = None) -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "kafka": kafka_version(),
        "postgresql": postgres_version or "unknown",
        "dbos": _version("dbos"),
        "faust-streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "sqlalchemy": _version("sqlalchemy"),
        "psycopg": _version("psycopg"),
        "httpx": _version("httpx"),
        "aiohttp": _version("aiohttp"),
    }


def local_http() -> httpx.AsyncClient:
    """An HTTP client for the engines' own local endpoints (plain http on 127.0.0.1).

    Without certificate loading: httpx's default SSL context reads the system's CA bundle,
    about 0.1 s of CPU per client, which the driver spent inside measured windows at every
    snapshot.
    """
    return httpx.AsyncClient(verify=False, trust_env=False)
