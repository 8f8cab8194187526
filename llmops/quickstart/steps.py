"""The quickstart's steps, one function each, in the order `run_quickstart` calls them.

Each step prints what it did under its own rule and returns what the later steps need. Nothing here
decides a result for show: the gate's verdict is the eval run's, the alias moves only inside that
run's `on_pass`, and what is served afterwards follows from the alias in the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from llmops.errors import AliasNotFound, LLMOpsError
from llmops.lineage_view import render_tree
from llmops.workspace import Workspace

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
QA_V1 = HERE / "qa_v1.yaml"
JOB = Path("finetune") / "handbook-qa.yaml"
SUITE = Path("evals") / "handbook-adapter.yaml"
REPORTS = Path("eval-reports") / "handbook-adapter"
ADAPTER = "adapter/handbook-qa"
TUNED_CHAIN, BASE_CHAIN = "chain/rag-qa-tuned", "chain/rag-qa"
QUESTION = "What does llmops lineage show?"  # SmolLM2-135M answers it sensibly from the handbook
# --fast: the real job and suite, shrunk so the whole loop takes well under 3 minutes on 2 CPU cores
FAST_STEPS = 3
FAST_VALIDATION = 0.02   # ~5 held-out examples for the final validation loss instead of ~23
FAST_ROWS = 6
FAST_MAX_TOKENS = 24
UI_PORT = 8001  # `llmops ui`'s default


@dataclass
class Answer:
    """The served answer: the model name asked, the response id and its run id."""

    model: str
    response_id: str
    run_id: str
    text: str


def prompts(ws: Workspace, console: Console) -> None:
    from llmops.prompts import render_diff

    console.rule("1. prompts: two versions and their diff")
    v1 = ws.prompts.push_folder([QA_V1], message="first draft")
    pushed = ws.prompts.push_folder(ws.root / "prompts", message="quickstart")
    console.print("pushed " + ", ".join(v.ref for v in v1 + pushed))
    ws.prompts.set_alias("qa", "production", 2, reason="quickstart")
    console.print(render_diff(ws.prompts.diff("qa@1", "qa@2"), "text"), markup=False, highlight=False)


def ingest(ws: Workspace, console: Console) -> Any:
    console.rule("2. ingest the handbook (MiniLM embeddings, FAISS index)")
    spec = ws.root / "rag" / "handbook.yaml"
    result = ws.rag.ingest(spec, progress=True)
    console.print(f"{result.ref}: {result.counts} in {result.seconds:.1f} s")
    ws.registry.set_alias("index/handbook", "production", result.version, reason="quickstart")
    again = ws.rag.ingest(spec)
    console.print(f"re-ingest with nothing changed: published={again.published} "
                  f"(still {again.ref}), embedded {again.counts.get('embedded', 0)} chunks")
    return result


def fast_job(job_path: Path, steps: int = FAST_STEPS, validation: float = FAST_VALIDATION) -> Path:
    """The real job spec with its training cut to `steps` optimizer steps and a smaller validation split
    (one validation pass and one checkpoint, at the end), written beside it as `<name>-fast.yaml`:
    everything else (data, template, retrieval, LoRA shape, output name) is the real job's, so the
    adapter is the same kind of adapter, only less trained."""
    import yaml

    data = yaml.safe_load(job_path.read_text(encoding="utf-8"))
    training = {k: v for k, v in data["training"].items() if k not in ("epochs", "max_steps")}
    training.update(max_steps=steps, eval_every=0, checkpoint_every=0,
                    warmup_steps=min(int(training.get("warmup_steps", 0)), steps - 1))
    data["training"] = training
    data["validation"] = {"fraction": validation}
    out = job_path.with_name(f"{job_path.stem}-fast.yaml")
    header = (f"# Written by `llmops quickstart --fast` from {job_path.name}: training cut to {steps} steps, "
              f"validation to {validation:g} of the records.\n")
    out.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def finetune(ws: Workspace, console: Console, fast: bool) -> Any:
    from llmops.finetune.job import run_job

    console.rule("3. fine-tune a LoRA adapter on the handbook train split")
    job_path = ws.root / JOB
    if fast:
        job_path = fast_job(job_path)
        console.print(f"--fast: {job_path.relative_to(ws.root)} is {JOB} with training cut to {FAST_STEPS} steps "
                      f"and validation to {FAST_VALIDATION:g} of the records")
    result = run_job(ws, job_path, progress=True)
    f = result.figures
    val = f" val_loss {f['val_loss']:.4f}," if "val_loss" in f else ""
    console.print(f"run {result.run_id} trained {result.adapter.ref}: {f['steps_run']} steps on "
                  f"{f['train_examples']} examples, train_loss {f.get('train_loss', float('nan')):.4f},{val} "
                  f"{f['seconds']:.0f} s")
    return result


def fast_suite(suite: Any, rows: int = FAST_ROWS, max_tokens: int = FAST_MAX_TOKENS) -> Any:
    """The suite on its first `rows` rows with answers cut to `max_tokens` (its `limit` and `generation`
    fields); its gates, metrics, baseline and bootstrap stay as committed."""
    from llmops.digests import sha256_json

    generation = suite.spec.generation.model_copy(update={"max_tokens": max_tokens})
    spec = suite.spec.model_copy(update={"limit": rows, "generation": generation})
    return replace(suite, spec=spec, digest=sha256_json(spec.model_dump(mode="json")))


def evaluate(ws: Workspace, console: Console, adapter: Any, fast: bool) -> tuple[dict, dict[str, Path]]:
    """The suite on the adapter against the base; `production` of the adapter moves inside the eval run,
    only when every gate passed (the alias event records the run)."""
    from llmops.evals.runner import evaluate as run_suite
    from llmops.evals.runner import write_reports
    from llmops.evals.suite import load_suite

    console.rule("4. evaluate: base model against the adapter on the held-out split")
    suite = load_suite(ws.root / SUITE)
    if fast:
        suite = fast_suite(suite)
        console.print(f"--fast: the first {FAST_ROWS} rows, max_tokens {FAST_MAX_TOKENS} "
                      f"(gates as committed in {SUITE})")

    def promote(run: Any, result: dict) -> None:
        measured = [r for r in result["target"]["versions"] if r.startswith(ADAPTER + "@")]
        if measured != [adapter.ref]:
            raise LLMOpsError(f"the suite measured {measured or 'no adapter'}, not {adapter.ref}; "
                              f"nothing promoted")
        ws.registry.set_alias(ADAPTER, "production", adapter.version,
                              reason=f"eval run {run.id} passed suite {suite.spec.name} ({SUITE})")

    result = run_suite(ws, suite, progress=True, on_pass=promote)
    base = result["baseline"]
    console.print(f"eval run {result['run_id']}: {result['target']['ref']} "
                  f"({', '.join(v for v in result['target']['versions'] if v.startswith(ADAPTER))}) against "
                  f"{base['target']['ref'] if base else 'no baseline'} on {result['dataset']['rows']} rows "
                  f"of {result['dataset']['ref']}")
    for name, m in result["metrics"].items():
        delta = base["deltas"][name] if base else None
        shown = (f"  delta {delta['delta']:+.4f} [{delta['low']:+.4f}, {delta['high']:+.4f}]" if delta else "")
        console.print(f"  {name:<20} {m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}]{shown}", highlight=False)
    paths = write_reports(result, ws.root / REPORTS)
    for kind, path in paths.items():
        console.print(f"report {kind}: {path}", highlight=False)
    return result, paths


def gate(ws: Workspace, console: Console, result: dict, adapter: Any, fast: bool) -> bool:
    """Print the gates and the decision, read back from the store: True when production moved."""
    console.rule("5. promotion gate: production moves only if every gate passed")
    for g in result["gates"]:
        mark = "[green]PASS[/green]" if g["passed"] else "[red]FAIL[/red]"
        console.print(f"  {mark} {g['name']}: {g['detail']}", highlight=False)
    try:
        production = ws.registry.get(f"{ADAPTER}@production", record=False)
    except AliasNotFound:
        production = None
    moved = production is not None and production.version == adapter.version
    if moved != bool(result["passed"]):
        raise LLMOpsError(f"{ADAPTER}@production is {production.ref if production else 'unset'}, but eval run "
                          f"{result['run_id']} {'passed' if result['passed'] else 'failed'}")
    if moved:
        console.print(f"decision: PROMOTED: {ADAPTER}@production -> {adapter.ref}, moved by eval run "
                      f"{result['run_id']} because every gate passed")
        return True
    failed = ", ".join(g["name"] for g in result["gates"] if not g["passed"])
    console.print(f"decision: NOT PROMOTED: {ADAPTER}@production did not move ({failed} failed); "
                  f"{adapter.ref} stays in the registry unpromoted and is not served")
    if fast:
        console.print(f"  (expected with --fast: {FAST_STEPS} training steps measured on {FAST_ROWS} rows rarely "
                      "beat the base model beyond the bootstrap's noise; run `llmops quickstart` without --fast "
                      "for the full job and suite)")
    return False


def serve_and_ask(ws: Workspace, console: Console, promoted: bool) -> tuple[Answer, Any]:
    """Step 6 and 7: `llmops serve` in the background, one question with the openai client, feedback on it."""
    import httpx
    from openai import OpenAI

    from llmops.quickstart.server import background_server
    from llmops.serve.tracing import run_id_of

    console.rule("6. serve over HTTP and ask with the openai client")
    model = TUNED_CHAIN if promoted else BASE_CHAIN
    why = (f"its adapter is {ADAPTER}@production" if promoted
           else f"the base model: {ADAPTER} was not promoted, so the tuned chain is not served")
    with background_server(ws.root, ws.home / "logs" / "quickstart-serve.log") as server:
        console.print(f"started `llmops -w {ws.root} serve --port {server.port}` (pid {server.pid}); "
                      f"{server.url}/healthz answered")
        client = OpenAI(base_url=server.url + "/v1", api_key="quickstart", max_retries=0, timeout=300)
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}])
        text = reply.choices[0].message.content or ""
        answer = Answer(model, reply.id, run_id_of(reply.id), text)
        console.print(f"model: {model} ({why})")
        console.print(f"[bold]Q:[/bold] {QUESTION}")
        console.print(f"[bold]A:[/bold] {text}", highlight=False)
        console.print(f"response id: {reply.id}  tokens: {reply.usage.prompt_tokens} prompt, "
                      f"{reply.usage.completion_tokens} completion" if reply.usage else f"response id: {reply.id}")

        console.rule("7. feedback on that answer")
        posted = httpx.post(server.url + "/v1/feedback", timeout=60,
                            json={"id": reply.id, "score": 1.0, "comment": "quickstart: the answer is on topic"})
        if posted.status_code != 200:
            raise LLMOpsError(f"POST /v1/feedback answered {posted.status_code}: {posted.text[:500]}")
        feedback = posted.json()
        console.print(f"POST /v1/feedback -> {posted.status_code} {feedback}", highlight=False)
    console.print(f"server stopped (pid {server.pid}, exit status {server.process.returncode})")
    return answer, feedback


def upstream_refs(ws: Workspace, node: str) -> list[str]:
    """Every version upstream of a run or version (what it was made from, transitively)."""
    from llmops.store.lineage import is_ref

    graph = ws.lineage(node)
    nodes = {n for edge in graph.upstream for n in (edge[0], edge[2])}
    return sorted(n for n in nodes if is_ref(n) and n != graph.root)


def lineage(ws: Workspace, console: Console, answer: Answer, adapter: Any) -> dict[str, list[str]]:
    """The response's lineage tree, and the versions it reaches by kind."""
    console.rule("8. lineage of that response")
    console.print(f"llmops -w {ws.root} lineage {answer.response_id}", highlight=False)
    console.print(render_tree(ws.lineage(answer.run_id)))
    reached: dict[str, list[str]] = {}
    for ref in upstream_refs(ws, answer.run_id):
        reached.setdefault(ref.split("/", 1)[0], []).append(ref)
    for kind in ("chain", "prompt", "index", "model", "adapter", "dataset"):
        console.print(f"  {kind:<8} {', '.join(reached.get(kind, [])) or '-'}", highlight=False)
    trained_on = [r for r in upstream_refs(ws, adapter.ref) if r.startswith("dataset/")]
    served = adapter.ref in reached.get("adapter", [])
    console.print(f"{adapter.ref} was trained on {', '.join(trained_on) or 'no recorded dataset'}"
                  + ("" if served else " (not in this answer's lineage: it was not promoted, so not served)"),
                  highlight=False)
    return reached


def addresses(console: Console, root: Path, eval_run: str, request_run: str, kept: bool) -> None:
    console.rule("9. explore it in the web UI")
    base = f"http://127.0.0.1:{UI_PORT}/ui"
    if not kept:
        console.print("this workspace is temporary and is removed now; run `llmops quickstart --dir DIR` to keep "
                      "it, then:")
    console.print(f"llmops -w {root if kept else 'DIR'} ui        # then open {base}", highlight=False)
    console.print(f"  eval report: {base}/evals/{eval_run}", highlight=False)
    console.print(f"  the request: {base}/requests/{request_run}", highlight=False)
