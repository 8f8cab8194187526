"""The chain spec: named steps wired by their inputs and outputs, validated before anything is pushed.

    kind: chain
    name: rag-qa
    inputs: {question: str}
    steps:
      - {name: retrieve, type: retrieve, index: handbook, k: 4, input: question, output: context}
      - {name: prompt,   type: prompt,   prompt: rag-qa}            # question, context wired by name
      - {name: generate, type: generate, model: smollm2, params: {max_tokens: 128}}
      - {name: answer,   type: parse,    parser: text}
    output: answer

Values: every chain input and every step output is a named value (a step's output is named after the
step unless `output:` says otherwise). A step reads values:
- `retrieve` reads `input` (the query text) and outputs a list of documents, each a mapping with
  `text`, `source` and `score` (and `metadata`);
- `prompt` fills each variable of its prompt from `inputs: {variable: value}` or, when not mapped,
  from the value of the same name; it outputs the rendered prompt (text or chat messages);
- `generate` reads `input` (a rendered prompt) and outputs the generated text;
- `parse` reads `input` (text) and outputs text (`text`), parsed JSON (`json`) or the first group
  of `pattern` (`regex`, the whole match when the pattern has no group);
- `chain` fills the inputs of another chain like `prompt` fills variables, and outputs its output.
A single-input step without `input:` reads the output of the step listed just before it.

Why two stages: `ChainSpec` (pydantic) checks what one file can know alone (unique names, a regex
that compiles); `check_chain` needs the referenced prompts and chains (through a `resolve` callback,
so the folder being pushed and the registry can both answer) to check that every prompt variable is
supplied, types fit, there is no cycle and every step output feeds something. It returns a
`ChainPlan` (run order and wiring) that the chain runner can follow as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops.errors import InvalidRef, SpecError
from llmops.specfile import SourceMap, load_yaml, load_yaml_file, spec_error_from_validation, suggest
from llmops.prompts.spec import NAME_PATTERN, ModelParams, PromptSpec, VariableSpec, check_name

__all__ = [
    "ChainPlan",
    "ChainSpec",
    "ChainStep",
    "GenerateStep",
    "ParseStep",
    "PromptStep",
    "Resolver",
    "RetrieveStep",
    "Step",
    "check_chain",
    "load_chain_spec",
    "parse_chain_spec",
    "split_ref",
]

_STEP_NAME = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
_REF = r"^(?:[a-z][a-z0-9_-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*(?:@[A-Za-z0-9][A-Za-z0-9_.-]*)?$"

#: resolve(kind, ref) -> the referenced spec (PromptSpec for "prompt", ChainSpec for "chain"),
#: any non-None object for other kinds ("index", "model", "adapter"), or None when it does not exist.
Resolver = Callable[[str, str], Any]


def split_ref(ref: str, kind: str) -> tuple[str, str | None]:
    """`qa`, `qa@3`, `prompt/qa@production` -> (name, selector); refuses another kind's ref.

    >>> split_ref("prompt/qa@production", "prompt")
    ('qa', 'production')
    """
    body, at, selector = ref.partition("@")
    found_kind, slash, name = body.partition("/")
    if not slash:
        found_kind, name = kind, body
    if found_kind != kind or not re.match(NAME_PATTERN, name) or (at and not selector):
        raise InvalidRef(f"{ref!r} is not a {kind} ref: write NAME, NAME@VERSION or NAME@ALIAS, e.g. qa@3")
    return name, selector or None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Step(_Strict):
    name: str = Field(pattern=_STEP_NAME, description="Step name, unique in the chain.")
    description: str = Field("", description="What the step is for.")
    output: str | None = Field(None, pattern=_STEP_NAME,
                               description="Name of the value this step produces (default: the step name).")

    @property
    def out(self) -> str:
        return self.output or self.name


class RetrieveStep(_Step):
    """Search an index for the query text; outputs a list of documents."""

    type: Literal["retrieve"]
    index: str = Field(pattern=_REF, description="Index ref: `handbook`, `handbook@3`, `handbook@production`.")
    k: int = Field(4, ge=1, le=1000, description="How many documents to return.")
    input: str | None = Field(None, description="Value holding the query text (default: previous step's output).")


class PromptStep(_Step):
    """Render a prompt version with values of the chain."""

    type: Literal["prompt"]
    prompt: str = Field(pattern=_REF, description="Prompt ref: `qa`, `qa@3`, `qa@production`.")
    inputs: dict[str, str] = Field(default_factory=dict,
                                   description="Prompt variable -> chain value; unmapped variables read the value of the same name.")


class GenerateStep(_Step):
    """Generate text from a rendered prompt with a model (and optionally a LoRA adapter)."""

    type: Literal["generate"]
    model: str = Field(pattern=_REF, description="Model ref, e.g. `smollm2`.")
    adapter: str | None = Field(None, pattern=_REF, description="Adapter ref, e.g. `qa-lora@production`.")
    params: ModelParams = Field(default_factory=ModelParams,
                                description="Generation params; override the prompt's model_params.")
    input: str | None = Field(None, description="Value holding the rendered prompt (default: previous step's output).")


class ParseStep(_Step):
    """Turn generated text into the chain's answer."""

    type: Literal["parse"]
    parser: Literal["text", "json", "regex"] = Field("text", description="`text` (stripped), `json` or `regex`.")
    pattern: str | None = Field(None, description="Regular expression for `parser: regex`.")
    input: str | None = Field(None, description="Value holding the text (default: previous step's output).")

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


class ChainStep(_Step):
    """Run another chain as one step."""

    type: Literal["chain"]
    chain: str = Field(pattern=_REF, description="Chain ref: `retrieve-and-answer@2`.")
    inputs: dict[str, str] = Field(default_factory=dict,
                                   description="Sub-chain input -> chain value; unmapped inputs read the value of the same name.")


Step = Annotated[Union[RetrieveStep, PromptStep, GenerateStep, ParseStep, ChainStep], Field(discriminator="type")]


class ChainSpec(_Strict):
    """A chain file: declared inputs, ordered steps, and which value is the answer."""

    kind: Literal["chain"] = Field(description="Always `chain`.")
    name: Annotated[str, AfterValidator(check_name)] = Field(description="Registry name: `chain/<name>@<version>`.")
    description: str = Field("", description="One line on what the chain does.")
    inputs: dict[str, VariableSpec] = Field(default_factory=dict, description="Values the caller passes in.")
    steps: list[Step] = Field(min_length=1, description="The steps; wiring decides the run order.")
    output: str | None = Field(None, description="Value returned by the chain (default: last step's output).")
    tags: list[str] = Field(default_factory=list, description="Free labels for search and grouping.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):  # inputs: [question]
            value = {name: None for name in value}
        if isinstance(value, dict):
            return {k: ({"type": v} if isinstance(v, str) else ({} if v is None else v)) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _names(self) -> ChainSpec:
        owner: dict[str, str] = {name: "a chain input" for name in self.inputs}
        steps: set[str] = set()
        for step in self.steps:
            if step.name in steps:
                raise ValueError(f"two steps are named '{step.name}': step names must be unique")
            steps.add(step.name)
            if step.out in owner:
                raise ValueError(f"step '{step.name}' outputs '{step.out}', which is already {owner[step.out]}: "
                                 "give it another `output:` name")
            owner[step.out] = f"the output of step '{step.name}'"
        if self.output is not None and self.output not in {s.out for s in self.steps}:
            raise ValueError(f"output '{self.output}' is not produced by any step "
                             f"(step outputs: {', '.join(s.out for s in self.steps)})")
        return self

    @property
    def final_output(self) -> str:
        return self.output or self.steps[-1].out

    def step(self, name: str) -> Any:
        return next(s for s in self.steps if s.name == name)


def parse_chain_spec(data: dict[str, Any], where: SourceMap | None = None) -> ChainSpec:
    """Validate loaded YAML data as a ChainSpec (stage 1); errors name file, field and line."""
    where = where or SourceMap(None)
    try:
        return ChainSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, where, ChainSpec) from exc


def load_chain_spec(source: str | Path, *, text: str | None = None) -> tuple[ChainSpec, SourceMap]:
    """Load a chain YAML file into a ChainSpec (stage 1 only: refs are checked by check_chain)."""
    data, where = load_yaml(text, str(source)) if text is not None else load_yaml_file(source)
    return parse_chain_spec(data, where), where


# -- stage 2 -----------------------------------------------------------------------------------

# What each value holds, as far as wiring can tell: a variable type, "documents" (list), "prompt"
# (text or messages) or "any".
_STEP_OUTPUT = {"retrieve": "documents", "prompt": "prompt", "generate": "str", "chain": "any"}
_PARSE_OUTPUT = {"text": "str", "regex": "str", "json": "any"}
_TYPE_WORDS = {"documents": "a list of documents", "prompt": "a rendered prompt", "any": "any value"}


@dataclass(frozen=True)
class ChainPlan:
    """How to run a checked chain: steps in run order, and what each step reads.

    `wiring[step]` maps the step's parameter to a value name: `{"query": ...}` (retrieve),
    `{variable: ...}` (prompt), `{"prompt": ...}` (generate), `{"text": ...}` (parse) or
    `{sub-chain input: ...}` (chain).
    """

    order: tuple[str, ...]
    wiring: dict[str, dict[str, str]]
    output: str


def _fits(value_type: str, wanted: str) -> bool:
    if value_type == "any" or wanted == "any" or value_type == wanted:
        return True
    return (wanted == "list" and value_type == "documents") or (wanted == "float" and value_type == "int")


def check_chain(spec: ChainSpec, resolve: Resolver, where: SourceMap | None = None) -> ChainPlan:
    """Stage 2: refs exist, every prompt variable / sub-chain input is supplied with a fitting
    type, no cycle (within the chain or through sub-chains), every step output feeds something.
    """
    where = where or SourceMap(None)
    value_type: dict[str, str] = {name: var.type for name, var in spec.inputs.items()}
    producer: dict[str, str] = {}
    for step in spec.steps:
        value_type[step.out] = (_PARSE_OUTPUT[step.parser] if isinstance(step, ParseStep)
                                else _STEP_OUTPUT[step.type])
        producer[step.out] = step.name
    values = list(value_type)

    def err(i: int, loc: tuple[Any, ...], message: str, fix: str | None = None) -> SpecError:
        return where.error(("steps", i) + loc, f"step '{spec.steps[i].name}': {message}", fix=fix)

    def need_value(i: int, loc: tuple[Any, ...], name: str, own: str) -> None:
        if name not in value_type or name == own:
            close = suggest(name, [v for v in values if v != own])
            fix = f"did you mean '{close}'?" if close else f"values: {', '.join(v for v in values if v != own)}"
            raise err(i, loc, f"reads '{name}', which is neither a chain input nor another step's output", fix)

    def describe(name: str) -> str:
        t = value_type[name]
        whose = f"output of step '{producer[name]}'" if name in producer else "chain input"
        return f"'{name}' ({whose}) is {_TYPE_WORDS.get(t, t)}"

    def resolved(i: int, field: str, kind: str, ref: str) -> Any:
        try:
            split_ref(ref, kind)
        except InvalidRef as exc:
            raise err(i, (field,), str(exc)) from None
        found = resolve(kind, ref)
        if found is None:
            raise err(i, (field,), f"{kind} '{ref}' does not exist",
                      "push it first or fix the name (see `llmops assets list`)")
        return found

    def fill(i: int, step: Any, what: str, label: str, wanted: dict[str, VariableSpec]) -> dict[str, str]:
        wiring: dict[str, str] = {}
        for key, value in step.inputs.items():
            if key not in wanted:
                close = suggest(key, list(wanted))
                fix = f"did you mean '{close}'?" if close else f"{what}s: {', '.join(wanted) or 'none'}"
                raise err(i, ("inputs", key), f"maps '{key}', which is not a {what} of {label}", fix)
            need_value(i, ("inputs", key), value, step.out)
            wiring[key] = value
        for key, var in wanted.items():
            if key not in wiring and key in value_type and key != step.out:
                wiring[key] = key
            if key not in wiring:
                if var.required:
                    raise err(i, ("inputs",), f"{what} '{key}' of {label} is not supplied: "
                                              f"no chain input or step output is named '{key}'",
                              f"map it under inputs: ({key}: <value>) or declare a chain input '{key}'")
                continue
            if not _fits(value_type[wiring[key]], var.type):
                raise err(i, ("inputs", key) if key in step.inputs else ("inputs",),
                          f"{what} '{key}' of {label} is {var.type} but {describe(wiring[key])}",
                          f"change the {what}'s type or feed it another value")
        return wiring

    wiring: dict[str, dict[str, str]] = {}
    for i, step in enumerate(spec.steps):
        previous = spec.steps[i - 1].out if i > 0 else None
        if isinstance(step, (RetrieveStep, GenerateStep, ParseStep)):
            param = {"retrieve": "query", "generate": "prompt", "parse": "text"}[step.type]
            source = step.input or previous
            if source is None:
                raise err(i, (), "has no input and no step before it",
                          f"set `input:` to one of the chain inputs: {', '.join(spec.inputs) or '(none declared)'}")
            need_value(i, ("input",), source, step.out)
            accepts = {"query": ("str",), "prompt": ("prompt", "str"), "text": ("str",)}[param]
            if not any(_fits(value_type[source], t) for t in accepts):
                raise err(i, ("input",), f"needs {' or '.join(_TYPE_WORDS.get(t, t) for t in accepts)} "
                                         f"but {describe(source)}")
            wiring[step.name] = {param: source}
            if isinstance(step, RetrieveStep):
                resolved(i, "index", "index", step.index)
            if isinstance(step, GenerateStep):
                resolved(i, "model", "model", step.model)
                if step.adapter:
                    resolved(i, "adapter", "adapter", step.adapter)
        elif isinstance(step, PromptStep):
            prompt = resolved(i, "prompt", "prompt", step.prompt)
            if isinstance(prompt, PromptSpec):
                wiring[step.name] = fill(i, step, "variable", f"prompt {step.prompt}", prompt.variables)
            else:
                wiring[step.name] = dict(step.inputs)
        elif isinstance(step, ChainStep):
            sub = resolved(i, "chain", "chain", step.chain)
            if isinstance(sub, ChainSpec):
                _no_chain_cycle(spec.name, sub, resolve, [spec.name], lambda m: err(i, ("chain",), m))
                wiring[step.name] = fill(i, step, "input", f"chain {step.chain}", sub.inputs)
            else:
                wiring[step.name] = dict(step.inputs)

    order = _run_order(spec, wiring, producer, where)
    consumed = {value for w in wiring.values() for value in w.values()}
    for i, step in enumerate(spec.steps):
        if step.out not in consumed and step.out != spec.final_output:
            raise where.error(("steps", i), f"step '{step.name}': its output '{step.out}' feeds nothing",
                              fix="read it in a later step, make it the chain's `output:`, or remove the step")
    for name, var in spec.inputs.items():
        if name not in consumed and var.required:
            raise where.error(("inputs", name), f"chain input '{name}' is not read by any step",
                              fix="wire it into a step, give it a default, or remove it")
    return ChainPlan(order=order, wiring=wiring, output=spec.final_output)


def _run_order(spec: ChainSpec, wiring: dict[str, dict[str, str]], producer: dict[str, str],
               where: SourceMap) -> tuple[str, ...]:
    """Steps in dependency order (listing order among equals); a cycle is an error naming it."""
    deps = {step.name: [producer[v] for v in wiring[step.name].values() if v in producer] for step in spec.steps}
    order: list[str] = []
    done: set[str] = set()
    pending = [s.name for s in spec.steps]
    while pending:
        ready = next((n for n in pending if all(d in done for d in deps[n])), None)
        if ready is None:
            cycle = _find_cycle(pending, deps)
            index = next(i for i, s in enumerate(spec.steps) if s.name == cycle[0])
            raise where.error(("steps", index), "steps form a cycle: " + " -> ".join(cycle),
                              fix="a step cannot read, directly or not, its own output")
        order.append(ready)
        done.add(ready)
        pending.remove(ready)
    return tuple(order)


def _find_cycle(pending: list[str], deps: dict[str, list[str]]) -> list[str]:
    """Walk from the first pending step along unfinished dependencies until a name repeats."""
    path = [pending[0]]
    while True:
        nxt = next(d for d in deps[path[-1]] if d in pending)
        if nxt in path:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)


def _no_chain_cycle(root: str, chain: ChainSpec, resolve: Resolver, stack: list[str],
                    error: Callable[[str], SpecError]) -> None:
    """Refuse chain -> ... -> chain loops through `chain` steps."""
    stack = stack + [chain.name]
    if chain.name in stack[:-1]:
        raise error("chains form a cycle: " + " -> ".join(stack[stack.index(chain.name):]))
    for step in chain.steps:
        if isinstance(step, ChainStep):
            sub = resolve("chain", step.chain)
            if isinstance(sub, ChainSpec):
                _no_chain_cycle(root, sub, resolve, stack, error)
