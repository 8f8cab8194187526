"""Asset refs: the one parser of `kind/name@selector` and the one rule for kinds, names and aliases.

Every module that takes a ref from a user (specs, registries, the CLI, lineage) calls `parse_ref`;
nothing else splits on `@` or `/`.

Grammar (ASCII only, so `qa@²` or a full-width digit is refused rather than read as a number):

    ref      := [kind "/"] name ["@" selector]
    kind     := [a-z][a-z0-9_-]{0,63}
    name     := [A-Za-z0-9][A-Za-z0-9_.-]{0,127}
    selector := version | "latest" | alias
    version  := [0-9]{1,10}, 1 .. 2**31-1   (what both databases can hold)
    alias    := [A-Za-z][A-Za-z0-9_.-]{0,63}, not "latest"

    >>> parse_ref("qa@3", default_kind="prompt")
    Ref(kind='prompt', name='qa', selector='3')
    >>> str(parse_ref("prompt/qa@production"))
    'prompt/qa@production'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmops.errors import InvalidAlias, InvalidRef

__all__ = ["MAX_VERSION", "Ref", "check_alias", "check_kind", "check_name", "parse_ref", "parse_version"]

MAX_VERSION = 2**31 - 1
KIND_RULE = "a lowercase letter, then lowercase letters, digits, '_' or '-' (at most 64)"
NAME_RULE = "a letter or digit, then letters, digits, '_', '.' or '-' (at most 128, ASCII only)"
ALIAS_RULE = "a letter, then letters, digits, '_', '.' or '-' (at most 64), not a number and not 'latest'"

_KIND = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_VERSION = re.compile(r"[0-9]{1,10}")
_EXAMPLE = "write kind/name@version or kind/name@alias, e.g. prompt/qa@3 or prompt/qa@production"


@dataclass(frozen=True)
class Ref:
    """A parsed ref. `selector` is a version number (as text), an alias, "latest", or None (latest)."""

    kind: str
    name: str
    selector: str | None = None

    @property
    def base(self) -> str:
        """`kind/name`, without the selector."""
        return f"{self.kind}/{self.name}"

    @property
    def version(self) -> int | None:
        """The version number when the ref pins one, else None."""
        return int(self.selector) if self.selector is not None and self.selector.isdigit() else None

    @property
    def short(self) -> str:
        """`name@selector` (or `name`): the kind left to context, as specs and the CLI write it."""
        return f"{self.name}@{self.selector}" if self.selector else self.name

    def at(self, selector: str | int | None) -> "Ref":
        """The same asset at another selector."""
        return Ref(self.kind, self.name, None if selector is None else str(selector))

    def __str__(self) -> str:
        return f"{self.base}@{self.selector}" if self.selector else self.base


def _clip(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "...'"


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InvalidRef(f"asset kind {_clip(kind)} is not allowed: a kind is {KIND_RULE}, e.g. 'prompt'")
    return kind


def check_name(name: object, kind: str = "asset") -> str:
    """The one name rule for every asset kind (prompts, chains, indexes, adapters, datasets, models)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRef(f"{kind} name {_clip(name)} is not allowed: a name is {NAME_RULE}, e.g. 'qa' or 'rag-qa'")
    return name


def check_alias(alias: object) -> str:
    if not isinstance(alias, str) or alias == "latest" or not _ALIAS.fullmatch(alias):
        raise InvalidAlias(f"alias {_clip(alias)} is not allowed: an alias is {ALIAS_RULE}; "
                           "try 'production' or 'staging'")
    return alias


def parse_version(text: object) -> int:
    """A version number given as text or int: ASCII digits, 1 .. MAX_VERSION."""
    if isinstance(text, bool):
        text = repr(text)
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str) or not _VERSION.fullmatch(text) or not 1 <= int(text) <= MAX_VERSION:
        raise InvalidRef(f"version {_clip(text)} is not a version number: use 1 .. {MAX_VERSION} in ASCII digits")
    return int(text)


def parse_ref(text: object, *, default_kind: str | None = None, kinds: tuple[str, ...] | None = None) -> Ref:
    """Parse `kind/name@selector`; `kind/` may be left out when `default_kind` is given.

    `kinds` restricts which kinds are accepted (a prompt field refuses `chain/x`).
    """
    if not isinstance(text, str) or not text:
        raise InvalidRef(f"{_clip(text)} is not an asset ref: {_EXAMPLE}")
    body, at, selector = text.partition("@")
    kind, slash, name = body.partition("/")
    if not slash:
        kind, name = default_kind or "", body
    if not kind:
        raise InvalidRef(f"{_clip(text)} names no kind: {_EXAMPLE}")
    try:
        check_kind(kind)
        check_name(name, kind)
    except InvalidRef as exc:
        raise InvalidRef(f"{_clip(text)} is not an asset ref: {exc}") from None
    if kinds is not None and kind not in kinds:
        raise InvalidRef(f"{_clip(text)} is a {kind} ref; expected a {' or '.join(kinds)} ref here")
    if at:
        if not selector:
            raise InvalidRef(f"{_clip(text)} ends in '@': {_EXAMPLE}")
        if selector[0].isdigit() or selector.isdigit():
            try:
                selector = str(parse_version(selector))
            except InvalidRef as exc:
                raise InvalidRef(f"{_clip(text)}: {exc}") from None
        elif selector != "latest":
            try:
                check_alias(selector)
            except InvalidAlias as exc:
                raise InvalidRef(f"{_clip(text)}: {exc}") from None
    return Ref(kind, name, selector or None)

