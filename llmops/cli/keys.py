"""`llmops keys create|list|revoke`: API keys of `llmops serve` (stored hashed; see llmops.serve.keys)."""

from __future__ import annotations

from typing import Optional

import typer

from llmops.cli import app, echo_json, workspace

keys_app = typer.Typer(no_args_is_help=True, help="API keys of `llmops serve`: create, list, revoke.")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(name: str = typer.Argument(..., help="A name to tell the key by, e.g. support-bot."),
                scope: Optional[list[str]] = typer.Option(
                    None, "--scope", help="Models or chains the key may use, as patterns: 'smollm2*', "
                                          "'chain/rag-qa' (repeatable; default: everything)."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Create a key and print its secret, once: it is stored only as a hash."""
    from llmops.serve.keys import create_key

    key, secret = create_key(workspace(create=True), name, scope or None)
    if as_json:
        return echo_json({**key.to_dict(), "secret": secret})
    typer.echo(secret)
    typer.echo(f"API key {key.name!r} created (scopes: {', '.join(key.scopes)}); the secret above is shown "
               "only now: keep it. The server requires a key from now on.", err=True)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Every key: name, prefix, scopes, created, revoked (never a secret)."""
    from llmops.serve.keys import list_keys

    keys = list_keys(workspace())
    if as_json:
        return echo_json([k.to_dict() for k in keys])
    if not keys:
        typer.echo("no API keys: the server answers without one (create one with `llmops keys create NAME`)")
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        typer.echo(f"{k.name:24} {k.prefix}…  {', '.join(k.scopes):32} {k.created_at:%Y-%m-%d %H:%M}  {state}")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(..., help="The key's name (see `llmops keys list`).")):
    """Revoke a key: requests with it are refused (401) from now on."""
    from llmops.serve.keys import revoke_key

    key = revoke_key(workspace(), name)
    typer.echo(f"API key {key.name!r} revoked")
