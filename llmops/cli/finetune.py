"""`llmops finetune check|run`: thin wrappers over `llmops.finetune`.

`check` prints what the job would train (histogram, preview, parameters, memory, servability) and
exits 2 with one `error:` line when anything would stop a run; it writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmops.cli import app, echo_json, workspace
from llmops.errors import LLMOpsError

finetune_app = typer.Typer(no_args_is_help=True, help="LoRA fine-tuning jobs: check a job, run it.")
app.add_typer(finetune_app, name="finetune")

DEVICES = ("auto", "cpu", "cuda")


def _device(device: str) -> str:
    if device not in DEVICES:
        raise LLMOpsError(f"--device {device[:40]!r} is not one of {', '.join(DEVICES)}")
    return device


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _show(report) -> None:
    """The report for a terminal (rich; user text is never read as markup)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = Console(highlight=False)
    f = report.facts
    out.print(Text(f"job {report.job.path}  ->  adapter/{report.job.spec.output}  (digest {report.job.digest[:12]})",
                   style="bold"))
    table = Table(show_header=False, box=None, pad_edge=False)
    model = f.get("model")
    if model:
        fp = (model.get("fingerprint") or "?")[:12]
        table.add_row("base model", Text(f"{model['ref']} (fingerprint {fp}, context {model['max_position_embeddings']})"))
    data = f.get("data")
    if data:
        tok = data["tokens"]
        table.add_row("dataset", Text(f"{data['source']}: {data['records']} records ({data['format']}), "
                                      f"{data['train']} train / {data['validation']} validation"))
        table.add_row("tokens", Text(f"min {tok['min']}, mean {tok['mean']}, p95 {tok['p95']}, max {tok['max']}; "
                                     f"{data['truncated']} ({data['truncated_share']:.1%}) over max_seq_len "
                                     f"{data['max_seq_len']}"))
    params = f.get("params")
    if params:
        table.add_row("trainable", Text(f"{params['trainable']:,} of {params['total']:,} parameters "
                                        f"({params['share']:.3%})"))
    if "steps" in f:
        table.add_row("steps", Text(str(f["steps"])))
    mem = f.get("memory")
    if mem:
        table.add_row("memory", Text(f"~{_mib(mem['total'])} estimated on {mem['device']} ({mem['precision']}): "
                                     f"weights {_mib(mem['weights'])}, activations {_mib(mem['activations'])}, "
                                     f"logits {_mib(mem['logits'])}, LoRA+grads+AdamW "
                                     f"{_mib(mem['lora_weights_grads_adam'])}"))
    vllm = f.get("vllm")
    if vllm:
        table.add_row("vLLM", Text(f"servable (--max-lora-rank {vllm['max_lora_rank']})" if vllm["servable"]
                                   else "not servable: " + "; ".join(vllm["reasons"])))
    disk = f.get("disk")
    if disk:
        table.add_row("disk", Text(f"{_mib(disk['free'])} free, ~{_mib(disk['needed'])} needed "
                                   f"({disk['keep']} checkpoints of ~{_mib(disk['checkpoint'])})"))
    out.print(table)
    if data and data["histogram"]:
        out.print(Text("token lengths (prompt + completion)", style="bold"))
        peak = max(b["count"] for b in data["histogram"]) or 1
        for b in data["histogram"]:
            bar = "█" * round(30 * b["count"] / peak)
            cut = " ✂" if b["high"] > data["max_seq_len"] else ""
            out.print(Text(f"  {b['low']:>6}-{b['high']:<6} {b['count']:>6} {bar}{cut}"))
    preview = f.get("preview")
    if preview:
        from rich.panel import Panel

        out.print(Panel(Text(preview["text"]), title=f"first example (line {preview['line']}), as the model sees it",
                        title_align="left"))
    for w in report.warnings:
        out.print(Text(f"warning: {w}", style="yellow"))
    for e in report.errors:
        out.print(Text(f"problem: {e}", style="red"))
    if report.ok:
        out.print(Text("ok: the job can run", style="green"))


@finetune_app.command("check")
def finetune_check(spec: Path = typer.Argument(..., help="A job spec, e.g. finetune/handbook-qa.yaml."),
                   device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (for the memory estimate)."),
                   as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Validate a job without training: data, template preview, parameters, memory, vLLM, disk. Writes nothing."""
    from llmops.finetune.checks import check_job

    report = check_job(workspace(), spec, device=_device(device))
    echo_json(report.to_dict()) if as_json else _show(report)
    report.raise_for_errors()


@finetune_app.command("run")
def finetune_run(spec: Path = typer.Argument(..., help="A job spec, e.g. finetune/handbook-qa.yaml."),
                 device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
                 resume: bool = typer.Option(False, "--resume", help="Continue the job's run from its last checkpoint.")):
    """Check, then train the LoRA adapter and push it as adapter/<output> (under torchrun: data-parallel)."""
    from llmops.finetune.spec import load_job

    ws = workspace(create=True)
    load_job(spec, ws)  # a bad spec is refused before the training code loads
    from llmops.finetune.job import run_job

    try:
        result = run_job(ws, spec, device=_device(device), resume=resume)
    except KeyboardInterrupt as exc:  # after a step, run_job saved a checkpoint and marked the run killed
        if getattr(exc, "run_id", None):
            typer.echo(f"interrupted after step {exc.step}: checkpoint saved, run {exc.run_id[:12]} marked killed; "
                       f"continue it with `llmops finetune run {spec} --resume`", err=True)
        else:
            typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    adapter = getattr(result, "adapter", None)
    if adapter is None:  # a rank other than 0 under torchrun pushes nothing
        return
    figures = getattr(result, "figures", {}) or {}
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(figures.items())
                      if isinstance(v, (int, float)))
    typer.echo(f"pushed {adapter.ref} (run {result.run_id[:12]})" + (f": {shown}" if shown else ""))
