"""Limits and failures of `llmops serve`: body size (413), concurrency (429 with Retry-After), max_tokens
(400), timeouts (503), a client that leaves mid-stream (its slot is freed), a backend that fails (503, and
the server keeps serving), the `openai` backend forwarding to a second real server, and the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from support_serve import build_served_ws, serve_ws

CHAT = [{"role": "user", "content": "Hello there, how are you?"}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def served_ws(tmp_path_factory, tiny_llm_dir):
    ws = build_served_ws(tmp_path_factory.mktemp("serve-limits"), tiny_llm_dir)
    ws.registry.push("adapter", "broken", spec={"format": "peft-lora"},
                     files={"adapter_config.json": b"{not json", "adapter_model.safetensors": b"not weights"})
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def local(tiny_llm_dir):
    from llmops.models import load_backend

    return load_backend(str(tiny_llm_dir))


def client_for(base) -> openai.OpenAI:
    return openai.OpenAI(base_url=base.v1, api_key="unused", max_retries=0, timeout=60)


def wait_until(check, what: str, limit: float = 30.0):
    """Poll `check` until it returns a true value (a wait for the server, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_body_over_the_limit_is_413(served_ws):
    with serve_ws(served_ws, max_body_bytes=4096) as base:
        with pytest.raises(openai.APIStatusError) as info:
            client_for(base).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 5000}])
        assert info.value.status_code == 413 and info.value.body["code"] == "request_too_large"

        def chunks():  # no Content-Length: the server counts what arrives
            for _ in range(10):
                yield b" " * 1000

        r = httpx.post(base.v1 + "/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
        metrics = httpx.get(base + "/metrics").text
        assert re.search(r'llmops_errors_total\{[^}]*code="request_too_large"[^}]*route="chat.completions"\} 2\.0',
                         metrics)
        assert client_for(base).chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).choices


def test_max_tokens_over_the_limit_is_400(served_ws):
    with serve_ws(served_ws, max_tokens_limit=16, default_max_tokens=8) as base:
        client = client_for(base)
        with pytest.raises(openai.BadRequestError, match="at most 16") as info:
            client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=17)
        assert info.value.body["param"] == "max_tokens"
        assert client.chat.completions.create(model="tiny", messages=CHAT).usage.completion_tokens <= 8


def test_one_request_too_many_is_429_with_retry_after(served_ws):
    """A request whose body is still arriving holds the only slot; the next one is refused at once."""
    with serve_ws(served_ws, max_concurrency=1) as base:
        release = threading.Event()
        first: dict = {}

        def slow_body():
            yield b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], '
            release.wait(30)
            yield b'"max_tokens": 2}'

        def send():
            first["response"] = httpx.post(base.v1 + "/chat/completions", content=slow_body(), timeout=60,
                                           headers={"content-type": "application/json"})

        thread = threading.Thread(target=send)
        thread.start()
        try:
            wait_until(lambda: base.server.in_flight.value == 1, "the first request holds the slot")
            with pytest.raises(openai.RateLimitError) as info:
                client_for(base).chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
            assert info.value.response.headers["retry-after"] == "1"
            assert info.value.body["type"] == "rate_limit_error"
            assert re.search(r'llmops_requests_total\{[^}]*status="429"\} 1\.0', httpx.get(base + "/metrics").text)
        finally:
            release.set()
            thread.join(60)
        assert first["response"].status_code == 200
        assert client_for(base).chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).choices


def test_a_client_that_leaves_mid_stream_frees_its_slot(served_ws):
    with serve_ws(served_ws, max_concurrency=1) as base:
        with httpx.stream("POST", base.v1 + "/chat/completions", timeout=60,
                          json={"model": "tiny", "messages": CHAT, "max_tokens": 480, "stream": True}) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
        # the connection is closed after the first event, long before 480 tokens
        wait_until(lambda: base.server.in_flight.value == 0, "the request left the server")
        engines = base.server.engines.loaded()
        wait_until(lambda: all(e.active == 0 and e.queue_depth == 0 for e in engines.values()),
                   "the batch slot was freed")
        metrics = httpx.get(base + "/metrics").text
        assert re.search(r'llmops_requests_total\{[^}]*status="499"\} 1\.0', metrics)
        assert re.search(r'llmops_active_requests\{model="tiny"\} 0\.0', metrics)
        assert re.search(r'llmops_queue_depth\{model="tiny"\} 0\.0', metrics)
        assert client_for(base).chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).choices


def test_a_client_that_gives_up_on_a_plain_request_frees_its_slot(served_ws):
    with serve_ws(served_ws, max_concurrency=1) as base:
        body = json.dumps({"model": "tiny", "messages": CHAT, "max_tokens": 480}).encode()
        url = urlsplit(base)
        with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            # hang up while the answer is being decoded (a client-side timeout raced a fast CPU's decoding)
            wait_until(lambda: any(e.active for e in base.server.engines.loaded().values()), "decoding started")
        wait_until(lambda: base.server.in_flight.value == 0, "the request left the server")
        engines = base.server.engines.loaded()
        wait_until(lambda: all(e.active == 0 and e.queue_depth == 0 for e in engines.values()),
                   "the batch slot was freed")
        assert re.search(r'llmops_requests_total\{[^}]*status="499"\} 1\.0', httpx.get(base + "/metrics").text)


def test_a_request_past_the_timeout_is_503_and_cancelled(served_ws):
    with serve_ws(served_ws, timeout_s=0.01) as base:
        with pytest.raises(openai.InternalServerError) as info:
            client_for(base).chat.completions.create(model="tiny", messages=CHAT, max_tokens=480)
        assert info.value.status_code == 503 and info.value.body["code"] == "timeout"
        stream = client_for(base).chat.completions.create(model="tiny", messages=CHAT, max_tokens=480, stream=True)
        with pytest.raises(openai.APIError, match="timeout"):
            for _ in stream:
                pass
        engines = base.server.engines.loaded()
        wait_until(lambda: all(e.active == 0 for e in engines.values()), "the timed-out generations stopped")


def test_a_failing_backend_answers_503_and_the_server_keeps_serving(served_ws, local):
    with serve_ws(served_ws) as base:
        client = client_for(base)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="tiny:broken", messages=CHAT, max_tokens=4)
        assert info.value.status_code == 503 and info.value.body["type"] == "service_unavailable_error"
        assert "adapter" in info.value.body["message"]
        resp = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6)
        assert resp.choices[0].message.content == local.chat(CHAT, max_tokens=6).text
        assert client.chat.completions.create(model="tiny:qa-lora", messages=CHAT, max_tokens=2).choices


def test_the_openai_backend_forwards_to_another_server(served_ws, tiny_llm_dir, local):
    from llmops.models import load_backend

    with serve_ws(served_ws) as upstream, serve_ws(served_ws, backend="openai", upstream_url=upstream.v1) as front:
        client = client_for(front)
        resp = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8)
        expected = local.chat(CHAT, max_tokens=8)
        assert resp.choices[0].message.content == expected.text
        assert resp.usage.completion_tokens == expected.completion_tokens and resp.id.startswith("chatcmpl-")
        streamed = client.completions.create(model="tiny", prompt="once", max_tokens=8, stream=True)
        assert "".join(c.choices[0].text for c in streamed if c.choices) == local.complete("once", max_tokens=8).text
        tuned = load_backend(str(tiny_llm_dir), adapter_path=served_ws.adapter_dirs[1]).chat(CHAT, max_tokens=8).text
        resp = client.chat.completions.create(model="tiny:qa-lora", messages=CHAT, max_tokens=8)
        assert resp.choices[0].message.content == tuned  # forwarded as the pinned tiny:qa-lora@1
    with serve_ws(served_ws, backend="openai", upstream_url=f"http://127.0.0.1:{free_port()}/v1") as front:
        with pytest.raises(openai.InternalServerError, match="cannot reach"):
            client_for(front).chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
        assert httpx.get(front + "/healthz").json()["status"] == "ok"


def test_the_vllm_backend_starts_its_server_and_forwards(served_ws, tiny_llm_dir, tmp_path, local):
    """`--backend vllm`: the supervisor starts a second real llmops server in vLLM's place (vLLM cannot be
    installed here), registers the workspace's adapters there under `BASE:ADAPTER@N`, and requests forward."""
    import llmops
    from llmops.models import load_backend, model_spec

    upstream = llmops.Workspace(tmp_path / "upstream")  # knows no adapter: it serves what was registered
    upstream.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    upstream.close()
    vllm = {"command": [sys.executable, "-m", "llmops.cli", "-w", str(tmp_path / "upstream"), "serve"],
            "args": ["--host", "{host}", "--port", "{port}"], "health_path": "/healthz", "health_interval_s": 0.3,
            "startup_timeout_s": 170}
    with serve_ws(served_ws, backend="vllm", vllm_model="tiny", vllm=vllm) as front:
        client = client_for(front)
        resp = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8)
        assert resp.choices[0].message.content == local.chat(CHAT, max_tokens=8).text
        tuned = load_backend(str(tiny_llm_dir), adapter_path=served_ws.adapter_dirs[1]).chat(CHAT, max_tokens=8).text
        stream = client.chat.completions.create(model="tiny:qa-lora", messages=CHAT, max_tokens=8, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == tuned
        pid = front.server.vllm.pid
        assert pid is not None
    with pytest.raises(ProcessLookupError):  # the server stopped its vLLM with it
        wait_until(lambda: os.kill(pid, 0), "the stand-in vLLM exited", limit=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llmops_exe() -> str:
    return str(Path(sys.executable).parent / "llmops")


def test_cli_serve_answers_and_stops_on_ctrl_c(served_ws):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([llmops_exe(), "-w", str(served_ws.root), "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read())
            try:
                return httpx.get(base + "/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, "llmops serve answers", limit=120)
        resp = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0).completions.create(
            model="tiny", prompt="hi", max_tokens=2)
        assert resp.choices[0].text is not None
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}" in err


@pytest.mark.parametrize("args,named", [
    (["--backend", "openai"], "--upstream"),
    (["--upstream", "http://127.0.0.1:9/v1"], "upstream"),
    (["--backend", "tgi"], "--backend"),
    (["--host", "not a host"], "--host"),
    (["--port", "70000"], "--port"),
    (["--timeout", "nan"], "--timeout"),
])
def test_cli_serve_bad_settings_are_one_error_line(served_ws, capsys, args, named):
    from llmops.cli import run

    code = run(["-w", str(served_ws.root), "serve", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and named in err, err


def test_cli_serve_on_a_busy_port_fails_at_once(served_ws, capsys):
    from llmops.cli import run

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = run(["-w", str(served_ws.root), "serve", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"127.0.0.1:{port}" in err and "--port" in err, err
