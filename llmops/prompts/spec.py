"""The prompt spec: one YAML file in a workspace's `prompts/` folder, validated by pydantic.

    name: qa
    description: Answer a question from the handbook.
    messages:                      # or `template: |` for a plain text prompt
      - role: system
        content: You answer briefly.
      - role: user
        content: "{{ question }}"
    variables:
      question: str                # shorthand for {type: str}; JSON Schema names work too (string)
      style: {type: str, description: tone of voice, default: plain}
    model_params: {temperature: 0.2, max_tokens: 128}
    tags: [qa]

Why `extra="forbid"` everywhere: a typo (`tempreature`) must be an error at push, not a silently
ignored field. The canonical form (`canonical_spec`) drops defaults so that two spellings of the
same prompt (`question: str` or `question: {type: str}`) get the same digest, and an unchanged file
never creates a new version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from llmops.errors import SpecError
from llmops.models.protocol import GenerationParams, check_stop
from llmops.specfile import SourceMap, load_yaml, load_yaml_file, spec_error_from_validation
from llmops.store import refs

__all__ = [
    "JSON_SCHEMA_TYPES",
    "VARIABLE_TYPES",
    "Message",
    "ModelParams",
    "PromptSpec",
    "VariableSpec",
    "canonical_spec",
    "load_prompt_spec",
    "parse_prompt_spec",
]

#: Declared variable type -> the Python types a value may have. `float` accepts ints; `bool` is
#: never accepted for `int`/`float` (checked in template.py, since bool subclasses int).
VARIABLE_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}

#: The JSON Schema spelling of each type, accepted as a synonym and stored as the Python name, so
#: `type: string` and `type: str` are the same prompt (one digest).
JSON_SCHEMA_TYPES: dict[str, str] = {
    "string": "str", "integer": "int", "number": "float", "boolean": "bool", "array": "list", "object": "dict",
}

TypeName = Literal["str", "int", "float", "bool", "list", "dict"]

# Words Jinja2 reads as literals or operators: a variable named like this can never be referenced.
_JINJA_WORDS = {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is",
                "if", "else", "elif", "endif", "for", "endfor", "loop", "self", "super", "caller",
                "varargs", "kwargs"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def article(type_name: str) -> str:
    """`int` -> `an int`, `str` -> `a str`."""
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


def _prompt_name(value: str) -> str:
    return refs.check_name(value, "prompt")  # InvalidRef is a ValueError: pydantic reports it on `name`


def type_name(name: Any) -> str:
    """The stored (Python) name of a declared variable type, from either spelling.

    >>> type_name("string"), type_name("str")
    ('str', 'str')
    """
    if isinstance(name, str) and name in VARIABLE_TYPES:
        return name
    if isinstance(name, str) and name in JSON_SCHEMA_TYPES:
        return JSON_SCHEMA_TYPES[name]
    raise ValueError(f"unknown type {name!r}: use one of {', '.join(VARIABLE_TYPES)} "
                     f"or their JSON Schema names {', '.join(JSON_SCHEMA_TYPES)}")


def value_matches(type_name_: str, value: Any) -> bool:
    """Whether `value` has the declared variable type (bool is not an int here)."""
    name = JSON_SCHEMA_TYPES.get(type_name_, type_name_)
    if isinstance(value, bool) and name in ("int", "float"):
        return False
    return isinstance(value, VARIABLE_TYPES[name])


class VariableSpec(_Strict):
    """One template variable: its type, what it is for, and an optional default."""

    type: TypeName = Field(
        "str", description="Type the value must have at render time: str, int, float, bool, list, dict "
                           "(or string, integer, number, boolean, array, object).")
    description: str = Field("", description="What the variable holds; shown by `prompts show`.")
    default: Any = Field(None, description="Value used when render() is not given this variable; "
                                           "absent means the variable is required.")

    @field_validator("type", mode="before")
    @classmethod
    def _either_spelling(cls, value: Any) -> str:
        return type_name(value)

    @property
    def required(self) -> bool:
        """A variable without a `default:` key must be passed to render()."""
        return "default" not in self.model_fields_set

    @model_validator(mode="after")
    def _default_has_type(self) -> VariableSpec:
        if not self.required and self.default is not None and not value_matches(self.type, self.default):
            raise ValueError(f"default {self.default!r} is not {article(self.type)}")
        return self

    @model_serializer(mode="wrap")
    def _keep_explicit_default(self, handler: Any) -> dict[str, Any]:
        # `default: null` is meaningful (optional variable), so it survives exclude_defaults.
        data = handler(self)
        if not self.required and "default" not in data:
            data["default"] = self.default
        return data


class Message(_Strict):
    """One chat message template."""

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks.")
    content: str = Field(description="Jinja2 template of the message text.")


def _optional(name: str, description: str | None = None) -> Any:
    """GenerationParams' field `name` made optional: the same type, bounds and description."""
    source = GenerationParams.model_fields[name]
    bounded = Annotated[(source.annotation, *source.metadata)] if source.metadata else source.annotation
    return Annotated[bounded | None, Field(description=description or source.description)]


class ModelParams(_Strict):
    """Generation parameters that travel with the prompt (a chain's generate step may override).

    Every field is the backends' `GenerationParams` field (llmops.models.protocol) made optional, so
    the bounds are defined once and a prompt can only ask for what every backend honours; `as_dict()`
    feeds GenerationParams directly.
    """

    temperature: _optional("temperature") = None
    max_tokens: _optional("max_tokens", "Most tokens to generate.") = None
    stop: _optional("stop") = None
    top_p: _optional("top_p") = None
    seed: _optional("seed") = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else check_stop(value)

    def as_dict(self) -> dict[str, Any]:
        """Only the parameters that were set."""
        return self.model_dump(mode="json", exclude_none=True)


class PromptSpec(_Strict):
    """A prompt file: a text `template` or chat `messages`, its variables and model params."""

    kind: Literal["prompt"] = Field("prompt", description="Always `prompt` (chains say `kind: chain`).")
    name: Annotated[str, AfterValidator(_prompt_name)] = Field(description="Registry name: `prompt/<name>@<version>`.")
    description: str = Field("", description="One line on what the prompt is for.")
    template: str | None = Field(None, description="Jinja2 template of a text prompt.")
    messages: list[Message] | None = Field(None, description="Jinja2 templates of a chat prompt.")
    variables: dict[str, VariableSpec] = Field(default_factory=dict,
                                               description="Every variable the templates use.")
    model_params: ModelParams = Field(default_factory=ModelParams,
                                      description="Generation parameters (temperature, max_tokens, stop, ...).")
    tags: list[str] = Field(default_factory=list, description="Free labels for search and grouping.")

    @field_validator("variables", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `question: str` is short for `question: {type: str}`; `question:` alone means str.
        if isinstance(value, dict):
            return {k: ({"type": v} if isinstance(v, str) else ({} if v is None else v))
                    for k, v in value.items()}
        return value

    @field_validator("variables")
    @classmethod
    def _names(cls, value: dict[str, VariableSpec]) -> dict[str, VariableSpec]:
        for name in value:
            if not name.isidentifier() or name in _JINJA_WORDS:
                raise ValueError(f"variable name '{name}' cannot be used in a template: "
                                 "use letters, digits and underscores, not a Jinja2 keyword")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> PromptSpec:
        if (self.template is None) == (self.messages is None):
            raise ValueError("give exactly one of `template` (text) or `messages` (chat)")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` is empty: add at least one {role, content}")
        return self

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def sources(self) -> list[tuple[tuple[Any, ...], str]]:
        """Every template source with its field path: `[(("template",), text)]` or one per message."""
        if self.template is not None:
            return [(("template",), self.template)]
        return [(("messages", i, "content"), m.content) for i, m in enumerate(self.messages or [])]


def canonical_spec(spec: BaseModel) -> dict[str, Any]:
    """The JSON-ready dict the registry digests: defaults dropped, so spelling does not matter."""
    return spec.model_dump(mode="json", exclude_defaults=True)


def parse_prompt_spec(data: dict[str, Any], where: SourceMap | None = None) -> PromptSpec:
    """Validate loaded YAML data as a PromptSpec; errors name file, field and line."""
    where = where or SourceMap(None)
    try:
        return PromptSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, where, PromptSpec, ("template", "content")) from exc


def load_prompt_spec(source: str | Path, *, text: str | None = None) -> tuple[PromptSpec, SourceMap]:
    """Load a prompt YAML file (or `text` named `source`) into a PromptSpec and its SourceMap."""
    if text is not None:
        data, where = load_yaml(text, str(source))
    else:
        data, where = load_yaml_file(source)
    if data.get("kind", "prompt") != "prompt":
        raise where.error(("kind",), f"expected kind: prompt, got {data.get('kind')!r}")
    return parse_prompt_spec(data, where), where


def ensure_spec(value: Any) -> PromptSpec:
    """A PromptSpec from a spec or a dict (as stored in the registry)."""
    if isinstance(value, PromptSpec):
        return value
    try:
        return PromptSpec.model_validate(value)
    except ValidationError as exc:
        raise SpecError(f"stored prompt spec is invalid: {exc.errors(include_url=False)[0]['msg']}") from exc
