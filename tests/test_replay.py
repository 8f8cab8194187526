"""`llmops replay ID` re-runs a served request through the versions its run recorded (the real server, the
tiny model), and `llmops lineage ID` walks back from the same id."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from llmops import cli
from llmops.errors import LLMOpsError
from llmops.serve.replay import replay
from llmops.serve.tracing import RequestTrace
from llmops.workspace import new_run_id

QUESTION = [{"role": "user", "content": "abc de fgh"}]


@pytest.fixture(scope="module")
def server(tiny_llm_dir, tmp_path_factory):
    from support_serve import build_served_ws, serve_ws

    ws = build_served_ws(tmp_path_factory.mktemp("replay"), tiny_llm_dir)
    with serve_ws(ws) as base:
        yield ws, base
    ws.close()


def _post(server, path, body) -> dict:
    ws, base = server
    r = httpx.post(f"{base}{path}", json=body, timeout=120)
    assert r.status_code == 200, r.text
    base.app.state.tracer.flush()
    return r.json()


def _cli(ws, *args, capsys) -> tuple[int, str, str]:
    code = cli.run(["-w", str(ws.root), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_greedy_chat_with_an_adapter_replays_identically(server, capsys):
    ws, _ = server
    answer = _post(server, "/v1/chat/completions", {"model": "tiny:qa-lora", "messages": QUESTION, "max_tokens": 8})
    code, out, _ = _cli(ws, "replay", answer["id"], capsys=capsys)
    assert code == 0, out
    assert f"recorded: {answer['choices'][0]['message']['content']}" in out
    assert out.rstrip().endswith("identical") and "adapter/qa-lora@1" in out and "model/tiny@1" in out
    result = replay(ws, answer["id"])
    assert result.identical and result.new == answer["choices"][0]["message"]["content"]
    assert result.params["max_tokens"] == 8

    # and lineage walks back from the same id, to the versions that produced it
    code, out, _ = _cli(ws, "lineage", answer["id"], "--json", capsys=capsys)
    graph = json.loads(out)
    assert code == 0 and graph["root"] == answer["id"].removeprefix("chatcmpl-")
    assert {d for s, r, d in graph["upstream"] if r == "used"} >= {"model/tiny@1", "adapter/qa-lora@1"}


def test_a_completion_replays_identically(server, capsys):
    ws, _ = server
    answer = _post(server, "/v1/completions", {"model": "tiny", "prompt": "abc de", "max_tokens": 6, "stop": ["."]})
    assert answer["id"].startswith("cmpl-")
    code, out, _ = _cli(ws, "replay", answer["id"], "--json", capsys=capsys)
    result = json.loads(out)
    assert code == 0 and result["identical"] and result["new"] == answer["choices"][0]["text"]
    assert result["params"]["stop"] == ["."] and result["route"] == "completions"


def test_chain_requests_replay_identically_until_an_alias_moves(server, capsys):
    ws, _ = server
    chat = _post(server, "/v1/chat/completions", {"model": "chain/ask", "messages": QUESTION})
    invoked = _post(server, "/v1/chains/pair/invoke", {"input": {"a": "x", "b": 2}})
    assert replay(ws, chat["id"]).identical
    result = replay(ws, invoked["metadata"]["run_id"])
    assert result.identical and result.new == invoked["output"] and "chain/pair@1" in result.versions
    # a new version of the chain's prompt: loading the chain now would use it, so no exact replay
    ws.registry.push("prompt", "pair", {**ws.registry.get("prompt/pair").spec, "template": "{{ a }} or {{ b }}"})
    code, _, err = _cli(ws, "replay", invoked["metadata"]["run_id"], capsys=capsys)
    assert code == 2 and "prompt/pair@2" in err and "an alias moved since" in err


def test_an_answer_the_versions_no_longer_give_exits_1(server, capsys):
    ws, _ = server
    now = time.time()
    model = ws.registry.get("model/tiny@1")
    trace = RequestTrace(run_id=new_run_id(), name="chat tiny", route="chat.completions", started_at=now, ended_at=now,
                         model="tiny", model_ref=model.ref, used=[model.ref],
                         request={"model": "tiny", "messages": QUESTION}, response_text="an answer it never gave",
                         params={"temperature": 0.0, "max_tokens": 8})
    tracer = server[1].app.state.tracer
    tracer.record(trace)
    tracer.flush()
    code, out, _ = _cli(ws, "replay", trace.run_id, capsys=capsys)
    assert code == 1 and "recorded: an answer it never gave" in out and "DIFFERENT" in out


def test_sampled_failed_unknown_and_non_request_runs_are_not_replayable(server, capsys):
    ws, _ = server
    sampled = _post(server, "/v1/chat/completions", {"model": "tiny", "messages": QUESTION, "max_tokens": 4,
                                                     "temperature": 0.9})
    code, _, err = _cli(ws, "replay", sampled["id"], capsys=capsys)
    assert code == 2 and "without a seed" in err
    seeded = _post(server, "/v1/chat/completions", {"model": "tiny", "messages": QUESTION, "max_tokens": 4,
                                                    "temperature": 0.9, "seed": 7})
    again = replay(ws, seeded["id"])
    assert again.params["seed"] == 7 and again.identical  # a seeded sample is replayable
    missing = httpx.post(f"{server[1]}/v1/chat/completions", json={"model": "nosuch", "messages": QUESTION})
    assert missing.status_code == 404
    server[1].app.state.tracer.flush()
    with pytest.raises(LLMOpsError, match="did not finish"):
        replay(ws, missing.headers["x-llmops-run-id"])
    code, _, err = _cli(ws, "replay", "chatcmpl-" + "0" * 32, capsys=capsys)
    assert code == 2 and "no run with id" in err
    with ws.start_run("not a request") as run:
        pass
    with pytest.raises(LLMOpsError, match="not a served request"):
        replay(ws, run.id)
