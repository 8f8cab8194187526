"""Chains as LangChain Runnables: `ws.chains.load("rag-qa@production").invoke({"question": ...})`.

Loading a chain resolves every ref it names (the chain, its prompts, index, model, adapter and
sub-chains) to one pinned version, once (each step's `pin`): an alias that moves later never
changes a loaded chain. Each call is a run of kind `chain` with `used` edges to exactly those
versions, its inputs and output as tags, and per-step latency and token counts as metrics; the
result carries the run id. The runner follows the plan and knows no step type: each step `run`s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Iterator

from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ValidationError

from llmops.chains.plan import ChainPlan
from llmops.chains.spec import ChainSpec, StepSpec, input_model
from llmops.errors import SpecError

if TYPE_CHECKING:
    from llmops.store.registry import AssetVersion

__all__ = ["ChainResult", "LLMOpsChain", "Pinned", "Pinning", "StepCall", "Trace", "TracedDict", "TracedList",
           "TracedStr", "traced"]


class TracedStr(str):
    """A chain's text output that also carries the id of the run that produced it."""

    run_id: str | None = None


class TracedDict(dict):
    run_id: str | None = None


class TracedList(list):
    run_id: str | None = None


def traced(value: Any, run_id: str) -> Any:
    for kind, cls in ((str, TracedStr), (dict, TracedDict), (list, TracedList)):
        if isinstance(value, kind):
            out = cls(value)
            out.run_id = run_id
            return out
    return value


@dataclass
class ChainResult:
    output: Any
    run_id: str
    used: list[str]
    steps: dict[str, float] = field(default_factory=dict)  # step -> latency in ms
    tokens: dict[str, int] = field(default_factory=dict)
    retrieved: dict[str, list[dict]] = field(default_factory=dict)  # retrieve step -> documents it returned

    def to_dict(self) -> dict:
        return {"output": self.output, "run_id": self.run_id, "used": self.used,
                "latency_ms": self.steps, "tokens": self.tokens, "retrieved": self.retrieved}


@dataclass
class Pinned:
    """A chain version with every ref it names resolved to one version; `bound[step]` is what the
    step's `pin` returned (a compiled prompt, an index, a backend, a pinned sub-chain)."""

    av: AssetVersion
    spec: ChainSpec
    plan: ChainPlan
    bound: dict[str, Any] = field(default_factory=dict)
    used: list[AssetVersion] = field(default_factory=list)
    subchains: list[Pinned] = field(default_factory=list)
    steps: dict[str, StepSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.steps = {s.name: s for s in self.spec.steps}

    def all_used(self) -> list[AssetVersion]:
        out = [self.av, *self.used]
        for sub in self.subchains:
            out += sub.all_used()
        return list(dict.fromkeys(out))


@dataclass
class Pinning:
    """What a step's `pin` works with: the workspace, the step, and the steps pinned before it."""

    ws: Any
    pinned: Pinned
    step: StepSpec
    pin_chain: Callable[[str], Pinned]

    def use(self, av: AssetVersion) -> None:
        """Record that the chain uses this version (a `used` edge on every call)."""
        self.pinned.used.append(av)

    def source(self, param: str) -> Any:
        """What the step feeding `param` of the current step was pinned to (None for a chain input)."""
        value = self.pinned.plan.wiring[self.step.name].get(param)
        producer = self.pinned.plan.producer(self.pinned.spec, value) if value else None
        return self.pinned.bound.get(producer.name) if producer is not None else None

    def chain(self, ref: str) -> Pinned:
        """Pin a sub-chain; its versions count as used by this chain."""
        sub = self.pin_chain(ref)
        self.pinned.subchains.append(sub)
        return sub


def pin(ws: Any, av: AssetVersion, spec: ChainSpec, plan: ChainPlan, pin_chain: Callable[[str], Pinned]) -> Pinned:
    """Pin every step, in run order (so a step can see what feeds it)."""
    pinned = Pinned(av=av, spec=spec, plan=plan)
    steps = pinned.steps
    for name in plan.order:
        pinned.bound[name] = steps[name].pin(Pinning(ws, pinned, steps[name], pin_chain))
    return pinned


@dataclass
class Trace:
    """What one call records besides values: step latencies, tokens and retrieved documents."""

    latency: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    retrieved: dict[str, list[dict]] = field(default_factory=dict)

    def count_tokens(self, generation: Any) -> None:
        self.tokens["prompt"] += generation.prompt_tokens
        self.tokens["completion"] += generation.completion_tokens


@dataclass
class StepCall:
    """What a step's `run` gets: its parameters' values, what it was pinned to, and the trace."""

    chain: str            # the chain version's ref, for messages
    step: StepSpec
    inputs: dict[str, Any]
    bound: Any
    trace: Trace
    run_chain: Callable[[Pinned, dict], Any]


class _Captured:
    """Iterate a generator and keep what it returns."""

    def __init__(self, gen: Any):
        self.gen, self.value = gen, None

    def __iter__(self) -> Iterator[str]:
        self.value = yield from self.gen


class LLMOpsChain(Runnable[dict, Any]):
    """A pinned chain version as a LangChain Runnable (`invoke`, `batch`, `stream`, `ainvoke`)."""

    def __init__(self, ws: Any, pinned: Pinned):
        self._ws = ws
        self.pinned = pinned
        self._input_model = input_model(pinned.spec)
        self._stream_plan = _stream_plan(pinned)

    def __repr__(self) -> str:
        return f"<LLMOpsChain {self.ref}>"

    @property
    def ref(self) -> str:
        return self.pinned.av.ref

    @property
    def versions(self) -> list[str]:
        """Every version this chain resolved at load time."""
        return [v.ref for v in self.pinned.all_used()]

    @property
    def InputType(self) -> type[BaseModel]:  # noqa: N802 - LangChain's name
        return self._input_model

    @property
    def OutputType(self) -> Any:  # noqa: N802
        return Any

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self._input_model

    def coerce_inputs(self, inputs: Any) -> dict:
        """Validate a call's inputs with the chain's input model: missing, unknown or mistyped is an error."""
        names = ", ".join(self.pinned.spec.inputs) or "none"
        if not isinstance(inputs, dict):
            raise SpecError(f"chain {self.ref} takes a dict of inputs ({names}), got {type(inputs).__name__}")
        try:
            return self._input_model.model_validate(inputs).model_dump()
        except ValidationError as exc:
            # a misspelt name first: it usually explains the "missing" one as well
            rank = {"extra_forbidden": 0, "missing": 1}
            error = min(exc.errors(include_url=False), key=lambda e: rank.get(e["type"], 2))
            name = str(error["loc"][0]) if error["loc"] else "?"
            if error["type"] == "missing":
                raise SpecError(f"chain {self.ref}: missing input {name!r}", fix=f"pass {name}=...") from None
            if error["type"] == "extra_forbidden":
                raise SpecError(f"chain {self.ref}: unknown input {name!r}", fix=f"inputs are: {names}") from None
            var = self.pinned.spec.inputs[name]
            raise SpecError(f"chain {self.ref}: input {name!r} must be {var.type}, "
                            f"got {type(inputs[name]).__name__} ({error['msg']})") from None

    # Runnable -------------------------------------------------------------------------
    def invoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.invoke_traced(input).output

    def stream(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Text deltas of the final generation as they come (concatenated, they equal `invoke`)."""
        yield from self._traced(self.coerce_inputs(input), streaming=True)

    def invoke_traced(self, inputs: dict) -> ChainResult:
        """Run once with `inputs` (validated first) and return the output with its trace."""
        gen = self._traced(self.coerce_inputs(inputs), streaming=False)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value

    def execute(self, inputs: dict, *, stream: bool = False) -> Generator[Any, None, tuple[Any, Trace]]:
        """Run once without opening a run; yields the output's text deltas when `stream` (the whole
        output once, when it cannot stream), returns `(output, Trace)`.

        For callers that record the call themselves, off their request path (the HTTP server's tracer):
        nothing is written to the store here.
        """
        return self._execute(self.coerce_inputs(inputs), stream)

    def _execute(self, inputs: dict, stream: bool) -> Generator[Any, None, tuple[Any, Trace]]:
        trace = Trace()
        output = yield from _execute(self.pinned, dict(inputs), trace, self._stream_plan if stream else None)
        if stream and self._stream_plan is None:
            yield output
        return output, trace

    def _traced(self, inputs: dict, streaming: bool):
        """Run the chain inside a run; yields text deltas when streaming, returns the ChainResult."""
        ws, pinned = self._ws, self.pinned
        with ws.start_run(pinned.spec.name, kind="chain") as run:
            for av in pinned.all_used():
                run.record_used(av)
            run.log_param("chain", pinned.av.ref)
            run.set_tag("inputs", json.dumps(inputs, ensure_ascii=False, default=str))
            output, trace = yield from self._execute(inputs, streaming)
            output = traced(output, run.id)
            run.set_tag("output", json.dumps(output, ensure_ascii=False, default=str))
            run.log_metrics({f"latency_ms.{k}": v for k, v in trace.latency.items()})
            run.log_metrics({"tokens.prompt": trace.tokens["prompt"], "tokens.completion": trace.tokens["completion"]})
        return ChainResult(output=output, run_id=run.id, used=[v.ref for v in pinned.all_used()],
                           steps=trace.latency, tokens=trace.tokens, retrieved=trace.retrieved)


def _stream_plan(pinned: Pinned) -> tuple[str, str | None] | None:
    """(step that streams, step that relays its deltas as the chain output, or None), when the
    chain's output can stream: the final step streams, or passes on the stream of the step feeding it."""
    plan, spec = pinned.plan, pinned.spec
    final = plan.producer(spec, plan.output)
    if final is None:
        return None
    if final.streams:
        return final.name, None
    param = final.passes_stream()
    feeding = plan.producer(spec, plan.wiring[final.name].get(param, "")) if param else None
    if feeding is not None and feeding.streams:
        return feeding.name, final.name
    return None


def _execute(pinned: Pinned, values: dict, trace: Trace, stream_plan: tuple[str, str | None] | None):
    """Run the plan; a generator so the output can stream (it yields text deltas)."""
    plan, steps = pinned.plan, pinned.steps

    def run_chain(sub: Pinned, inputs: dict) -> Any:
        gen = _execute(sub, dict(inputs), trace, None)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value

    for name in plan.order:
        step = steps[name]
        call = StepCall(pinned.av.ref, step, {p: values[v] for p, v in plan.wiring[name].items()},
                        pinned.bound.get(name), trace, run_chain)
        t0 = time.perf_counter()
        if stream_plan is not None and name == stream_plan[0]:
            captured = _Captured(step.stream(call))
            relay = steps[stream_plan[1]].relay if stream_plan[1] else iter
            yield from relay(iter(captured))
            value = captured.value
        else:
            value = step.run(call)
        trace.latency[name] = round((time.perf_counter() - t0) * 1000, 3)
        values[step.out] = value
    return values[plan.output]
