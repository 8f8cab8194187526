"""YAML in, with line numbers out: the one loader of every user spec file (prompts, chains, ingestion
specs, eval suites, fine-tuning jobs), and the mapping of pydantic errors to lines.

Bounded cost: specs are shared and may be run by the server, so a hostile file must fail fast. A
document over `MAX_BYTES`, nested deeper than `MAX_DEPTH`, or whose aliases expand to more than
`MAX_NODES` nodes ("billion laughs") is refused before anything is built from it.

Why not plain ``yaml.safe_load``: users fix files by line, and pydantic only knows a field path such
as ``variables.question.type``. We compose the YAML node tree once (safe loader), build the data
from it, and keep a map from every field path to the line it sits on, so each error names
``file:line: field: message (fix)``.

    >>> data, where = load_yaml("name: qa\\nvariables:\\n  question: str\\n", "qa.yaml")
    >>> where.line(("variables", "question"))
    3
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmops.errors import SpecError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "SourceMap", "format_loc", "load_yaml", "load_yaml_file",
           "spec_error_from_validation", "suggest"]

Loc = tuple[Any, ...]
MAX_BYTES = 4 << 20     # a spec of a few MB is already a dataset: point at a JSONL file instead
MAX_NODES = 200_000     # nodes after expanding aliases
MAX_DEPTH = 64          # mappings and sequences inside each other


@dataclass(frozen=True)
class SourceMap:
    """Where each field of one YAML document sits: path -> 1-based line (and block style)."""

    file: str | None
    lines: dict[Loc, int] = field(default_factory=dict)
    # path -> (1-based line of the value node, YAML scalar style) for multi-line text fields
    values: dict[Loc, tuple[int, str | None]] = field(default_factory=dict)

    def line(self, loc: Sequence[Any]) -> int | None:
        """Line of the deepest known prefix of `loc` (a missing field points at its parent)."""
        loc = tuple(loc)
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def text_line(self, loc: Sequence[Any], line_in_text: int) -> int | None:
        """File line of line `line_in_text` (1-based) inside the text value at `loc`."""
        found = self.values.get(tuple(loc))
        if found is None:
            return self.line(loc)
        start, style = found
        # A block scalar (`|` or `>`) starts on the line after its indicator.
        offset = 1 if style in ("|", ">") else 0
        return start + offset + line_in_text - 1

    def error(self, loc: Sequence[Any], message: str, *, fix: str | None = None,
              cls: type[SpecError] = SpecError) -> SpecError:
        """A SpecError naming this file, the field at `loc` and its line."""
        return cls(message, file=self.file, field=format_loc(loc) or None, line=self.line(loc), fix=fix)


def format_loc(loc: Iterable[Any]) -> str:
    """`("messages", 1, "content")` -> `messages[1].content`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(text: str, file: str | None = None) -> tuple[dict[str, Any], SourceMap]:
    """Parse one YAML mapping safely; return the data and its SourceMap.

    Raises SpecError naming the file and line for malformed YAML, duplicate keys, or a document
    that is not a mapping.
    """
    if len(text) > MAX_BYTES:
        raise SpecError(f"file is {len(text):,} characters; spec files are limited to {MAX_BYTES:,}",
                        file=file, fix="keep data in a JSONL file and point the spec at it")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_size(node, file)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "could not parse"
        if exc.context and exc.problem:
            problem = f"{exc.problem} {exc.context}"
        if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
            problem += f" started on line {exc.context_mark.line + 1}"
        fix = "check indentation and quote text that contains ':', '{' or '#'"
        if "unhashable" in problem:
            fix = 'quote text that starts with {{, e.g. template: "{{ question }}", or use a block scalar (|)'
        raise SpecError(f"malformed YAML: {problem}", file=file, line=line, fix=fix) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML: {exc}", file=file) from exc
    except RecursionError:
        raise SpecError(f"YAML nested too deeply (limit {MAX_DEPTH} levels)", file=file) from None
    finally:
        loader.dispose()
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else None
        raise SpecError("expected a mapping of fields (name: ..., ...) at the top level",
                        file=file, line=line)
    where = SourceMap(file)
    _walk(node, (), where)
    return data, where


def _check_size(root: yaml.Node, file: str | None) -> None:
    """Refuse alias bombs and deep nesting by counting nodes as the data would expand them, stopping early."""
    count = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise SpecError(f"YAML expands to more than {MAX_NODES:,} values (nested aliases?)",
                            file=file, line=root.start_mark.line + 1,
                            fix="write the values out instead of repeating anchors (&name / *name)")
        if depth > MAX_DEPTH:
            raise SpecError(f"YAML nested more than {MAX_DEPTH} levels deep", file=file,
                            line=node.start_mark.line + 1, fix="flatten the structure")
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


def load_yaml_file(path: str | Path) -> tuple[dict[str, Any], SourceMap]:
    """`load_yaml` on a file; the error names the path as given."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError("not a UTF-8 text file", file=str(path)) from exc
    except OSError as exc:
        raise SpecError(f"cannot read file: {exc.strerror or exc}", file=str(path)) from exc
    return load_yaml(text, str(path))


def _walk(node: yaml.Node, loc: Loc, where: SourceMap) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(f"duplicate key '{key}' (first on line {seen[key]})",
                                file=where.file, field=format_loc(loc + (key,)), line=line,
                                fix="keep one of them")
            seen[key] = line
            where.lines[loc + (key,)] = line
            _walk(value_node, loc + (key,), where)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            where.lines[loc + (index,)] = item.start_mark.line + 1
            _walk(item, loc + (index,), where)
    elif isinstance(node, yaml.ScalarNode):
        where.values[loc] = (node.start_mark.line + 1, node.style)


def spec_error_from_validation(exc: Any, where: SourceMap, model: Any,
                               text_fields: Iterable[str] = ()) -> SpecError:
    """Turn the first error of a pydantic ValidationError on `model` into a SpecError with file and line.

    An unknown key gets "did you mean" from the fields allowed at that place; `text_fields` are
    fields where YAML often mis-parses unquoted Jinja, so the fix says to quote.
    """
    known_fields = _all_fields(model)
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _yaml_loc(first["loc"], where, known_fields)
    kind = first["type"]
    message = first["msg"]
    fix = None
    if kind == "missing":
        message = "required field is missing"
        fix = f"add `{first['loc'][-1]}:`" if first["loc"] else None
    elif kind == "extra_forbidden":
        message = f"unknown field '{loc[-1]}'"
        allowed = sorted(_fields_at(model, first["loc"][:-1]) or known_fields)
        close = suggest(str(loc[-1]), allowed)
        fix = f"did you mean '{close}'?" if close else f"allowed: {', '.join(allowed)}"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    elif kind in ("string_type",) and loc and loc[-1] in set(text_fields):
        fix = "quote the text or use a block scalar (`|`): YAML reads an unquoted {{ ... }} as a mapping"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return where.error(loc, message, fix=fix)


def suggest(word: str, options: Iterable[str]) -> str | None:
    """The option `word` was most likely meant to be: a close spelling or a prefix, else None.

    >>> suggest("temp", ["max_tokens", "temperature"])
    'temperature'
    """
    options = list(options)
    close = difflib.get_close_matches(word, options, n=1)
    if close:
        return close[0]
    prefixed = [o for o in options if len(word) >= 3 and (o.startswith(word) or word.startswith(o))]
    return prefixed[0] if len(prefixed) == 1 else None


def _yaml_loc(loc: Sequence[Any], where: SourceMap, known_fields: set[str]) -> Loc:
    """Drop pydantic's union-tag parts of `loc` that are not in the YAML (a missing field stays)."""
    out: Loc = ()
    for i, part in enumerate(loc):
        candidate = out + (part,)
        if candidate in where.lines or (i == len(loc) - 1 and part in known_fields):
            out = candidate
    return out


def _models_in(annotation: Any) -> list[Any]:
    """The pydantic model classes an annotation may hold directly (through Optional/Union/Annotated)."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _fields_at(model: Any, loc: Sequence[Any]) -> set[str]:
    """Field names of the model found by following `loc` from `model` (empty when lost)."""
    import typing

    current: list[Any] = [model]  # annotations still to descend through
    for part in loc:
        nxt: list[Any] = []
        for ann in current:
            for m in _models_in(ann):
                if part in m.model_fields:
                    nxt.append(m.model_fields[part].annotation)
                elif "type" in m.model_fields and part in typing.get_args(m.model_fields["type"].annotation):
                    nxt.append(m)  # a discriminated-union tag names the member
            origin = typing.get_origin(ann)
            if origin is typing.Annotated:
                ann = typing.get_args(ann)[0]
                origin = typing.get_origin(ann)
            if origin in (list, tuple) and isinstance(part, int):
                nxt.append(typing.get_args(ann)[0])
            elif origin is dict and isinstance(part, str):
                nxt.append(typing.get_args(ann)[1])
        current = nxt
    return {name for ann in current for m in _models_in(ann) for name in m.model_fields}


def _all_fields(model: Any) -> set[str]:
    """Every field name of `model` and of the models nested in it."""
    import typing

    seen: set[Any] = set()
    names: set[str] = set()

    def visit(ann: Any) -> None:
        for m in _models_in(ann):
            if m in seen:
                continue
            seen.add(m)
            for name, info in m.model_fields.items():
                names.add(name)
                visit(info.annotation)
        for arg in typing.get_args(ann):
            visit(arg)

    visit(model)
    return names
