"""The README's examples, run as written and in order, in a copy of this repository's example workspace.

README blocks preceded by `<!-- readme-test: fast -->` run here in the default suite; those marked
`integration` (they load MiniLM and SmolLM2) run after them with `-m integration`. Shell lines go
through `llmops.cli.run`, what the installed `llmops` command does; `RUN_ID` stands for the run the
first Python block started.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from llmops.cli import run

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- readme-test: (fast|integration) -->\n```(bash|python)\n(.*?)```", re.S)


def readme_blocks(*kinds: str) -> list[tuple[str, str]]:
    return [(lang, body) for kind, lang, body in BLOCK.findall((REPO / "README.md").read_text()) if kind in kinds]


@pytest.fixture
def example(tmp_path, monkeypatch):
    """A copy of the example workspace (prompts/, rag/, the quickstart's first qa prompt) as the current folder."""
    for folder in ("prompts", "rag"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    (tmp_path / "llmops" / "quickstart").mkdir(parents=True)
    shutil.copy(REPO / "llmops" / "quickstart" / "qa_v1.yaml", tmp_path / "llmops" / "quickstart")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMOPS_HOME", raising=False)
    return tmp_path


def run_blocks(blocks, capsys) -> tuple[dict, dict[str, str]]:
    """Run each block in order; every shell line must exit 0. Returns the Python namespace and each line's stdout."""
    ns: dict = {}
    outputs: dict[str, str] = {}
    try:
        for lang, body in blocks:
            if lang == "python":
                exec(compile(body, "README.md", "exec"), ns)
                continue
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                if not words:
                    continue
                assert words[0] == "llmops", line
                words = [ns["run"].id if w == "RUN_ID" else w for w in words[1:]]
                capsys.readouterr()
                code = run(words)
                out, err = capsys.readouterr()
                assert code == 0, f"README: {line}\n{err}"
                outputs[line.split("#")[0].strip()] = out
    finally:
        if "ws" in ns:
            ns["ws"].close()
    return ns, outputs


def test_readme_marks_its_examples():
    assert [lang for lang, _ in readme_blocks("fast")] == ["python", "bash", "bash", "python"]
    assert [lang for lang, _ in readme_blocks("integration")] == ["bash", "python", "bash"]


def test_fast_examples_run_as_written(example, capsys):
    ns, out = run_blocks(readme_blocks("fast"), capsys)
    assert [r.id for r in ns["best"]] == [ns["run"].id]  # the search finds the run the tour logged
    assert json.loads(out["llmops assets show adapter/qa-lora@production"])["ref"] == "adapter/qa-lora@1"
    assert json.loads(out["llmops runs show RUN_ID"])["name"] == "train"
    assert "used dataset/qa-train@1" in out["llmops lineage adapter/qa-lora@1"]
    assert "How are runs stored?" in out['llmops prompts render qa@production --var question="How are runs stored?"']
    assert "<html" in (example / "diff.html").read_text().lower()


@pytest.mark.integration
def test_integration_examples_run_as_written(example, capsys):
    ns, out = run_blocks(readme_blocks("fast", "integration"), capsys)
    assert ns["answer"].run_id
    hits = out['llmops rag query handbook@production "how are aliases audited?"']
    assert hits.strip(), "the query printed no chunks"
