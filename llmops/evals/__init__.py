"""Evaluation harness: suites (YAML) run on chains, prompts and adapters, scored, compared, gated.

    from llmops.evals import evaluate, promote
    result = evaluate(ws, "evals/qa.yaml", baseline="production")   # the llmops.eval/1 result dict
    result["passed"], result["metrics"]["rougeL"]["value"]
    promote(ws, "prompt/qa", "production", 3, "evals/qa.yaml")       # moves the alias only if it passes

Metrics live in `scoring` (evaluate modules under `metrics/`), reports in `report`.
"""

from __future__ import annotations

from llmops.evals.runner import evaluate, load_result, promote, write_reports
from llmops.evals.suite import Suite, SuiteSpec, load_suite

__all__ = ["Suite", "SuiteSpec", "evaluate", "load_result", "load_suite", "promote", "write_reports"]
