"""`llmops replay ID`: re-run a served request through the versions it used; exit 0 same answer, 1 different."""

from __future__ import annotations

import json

import typer

from llmops.cli import app, echo_json, workspace


def _shown(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


@app.command()
def replay(request_id: str = typer.Argument(..., help="A served answer's id (chatcmpl-…, cmpl-…) or its run id."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Re-run a stored greedy (or seeded) request through the exact versions it used and compare the answers.

    Exit status: 0 identical, 1 different, 2 not replayable (sampled without a seed, failed, unknown id)."""
    from llmops.serve.replay import replay as run_replay

    result = run_replay(workspace(), request_id)
    if as_json:
        echo_json(result.to_dict())
    else:
        typer.echo(f"request {result.run_id} ({result.route}, model {_shown(result.model or '?')})")
        typer.echo(f"versions: {', '.join(result.versions) or 'none recorded'}")
        typer.echo(f"recorded: {_shown(result.old)}")
        typer.echo(f"replayed: {_shown(result.new)}")
        typer.echo("identical" if result.identical else "DIFFERENT: the same versions gave another answer")
    if not result.identical:
        raise typer.Exit(1)
