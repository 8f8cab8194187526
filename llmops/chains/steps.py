"""The built-in step types. Each is one class: its spec fields, `check` (against the plan), `pin`
(resolve its refs to versions when a chain is loaded) and `run`. See `StepSpec` for the contract;
a new step type is one more class like these, registered with `register_step`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Iterator, Literal

from pydantic import Field, model_validator

from llmops.chains.spec import ChainSpec, StepSpec, ref_field, register_step
from llmops.errors import AssetNotFound, SpecError
from llmops.prompts.spec import ModelParams, PromptSpec

if TYPE_CHECKING:
    from llmops.chains.plan import Planner
    from llmops.chains.runner import Pinning, StepCall
    from llmops.store.registry import AssetVersion

__all__ = ["ChainStep", "GenerateStep", "ParseStep", "PromptStep", "RetrieveStep"]

_INPUT = "Value holding the {what} (default: previous step's output)."


@register_step
class RetrieveStep(StepSpec):
    """Search an index for the query text; outputs a list of documents, each a mapping with
    `text`, `source` and `score` (and `metadata`)."""

    type: Literal["retrieve"]
    index: ref_field("index") = Field(description="Index ref: `handbook`, `handbook@3`, `handbook@production`.")
    k: int = Field(4, ge=1, le=1000, description="How many documents to return.")
    input: str | None = Field(None, description=_INPUT.format(what="query text"))

    produces = "documents"

    def check(self, plan: Planner) -> dict[str, str]:
        wiring = plan.read("query", ("str",))
        plan.resolve("index")
        return wiring

    def pin(self, pin: Pinning) -> Any:
        index = pin.ws.rag.index(self.index)
        pin.use(index.av)
        return index

    def run(self, call: StepCall) -> Any:
        hits = call.bound.search(str(call.inputs["query"]), k=self.k)
        docs = call.trace.retrieved[self.name] = [h.to_dict() for h in hits]
        return docs


@register_step
class PromptStep(StepSpec):
    """Render a prompt version; each variable comes from `inputs: {variable: value}` or, when not
    mapped, from the value of the same name. Outputs the rendered prompt (text or chat messages)."""

    type: Literal["prompt"]
    prompt: ref_field("prompt") = Field(description="Prompt ref: `qa`, `qa@3`, `qa@production`.")
    inputs: dict[str, str] = Field(default_factory=dict,
                                   description="Prompt variable -> chain value; unmapped variables read the value of the same name.")

    produces = "prompt"

    def check(self, plan: Planner) -> dict[str, str]:
        prompt = plan.resolve("prompt")
        if isinstance(prompt, PromptSpec):
            return plan.fill("variable", f"prompt {self.prompt}", prompt.variables, self.inputs)
        return dict(self.inputs)

    def pin(self, pin: Pinning) -> Any:
        prompt = pin.ws.prompts.get(self.prompt)
        pin.use(prompt.asset)
        return prompt

    def run(self, call: StepCall) -> Any:
        return call.bound.render_vars(call.inputs)


class _Generation:
    """A pinned generate step: the backend and the params (the prompt's, overridden by the step's)."""

    def __init__(self, backend: Any, params: dict[str, Any]):
        self.backend, self.params = backend, params

    def request(self, rendered: Any) -> Any:
        from llmops.models import Request

        if isinstance(rendered, list):
            return Request.chat(rendered, **self.params)
        return Request.completion(str(rendered), **self.params)


@register_step
class GenerateStep(StepSpec):
    """Generate text from a rendered prompt (`input`) with a model and optionally a LoRA adapter."""

    type: Literal["generate"]
    model: ref_field("model") = Field(description="Model ref, e.g. `smollm2`.")
    adapter: ref_field("adapter") | None = Field(None, description="Adapter ref, e.g. `qa-lora@3`; a bare name is `@production`, else latest.")
    params: ModelParams = Field(default_factory=ModelParams,
                                description="Generation params; override the prompt's model_params.")
    input: str | None = Field(None, description=_INPUT.format(what="rendered prompt"))

    produces = "str"
    streams = True

    def check(self, plan: Planner) -> dict[str, str]:
        wiring = plan.read("prompt", ("prompt", "str"))
        plan.resolve("model")
        if self.adapter:
            plan.resolve("adapter")
        return wiring

    def pin(self, pin: Pinning) -> Any:
        from llmops.models import load_backend

        model_av = _model(pin.ws, self.model)
        pin.use(model_av)
        adapter_path = None
        if self.adapter:
            from llmops.finetune.adapters import resolve_adapter

            # a bare name is @production, else latest; an adapter of another base is refused, never loaded
            adapter_av, adapter_path = resolve_adapter(pin.ws, self.adapter, model_av)
            pin.use(adapter_av)
        source = pin.source("prompt")  # a Prompt when a prompt step feeds this one
        prompt_params = getattr(source, "model_params", None)
        params = {**(prompt_params.as_dict() if prompt_params is not None else {}), **self.params.as_dict()}
        return _Generation(load_backend(model_av.spec, adapter_path=adapter_path), params)

    def run(self, call: StepCall) -> Any:
        result = call.bound.backend.generate(call.bound.request(call.inputs["prompt"]))
        call.trace.count_tokens(result)
        return result.text

    def stream(self, call: StepCall) -> Iterator[str]:
        pieces = call.bound.backend.stream(call.bound.request(call.inputs["prompt"]))
        yield from pieces
        call.trace.count_tokens(pieces.result)
        return pieces.result.text


def _model(ws: Any, ref: str) -> AssetVersion:
    """A model asset; the embedded model (or a local path) is registered on first use."""
    from llmops.models import model_spec
    from llmops.models.sources import is_local_source
    from llmops.store.refs import parse_ref

    try:
        return ws.registry.get(ref, kind="model", record=False)
    except AssetNotFound:
        if "@" in ref or not is_local_source(ref):
            raise
        name = parse_ref(ref, default_kind="model").name
        return ws.registry.push("model", name, spec=model_spec(name), message="registered on first use")


_PARSE_OUTPUT = {"text": "str", "regex": "str", "json": "any"}


@register_step
class ParseStep(StepSpec):
    """Turn text (`input`) into the answer: stripped text (`text`), parsed JSON (`json`) or the first
    group of `pattern` (`regex`; the whole match when the pattern has no group)."""

    type: Literal["parse"]
    parser: Literal["text", "json", "regex"] = Field("text", description="`text` (stripped), `json` or `regex`.")
    pattern: str | None = Field(None, description="Regular expression for `parser: regex`.")
    input: str | None = Field(None, description=_INPUT.format(what="text"))

    @model_validator(mode="after")
    def _pattern(self) -> ParseStep:
        if self.parser == "regex":
            if not self.pattern:
                raise ValueError("parser: regex needs a `pattern:`")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        elif self.pattern is not None:
            raise ValueError(f"`pattern:` only applies to parser: regex, not {self.parser}")
        return self

    def output_type(self) -> str:
        return _PARSE_OUTPUT[self.parser]

    def check(self, plan: Planner) -> dict[str, str]:
        return plan.read("text", ("str",))

    def run(self, call: StepCall) -> Any:
        text = str(call.inputs["text"])
        if self.parser == "text":
            return text.strip()
        where = f"chain {call.chain} step '{self.name}'"
        if self.parser == "json":
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise SpecError(f"{where}: model output is not JSON ({exc}): {text[:200]!r}",
                                fix="ask for JSON in the prompt, or parse with `parser: regex`") from None
        match = re.search(self.pattern or "", text, flags=re.DOTALL)
        if match is None:
            raise SpecError(f"{where}: pattern {self.pattern!r} did not match {text[:200]!r}")
        return match.group(1) if match.groups() else match.group(0)

    def passes_stream(self) -> str | None:
        return "text" if self.parser == "text" else None

    def relay(self, deltas: Iterator[str]) -> Iterator[str]:
        """Deltas whose concatenation equals the stripped full text (what `run` returns)."""
        started, held = False, ""
        for piece in deltas:
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


@register_step
class ChainStep(StepSpec):
    """Run another chain version inline (inside this chain's run); its inputs are filled like a
    prompt's variables, and its output is this step's output."""

    type: Literal["chain"]
    chain: ref_field("chain") = Field(description="Chain ref: `retrieve-and-answer@2`.")
    inputs: dict[str, str] = Field(default_factory=dict,
                                   description="Sub-chain input -> chain value; unmapped inputs read the value of the same name.")

    def check(self, plan: Planner) -> dict[str, str]:
        sub = plan.resolve("chain")
        if isinstance(sub, ChainSpec):
            plan.no_chain_cycle("chain", sub)
            return plan.fill("input", f"chain {self.chain}", sub.inputs, self.inputs)
        return dict(self.inputs)

    def pin(self, pin: Pinning) -> Any:
        return pin.chain(self.chain)

    def run(self, call: StepCall) -> Any:
        return call.run_chain(call.bound, call.inputs)
