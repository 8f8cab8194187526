"""Run a suite: check everything, generate (batched, cached), score, bootstrap, compare, gate, store.

    result = evaluate(ws, "evals/qa.yaml")                       # the result dict (llmops.eval/1)
    result = evaluate(ws, "evals/qa.yaml", target="qa@3", baseline="production")

Everything the user can get wrong (suite fields, dataset rows, field maps, metrics, target and
baseline refs, a baseline run on another dataset) is checked before the first token is generated,
and raises a SpecError that changes nothing. The eval is a run of kind `eval` with `used` edges to
every version measured and to the dataset version; its artifact `result.json` holds the result.
A baseline is the same suite on the baseline target: a stored eval run with the same key (target
digests, generation params, dataset digest, rows, metrics) is reused, else it is run (and stored).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from llmops.errors import AliasNotFound, LLMOpsError, NotFound, RunNotFound, SpecError
from llmops.evals.report import FORMAT
from llmops.evals.suite import Suite, load_rows, load_suite

__all__ = ["evaluate", "load_result", "promote", "write_reports"]

log = logging.getLogger(__name__)
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_UNSET: Any = object()


@dataclass
class _Dataset:
    name: str
    source: str           # file path or ref, for errors
    data: bytes
    file_name: str
    digest: str           # the digest the registry gives this content
    ref: str | None = None  # set once pushed or resolved
    av: Any = None


@dataclass
class _Plan:
    """A suite, checked and resolved: what one eval run needs, before any generation."""

    suite: Suite
    target: Any           # ResolvedTarget
    rows: list[dict]      # {"id", "row"}
    inputs: list[dict]    # per row: target inputs
    prepared: list[Any]
    dataset: _Dataset
    key: str


# -- checking ---------------------------------------------------------------------------------------
def _dataset(ws: Any, suite: Suite) -> _Dataset:
    from llmops.digests import sha256_hex, sha256_json

    path = suite.dataset_path
    if path is not None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise suite.error("dataset", f"cannot read {path}: {exc.strerror or exc}",
                              fix="give a JSONL path relative to the suite file, or a dataset ref") from None
        from llmops.store.refs import check_name

        name = re.sub(r"[^A-Za-z0-9_.-]", "-", path.name.rsplit(".", 1)[0]).lstrip("._-") or "dataset"
        check_name(name[:128], "dataset")
        spec = {"format": "jsonl"}
        digest = sha256_json({"kind": "dataset", "spec": spec, "files": {path.name: sha256_hex(data)}})
        return _Dataset(name[:128], str(path), data, path.name, digest)
    try:
        av = ws.registry.get(suite.spec.dataset, kind="dataset", record=False)
    except LLMOpsError as exc:
        raise suite.error("dataset", f"cannot resolve {suite.spec.dataset!r}: {exc}") from None
    files = [f for f in av.files if f.endswith((".jsonl", ".json"))]
    if len(files) != 1:
        raise suite.error("dataset", f"{av.ref} holds {len(files)} JSONL files ({', '.join(av.files)}); "
                                     "an eval dataset version holds exactly one")
    return _Dataset(av.name, av.ref, ws.registry.read_file(av, files[0]), files[0], av.digest, av.ref, av)


def _row_inputs(suite: Suite, target: Any, row: dict) -> dict:
    out = {}
    for name, var in target.inputs.items():
        field = suite.input_field(name)
        if field in row:
            out[name] = row[field]
        elif name in suite.spec.inputs or var.required:  # checked by load_rows; kept for safety
            raise SpecError(f"no field {field!r}", field=field)
    return out


def plan(ws: Any, suite: Suite | str | Path, *, target: str | None = None) -> _Plan:
    """Check the suite, its dataset and its target; generates nothing and stores nothing."""
    from llmops.digests import sha256_json
    from llmops.evals.target import resolve_target

    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if target is not None:
        suite = suite.with_target(target)
    dataset = _dataset(ws, suite)
    resolved = resolve_target(ws, suite)
    for name in suite.spec.inputs:
        if name not in resolved.inputs:
            raise suite.error(f"inputs.{name}", f"{resolved.ref} has no input {name!r}",
                              fix=f"its inputs: {', '.join(resolved.inputs) or 'none'}")
    needed = [suite.input_field(n) for n, var in resolved.inputs.items() if n in suite.spec.inputs or var.required]
    try:
        text = dataset.data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("not a UTF-8 text file", file=dataset.source) from None
    rows = load_rows(suite, text, dataset.source, needed)
    inputs, prepared = [], []
    for r in rows:
        values = _row_inputs(suite, resolved, r["row"])
        try:
            prepared.append(resolved.prepare(values))
        except LLMOpsError as exc:
            raise SpecError(f"row {r['id']}: {exc}", file=dataset.source) from None
        inputs.append(values)
    key = sha256_json({"target": resolved.digests, "generation": resolved.generation, "dataset": dataset.digest,
                       "ids": [r["id"] for r in rows], "reference": suite.spec.reference,
                       "inputs": suite.spec.inputs, "metrics": [m.model_dump() for m in suite.spec.metrics]})
    return _Plan(suite, resolved, rows, inputs, prepared, dataset, key)


def _baseline_plan(ws: Any, p: _Plan, baseline: str | None) -> tuple[_Plan | None, dict | None]:
    """(a plan to run, or a stored result to reuse) for the baseline; (None, None) without one."""
    from llmops.store.refs import parse_ref

    if baseline is None:
        return None, None
    if _RUN_ID.fullmatch(baseline):
        stored = load_result(ws, baseline)
        if stored["dataset"].get("digest") != p.dataset.digest:
            raise p.suite.error("baseline", f"eval run {baseline} measured {stored['dataset']['ref']}, another "
                                            f"dataset version than this suite's ({p.dataset.source})",
                                fix="compare runs on the same dataset version")
        ids = {e["id"] for e in stored["examples"]}
        missing = [r["id"] for r in p.rows if r["id"] not in ids]
        if missing:
            raise p.suite.error("baseline", f"eval run {baseline} has no example {missing[0]!r}",
                                fix="use a baseline run of the same rows (same `limit`)")
        return None, stored
    kind = p.target.kind
    if "@" not in baseline and "/" not in baseline:  # an alias of the target's own asset
        base = parse_ref(p.target.ref).base
        ref = f"{base}@{baseline}"
        try:
            ws.registry.get(ref, record=False)
        except (AliasNotFound, NotFound):
            log.info("no baseline: %s does not exist yet", ref)
            return None, None
    else:
        try:
            ref = str(parse_ref(baseline, default_kind=kind, kinds=(kind,)))
        except LLMOpsError as exc:
            raise p.suite.error("baseline", str(exc)) from None
    try:
        return plan(ws, p.suite, target=ref), None
    except SpecError as exc:
        raise SpecError(f"baseline {ref}: {exc}") from None


# -- running ----------------------------------------------------------------------------------------
def _progress(total: int, label: str, show: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=console, disable=not (show and console.is_terminal))


def _predict(ws: Any, p: _Plan, show_progress: bool) -> tuple[list[str], int, int]:
    """Predictions for every row: from the cache, else generated in batches (and cached)."""
    from llmops.evals.cache import GenerationCache, input_key, target_key

    cache = GenerationCache(ws.home / "cache" / "evals", target_key(p.target.digests, p.target.generation))
    keys = [input_key(i) for i in p.inputs]
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if cache.get(k) is None and k not in todo:
            todo[k] = i
    order = list(todo.items())
    size = p.suite.spec.batch_size
    with _progress(len(order), f"generating {p.target.ref}", show_progress) as bar:
        task = bar.add_task("generate", total=len(order))
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            texts = p.target.generate([p.prepared[i] for _, i in chunk])
            cache.update({k: t for (k, _), t in zip(chunk, texts)})
            bar.advance(task, len(chunk))
    return [cache.get(k) for k in keys], len(order), len(keys) - len(order)  # type: ignore[misc]


def _score(p: _Plan, predictions: list[str]) -> tuple[dict[str, list[float]], dict[str, dict]]:
    from llmops.evals import scoring

    refs = [r["row"][p.suite.spec.reference] for r in p.rows]
    per, corpus = {}, {}
    for m in p.suite.spec.metrics:
        try:
            per[m.name] = [float(x) for x in scoring.score(m.name, predictions, refs, **m.options)]
            corpus_fn = getattr(scoring, "corpus", None)
            if corpus_fn is not None:
                corpus[m.name] = corpus_fn(m.name, predictions, refs, **m.options)
        except TypeError as exc:
            raise p.suite.error("metrics", f"bad options for {m.name}: {exc}") from None
    return per, corpus


def _scale(name: str) -> float:
    from llmops.evals import scoring

    return float(getattr(scoring, "SCALE", {}).get(name, 1.0))


def _measure(ws: Any, p: _Plan, *, baseline: dict | None, show_progress: bool, role: str,
             on_pass: Callable[[Any, dict], None] | None = None) -> dict:
    """Generate, score and store one eval run of a checked plan; `baseline` is a stored result."""
    from llmops.evals.gates import check_gates
    from llmops.evals.stats import mean_ci, paired_delta

    spec = p.suite.spec
    boot = spec.bootstrap.model_dump()
    t0 = time.perf_counter()
    _push_dataset(ws, p.dataset)
    with ws.start_run(spec.name, kind="eval", tags={"eval_key": p.key, "eval_role": role,
                                                     "eval_dataset": p.dataset.digest}) as run:
        for av in [*p.target.versions, p.dataset.av]:
            run.record_used(av)
        run.log_params({"suite": str(p.suite.path), "target": p.target.ref, "dataset": p.dataset.ref,
                        "rows": len(p.rows)})
        predictions, generated, cached = _predict(ws, p, show_progress)
        per, corpus = _score(p, predictions)
        metrics = {n: {**mean_ci(s, **boot), "scale": _scale(n)} for n, s in per.items()}
        base_block, base_by_id = None, {}
        if baseline is not None:
            base_by_id = {e["id"]: e for e in baseline["examples"]}
            deltas = {}
            for n, scores in per.items():
                if n not in baseline["metrics"]:
                    raise p.suite.error("baseline", f"the baseline run {baseline['run_id']} has no metric {n!r}")
                paired = [base_by_id[r["id"]]["scores"][n] for r in p.rows]
                deltas[n] = paired_delta(scores, paired, **boot)
            base_block = {"run_id": baseline["run_id"], "target": baseline["target"],
                          "metrics": {n: baseline["metrics"][n] for n in per}, "deltas": deltas}
        gates = check_gates(spec.gates, metrics, base_block)
        examples = []
        for i, r in enumerate(p.rows):
            b = base_by_id.get(r["id"])
            examples.append({"id": r["id"], "inputs": p.inputs[i], "reference": r["row"][spec.reference],
                             "prediction": predictions[i], "scores": {n: per[n][i] for n in per},
                             "baseline_prediction": b["prediction"] if b else None,
                             "baseline_scores": {n: b["scores"][n] for n in per} if b else None})
        result = {
            "format": FORMAT, "run_id": run.id, "created_at": datetime.now(timezone.utc).isoformat(),
            "suite": {"name": spec.name, "path": str(p.suite.path), "digest": p.suite.digest},
            "target": {"ref": p.target.ref, "kind": p.target.kind, "versions": [v.ref for v in p.target.versions]},
            "dataset": {"ref": p.dataset.ref, "rows": len(p.rows), "digest": p.dataset.digest},
            "generation": p.target.generation, "bootstrap": boot, "metrics": metrics, "corpus": corpus,
            "baseline": base_block, "gates": gates, "passed": all(g["passed"] for g in gates),
            "examples": examples,
            "counts": {"generated": generated, "cached": cached, "seconds": round(time.perf_counter() - t0, 3),
                       **p.target.counts},
        }
        run.log_metrics({n: m["value"] for n, m in metrics.items()})
        run.log_metrics({f"{n}.low": m["low"] for n, m in metrics.items()})
        run.log_metrics({f"{n}.high": m["high"] for n, m in metrics.items()})
        if base_block:
            run.log_metrics({f"delta.{n}": d["delta"] for n, d in base_block["deltas"].items()})
        run.log_metrics({"passed": float(result["passed"]), "generated": generated, "cached": cached})
        run.set_tag("passed", str(result["passed"]).lower())
        run.log_artifact(_dump(result), name="result.json")
        if on_pass is not None and result["passed"]:
            on_pass(run, result)
    return result


def _dump(result: dict) -> bytes:
    from llmops.jsonable import json_safe

    return json.dumps(json_safe(result), ensure_ascii=False, sort_keys=True, indent=1, allow_nan=False).encode()


def _push_dataset(ws: Any, d: _Dataset) -> None:
    """Push a dataset file as a `dataset` version; the same content is the same (earliest) version."""
    if d.av is not None:
        return
    av = ws.registry.find("dataset", d.name, d.digest)
    if av is None:
        av = ws.registry.push("dataset", d.name, {"format": "jsonl"}, files={d.file_name: d.data},
                              message=f"eval dataset {d.file_name}")
    d.av, d.ref = av, av.ref


def _stored(ws: Any, key: str) -> dict | None:
    """The newest finished eval run with this key, if any."""
    runs = ws.search_runs(f"tags.eval_key = '{key}' AND attributes.status = 'finished'", limit=1)
    return load_result(ws, runs[0].id) if runs else None


def evaluate(ws: Any, suite: Suite | str | Path, *, target: str | None = None, baseline: str | None = _UNSET,
             report_dir: str | Path | None = None, progress: bool = True,
             on_pass: Callable[[Any, dict], None] | None = None) -> dict:
    """Run a suite (see the module docstring); `baseline=None` compares with nothing, by default the
    suite's `baseline`. `on_pass(run, result)` runs inside the eval run when every gate passed."""
    p = plan(ws, suite, target=target)
    choice = p.suite.spec.baseline if baseline is _UNSET else baseline
    base_plan, base_result = _baseline_plan(ws, p, choice)
    if base_plan is not None:
        base_result = _stored(ws, base_plan.key) or _measure(ws, base_plan, baseline=None,
                                                             show_progress=progress, role="baseline")
    result = _measure(ws, p, baseline=base_result, show_progress=progress, role="candidate", on_pass=on_pass)
    if report_dir is not None:
        write_reports(result, report_dir)
    return result


def load_result(ws: Any, run_id: str) -> dict:
    """The stored result of an eval run."""
    run = ws.get_run(run_id)
    digest = run.artifacts.get("result.json")
    if run.kind != "eval" or digest is None:
        raise RunNotFound(f"run {run.id} is not an eval run with a result.json (kind {run.kind!r})")
    return json.loads(ws.artifacts.get(digest))


def write_reports(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """report.md, junit.xml, report.json and report.html of a result (see `llmops.evals.report`)."""
    from llmops.evals.report import render_reports

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return render_reports(result, out)


def promote(ws: Any, ref: str, alias: str, version: int | str, suite: Suite | str | Path,
            *, progress: bool = False) -> dict:
    """Move `ref`'s `alias` to `version` only if the suite passes for that version against the
    version the alias points at now; the alias event records the eval run. Returns the result."""
    from llmops.store.refs import check_alias, parse_ref, parse_version

    r = parse_ref(ref)
    version = parse_version(version)
    check_alias(alias)
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if r.selector is not None:
        raise SpecError(f"give {r.base} without a version (the version is a separate argument)")
    if r.kind != suite.spec.target.kind:
        raise suite.error("target", f"the suite measures a {suite.spec.target.kind} target, not {r.kind}/{r.name}",
                          fix=f"use a suite whose target is a {r.kind}")

    def move(run: Any, result: dict) -> None:
        ws.registry.set_alias(r.base, alias, version,
                              reason=f"eval run {run.id} passed suite {suite.spec.name} ({suite.path})")

    return evaluate(ws, suite, target=str(r.at(version)), baseline=alias, progress=progress, on_pass=move)
