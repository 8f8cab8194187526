"""`llmops prompts …` and `llmops chains …` end to end in a subprocess."""

import json
import shutil
import textwrap
from pathlib import Path

from model_support import build_tiny_model
from test_cli import cli

REPO = Path(__file__).resolve().parent.parent


def test_push_diff_render_alias_history(tmp_path):
    root = tmp_path / "w"
    shutil.copytree(REPO / "prompts", root / "prompts")
    first = json.loads(cli("-w", str(root), "prompts", "push", str(REPO / "llmops/quickstart/qa_v1.yaml"), "--json").stdout)
    assert [p["ref"] for p in first] == ["prompt/qa@1"]
    pushed = json.loads(cli("-w", str(root), "prompts", "push", str(root / "prompts"), "-m", "v2", "--json").stdout)
    assert {p["ref"]: p["new"] for p in pushed} == {
        "prompt/qa@2": True, "prompt/rag-qa@1": True, "prompt/summarize@1": True, "chain/rag-qa@1": True}
    again = json.loads(cli("-w", str(root), "prompts", "push", str(root / "prompts"), "--json").stdout)
    assert not any(p["new"] for p in again)  # unchanged files create no version

    diff = json.loads(cli("-w", str(root), "prompts", "diff", "qa@1", "qa@2", "--format", "json").stdout)
    assert (diff["a"], diff["b"], diff["changed"]) == ("qa@1", "qa@2", True)
    assert diff["variables_added"] == {"max_sentences": "int"}
    assert "+Answer in at most {{ max_sentences }} sentences." in " ".join(diff["template"])
    html = cli("-w", str(root), "prompts", "diff", "qa@1", "qa@2", "--format", "html", "-o", str(tmp_path / "d.html"))
    assert html.returncode == 0 and "<html" in (tmp_path / "d.html").read_text().lower()

    assert cli("-w", str(root), "prompts", "alias", "qa", "production", "1", "-r", "safe").returncode == 0
    rendered = cli("-w", str(root), "prompts", "render", "qa@production", "--var", "question=Why?")
    assert rendered.returncode == 0 and "Why?" in rendered.stdout
    history = json.loads(cli("-w", str(root), "prompts", "history", "qa", "--json").stdout)
    assert [(e["event"], e.get("version") or e.get("to")) for e in history] == [("version", 1), ("version", 2), ("alias", 1)]
    assert [c["ref"] for c in json.loads(cli("-w", str(root), "chains", "list", "--json").stdout)] == ["chain/rag-qa@1"]
    shown = json.loads(cli("-w", str(root), "chains", "show", "rag-qa@1").stdout)
    assert shown["plan"]["order"] == ["retrieve", "prompt", "generate", "answer"]


def test_bad_prompt_file_names_file_and_line_and_pushes_nothing(tmp_path):
    root = tmp_path / "w"
    shutil.copytree(REPO / "prompts", root / "prompts")
    (root / "prompts" / "broken.yaml").write_text("name: broken\ntemplate: 'Hi {{ name }}'\nvariables: [unclosed\n")
    r = cli("-w", str(root), "prompts", "push", str(root / "prompts"))
    assert r.returncode == 2 and "broken.yaml:4: malformed YAML" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(cli("-w", str(root), "assets", "list", "--json").stdout) == []
    missing = cli("-w", str(root), "prompts", "render", "qa@1", "--var", "question=x")
    assert missing.returncode == 2 and "no asset version" in missing.stderr


def test_chains_invoke_prints_answer_and_run(tmp_path):
    import llmops
    from llmops.models import register_model

    root = tmp_path / "w"
    ws = llmops.Workspace(root)
    register_model(ws, "tiny", build_tiny_model(tmp_path / "tiny"))
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
    assert cli("-w", str(root), "chains", "push", str(root / "prompts")).returncode == 0
    r = cli("-w", str(root), "chains", "invoke", "ask@1", "--input", "question=hello", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tokens"]["completion"] > 0 and "chain/ask@1" in out["used"] and "prompt/ask@1" in out["used"]
    bad = cli("-w", str(root), "chains", "invoke", "ask@1", "--input", "qestion=hello")
    assert bad.returncode == 2 and "unknown input 'qestion'" in bad.stderr
