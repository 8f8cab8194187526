"""The generated reference pages: `docs/cli.md` from the Typer app, `docs/http-api.md` from the server's OpenAPI schema.

    python -m llmops.docsgen            # rewrite both pages (run it after changing a command, option or route)
    python -m llmops.docsgen --check    # exit 1 naming each stale page; `tests/test_docs.py` asserts the same

Both pages are pure functions of the code: no model loads, no network, no clock. The CLI page walks the
Click command tree Typer builds and prints each parameter as `--help` does (`get_help_record`); the HTTP
page reads `create_app(ws).openapi()` on a temporary, empty workspace.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["DOCS", "GENERATOR", "PAGES", "cli_reference", "http_reference", "main", "render_all", "slug", "stale",
           "write"]

DOCS = Path(__file__).resolve().parents[1] / "docs"
GENERATOR = "python -m llmops.docsgen"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: markup dropped, lowercased, punctuation other than `-` and `_`
    removed, spaces to hyphens. `slug("`POST /v1/chat/completions`")` is `"post-v1chatcompletions"`.
    (GitHub appends `-1`, `-2`, … to repeats; `tests/docs_support.py` does that when it collects a page's anchors.)"""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, `|` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _header(source: str) -> list[str]:
    return [f"<!-- Generated from {source} by `{GENERATOR}`; do not edit by hand. -->", ""]


# the CLI ------------------------------------------------------------------------------------------------------
def _help_text(command) -> str:
    """A command's docstring as paragraphs (Click's `\\b` no-rewrap markers dropped)."""
    text = inspect.cleandoc(command.help or "")
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _walk(command, ctx) -> list[tuple[Any, Any]]:
    """(command, context) for `command` and every command under it, depth first, subcommands by name."""
    from typer import _click as click

    found = [(command, ctx)]
    for name in sorted(getattr(command, "commands", {})):
        sub = command.commands[name]
        if not sub.hidden:
            found += _walk(sub, click.Context(sub, info_name=name, parent=ctx))
    return found


def _params_table(command, ctx) -> list[str]:
    rows = {"argument": [], "option": []}
    for param in command.params:
        record = None if param.hidden else param.get_help_record(ctx)
        if record is not None:
            kind = "option" if param.param_type_name == "option" else "argument"
            rows[kind].append(f"| `{record[0]}` | {_cell(record[1])} |")
    lines = []
    for kind, body in rows.items():
        if body:
            lines += [f"| {kind} | help |", "|---|---|", *body, ""]
    return lines


def cli_reference() -> str:
    """docs/cli.md: every command and subcommand of `llmops`, with its usage, help, arguments and options."""
    import typer
    from typer import _click as click

    from llmops import cli

    cli._register()
    root = typer.main.get_command(cli.app)
    commands = _walk(root, click.Context(root, info_name="llmops"))
    out = _header("the Typer app in `llmops/cli/`") + [
        "# CLI reference", "",
        _help_text(root), "",
        "`llmops --help` and `llmops COMMAND --help` print the same text. Every error a user can cause is one "
        "line on stderr, `error: …`, and exit status 2; besides, `llmops eval run` exits 1 when a gate fails, "
        "`llmops replay` exits 1 when the answer differs, and `llmops finetune run` exits 130 on Ctrl-C. "
        "The ideas behind the commands are in [concepts](concepts.md).", "",
        "## Global options", "",
        "They go before the command: `llmops -w DIR runs list`.", "",
        *_params_table(root, commands[0][1]),
        "## Commands", "",
    ]
    for command, ctx in commands[1:]:
        depth = ctx.command_path.count(" ") - 1
        title = f"`{ctx.command_path}`"
        summary = _help_text(command).split("\n\n")[0]
        out.append(f"{'  ' * depth}- [{title}](#{slug(title)}){' — ' + _cell(summary) if summary else ''}")
    out.append("")
    for command, ctx in commands[1:]:
        level = "##" if ctx.command_path.count(" ") == 1 else "###"
        out += [f"{level} `{ctx.command_path}`", ""]
        pieces = command.collect_usage_pieces(ctx)
        out += ["```text", " ".join([ctx.command_path, *pieces]), "```", ""]
        if _help_text(command):
            out += [_help_text(command), ""]
        out += _params_table(command, ctx)
    return "\n".join(out).rstrip() + "\n"


# the HTTP API -------------------------------------------------------------------------------------------------
def _schema_type(schema: dict) -> str:
    """A JSON Schema as a short type: `string`, `list[Message]`, `integer or null`, `dict[str, string]`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{slug(name)})"
    if "anyOf" in schema or "oneOf" in schema:
        return " or ".join(dict.fromkeys(_schema_type(s) for s in schema.get("anyOf") or schema["oneOf"]))
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"list[{_schema_type(schema.get('items', {}))}]"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"dict[str, {_schema_type(schema['additionalProperties'])}]"
    if isinstance(kind, list):
        return " or ".join(kind)
    return kind or "any"


def _body(content: dict) -> str:
    """What a request or response carries: its schema per media type."""
    parts = []
    for media, spec in content.items():
        schema = spec.get("schema") or {}
        parts.append(f"{_schema_type(schema)} (`{media}`)" if schema else f"`{media}`")
    return "; ".join(parts) or "none"


def _openapi() -> dict:
    """The server's OpenAPI schema, from the app on a temporary, empty workspace (nothing loads a model)."""
    from llmops.serve.app import create_app
    from llmops.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="llmops-docs-") as tmp, Workspace(tmp) as ws:
        return create_app(ws).openapi()


def http_reference(schema: dict | None = None) -> str:
    """docs/http-api.md: each route (method, path, summary, parameters, request and response bodies) and schema."""
    schema = _openapi() if schema is None else schema
    info = schema.get("info", {})
    routes = [(path, method, op) for path, ops in schema.get("paths", {}).items() for method, op in ops.items()]
    title = lambda path, method: f"`{method.upper()} {path}`"  # noqa: E731
    out = _header("the server's OpenAPI schema (`llmops.serve.app.create_app`)") + [
        "# HTTP API", "",
        info.get("description", ""), "",
        "`llmops serve` serves these routes (see [deployment](deployment.md) and [serving](serving.md)); a running "
        "server shows the same schema, interactively, at `/docs`. The web UI under `/ui` is HTML pages, "
        "described in [the UI page](ui.md). Errors answer in OpenAI's format: "
        "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.", "",
        "| method | path | summary |", "|---|---|---|",
    ]
    out += [f"| {m.upper()} | [`{p}`](#{slug(title(p, m))}) | {_cell(op.get('summary', ''))} |" for p, m, op in routes]
    out.append("")
    for tag in dict.fromkeys((op.get("tags") or ["other"])[0] for _, _, op in routes):
        out += [f"## {tag}", ""]
        for path, method, op in routes:
            if (op.get("tags") or ["other"])[0] != tag:
                continue
            out += [f"### {title(path, method)}", "", op.get("summary", ""), ""]
            description = inspect.cleandoc(op.get("description") or "")
            if description and description != op.get("summary"):
                out += [description, ""]
            if op.get("parameters"):
                out += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
                out += [f"| `{p['name']}` | {p['in']} | {_schema_type(p.get('schema', {}))} | "
                        f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |"
                        for p in op["parameters"]]
                out.append("")
            if "requestBody" in op:
                out += [f"Request body: {_body(op['requestBody'].get('content', {}))}", ""]
            out += ["| status | meaning | body |", "|---|---|---|"]
            out += [f"| {status} | {_cell(r.get('description', ''))} | {_body(r.get('content', {}))} |"
                    for status, r in op.get("responses", {}).items()]
            out.append("")
    out += ["## Schemas", ""]
    for name, spec in sorted(schema.get("components", {}).get("schemas", {}).items()):
        out += [f"### `{name}`", ""]
        if spec.get("description"):
            out += [inspect.cleandoc(spec["description"]), ""]
        fields = spec.get("properties", {})
        if fields:
            required = set(spec.get("required", []))
            out += ["| field | type | required | default | description |", "|---|---|---|---|---|"]
            for field, fs in fields.items():
                default = f"`{json.dumps(fs['default'])}`" if "default" in fs and fs["default"] is not None else ""
                out.append(f"| `{field}` | {_cell(_schema_type(fs))} | {'yes' if field in required else 'no'} | "
                           f"{_cell(default)} | {_cell(fs.get('description', ''))} |")
            out.append("")
        elif spec.get("type"):
            out += [f"Type: {_schema_type(spec)}", ""]
    return "\n".join(out).rstrip() + "\n"


# the pages ----------------------------------------------------------------------------------------------------
PAGES: dict[str, Callable[[], str]] = {"cli.md": cli_reference, "http-api.md": http_reference}


def render_all() -> dict[str, str]:
    """{file name under docs/: its generated text}."""
    return {name: render() for name, render in PAGES.items()}


def stale(docs: Path = DOCS) -> list[str]:
    """The generated pages whose committed text differs from what the code generates now."""
    return [name for name, text in render_all().items()
            if not (docs / name).is_file() or (docs / name).read_text(encoding="utf-8") != text]


def write(docs: Path = DOCS) -> list[Path]:
    """Regenerate every page; returns the files that changed."""
    changed = []
    for name, text in render_all().items():
        path = docs / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in ([], ["--check"]):
        print(f"usage: {GENERATOR} [--check]", file=sys.stderr)
        return 2
    if args == ["--check"]:
        names = stale()
        for name in names:
            print(f"docs/{name} is stale: run `{GENERATOR}`", file=sys.stderr)
        return 1 if names else 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
