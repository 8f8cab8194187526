"""`llmops prompts …` and `llmops chains …`: thin wrappers over `ws.prompts` and `ws.chains`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from llmops.cli import app, echo_json, workspace
from llmops.cli.store import print_history

prompts_app = typer.Typer(no_args_is_help=True, help="Versioned prompts: push, render, diff, alias, history.")
chains_app = typer.Typer(no_args_is_help=True, help="Versioned chains: push, show, diff, invoke.")
app.add_typer(prompts_app, name="prompts")
app.add_typer(chains_app, name="chains")


def _push(paths: Optional[list[Path]], message: Optional[str], fork: Optional[list[str]], as_json: bool) -> None:
    ws = workspace()
    before = {v.ref for v in ws.registry.list()}
    pushed = ws.prompts.push_folder(paths or None, message=message, fork=fork or ())
    if as_json:
        return echo_json([{"ref": v.ref, "digest": v.digest, "new": v.ref not in before} for v in pushed])
    for v in pushed:
        typer.echo(f"{v.ref:32} {v.digest[:12]}  {'new' if v.ref not in before else 'unchanged'}")


@prompts_app.command("push")
def prompts_push(paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders (default: prompts/)."),
                 message: Optional[str] = typer.Option(None, "-m", "--message"),
                 fork: Optional[list[str]] = typer.Option(None, "--fork", help="NAME@VERSION to fork from."),
                 as_json: bool = typer.Option(False, "--json")):
    """Validate and push every changed prompt and chain of the folder, all or nothing."""
    _push(paths, message, fork, as_json)


def _list(kind: str, as_json: bool) -> None:
    versions = workspace().prompts.list(kind)
    if as_json:
        return echo_json([v.to_dict() for v in versions])
    for v in versions:
        typer.echo(f"{v.ref:32} {v.digest[:12]}  {v.created_at:%Y-%m-%d %H:%M}  {v.message or ''}")


@prompts_app.command("list")
def prompts_list(as_json: bool = typer.Option(False, "--json")):
    """The latest version of every prompt."""
    _list("prompt", as_json)


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
def prompts_alias(name: str, alias: str, version: int, reason: Optional[str] = typer.Option(None, "--reason", "-r")):
    """Point NAME@ALIAS at VERSION (recorded in the history)."""
    av = workspace().prompts.set_alias(name, alias, version, reason=reason)
    typer.echo(f"prompt/{av.name}@{alias} -> {av.version}")


@prompts_app.command("history")
def prompts_history(name: str, as_json: bool = typer.Option(False, "--json")):
    """Every version (with its parent) and every alias move of a prompt."""
    print_history(workspace().prompts.history(name), as_json)


@prompts_app.command("diff")
def prompts_diff(a: str = typer.Argument(..., help="NAME@A (or a YAML file)"),
                 b: str = typer.Argument(..., help="NAME@B (or a YAML file)"),
                 format: str = typer.Option("text", "--format", "-f", help="text, markdown, json or html"),
                 output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file.")):
    """What changed between two prompt versions: template, variables, model params."""
    from llmops.prompts import render_diff

    text = render_diff(workspace().prompts.diff(a, b), format)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")
    else:
        typer.echo(text)


# chains -----------------------------------------------------------------------------
@chains_app.command("push")
def chains_push(paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders (default: prompts/)."),
                message: Optional[str] = typer.Option(None, "-m", "--message"),
                as_json: bool = typer.Option(False, "--json")):
    """Validate and push the folder's chains (with the prompts they use), all or nothing."""
    _push(paths, message, None, as_json)


@chains_app.command("list")
def chains_list(as_json: bool = typer.Option(False, "--json")):
    """The latest version of every chain."""
    _list("chain", as_json)


@chains_app.command("show")
def chains_show(ref: str = typer.Argument(..., help="NAME[@VERSION|@ALIAS]")):
    """A chain version's spec and run plan."""
    av, _spec, plan = workspace().prompts.chain(ref, check_external=False)
    echo_json({"ref": av.ref, "digest": av.digest, "spec": av.spec,
               "plan": {"order": list(plan.order), "wiring": plan.wiring, "output": plan.output}})


@chains_app.command("diff")
def chains_diff(a: str, b: str):
    """A structured diff of two chain versions' specs."""
    from llmops.store.refs import parse_ref

    refs = [x if "/" in x else f"chain/{x}" for x in (a, b)]
    for x in refs:
        parse_ref(x)
    echo_json(workspace().registry.diff(*refs))


@chains_app.command("invoke")
def chains_invoke(ref: str = typer.Argument(..., help="NAME@REF"),
                  input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="KEY=VALUE"),
                  as_json: bool = typer.Option(False, "--json")):
    """Run a chain once; prints the output, the run id and the exact versions it used."""
    from llmops.errors import SpecError

    inputs = {}
    for pair in input or []:
        key, eq, value = pair.partition("=")
        if not eq:
            raise SpecError(f"--input {pair!r} is not KEY=VALUE", fix="write --input question='What is X?'")
        inputs[key] = value
    ws = workspace()
    result = ws.chains.invoke_traced(ref, inputs)
    if as_json:
        return echo_json(result.to_dict())
    typer.echo(result.output if isinstance(result.output, str) else json.dumps(result.output, indent=2))
    typer.echo(f"\nrun {result.run_id}  used: {', '.join(result.used)}", err=True)
