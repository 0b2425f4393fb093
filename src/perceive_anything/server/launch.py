"""Start ``pam serve`` as a child process and wait until it answers (tests, benchmarks, notebooks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 180.0  # model load on a busy 2-core machine


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    log: Path

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=10) as r:
            return json.loads(r.read())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_mb(self) -> float:
        """Resident memory of the server process (Linux ``/proc``)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(args: list[str], log: Path, env: dict[str, str] | None = None, host: str = "127.0.0.1",
                 timeout_s: float = START_TIMEOUT_S) -> ServerProcess:
    """``python -m perceive_anything.cli serve --host HOST --port <free> *args``, output to ``log``;
    returns once ``/health`` says ok (raises with the log if the process exits or times out)."""
    port = free_port(host)
    cmd = [sys.executable, "-m", "perceive_anything.cli", "serve", "--host", host, "--port", str(port), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = ServerProcess(f"http://{host}:{port}", proc, Path(log))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pam serve exited with {proc.returncode}:\n{server.log_text()}")
        try:
            if server.health()["status"] == "ok":
                return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"pam serve did not answer /health within {timeout_s:.0f} s:\n{server.log_text()}")
