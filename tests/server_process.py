"""The real ``pam serve`` process for API tests, with its own TMPDIR and an allowed root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from perceive_anything.server.launch import ServerProcess, start_server as launch


@dataclass
class TestServer:
    process: ServerProcess
    tmp: Path  # the server's TMPDIR: its temporary files live here
    allowed_root: Path

    @property
    def url(self) -> str:
        return self.process.url

    def health(self) -> dict:
        return self.process.health()

    def log_text(self) -> str:
        return self.process.log_text()

    def stop(self) -> None:
        self.process.stop()


def start_server(workdir: Path, *args: str) -> TestServer:
    tmp, allowed = workdir / "server-tmp", workdir / "allowed"
    tmp.mkdir(parents=True, exist_ok=True)
    allowed.mkdir(parents=True, exist_ok=True)
    proc = launch(["--allowed-root", str(allowed), *args], workdir / "server.log", env={"TMPDIR": str(tmp)})
    return TestServer(proc, tmp, allowed)
