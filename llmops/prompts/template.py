"""Strict, sandboxed Jinja2 templates: compiled once per prompt version, checked cheaply per render.

Why the checks happen where they do:
- at load (push) time, once: syntax, no reach into Python internals (any `_attr`), every variable
  the template references is declared, every declared variable is used or has a default;
- at render time, per call: unknown / missing / wrongly-typed variables, in one dict pass, so that
  rendering stays within a small factor of a bare `jinja2.Template.render`.
- at both, the cost bounds of llmops.prompts.sandbox: constant expressions (`{{ 10 ** 100000 }}`)
  fail at push with their line, everything else when it renders; either way the error names the prompt.
The environment matches LangChain's jinja2 formatter in whitespace handling (Jinja2 defaults), so
`Prompt.to_langchain()` renders the same text; it adds strict undefined values, the immutable sandbox
and the cost bounds.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from llmops.errors import TemplateError
from llmops.specfile import SourceMap, suggest
from llmops.prompts.spec import VARIABLE_TYPES, PromptSpec, article, value_matches

__all__ = ["CompiledPrompt", "environment", "referenced_variables"]


@functools.cache
def environment() -> Any:
    """The one Jinja2 environment every prompt compiles in (configuration only, no user state)."""
    from llmops.prompts.sandbox import PromptEnvironment

    return PromptEnvironment()


def referenced_variables(source: str) -> set[str]:
    """Top-level variables a template reads (loop variables and Jinja2 globals excluded).

    >>> sorted(referenced_variables("{% for d in docs %}{{ d.text }}{% endfor %}{{ question }}"))
    ['docs', 'question']
    """
    from jinja2 import meta

    env = environment()
    return set(meta.find_undeclared_variables(env.parse(source))) - set(env.globals)


def _unsafe_access(ast: Any, source: str) -> tuple[list[str], int] | None:
    """Attribute/item accesses to `_names` (and any `attr` filter), in source order, with the
    template line of the first one; None when the template is clean."""
    from jinja2 import nodes

    found: list[tuple[str, int]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            found.append((node.attr, node.lineno))
        elif (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
                and isinstance(node.arg.value, str) and node.arg.value.startswith("_")):
            found.append((node.arg.value, node.lineno))
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            found.append(("|attr", node.lineno))
    if not found:
        return None
    found.sort(key=lambda item: (item[1], source.find(item[0])))
    return list(dict.fromkeys(name for name, _ in found)), found[0][1]


def _line_of(source: str, name: str) -> int:
    """1-based line of the first use of `name` as a word in `source` (1 if not found)."""
    import re

    match = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", source)
    return source.count("\n", 0, match.start()) + 1 if match else 1


class CompiledPrompt:
    """The compiled templates of one PromptSpec plus precomputed render-time checks.

    `label` names the prompt in render errors (`qa@3`); `where` (load time only) maps template
    lines back to file lines.
    """

    __slots__ = ("spec", "label", "limits", "_text", "_messages", "_types", "_defaults", "_required", "_n_required")

    def __init__(self, spec: PromptSpec, label: str, where: SourceMap | None = None, *, limits: Any = None):
        from llmops.prompts.limits import DEFAULT_LIMITS

        self.spec = spec
        self.label = label
        self.limits = limits or DEFAULT_LIMITS
        where = where or SourceMap(None)
        used: set[str] = set()
        compiled = []
        for loc, source in spec.sources():
            template, names = self._compile(loc, source, where)
            compiled.append((loc, template))
            used |= names
        for name, var in spec.variables.items():
            if name not in used and var.required:
                raise TemplateError(f"prompt {label}: variable '{name}' is declared but no template uses it",
                                    file=where.file, field=f"variables.{name}", line=where.line(("variables", name)),
                                    fix="use it in the template, give it a default, or remove it")
        if spec.template is not None:
            self._text = compiled[0][1]
            self._messages = None
        else:
            self._text = None
            self._messages = tuple((m.role, t) for m, (_, t) in zip(spec.messages or [], compiled))
        self._types = {name: VARIABLE_TYPES[v.type] for name, v in spec.variables.items()}
        self._defaults = {name: v.default for name, v in spec.variables.items() if not v.required}
        self._required = frozenset(name for name, v in spec.variables.items() if v.required)
        self._n_required = len(self._required)

    def _compile(self, loc: tuple[Any, ...], source: str, where: SourceMap) -> tuple[Any, set[str]]:
        """One template compiled with the bound checks, and the variables it reads; every failure is a
        TemplateError naming the file, field and line."""
        from jinja2 import TemplateSyntaxError, meta

        from llmops.prompts.limits import LimitExceeded

        env, label = environment(), self.label

        def error(message: str, lineno: int | None, fix: str) -> TemplateError:
            line = where.text_line(loc, lineno) if lineno else None
            return TemplateError(f"prompt {label}: {message}", file=where.file, field=_field(loc), line=line, fix=fix)

        try:
            ast = env.parse(source)
            unsafe = _unsafe_access(ast, source)
            if unsafe is not None:
                names, lineno = unsafe
                raise error(f"access to {', '.join(repr(n) for n in names)} is refused: "
                            "templates may not reach Python internals", lineno,
                            "use only the declared variables and their public fields")
            used = set(meta.find_undeclared_variables(ast)) - set(env.globals)
            for name in sorted(used):
                if name not in self.spec.variables:
                    close = suggest(name, list(self.spec.variables))
                    raise error(f"template uses undeclared variable '{name}'", _line_of(source, name),
                                f"did you mean '{close}'?" if close else f"declare it under variables: ({name}: str)")
            return env.compile_checked(ast), used
        except TemplateSyntaxError as exc:  # also an unknown filter or test, found when compiling
            raise error(f"template syntax error: {exc.message}", exc.lineno or 1,
                        "see https://jinja.palletsprojects.com/templates/") from exc
        except LimitExceeded as exc:
            raise error(exc.message, exc.lineno or 1, exc.fix) from None
        except RecursionError:
            raise error("the template nests too deeply to compile", None, "use fewer nested brackets") from None

    def render(self, variables: Mapping[str, Any]) -> str | list[dict[str, str]]:
        """Render with `variables` checked: text for a template prompt, messages for a chat prompt."""
        types = self._types
        given = 0
        for key, value in variables.items():
            allowed = types.get(key)
            if allowed is None:
                raise self._unknown(key)
            if type(value) not in allowed and not self._slow_type_ok(key, value):
                raise self._wrong_type(key, value)
            if key in self._required:
                given += 1
        if given != self._n_required:
            missing = sorted(self._required - set(variables))
            raise TemplateError(f"prompt {self.label}: missing variable '{missing[0]}'",
                                fix=f"pass {missing[0]}=... ({self.spec.variables[missing[0]].type})")
        if self._defaults and len(variables) != len(types):
            variables = {**self._defaults, **variables}
        from llmops.prompts.limits import LimitExceeded, bounded

        try:
            with bounded(self.limits):
                if self._text is not None:
                    return self._text.render(variables)
                return [{"role": role, "content": t.render(variables)} for role, t in self._messages]
        except TemplateError:
            raise
        except LimitExceeded as exc:
            raise TemplateError(f"prompt {self.label}: {exc.message}", fix=exc.fix) from None
        except RecursionError:
            raise TemplateError(f"prompt {self.label}: render failed: macros or loops recurse too deeply",
                                fix="recurse less deeply") from None
        except Exception as exc:  # UndefinedError, SecurityError, a failing filter...
            raise TemplateError(f"prompt {self.label}: render failed: {exc}") from exc

    def _slow_type_ok(self, key: str, value: Any) -> bool:
        # Subclasses (a str subclass, an int for a float, a tuple for a list) and an explicit None
        # for a variable whose default is None.
        var = self.spec.variables[key]
        if value is None and not var.required and var.default is None:
            return True
        return value_matches(var.type, value)

    def _unknown(self, key: str) -> TemplateError:
        close = suggest(key, list(self._types))
        declared = ", ".join(self._types) or "none"
        fix = f"did you mean '{close}'? declared: {declared}" if close else f"declared: {declared}"
        return TemplateError(f"prompt {self.label}: unknown variable '{key}'", fix=fix)

    def _wrong_type(self, key: str, value: Any) -> TemplateError:
        want = self.spec.variables[key].type
        return TemplateError(f"prompt {self.label}: variable '{key}' must be {want}, got {type(value).__name__}",
                             fix=f"pass {article(want)}")


def _field(loc: tuple[Any, ...]) -> str:
    from llmops.specfile import format_loc

    return format_loc(loc)
