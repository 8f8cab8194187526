"""`llmops quickstart`: the end-to-end tour on the embedded defaults, in a temp folder (or --keep DIR).

It copies the example workspace (`prompts/`, `rag/`) of this repository, then: logs a run and shows
lineage; pushes two versions of the `qa` prompt and diffs them; ingests the handbook with MiniLM into
a FAISS index; answers a question with the `rag-qa` chain on SmolLM2 and traces the answer back to
the exact versions that produced it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from llmops.errors import ConfigError
from llmops.lineage_view import render_tree
from llmops.workspace import Workspace

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
QA_V1 = HERE / "qa_v1.yaml"
QUESTION = "How does llmops publish a new index version?"


def example_workspace() -> Path:
    """The repository's example workspace (prompts/, rag/), next to the package in a checkout."""
    root = HERE.parents[1]
    if not (root / "prompts").is_dir() or not (root / "rag").is_dir():
        raise ConfigError(f"the example workspace (prompts/, rag/) is not next to {HERE.parent}; "
                          "run the quickstart from a checkout of the llmops repository")
    return root


def _store_tour(ws: Workspace, console: Console) -> None:
    console.rule("1. runs, assets and lineage")
    data = ws.registry.push("dataset", "qa-train", {"format": "jsonl", "rows": 2},
                            files={"train.jsonl": b'{"q": "What is llmops?", "a": "A workbench."}\n'
                                                  b'{"q": "Where are runs kept?", "a": "In one store."}\n'},
                            message="two rows to start")
    ws.registry.set_alias("dataset/qa-train", "production", data.version, reason="quickstart")
    with ws.start_run("quickstart-train", kind="custom") as run:
        ds = ws.registry.get("dataset/qa-train@production")
        run.log_params({"dataset": ds.ref, "epochs": 3})
        for step, loss in enumerate([2.1, 1.4, 0.9]):
            run.log_metric("loss", loss, step=step)
        report = ws.registry.push("dataset", "qa-report", {"final_loss": 0.9, "from": ds.ref})
    info = ws.get_run(run.id)
    console.print(f"run {info.id[:12]} {info.status}: params={info.params} metrics={info.metrics}")
    console.print(render_tree(ws.lineage(report.ref)))


def _prompts_tour(ws: Workspace, console: Console) -> None:
    from llmops.prompts import render_diff

    console.rule("2. prompts: two versions and their diff")
    v1 = ws.prompts.push_folder([QA_V1], message="first draft")
    pushed = ws.prompts.push_folder(ws.root / "prompts", message="quickstart")
    console.print("pushed " + ", ".join(v.ref for v in v1 + pushed))
    ws.prompts.set_alias("qa", "production", 2, reason="quickstart")
    console.print(render_diff(ws.prompts.diff("qa@1", "qa@2"), "text"), markup=False, highlight=False)


def _rag_tour(ws: Workspace, console: Console):
    console.rule("3. ingest the handbook (MiniLM embeddings, FAISS index)")
    result = ws.rag.ingest(ws.root / "rag" / "handbook.yaml", progress=True)
    console.print(f"{result.ref}: {result.counts} in {result.seconds:.1f} s")
    ws.registry.set_alias("index/handbook", "production", result.version, reason="quickstart")
    again = ws.rag.ingest(ws.root / "rag" / "handbook.yaml")
    console.print(f"re-ingest with nothing changed: published={again.published} "
                  f"(still {again.ref}), embedded {again.counts.get('embedded', 0)} chunks")
    return result


def _chain_tour(ws: Workspace, console: Console) -> None:
    console.rule("4. answer with the rag-qa chain on SmolLM2")
    chain = ws.chains.load("rag-qa")
    console.print(f"loaded {chain.ref}, pinned: {', '.join(chain.versions)}")
    result = chain.invoke_traced(chain.coerce_inputs({"question": QUESTION}))
    console.print(f"[bold]Q:[/bold] {QUESTION}")
    console.print(f"[bold]A:[/bold] {result.output}", highlight=False)
    for step, docs in result.retrieved.items():
        console.print(f"chunks used by step '{step}':")
        for doc in docs:
            console.print(f"  {doc['score']:.3f}  {doc['index']}  {doc['source']}#{doc['seq']}  {doc['text'][:60]!r}",
                          highlight=False)
    console.print(f"latency ms: {result.steps}  tokens: {result.tokens}")
    console.print(render_tree(ws.lineage(result.run_id)))


def run_quickstart(keep: Path | None = None) -> None:
    console = Console()
    source = example_workspace()
    with tempfile.TemporaryDirectory(prefix="llmops-quickstart-") as tmp:
        root = Path(keep) if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for folder in ("prompts", "rag"):
            shutil.copytree(source / folder, root / folder, dirs_exist_ok=True)
        ws = Workspace(root)
        console.print(f"workspace: {ws.root}")
        _store_tour(ws, console)
        _prompts_tour(ws, console)
        _rag_tour(ws, console)
        _chain_tour(ws, console)
        ws.close()
