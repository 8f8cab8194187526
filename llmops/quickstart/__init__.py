"""`llmops quickstart [--fast] [--dir DIR]`: the whole loop on the embedded defaults, step by step.

It copies this repository's example workspace (`prompts/`, `rag/`, `finetune/`, `evals/`) into a new
folder (DIR, kept; else a temporary one, removed at the end), then:

1. pushes two versions of the `qa` prompt and diffs them;
2. ingests the handbook into a FAISS index, and re-ingests it unchanged (nothing published);
3. trains the LoRA job `finetune/handbook-qa.yaml` (`--fast`: the same job cut to a few steps);
4. runs the suite `evals/handbook-adapter.yaml`, the adapter against the base model on the held-out
   questions (`--fast`: its first rows, shorter answers), and writes its reports;
5. moves `adapter/handbook-qa@production` only if every gate passed (inside the eval run, which the
   alias event records), and says which gates failed otherwise;
6. starts `llmops serve` in the background and asks one question with the `openai` client: the tuned
   chain when the adapter was promoted, else the base chain `rag-qa` (an unpromoted adapter is never
   served: a bare adapter name would fall back to its latest version);
7. posts feedback on the answer; 8. prints the answer's lineage; 9. prints the web UI's addresses.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from llmops.errors import ConfigError

__all__ = ["check_dir", "example_workspace", "run_quickstart"]

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
EXAMPLE_FOLDERS = ("prompts", "rag", "finetune", "evals")


def example_workspace() -> Path:
    """The repository's example workspace, next to the package in a checkout."""
    root = HERE.parents[1]
    missing = [f for f in EXAMPLE_FOLDERS if not (root / f).is_dir()]
    if missing:
        raise ConfigError(f"the example workspace ({', '.join(f + '/' for f in missing)}) is not next to "
                          f"{HERE.parent}; run the quickstart from a checkout of the llmops repository")
    return root


def check_dir(path: Path) -> Path:
    """The absolute folder `--dir` names, if the quickstart may build its workspace there: a new folder or an
    empty one. Refuses (ConfigError, nothing created) a file, a non-empty folder or an existing workspace."""
    p = Path(path).expanduser().absolute()
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"--dir {p} is a file, not a folder; give a new or empty folder")
        if (p / ".llmops").exists():
            raise ConfigError(f"--dir {p} already holds an llmops workspace; the quickstart builds a fresh one: "
                              f"give a new folder, or browse this one with `llmops -w {p} ui`")
        if any(p.iterdir()):
            raise ConfigError(f"--dir {p} is not empty; give a new or empty folder (the quickstart copies the "
                              "example workspace into it)")
        return p
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--dir {p}: {parent} is a file, not a folder; give a path under a folder")
    return p


def run_quickstart(directory: Path | None = None, *, fast: bool = False, console: Console | None = None) -> None:
    """Run the loop (see the module docstring) in `directory` (kept) or a temporary folder (removed)."""
    from llmops.quickstart import steps
    from llmops.workspace import Workspace

    started = time.perf_counter()
    console = console or Console()
    source = example_workspace()
    target = check_dir(directory) if directory is not None else None
    with tempfile.TemporaryDirectory(prefix="llmops-quickstart-") as tmp:
        root = target or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for folder in EXAMPLE_FOLDERS:
            shutil.copytree(source / folder, root / folder, dirs_exist_ok=True)
        with Workspace(root) as ws:
            console.print(f"workspace: {ws.root}" + (" (kept)" if target else " (temporary)")
                          + (" --fast" if fast else ""))
            took: dict[str, float] = {}

            def timed(name: str, step, *args):
                start = time.perf_counter()
                try:
                    return step(*args)
                finally:
                    took[name] = time.perf_counter() - start

            timed("prompts", steps.prompts, ws, console)
            timed("ingest", steps.ingest, ws, console)
            job = timed("finetune", steps.finetune, ws, console, fast)
            result, _ = timed("eval", steps.evaluate, ws, console, job.adapter, fast)
            promoted = steps.gate(ws, console, result, job.adapter, fast)
            answer, _ = timed("serve", steps.serve_and_ask, ws, console, promoted)
            timed("lineage", steps.lineage, ws, console, answer, job.adapter)
            steps.addresses(console, ws.root, result["run_id"], answer.run_id, kept=target is not None)
            console.print(f"done in {time.perf_counter() - started:.0f} s: "
                          + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()), highlight=False)
