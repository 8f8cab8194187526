"""`llmops quickstart`: the end-to-end tour on the embedded defaults, in a temp folder (or --keep DIR)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from rich.console import Console

from llmops.lineage_view import render_tree
from llmops.workspace import Workspace

log = logging.getLogger(__name__)


def _store_tour(ws: Workspace, console: Console) -> str:
    """Log a run that uses one asset and produces another; return the produced ref."""
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
    console.print(f"pushed {data.ref} (alias production) and {report.ref}")
    console.print(render_tree(ws.lineage(report.ref)))
    return report.ref


def run_quickstart(keep: Path | None = None) -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="llmops-quickstart-") as tmp:
        root = Path(keep) if keep else Path(tmp)
        ws = Workspace(root)
        console.print(f"workspace: {ws.root}")
        _store_tour(ws, console)
        ws.close()
