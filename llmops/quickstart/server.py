"""`llmops serve` as a background subprocess for the quickstart: started on a free port, waited for on
`/healthz` with a deadline, and always stopped (on success, on error and on Ctrl-C).

    with background_server(ws_root, log_path) as server:
        client = OpenAI(base_url=server.url + "/v1", api_key="quickstart")

A subprocess rather than a thread: the quickstart shows the server a user runs (`llmops serve`), with its
own model loads and its own store connection, not an app object wired into the quickstart's process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from llmops.errors import LLMOpsError

__all__ = ["Server", "background_server", "free_port"]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


@dataclass
class Server:
    """A running `llmops serve`: its process, address and log file."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it; `llmops serve` binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_ready(server: Server, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        code = server.process.poll()
        if code is not None:
            raise LLMOpsError(f"`llmops serve` exited with status {code} before it answered /healthz; "
                              f"its log ({server.log_path}) ends:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise LLMOpsError(f"`llmops serve` did not answer {server.url}/healthz within {timeout_s:.0f} s; "
                              f"its log ({server.log_path}) ends:\n{server.log_tail()}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (uvicorn shuts down gracefully, flushing request traces), then SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def background_server(workspace: Path, log_path: Path, *, timeout_s: float = READY_TIMEOUT_S) -> Iterator[Server]:
    """`python -m llmops.cli -w WORKSPACE serve --port P` until the block ends, whatever ends it."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "llmops.cli", "-w", str(workspace), "serve", "--host", HOST, "--port", str(port)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(process, port, log_path)
    try:
        _wait_ready(server, timeout_s)
        yield server
    finally:
        _stop(process)
