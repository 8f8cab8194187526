"""Prompt rendering and lookup costs, against plain Jinja2 measured in the same run.

    .venv/bin/python benchmarks/prompts.py [--calls 20000]

Rendering: `Prompt.render(**vars)` (sandboxed, StrictUndefined, variables type-checked) against
`jinja2.Template(source).render(**vars)` on the same template and values (goal: within 2x), with
LangChain's `PromptTemplate.format` for reference. Lookup: `ws.prompts.get("qa@3")` on a pinned
version, served from the in-process cache (goal: under 50 µs, no store query), against an alias get
that goes to the store. Figures are the median of several repeats, per call. Writes
benchmarks/out/prompts.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 7


def per_call(fn, calls: int) -> float:
    """Median seconds per call of `fn` over REPEATS batches of `calls` calls."""
    fn()  # warm: compile caches, first store connection
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000, help="calls per repeat for the fast paths")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import jinja2
    from sqlalchemy import event

    import llmops
    from llmops.prompts import Prompt

    results: dict[str, dict] = {}
    lines = []

    # -- rendering -----------------------------------------------------------------------------
    cases = {
        "summarize (text, 2 vars, 1 default)": (ROOT / "prompts" / "summarize.yaml", {"text": "A short passage. " * 20}),
        "qa (chat, 2 messages)": (ROOT / "prompts" / "qa.yaml", {"question": "How many vacation days do I get?"}),
        "rag-qa (chat, loop over 4 docs)": (ROOT / "prompts" / "rag-qa.yaml", {
            "question": "How many vacation days do I get?",
            "context": [{"text": f"Passage {i} about leave.", "source": f"doc{i}.md"} for i in range(4)]}),
    }
    for label, (path, values) in cases.items():
        prompt = Prompt.from_file(path)
        spec = prompt.spec
        defaults = {n: v.default for n, v in spec.variables.items() if not v.required}
        full = {**defaults, **values}
        plain = [jinja2.Template(src) for _, src in spec.sources()]
        if len(plain) == 1:
            def plain_render(t=plain[0]):
                return t.render(**full)
        else:
            def plain_render(ts=plain, roles=[m.role for m in spec.messages]):
                return [{"role": r, "content": t.render(**full)} for r, t in zip(roles, ts)]
        assert plain_render() == prompt.render(**values), label
        lc = prompt.to_langchain()
        lc_call = (lambda: lc.format(**values)) if not prompt.is_chat else (lambda: lc.format_messages(**values))
        ours = per_call(lambda: prompt.render(**values), args.calls)
        base = per_call(plain_render, args.calls)
        lang = per_call(lc_call, max(args.calls // 10, 100))
        results[label] = {"llmops_us": ours * 1e6, "jinja2_us": base * 1e6, "langchain_us": lang * 1e6,
                          "ratio_vs_jinja2": ours / base}
        lines.append(f"render {label:38} llmops {ours*1e6:7.2f} µs   jinja2.Template {base*1e6:7.2f} µs   "
                     f"ratio {ours/base:4.2f}x (goal <= 2x)   langchain {lang*1e6:8.1f} µs")

    # -- lookup --------------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        ws = llmops.Workspace(tmp)
        folder = Path(tmp) / "prompts"
        folder.mkdir()
        text = (ROOT / "prompts" / "qa.yaml").read_text()
        for i in range(3):  # qa@1..3
            (folder / "qa.yaml").write_text(text.replace("at most {{ max_sentences }}", f"at most {{{{ max_sentences }}}} ({i})"))
            ws.prompts.push_folder(folder)
        ws.prompts.set_alias("qa", "production", 3)
        statements: list[str] = []
        event.listen(ws.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        ws.prompts.get("qa@3")
        statements.clear()
        pinned = per_call(lambda: ws.prompts.get("qa@3"), args.calls)
        pinned_queries = len(statements)
        alias = per_call(lambda: ws.prompts.get("qa@production"), max(args.calls // 50, 50))
        with ws.start_run("bench"):
            in_run = per_call(lambda: ws.prompts.get("qa@3"), args.calls)
        ws.close()
    results["get"] = {"pinned_us": pinned * 1e6, "pinned_store_queries": pinned_queries,
                      "alias_us": alias * 1e6, "pinned_in_active_run_us": in_run * 1e6,
                      "alias_vs_pinned": alias / pinned}
    lines.append(f"get qa@3 (pinned, cached)          {pinned*1e6:7.2f} µs   store queries: {pinned_queries}   "
                 f"(goal < 50 µs, 0 queries)")
    lines.append(f"get qa@3 inside an active run      {in_run*1e6:7.2f} µs")
    lines.append(f"get qa@production (alias, store)   {alias*1e6:7.2f} µs   = {alias/pinned:6.0f}x the pinned get")

    print("\n".join(lines))
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
