"""Eval reports, rendered only from a stored result dict (format `llmops.eval/1`), so `llmops eval
report RUN_ID` re-renders them later and `llmops eval compare` renders two stored results side by side:

    report.md    a pull-request comment or CI step summary: verdict, metrics, gates, flips, versions
    junit.xml    one test case per gate, so CI marks a failed gate as a failed test with its figures
    report.json  the result itself, strict JSON with sorted keys
    report.html  one self-contained page (inline CSS and SVG, no script, no external file)

All user text (predictions, references, inputs, names) is escaped for the format it lands in.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmops.atomic import atomic_write
from llmops.errors import SpecError
from llmops.evals.charts import Interval, delta_chart, delta_histogram, finite, fmt, fmt_ci, fmt_pct, metric_chart
from llmops.jsonable import json_safe

__all__ = ["FORMAT", "render_comparison", "render_html", "render_reports"]

log = logging.getLogger(__name__)

FORMAT = "llmops.eval/1"
MD_EXAMPLES = 10  # rows per example table in report.md: a PR comment, not an archive
HTML_EXAMPLES = 1000  # rows in the per-example table of report.html
MD_CLIP = 80
HTML_CLIP = 180
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_REQUIRED = ("run_id", "suite", "metrics", "gates", "examples")


@dataclass
class MetricRow:
    name: str
    scale: float
    candidate: Interval
    baseline: Interval | None
    delta: Interval | None
    p_better: float | None


@dataclass
class ExampleRow:
    id: str
    inputs: str
    reference: str
    prediction: str
    baseline_prediction: str | None
    scores: dict[str, tuple[float | None, float | None, float | None]]  # metric -> (candidate, baseline, change)
    change: float | None  # change in the primary metric (or its score when there is no baseline)


@dataclass
class Flip:
    id: str
    metric: str
    before: float | None
    after: float | None
    threshold: float
    regressed: bool


@dataclass
class View:
    """Everything the Markdown, JUnit and HTML writers show, computed once from the result."""

    mode: str  # "run" or "compare"
    result: dict[str, Any]
    metrics: list[MetricRow]
    gates: list[dict[str, Any]]
    examples: list[ExampleRow]
    flips: list[Flip]
    primary: str | None
    baseline: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        return [g for g in self.gates if not g["passed"]]

    @property
    def drops(self) -> list[ExampleRow]:
        return [e for e in self.examples if self.baseline and e.change is not None and e.change < 0]

    @property
    def scale(self) -> dict[str, float]:
        return {m.name: m.scale for m in self.metrics}


def render_html(result: dict[str, Any]) -> str:
    """The self-contained HTML report of one stored eval result (report.html; the web UI's eval page)."""
    return html(_view(_check(result, "result"), mode="run"))


def render_reports(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, junit.xml, report.json and report.html for one stored eval result.

    Returns their paths under the keys md, junit, json and html. Raises SpecError when `result`
    is not an `llmops.eval/1` result (naming the missing field); nothing is written then.
    """
    view = _view(_check(result, "result"), mode="run")
    out = Path(out_dir)
    paths = {
        "md": atomic_write(out / "report.md", markdown(view)),
        "junit": atomic_write(out / "junit.xml", junit(view)),
        "json": atomic_write(out / "report.json", _dumps(result)),
        "html": atomic_write(out / "report.html", html(view)),
    }
    log.info("eval reports for run %s written to %s", result["run_id"], out)
    return paths


def render_comparison(
    a: dict[str, Any], b: dict[str, Any], out_dir: str | Path, *, deltas: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write compare.md, compare.json and compare.html: run `b` (candidate) against run `a` (baseline).

    `deltas` is shaped like `result["baseline"]["deltas"]` (the runner's paired bootstrap); without
    it the deltas are the plain differences of the means, shown without intervals. Both runs must be
    of the same suite on the same dataset version, else SpecError.
    """
    _check(a, "first run")
    _check(b, "second run")
    for key, what in (("suite", "suite"), ("dataset", "dataset version")):
        name_a, name_b = _label(a.get(key)), _label(b.get(key))
        if name_a != name_b:
            raise SpecError(
                f"cannot compare run {a['run_id']} ({what} {name_a}) with run {b['run_id']} ({what} {name_b}): "
                f"compare two runs of the same suite on the same dataset version"
            )
    merged, extra = _merge(a, b, deltas)
    view = _view(merged, mode="compare", gate_order=b["gates"])  # B's gates pick the metric to sort by
    view.notes.extend(extra["notes"])
    summary = {
        "format": "llmops.eval-compare/1",
        "a": {k: a.get(k) for k in ("run_id", "created_at", "target", "metrics")},
        "b": {k: b.get(k) for k in ("run_id", "created_at", "target", "metrics")},
        "suite": b.get("suite"),
        "dataset": b.get("dataset"),
        "deltas": merged["baseline"]["deltas"],
        "flipped": [f.__dict__ for f in view.flips],
        "changes": {e.id: {m: s[2] for m, s in e.scores.items()} for e in view.examples},
        "only_in_a": extra["only_in_a"],
        "only_in_b": extra["only_in_b"],
    }
    out = Path(out_dir)
    return {
        "md": atomic_write(out / "compare.md", markdown(view)),
        "json": atomic_write(out / "compare.json", _dumps(summary)),
        "html": atomic_write(out / "compare.html", html(view)),
    }


# ---------------------------------------------------------------- reading the result


def _check(result: Any, what: str) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise SpecError(f"eval {what}: expected a result object ({FORMAT}), got {type(result).__name__}")
    run = result.get("run_id", "?")
    if result.get("format") != FORMAT:
        raise SpecError(
            f"eval {what} (run {run}): field 'format' is {result.get('format')!r}, expected {FORMAT!r}; "
            f"this llmops reads only {FORMAT} results: re-run the suite to store a fresh one"
        )
    for key, kind in zip(_REQUIRED, (str, dict, dict, list, list)):
        if not isinstance(result.get(key), kind):
            raise SpecError(
                f"eval {what} (run {run}): field {key!r} is missing or not a {kind.__name__}; "
                f"the stored result is incomplete: re-run the suite to store a fresh one"
            )
    return result


def _label(part: Any) -> str:
    return str(part.get("ref") or part.get("name") or "?") if isinstance(part, dict) else str(part)


def _interval(d: Any, key: str = "value") -> Interval:
    d = d if isinstance(d, dict) else {}
    return Interval(d.get(key), d.get("low"), d.get("high"))


def _text(value: Any) -> str:
    """User text to show: control characters (invalid in XML, invisible in HTML) as U+FFFD."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(json_safe(value), ensure_ascii=False)
    return _XML_ILLEGAL.sub("\ufffd", text)


def _inputs_text(inputs: Any) -> str:
    if isinstance(inputs, dict):
        if len(inputs) == 1:
            return _text(next(iter(inputs.values())))
        return "\n".join(f"{k}: {_text(v)}" for k, v in inputs.items())
    return _text(inputs)


def _view(result: dict[str, Any], *, mode: str, gate_order: list[Any] | None = None) -> View:
    base = result.get("baseline") if isinstance(result.get("baseline"), dict) else None
    base_metrics = (base or {}).get("metrics") or {}
    deltas = (base or {}).get("deltas") or {}
    gates = [_gate(g) for g in result["gates"] if isinstance(g, dict)]
    # gated metrics first, in gate order, then the rest by name: the same order however the result was stored
    rules = gates + [_gate(g) for g in gate_order or [] if isinstance(g, dict)]
    order = list(dict.fromkeys([g["metric"] for g in rules if g["metric"] in result["metrics"]]
                               + sorted(result["metrics"], key=str)))
    metrics = []
    for name in order:
        m = result["metrics"][name] if isinstance(result["metrics"][name], dict) else {}
        d = deltas.get(name) if isinstance(deltas.get(name), dict) else None
        metrics.append(
            MetricRow(
                name=str(name),
                scale=finite(m.get("scale")) or 1.0,
                candidate=_interval(m),
                baseline=_interval(base_metrics[name]) if name in base_metrics else None,
                delta=_interval(d, "delta") if d else None,
                p_better=finite(d.get("p_better")) if d else None,
            )
        )
    primary = metrics[0].name if metrics else None
    examples = [_example(e, base is not None, primary) for e in result["examples"] if isinstance(e, dict)]
    examples.sort(key=lambda e: (e.change is None, e.change if e.change is not None else 0.0, _natural(e.id)))
    view = View(mode, result, metrics, gates, examples, [], primary, base)
    view.flips = _flips(view, rules) if base else []
    return view


def _gate(g: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": str(g.get("name", "?")),
        "metric": str(g.get("metric", "?")),
        "kind": str(g.get("kind", "?")),
        "threshold": g.get("threshold"),
        "value": g.get("value"),
        "passed": g.get("passed") is True,
        "detail": _text(g.get("detail")),
    }


def _example(e: dict[str, Any], has_baseline: bool, primary: str | None) -> ExampleRow:
    scores = e.get("scores") if isinstance(e.get("scores"), dict) else {}
    before = e.get("baseline_scores") if isinstance(e.get("baseline_scores"), dict) else {}
    table = {}
    for name in dict.fromkeys([*scores, *before]):
        now, was = finite(scores.get(name)), finite(before.get(name))
        table[str(name)] = (now, was, now - was if now is not None and was is not None else None)
    p = table.get(primary or "", (None, None, None))
    return ExampleRow(
        id=_text(e.get("id")),
        inputs=_inputs_text(e.get("inputs")),
        reference=_text(e.get("reference")),
        prediction=_text(e.get("prediction")),
        baseline_prediction=_text(e["baseline_prediction"]) if e.get("baseline_prediction") is not None else None,
        scores=table,
        change=p[2] if has_baseline else p[0],
    )


def _flips(view: View, gates: list[dict[str, Any]]) -> list[Flip]:
    """Examples that crossed a per-example threshold between baseline and candidate.

    A metric scored only 0 or full marks (exact match) flips at half its scale; another metric at
    its `min` gate's threshold, when that is above 0. Regressions first, then fixes.
    """
    thresholds: dict[str, float] = {}
    for m in view.metrics:
        seen = {v for e in view.examples for v in e.scores.get(m.name, (None, None))[:2] if v is not None}
        if seen and seen <= {0.0, m.scale}:
            thresholds[m.name] = m.scale / 2
    for g in gates:
        t = finite(g["threshold"])
        if g["kind"] == "min" and t is not None and t > 0:
            thresholds.setdefault(g["metric"], t)
    flips = []
    for e in view.examples:
        for name, t in thresholds.items():
            now, was, _ = e.scores.get(name, (None, None, None))
            if now is not None and was is not None and (was >= t) != (now >= t):
                flips.append(Flip(e.id, name, was, now, t, regressed=now < t))
    flips.sort(key=lambda f: (not f.regressed, f.metric, _natural(f.id)))
    return flips


def _natural(text: str) -> list[Any]:
    """Sort key that puts ex-2 before ex-10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text)]


def _merge(a: dict[str, Any], b: dict[str, Any], deltas: dict[str, Any] | None) -> tuple[dict, dict]:
    """Run `b` shaped as a result whose baseline is run `a`, paired by example id."""
    by_id = {str(e.get("id")): e for e in a["examples"] if isinstance(e, dict)}
    b_ids = {str(e.get("id")) for e in b["examples"] if isinstance(e, dict)}
    examples = []
    for e in b["examples"]:
        if not isinstance(e, dict) or str(e.get("id")) not in by_id:
            continue
        old = by_id[str(e.get("id"))]
        examples.append({**e, "baseline_prediction": old.get("prediction"), "baseline_scores": old.get("scores")})
    if deltas is None:
        deltas = {}
        for name, m in b["metrics"].items():
            va, vb = finite((a["metrics"].get(name) or {}).get("value")), finite((m or {}).get("value"))
            if va is not None and vb is not None:
                deltas[name] = {"delta": vb - va, "low": None, "high": None, "p_better": None}
    only_a = sorted(set(by_id) - b_ids)
    only_b = sorted(b_ids - set(by_id))
    notes = []
    if only_a or only_b:
        notes.append(f"{len(only_a)} examples only in run A and {len(only_b)} only in run B are left out of the pairing")
    if not any(isinstance(d, dict) and d.get("low") is not None for d in deltas.values()):
        notes.append("deltas are differences of the means, without paired intervals")
    merged = {
        **b,
        "gates": [],
        "examples": examples,
        "baseline": {"run_id": a["run_id"], "target": a.get("target"), "metrics": a["metrics"], "deltas": deltas},
    }
    return merged, {"only_in_a": only_a, "only_in_b": only_b, "notes": notes}


def _dumps(obj: Any) -> str:
    return json.dumps(json_safe(obj), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# ---------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_MENTION = re.compile(r"(?<!\w)@(?=\w)")
_ENTITY = re.compile(r"&(?=#?\w+;)")  # only what would read as an entity
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # only what would open HTML; "a <= b" stays as typed


def md_cell(value: Any, limit: int = MD_CLIP) -> str:
    """User text made inert in a GitHub Markdown table cell: one line, no HTML, no mention, no markup.

    >>> md_cell("a|b <script> @team\\n*x* qa@3 <= &amp;")
    'a\\\\|b &lt;script> @\\u200bteam \\\\*x\\\\* qa@3 <= &amp;amp;'
    """
    text = " ".join(_text(value).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _ENTITY.sub("&amp;", text)
    text = _TAG.sub("&lt;", text)
    return _MENTION.sub("@\u200b", text)  # a zero-width space: no notification from a model's output


def md_code(value: Any) -> str:
    """User text as an inline code span: one line, no backtick to close it early, no pipe to split a cell."""
    text = " ".join(_text(value).split())[:200].replace("`", "'").replace("|", "¦")
    return f"`{text}`"


def verdict(view: View) -> tuple[bool | None, str]:
    """(passed, one line): pass/fail with gate counts, or for a comparison how many metrics moved."""
    n = len(view.result["examples"])
    if view.mode == "compare":
        up = sum(1 for m in view.metrics if _direction(m) > 0)
        down = sum(1 for m in view.metrics if _direction(m) < 0)
        same = len(view.metrics) - up - down
        return None, f"{up} metrics better, {down} worse, {same} unchanged over {n} paired examples"
    failed = view.failed_gates
    gates = len(view.gates)
    if not gates:
        head = "PASS: no gates" if view.result.get("passed", True) is not False else "FAIL"
    elif failed:
        names = ", ".join(g["name"] for g in failed)
        head = f"FAIL: {len(failed)} of {gates} gates failed ({names})"
    else:
        head = f"PASS: {gates} of {gates} gates passed"
    passed = view.result.get("passed") is True if "passed" in view.result else not failed
    return passed, f"{head} · {n} examples"


def _direction(m: MetricRow) -> int:
    """+1 when the candidate is better (interval above zero), -1 when worse, 0 when undecided."""
    if m.delta is None:
        return 0
    low, high, d = finite(m.delta.low), finite(m.delta.high), finite(m.delta.value)
    if low is not None and high is not None:
        return 1 if low > 0 else -1 if high < 0 else 0
    return 0 if d is None or d == 0 else (1 if d > 0 else -1)


def _versions(view: View) -> list[tuple[str, str]]:
    r = view.result
    target = r.get("target") or {}
    rows = [("candidate", f"{target.get('ref', '?')} — " + ", ".join(map(str, target.get("versions") or [])))]
    if view.baseline:
        bt = view.baseline.get("target") or {}
        rows.append(
            ("baseline", f"{bt.get('ref', '?')} — " + ", ".join(map(str, bt.get("versions") or []))
             + f" (run {view.baseline.get('run_id', '?')})")
        )
    ds, suite, boot = r.get("dataset") or {}, r.get("suite") or {}, r.get("bootstrap") or {}
    rows.append(("dataset", f"{ds.get('ref', '?')} ({ds.get('rows', '?')} rows)"))
    digest = str(suite.get("digest", "")).removeprefix("sha256:")[:12]
    rows.append(("suite", f"{suite.get('name', '?')} ({suite.get('path', '?')}, sha256 {digest})"))
    if boot:
        conf = finite(boot.get("confidence"))
        rows.append((
            "bootstrap",
            f"{boot.get('resamples', '?')} resamples, seed {boot.get('seed', '?')}, "
            f"{'?' if conf is None else f'{conf * 100:g}%'} confidence",
        ))
    counts = r.get("counts") or {}
    if counts:
        rows.append((
            "generation",
            f"{counts.get('generated', '?')} generated, {counts.get('cached', '?')} cached, "
            f"{fmt(counts.get('seconds'), 100)} s",
        ))
    rows.append(("run", f"{r['run_id']} at {r.get('created_at', '?')}"))
    return rows


def markdown(view: View) -> str:
    """report.md: short enough for a PR comment; every table capped at MD_EXAMPLES rows."""
    r = view.result
    passed, line = verdict(view)
    icon = "🔍" if passed is None else "✅" if passed else "❌"
    compare = view.mode == "compare"
    new, old, page = ("run B", "run A", "compare.html") if compare else ("candidate", "baseline", "report.html")
    out = [f"## {icon} Eval{' comparison' if compare else ''} {md_code(r['suite'].get('name', '?'))}: "
           f"{md_cell(line, 300)}", "", f"{md_code((r.get('target') or {}).get('ref', '?'))} (run {md_code(r['run_id'])})"]
    if view.baseline:
        bref = (view.baseline.get("target") or {}).get("ref", "?")
        out[-1] += f" against {md_code(bref)} (run {md_code(view.baseline.get('run_id', '?'))})"
    out.append("")
    out += [f"> {md_cell(n, 300)}" for n in view.notes] + ([""] if view.notes else [])
    conf = finite((r.get("bootstrap") or {}).get("confidence"))
    ci = f"{conf * 100:g}% CI" if conf else "CI"
    if view.baseline:
        out += [f"| metric | {new} [{ci}] | {old} [{ci}] | Δ [{ci}] | P(better) |", "|---|---:|---:|---:|---:|"]
        for m in view.metrics:
            out.append(
                f"| {md_cell(m.name)} | {fmt_ci(m.candidate, m.scale)} | {fmt_ci(m.baseline, m.scale)} "
                f"| {fmt_ci(m.delta, m.scale, signed=True)} | {fmt_pct(m.p_better)} |"
            )
    else:
        out += [f"| metric | value [{ci}] |", "|---|---:|"]
        out += [f"| {md_cell(m.name)} | {fmt_ci(m.candidate, m.scale)} |" for m in view.metrics]
    if view.gates:
        out += ["", "### Gates", "", "| | gate | metric | rule | threshold | value | detail |", "|---|---|---|---|---:|---:|---|"]
        for g in view.gates:
            s = view.scale.get(g["metric"], 1.0)
            out.append(
                f"| {'✅' if g['passed'] else '❌'} | {md_cell(g['name'])} | {md_cell(g['metric'])} | {md_cell(g['kind'])} "
                f"| {fmt(g['threshold'], s)} | {fmt(g['value'], s, signed=g['kind'] == 'max_regression')} "
                f"| {md_cell(g['detail'], 160)} |"
            )
    if view.flips:
        shown = view.flips[:MD_EXAMPLES]
        down = sum(f.regressed for f in view.flips)
        out += ["", f"### Examples that flipped: {down} regressed, {len(view.flips) - down} fixed", "",
                f"| example | metric | {old} → {new} | |", "|---|---|---:|---|"]
        for f in shown:
            s = view.scale.get(f.metric, 1.0)
            what = "regressed" if f.regressed else "fixed"
            out.append(
                f"| {md_cell(f.id, 40)} | {md_cell(f.metric)} | {fmt(f.before, s)} → {fmt(f.after, s)} "
                f"| {'🔻' if f.regressed else '🔺'} {what} (threshold {fmt(f.threshold, s)}) |"
            )
        out += _left_out(len(view.flips) - len(shown), page)
    drops = view.drops
    if drops and view.primary:
        s = view.scale.get(view.primary, 1.0)
        out += ["", f"### Biggest drops in {md_cell(view.primary)}", "",
                f"| example | Δ | prediction | {old} prediction | reference |", "|---|---:|---|---|---|"]
        for e in drops[:MD_EXAMPLES]:
            out.append(
                f"| {md_cell(e.id, 40)} | {fmt(e.change, s, signed=True)} | {md_cell(e.prediction)} "
                f"| {md_cell(e.baseline_prediction)} | {md_cell(e.reference)} |"
            )
        out += _left_out(len(drops) - MD_EXAMPLES, page)
    out += ["", "<details><summary>Versions measured</summary>", ""]
    out += [f"- **{k}**: {md_cell(v, 600)}" for k, v in _versions(view)]
    out += ["", "</details>", ""]
    return "\n".join(out)


def _left_out(n: int, page: str) -> list[str]:
    return ["", f"_…and {n} more, left out here: see {page}_"] if n > 0 else []


# ---------------------------------------------------------------- JUnit XML

def _gate_figures(view: View, g: dict[str, Any]) -> tuple[str, str]:
    """(one-line message, longer text) with the figures behind a gate's outcome."""
    m = next((m for m in view.metrics if m.name == g["metric"]), None)
    s = m.scale if m else 1.0
    value, threshold = fmt(g["value"], s), fmt(g["threshold"], s)
    if g["kind"] == "min":
        message = f"{g['metric']} = {value}, {'at least' if g['passed'] else 'below'} the minimum {threshold}"
    elif g["kind"] == "max_regression":
        change = fmt(g["value"], s, signed=True)
        message = f"{g['metric']} changed by {change}, {'within' if g['passed'] else 'beyond'} the allowed regression {threshold}"
    else:
        message = f"{g['metric']} = {value}, {g['kind']} {threshold}"
    lines = [message] + ([g["detail"]] if g["detail"] else [])
    if m:
        lines.append(f"candidate {m.name}: {fmt_ci(m.candidate, s)}")
        if m.baseline:
            lines.append(f"baseline {m.name}: {fmt_ci(m.baseline, s)}")
        if m.delta:
            lines.append(f"delta: {fmt_ci(m.delta, s, signed=True)}, P(better) {fmt_pct(m.p_better)}")
        worst = sorted(
            (e for e in view.examples if e.scores.get(m.name, (None,))[0] is not None),
            key=lambda e: (e.scores[m.name][2] if view.baseline and e.scores[m.name][2] is not None else e.scores[m.name][0], e.id),
        )[:5]
        if worst:
            lines.append("lowest examples: " + ", ".join(f"{e.id} ({fmt(e.scores[m.name][0], s)})" for e in worst))
    return _text(message), _text("\n".join(lines))


def junit(view: View) -> str:
    """junit.xml: one <testcase> per gate (classname = suite name), a <failure> with the figures."""
    r = view.result
    suite = _text(r["suite"].get("name", "eval"))
    seconds = finite((r.get("counts") or {}).get("seconds")) or 0.0
    failures = len(view.failed_gates)
    attrs = {"tests": str(len(view.gates)), "failures": str(failures), "errors": "0", "time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", {"name": f"llmops eval {suite}", **attrs})
    ts = ET.SubElement(root, "testsuite", {"name": suite, "skipped": "0", "timestamp": _text(r.get("created_at", "")), **attrs})
    props = ET.SubElement(ts, "properties")
    for key, value in (("run_id", r["run_id"]), *_versions(view)):
        ET.SubElement(props, "property", {"name": _text(key), "value": _text(value)})
    for g in view.gates:
        case = ET.SubElement(ts, "testcase", {"classname": suite, "name": _text(g["name"]), "time": "0"})
        message, text = _gate_figures(view, g)
        if g["passed"]:
            ET.SubElement(case, "system-out").text = text
        else:
            fail = ET.SubElement(case, "failure", {"message": message, "type": _text(g["kind"])})
            fail.text = text
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ---------------------------------------------------------------- HTML


@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["pct"] = fmt_pct
    return env


def html(view: View) -> str:
    """report.html: one page, inline CSS and SVG, no script, no external reference."""
    minimums = {g["metric"]: finite(g["threshold"]) for g in view.gates if g["kind"] == "min"}
    charts = {
        m.name: metric_chart(m.name, m.scale, m.candidate, m.baseline, minimum=minimums.get(m.name),
                             labels=("run B", "run A") if view.mode == "compare" else ("candidate", "baseline"))
        for m in view.metrics
    }
    deltas = None
    if view.baseline and any(m.delta for m in view.metrics):
        deltas = delta_chart([
            (m.name, m.delta.value, m.delta.low, m.delta.high, m.scale) for m in view.metrics if m.delta
        ])
    histogram = None
    if view.baseline and view.primary:
        histogram = delta_histogram([e.change for e in view.examples], view.scale[view.primary], view.primary)
    passed, line = verdict(view)
    conf = finite((view.result.get("bootstrap") or {}).get("confidence"))
    return _env().get_template("report.html.j2").render(
        v=view,
        r=view.result,
        passed=passed,
        verdict=line,
        ci=f"{conf * 100:g}% CI" if conf else "CI",
        charts=charts,
        deltas=deltas,
        histogram=histogram,
        examples=view.examples[:HTML_EXAMPLES],
        left_out=max(0, len(view.examples) - HTML_EXAMPLES),
        versions=_versions(view),
        corpus_json=json.dumps(json_safe(view.result.get("corpus")), indent=1, sort_keys=True, ensure_ascii=False),
        clip=HTML_CLIP,
        ci_text=fmt_ci,
        direction=_direction,
    )
