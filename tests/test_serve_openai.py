"""The OpenAI-compatible API of `llmops serve`, driven by the official `openai` client (sync and async) and
LangChain's `ChatOpenAI` against a real uvicorn server on loopback, serving the tiny local Llama, a real
PEFT adapter made from it, and a small chain. Answers are compared with the in-process backend: greedy,
the server must give exactly what `backend.generate` gives."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import openai
import pytest

from support_serve import build_served_ws, serve_ws

CHAT = [{"role": "user", "content": "Hello there, how are you?"}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def served_ws(tmp_path_factory, tiny_llm_dir):
    ws = build_served_ws(tmp_path_factory.mktemp("serve"), tiny_llm_dir)
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def base(served_ws):
    with serve_ws(served_ws) as served:
        yield served


@pytest.fixture(scope="module")
def client(base):
    return openai.OpenAI(base_url=base.v1, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def local(tiny_llm_dir):
    from llmops.models import load_backend

    return load_backend(str(tiny_llm_dir))


def test_chat_equals_the_in_process_backend_and_carries_the_run_id(client, local):
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=CHAT, max_tokens=12)
    resp = raw.parse()
    expected = local.chat(CHAT, max_tokens=12)
    assert resp.choices[0].message.content == expected.text
    assert resp.choices[0].finish_reason == expected.finish_reason
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (expected.prompt_tokens,
                                                                        expected.completion_tokens)
    assert resp.usage.total_tokens == expected.total_tokens
    run_id = raw.headers["x-llmops-run-id"]
    assert resp.id == f"chatcmpl-{run_id}" and re.fullmatch(r"[0-9a-f]{32}", run_id)
    assert resp.model == "tiny"


def test_completion_and_its_stream_agree(client, local):
    resp = client.completions.create(model="tiny", prompt="once upon a time", max_tokens=10)
    expected = local.complete("once upon a time", max_tokens=10)
    assert resp.choices[0].text == expected.text and resp.id.startswith("cmpl-")
    chunks = list(client.completions.create(model="tiny", prompt="once upon a time", max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == expected.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [expected.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == expected.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_chat_stream_sends_role_deltas_finish_and_usage_only_when_asked(client, local):
    expected = local.chat(CHAT, max_tokens=12)
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == expected.finish_reason
    assert all(c.usage is None for c in chunks)
    with_usage = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, stream=True,
                                                     stream_options={"include_usage": True}))
    assert with_usage[-1].usage.prompt_tokens == expected.prompt_tokens


def test_raw_stream_ends_with_done(base):
    with httpx.stream("POST", base.v1 + "/chat/completions", timeout=60,
                      json={"model": "tiny", "messages": CHAT, "max_tokens": 4, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_stop_seed_and_max_completion_tokens(client, local):
    full = local.chat(CHAT, max_tokens=16).text
    word = re.findall(r"[a-z]{3,}", full)[1]
    resp = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=16, stop=[word])
    assert resp.choices[0].message.content == full[:full.index(word)]
    assert resp.choices[0].finish_reason == "stop"
    resp = client.chat.completions.create(model="tiny", messages=CHAT, max_completion_tokens=3)
    assert resp.usage.completion_tokens <= 3
    sampled = [client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=1.0, seed=7,
                                              top_p=0.9).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1] == local.chat(CHAT, max_tokens=8, temperature=1.0, seed=7, top_p=0.9).text


def test_async_client_concurrent_requests_each_get_their_own_answer(base, local):
    prompts = ["alpha beta", "the quick brown fox", "zz"]

    async def run():
        aclient = openai.AsyncOpenAI(base_url=base.v1, api_key="unused", max_retries=0)
        async with aclient:
            results = await asyncio.gather(*(aclient.completions.create(model="tiny", prompt=p, max_tokens=8)
                                             for p in prompts))
            stream = await aclient.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return [r.choices[0].text for r in results], streamed

    texts, streamed = asyncio.run(run())
    assert texts == [local.complete(p, max_tokens=8).text for p in prompts]
    assert streamed == local.chat(CHAT, max_tokens=6).text


def test_adapter_selected_per_request(client, served_ws, tiny_llm_dir, local):
    from llmops.models import load_backend

    v1 = load_backend(str(tiny_llm_dir), adapter_path=served_ws.adapter_dirs[1]).chat(CHAT, max_tokens=10).text
    v2 = load_backend(str(tiny_llm_dir), adapter_path=served_ws.adapter_dirs[2]).chat(CHAT, max_tokens=10).text
    assert len({v1, v2, local.chat(CHAT, max_tokens=10).text}) == 3

    def ask(model):
        return client.chat.completions.create(model=model, messages=CHAT, max_tokens=10).choices[0].message.content

    assert ask("tiny:qa-lora") == v1           # production
    assert ask("tiny:qa-lora@2") == v2
    assert ask("tiny:qa-lora@latest") == v2
    assert ask("tiny") == local.chat(CHAT, max_tokens=10).text
    with pytest.raises(openai.NotFoundError, match="nosuch"):
        ask("tiny:nosuch")
    with pytest.raises(openai.NotFoundError):
        ask("tiny:qa-lora@9")


def test_models_lists_bases_adapters_and_chains(client):
    ids = {m.id for m in client.models.list()}
    assert {"tiny", "tiny:qa-lora", "chain/ask", "chain/pair"} <= ids


def test_a_chain_as_a_chat_model(client, served_ws):
    question = "how long should dough rise?"
    expected = served_ws.chains.load("ask").invoke({"question": question})
    resp = client.chat.completions.create(model="chain/ask", messages=[{"role": "system", "content": "x"},
                                                                      {"role": "user", "content": question}])
    assert resp.choices[0].message.content == expected
    assert resp.usage.completion_tokens > 0
    streamed = client.chat.completions.create(model="chain/ask@1", messages=[{"role": "user", "content": question}],
                                              stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected
    with pytest.raises(openai.BadRequestError, match="/v1/chains/pair/invoke"):
        client.chat.completions.create(model="chain/pair", messages=CHAT)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="chain/nosuch", messages=CHAT)


@pytest.mark.parametrize("kwargs,param", [
    ({"n": 2}, "n"),
    ({"max_tokens": 100_000}, "max_tokens"),
    ({"max_completion_tokens": 100_000}, "max_completion_tokens"),
    ({"logprobs": True}, "logprobs"),
    ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ({"temperature": 5}, "temperature"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
])
def test_bad_parameters_are_400_naming_the_parameter(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=CHAT, **kwargs)
    error = info.value.body
    assert info.value.status_code == 400 and param in (error.get("param") or "") + error["message"]
    assert error["type"] == "invalid_request_error"


def test_errors_are_in_the_openai_format(base, client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nosuch", messages=CHAT)
    assert info.value.body["code"] == "model_not_found" and "tiny" in info.value.body["message"]
    r = httpx.post(base.v1 + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(base.v1 + "/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(base.v1 + "/completions", json={"model": "/etc", "prompt": "x"})
    assert r.status_code == 404
    r = httpx.get(base + "/v1/nosuch")
    assert r.status_code == 404 and "error" in r.json()


def test_langchain_chat_openai_invoke_and_stream(base, local):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=base.v1, api_key="unused", model="tiny", max_tokens=10, temperature=0, max_retries=0)
    expected = local.chat(CHAT, max_tokens=10).text
    msg = llm.invoke("Hello there, how are you?")
    assert msg.content == expected
    assert msg.response_metadata["token_usage"]["completion_tokens"] > 0
    assert "".join(chunk.content for chunk in llm.stream("Hello there, how are you?")) == expected


def test_metrics_count_requests_tokens_and_queue(base, client):
    client.chat.completions.create(model="tiny:qa-lora", messages=CHAT, max_tokens=4)
    text = httpx.get(base + "/metrics").text
    assert re.search(r'llmops_requests_total\{adapter="qa-lora",chain="",model="tiny",'
                     r'route="chat.completions",status="200"\} [1-9]', text)
    assert re.search(r'llmops_tokens_total\{adapter="qa-lora",chain="",kind="completion",model="tiny"\} [1-9]', text)
    assert 'llmops_request_seconds_bucket{' in text and "llmops_queue_depth{" in text
    assert re.search(r'llmops_requests_total\{[^}]*status="404"\} [1-9]', text)


def test_healthz_and_openapi(base):
    assert httpx.get(base + "/healthz").json()["status"] == "ok"
    spec = httpx.get(base + "/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/chains/{name}/invoke",
                 "/v1/chains/{name}/batch", "/v1/chains/{name}/stream", "/v1/chains/{name}/input_schema",
                 "/healthz", "/metrics"):
        assert path in spec["paths"], path
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert "BASE:ADAPTER" in chat["model"]["description"]


def test_every_request_is_a_run_with_used_versions(base, client, served_ws):
    tracing = pytest.importorskip("llmops.serve.tracing")
    raw = client.chat.completions.with_raw_response.create(model="tiny:qa-lora", messages=CHAT, max_tokens=4)
    run_id = raw.headers["x-llmops-run-id"]
    base.server.tracer.flush()
    run = served_ws.get_run(run_id)
    assert run.kind == tracing.RUN_KIND and run.status == "finished"
    used = {dst for src, rel, dst in served_ws.lineage(run_id).upstream if rel == "used"}
    assert {"model/tiny@1", "adapter/qa-lora@1"} <= used
    resp = client.chat.completions.create(model="chain/ask", messages=CHAT)
    base.server.tracer.flush()
    used = {dst for src, rel, dst in served_ws.lineage(resp.id.removeprefix("chatcmpl-")).upstream if rel == "used"}
    assert {"chain/ask@1", "prompt/ask@1", "model/tiny@1"} <= used
    assert json.loads(served_ws.get_run(resp.id).tags["request"])["model"] == "chain/ask"


def test_an_adapter_loaded_at_run_time_is_a_model_name(base, client, served_ws, tiny_llm_dir, monkeypatch):
    """vLLM's /v1/load_lora_adapter: the loaded name is served (on its base) and listed."""
    from llmops.models import load_backend

    monkeypatch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "true")
    folder = served_ws.adapter_dirs[2]
    r = httpx.post(base.v1 + "/load_lora_adapter", json={"lora_name": "mine", "lora_path": str(folder)})
    assert r.status_code == 200, r.text
    try:
        expected = load_backend(str(tiny_llm_dir), adapter_path=folder).chat(CHAT, max_tokens=8).text
        resp = client.chat.completions.create(model="mine", messages=CHAT, max_tokens=8)
        assert resp.choices[0].message.content == expected
        assert "mine" in {m.id for m in client.models.list()}
    finally:
        httpx.post(base.v1 + "/unload_lora_adapter", json={"lora_name": "mine"})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="mine", messages=CHAT, max_tokens=8)


def test_api_keys_guard_models_and_chains(tmp_path, tiny_llm_dir):
    import llmops
    from llmops.models import model_spec
    from llmops.serve.keys import create_key

    ws = llmops.Workspace(tmp_path / "ws")
    try:
        ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
        _, secret = create_key(ws, "bot", scopes=["tiny"])
        with serve_ws(ws) as served:
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=served.v1, api_key="wrong", max_retries=0).chat.completions.create(
                    model="tiny", messages=CHAT, max_tokens=2)
            keyed = openai.OpenAI(base_url=served.v1, api_key=secret, max_retries=0)
            assert keyed.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).choices
            with pytest.raises(openai.PermissionDeniedError) as info:
                keyed.chat.completions.create(model="chain/ask", messages=CHAT, max_tokens=2)
            assert info.value.body["type"] == "permission_error"
            r = httpx.post(served.v1 + "/chains/ask/invoke", json={"input": {"question": "x"}},
                           headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 403
            assert httpx.get(served + "/healthz").status_code == 200
            assert httpx.get(served.v1 + "/models").status_code == 401
    finally:
        ws.close()


def test_the_web_ui_is_served_under_ui_and_shows_the_answers_trace(client, base):
    import httpx

    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "ui?"}],
                                            max_tokens=4)
    run_id = answer.id.removeprefix("chatcmpl-")
    base.server.tracer.flush(10)
    page = httpx.get(f"{base}/ui/requests/{run_id}", timeout=30)
    assert page.status_code == 200
    assert run_id in page.text and "model/tiny@1" in page.text
    assert httpx.get(f"{base}/ui/runs", timeout=30).status_code == 200
