"""`llmops prompts …`: thin wrappers over `ws.prompts`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from llmops.cli import app, echo_json, workspace

prompts_app = typer.Typer(no_args_is_help=True, help="Versioned prompts: push, render, diff, alias, history.")
app.add_typer(prompts_app, name="prompts")


def push(paths: Optional[list[Path]], message: Optional[str], fork: Optional[list[str]], as_json: bool) -> None:
    """Push the folder (prompts and chains, one transaction) and print what each file did, as the
    library reports it: `new`, `unchanged` or `reverts @N`."""
    from llmops.chains.folder import describe_outcome

    pushed = workspace(create=True).prompts.push_folder(paths or None, message=message, fork=fork or ())
    if as_json:
        return echo_json([{"ref": v.ref, "digest": v.digest, "outcome": v.outcome, "same_as": v.same_as}
                          for v in pushed])
    for v in pushed:
        typer.echo(f"{v.ref:32} {v.digest[:12]}  {describe_outcome(v)}")


def list_versions(versions: list, as_json: bool) -> None:
    if as_json:
        return echo_json([v.to_dict() for v in versions])
    for v in versions:
        typer.echo(f"{v.ref:32} {v.digest[:12]}  {v.created_at:%Y-%m-%d %H:%M}  {v.message or ''}")


@prompts_app.command("push")
def prompts_push(paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders (default: prompts/)."),
                 message: Optional[str] = typer.Option(None, "-m", "--message"),
                 fork: Optional[list[str]] = typer.Option(None, "--fork", help="NAME@VERSION to fork from."),
                 as_json: bool = typer.Option(False, "--json")):
    """Validate and push every changed prompt and chain of the folder, all or nothing."""
    push(paths, message, fork, as_json)


@prompts_app.command("list")
def prompts_list(as_json: bool = typer.Option(False, "--json")):
    """The latest version of every prompt."""
    list_versions(workspace().prompts.list(), as_json)


@prompts_app.command("show")
def prompts_show(ref: str = typer.Argument(..., help="NAME[@VERSION|@ALIAS]")):
    """A prompt version's YAML."""
    prompt = workspace().prompts.get(ref)
    typer.echo(f"# {prompt.ref}  digest {prompt.digest}")
    typer.echo(prompt.to_yaml())


@prompts_app.command("render")
def prompts_render(ref: str = typer.Argument(..., help="NAME@REF"),
                   var: Optional[list[str]] = typer.Option(None, "--var", help="KEY=VALUE, typed per the prompt.")):
    """Render a prompt version with variables (strict: missing or unknown names are errors)."""
    from llmops.prompts import parse_var_pairs

    prompt = workspace().prompts.get(ref)
    out = prompt.render(**parse_var_pairs(prompt, var or []))
    typer.echo(out if isinstance(out, str) else json.dumps(out, indent=2, ensure_ascii=False))


@prompts_app.command("alias")
def prompts_alias(name: str, alias: str, version: str,
                  reason: Optional[str] = typer.Option(None, "--reason", "-r")):
    """Point NAME@ALIAS at VERSION (recorded in the history)."""
    av = workspace().prompts.set_alias(name, alias, version, reason=reason)
    typer.echo(f"prompt/{av.name}@{alias} -> {av.version}")


@prompts_app.command("history")
def prompts_history(name: str, as_json: bool = typer.Option(False, "--json")):
    """Every version (with its parent) and every alias move of a prompt."""
    from llmops.cli.store import print_history

    print_history(workspace().prompts.history(name), as_json)


@prompts_app.command("diff")
def prompts_diff(a: str = typer.Argument(..., help="NAME@A (or a YAML file)"),
                 b: str = typer.Argument(..., help="NAME@B (or a YAML file)"),
                 format: str = typer.Option("text", "--format", "-f", help="text, markdown, json or html"),
                 output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file."),
                 suite: Optional[Path] = typer.Option(None, "--suite", help="Also run this eval suite on B against A: "
                                                      "metric deltas with intervals, examples that changed most.")):
    """What changed between two prompt versions: template, variables, model params."""
    from llmops.prompts import render_diff

    text = render_diff(workspace().prompts.diff(a, b), format)
    if suite is not None:
        from llmops.evals import evaluate
        from llmops.evals.compare import evidence_text

        text += "\n\n" + evidence_text(evaluate(workspace(create=True), suite, target=b, baseline=a))
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")
    else:
        typer.echo(text)
