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
step unless `output:` says otherwise). What each step type reads and produces is documented on its
class in `llmops.chains.steps`. A single-input step without `input:` reads the output of the step
listed just before it.

Step types are classes registered by their `type:` (`register_step`); the `steps:` field is a
pydantic discriminated union rebuilt from that registry, so a new step type is one class in one
file, wherever it lives. Every ref field is typed with `ref_field(kind)`, which parses it
with `llmops.store.refs.parse_ref`: a bad ref is a SpecError naming file, line and field.

This module is stage 1 (what one file can know alone); `llmops.chains.plan.check_chain` is stage 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Iterator, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, \
    model_validator
from pydantic.fields import FieldInfo

from llmops.errors import InvalidRef, SpecError
from llmops.prompts.spec import VariableSpec
from llmops.specfile import SourceMap, load_yaml, load_yaml_file, spec_error_from_validation
from llmops.store.refs import check_name, parse_ref

if TYPE_CHECKING:
    from llmops.chains.plan import Planner
    from llmops.chains.runner import Pinning, StepCall

__all__ = [
    "ChainSpec",
    "RefKind",
    "StepSpec",
    "input_model",
    "load_chain_spec",
    "parse_chain_spec",
    "ref_field",
    "register_step",
    "step_types",
    "unregister_step",
]

_STEP_NAME = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- ref fields --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RefKind:
    """Field metadata: this field holds a ref to an asset of `kind` (how checks and cycles find refs)."""

    kind: str


def _check_ref(kind: str, value: str) -> str:
    try:
        parse_ref(value, default_kind=kind, kinds=(kind,))
    except InvalidRef as exc:
        raise ValueError(str(exc)) from None
    return value


def ref_field(kind: str) -> Any:
    """The type of a spec field holding a `kind` ref (`qa`, `qa@3`, `prompt/qa@production`).

    The ref is kept as written (so the digest does not depend on spelling rules added later) and
    parsed with `parse_ref(default_kind=kind, kinds=(kind,))` when the spec is validated.
    """
    return Annotated[str, AfterValidator(partial(_check_ref, kind)), RefKind(kind)]


# -- step types --------------------------------------------------------------------------------

class StepSpec(_Strict):
    """Base of every step type: its spec fields, and how it checks, pins and runs.

    A step type subclasses this with `type: Literal["<name>"]`, its own fields, and:
    - `check(plan)`: validate against the chain (values, refs) and return its wiring
      (`{parameter: value name}`), using the helpers of `llmops.chains.plan.Planner`;
    - `pin(pin)`: resolve its refs to versions once, when a chain is loaded (`pin.use(av)` records
      each version); returns what `run` needs, or None;
    - `run(call)`: compute its output from `call.inputs` (parameter -> value) and `call.bound`.
    Then `register_step(cls)` makes `type: <name>` valid in chain files.
    """

    name: str = Field(pattern=_STEP_NAME, description="Step name, unique in the chain.")
    description: str = Field("", description="What the step is for.")
    output: str | None = Field(None, pattern=_STEP_NAME,
                               description="Name of the value this step produces (default: the step name).")

    #: What the output holds, as far as wiring can tell: a variable type (`str`, `list`, ...),
    #: `documents` (a list of documents), `prompt` (text or chat messages) or `any`.
    produces: ClassVar[str] = "any"
    #: Whether `stream(call)` yields text deltas of the output (a generation).
    streams: ClassVar[bool] = False

    @property
    def out(self) -> str:
        return self.output or self.name

    def output_type(self) -> str:
        return self.produces

    def refs(self) -> Iterator[tuple[str, str, str]]:
        """(field, kind, ref) for every ref this step names (fields typed with `ref_field`)."""
        for field, info in type(self).model_fields.items():
            kind = next((m.kind for m in info.metadata if isinstance(m, RefKind)), None)
            if kind is None:  # an optional ref (`ref_field(kind) | None`) keeps its metadata inside the union
                kind = next((m.kind for arg in get_args(info.annotation) for m in getattr(arg, "__metadata__", ())
                             if isinstance(m, RefKind)), None)
            value = getattr(self, field)
            if kind is not None and value is not None:
                yield field, kind, value

    def check(self, plan: Planner) -> dict[str, str]:
        raise NotImplementedError(f"step type {self.type!r} does not define check()")  # type: ignore[attr-defined]

    def pin(self, pin: Pinning) -> Any:
        return None

    def run(self, call: StepCall) -> Any:
        raise NotImplementedError(f"step type {self.type!r} does not define run()")  # type: ignore[attr-defined]

    def stream(self, call: StepCall) -> Iterator[str]:
        """Text deltas of the output; the generator returns the output (only when `streams`)."""
        raise NotImplementedError

    def passes_stream(self) -> str | None:
        """The parameter whose text deltas this step passes on as its own output (via `relay`)."""
        return None

    def relay(self, deltas: Iterator[str]) -> Iterator[str]:
        return deltas


_STEP_TYPES: dict[str, type[StepSpec]] = {}


def _type_name(cls: type[StepSpec]) -> str:
    info = cls.model_fields.get("type")
    args = get_args(info.annotation) if info is not None and get_origin(info.annotation) is Literal else ()
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{cls.__name__} needs a field `type: Literal['<name>']` to be a step type")
    return args[0]


def register_step(cls: type[StepSpec]) -> type[StepSpec]:
    """Make `cls` a chain step type (usable as a class decorator); its `type:` must be new."""
    if not (isinstance(cls, type) and issubclass(cls, StepSpec)):
        raise TypeError(f"{cls!r} is not a StepSpec subclass")
    name = _type_name(cls)
    if _STEP_TYPES.get(name, cls) is not cls:
        raise ValueError(f"step type {name!r} is already registered ({_STEP_TYPES[name].__name__})")
    _STEP_TYPES[name] = cls
    _rebuild()
    return cls


def unregister_step(name: str) -> None:
    """Remove a step type (a plugin being unloaded, a test cleaning up)."""
    _STEP_TYPES.pop(name, None)
    _rebuild()


def step_types() -> dict[str, type[StepSpec]]:
    """Registered step types by `type:` name, in registration order."""
    return dict(_STEP_TYPES)


def _rebuild() -> None:
    """Rebuild `ChainSpec.steps` as a discriminated union over the registered step types."""
    classes = tuple(_STEP_TYPES.values())
    if not classes:
        step: Any = StepSpec
    elif len(classes) == 1:
        step = classes[0]
    else:
        step = Annotated[Union[classes], Field(discriminator="type")]
    ChainSpec.model_fields["steps"] = FieldInfo.from_annotated_attribute(
        list[step], Field(min_length=1, description="The steps; wiring decides the run order."))
    ChainSpec.model_rebuild(force=True)


# -- the chain file ----------------------------------------------------------------------------

class ChainSpec(_Strict):
    """A chain file: declared inputs, ordered steps, and which value is the answer."""

    kind: Literal["chain"] = Field(description="Always `chain`.")
    name: Annotated[str, AfterValidator(partial(check_name, kind="chain"))] = Field(
        description="Registry name: `chain/<name>@<version>`.")
    description: str = Field("", description="One line on what the chain does.")
    inputs: dict[str, VariableSpec] = Field(default_factory=dict, description="Values the caller passes in.")
    steps: list[StepSpec] = Field(min_length=1, description="The steps; wiring decides the run order.")
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

    def step(self, name: str) -> StepSpec:
        return next(s for s in self.steps if s.name == name)


_PY_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number here")
    return value


def input_model(spec: ChainSpec) -> type[BaseModel]:
    """The pydantic model of a chain's inputs: the one place that decides what a call must pass.

    An input without a `default:` key is required; `default: null` makes it optional. Values keep
    pydantic's lax conversions for text from a CLI or a form (`"3"` for an int), but a bool is not
    a number and a number is not text.
    """
    from pydantic import BeforeValidator, StrictStr

    fields: dict[str, Any] = {}
    for name, var in spec.inputs.items():
        py = _PY_TYPES.get(var.type, Any)
        if py is str:
            py = StrictStr
        elif py in (int, float):
            py = Annotated[py, BeforeValidator(_not_bool)]
        if not var.required and var.default is None:
            py = py | None
        fields[name] = (py, Field(... if var.required else var.default, description=var.description))
    title = "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", spec.name) if p) or "Chain"
    return create_model(f"{title}Input", __config__=ConfigDict(extra="forbid"), **fields)


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
    if data.get("kind") != "chain":
        raise where.error(("kind",), f"expected kind: chain, got {data.get('kind')!r}")
    return parse_chain_spec(data, where), where


def stored_chain_spec(value: dict[str, Any], ref: str) -> ChainSpec:
    """A ChainSpec from a pushed version's stored spec."""
    try:
        return ChainSpec.model_validate(value)
    except ValidationError as exc:
        raise SpecError(f"stored chain spec {ref} is invalid: {exc.errors(include_url=False)[0]['msg']}",
                        fix="a step type it uses may not be registered in this process") from exc
