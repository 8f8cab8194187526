"""Chains as LangChain Runnables: `ws.chains.load("rag-qa@production").invoke({"question": ...})`.

Loading a chain resolves every ref it names (the chain, its prompts, index, model, adapter and
sub-chains) to one pinned version, once: an alias that moves later never changes a loaded chain.
Each call is a run of kind `chain` with `used` edges to exactly those versions, its inputs and
output as tags, and per-step latency and token counts as metrics; the result carries the run id.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, create_model

from llmops.errors import AssetNotFound, SpecError
from llmops.prompts.chain_spec import ChainPlan, ChainSpec, GenerateStep, ParseStep, PromptStep, RetrieveStep
from llmops.prompts.spec import value_matches
from llmops.store.registry import AssetVersion

_PY_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict, "any": Any}


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
    """A chain version with every ref it names resolved to one version (and loaded)."""

    av: AssetVersion
    spec: ChainSpec
    plan: ChainPlan
    steps: dict[str, Any]  # step name -> step spec
    prompts: dict[str, Any] = field(default_factory=dict)  # step -> Prompt
    indexes: dict[str, Any] = field(default_factory=dict)  # step -> rag Index
    backends: dict[str, Any] = field(default_factory=dict)  # step -> models Backend
    subchains: dict[str, "Pinned"] = field(default_factory=dict)
    used: list[AssetVersion] = field(default_factory=list)

    def all_used(self) -> list[AssetVersion]:
        out = [self.av, *self.used]
        for sub in self.subchains.values():
            out += sub.all_used()
        return list(dict.fromkeys(out))


class ChainRegistry:
    """`ws.chains`: load chain versions as Runnables, or invoke one and get its trace."""

    def __init__(self, ws):
        self._ws = ws

    def load(self, ref: str) -> "LLMOpsChain":
        return LLMOpsChain(self._ws, self.pin(ref))

    def invoke_traced(self, ref: str, inputs: dict) -> ChainResult:
        chain = self.load(ref)
        return chain.invoke_traced(chain.coerce_inputs(inputs))

    def pin(self, ref: str) -> Pinned:
        ws = self._ws
        av, spec, plan = ws.prompts.chain(ref, check_external=False)
        pinned = Pinned(av=av, spec=spec, plan=plan, steps={s.name: s for s in spec.steps})
        for step in spec.steps:
            if isinstance(step, PromptStep):
                prompt = ws.prompts.get(step.prompt)
                pinned.prompts[step.name] = prompt
                pinned.used.append(prompt.asset)
            elif isinstance(step, RetrieveStep):
                index = ws.rag.index(step.index)
                pinned.indexes[step.name] = index
                pinned.used.append(index.av)
            elif isinstance(step, GenerateStep):
                model_av = self._model(step.model)
                adapter_av = ws.registry.get(_ref("adapter", step.adapter), record=False) if step.adapter else None
                from llmops.models import load_backend

                adapter_path = self._adapter_folder(adapter_av) if adapter_av else None
                pinned.backends[step.name] = load_backend(model_av.spec, adapter_path=adapter_path)
                pinned.used += [model_av] + ([adapter_av] if adapter_av else [])
            elif step.type == "chain":
                pinned.subchains[step.name] = self.pin(step.chain)
        return pinned

    def _model(self, ref: str) -> AssetVersion:
        """A model asset; the embedded model (or a local path) is registered on first use."""
        from llmops.models import register_model
        from llmops.models.sources import is_local_source

        try:
            return self._ws.registry.get(_ref("model", ref), record=False)
        except AssetNotFound:
            if "@" in ref or not is_local_source(ref):
                raise
            return register_model(self._ws, ref.split("/")[-1], ref.split("/")[-1], message="registered on first use")

    def _adapter_folder(self, av: AssetVersion) -> Path:
        """The adapter's files laid out as a PEFT folder, once per digest (written atomically)."""
        target = self._ws.home / "cache" / "adapters" / av.digest
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
            for name in av.files:
                dest = tmp / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self._ws.registry.file_path(av, name), dest)
            try:
                tmp.rename(target)
            except OSError:  # another process laid it out first
                shutil.rmtree(tmp, ignore_errors=True)
        return target


def _ref(kind: str, ref: str) -> str:
    return ref if ref.startswith(f"{kind}/") else f"{kind}/{ref}"


class LLMOpsChain(Runnable[dict, Any]):
    """A pinned chain version as a LangChain Runnable (`invoke`, `batch`, `stream`, `ainvoke`)."""

    def __init__(self, ws, pinned: Pinned):
        self._ws = ws
        self.pinned = pinned
        spec = pinned.spec
        fields = {name: (_PY_TYPES.get(var.type, Any), ... if var.default is None else var.default)
                  for name, var in spec.inputs.items()}
        self._input_model = create_model(f"{_model_name(spec.name)}Input", **fields)

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

    def coerce_inputs(self, inputs: dict) -> dict:
        """Check inputs against the chain's declared ones: missing, unknown or mistyped is an error."""
        spec = self.pinned.spec
        if not isinstance(inputs, dict):
            raise SpecError(f"chain {self.ref} takes a dict of inputs ({', '.join(spec.inputs)}), got {type(inputs).__name__}")
        unknown = sorted(set(inputs) - set(spec.inputs))
        if unknown:
            raise SpecError(f"chain {self.ref}: unknown input {unknown[0]!r}", fix=f"inputs are: {', '.join(spec.inputs)}")
        out = {}
        for name, var in spec.inputs.items():
            if name in inputs:
                value = inputs[name]
                if var.type in ("int", "float") and isinstance(value, str):  # from a CLI or a form
                    try:
                        value = int(value) if var.type == "int" else float(value)
                    except ValueError:
                        pass
                if not value_matches(var.type, value):
                    raise SpecError(f"chain {self.ref}: input {name!r} must be {var.type}, got {type(value).__name__}")
                out[name] = value
            elif var.default is not None:
                out[name] = var.default
            else:
                raise SpecError(f"chain {self.ref}: missing input {name!r}", fix=f"pass {name}=...")
        return out

    # Runnable -------------------------------------------------------------------------
    def invoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.invoke_traced(self.coerce_inputs(input)).output

    def stream(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Text deltas of the final generation as they come (concatenated, they equal `invoke`)."""
        yield from self._traced(self.coerce_inputs(input), streaming=True)

    def invoke_traced(self, inputs: dict) -> ChainResult:
        gen = self._traced(inputs, streaming=False)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value

    def _traced(self, inputs: dict, streaming: bool):
        """Run the chain inside a run; yields text deltas when streaming, returns the ChainResult."""
        ws, pinned = self._ws, self.pinned
        with ws.start_run(pinned.spec.name, kind="chain") as run:
            for av in pinned.all_used():
                run.record_used(av)
            run.log_param("chain", pinned.av.ref)
            run.set_tag("inputs", json.dumps(inputs, ensure_ascii=False, default=str))
            latency: dict[str, float] = {}
            tokens = {"prompt": 0, "completion": 0}
            retrieved: dict[str, list[dict]] = {}
            output = yield from _execute(pinned, dict(inputs), latency, tokens, retrieved, streaming=streaming)
            output = traced(output, run.id)
            run.set_tag("output", json.dumps(output, ensure_ascii=False, default=str))
            run.log_metrics({f"latency_ms.{k}": v for k, v in latency.items()})
            run.log_metrics({"tokens.prompt": tokens["prompt"], "tokens.completion": tokens["completion"]})
        return ChainResult(output=output, run_id=run.id, used=[v.ref for v in pinned.all_used()],
                           steps=latency, tokens=tokens, retrieved=retrieved)


def _model_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part) or "Chain"


def _execute(pinned: Pinned, values: dict, latency: dict, tokens: dict, retrieved: dict, streaming: bool):
    """Run the plan; a generator so the final generation can stream (it yields text deltas)."""
    plan = pinned.plan
    final_parse = _streamable_tail(pinned) if streaming else None
    for name in plan.order:
        step = pinned.steps[name]
        wiring = plan.wiring[name]
        t0 = time.perf_counter()
        if isinstance(step, RetrieveStep):
            hits = pinned.indexes[name].search(str(values[wiring["query"]]), k=step.k)
            value = retrieved[name] = [h.to_dict() for h in hits]
        elif isinstance(step, PromptStep):
            value = pinned.prompts[name].render_vars({var: values[src] for var, src in wiring.items()})
        elif isinstance(step, GenerateStep):
            value = yield from _generate(pinned, name, step, values[wiring["prompt"]], tokens,
                                         stream=final_parse is not None and name == final_parse[0])
        elif isinstance(step, ParseStep):
            value = _parse(pinned, step, values[wiring["text"]])
        else:  # a sub-chain runs inline, inside this chain's run
            sub_inputs = {k: values[v] for k, v in wiring.items()}
            value = yield from _execute(pinned.subchains[name], sub_inputs, latency, tokens, retrieved, streaming=False)
        latency[name] = round((time.perf_counter() - t0) * 1000, 3)
        values[step.out] = value
    if final_parse is None and streaming:
        yield values[plan.output]
    return values[plan.output]


def _streamable_tail(pinned: Pinned) -> tuple[str, str] | None:
    """(generate step, parse step) when the chain ends in generate -> parse text; those can stream."""
    plan = pinned.plan
    last = pinned.steps[plan.order[-1]]
    if isinstance(last, ParseStep) and last.parser == "text" and last.out == plan.output:
        feeding = next((s for s in pinned.spec.steps if s.out == plan.wiring[last.name]["text"]), None)
        if isinstance(feeding, GenerateStep):
            return feeding.name, last.name
    return None


def _generate(pinned: Pinned, name: str, step: GenerateStep, rendered: Any, tokens: dict, stream: bool):
    from llmops.models import Request

    params = {}
    source = next((s for s in pinned.spec.steps if s.out == pinned.plan.wiring[name]["prompt"]), None)
    if isinstance(source, PromptStep):
        params.update(pinned.prompts[source.name].model_params.as_dict())
    params.update(step.params.as_dict())
    request = Request.chat(rendered, **params) if isinstance(rendered, list) else Request.completion(str(rendered), **params)
    backend = pinned.backends[name]
    if stream:
        pieces = backend.stream(request)
        yield from _strip_stream(pieces)
        result = pieces.result
    else:
        result = backend.generate(request)
    tokens["prompt"] += result.prompt_tokens
    tokens["completion"] += result.completion_tokens
    return result.text


def _strip_stream(pieces) -> Iterator[str]:
    """Yield deltas whose concatenation equals the stripped full text (as `parse: text` returns)."""
    started, held = False, ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        text = held + piece
        body = text.rstrip()
        held = text[len(body):]
        if body:
            yield body


def _parse(pinned: Pinned, step: ParseStep, text: Any) -> Any:
    text = str(text)
    if step.parser == "text":
        return text.strip()
    if step.parser == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"chain {pinned.av.ref} step '{step.name}': model output is not JSON ({exc}): {text[:200]!r}",
                            fix="ask for JSON in the prompt, or parse with `parser: regex`") from None
    match = re.search(step.pattern, text, flags=re.DOTALL)
    if match is None:
        raise SpecError(f"chain {pinned.av.ref} step '{step.name}': pattern {step.pattern!r} did not match {text[:200]!r}")
    return match.group(1) if match.groups() else match.group(0)
