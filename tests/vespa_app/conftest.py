"""Fixtures that run the embedded engine as a real process on a free loopback port.

- `start_engine(package_dir=..., data_dir=..., args=[...])` (from the `engine_factory` fixture)
  starts `python -m vespa_app serve`, waits until /state/v1/health answers and returns an
  `EngineProcess` (`.url`, `.port`, `.stop()`, `.kill()` for crash tests). Every engine started
  through the factory is stopped at the end of the test.
- `engine_url`: one engine per test session serving the project package
  (vespa_app/package) with a temporary data directory.
- `docs_engine_url`: one engine per session serving tests/vespa_app/packages/docs, the small
  package the transport and document tests use.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGE = ROOT / "vespa_app" / "package"
DOCS_PACKAGE = Path(__file__).resolve().parent / "packages" / "docs"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EngineProcess:
    """A `python -m vespa_app serve` child process."""

    def __init__(self, package_dir: Path, data_dir: Path, args: list[str] | None = None) -> None:
        self.package_dir = Path(package_dir)
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"engine-{self.port}.log"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "vespa_app", "serve",
            "--package", str(self.package_dir), "--data", str(self.data_dir),
            "--port", str(self.port), "--log-level", "WARNING", *(args or []),
        ]  # fmt: skip
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> EngineProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/state/v1/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"engine not ready after {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the engine finishes writes and snapshots."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed beyond what was fsynced."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    started: list[EngineProcess] = []

    def start(
        package_dir: Path = DOCS_PACKAGE,
        data_dir: Path | None = None,
        args: list[str] | None = None,
    ) -> EngineProcess:
        engine = EngineProcess(package_dir, data_dir or tmp_path / f"data{len(started)}", args)
        started.append(engine)
        return engine.wait_ready()

    yield start
    for engine in started:
        engine.stop()


@pytest.fixture(scope="session")
def engine_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    engine = EngineProcess(PROJECT_PACKAGE, tmp_path_factory.mktemp("engine") / "data").wait_ready()
    yield engine.url
    engine.stop()


@pytest.fixture(scope="session")
def docs_engine_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    engine = EngineProcess(
        DOCS_PACKAGE, tmp_path_factory.mktemp("docs-engine") / "data"
    ).wait_ready()
    yield engine.url
    engine.stop()
