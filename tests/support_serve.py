"""A real server for tests: `create_app` under uvicorn on a free loopback port, in a thread.

    with serve_ws(ws, max_concurrency=2) as base:       # base: "http://127.0.0.1:PORT"
        client = openai.OpenAI(base_url=base.v1, api_key="unused")
        base.server.engines ...                          # the app's state (llmops.serve.app.Server)

Keyword arguments are ServeSettings fields (or pass `settings=`). Leaving the block stops the server
(in-flight streams are cut) and waits for its shutdown, which flushes the tracer.
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from model_support import make_adapter

__all__ = ["Served", "build_served_ws", "make_adapter", "push_adapter", "push_chains", "serve_ws", "serving",
           "write_file"]


class Served(str):
    """The base URL, with the app and its state at hand."""

    app: Any
    server: Any

    @property
    def v1(self) -> str:
        return self + "/v1"


@contextmanager
def serving(app: Any, *, lifespan: str = "off", start_timeout: float = 30) -> Iterator[str]:
    """Any ASGI `app` served by a real uvicorn on a free loopback port, in a thread; yields its base URL.
    Leaving the block stops it and waits for its shutdown."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


@contextmanager
def serve_ws(ws: Any, settings: Any = None, **overrides: Any) -> Iterator[Served]:
    from llmops.serve.app import create_app

    app = create_app(ws, settings, **overrides)
    # the vllm backend starts its upstream server before the app answers
    with serving(app, lifespan="on", start_timeout=180) as url:
        served = Served(url)
        served.app, served.server = app, app.state.server
        yield served


# -- a workspace to serve: the tiny Llama as `model/tiny`, two real PEFT adapters, two chains ---------------

def push_adapter(ws: Any, name: str, folder: Path, base_ref: str = "model/tiny@1") -> Any:
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    return ws.registry.push("adapter", name, spec={"format": "peft-lora", "base": {"ref": base_ref}}, files=files)


def write_file(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))


def push_chains(ws: Any) -> None:
    """`ask` (one text input `question`, so a chat model can call it) and `pair` (inputs a: str, b: int)."""
    write_file(ws.root, "prompts/ask.yaml", """\
        name: ask
        messages:
          - {role: user, content: "Q: {{ question }}"}
        variables:
          question: {type: str}
        model_params: {temperature: 0, max_tokens: 8}
        """)
    write_file(ws.root, "prompts/ask.chain.yaml", """\
        kind: chain
        name: ask
        inputs: {question: str}
        steps:
          - {name: prompt, type: prompt, prompt: ask}
          - {name: generate, type: generate, model: tiny}
          - {name: answer, type: parse, parser: text}
        output: answer
        """)
    write_file(ws.root, "prompts/pair.yaml", """\
        name: pair
        template: "{{ a }} and {{ b }}"
        variables:
          a: {type: str}
          b: {type: int}
        model_params: {temperature: 0, max_tokens: 6}
        """)
    write_file(ws.root, "prompts/pair.chain.yaml", """\
        kind: chain
        name: pair
        inputs: {a: str, b: int}
        steps:
          - {name: prompt, type: prompt, prompt: pair}
          - {name: generate, type: generate, model: tiny}
        """)
    ws.prompts.push_folder(ws.root / "prompts")


def build_served_ws(root: Path, tiny_llm_dir: Path) -> Any:
    """A workspace in `root/ws`: `model/tiny` (the tiny Llama), `adapter/qa-lora` v1 and v2 (production -> 1;
    their folders in `ws.adapter_dirs`), chains `ask` and `pair`. Close it when done."""
    import llmops
    from llmops.models import model_spec

    ws = llmops.Workspace(root / "ws")
    ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    a1 = make_adapter(tiny_llm_dir, root / "qa-lora-1", seed=1)
    a2 = make_adapter(tiny_llm_dir, root / "qa-lora-2", seed=2)
    push_adapter(ws, "qa-lora", a1)
    push_adapter(ws, "qa-lora", a2)
    ws.registry.set_alias("adapter/qa-lora", "production", 1)
    push_chains(ws)
    ws.adapter_dirs = {1: a1, 2: a2}
    return ws
