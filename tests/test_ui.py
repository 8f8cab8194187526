"""The web UI, server side: every page renders with what a user looks for, on a workspace built through
the public API (tests/ui_support.py); bad ids answer a 404 page, bad arguments a 400 page naming the
mistake; actions (moving an alias, the playground) change the store only when allowed.

Pages are fetched from the UI mounted at /ui, as `llmops serve` and `llmops ui` mount it.
"""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

import llmops
from llmops.cli import run as cli_run
from ui_support import build


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llm_dir):
    ws = llmops.Workspace(tmp_path_factory.mktemp("ui") / "ws")
    ids = build(ws, tiny_llm_dir)
    yield ws, ids
    ws.close()


@pytest.fixture(scope="module")
def client(built):
    from llmops.ui.app import standalone_app

    return TestClient(standalone_app(built[0]))


def page(client, url: str, status: int = 200) -> str:
    resp = client.get(url)
    assert resp.status_code == status, (url, resp.status_code, resp.text[:2000])
    assert resp.headers["content-type"].startswith("text/html")
    return resp.text


def text(html: str) -> str:
    """The visible text of a page's main part, whitespace collapsed."""
    main = html.split("<main>", 1)[-1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main)).replace("&#39;", "'").replace("&gt;", ">")


def test_every_page_renders_what_it_is_for(client, built):
    ws, ids = built
    expect = {
        "/ui/runs": ["lora-train", "lora-train-2", "qa-suite", "chat tiny", "loss="],
        f"/ui/runs/{ids.train}": ["lora-train", "0.0002", "summary.json", "lora-eval-step", "prompt/qa@1"],
        f"/ui/compare?runs={ids.train},{ids.other}": ["lora-train", "lora-train-2", "loss"],
        "/ui/assets": ["prompt", "qa", "tinyqa", "production→1"],
        "/ui/assets/prompt/qa": ["@1", "@2", "first release", "shorter answers", "Alias history"],
        "/ui/assets/prompt/qa@2": ["prompt/qa@2", "Answer briefly.", "shorter answers"],
        "/ui/assets/prompt/qa@production": ["prompt/qa@1", "production"],
        "/ui/assets/chain/tinyqa@1": ["Steps", "generate [generate]", "prompt [prompt]"],
        "/ui/assets/prompt/qa/diff?a=1&b=2": ["Answer briefly.", "style", "max_tokens", "qa-suite", "exact_match"],
        f"/ui/lineage/{ids.request}": ["chain/tinyqa@1", "prompt/qa@1", "model/tiny@1"],
        "/ui/lineage/prompt/qa@1": ["prompt/qa@2", ids.train[:10]],
        "/ui/evals": ["qa-suite", "passed", "prompt/qa@2"],
        f"/ui/evals/{ids.eval_b}": ["qa-suite", "prompt/qa@2", "dataset/data@1", "baseline"],
        "/ui/requests": [ids.request[:12], "chain/tinyqa@1", "41.5"],
        f"/ui/requests/{ids.request}": ["handbook.md#3", "0.82", "rag/docs/handbook.md", "helpful answer",
                                        "chain/tinyqa@1", "generate"],
        "/ui/playground": ["Chain", "Prompt + model"],
        "/ui/playground?chain=tinyqa": ["question", "chain/tinyqa@1"],
        "/ui/lineage": ["version ref"],
    }
    for url, needles in expect.items():
        shown = text(page(client, url))
        for needle in needles:
            assert needle in shown, (url, needle, shown[:3000])


def test_links_stay_under_the_mount_and_nothing_loads_from_elsewhere(client, built):
    _, ids = built
    for url in ("/ui/runs", f"/ui/runs/{ids.train}", "/ui/assets/prompt/qa", f"/ui/lineage/{ids.request}"):
        html = page(client, url)
        links = re.findall(r'(?:href|src|action)="([^"]*)"', html)
        assert links
        for link in links:
            assert link.startswith(("/ui/", "?", "#")), (url, link)
        outside = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in outside and "https://" not in outside


def test_ui_mounted_under_another_prefix_links_there(built):
    from fastapi import FastAPI

    from llmops.ui import create_ui_app

    app = FastAPI()
    app.mount("/tools/ui", create_ui_app(built[0]))
    html = TestClient(app).get("/tools/ui/assets").text
    assert 'href="/tools/ui/assets/prompt/qa"' in html
    assert 'href="/tools/ui/static/ui.css"' in html
    assert TestClient(app).get("/tools/ui/static/ui.css").status_code == 200


def test_static_files_ship_with_the_package(client):
    for name, kind in (("ui.css", "text/css"), ("ui.js", "javascript"), ("favicon.svg", "svg")):
        resp = client.get(f"/ui/static/{name}")
        assert resp.status_code == 200 and kind in resp.headers["content-type"]


def test_runs_filter_uses_the_search_grammar(client):
    shown = text(page(client, "/ui/runs?filter=params.lr+%3D+%270.001%27"))
    assert "lora-train-2" in shown and "lora-train " not in shown.replace("lora-train-2", "")
    assert "1 run" in shown
    shown = text(page(client, "/ui/runs?filter=metrics.loss+<+0.2&kind=finetune"))
    assert "lora-train-2" in shown  # 1.5/12 = 0.125 < 0.2; 2/12 = 0.167 too
    assert "qa-suite" not in shown


def test_a_bad_filter_shows_the_error_and_its_column(client):
    resp = client.get("/ui/runs", params={"filter": "metrics.loss >"})
    assert resp.status_code == 400
    shown = text(resp.text)
    assert "Filter error" in shown and "column 15" in shown and "expected a number" in shown
    resp = client.get("/ui/runs", params={"order": "metrics.loss SIDEWAYS"})
    assert resp.status_code == 400 and "column" in text(resp.text)
    resp = client.get("/ui/requests", params={"filter": "(" * 60 + "metrics.x > 0"})
    assert resp.status_code == 400 and "nests more than" in text(resp.text)


def test_runs_sort_kind_status_and_pages(tmp_path):
    from llmops.ui.app import standalone_app

    with llmops.Workspace(tmp_path / "ws") as ws:
        for i in range(30):
            with ws.start_run(f"run-{i:02d}", kind="odd" if i % 2 else "even") as run:
                run.log_metric("score", float(i))
        try:
            with ws.start_run("broken", kind="even"):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        c = TestClient(standalone_app(ws))
        names = re.findall(r"<td>(run-\d\d|broken)</td>", page(c, "/ui/runs?order=metrics.score+DESC&per_page=25"))
        assert names[:3] == ["run-29", "run-28", "run-27"] and len(names) == 25
        assert "page 1 of 2" in text(page(c, "/ui/runs?order=metrics.score+DESC&per_page=25"))
        pager = re.search(r'<a rel="next" href="\?([^"]+)"', page(c, "/ui/runs?order=metrics.score+DESC&per_page=25"))
        assert "order=metrics.score+DESC" in pager.group(1) and "per_page=25" in pager.group(1)  # the query kept
        second = re.findall(r"<td>(run-\d\d|broken)</td>", page(c, "/ui/runs?order=metrics.score+DESC&per_page=25&page=2"))
        assert len(second) == 6 and "run-00" in second
        asc = re.findall(r"<td>(run-\d\d)</td>", page(c, "/ui/runs?order=attributes.name+ASC"))
        assert asc[:2] == ["run-00", "run-01"]
        odd = text(page(c, "/ui/runs?kind=odd"))
        assert "15 runs" in odd and "run-02" not in odd
        failed = text(page(c, "/ui/runs?status=failed"))
        assert "1 run" in failed and "broken" in failed
        assert "not one of" in text(page(c, "/ui/runs?status=lost-ish", 400))
        assert "per_page" in text(page(c, "/ui/runs?per_page=100000", 400))
        assert "page" in text(page(c, "/ui/runs?page=0", 400))


def test_run_page_charts_children_and_artifacts(client, built):
    _, ids = built
    html = page(client, f"/ui/runs/{ids.train}")
    assert 'data-metric="loss"' in html and "<polyline" in html
    assert f'href="/ui/runs/{ids.child}"' in html
    assert 'href="/ui/lineage/' + ids.train + '"' in html
    timed = page(client, f"/ui/runs/{ids.train}?x=time")
    assert "seconds since the first point" in timed
    child = text(page(client, f"/ui/runs/{ids.child}"))
    assert ids.train[:12] in child and "lora-train" in child  # the parent, named
    resp = client.get(f"/ui/runs/{ids.train}/artifacts/summary.json")
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    assert client.get(f"/ui/runs/{ids.train}/artifacts/nothing.bin").status_code == 404
    assert "x axis" in text(page(client, f"/ui/runs/{ids.train}?x=sideways", 400))


def test_compare_draws_every_run_on_one_chart(client, built):
    _, ids = built
    html = page(client, f"/ui/compare?runs={ids.train}&runs={ids.other}")
    loss = re.search(r'<svg[^>]*data-metric="loss".*?</svg>', html, re.S).group(0)
    assert loss.count("<polyline") == 2
    assert "lora-train " in loss and "lora-train-2 " in loss  # the legend
    assert "no runs" in text(page(client, "/ui/compare", 400))
    assert "at most 10" in text(page(client, "/ui/compare?runs=" + ",".join(f"{i:032x}" for i in range(11)), 400))
    page(client, f"/ui/compare?runs={ids.train},{'f' * 32}", 404)


def test_chain_steps_drawn_as_a_graph_linking_their_versions(client):
    html = page(client, "/ui/assets/chain/tinyqa@1")
    svg = re.search(r"<svg.*?</svg>", html.split("Steps", 1)[1], re.S).group(0)
    assert 'data-node="prompt"' in svg and 'data-node="generate"' in svg and 'data-node="input:question"' in svg
    assert 'href="/ui/assets/prompt/qa@1"' in svg and 'href="/ui/assets/model/tiny"' in svg
    assert svg.count("<path d=") >= 2  # question -> prompt -> generate


def test_prompt_diff_side_by_side_with_eval_deltas(client, built):
    _, ids = built
    html = page(client, "/ui/assets/prompt/qa/diff?a=1&b=2")
    table = re.search(r'<table class="sbs".*?</table>', html, re.S).group(0)
    rows = re.findall(r'<tr class="(\w+)"><td><pre>(.*?)</pre></td><td><pre>(.*?)</pre></td></tr>', table, re.S)
    assert ("added", "", "Answer briefly.") in rows
    assert ("same", "Q: {{ question }}", "Q: {{ question }}") in rows
    deltas = text(html.split("Evaluations of both", 1)[1])
    assert "qa-suite" in deltas and "exact_match" in deltas
    assert ids.eval_a[:12] in deltas and ids.eval_b[:12] in deltas
    # any kind: a structured diff of the spec
    other = text(page(client, "/ui/assets/model/tiny/diff?a=1&b=1"))
    assert "same content" in other
    assert "two versions" in text(page(client, "/ui/assets/prompt/qa/diff?a=1", 400))


def test_lineage_graph_nodes_are_links(client, built):
    _, ids = built
    html = page(client, f"/ui/lineage/{ids.request}")
    svg = re.search(r'<figure class="graph".*?</figure>', html, re.S).group(0)
    for ref in ("chain/tinyqa@1", "prompt/qa@1", "model/tiny@1"):
        assert f'<a href="/ui/assets/{ref}" data-node="{ref}">' in svg
    assert f'data-node="{ids.request}"' in svg
    same = page(client, f"/ui/lineage/chatcmpl-{ids.request}")  # a served response id
    assert f'data-node="{ids.request}"' in same
    up = page(client, "/ui/lineage/prompt/qa@1?depth=1")
    assert f'href="/ui/evals/{ids.eval_a}"' in up and f'href="/ui/requests/{ids.request}"' in up
    small = page(client, "/ui/lineage/prompt/qa@1?depth=1&budget=1")
    assert "Not everything is drawn" in small
    assert "depth" in text(page(client, f"/ui/lineage/{ids.request}?depth=0", 400))


def test_eval_pages_reuse_the_report(client, built, tmp_path):
    ws, ids = built
    from llmops.evals import load_result, write_reports

    html = page(client, f"/ui/evals/{ids.eval_b}")
    assert f'src="/ui/evals/{ids.eval_b}/report.html"' in html
    report = client.get(f"/ui/evals/{ids.eval_b}/report.html")
    assert report.status_code == 200
    written = write_reports(load_result(ws, ids.eval_b), tmp_path)["html"].read_text()
    assert report.text == written
    suites = text(page(client, "/ui/evals"))
    assert "qa-suite" in suites and "passed" in suites
    only = text(page(client, "/ui/evals?suite=qa-suite"))
    assert "2 runs" in only


def test_retrieved_chunks_read_in_every_shape_a_run_holds():
    from types import SimpleNamespace

    from llmops.ui.requests import retrieved_chunks

    def read(value):
        return retrieved_chunks(SimpleNamespace(tags={"retrieved": json.dumps(value)}))

    row = {"chunk_id": "a#1", "score": 0.5}
    assert read([{"step": "r", **row}, {"step": "s", **row}]) == [("r", [row]), ("s", [row])]  # the server's rows
    assert read([{"step": "r", "chunks": [row]}]) == [("r", [row])]
    assert read({"r": [row]}) == [("r", [row])] and read([row]) == [("retrieve", [row])]
    assert read("not chunks") == [] and retrieved_chunks(SimpleNamespace(tags={})) == []


def test_request_trace_escapes_what_the_model_said(client, built):
    _, ids = built
    html = page(client, f"/ui/requests/{ids.request}")
    assert "item one &lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    listed = page(client, "/ui/requests")
    row = re.search(rf"<tr><td class=\"mono\"><a href=\"/ui/requests/{ids.request}\">.*?</tr>", listed, re.S).group(0)
    assert ">1<" in row  # one feedback


@pytest.mark.parametrize("url,status,needle", [
    ("/ui/runs/ffffffffffffffffffffffffffffffff", 404, "no run"),
    ("/ui/runs/zz", 404, "no run"),
    ("/ui/assets/prompt/nope", 404, "nope"),
    ("/ui/assets/prompt/qa@9", 404, "qa@9"),
    ("/ui/assets/prompt/qa@nosuchalias", 404, "nosuchalias"),
    ("/ui/assets/prompt/qa@²", 400, "qa@²"),
    ("/ui/assets/Bad_Kind/qa", 400, "Bad_Kind"),
    ("/ui/lineage/prompt/nope@1", 404, "nope"),
    ("/ui/lineage/ffffffffffffffffffffffffffffffff", 404, "no run"),
    ("/ui/requests/ffffffffffffffffffffffffffffffff", 404, "no run"),
    ("/ui/nothing/here", 404, "no page"),
    ("/ui/assets/prompt/qa@1/files/none.txt", 404, "none.txt"),
])
def test_bad_ids_answer_an_error_page(client, url, status, needle):
    shown = text(page(client, url, status))
    assert needle in shown


def test_an_eval_page_of_a_run_that_is_not_an_eval_is_404(client, built):
    _, ids = built
    assert "not an eval run" in text(page(client, f"/ui/evals/{ids.train}", 404))


def test_moving_an_alias_is_recorded_with_its_reason(tmp_path):
    from llmops.ui.app import standalone_app

    with llmops.Workspace(tmp_path / "ws") as ws:
        ws.registry.push("prompt-like", "p", {"v": 1})
        ws.registry.push("prompt-like", "p", {"v": 2})
        c = TestClient(standalone_app(ws))
        url = "/ui/assets/prompt-like/p/alias"
        resp = c.post(url, data={"alias": "production", "version": "2", "reason": "v2 is better"}, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"] == "/ui/assets/prompt-like/p#history"
        assert ws.registry.aliases("prompt-like/p") == {"production": 2}
        event = ws.registry.history("prompt-like/p")[-1]
        assert (event["alias"], event["from"], event["to"], event["reason"]) == ("production", None, 2, "v2 is better")
        assert "v2 is better" in text(page(c, "/ui/assets/prompt-like/p"))
        # refused, and nothing changes: no reason, a bad version, a cross-site post
        assert "reason" in text(c.post(url, data={"alias": "production", "version": "1", "reason": " "}).text)
        assert c.post(url, data={"alias": "production", "version": "9", "reason": "x"}).status_code == 404
        assert c.post(url, data={"alias": "latest", "version": "1", "reason": "x"}).status_code == 400
        cross = c.post(url, data={"alias": "production", "version": "1", "reason": "x"},
                       headers={"origin": "http://evil.example"})
        assert cross.status_code == 403
        assert ws.registry.aliases("prompt-like/p") == {"production": 2}


def test_actions_need_the_api_key_when_keys_are_on(tmp_path):
    from llmops.serve.keys import create_key
    from llmops.ui.app import standalone_app

    with llmops.Workspace(tmp_path / "ws") as ws:
        ws.registry.push("dataset", "d", {"v": 1})
        c = TestClient(standalone_app(ws, api_keys_required=lambda: True))
        url = "/ui/assets/dataset/d/alias"
        form = {"alias": "production", "version": "1", "reason": "ok"}
        assert 'name="api_key"' in page(c, "/ui/assets/dataset/d")
        resp = c.post(url, data=form)
        assert resp.status_code == 401 and "API key" in text(resp.text)
        assert c.post(url, data={**form, "api_key": "llm-nope"}).status_code == 401
        assert ws.registry.aliases("dataset/d") == {}
        _, secret = create_key(ws, "ops")
        assert c.post(url, data={**form, "api_key": secret}, follow_redirects=False).status_code == 303
        assert ws.registry.aliases("dataset/d") == {"production": 1}
        # the header works too, as for the HTTP API
        resp = c.post(url, data={**form, "version": "1", "reason": "again"}, headers={"authorization": f"Bearer {secret}"},
                      follow_redirects=False)
        assert resp.status_code == 303
        # keys found in the store turn the check on by default
        c2 = TestClient(standalone_app(ws))
        assert c2.post(url, data=form).status_code == 401


def test_playground_runs_are_recorded_as_requests(client, built):
    ws, _ = built
    resp = client.post("/ui/playground", data={"chain": "tinyqa", "in.question": "what is item 2?"},
                       follow_redirects=False)
    assert resp.status_code == 303, resp.text[:2000]
    run_id = resp.headers["location"].rsplit("/", 1)[1]
    run = ws.get_run(run_id)
    assert run.kind == "request" and run.params["chain_ref"] == "chain/tinyqa@1"
    assert run.metrics["latency_ms.total"] > 0 and "latency_ms.step.generate" in run.metrics
    graph = ws.lineage(run_id, depth=1)
    assert {"chain/tinyqa@1", "prompt/qa@1", "model/tiny@1"} <= set(graph.nodes)
    shown = text(page(client, resp.headers["location"]))
    assert "chain/tinyqa@1" in shown and run.tags["output"].strip('"')[:10] in shown

    resp = client.post("/ui/playground", data={"prompt": "qa@2", "model": "tiny", "in.question": "hi", "in.style": ""},
                       follow_redirects=False)
    assert resp.status_code == 303, resp.text[:2000]
    run = ws.get_run(resp.headers["location"].rsplit("/", 1)[1])
    assert run.params["prompt_ref"] == "prompt/qa@2" and run.params["model_ref"] == "model/tiny@1"
    assert "response" in run.tags and run.metrics["tokens.completion"] >= 1

    before = len(ws.search_runs("attributes.kind = 'request'"))
    missing = client.post("/ui/playground", data={"chain": "tinyqa"})
    assert missing.status_code == 400 and "question" in text(missing.text)
    nothing = client.post("/ui/playground", data={})
    assert nothing.status_code == 400 and "choose a chain" in text(nothing.text)
    assert len(ws.search_runs("attributes.kind = 'request'")) == before


def test_playground_reads_inputs_as_their_declared_types():
    from llmops.prompts.spec import VariableSpec
    from llmops.ui.app import BadRequest
    from llmops.ui.playground import read_inputs

    variables = {"n": VariableSpec(type="int"), "x": VariableSpec(type="float", default=0.5),
                 "flag": VariableSpec(type="bool", default=False), "items": VariableSpec(type="list", default=[]),
                 "text": VariableSpec(type="str")}
    got = read_inputs(variables, {"in.n": "3", "in.x": "", "in.flag": "on", "in.items": '["a", 1]', "in.text": ""})
    assert got == {"n": 3, "flag": True, "items": ["a", 1], "text": ""}
    for bad, needle in (({"in.n": "three", "in.text": ""}, "'n' must be int"),
                        ({"in.n": "1", "in.items": '{"a": 1}', "in.text": ""}, "JSON array"),
                        ({"in.text": "t"}, "'n' is required")):
        with pytest.raises(BadRequest, match=needle):
            read_inputs(variables, bad)


def test_pages_read_the_same_on_postgresql(store_ws):
    """The paged queries run on both stores (the store suite's fixture: SQLite and PostgreSQL)."""
    from llmops.ui.app import standalone_app

    for i in range(3):
        with store_ws.start_run(f"r{i}", kind="request") as run:
            run.log_metric("latency_ms.total", 10.0 * i)
    store_ws.registry.push("dataset", "d", {"v": 1})
    rid = served_request_like(store_ws)
    c = TestClient(standalone_app(store_ws))
    assert "4 requests" in text(page(c, "/ui/requests"))
    assert "2 runs" in text(page(c, "/ui/runs?filter=metrics.%60latency_ms.total%60+%3E+5"))
    assert "dataset" in text(page(c, "/ui/assets"))
    assert rid[:10] in text(page(c, "/ui/lineage/dataset/d@1"))
    assert "No eval has run yet" in text(page(c, "/ui/evals"))


def served_request_like(ws) -> str:
    with ws.start_run("req", kind="request") as run:
        run.record_used(ws.registry.get("dataset/d@1", record=False))
    return run.id


def test_llmops_ui_refuses_an_address_it_cannot_serve(tmp_path, capsys):
    import socket

    llmops.Workspace(tmp_path / "ws").close()
    for args, needle in ((["--port", "0"], "--port 0"), (["--port", "70000"], "70000"),
                         (["--host", "not a host"], "not a host"), (["--host", ""], "--host")):
        assert cli_run(["-w", str(tmp_path / "ws"), "ui", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli_run(["-w", str(tmp_path / "ws"), "ui", "--port", str(port)]) == 2
        assert "choose another --port" in capsys.readouterr().err
