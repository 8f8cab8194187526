"""`llmops chains …`: thin wrappers over `ws.chains`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from llmops.cli import app, echo_json, workspace

chains_app = typer.Typer(no_args_is_help=True, help="Versioned chains: push, show, diff, invoke.")
app.add_typer(chains_app, name="chains")


@chains_app.command("push")
def chains_push(paths: Optional[list[Path]] = typer.Argument(None, help="Files or folders (default: prompts/)."),
                message: Optional[str] = typer.Option(None, "-m", "--message"),
                as_json: bool = typer.Option(False, "--json")):
    """Validate and push the folder's chains with the prompts beside them, all or nothing
    (the same push as `llmops prompts push`)."""
    from llmops.cli.prompts import push

    push(paths, message, None, as_json)


@chains_app.command("list")
def chains_list(as_json: bool = typer.Option(False, "--json")):
    """The latest version of every chain."""
    from llmops.cli.prompts import list_versions

    list_versions(workspace().chains.list(), as_json)


@chains_app.command("show")
def chains_show(ref: str = typer.Argument(..., help="NAME[@VERSION|@ALIAS]")):
    """A chain version's spec and run plan."""
    chain = workspace().chains.get(ref)
    echo_json({"ref": chain.ref, "digest": chain.av.digest, "spec": chain.av.spec,
               "plan": {"order": list(chain.plan.order), "wiring": chain.plan.wiring, "output": chain.plan.output}})


@chains_app.command("diff")
def chains_diff(a: str = typer.Argument(..., help="NAME@A"), b: str = typer.Argument(..., help="NAME@B")):
    """A structured diff of two chain versions' specs."""
    echo_json(workspace().chains.diff(a, b))


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
    result = workspace().chains.invoke_traced(ref, inputs)
    if as_json:
        return echo_json(result.to_dict())
    typer.echo(result.output if isinstance(result.output, str) else json.dumps(result.output, indent=2))
    typer.echo(f"\nrun {result.run_id}  used: {', '.join(result.used)}", err=True)
