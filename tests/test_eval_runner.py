"""The eval runner: suites checked before generation, cached batched generation, seeded bootstrap,
paired baselines, gates and exit codes, lineage, and the promotion gate — on the tiny local LLM.

Predictions of a 2-layer random model are noise, so the tests make their own references: the
dataset's answers are version 1's own (greedy, reproducible) predictions for half the rows, which
gives version 1 an exact-match score of 0.5 and any other prompt a lower one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.cli import run as cli_run
from llmops.errors import SpecError

QA_V1 = """name: qa
template: "Q: {{ question }}\\nA:"
variables: {question: {type: str}}
model_params: {max_tokens: 6}
"""
QA_V2 = """name: qa
template: "Answer briefly. {{ question }} ->"
variables: {question: {type: str}}
model_params: {max_tokens: 6}
"""
CHAIN = """kind: chain
name: tinyqa
inputs: {question: {type: str}}
steps:
  - {name: prompt, type: prompt, prompt: qa}
  - {name: generate, type: generate, model: tiny}
output: generate
"""
N = 8


def suite_text(**over) -> str:
    fields = {
        "name": "qa-suite", "dataset": "data.jsonl", "target": {"prompt": "qa", "model": "tiny"},
        "inputs": {"question": "q"}, "reference": "a", "id": "id", "metrics": ["exact_match"],
        "gates": [{"metric": "exact_match", "min": 0.0, "max_regression": 0.1}],
        "bootstrap": {"resamples": 200, "seed": 7},
    }
    fields.update(over)
    return json.dumps({k: v for k, v in fields.items() if v is not None}, indent=1)  # JSON is YAML


@pytest.fixture
def qa(ws, tiny_llm_dir):
    """A workspace with model/tiny, prompt/qa@1, a chain, and evals/qa.yaml over 8 rows."""
    from llmops.models import model_spec

    ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    prompts = ws.root / "prompts"
    prompts.mkdir()
    (prompts / "qa.yaml").write_text(QA_V1)
    (prompts / "tinyqa.chain.yaml").write_text(CHAIN)
    ws.prompts.push_folder([prompts])
    evals = ws.root / "evals"
    evals.mkdir()
    rows = [{"id": f"q{i}", "q": f"what is item {i}?", "a": "placeholder"} for i in range(N)]
    write_rows(evals / "data.jsonl", rows)
    (evals / "qa.yaml").write_text(suite_text())
    # references: version 1's own answers for the even rows
    backend = ws.chains.load("tinyqa").pinned.bound["generate"].backend
    prompt = ws.prompts.get("qa@1")
    for i, row in enumerate(rows):
        if i % 2 == 0:
            row["a"] = backend.complete(prompt.render(question=row["q"]), max_tokens=6).text
    write_rows(evals / "data.jsonl", rows)
    return ws


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def push_v2(ws) -> None:
    (ws.root / "prompts" / "qa.yaml").write_text(QA_V2)
    ws.prompts.push_folder([ws.root / "prompts" / "qa.yaml"])


def eval_runs(ws) -> list:
    return ws.search_runs("attributes.kind = 'eval'")


def call(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli_run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- generation, cache, storage ----------------------------------------------------------------------
def test_result_scores_and_stores_every_example(qa):
    from llmops.evals import evaluate, load_result

    result = evaluate(qa, qa.root / "evals" / "qa.yaml", progress=False)
    assert result["format"] == "llmops.eval/1"
    assert result["target"] == {"ref": "prompt/qa@1", "kind": "prompt", "versions": ["prompt/qa@1", "model/tiny@1"]}
    assert result["dataset"]["ref"] == "dataset/data@1" and result["dataset"]["rows"] == N
    assert [e["scores"]["exact_match"] for e in result["examples"]] == [1.0, 0.0] * (N // 2)
    assert result["metrics"]["exact_match"]["value"] == 0.5
    assert result["passed"] is True and result["baseline"] is None
    assert load_result(qa, result["run_id"]) == json.loads(json.dumps(result))
    run = qa.get_run(result["run_id"])
    assert run.kind == "eval" and run.metrics["exact_match"] == 0.5


def test_rerun_with_nothing_changed_generates_nothing(qa):
    from llmops.evals import evaluate

    suite = qa.root / "evals" / "qa.yaml"
    first = evaluate(qa, suite, progress=False)
    again = evaluate(qa, suite, progress=False)
    assert (first["counts"]["generated"], first["counts"]["cached"]) == (N, 0)
    assert (again["counts"]["generated"], again["counts"]["cached"]) == (0, N)
    assert [e["prediction"] for e in again["examples"]] == [e["prediction"] for e in first["examples"]]
    # other generation params are another cache key
    suite.write_text(suite_text(generation={"max_tokens": 3}))
    shorter = evaluate(qa, suite, progress=False)
    assert shorter["counts"]["generated"] == N


def test_same_dataset_content_is_the_same_dataset_version(qa):
    from llmops.evals import evaluate

    evaluate(qa, qa.root / "evals" / "qa.yaml", progress=False)
    evaluate(qa, qa.root / "evals" / "qa.yaml", progress=False)
    assert [v.version for v in qa.registry.versions("dataset/data")] == [1]


def test_chain_target_batched_equals_sequential_invoke(qa):
    from llmops.evals import evaluate

    suite = qa.root / "evals" / "qa.yaml"
    suite.write_text(suite_text(target={"chain": "tinyqa"}))
    result = evaluate(qa, suite, progress=False)
    chain = qa.chains.load("tinyqa")
    assert [e["prediction"] for e in result["examples"]] == [chain.invoke({"question": e["inputs"]["question"]})
                                                             for e in result["examples"]]
    assert result["target"]["versions"] == ["chain/tinyqa@1", "prompt/qa@1", "model/tiny@1"]


def test_lineage_of_the_eval_run_reaches_dataset_and_target_versions(qa):
    from llmops.evals import evaluate

    result = evaluate(qa, qa.root / "evals" / "qa.yaml", progress=False)
    graph = qa.lineage(result["run_id"], depth=1)
    assert {"dataset/data@1", "prompt/qa@1", "model/tiny@1"} <= set(graph.nodes)


# -- statistics ----------------------------------------------------------------------------------------
def test_bootstrap_is_seeded_and_the_paired_delta_is_paired():
    import numpy as np

    from llmops.evals.stats import mean_ci, paired_delta

    rng = np.random.default_rng(1)
    a = rng.random(50)
    kw = {"resamples": 500, "confidence": 0.9}
    assert mean_ci(a, seed=3, **kw) == mean_ci(list(a), seed=3, **kw)
    assert mean_ci(a, seed=3, **kw) != mean_ci(a, seed=4, **kw)
    ci = mean_ci(a, seed=3, **kw)
    assert ci["value"] == pytest.approx(a.mean()) and ci["low"] < ci["value"] < ci["high"]
    same = paired_delta(a, a, seed=0, **kw)
    assert same == {"delta": 0.0, "low": 0.0, "high": 0.0, "p_better": 0.0}
    # a constant improvement has no paired noise at all, however noisy the scores themselves are
    up = paired_delta(a + 0.1, a, seed=0, **kw)
    assert up["delta"] == pytest.approx(0.1) and up["low"] == pytest.approx(0.1) and up["p_better"] == 1.0


def test_baseline_comparison_is_paired_and_the_stored_baseline_is_reused(qa):
    from llmops.evals import evaluate

    push_v2(qa)
    suite = qa.root / "evals" / "qa.yaml"
    result = evaluate(qa, suite, target="qa@2", baseline="qa@1", progress=False)
    base = result["baseline"]
    assert base["target"]["ref"] == "prompt/qa@1"
    assert base["metrics"]["exact_match"]["value"] == 0.5
    d = base["deltas"]["exact_match"]
    assert d["delta"] == pytest.approx(result["metrics"]["exact_match"]["value"] - 0.5)
    assert [e["baseline_scores"]["exact_match"] for e in result["examples"]] == [1.0, 0.0] * (N // 2)
    again = evaluate(qa, suite, target="qa@2", baseline="qa@1", progress=False)
    assert again["baseline"]["run_id"] == base["run_id"]  # the stored baseline run, not a new one
    assert again["baseline"]["deltas"] == base["deltas"]  # same seed, same intervals
    roles = [r.tags.get("eval_role") for r in eval_runs(qa)]
    assert roles.count("baseline") == 1


# -- gates and exit codes -----------------------------------------------------------------------------
def test_exit_codes_0_when_gates_pass_1_when_one_fails_2_on_bad_input(qa, capsys, tmp_path):
    suite = qa.root / "evals" / "qa.yaml"
    ws = ["-w", str(qa.root)]
    code, out, err = call(capsys, *ws, "eval", "run", str(suite), "--report-dir", str(tmp_path / "r"))
    assert code == 0, err
    assert {"report.md", "junit.xml", "report.json", "report.html"} <= {p.name for p in (tmp_path / "r").iterdir()}
    suite.write_text(suite_text(gates=[{"metric": "exact_match", "min": 0.9}]))
    code, out, err = call(capsys, *ws, "eval", "run", str(suite))
    assert code == 1 and "FAIL  exact_match >= 0.9" in out
    suite.write_text(suite_text(metrics=["no_such_metric"]))
    code, out, err = call(capsys, *ws, "eval", "run", str(suite))
    assert code == 2 and err.startswith("error: ") and "no_such_metric" in err


def test_regression_gate_fails_a_worse_version(qa, capsys):
    push_v2(qa)
    code, out, err = call(capsys, "-w", str(qa.root), "eval", "run", str(qa.root / "evals" / "qa.yaml"),
                          "--target", "qa@2", "--baseline", "qa@1", "--json")
    result = json.loads(out)
    gate = next(g for g in result["gates"] if g["kind"] == "max_regression")
    assert code == 1 and gate["passed"] is False and gate["value"] <= -0.1


def test_improvement_gate_needs_the_whole_interval_above_the_threshold(qa, capsys):
    push_v2(qa)
    suite = qa.root / "evals" / "qa.yaml"
    suite.write_text(suite_text(gates=[{"metric": "exact_match", "min_improvement": 0.0}]))
    args = ["-w", str(qa.root), "eval", "run", str(suite), "--json"]
    code, out, _ = call(capsys, *args, "--target", "qa@2", "--baseline", "qa@1")
    gate = json.loads(out)["gates"][0]
    assert code == 1 and gate["kind"] == "min_improvement" and gate["passed"] is False   # v2 is worse
    code, out, _ = call(capsys, *args, "--target", "qa@1", "--baseline", "qa@2")
    gate = json.loads(out)["gates"][0]
    assert code == 0 and gate["passed"] is True and gate["value"] >= 0.0   # the interval's low end
    code, out, _ = call(capsys, *args, "--target", "qa@1")
    gate = json.loads(out)["gates"][0]
    assert code == 1 and "no baseline to improve on" in gate["detail"]   # nothing to be better than


def test_eval_report_and_compare_from_stored_runs(qa, capsys, tmp_path):
    from llmops.evals import evaluate

    push_v2(qa)
    a = evaluate(qa, qa.root / "evals" / "qa.yaml", target="qa@1", progress=False)
    b = evaluate(qa, qa.root / "evals" / "qa.yaml", target="qa@2", progress=False)
    code, out, err = call(capsys, "-w", str(qa.root), "eval", "report", a["run_id"], "--report-dir", str(tmp_path))
    assert code == 0 and (tmp_path / "report.md").is_file()
    code, out, err = call(capsys, "-w", str(qa.root), "eval", "compare", a["run_id"], b["run_id"], "--json")
    deltas = json.loads(out)["deltas"]
    assert code == 0
    assert deltas["exact_match"]["delta"] == pytest.approx(b["metrics"]["exact_match"]["value"] - 0.5)


# -- bad input: a clear error, nothing generated, nothing stored -------------------------------------------
def _no_row_reference(root):
    write_rows(root / "evals" / "data.jsonl", [{"id": "q1", "q": "x", "a": "y"}, {"id": "q2", "q": "x"}])
    return ["line 2", "'a'"]


def _missing_input_field(root):
    (root / "evals" / "qa.yaml").write_text(suite_text(inputs={"question": "query"}))
    return ["line 1", "'query'"]


def _unknown_input(root):
    (root / "evals" / "qa.yaml").write_text(suite_text(inputs={"question": "q", "topic": "q"}))
    return ["inputs.topic", "no input 'topic'"]


def _unknown_metric(root):
    (root / "evals" / "qa.yaml").write_text(suite_text(metrics=["exact_match", "blue"]))
    return ["metrics[1]", "blue"]


def _unresolved_target(root):
    (root / "evals" / "qa.yaml").write_text(suite_text(target={"prompt": "qa@9", "model": "tiny"}))
    return ["target.prompt", "qa@9"]


def _empty_dataset(root):
    (root / "evals" / "data.jsonl").write_text("\n")
    return ["data.jsonl", "no rows"]


def _gate_on_unlisted_metric(root):
    (root / "evals" / "qa.yaml").write_text(suite_text(gates=[{"metric": "rougeL", "min": 0.1}]))
    return ["qa.yaml", "rougeL"]


@pytest.mark.parametrize("breakage", [_no_row_reference, _missing_input_field, _unknown_input, _unknown_metric,
                                      _unresolved_target, _empty_dataset, _gate_on_unlisted_metric])
def test_bad_input_is_refused_before_any_generation(qa, capsys, breakage):
    expected = breakage(qa.root)
    code, out, err = call(capsys, "-w", str(qa.root), "eval", "run", str(qa.root / "evals" / "qa.yaml"))
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for text in expected:
        assert text in err
    assert eval_runs(qa) == []
    assert qa.registry.list("dataset") == []
    assert not (qa.home / "cache" / "evals").exists()


def test_a_baseline_run_on_another_dataset_version_is_refused(qa):
    from llmops.evals import evaluate

    suite = qa.root / "evals" / "qa.yaml"
    first = evaluate(qa, suite, progress=False)
    rows = [json.loads(line) for line in (qa.root / "evals" / "data.jsonl").read_text().splitlines()]
    rows[0]["a"] = "changed"
    write_rows(qa.root / "evals" / "data.jsonl", rows)
    before = len(eval_runs(qa))
    with pytest.raises(SpecError, match="another dataset version"):
        evaluate(qa, suite, baseline=first["run_id"], progress=False)
    assert len(eval_runs(qa)) == before and len(qa.registry.versions("dataset/data")) == 1


# -- promotion gate and prompt diffs with evidence -----------------------------------------------------------
def test_promotion_moves_the_alias_only_when_the_suite_passes_and_records_the_run(qa, capsys):
    from llmops.evals import promote

    suite = qa.root / "evals" / "qa.yaml"
    first = promote(qa, "prompt/qa", "production", 1, suite)
    assert first["passed"] and qa.registry.aliases("prompt/qa") == {"production": 1}
    push_v2(qa)
    code, out, err = call(capsys, "-w", str(qa.root), "assets", "alias", "prompt/qa", "production", "2",
                          "--require-suite", str(suite))
    assert code == 1 and "not moved" in err
    assert qa.registry.aliases("prompt/qa") == {"production": 1}
    (qa.root / "prompts" / "qa.yaml").write_text(QA_V1)  # version 3 = version 1's content: no regression
    qa.prompts.push_folder([qa.root / "prompts" / "qa.yaml"])
    code, out, err = call(capsys, "-w", str(qa.root), "assets", "alias", "prompt/qa", "production", "3",
                          "--require-suite", str(suite))
    assert code == 0, err
    assert qa.registry.aliases("prompt/qa") == {"production": 3}
    move = qa.registry.history("prompt/qa")[-1]
    assert move["event"] == "alias" and (move["from"], move["to"]) == (1, 3)
    evidence = qa.get_run(move["run_id"])
    assert evidence.kind == "eval" and evidence.tags["passed"] == "true"
    assert {"prompt/qa@3", "dataset/data@1"} <= set(qa.lineage(evidence.id, depth=1).nodes)


def test_prompts_diff_with_suite_shows_deltas_and_changed_examples(qa, capsys):
    push_v2(qa)
    code, out, err = call(capsys, "-w", str(qa.root), "prompts", "diff", "qa@1", "qa@2",
                          "--suite", str(qa.root / "evals" / "qa.yaml"))
    assert code == 0, err
    assert "prompt/qa@2 against prompt/qa@1" in out
    assert "exact_match" in out and "delta" in out and "examples that changed most" in out


# -- the real embedded model on the example suite ---------------------------------------------------------------
@pytest.mark.integration
def test_example_suite_on_smollm2(tmp_path):
    import shutil

    import llmops
    from llmops.evals import evaluate, load_suite

    repo = Path(__file__).resolve().parent.parent
    if not (repo / "evals" / "data" / "handbook_qa.test.jsonl").exists():
        pytest.skip("the handbook QA dataset is not there yet")
    shutil.copytree(repo / "evals", tmp_path / "evals")
    shutil.copytree(repo / "prompts", tmp_path / "prompts")
    with llmops.Workspace(tmp_path) as ws:
        ws.prompts.push_folder([tmp_path / "prompts" / "qa.yaml"])
        suite = load_suite(tmp_path / "evals" / "qa.yaml")
        result = evaluate(ws, suite, progress=False)
        assert result["counts"]["generated"] == suite.spec.limit
        assert all(e["prediction"].strip() for e in result["examples"])
        assert evaluate(ws, suite, progress=False)["counts"]["generated"] == 0
