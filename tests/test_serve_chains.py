"""Chains over HTTP, LangServe style (`/v1/chains/NAME/invoke|batch|stream`, input and output schemas),
against a real uvicorn server on loopback; outputs compared with the chain run in process."""

from __future__ import annotations

import json

import httpx
import pytest

from support_serve import build_served_ws, serve_ws

QUESTION = "how long should dough rise?"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def served_ws(tmp_path_factory, tiny_llm_dir):
    ws = build_served_ws(tmp_path_factory.mktemp("serve-chains"), tiny_llm_dir)
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def base(served_ws):
    with serve_ws(served_ws) as served:
        yield served


@pytest.fixture(scope="module")
def expected(served_ws):
    chain = served_ws.chains.load("ask")
    return {q: chain.invoke({"question": q}) for q in (QUESTION, "what is rye?", "zz")}


def sse_events(response: httpx.Response) -> list[tuple[str, str | None]]:
    """(event, data) pairs of a server-sent event stream."""
    events, event, data = [], None, None
    for line in response.iter_lines():
        if not line:
            if event is not None:
                events.append((event, data))
            event, data = None, None
        elif line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data = line[len("data: "):]
    return events


def test_invoke_returns_output_and_run_id(base, expected):
    r = httpx.post(base.v1 + "/chains/ask/invoke", json={"input": {"question": QUESTION}}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"] == expected[QUESTION]
    assert body["metadata"]["run_id"] == r.headers["x-llmops-run-id"]
    assert {"chain/ask@1", "prompt/ask@1", "model/tiny@1"} <= set(body["metadata"]["used"])
    # LangServe clients send config and kwargs too; a ref picks a version
    r = httpx.post(base.v1 + "/chains/ask@1/invoke", json={"input": {"question": QUESTION}, "config": {},
                                                            "kwargs": {}}, timeout=60)
    assert r.json()["output"] == expected[QUESTION]


def test_batch_runs_each_input_as_its_own_run(base, expected):
    questions = list(expected)
    r = httpx.post(base.v1 + "/chains/ask/batch", json={"inputs": [{"question": q} for q in questions]}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"] == [expected[q] for q in questions]
    assert len(set(body["metadata"]["run_ids"])) == len(questions)


def test_stream_sends_metadata_data_and_end(base, expected):
    with httpx.stream("POST", base.v1 + "/chains/ask/stream", json={"input": {"question": QUESTION}}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[0][0] == "metadata" and json.loads(events[0][1])["run_id"] == r.headers["x-llmops-run-id"]
    assert events[-1] == ("end", None)
    assert "".join(json.loads(d) for e, d in events if e == "data") == expected[QUESTION]


def test_a_chain_with_a_non_text_output_streams_it_whole(base, served_ws):
    chain = served_ws.chains.load("pair")
    out = chain.invoke({"a": "rye", "b": 3})
    with httpx.stream("POST", base.v1 + "/chains/pair/stream", json={"input": {"a": "rye", "b": 3}}, timeout=60) as r:
        events = sse_events(r)
    assert "".join(json.loads(d) for e, d in events if e == "data") == out


def test_schemas(base):
    schema = httpx.get(base.v1 + "/chains/pair/input_schema").json()
    assert schema["properties"]["a"]["type"] == "string" and schema["properties"]["b"]["type"] == "integer"
    assert set(schema["required"]) == {"a", "b"} and schema["additionalProperties"] is False
    assert httpx.get(base.v1 + "/chains/ask/output_schema").json()["type"] == "string"


@pytest.mark.parametrize("body,named", [
    ({"input": {}}, "question"),
    ({"input": {"question": 3}}, "question"),
    ({"input": {"question": "x", "extra": 1}}, "extra"),
    ({"input": "just text"}, "dict"),
    ({"inputs": [{}]}, "input"),
])
def test_bad_input_is_422_naming_it(base, body, named):
    r = httpx.post(base.v1 + "/chains/ask/invoke", json=body, timeout=60)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert named in error["message"] + (error["param"] or "")


def test_unknown_chain_is_404(base):
    for path in ("/chains/nosuch/invoke", "/chains/ask@7/invoke"):
        r = httpx.post(base.v1 + path, json={"input": {"question": "x"}})
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert httpx.get(base.v1 + "/chains/nosuch/input_schema").status_code == 404


def test_chain_requests_are_runs_of_kind_request(base, served_ws):
    pytest.importorskip("llmops.serve.tracing")
    r = httpx.post(base.v1 + "/chains/ask/invoke", json={"input": {"question": QUESTION}}, timeout=60)
    run_id = r.json()["metadata"]["run_id"]
    base.server.tracer.flush()
    run = served_ws.get_run(run_id)
    assert run.kind == "request" and run.status == "finished"
    assert json.loads(run.tags["request"]) == {"question": QUESTION}
    assert run.metrics["tokens.completion"] > 0
    # a chain served over HTTP opens no run of kind `chain` on the request path
    assert not [x for x in served_ws.search_runs("attributes.kind = 'chain'") if x.started_at >= run.started_at]


def test_a_rag_chain_request_records_its_index_and_retrieved_chunks(served_ws, base, tmp_path_factory):
    """The run of a served RAG answer names the index version and the chunk ids the answer was built on."""
    pytest.importorskip("llmops.serve.tracing")
    from rag_support import build_tiny_model as build_tiny_embedder
    from rag_support import write_corpus, write_spec
    from support_serve import write_file

    embedder = build_tiny_embedder(tmp_path_factory.mktemp("embedder"))
    write_corpus(served_ws.root)
    served_ws.rag.ingest(write_spec(served_ws.root, embedder, name="kb"), progress=False)
    write_file(served_ws.root, "prompts/rag.yaml", """\
        name: rag
        messages:
          - role: user
            content: "{% for d in context %}{{ d.text }} {% endfor %}Q: {{ question }}"
        variables:
          question: {type: str}
          context: {type: list}
        model_params: {temperature: 0, max_tokens: 6}
        """)
    write_file(served_ws.root, "prompts/rag.chain.yaml", """\
        kind: chain
        name: rag
        inputs: {question: str}
        steps:
          - {name: retrieve, type: retrieve, index: kb, k: 2, input: question, output: context}
          - {name: prompt, type: prompt, prompt: rag}
          - {name: generate, type: generate, model: tiny}
        """)
    served_ws.prompts.push_folder(served_ws.root / "prompts")
    hits = served_ws.rag.index("kb").search(QUESTION, k=2)
    r = httpx.post(base.v1 + "/chains/rag/invoke", json={"input": {"question": QUESTION}}, timeout=60)
    assert r.status_code == 200, r.text
    run_id = r.json()["metadata"]["run_id"]
    base.server.tracer.flush()
    run = served_ws.get_run(run_id)
    retrieved = json.loads(run.tags["retrieved"])
    assert [(x["chunk_id"], x["index"]) for x in retrieved] == [(h.chunk_id, h.index) for h in hits]
    assert all(x["score"] == pytest.approx(h.score) for x, h in zip(retrieved, hits))
    used = {dst for src, rel, dst in served_ws.lineage(run_id).upstream if rel == "used"}
    assert {"chain/rag@1", "prompt/rag@1", "index/kb@1", "model/tiny@1"} <= used
