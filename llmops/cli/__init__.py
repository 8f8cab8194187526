"""The `llmops` command: a thin layer over the Python API.

Every error a user can cause prints exactly one line, `error: WHAT; HINT`, and exits 2: an `LLMOpsError`,
a usage error (bad option, missing argument), or an `OSError` on a path the user named. Anything else
is a bug and keeps its traceback. `run(argv)` does all of this and returns the exit status, so tests
call it in process; `main()` is the installed entry point.

Command modules (`llmops/cli/*.py`) are imported only when a command line is run, and import their
heavy libraries inside the commands: `llmops --help` loads neither SQLAlchemy nor torch.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import pkgutil
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import typer
from typer import _click as click  # typer vendors click; these parts are not re-exported
from typer._click.globals import get_current_context

from llmops.errors import AliasNotFound, AssetNotFound, ConfigError, LLMOpsError, RunNotFound

if TYPE_CHECKING:
    from llmops.workspace import Workspace

# rich_markup_mode=None: plain Click help, because rendering it with rich costs ~0.2 s of imports at start-up
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="llmops: versioned prompts, chains, indexes, adapters and evals, linked by one run store.")


@dataclass
class Session:
    """One command line's state (Typer's `ctx.obj`): the workspace folder, and the Workspace once opened."""

    path: Path = Path(".")
    path_given: bool = False
    ws: Optional["Workspace"] = None
    missing: bool = False  # a reading command found no workspace here

    def command(self, *words: str) -> str:
        """`llmops WORDS…` as the user must type it to reach this same workspace."""
        prefix = ["llmops"] + (["-w", shlex.quote(str(self.path))] if self.path_given else [])
        return " ".join(prefix + list(words))


def _session() -> Session:
    return get_current_context().find_root().ensure_object(Session)


def workspace(create: bool = False) -> "Workspace":
    """The command's Workspace, opened once and closed when the command ends.

    Only commands that write pass `create=True`; reading a folder that holds no workspace is an error.
    """
    from llmops.workspace import Workspace

    session = _session()
    if session.ws is None:
        session.missing = not create and not (session.path / ".llmops").is_dir() and _creatable(session.path)
        ws = Workspace(session.path, create=create)
        session.ws = get_current_context().find_root().with_resource(ws)
    return session.ws


def _creatable(path: Path) -> bool:
    """Whether `init` could make a folder here: the nearest existing ancestor is a folder."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.is_dir()


def echo_json(obj) -> None:
    """Strict JSON on stdout: non-finite floats are encoded by `llmops.jsonable.json_safe`, never `NaN`."""
    from llmops.jsonable import json_safe

    typer.echo(json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False, default=str))


def console():
    from rich.console import Console

    return Console()


@app.callback()
def _root(ctx: typer.Context,
          workspace_dir: Optional[Path] = typer.Option(None, "--workspace", "-w", envvar="LLMOPS_HOME",
                                                       help="Workspace folder  [default: the current folder]")):
    session = ctx.ensure_object(Session)
    if workspace_dir is not None:
        session.path, session.path_given = workspace_dir, True


@app.command()
def init():
    """Create `.llmops/` (store and artifacts) in the workspace folder."""
    ws = workspace(create=True)
    typer.echo(f"workspace ready at {ws.root} (store: {ws.engine.url.render_as_string(hide_password=True)})")


@app.command()
def quickstart(fast: bool = typer.Option(False, "--fast", help="A few training steps and eval rows: the loop in "
                                                                "a few minutes on a laptop CPU."),
               dir: Optional[Path] = typer.Option(None, "--dir", help="Build the workspace in this new (or empty) "
                                                                      "folder and keep it, instead of a temporary one.")):
    """Run the whole loop on the embedded defaults: prompts, ingest, fine-tune, eval, gate, serve, lineage."""
    from llmops.quickstart import run_quickstart

    run_quickstart(dir, fast=fast)


def _register() -> None:
    """Import every command module of this package; each adds its commands to `app`."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


# errors ------------------------------------------------------------------------------
_FIXES = {
    errno.ENOENT: "check the path (missing folders are not created)",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; name a file",
    errno.EEXIST: "it already exists",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EROFS: "the file system is read-only; use a writable folder",
    errno.ENOSPC: "free some disk space",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ELOOP: "too many symbolic links",
}


def _one_line(text: str) -> str:
    """A message on one line: continuation lines joined, caret-only pointer lines dropped."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip(" ^")]
    line = parts[0] if parts else ""
    for part in parts[1:]:
        line += (" " if line.endswith(":") else "; ") + part
    return line


def _hint(exc: LLMOpsError, session: Session) -> str | None:
    """The command that helps, for errors whose fix is another `llmops` command (the store never names them)."""
    if isinstance(exc, RunNotFound):
        return f"list runs with `{session.command('runs list')}`"
    if isinstance(exc, AliasNotFound):
        return f"set one with `{session.command('assets alias KIND/NAME ALIAS VERSION')}`"
    if isinstance(exc, AssetNotFound):
        return f"list what exists with `{session.command('assets list')}`"
    if isinstance(exc, ConfigError) and session.missing:
        return f"create one with `{session.command('init')}`"
    return None


def error_line(exc: BaseException, session: Session | None = None) -> str:
    """The one `error: …` line for an error the user can fix."""
    session = session or Session()
    if isinstance(exc, click.exceptions.UsageError):
        where = exc.ctx.command_path if exc.ctx is not None else "llmops"
        text = f"{_one_line(exc.format_message()).rstrip('.')}; see `{where} --help`"
    elif isinstance(exc, typer.TyperException):
        text = _one_line(exc.format_message())
    elif isinstance(exc, OSError):
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        fix = _FIXES.get(exc.errno)
        text = f"{names}: {exc.strerror or exc}" + (f"; {fix}" if fix else "")
    else:
        text = _one_line(str(exc))
        hint = _hint(exc, session) if isinstance(exc, LLMOpsError) else None
        if hint and "`llmops " not in text:  # a message that names its own command keeps it
            text += f"; {hint}"
    return f"error: {text}"


def run(argv: Sequence[str] | None = None) -> int:
    """Run one `llmops` command line; returns the exit status (0 ok, 2 for an error the user can fix).

    A bare group (`llmops runs`) prints its help to stdout and returns 0.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    session = Session()
    if any("\0" in a for a in args):
        typer.echo("error: an argument contains a NUL character; remove it", err=True)
        return 2
    _register()
    try:
        result = typer.main.get_command(app).main(args=args, prog_name="llmops", standalone_mode=False, obj=session)
    except click.exceptions.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message())
        return 0
    except (LLMOpsError, typer.TyperException) as exc:
        typer.echo(error_line(exc, session), err=True)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a path the user named: a bug, keep the traceback
            raise
        typer.echo(error_line(exc, session), err=True)
        return 2
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0  # an int here is a `typer.Exit` code


def main() -> None:
    """The `llmops` entry point."""
    # our own bars show ingestion progress; the libraries' weight-loading bars are noise here
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    sys.exit(run())
