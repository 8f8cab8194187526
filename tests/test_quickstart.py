"""`llmops quickstart`, the README's main command: the whole loop end to end on the real embedded models,
and its refusals of a `--dir` it must not write into."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import llmops
from llmops.cli import run as cli
from llmops.evals.runner import load_result
from llmops.evals.suite import load_suite
from llmops.finetune.spec import load_job
from llmops.quickstart import steps
from llmops.serve.feedback import list_feedback

REPO = Path(__file__).resolve().parents[1]


def _refused(capsys, target: Path, *named: str) -> str:
    code = cli(["quickstart", "--fast", "--dir", str(target)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in (str(target), *named):
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}


def test_dir_that_is_not_empty_is_refused_and_left_as_it_was(tmp_path, capsys):
    target = tmp_path / "mine"
    (target / "notes").mkdir(parents=True)
    (target / "notes" / "todo.txt").write_text("keep me")
    before = _tree(target)
    _refused(capsys, target, "not empty", "new or empty folder")
    assert _tree(target) == before


def test_dir_that_holds_a_workspace_is_refused_and_left_as_it_was(tmp_path, capsys):
    target = tmp_path / "ws"
    llmops.Workspace(target).close()
    before = _tree(target)
    _refused(capsys, target, "already holds an llmops workspace", f"llmops -w {target} ui")
    assert _tree(target) == before


def test_dir_that_is_a_file_or_under_one_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(capsys, afile, "is a file")
    _refused(capsys, afile / "sub", "is a file")
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_keep_is_gone_in_favour_of_dir(tmp_path, capsys):
    assert cli(["quickstart", "--keep", str(tmp_path / "qs")]) == 2
    assert "--keep" in capsys.readouterr().err and not (tmp_path / "qs").exists()


def test_fast_job_is_the_real_job_with_fewer_steps(tmp_path):
    real = tmp_path / "handbook-qa.yaml"
    shutil.copy(REPO / steps.JOB, real)
    fast = load_job(steps.fast_job(real))
    job = load_job(real)
    assert fast.spec.training.max_steps == steps.FAST_STEPS and fast.spec.training.epochs is None
    assert fast.spec.validation.fraction == steps.FAST_VALIDATION
    same = {"training", "validation"}
    assert fast.spec.model_dump(exclude=same) == job.spec.model_dump(exclude=same)
    kept = fast.spec.training.model_dump(exclude={"epochs", "max_steps", "eval_every", "checkpoint_every",
                                                  "warmup_steps"})
    assert kept == job.spec.training.model_dump(exclude={"epochs", "max_steps", "eval_every", "checkpoint_every",
                                                         "warmup_steps"})
    assert yaml.safe_load(real.read_text()) == yaml.safe_load((REPO / steps.JOB).read_text())  # the real one untouched


def test_fast_suite_cuts_rows_and_tokens_but_keeps_the_gates():
    suite = load_suite(REPO / steps.SUITE)
    fast = steps.fast_suite(suite)
    assert fast.spec.limit == steps.FAST_ROWS and fast.spec.generation.max_tokens == steps.FAST_MAX_TOKENS
    assert fast.spec.gates == suite.spec.gates and fast.spec.baseline == suite.spec.baseline
    assert fast.spec.metrics == suite.spec.metrics and fast.digest != suite.digest


def _upstream(ws, node: str) -> set[str]:
    graph = ws.lineage(node)
    return {n for edge in graph.upstream for n in (edge[0], edge[2]) if "/" in n and n != graph.root}


def _serving(workspace: Path) -> list[int]:
    """Pids of processes whose command line names this workspace (the background `llmops serve`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(workspace).encode() in cmdline and b"serve" in cmdline:
                pids.append(int(proc.name))
    return pids


@pytest.mark.integration
def test_quickstart_fast_runs_the_whole_loop(tmp_path):
    root = tmp_path / "qs"
    r = subprocess.run([sys.executable, "-m", "llmops.cli", "quickstart", "--fast", "--dir", str(root)],
                       capture_output=True, text=True, timeout=1500, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for expected in ["1. prompts", "pushed prompt/qa@1, prompt/qa@2", "qa@1 -> qa@2",
                     "2. ingest", "index/handbook@1", "published=False (still index/handbook@1)",
                     "3. fine-tune", f"trained adapter/handbook-qa@1: {steps.FAST_STEPS} steps",
                     "4. evaluate", f"against chain/rag-qa@1 on {steps.FAST_ROWS} rows",
                     "5. promotion gate", "rougeL improvement >= 0.01", "decision: ",
                     "6. serve", "7. feedback", "POST /v1/feedback -> 200", "8. lineage", "9. explore",
                     f"llmops -w {root} ui"]:
        assert expected in out, expected
    # the report files, as printed
    reports = root / steps.REPORTS
    for name in ("report.md", "report.html", "junit.xml", "report.json"):
        assert (reports / name).is_file() and f"{reports / name}" in out, name

    # the server was stopped: its process is gone, and nothing serves this workspace any more
    pid = int(re.search(r"server stopped \(pid (\d+)", out).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _serving(root) == []

    ws = llmops.Workspace(root, create=False)
    try:
        # the gate: production of the adapter moved iff the stored eval result passed, by that eval run
        candidate = ws.search_runs("attributes.kind = 'eval' AND tags.eval_role = 'candidate'")
        assert len(candidate) == 1
        result = load_result(ws, candidate[0].id)
        assert f"/ui/evals/{result['run_id']}" in out
        aliases = ws.registry.aliases("adapter/handbook-qa")
        moves = [e for e in ws.registry.history("adapter/handbook-qa") if e["event"] == "alias"]
        if result["passed"]:
            assert aliases == {"production": 1} and "decision: PROMOTED" in out
            assert [m["run_id"] for m in moves] == [result["run_id"]]
        else:
            assert aliases == {} and moves == [] and "decision: NOT PROMOTED" in out
            for g in result["gates"]:
                assert ("FAIL " if not g["passed"] else "PASS ") + g["name"] in out

        # the answer: one request run, whose id the response carried, asked of the tuned chain only if promoted
        requests = ws.search_runs("attributes.kind = 'request'")
        assert len(requests) == 1 and requests[0].status == "finished"
        request = requests[0]
        assert f"response id: chatcmpl-{request.id}" in out and f"/ui/requests/{request.id}" in out
        served = "chain/rag-qa-tuned" if result["passed"] else "chain/rag-qa"
        assert request.params["model"] == served and request.tags.get("response")

        # the feedback, stored against that run
        feedback = list_feedback(ws, request.id)
        assert [f.score for f in feedback] == [1.0]

        # the lineage: chain, prompt, index and model; adapter and its dataset when the adapter served it
        up = _upstream(ws, request.id)
        kinds = {ref.split("/")[0] for ref in up}
        assert {"chain/" + served.split("/")[1] + "@1", "prompt/rag-qa@1", "index/handbook@1",
                "model/smollm2@1"} <= up
        adapter_up = _upstream(ws, "adapter/handbook-qa@1")
        assert "dataset/handbook_qa.train@1" in adapter_up  # the adapter version reaches its training data
        if result["passed"]:
            assert {"adapter/handbook-qa@1", "dataset/handbook_qa.train@1"} <= up
        else:
            assert "adapter" not in kinds  # the unpromoted adapter is not what answered
        assert "trained on dataset/handbook_qa.train@1" in out
    finally:
        ws.close()
