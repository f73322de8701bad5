"""Restate's server for the benchmark: installed from npm into a cache, run as a process.

The npm package ``@restatedev/restate-server`` carries the native binary in a per-platform
optional dependency (``@restatedev/restate-server-linux-x64`` ...). ``ensure_installed``
runs ``npm install`` once into ``$SAGA_CACHE_DIR/restate-server-<version>`` (outside the
repository: no node_modules or binaries in git) and the bench runs the binary directly,
without node in between.

The server runs with a throwaway base directory, every port chosen free on 127.0.0.1,
telemetry off, and otherwise Restate's own defaults. Those defaults decide durability,
so :data:`DURABILITY_KEYS` are read back from ``--dump-config`` of the running config and
reported beside the figures.

    python -m bench.restate_server install   # what `make bench` calls; prints the binary
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from infra.processes import Process, free_port

VERSION = "1.7.12"
PACKAGE = "@restatedev/restate-server"
CACHE_DIR = Path(os.environ.get("SAGA_CACHE_DIR", str(Path.home() / ".cache" / "saga-coordinator")))

#: (dotted config key, what it means for durability) — reported with the results.
DURABILITY_KEYS: list[tuple[str, str]] = [
    (
        "bifrost.default-provider",
        "log implementation (replicated loglet on this node's log-server)",
    ),
    ("default-replication", "copies of each log record"),
    ("log-server.rocksdb-disable-wal-fsync", "log-server acks records only after its WAL fsync"),
    ("bifrost.local.rocksdb-disable-wal-fsync", "local loglet WAL fsync (when provider=local)"),
    ("default-num-partitions", "partitions"),
]


class RestateSetupError(RuntimeError):
    """Restate's server could not be installed or started; the message says what to do."""


def _npm_arch() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    system = platform.system().lower()
    if arch is None or system not in ("linux", "darwin"):
        raise RestateSetupError(f"no restate-server binary on npm for {system}/{machine}")
    return f"{system}-{arch}"


def install_dir() -> Path:
    return CACHE_DIR / f"restate-server-{VERSION}"


def binary_path() -> Path:
    return install_dir() / "node_modules" / f"{PACKAGE}-{_npm_arch()}" / "bin" / "restate-server"


def ensure_installed() -> Path:
    """Install the pinned server from npm into the cache (no-op when present)."""
    binary = binary_path()
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise RestateSetupError(
            "npm not found: install Node.js 18+ (Debian: apt-get install -y nodejs npm) "
            "or skip Restate with --engines ours,dbos,dbos-sync-off,kafka"
        )
    target = install_dir()
    target.mkdir(parents=True, exist_ok=True)
    print(f"[bench] installing {PACKAGE}@{VERSION} from npm into {target} ...", file=sys.stderr)
    # --ignore-scripts: the package's postinstall is usage analytics, the binary needs none.
    proc = subprocess.run(
        [
            npm,
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--prefix",
            str(target),
            f"{PACKAGE}@{VERSION}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not binary.exists():
        raise RestateSetupError(
            f"npm install {PACKAGE}@{VERSION} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return binary


@dataclass
class RestateServer:
    """One restate-server process on free ports with its data in ``base_dir``."""

    base_dir: Path
    partitions: int = 8
    proc: Process | None = None
    ingress_port: int = 0
    admin_port: int = 0
    node_port: int = 0

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def _config(self) -> str:
        return "\n".join(
            [
                'node-name = "bench"',
                f'base-dir = "{self.base_dir / "data"}"',
                f"default-num-partitions = {self.partitions}",
                "disable-telemetry = true",
                f'bind-address = "127.0.0.1:{self.node_port}"',
                f'advertised-address = "http://127.0.0.1:{self.node_port}/"',
                "[admin]",
                f'bind-address = "127.0.0.1:{self.admin_port}"',
                "[admin.query-engine]",
                f'pgsql-bind-address = "127.0.0.1:{free_port()}"',
                "[ingress]",
                f'bind-address = "127.0.0.1:{self.ingress_port}"',
                "",
            ]
        )

    def start(self, timeout: float = 60.0) -> None:
        binary = ensure_installed()
        self.ingress_port, self.admin_port, self.node_port = (free_port() for _ in range(3))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "restate.toml"
        config.write_text(self._config())
        self.proc = Process(
            ["--config-file", str(config), "--no-logo", "--listen-mode", "tcp"],
            name="restate-server",
            log=self.base_dir / "server.log",
            cwd=self.base_dir,
            executable=str(binary),
        ).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RestateSetupError(f"restate-server exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                admin = httpx.get(f"{self.admin_url}/health", timeout=1)
                if admin.is_success and httpx.get(self.ingress_url + "/restate/health").is_success:
                    return
            time.sleep(0.3)
        raise RestateSetupError(
            f"restate-server not healthy after {timeout:.0f}s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        path = self.base_dir / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def register(self, service_url: str, timeout: float = 60.0) -> None:
        """Register the service deployment at ``service_url`` (HTTP/2 cleartext)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                resp = httpx.post(
                    f"{self.admin_url}/deployments",
                    json={"uri": service_url, "force": True},
                    timeout=10,
                )
                if resp.is_success:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:500]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise RestateSetupError(f"registering {service_url} with Restate failed: {last}")

    def effective_config(self) -> dict[str, Any]:
        """The server's full configuration as it runs (``--dump-config`` of our file)."""
        out = subprocess.run(
            [
                str(binary_path()),
                "--config-file",
                str(self.base_dir / "restate.toml"),
                "--dump-config",
            ],
            capture_output=True,
            check=True,
            cwd=self.base_dir,
        )
        return tomllib.loads(out.stdout.decode())

    def durability(self) -> dict[str, Any]:
        config = self.effective_config()
        result: dict[str, Any] = {}
        for key, _meaning in DURABILITY_KEYS:
            node: Any = config
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            result[key] = node
        return result

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.stop(30)
        self.proc.close()
        self.proc = None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["install"]:
        print("usage: python -m bench.restate_server install", file=sys.stderr)
        return 2
    try:
        print(ensure_installed())
    except RestateSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
