"""`llmops runs …`, `llmops assets …` and `llmops lineage`."""

from __future__ import annotations

from typing import Optional

import typer

from llmops.cli import app, console, echo_json, workspace

runs_app = typer.Typer(no_args_is_help=True, help="Inspect and search runs.")
assets_app = typer.Typer(no_args_is_help=True, help="Inspect asset versions and move aliases.")
app.add_typer(runs_app, name="runs")
app.add_typer(assets_app, name="assets")


def _runs_table(runs) -> None:
    from rich.table import Table

    table = Table("id", "name", "kind", "status", "started", "metrics")
    for r in runs:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items())[:4])
        table.add_row(r.id[:12], r.name, r.kind, r.state, r.started_at.strftime("%Y-%m-%d %H:%M:%S"), metrics)
    console().print(table)


@runs_app.command("list")
def runs_list(limit: int = typer.Option(20, help="How many runs, newest first."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List recent runs."""
    runs = workspace().search_runs(limit=limit)
    echo_json([r.to_dict() for r in runs]) if as_json else _runs_table(runs)


@runs_app.command("search")
def runs_search(filter: str = typer.Argument(..., help="e.g. \"metrics.acc > 0.9 AND params.lr = '1e-3'\""),
                order_by: Optional[list[str]] = typer.Option(None, "--order-by", help="e.g. 'metrics.acc DESC'"),
                limit: Optional[int] = typer.Option(None),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Search runs with the filter grammar over metrics., params., tags. and attributes."""
    runs = workspace().search_runs(filter, order_by=order_by, limit=limit)
    echo_json([r.to_dict() for r in runs]) if as_json else _runs_table(runs)


@runs_app.command("show")
def runs_show(run_id: str):
    """Show one run as JSON: params, latest metrics, tags, artifacts."""
    echo_json(workspace().get_run(run_id).to_dict())


# assets -------------------------------------------------------------------------
@assets_app.command("list")
def assets_list(kind: Optional[str] = typer.Option(None, help="Only this kind (prompt, chain, index, …)."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """The latest version of every asset."""
    from rich.table import Table

    versions = workspace().registry.list(kind)
    if as_json:
        return echo_json([v.to_dict() for v in versions])
    table = Table("ref", "digest", "created", "by", "message")
    for v in versions:
        table.add_row(v.ref, v.digest[:12], v.created_at.strftime("%Y-%m-%d %H:%M:%S"), v.created_by, v.message or "")
    console().print(table)


@assets_app.command("show")
def assets_show(ref: str = typer.Argument(..., help="kind/name[@version|@alias]")):
    """Show one asset version (spec, files, digest)."""
    echo_json(workspace().registry.get(ref, record=False).to_dict())


@assets_app.command("history")
def assets_history(ref: str = typer.Argument(..., help="kind/name"),
                   as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Every version and alias move of one asset."""
    print_history(workspace().registry.history(ref), as_json)


def print_history(events: list[dict], as_json: bool) -> None:
    """Versions (with the version each was derived from) and alias moves, oldest first."""
    if as_json:
        return echo_json(events)
    for e in events:
        when = e["at"].strftime("%Y-%m-%d %H:%M:%S")
        if e["event"] == "version":
            parent = f" (from @{e['parent']})" if e["parent"] else ""
            typer.echo(f"{when}  @{e['version']}{parent}  {e['digest'][:12]}  {e['who']}  {e['message'] or ''}")
        else:
            typer.echo(f"{when}  alias {e['alias']}: {e['from'] or '-'} -> {e['to']}  {e['who']}  {e['reason'] or ''}")


@assets_app.command("alias")
def assets_alias(ref: str = typer.Argument(..., help="kind/name"), alias: str = typer.Argument(...),
                 version: int = typer.Argument(...), reason: Optional[str] = typer.Option(None, "--reason", "-r")):
    """Point kind/name@ALIAS at VERSION (recorded in the alias history)."""
    av = workspace().registry.set_alias(ref, alias, version, reason=reason)
    typer.echo(f"{av.kind}/{av.name}@{alias} -> {av.version}")


@app.command()
def lineage(node: str = typer.Argument(..., help="A run id (or unique prefix) or an asset ref kind/name@ref."),
            depth: Optional[int] = typer.Option(None, help="Stop after this many hops."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Walk lineage from a run or a version: what went into it, and what was made from it."""
    from llmops.lineage_view import render_tree

    graph = workspace().lineage(node, depth=depth)
    echo_json(graph.to_dict()) if as_json else console().print(render_tree(graph))
