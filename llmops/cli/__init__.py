"""The `llmops` command: a thin layer over the Python API. Errors print one line and exit 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from llmops.errors import LLMOpsError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="llmops: versioned prompts, chains, indexes, adapters and evals, linked by one run store.")

_state: dict = {"workspace": Path(".")}


def workspace():
    from llmops.workspace import Workspace

    return Workspace(_state["workspace"])


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def console():
    from rich.console import Console

    return Console()


@app.callback()
def _root(workspace_dir: Path = typer.Option(Path("."), "--workspace", "-w", help="Workspace folder.",
                                             envvar="LLMOPS_HOME")):
    _state["workspace"] = workspace_dir


@app.command()
def init():
    """Create `.llmops/` (store and artifacts) in the workspace folder."""
    ws = workspace()
    typer.echo(f"workspace ready at {ws.root} (store: {ws.engine.url.render_as_string(hide_password=True)})")


@app.command()
def quickstart(keep: Optional[Path] = typer.Option(None, help="Run in this folder instead of a temporary one.")):
    """Run the end-to-end tour on the embedded defaults."""
    from llmops.quickstart import run_quickstart

    run_quickstart(keep)


def _register() -> None:
    """Import the command modules; each adds its commands to `app`."""
    from llmops.cli import prompts, rag, store  # noqa: F401


def main() -> None:
    # our own bars show ingestion progress; the libraries' weight-loading bars are noise here
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _register()
    try:
        app()
    except LLMOpsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)

