"""`llmops feedback list|export`: feedback on served answers, and the dataset of corrected examples."""

from __future__ import annotations

import math
from typing import Optional

import typer

from llmops.cli import app, echo_json, workspace
from llmops.errors import InvalidValue

feedback_app = typer.Typer(no_args_is_help=True, help="Feedback on served answers (POST /v1/feedback).")
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("list")
def feedback_list(run_id: Optional[str] = typer.Argument(None, help="Only this answer's (chatcmpl-… or run id)."),
                  as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Feedback received, oldest first."""
    from llmops.serve.feedback import list_feedback

    rows = list_feedback(workspace(), run_id)
    if as_json:
        return echo_json([f.to_dict() for f in rows])
    if not rows:
        typer.echo("no feedback yet (clients send it with POST /v1/feedback)")
    for f in rows:
        note = "corrected" if f.correction is not None else ""
        comment = "".join(c if c.isprintable() else "?" for c in (f.comment or ""))[:60]
        typer.echo(f"{f.created_at:%Y-%m-%d %H:%M}  {f.run_id[:12]}  {f.score:>6g}  {note:9} {comment}")


@feedback_app.command("export")
def feedback_export(min_score: float = typer.Option(..., "--min-score",
                                                   help="Answers scored at least this are kept as they were; "
                                                        "corrected answers are always kept."),
                    name: str = typer.Option("feedback", "--name", help="The dataset's name: dataset/NAME."),
                    message: Optional[str] = typer.Option(None, "-m", "--message"),
                    as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Push the corrected and well-scored answers as a dataset version (chat `messages` JSONL)."""
    from llmops.serve.feedback import export_feedback

    if not math.isfinite(min_score):
        raise InvalidValue(f"--min-score {min_score} must be a finite number")
    result = export_feedback(workspace(create=True), min_score=min_score, name=name, message=message)
    skipped = ", ".join(f"{n} {why}" for why, n in result.skipped.items()) or "none"
    if as_json:
        return echo_json({"ref": result.version.ref if result.version else None, "examples": result.examples,
                          "considered": result.considered, "skipped": result.skipped})
    if result.version is None:
        typer.echo(f"nothing to export: no feedback with a correction or a score of at least {min_score:g} "
                   f"({result.considered} answer(s) with feedback; skipped: {skipped}); no dataset was pushed")
        return
    typer.echo(f"{result.version.ref}  {result.examples} example(s) from {result.considered} answer(s) with "
               f"feedback (skipped: {skipped}); train on it with `dataset: {result.version.ref}` in a job spec")
