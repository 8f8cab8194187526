"""What a suite measures, resolved to exact versions, and batched generation through it.

A prompt target renders the prompt per row and hands the backend one `batch` of requests; a chain
target runs its pinned plan step by step over all rows at once, so every `generate` step is one
backend `batch` (retrieval, rendering and parsing run per row). Resolving never generates: it pins
the versions and loads the backend, so bad input is refused before any model work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from llmops.errors import LLMOpsError, SpecError

__all__ = ["ResolvedTarget", "resolve_target"]


@dataclass
class ResolvedTarget:
    kind: str                                  # "chain" | "prompt"
    ref: str                                   # the main version measured, e.g. prompt/qa@3
    versions: list[Any]                        # AssetVersions: every version measured
    inputs: dict[str, Any]                     # input name -> VariableSpec
    generation: dict[str, Any]                 # effective params (per generate step for chains)
    prepare: Callable[[dict], Any]             # inputs -> a prepared item (validated / rendered); may raise
    generate: Callable[[list[Any]], list[str]]  # prepared items -> predictions, batched
    counts: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})

    @property
    def digests(self) -> dict[str, str]:
        return {v.ref: v.digest for v in self.versions}


def _field_error(suite: Any, name: str, exc: LLMOpsError) -> SpecError:
    return suite.error(f"target.{name}", f"cannot resolve {getattr(suite.spec.target, name)!r}: {exc}")


def resolve_target(ws: Any, suite: Any) -> ResolvedTarget:
    """Pin the suite's target (a SpecError naming `target.*` when a ref cannot be resolved)."""
    t = suite.spec.target
    override = suite.spec.generation.as_dict()
    if t.chain is not None:
        try:
            chain = ws.chains.load(t.chain)
        except LLMOpsError as exc:
            raise _field_error(suite, "chain", exc) from None
        return _chain_target(chain, override)
    from llmops.chains.steps import _model
    from llmops.finetune.adapters import resolve_adapter
    from llmops.models import load_backend

    try:
        prompt = ws.prompts.get(t.prompt)
    except LLMOpsError as exc:
        raise _field_error(suite, "prompt", exc) from None
    try:
        model_av = _model(ws, t.model)
    except LLMOpsError as exc:
        raise _field_error(suite, "model", exc) from None
    versions, adapter_path = [prompt.asset, model_av], None
    if t.adapter:
        try:  # a bare name is @production, else latest; an adapter of another base is refused
            adapter_av, adapter_path = resolve_adapter(ws, t.adapter, model_av)
        except LLMOpsError as exc:
            raise _field_error(suite, "adapter", exc) from None
        versions.append(adapter_av)
    backend = load_backend(model_av.spec, adapter_path=adapter_path)
    params = {**prompt.model_params.as_dict(), **override}
    target = ResolvedTarget("prompt", prompt.asset.ref, versions, dict(prompt.variables), params,
                            prepare=lambda inputs: _request(prompt.render_vars(inputs), params),
                            generate=lambda reqs: [])
    target.generate = lambda reqs: _texts(target, backend.batch(reqs))
    return target


def _request(rendered: Any, params: dict) -> Any:
    from llmops.models import Request

    if isinstance(rendered, list):
        return Request.chat(rendered, **params)
    return Request.completion(str(rendered), **params)


def _texts(target: ResolvedTarget, generations: list) -> list[str]:
    for g in generations:
        target.counts["prompt_tokens"] += g.prompt_tokens
        target.counts["completion_tokens"] += g.completion_tokens
    return [g.text for g in generations]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _chain_target(chain: Any, override: dict) -> ResolvedTarget:
    from llmops.chains.steps import GenerateStep

    pinned = chain.pinned
    params = {name: {**pinned.bound[name].params, **override}
              for name in pinned.plan.order if isinstance(pinned.steps[name], GenerateStep)}
    target = ResolvedTarget("chain", chain.ref, pinned.all_used(), dict(pinned.spec.inputs), params,
                            prepare=chain.coerce_inputs, generate=lambda rows: [])
    target.generate = lambda rows: [_as_text(v) for v in _run_plan(target, pinned, rows, params)]
    return target


def _run_plan(target: ResolvedTarget, pinned: Any, rows: list[dict], params: dict) -> list[Any]:
    """The chain's plan over all rows at once: each generate step is one backend batch."""
    from llmops.chains.runner import StepCall, Trace, _execute
    from llmops.chains.steps import GenerateStep

    def run_chain(sub: Any, inputs: dict) -> Any:
        gen = _execute(sub, dict(inputs), Trace(), None)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value

    plan, values = pinned.plan, [dict(r) for r in rows]
    traces = [Trace() for _ in rows]
    for name in plan.order:
        step, bound = pinned.steps[name], pinned.bound.get(name)
        calls = [StepCall(pinned.av.ref, step, {p: v[src] for p, src in plan.wiring[name].items()}, bound, trace,
                          run_chain) for v, trace in zip(values, traces)]
        if isinstance(step, GenerateStep):
            requests = [_request(c.inputs["prompt"], params[name]) for c in calls]
            outputs = _texts(target, bound.backend.batch(requests))
        else:
            outputs = [step.run(c) for c in calls]
        for v, out in zip(values, outputs):
            v[step.out] = out
    return [v[plan.output] for v in values]
