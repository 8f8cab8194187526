"""`llmops prompts …` and `llmops chains …` through Typer's CliRunner, in process (one subprocess test
checks the real exit status and the one-line error)."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import llmops.cli
from llmops.cli import app
from llmops.errors import InvalidRef, SpecError
from llmops.prompts import canonical_spec, load_prompt_spec

REPO = Path(__file__).resolve().parent.parent
QA_V1 = REPO / "llmops" / "quickstart" / "qa_v1.yaml"


def invoke(root: Path, *args: str):
    llmops.cli._register()
    return CliRunner().invoke(app, ["-w", str(root), *map(str, args)])


def ok(root: Path, *args: str) -> str:
    result = invoke(root, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def ok_json(root: Path, *args: str):
    return json.loads(ok(root, *args, "--json") if args[-1] != "--format" else ok(root, *args))


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "w"
    shutil.copytree(REPO / "prompts", root / "prompts")
    return root


def test_push_diff_render_alias_history(root, tmp_path):
    first = ok_json(root, "prompts", "push", QA_V1)
    assert [(p["ref"], p["outcome"]) for p in first] == [("prompt/qa@1", "new")]
    pushed = ok_json(root, "prompts", "push", root / "prompts", "-m", "v2")
    assert {p["ref"]: p["outcome"] for p in pushed} == {
        "prompt/qa@2": "new", "prompt/rag-qa@1": "new", "prompt/summarize@1": "new", "chain/rag-qa@1": "new",
        "chain/rag-qa-tuned@1": "new"}
    again = ok_json(root, "prompts", "push", root / "prompts")
    assert {p["outcome"] for p in again} == {"unchanged"}  # unchanged files create no version

    diff = json.loads(ok(root, "prompts", "diff", "qa@1", "qa@2", "--format", "json"))
    assert (diff["a"], diff["b"], diff["changed"]) == ("qa@1", "qa@2", True)
    assert diff["variables_added"] == {"max_sentences": "int"}
    assert "+Answer in at most {{ max_sentences }} sentences." in " ".join(diff["template"])
    ok(root, "prompts", "diff", "qa@1", "qa@2", "--format", "html", "-o", tmp_path / "d.html")
    assert "<html" in (tmp_path / "d.html").read_text().lower()

    assert ok(root, "prompts", "alias", "qa", "production", "1", "-r", "safe").strip() == "prompt/qa@production -> 1"
    assert "Why?" in ok(root, "prompts", "render", "qa@production", "--var", "question=Why?")
    history = ok_json(root, "prompts", "history", "qa")
    assert [(e["event"], e.get("version") or e.get("to")) for e in history] == [("version", 1), ("version", 2), ("alias", 1)]
    assert [c["ref"] for c in ok_json(root, "chains", "list")] == ["chain/rag-qa@1", "chain/rag-qa-tuned@1"]
    assert [c["ref"] for c in ok_json(root, "prompts", "list")] == ["prompt/qa@2", "prompt/rag-qa@1", "prompt/summarize@1"]
    shown = json.loads(ok(root, "chains", "show", "rag-qa@1"))
    assert shown["plan"]["order"] == ["retrieve", "prompt", "generate", "answer"]


def test_push_prints_what_the_library_did_for_each_file_and_a_revert_becomes_latest(root):
    """Reverting qa.yaml to v1's content makes qa@3 (equal to @1), reported as such; `show` matches the file."""
    v2 = (root / "prompts" / "qa.yaml").read_text()
    shutil.copy(QA_V1, root / "prompts" / "qa.yaml")
    ok(root, "prompts", "push")
    (root / "prompts" / "qa.yaml").write_text(v2)
    ok(root, "prompts", "push")
    shutil.copy(QA_V1, root / "prompts" / "qa.yaml")
    lines = ok(root, "prompts", "push").splitlines()
    outcome = {line.split()[0]: line.split(None, 2)[2] for line in lines}
    assert outcome == {"prompt/qa@3": "reverts @1", "prompt/rag-qa@1": "unchanged",
                       "prompt/summarize@1": "unchanged", "chain/rag-qa@1": "unchanged",
                       "chain/rag-qa-tuned@1": "unchanged"}

    shown = ok(root, "prompts", "show", "qa")
    assert shown.splitlines()[0].startswith("# prompt/qa@3 ")
    file_spec, _ = load_prompt_spec(QA_V1)
    assert canonical_spec(load_prompt_spec("shown.yaml", text=shown)[0]) == canonical_spec(file_spec)
    assert ok(root, "prompts", "render", "qa", "--var", "question=Why?") == \
        ok(root, "prompts", "render", "qa@1", "--var", "question=Why?")


def test_errors_are_the_library_errors(root):
    ok(root, "prompts", "push")
    bad = invoke(root, "chains", "diff", "rag-qa@1", "rag-qa@99999999999999999999")
    assert isinstance(bad.exception, InvalidRef) and "99999999999999999999" in str(bad.exception)
    wrong_kind = invoke(root, "prompts", "show", "chain/rag-qa@1")
    assert isinstance(wrong_kind.exception, InvalidRef) and "expected a prompt ref" in str(wrong_kind.exception)


def test_bad_prompt_file_exits_2_with_one_line_naming_file_and_line_and_pushes_nothing(root):
    (root / "prompts" / "broken.yaml").write_text("name: broken\ntemplate: 'Hi {{ name }}'\nvariables: [unclosed\n")
    r = subprocess.run([sys.executable, "-m", "llmops.cli", "-w", str(root), "prompts", "push", str(root / "prompts")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: prompts/broken.yaml:4: malformed YAML") and len(r.stderr.splitlines()) == 1
    assert ok_json(root, "assets", "list") == []


def test_chains_invoke_prints_answer_and_run(tmp_path, tiny_llm_dir):
    import llmops
    from llmops.models import model_spec

    root = tmp_path / "w"
    ws = llmops.Workspace(root)
    ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    ws.close()
    (root / "prompts").mkdir(parents=True)
    (root / "prompts" / "ask.yaml").write_text(textwrap.dedent("""\
        name: ask
        template: "Q: {{ question }} A:"
        variables: {question: {type: str}}
        model_params: {max_tokens: 4}
        """))
    (root / "prompts" / "ask.chain.yaml").write_text(textwrap.dedent("""\
        kind: chain
        name: ask
        inputs: {question: str}
        steps:
          - {name: prompt, type: prompt, prompt: ask}
          - {name: generate, type: generate, model: tiny}
          - {name: answer, type: parse, parser: text}
        """))
    pushed = ok_json(root, "chains", "push", root / "prompts")
    assert {p["ref"] for p in pushed} == {"prompt/ask@1", "chain/ask@1"}
    out = ok_json(root, "chains", "invoke", "ask@1", "--input", "question=hello")
    assert out["tokens"]["completion"] > 0 and {"chain/ask@1", "prompt/ask@1", "model/tiny@1"} <= set(out["used"])
    assert out["output"] == out["output"].strip() and out["run_id"]
    bad = invoke(root, "chains", "invoke", "ask@1", "--input", "qestion=hello")
    assert isinstance(bad.exception, SpecError) and "unknown input 'qestion'" in str(bad.exception)
