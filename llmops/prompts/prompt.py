"""A loaded prompt version: what `ws.prompts.get("qa@production")` returns.

Why it is immutable: a version never changes, so one compiled object per version can be cached and
shared; moving an alias later gives a *different* object on the next get, never changes this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmops.specfile import SourceMap
from llmops.prompts.spec import ModelParams, PromptSpec, VariableSpec, canonical_spec, load_prompt_spec
from llmops.prompts.template import CompiledPrompt

__all__ = ["Prompt"]

# Our chat roles -> LangChain message types.
_LC_ROLES = {"system": "system", "user": "human", "assistant": "ai"}


class Prompt:
    """One prompt version, compiled. `render(**vars)` gives text or chat messages."""

    __slots__ = ("spec", "name", "version", "digest", "asset", "_compiled")

    def __init__(self, spec: PromptSpec, *, version: int | None = None, digest: str | None = None,
                 asset: Any = None, where: SourceMap | None = None):
        self.spec = spec
        self.name = spec.name
        self.version = version
        self.digest = digest
        self.asset = asset  # the registry's AssetVersion, when loaded from the registry
        label = f"{spec.name}@{version}" if version is not None else spec.name
        self._compiled = CompiledPrompt(spec, label, where)

    @classmethod
    def from_asset(cls, av: Any) -> Prompt:
        """Compile a registry AssetVersion of kind `prompt`."""
        return cls(PromptSpec.model_validate(av.spec), version=av.version, digest=av.digest, asset=av)

    @classmethod
    def from_file(cls, path: str | Path) -> Prompt:
        """Compile a prompt YAML file that has not been pushed (no version, no digest)."""
        spec, where = load_prompt_spec(path)
        return cls(spec, where=where)

    # -- identity ---------------------------------------------------------------------------
    @property
    def ref(self) -> str:
        """`prompt/qa@3` (or `prompt/qa` for an unpushed file)."""
        return f"prompt/{self.name}" + (f"@{self.version}" if self.version is not None else "")

    @property
    def label(self) -> str:
        return self._compiled.label

    @property
    def is_chat(self) -> bool:
        return self.spec.is_chat

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def variables(self) -> dict[str, VariableSpec]:
        return self.spec.variables

    @property
    def model_params(self) -> ModelParams:
        return self.spec.model_params

    @property
    def tags(self) -> list[str]:
        return self.spec.tags

    def __repr__(self) -> str:
        return f"<Prompt {self.label} {'chat' if self.is_chat else 'text'}>"

    # -- rendering --------------------------------------------------------------------------
    def render(self, **variables: Any) -> str | list[dict[str, str]]:
        """Text for a `template` prompt, `[{role, content}, ...]` for a `messages` prompt.

        Raises TemplateError naming the prompt, version and variable for a missing, unknown or
        wrongly typed variable.
        """
        return self._compiled.render(variables)

    def render_vars(self, variables: Mapping[str, Any]) -> str | list[dict[str, str]]:
        """`render` with a mapping (for variables whose names are not Python identifiers' friends)."""
        return self._compiled.render(variables)

    def to_langchain(self) -> Any:
        """A LangChain `PromptTemplate` (text) or `ChatPromptTemplate` (chat) rendering the same.

        Defaults become partial variables. LangChain renders in its own sandbox, without type checks
        or llmops' cost bounds; render() has both, and chains render through it.
        """
        from langchain_core.prompts import ChatPromptTemplate, PromptTemplate

        defaults = {name: v.default for name, v in self.spec.variables.items() if not v.required}
        required = sorted(name for name, v in self.spec.variables.items() if v.required)
        if self.spec.template is not None:
            return PromptTemplate(template=self.spec.template, input_variables=required,
                                  partial_variables=defaults, template_format="jinja2")
        chat = ChatPromptTemplate.from_messages(
            [(_LC_ROLES[m.role], m.content) for m in self.spec.messages or []], template_format="jinja2")
        return chat.partial(**defaults) if defaults else chat

    # -- serialising ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The canonical spec (what the registry stores and digests)."""
        return canonical_spec(self.spec)

    def to_yaml(self) -> str:
        """The spec as YAML, fields in file order (for `prompts show`)."""
        import yaml

        class _Dumper(yaml.SafeDumper):
            pass

        def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
            # Templates read best as block scalars; plain style for one-liners.
            style = "|" if "\n" in value and value == value.rstrip(" ") else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        _Dumper.add_representer(str, text)
        spec, data = self.spec, self.to_dict()
        if spec.messages is not None:
            data["messages"] = [{"role": m.role, "content": m.content} for m in spec.messages]
        if spec.variables:
            data["variables"] = {name: {"type": v.type, **({"description": v.description} if v.description else {}),
                                        **({} if v.required else {"default": v.default})}
                                 for name, v in spec.variables.items()}
        order = ["kind", "name", "description", "template", "messages", "variables", "model_params", "tags"]
        data = {key: data[key] for key in order if key in data}
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
