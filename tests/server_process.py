"""The real ``pam serve`` process for API tests: a free loopback port, waited on via ``/health``."""

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

START_TIMEOUT_S = 180  # model load on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    log: Path
    tmp: Path  # the server's TMPDIR: its temporary files live here
    allowed_root: Path

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=10) as r:
            return json.loads(r.read())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(workdir: Path, *args: str) -> ServerProcess:
    port = free_port()
    tmp, allowed = workdir / "server-tmp", workdir / "allowed"
    tmp.mkdir(parents=True, exist_ok=True)
    allowed.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    env = dict(os.environ, TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "perceive_anything.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--allowed-root", str(allowed), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log, tmp, allowed)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pam serve exited with {proc.returncode}:\n{server.log_text()}")
        try:
            if server.health()["status"] == "ok":
                return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"pam serve did not answer /health within {START_TIMEOUT_S} s:\n{server.log_text()}")
