"""The run-search filter grammar, compiled to parameterised SQLAlchemy expressions (never string-built SQL).

    filter     := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | "(" or ")" | comparison
    comparison := ident op value | ident ["NOT"] "IN" "(" value ("," value)* ")" | ident ["NOT"] "LIKE" string
    ident      := ("metrics" | "params" | "tags" | "attributes") "." (key | `quoted key` | "quoted key")
    op         := "=" | "!=" | "<" | "<=" | ">" | ">="

Example: `metrics.accuracy >= 0.9 AND (params.lr IN ('1e-3', '3e-4') OR tags.team LIKE 'search%')`.
Metrics compare as numbers (their latest value); params and tags as strings; `attributes.started_at`
takes epoch seconds or an ISO date. Every mistake raises FilterSyntaxError pointing at its column.

Cost is bounded, since filters may come from anyone who can reach the server: at most MAX_LENGTH
characters, MAX_TERMS comparisons, MAX_DEPTH nested parentheses or NOTs, MAX_IN values in one IN list,
and numbers within float range.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import ColumnElement, and_, not_, or_, select

from llmops.errors import FilterSyntaxError
from llmops.store.schema import MetricRow, ParamRow, RunRow, TagRow

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
    | (?P<string>'(?:[^']|'')*'|"(?:[^"\\]|\\.)*")
    | (?P<backtick>`[^`]*`)
    | (?P<op>!=|<>|<=|>=|=|<|>|\(|\)|,|\.)
    | (?P<word>[A-Za-z_][A-Za-z0-9_\-/:]*)
    )""",
    re.VERBOSE,
)
MAX_LENGTH = 10_000
MAX_TERMS = 200
MAX_DEPTH = 50
MAX_IN = 1000
_KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "ASC", "DESC"}
_PREFIXES = {"metrics": "metrics", "metric": "metrics", "params": "params", "param": "params",
             "tags": "tags", "tag": "tags", "attributes": "attributes", "attribute": "attributes", "attr": "attributes"}
ATTRIBUTES = {"id": RunRow.id, "name": RunRow.name, "kind": RunRow.kind, "status": RunRow.status,
              "started_at": RunRow.started_at, "ended_at": RunRow.ended_at, "parent_id": RunRow.parent_id,
              "user": RunRow.user}
_TIME_ATTRS = {"started_at", "ended_at"}


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, word, keyword, op, end
    text: str
    value: object
    column: int  # 1-based


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(f"filter is longer than {MAX_LENGTH} characters", text[:MAX_LENGTH + 1], MAX_LENGTH + 1)
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            col = pos + 1 + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise FilterSyntaxError(f"unexpected character {text[col - 1]!r}", text, col)
        kind = m.lastgroup
        raw = m.group(kind)
        col = m.start(kind) + 1
        if kind == "number":
            value: object = float(raw)  # compared as a float (metrics, times); params and tags use the text
            if not math.isfinite(value):
                raise FilterSyntaxError(f"number {raw[:20]}{'...' if len(raw) > 20 else ''} is out of range "
                                        "(numbers must fit a 64-bit float)", text, col)
        elif kind == "string":
            value = raw[1:-1].replace("''", "'") if raw[0] == "'" else re.sub(r"\\(.)", r"\1", raw[1:-1])
        elif kind == "backtick":
            kind, value = "word", raw[1:-1]
        elif kind == "word" and raw.upper() in _KEYWORDS:
            kind, value = "keyword", raw.upper()
        else:
            value = raw
        tokens.append(Token(kind, raw, value, col))
        pos = m.end()
    tokens.append(Token("end", "", None, len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.terms = 0

    def error(self, message: str, token: Token | None = None):
        token = token or self.peek()
        return FilterSyntaxError(message, self.text, token.column)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, value=None) -> Token | None:
        tok = self.peek()
        if tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return tok
        return None

    def expect(self, kind: str, value, what: str) -> Token:
        tok = self.accept(kind, value)
        if tok is None:
            found = self.peek().text or "end of filter"
            raise self.error(f"expected {what}, found {found!r}")
        return tok

    # grammar ---------------------------------------------------------------
    def parse_filter(self) -> ColumnElement[bool]:
        expr = self.parse_or()
        if self.peek().kind != "end":
            raise self.error(f"expected AND, OR or end of filter, found {self.peek().text!r}")
        return expr

    def parse_or(self):
        parts = [self.parse_and()]
        while self.accept("keyword", "OR"):
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else or_(*parts)

    def parse_and(self):
        parts = [self.parse_not()]
        while self.accept("keyword", "AND"):
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else and_(*parts)

    def parse_not(self):
        tok = self.peek()
        if tok.kind == "keyword" and tok.value == "NOT" or tok.kind == "op" and tok.value == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(f"filter nests more than {MAX_DEPTH} parentheses or NOTs")
            self.take()
            if tok.value == "NOT":
                expr = not_(self.parse_not())
            else:
                expr = self.parse_or()
                self.expect("op", ")", "')'")
            self.depth -= 1
            return expr
        return self.parse_comparison()

    def parse_ident(self) -> tuple[str, str, Token]:
        tok = self.peek()
        if tok.kind != "word" or tok.value not in _PREFIXES:
            raise self.error(
                f"expected metrics.KEY, params.KEY, tags.KEY or attributes.NAME, found {tok.text or 'end of filter'!r}"
            )
        self.take()
        self.expect("op", ".", "'.' after " + tok.text)
        key_tok = self.take()
        if key_tok.kind not in ("word", "string", "keyword"):
            raise self.error(f"expected a key after '{tok.text}.'", key_tok)
        prefix = _PREFIXES[tok.value]
        key = key_tok.text if key_tok.kind == "keyword" else str(key_tok.value)
        if prefix == "attributes" and key not in ATTRIBUTES:
            raise self.error(f"unknown attribute {key!r}; known: {', '.join(sorted(ATTRIBUTES))}", key_tok)
        return prefix, key, tok

    def parse_value(self, prefix: str, key: str) -> object:
        tok = self.take()
        if tok.kind not in ("number", "string"):
            raise self.error(f"expected a number or a quoted string, found {tok.text or 'end of filter'!r}", tok)
        if prefix == "metrics" and tok.kind != "number":
            raise self.error(f"metrics.{key} compares with numbers, found {tok.text}", tok)
        if prefix == "attributes" and key in _TIME_ATTRS:
            return _epoch(tok, self)
        if prefix in ("params", "tags") or (prefix == "attributes" and key not in _TIME_ATTRS):
            return str(tok.value) if tok.kind == "string" else tok.text
        return tok.value

    def parse_comparison(self):
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.error(f"filter has more than {MAX_TERMS} comparisons")
        prefix, key, _ = self.parse_ident()
        column = _column(prefix, key)
        negate = bool(self.accept("keyword", "NOT"))
        if self.accept("keyword", "IN"):
            self.expect("op", "(", "'(' after IN")
            values = [self.parse_value(prefix, key)]
            while self.accept("op", ","):
                if len(values) >= MAX_IN:
                    raise self.error(f"an IN list holds at most {MAX_IN} values")
                values.append(self.parse_value(prefix, key))
            self.expect("op", ")", "')' to close the IN list")
            expr = column.in_(values)
            return not_(expr) if negate else expr
        if self.accept("keyword", "LIKE"):
            tok = self.peek()
            if tok.kind != "string" or prefix == "metrics":
                raise self.error("LIKE takes a quoted pattern on params, tags or attributes", tok)
            self.take()
            expr = column.like(tok.value)
            return not_(expr) if negate else expr
        if negate:
            raise self.error("expected IN or LIKE after NOT")
        tok = self.take()
        if tok.kind != "op" or tok.value not in ("=", "!=", "<>", "<", "<=", ">", ">="):
            raise self.error(f"expected a comparison (= != < <= > >= IN LIKE), found {tok.text or 'end of filter'!r}", tok)
        value = self.parse_value(prefix, key)
        return {
            "=": column == value, "!=": column != value, "<>": column != value,
            "<": column < value, "<=": column <= value, ">": column > value, ">=": column >= value,
        }[tok.value]

    def parse_order(self) -> list:
        clauses = []
        while True:
            prefix, key, _ = self.parse_ident()
            column = _column(prefix, key)
            if self.accept("keyword", "DESC"):
                clauses.append(column.desc().nulls_last())
            else:
                self.accept("keyword", "ASC")
                clauses.append(column.asc().nulls_last())
            if not self.accept("op", ","):
                break
        if self.peek().kind != "end":
            raise self.error(f"expected ',' ASC or DESC, found {self.peek().text!r}")
        return clauses


def _epoch(tok: Token, parser: _Parser) -> float:
    if tok.kind == "number":
        return float(tok.value)
    try:
        dt = datetime.fromisoformat(str(tok.value))
    except ValueError:
        raise parser.error(f"expected epoch seconds or an ISO date like '2026-01-31T12:00', found {tok.text}", tok) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _column(prefix: str, key: str):
    if prefix == "attributes":
        return ATTRIBUTES[key]
    if prefix == "metrics":
        return (
            select(MetricRow.value)
            .where(MetricRow.run_id == RunRow.id, MetricRow.key == key)
            .order_by(MetricRow.step.desc(), MetricRow.timestamp.desc(), MetricRow.id.desc())
            .limit(1)
            .correlate(RunRow)
            .scalar_subquery()
        )
    table = ParamRow if prefix == "params" else TagRow
    return select(table.value).where(table.run_id == RunRow.id, table.key == key).correlate(RunRow).scalar_subquery()


def compile_filter(text: str | None) -> ColumnElement[bool] | None:
    """Parse `text` into a WHERE clause over the runs table (None for an empty filter)."""
    if text is None or not text.strip():
        return None
    return _Parser(text).parse_filter()


def compile_order(order_by: str | list[str] | None) -> list:
    if not order_by:
        return [RunRow.started_at.desc(), RunRow.id.desc()]
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    clauses = []
    for item in items:
        clauses.extend(_Parser(item).parse_order())
    return clauses + [RunRow.id.desc()]
