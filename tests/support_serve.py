"""A real server for tests: `create_app` under uvicorn on a free loopback port, in a thread.

    with serve_ws(ws, max_concurrency=2) as base:       # base: "http://127.0.0.1:PORT"
        client = openai.OpenAI(base_url=base.v1, api_key="unused")
        base.server.engines ...                          # the app's state (llmops.serve.app.Server)

Keyword arguments are ServeSettings fields (or pass `settings=`). Leaving the block stops the server
(in-flight streams are cut) and waits for its shutdown, which flushes the tracer.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["Served", "serve_ws"]


class Served(str):
    """The base URL, with the app and its state at hand."""

    app: Any
    server: Any

    @property
    def v1(self) -> str:
        return self + "/v1"


@contextmanager
def serve_ws(ws: Any, settings: Any = None, **overrides: Any) -> Iterator[Served]:
    import uvicorn

    from llmops.serve.app import create_app

    app = create_app(ws, settings, **overrides)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server on port {port} did not start")
        time.sleep(0.02)
    served = Served(f"http://127.0.0.1:{port}")
    served.app, served.server = app, app.state.server
    try:
        yield served
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
