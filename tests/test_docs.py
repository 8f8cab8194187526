"""The docs (README.md and docs/*.md) stay true: links resolve, commands and options exist, make targets
exist, generated pages match the code, and the Python API page's examples run as written.

The checker is `tests/docs_support.py`; the generated pages come from `python -m llmops.docsgen`.
"""

from __future__ import annotations

import shutil

import pytest
from docs_support import REPO, Page, check, doc_pages

from llmops import docsgen


def test_links_commands_and_make_targets_in_the_docs_are_real():
    problems = check(doc_pages())
    assert not problems, "\n".join(problems)


def test_generated_pages_are_current():
    stale = docsgen.stale()
    assert not stale, f"{', '.join('docs/' + s for s in stale)} out of date: run `{docsgen.GENERATOR}` and commit"


def test_generator_rewrites_only_what_changed(tmp_path):
    assert sorted(p.name for p in docsgen.write(tmp_path)) == ["cli.md", "http-api.md"]
    assert docsgen.stale(tmp_path) == [] and docsgen.write(tmp_path) == []
    (tmp_path / "cli.md").write_text((tmp_path / "cli.md").read_text().replace("--json", "--as-json"))
    assert docsgen.stale(tmp_path) == ["cli.md"]


def test_every_docs_page_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in sorted((REPO / "docs").glob("*.md")) if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md links no {missing}"


# the checker, on a small bad doc ----------------------------------------------------------------------------
BAD = """\
# Title

## Two words

See [the other page](other.md), [a section](other.md#real-heading), [this](#two-words),
[gone](missing.md), [bad anchor](other.md#nope) and [a site](https://example.com).

Run `llmops runs lst` or `llmops runs list --json`, then `make test`.

```bash
llmops -w ws runs list --limit 5
llmops prompts push --force   # a stale option
torchrun --standalone --nproc_per_node 2 -m llmops.cli finetune run job.yaml --resum
make nope
```

```python
from llmops.evals import evaluate, no_such_name
```
"""


@pytest.fixture
def bad_doc(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Real heading\n")
    (tmp_path / "Makefile").write_text(".PHONY: test\ntest: venv\n\tpytest\n")
    page = tmp_path / "docs" / "bad.md"
    page.write_text(BAD)
    return page


def test_checker_names_file_line_and_fix(bad_doc, tmp_path):
    problems = check([bad_doc], root=tmp_path)
    assert problems == [
        "docs/bad.md:6: link 'missing.md': no file 'missing.md' next to bad.md; fix the path or create the page",
        "docs/bad.md:6: link 'other.md#nope': other.md has no heading with the anchor #nope; link one of its headings",
        "docs/bad.md:8: `llmops runs lst`: `llmops runs` has no command 'lst' (list|search|show)",
        "docs/bad.md:12: `llmops prompts push --force`: `llmops prompts push` has no option --force "
        "(--fork, --json, -m, --message)",
        "docs/bad.md:13: `llmops finetune run job.yaml --resum`: `llmops finetune run` has no option --resum "
        "(--device, --resume)",
        "docs/bad.md:14: `make nope`: the Makefile has no target 'nope' (test)",
        "docs/bad.md:18: llmops.evals has no no_such_name",
    ]


def test_checker_slugs_headings_as_github_does(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# `llmops runs list`\n## POST /v1/chains/{name}/invoke\n## Why? Because!\n## Why? Because!\n"
                    "```bash\n# not a heading\n```\n")
    assert Page.read(page).anchors() == {"llmops-runs-list", "post-v1chainsnameinvoke", "why-because",
                                         "why-because-1"}


# the Python API page's examples -----------------------------------------------------------------------------
def python_examples(*kinds: str) -> list[str]:
    """The bodies of docs/python-api.md's ```python blocks whose info string names one of `kinds`."""
    page = Page.read(REPO / "docs" / "python-api.md")
    return [b.body for b in page.blocks if b.lang == "python" and set(b.info) & set(kinds)]


@pytest.fixture
def example(tmp_path, monkeypatch):
    """A copy of the example workspace (prompts/, rag/, evals/, finetune/) as the current folder."""
    for folder in ("prompts", "rag", "evals", "finetune"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMOPS_HOME", raising=False)
    return tmp_path


def run_examples(bodies: list[str]) -> dict:
    ns: dict = {}
    try:
        for body in bodies:
            exec(compile(body, "docs/python-api.md", "exec"), ns)
    finally:
        if "ws" in ns:
            ns["ws"].close()
    return ns


def test_python_api_examples_run(example):
    assert python_examples("test"), "docs/python-api.md marks no ```python test block"
    ns = run_examples(python_examples("test"))
    assert ns["qa"].ref == "prompt/qa@1" and "chain/rag-qa" in ns["names"]


@pytest.mark.integration
def test_python_api_model_examples_run(example):
    assert python_examples("test-integration"), "docs/python-api.md marks no ```python test-integration block"
    run_examples(python_examples("test", "test-integration"))
