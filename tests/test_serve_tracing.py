"""Request runs written off the request path: many per transaction, retried when the store fails."""

from __future__ import annotations

import json
import time

from sqlalchemy import event, text

from llmops import cli
from llmops.serve.tracing import RequestTrace, Tracer, response_id, run_id_of, to_recorded
from llmops.workspace import new_run_id


def _trace(ws, **over) -> RequestTrace:
    model = ws.registry.push("model", "tiny", {"backend": "transformers", "source": "tiny"})
    adapter = ws.registry.push("adapter", "qa", {"rank": 4})
    prompt = ws.registry.push("prompt", "qa", {"template": "{{ q }}"})
    now = time.time()
    fields = dict(
        run_id=new_run_id(), name="chat tiny:qa", route="chat.completions", started_at=now - 0.25, ended_at=now,
        model="tiny:qa", model_ref=model.ref, adapter_ref=adapter.ref, used=[prompt.ref],
        request={"model": "tiny:qa", "messages": [{"role": "user", "content": "Hi?"}], "temperature": 0},
        response_text="Hello.", prompt_tokens=7, completion_tokens=3,
        latency_ms={"total": 250.0, "queue": 1.5, "first_token": 40.0},
        retrieved=[{"id": "c1", "score": 0.91}, {"id": "c7", "score": 0.5}],
        params={"temperature": 0.0, "top_p": 1.0, "max_tokens": 16, "seed": None, "stop": ["\n\n"]},
        finish_reason="stop", api_key="app")
    fields.update(over)
    return RequestTrace(**fields)


def test_a_recorded_request_is_a_run_with_its_versions_and_walks_back(store_ws, store_url, capsys, monkeypatch):
    tracer = Tracer(store_ws)
    trace = _trace(store_ws)
    assert tracer.record(trace)
    assert tracer.flush(timeout=30) and tracer.pending == 0
    run = store_ws.get_run(trace.run_id)
    assert (run.kind, run.status, run.name) == ("request", "finished", "chat tiny:qa")
    assert run.params == {"route": "chat.completions", "model": "tiny:qa", "model_ref": "model/tiny@1",
                          "adapter_ref": "adapter/qa@1", "temperature": "0.0", "top_p": "1.0",
                          "max_tokens": "16", "stop": '["\\n\\n"]'}
    assert json.loads(run.tags["request"])["messages"][0]["content"] == "Hi?"
    assert run.tags["response"] == "Hello."
    assert json.loads(run.tags["retrieved"]) == [{"id": "c1", "score": 0.91}, {"id": "c7", "score": 0.5}]
    assert (run.tags["api_key"], run.tags["finish_reason"]) == ("app", "stop")
    assert run.metrics == {"latency_ms.total": 250.0, "latency_ms.queue": 1.5, "latency_ms.first_token": 40.0,
                           "tokens.prompt": 7.0, "tokens.completion": 3.0}
    assert abs((run.ended_at - run.started_at).total_seconds() - 0.25) < 1e-3

    graph = store_ws.lineage(trace.run_id)
    assert {d for s, r, d in graph.upstream if r == "used"} == {"model/tiny@1", "adapter/qa@1", "prompt/qa@1"}
    # the OpenAI id of the answer walks back the same way on the command line
    rid = response_id(trace.run_id, "chat.completions")
    assert rid == f"chatcmpl-{trace.run_id}" and run_id_of(rid) == trace.run_id
    tracer.close()
    store_ws.close()
    if store_url:
        monkeypatch.setenv("LLMOPS_STORE_URL", store_url)
    assert cli.run(["-w", str(store_ws.root), "lineage", rid, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["root"] == trace.run_id and ["" + trace.run_id, "used", "adapter/qa@1"] in out["upstream"]


def test_many_requests_share_a_transaction_and_record_never_waits_for_the_store(ws):
    """While another process holds the store's write lock, recording still returns at once; the
    requests that piled up meanwhile are written together when the lock goes."""
    commits = []
    event.listen(ws.engine, "commit", lambda conn: commits.append(1))
    tracer = Tracer(ws)
    traces = [_trace(ws) for _ in range(200)]
    blocker = ws.engine.connect().execution_options(llmops_write=True)
    tx = blocker.begin()  # BEGIN IMMEDIATE: the write lock
    commits.clear()
    assert all(tracer.record(t) for t in traces)
    assert tracer.pending > 0  # nothing could be written yet, and record did not wait for it
    tx.rollback()
    blocker.close()
    assert tracer.flush(timeout=60)
    assert len(commits) <= 3  # 200 runs in at most 3 transactions (the first may have held one run)
    runs = ws.search_runs("attributes.kind = 'request'", limit=1000)
    assert {r.id for r in runs} == {t.run_id for t in traces}
    tracer.close()


def test_a_store_outage_keeps_the_batch_and_retries_it(ws, caplog):
    tracer = Tracer(ws, retry_s=0.05, max_retry_s=0.2)
    with ws.engine.begin() as conn:
        conn.execute(text("ALTER TABLE runs RENAME TO runs_away"))  # every write now fails
    trace = _trace(ws)
    tracer.record(trace)
    assert not tracer.flush(timeout=0.5)  # not written, not lost
    assert tracer.failed_writes >= 1 and tracer.pending == 1
    assert "retrying" in caplog.text
    with ws.engine.begin() as conn:
        conn.execute(text("ALTER TABLE runs_away RENAME TO runs"))
    assert tracer.flush(timeout=30)
    assert ws.get_run(trace.run_id).tags["response"] == "Hello."
    tracer.close()


def test_a_refused_run_is_left_out_and_the_rest_of_the_batch_is_written(store_ws, caplog):
    tracer = Tracer(store_ws)
    first = _trace(store_ws)
    tracer.record(first)
    tracer.flush()
    again = _trace(store_ws, run_id=first.run_id, response_text="duplicate")
    other = _trace(store_ws)
    tracer.record(again)
    tracer.record(other)
    assert tracer.flush(timeout=30)
    assert tracer.refused == 1 and "refused request run" in caplog.text
    assert store_ws.get_run(first.run_id).tags["response"] == "Hello."
    assert store_ws.get_run(other.run_id).status == "finished"
    tracer.close()


def test_text_the_store_cannot_hold_is_made_storable_not_lost(store_ws):
    tracer = Tracer(store_ws)
    trace = _trace(store_ws, response_text="a\x00b\ud800c", error="boom\x00", status="failed",
                   latency_ms={"total": float("nan"), "queue": 2})
    tracer.record(trace)
    assert tracer.flush()
    run = store_ws.get_run(trace.run_id)
    assert run.tags["response"] == "a\ufffdb?c"
    assert (run.status, run.error) == ("failed", "boom\ufffd")
    assert "latency_ms.total" not in run.metrics and run.metrics["latency_ms.queue"] == 2.0
    tracer.close()


def test_long_text_is_clipped_to_the_store_limit():
    from llmops.serve.tracing import _safe_text

    clipped = _safe_text("x" * 1000, 100)
    assert len(clipped) == 100 and clipped.endswith("…[clipped 900 characters]")


def test_a_chain_request_records_its_output_and_retrieved_chunks(ws):
    chain = ws.registry.push("chain", "rag-qa", {"steps": []})
    index = ws.registry.push("index", "handbook", {"dim": 3})
    now = time.time()
    trace = RequestTrace(run_id=new_run_id(), name="chain rag-qa", route="chains.invoke", started_at=now,
                         ended_at=now, chain_ref=chain.ref, used=[index.ref], request={"question": "Days off?"},
                         output={"answer": "25", "sources": ["c3"]},
                         retrieved={"retrieve": [{"id": "c3", "score": 0.8}]}, latency_ms={"retrieve": 3.0})
    recorded = to_recorded(trace, "me")
    assert recorded.used == [index.ref, chain.ref] and recorded.params["chain_ref"] == "chain/rag-qa@1"
    tracer = Tracer(ws)
    tracer.record(trace)
    tracer.close()
    run = ws.get_run(trace.run_id)
    assert json.loads(run.tags["output"]) == {"answer": "25", "sources": ["c3"]}
    assert json.loads(run.tags["retrieved"]) == {"retrieve": [{"id": "c3", "score": 0.8}]}
    assert "response" not in run.tags


def test_a_closed_tracer_drops_and_says_so(ws, caplog):
    tracer = Tracer(ws)
    tracer.close()
    assert tracer.record(_trace(ws)) is False
    assert tracer.dropped == 1 and "tracer is closed" in caplog.text


def test_concurrent_requests_through_the_server_are_all_runs_with_their_usage(tiny_llm_dir, tmp_path):
    """Sixteen clients at once: every answer's id names a stored request run with its tokens and versions."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from support_serve import build_served_ws, serve_ws

    ws = build_served_ws(tmp_path, tiny_llm_dir)
    with serve_ws(ws) as base:
        def ask(i):
            body = {"model": "tiny:qa-lora@2" if i % 2 else "tiny", "max_tokens": 4 + i % 3,
                    "messages": [{"role": "user", "content": f"abc {i}"}]}
            r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
            assert r.status_code == 200, r.text
            return r.headers["x-llmops-run-id"], r.json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, range(16)))
        assert base.app.state.tracer.flush(timeout=60)
    for run_id, answer in answers:
        assert answer["id"] == f"chatcmpl-{run_id}"
        run = ws.get_run(answer["id"])
        assert (run.kind, run.status, run.tags["response"]) == ("request", "finished", answer["choices"][0]["message"]["content"])
        assert run.metrics["tokens.completion"] == answer["usage"]["completion_tokens"]
        assert run.metrics["tokens.prompt"] == answer["usage"]["prompt_tokens"] and run.metrics["latency_ms.total"] > 0
        used = {d for s, r, d in ws.lineage(run.id, depth=1).upstream if r == "used"}
        assert used == ({"model/tiny@1", "adapter/qa-lora@2"} if answer["model"].endswith("@2") else {"model/tiny@1"})
    ws.close()
