"""`llmops eval …`: run a suite, re-render its reports, compare two eval runs.

`eval run` exits 0 when every gate passes, 1 when a gate fails, 2 on bad input (before any generation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmops.cli import app, echo_json, workspace

eval_app = typer.Typer(no_args_is_help=True, help="Evaluation suites: run, report, compare.")
app.add_typer(eval_app, name="eval")


def _summary(result: dict) -> None:
    from llmops.evals.compare import evidence_text

    typer.echo(evidence_text(result))
    for g in result["gates"]:
        typer.echo(f"  {'PASS' if g['passed'] else 'FAIL'}  {g['name']}: {g['detail']}")
    c = result["counts"]
    typer.echo(f"{'passed' if result['passed'] else 'FAILED'}: {c['generated']} generated, {c['cached']} cached, "
               f"{c['seconds']:.1f} s; run {result['run_id']}")


def _reports(result: dict, report_dir: Optional[Path]) -> None:
    from llmops.evals import write_reports

    if report_dir is not None:
        paths = write_reports(result, report_dir)
        typer.echo("reports: " + ", ".join(str(p) for p in paths.values()), err=True)


@eval_app.command("run")
def eval_run(suite: Path = typer.Argument(..., help="A suite file, e.g. evals/qa.yaml."),
             target: Optional[str] = typer.Option(None, "--target", help="Measure this ref instead of the suite's."),
             baseline: Optional[str] = typer.Option(None, "--baseline",
                                                    help="A ref, an alias of the target (production) or an eval run id."),
             report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Write the reports here."),
             as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")):
    """Run SUITE: generate (batched, cached), score, compare with the baseline, check the gates."""
    from llmops.evals import evaluate

    kwargs = {} if baseline is None else {"baseline": baseline}
    result = evaluate(workspace(create=True), suite, target=target, **kwargs)
    _reports(result, report_dir)
    echo_json(result) if as_json else _summary(result)
    raise typer.Exit(0 if result["passed"] else 1)


@eval_app.command("report")
def eval_report(run_id: str = typer.Argument(..., help="An eval run id (or unique prefix)."),
                report_dir: Path = typer.Option(Path("eval-report"), "--report-dir", help="Write the reports here.")):
    """Re-render the reports of a stored eval run."""
    from llmops.evals import load_result

    result = load_result(workspace(), run_id)
    _reports(result, report_dir)
    _summary(result)


@eval_app.command("compare")
def eval_compare(run_a: str = typer.Argument(..., help="The baseline eval run."),
                 run_b: str = typer.Argument(..., help="The candidate eval run."),
                 report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Write compare reports here."),
                 as_json: bool = typer.Option(False, "--json", help="Print the deltas as JSON.")):
    """Paired deltas of RUN_B against RUN_A on the examples both measured."""
    from llmops.evals import load_result
    from llmops.evals.compare import paired_deltas

    ws = workspace()
    a, b = load_result(ws, run_a), load_result(ws, run_b)
    deltas = paired_deltas(a, b)
    if report_dir is not None:
        from llmops.evals.report import render_comparison

        paths = render_comparison(a, b, report_dir, deltas=deltas)
        typer.echo("reports: " + ", ".join(str(p) for p in paths.values()), err=True)
    if as_json:
        return echo_json({"a": a["run_id"], "b": b["run_id"], "deltas": deltas})
    typer.echo(f"{b['target']['ref']} (run {b['run_id']}) against {a['target']['ref']} (run {a['run_id']})")
    for name, d in deltas.items():
        typer.echo(f"  {name:20} {a['metrics'][name]['value']:.4f} -> {b['metrics'][name]['value']:.4f}  "
                   f"delta {d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]  p_better {d['p_better']:.2f}")
