"""YAML in, with line numbers out: loading user spec files and mapping pydantic errors to lines.

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

__all__ = ["SourceMap", "format_loc", "load_yaml", "load_yaml_file", "spec_error_from_validation"]

Loc = tuple[Any, ...]


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
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "could not parse"
        if exc.context and exc.problem:
            problem = f"{exc.problem} {exc.context}"
        raise SpecError(f"malformed YAML: {problem}", file=file, line=line,
                        fix="check indentation and quote text that contains ':', '{' or '#'") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML: {exc}", file=file) from exc
    finally:
        loader.dispose()
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else None
        raise SpecError("expected a mapping of fields (name: ..., ...) at the top level",
                        file=file, line=line)
    where = SourceMap(file)
    _walk(node, (), where)
    return data, where


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


def spec_error_from_validation(exc: Any, where: SourceMap, known_fields: Iterable[str] = (),
                               text_fields: Iterable[str] = ()) -> SpecError:
    """Turn the first error of a pydantic ValidationError into a SpecError with file and line.

    `known_fields` feeds "did you mean" for unknown keys; `text_fields` are fields where YAML
    often mis-parses unquoted Jinja (`{{ x }}` reads as a mapping), so the fix says to quote.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _yaml_loc(first["loc"], where)
    kind = first["type"]
    message = first["msg"]
    fix = None
    if kind == "missing":
        message = "required field is missing"
        fix = f"add `{loc[-1]}:`" if loc else None
    elif kind == "extra_forbidden":
        message = f"unknown field '{loc[-1]}'"
        close = difflib.get_close_matches(str(loc[-1]), sorted(set(known_fields)), n=1)
        fix = f"did you mean '{close[0]}'?" if close else "remove it"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    elif kind in ("string_type",) and loc and loc[-1] in set(text_fields):
        fix = "quote the text or use a block scalar (`|`): YAML reads an unquoted {{ ... }} as a mapping"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return where.error(loc, message, fix=fix)


def _yaml_loc(loc: Sequence[Any], where: SourceMap) -> Loc:
    """Drop pydantic's union-tag parts of `loc` that do not exist in the YAML."""
    out: Loc = ()
    for i, part in enumerate(loc):
        candidate = out + (part,)
        last = i == len(loc) - 1
        if candidate in where.lines or last:
            out = candidate
    return out
