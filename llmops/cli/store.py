"""`llmops runs …`, `llmops assets …` and `llmops lineage`: reading commands, plus moving an alias.

Arguments are checked by the library (refs, versions, filters, limits) and every mistake is an
LLMOpsError naming the option, which the CLI prints as one `error:` line with exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmops.cli import app, console, echo_json, workspace
from llmops.errors import FilterSyntaxError, InvalidValue

runs_app = typer.Typer(no_args_is_help=True, help="Inspect and search runs.")
assets_app = typer.Typer(no_args_is_help=True, help="Inspect asset versions and move aliases.")
app.add_typer(runs_app, name="runs")
app.add_typer(assets_app, name="assets")

MAX_LIMIT = 2**31 - 1


def _limit(value: Optional[int]) -> Optional[int]:
    if value is not None and not 1 <= value <= MAX_LIMIT:
        raise InvalidValue(f"--limit {value} is out of range: give a whole number 1..{MAX_LIMIT}")
    return value


def _cell(value) -> "object":
    """User text as a table cell: never read as rich markup, control characters shown as '?'."""
    from rich.text import Text

    return Text(_plain(value))


def _plain(text) -> str:
    """User text on a plain line: control characters (terminal escapes) shown as '?'."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def _runs_table(runs) -> None:
    from rich.table import Table

    table = Table("id", "name", "kind", "status", "started", "metrics")
    for r in runs:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items())[:4])
        table.add_row(r.id[:12], _cell(r.name), _cell(r.kind), r.state, r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                      _cell(metrics))
    console().print(table)


@runs_app.command("list")
def runs_list(limit: int = typer.Option(20, help="How many runs, newest first."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List recent runs."""
    runs = workspace().search_runs(limit=_limit(limit))
    echo_json([r.to_dict() for r in runs]) if as_json else _runs_table(runs)


@runs_app.command("search")
def runs_search(filter: str = typer.Argument(..., help="e.g. \"metrics.acc > 0.9 AND params.lr = '1e-3'\""),
                order_by: Optional[list[str]] = typer.Option(None, "--order-by", help="e.g. 'metrics.acc DESC'"),
                limit: Optional[int] = typer.Option(None, help="At most this many runs."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Search runs with the filter grammar over metrics., params., tags. and attributes."""
    if not filter.strip():
        raise FilterSyntaxError("the filter is empty: write one like \"metrics.acc > 0.9\" "
                                "(`runs list` lists every run)", filter, 1)
    runs = workspace().search_runs(filter, order_by=order_by, limit=_limit(limit))
    echo_json([r.to_dict() for r in runs]) if as_json else _runs_table(runs)


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(..., help="A run id, a unique prefix of at least 6 characters, "
                                                    "or a served answer's id (chatcmpl-…).")):
    """Show one run as JSON: params, latest metrics, tags, artifacts."""
    echo_json(workspace().get_run(run_id).to_dict())


# assets -------------------------------------------------------------------------
@assets_app.command("list")
def assets_list(kind: Optional[str] = typer.Option(None, help="Only this kind (prompt, chain, index, …)."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """The latest version of every asset."""
    from rich.table import Table

    from llmops.store.refs import check_kind

    if kind is not None:
        check_kind(kind)
    versions = workspace().registry.list(kind)
    if as_json:
        return echo_json([v.to_dict() for v in versions])
    table = Table("ref", "digest", "created", "by", "message")
    for v in versions:
        table.add_row(v.ref, v.digest[:12], v.created_at.strftime("%Y-%m-%d %H:%M:%S"), _cell(v.created_by),
                      _cell(v.message or ""))
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
            same = f" (same as @{e['same_as']})" if e.get("same_as") else ""
            typer.echo(_plain(f"{when}  @{e['version']}{parent}{same}  {e['digest'][:12]}  {e['who']}  "
                              f"{e['message'] or ''}"))
        else:
            typer.echo(_plain(f"{when}  alias {e['alias']}: {e['from'] or '-'} -> {e['to']}  {e['who']}  "
                              f"{e['reason'] or ''}"))


# ignore_unknown_options: a VERSION of `-1` reaches the version check (and its message) instead of
# being taken for an option
@assets_app.command("alias", context_settings={"ignore_unknown_options": True})
def assets_alias(ref: str = typer.Argument(..., help="kind/name"), alias: str = typer.Argument(...),
                 version: str = typer.Argument(..., help="A version number, 1 or more."),
                 reason: Optional[str] = typer.Option(None, "--reason", "-r"),
                 require_suite: Optional[Path] = typer.Option(
                     None, "--require-suite", help="Move only if this eval suite passes for VERSION against the "
                                                   "version ALIAS points at now (exit 1 if it fails).")):
    """Point kind/name@ALIAS at VERSION (recorded in the alias history)."""
    from llmops.store.refs import parse_version

    if require_suite is not None:
        from llmops.evals import promote

        result = promote(workspace(create=True), ref, alias, version, require_suite, progress=True)
        failed = [g["name"] for g in result["gates"] if not g["passed"]]
        if failed:
            typer.echo(f"{ref}@{alias} not moved: suite {result['suite']['name']} failed "
                       f"({'; '.join(failed)}); eval run {result['run_id']}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{ref}@{alias} -> {parse_version(version)} (eval run {result['run_id']} passed)")
        return
    av = workspace().registry.set_alias(ref, alias, parse_version(version), reason=reason)
    typer.echo(f"{av.kind}/{av.name}@{alias} -> {av.version}")


@app.command()
def lineage(node: str = typer.Argument(..., help="A run id (or unique prefix), a served answer's id "
                                                 "(chatcmpl-…) or an asset ref kind/name@ref."),
            depth: Optional[int] = typer.Option(None, help="Stop after this many hops (0 or more)."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Walk lineage from a run or a version: what went into it, and what was made from it."""
    from llmops.lineage_view import render_tree
    if depth is not None and depth < 0:
        raise InvalidValue(f"--depth {depth} is not allowed: give 0 or more hops (or leave it out for all)")
    graph = workspace().lineage(node, depth=depth)
    echo_json(graph.to_dict()) if as_json else console().print(render_tree(graph))
