"""Feedback on served answers (POST /v1/feedback) and its export as a fine-tuning dataset."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from llmops import cli
from llmops.errors import RunNotFound
from llmops.serve.feedback import add_feedback, export_feedback, list_feedback
from llmops.serve.tracing import RequestTrace, Tracer
from llmops.workspace import new_run_id
from test_keys import serving


def _served(ws, tracer, request, answer, route="chat.completions") -> str:
    """Record one served request the way the server does; returns its run id."""
    now = time.time()
    trace = RequestTrace(run_id=new_run_id(), name="chat", route=route, started_at=now, ended_at=now,
                         model="smollm2", request=request, response_text=answer)
    tracer.record(trace)
    return trace.run_id


def _chat(question):
    return {"model": "smollm2", "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": question}]}


def feedback_app(ws, tracer=None):
    from fastapi import FastAPI

    from llmops.serve.feedback import router

    app = FastAPI()
    app.state.ws, app.state.tracer, app.state.settings = ws, tracer, None
    app.include_router(router)
    return app


def test_feedback_over_http_is_stored_against_the_request_run(ws):
    tracer = Tracer(ws)
    run_id = _served(ws, tracer, _chat("Days off?"), "Ten.")
    # posted before the tracer wrote the run: the route waits for it rather than answering 404
    with serving(feedback_app(ws, tracer)) as url, httpx.Client(base_url=url) as http:
        ok = http.post("/v1/feedback", json={"id": f"chatcmpl-{run_id}", "score": 0.0, "comment": "wrong",
                                             "correction": "Twenty-five days."})
        assert ok.status_code == 200, ok.text
        assert ok.json()["run_id"] == run_id and ok.json()["object"] == "feedback"
        assert http.post("/v1/feedback", json={"id": run_id, "score": 1}).status_code == 200

        unknown = http.post("/v1/feedback", json={"id": "chatcmpl-" + "0" * 32, "score": 1})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["param"] == "id" and unknown.json()["error"]["type"] == "not_found_error"
        for bad, param in [({"score": 1}, "id"), ({"id": run_id, "score": "high"}, "score"),
                           ({"id": run_id, "score": 1, "extra": 1}, "extra"),
                           ({"id": run_id, "score": 1, "correction": ""}, "correction")]:
            r = http.post("/v1/feedback", json=bad)
            assert (r.status_code, r.json()["error"]["param"]) == (422, param), bad
        assert http.post("/v1/feedback", content=b"{not json").status_code == 422
        assert http.post("/v1/feedback", content=b"[1]").json()["error"]["message"].startswith("the body must be")
        assert http.post("/v1/feedback", content=b'{"id": "x", "score": NaN}').status_code == 422
    stored = list_feedback(ws, f"chatcmpl-{run_id}")
    assert [(f.score, f.comment, f.correction) for f in stored] == [(0.0, "wrong", "Twenty-five days."), (1.0, None, None)]
    tracer.close()


def test_feedback_on_an_unknown_id_is_refused_and_nothing_is_stored(store_ws):
    with pytest.raises(RunNotFound):
        add_feedback(store_ws, "cmpl-" + "f" * 32, 1.0)
    assert list_feedback(store_ws) == []


def test_export_pushes_corrected_and_well_scored_answers_as_chat_records(store_ws):
    tracer = Tracer(store_ws)
    corrected = _served(store_ws, tracer, _chat("Days off?"), "Ten.")
    good = _served(store_ws, tracer, _chat("Who approves?"), "Your manager.")
    bad = _served(store_ws, tracer, _chat("Parking?"), "Yes.")
    completion = _served(store_ws, tracer, {"model": "smollm2", "prompt": "Q: Dress code?\nA:"}, " Casual.",
                         route="completions")
    chain = _served(store_ws, tracer, {"input": {"question": "Remote work?"}}, None, route="chains.invoke")
    tracer.flush()
    add_feedback(store_ws, corrected, 0.0, correction="Twenty-five days.")
    add_feedback(store_ws, good, 0.2)
    add_feedback(store_ws, good, 0.9)          # the latest feedback on a run counts
    add_feedback(store_ws, bad, 0.1)
    add_feedback(store_ws, completion, 1.0)
    add_feedback(store_ws, chain, 0.0, correction="Two days a week.")

    result = export_feedback(store_ws, min_score=0.8, name="handbook-fb")
    assert (result.version.ref, result.examples, result.considered) == ("dataset/handbook-fb@1", 4, 5)
    assert result.skipped == {"low score": 1}
    assert result.version.spec == {"format": "jsonl"} and list(result.version.files) == ["feedback.jsonl"]
    lines = store_ws.registry.read_file(result.version, "feedback.jsonl").decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Days off?"},
                         {"role": "assistant", "content": "Twenty-five days."}]} in records
    assert {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who approves?"},
                         {"role": "assistant", "content": "Your manager."}]} in records
    assert {"messages": [{"role": "user", "content": "Q: Dress code?\nA:"},
                         {"role": "assistant", "content": " Casual."}]} in records
    assert {"messages": [{"role": "user", "content": "Remote work?"},
                         {"role": "assistant", "content": "Two days a week."}]} in records
    assert sorted(result.version.meta["runs"]) == sorted([corrected, good, completion, chain])
    # the export is a run that produced the version
    graph = store_ws.lineage(result.version.ref)
    assert any(r == "produced" and d == result.version.ref for s, r, d in graph.upstream)
    # the same feedback again is the same content: the same version
    assert export_feedback(store_ws, min_score=0.8, name="handbook-fb").version.version == 1
    tracer.close()


def test_the_fine_tuning_reader_accepts_the_export(ws):
    from llmops.finetune.data import DataSource, read_records

    tracer = Tracer(ws)
    run_id = _served(ws, tracer, _chat("Days off?"), "Ten.")
    tracer.flush()
    add_feedback(ws, run_id, 0.0, correction="Twenty-five.")
    av = export_feedback(ws, min_score=0.5).version
    source = DataSource(av.name, av.ref, ws.registry.read_file(av, "feedback.jsonl"), "feedback.jsonl", av.digest, av)
    assert [rec["messages"][-1] for _, rec in read_records(source)] == [{"role": "assistant", "content": "Twenty-five."}]
    tracer.close()


def test_export_cli_pushes_or_says_there_is_nothing(tmp_path, capsys):
    import llmops

    w = tmp_path / "w"
    ws = llmops.Workspace(w)
    tracer = Tracer(ws)
    run_id = _served(ws, tracer, _chat("Days off?"), "Ten.")
    tracer.close()
    add_feedback(ws, run_id, 0.3)
    ws.close()
    assert cli.run(["-w", str(w), "feedback", "export", "--min-score", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nothing to export") and "no dataset was pushed" in out and "1 low score" in out
    assert cli.run(["-w", str(w), "feedback", "export", "--min-score", "0.2", "--name", "fb"]) == 0
    assert capsys.readouterr().out.startswith("dataset/fb@1  1 example(s)")
    assert cli.run(["-w", str(w), "feedback", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["score"] == 0.3
    assert cli.run(["-w", str(w), "feedback", "export", "--min-score", "nan"]) == 2
    assert "must be a finite number" in capsys.readouterr().err


def test_feedback_on_an_answer_of_the_server_right_after_it(tiny_llm_dir, tmp_path):
    import openai

    from support_serve import build_served_ws, serve_ws

    ws = build_served_ws(tmp_path, tiny_llm_dir)
    with serve_ws(ws) as base:
        client = openai.OpenAI(base_url=base.v1, api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "abc"}],
                                                max_tokens=3)
        r = httpx.post(f"{base}/v1/feedback", json={"id": answer.id, "score": 0, "correction": "Better."})
        assert r.status_code == 200, r.text
        assert httpx.post(f"{base}/v1/feedback", json={"id": "nope", "score": 1}).status_code == 404
        assert httpx.post(f"{base}/v1/feedback", json={"id": answer.id}).status_code == 422
    result = export_feedback(ws, min_score=1)
    lines = ws.registry.read_file(result.version, "feedback.jsonl").decode().splitlines()
    assert json.loads(lines[0]) == {"messages": [{"role": "user", "content": "abc"},
                                                 {"role": "assistant", "content": "Better."}]}
    ws.close()


def test_a_scoped_key_rates_only_answers_of_its_models(ws):
    from llmops.serve.keys import create_key

    tracer = Tracer(ws)
    mine = _served(ws, tracer, _chat("Days off?"), "Ten.")
    now = time.time()
    other = RequestTrace(run_id=new_run_id(), name="chat", route="chat.completions", started_at=now, ended_at=now,
                         model="chain/rag-qa", request=_chat("x"), response_text="y")
    tracer.record(other)
    tracer.flush()
    _, secret = create_key(ws, "app", ["smollm2*"])
    auth = {"Authorization": f"Bearer {secret}"}
    with serving(feedback_app(ws, tracer)) as url:
        assert httpx.post(f"{url}/v1/feedback", json={"id": mine, "score": 1}).status_code == 401
        assert httpx.post(f"{url}/v1/feedback", json={"id": mine, "score": 1}, headers=auth).status_code == 200
        denied = httpx.post(f"{url}/v1/feedback", json={"id": other.run_id, "score": 1}, headers=auth)
        assert denied.status_code == 403 and "may not rate answers of 'chain/rag-qa'" in denied.json()["error"]["message"]
    assert [f.user for f in list_feedback(ws)] == ["key:app"]
    tracer.close()
