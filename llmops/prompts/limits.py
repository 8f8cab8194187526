"""What one template render may cost, and the checks that keep it there (used by llmops.prompts.sandbox).

Every check runs *before* the operation it guards, from the sizes of its operands, so a hostile
template is refused before it allocates: `len(s) * n` before `s * n`, the widths in a format string
before formatting, `log2(a) * b` before `a ** b`. Loops and calls spend one step each from a per-render
budget that also holds the deadline (`bounded()`); outside `bounded()` (constant folding at push)
the default limits apply and nothing is counted.
"""

from __future__ import annotations

import math
import re
import string
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import Undefined
from jinja2.sandbox import MAX_RANGE

__all__ = ["DEFAULT_LIMITS", "LimitExceeded", "RenderLimits", "bounded", "checked_binop", "current_limits",
           "step", "text_size"]


@dataclass(frozen=True)
class RenderLimits:
    """What one render may cost. The defaults are far above any real prompt (a 1M-character prompt
    is ~250k tokens, more than the context window of the models llmops serves)."""

    max_text: int = 1_000_000       # characters in any string built, and in the rendered output
    max_items: int = MAX_RANGE      # items in a range() and in a list or tuple built with `*` / `+`
    max_int_bits: int = 4096        # size of an integer built with `*` / `**` (about 1233 digits)
    max_steps: int = 1_000_000      # loop iterations + calls
    max_seconds: float = 5.0        # wall clock, checked at every step


DEFAULT_LIMITS = RenderLimits()


class LimitExceeded(Exception):
    """A template asked for more than its RenderLimits allow. Turned into a TemplateError that names
    the prompt (and, at push, the file and line) by llmops.prompts.template."""

    def __init__(self, message: str, fix: str, lineno: int | None = None):
        super().__init__(message)
        self.message, self.fix, self.lineno = message, fix, lineno


@dataclass
class _Budget:
    limits: RenderLimits
    steps: int
    deadline: float

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise LimitExceeded(f"the template ran more than {self.limits.max_steps:,} loop iterations and calls",
                                "loop over less data, or do the work before rendering")
        if time.monotonic() >= self.deadline:
            raise LimitExceeded(f"rendering took longer than {self.limits.max_seconds:g} s",
                                "loop over less data, or do the work before rendering")


_budget: ContextVar[_Budget | None] = ContextVar("llmops_template_budget", default=None)


def current_budget() -> _Budget | None:
    """The budget of the render in progress (None outside `bounded()`)."""
    return _budget.get()


def current_limits() -> RenderLimits:
    budget = _budget.get()
    return budget.limits if budget is not None else DEFAULT_LIMITS


def step() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.step()


@contextmanager
def bounded(limits: RenderLimits = DEFAULT_LIMITS):
    """Count steps and time for the renders inside the block (one budget for all of them)."""
    token = _budget.set(_Budget(limits, limits.max_steps, time.monotonic() + limits.max_seconds))
    try:
        yield
    finally:
        _budget.reset(token)


# -- sizes ------------------------------------------------------------------------------------------

def text_size(value: Any, limit: int) -> int:
    """About how many characters `str(value)` has; stops counting once past `limit`.

    Containers are walked (shared references counted each time, as repr prints them each time), so
    `[doc] * 100000` is measured without being printed.
    """
    if isinstance(value, str):
        return len(value)
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, (float, type(None))):
            total += 24
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, Undefined):
            item._fail_with_undefined_error()
        else:
            total += len(repr(item))
    return total


def too_long(what: str, size: int, limit: int) -> LimitExceeded:
    return LimitExceeded(f"{what} would be about {size:,} characters (limit {limit:,})",
                         "build shorter text; pass long text in as a variable only when it fits")


def check_text(value: Any, what: str = "the text") -> None:
    limit = current_limits().max_text
    size = len(value) if isinstance(value, str) else text_size(value, limit)
    if size > limit:
        raise too_long(what, size, limit)


def check_width(value: Any, what: str) -> int:
    """A width or count: an int within max_text."""
    limit = current_limits().max_text
    if isinstance(value, int) and value > limit:
        raise LimitExceeded(f"{what} {value:,} is over the limit of {limit:,}", f"use a {what} under {limit:,}")
    return value


def replace_size(text: str, old: str, new: str, count: int = -1) -> int:
    n = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        n = min(n, count)
    return len(text) + n * (len(new) - len(old))


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_DIGITS = re.compile(r"\d+")


def _number(digits: str, what: str) -> int:
    if len(digits) > 9:
        raise LimitExceeded(f"{what} {digits[:12]}... is over the limit of {current_limits().max_text:,}",
                            "use a smaller width or precision")
    return int(digits)


def printf_size(fmt: str, args: Any) -> int:
    """An upper bound on the length of `fmt % args`."""
    limit = current_limits().max_text
    size, star = len(fmt), False
    for match in _PRINTF.finditer(fmt):
        for group in match.groups():
            if group == "*":
                star = True
            elif group:
                size += _number(group, "format width")
        size += 32
    values = args if isinstance(args, tuple) else (args,)
    if star:
        size += sum(abs(v) for v in values if isinstance(v, int))
    return size + text_size(args, limit)


def check_printf(fmt: str, args: Any) -> None:
    limit = current_limits().max_text
    size = printf_size(fmt, args)
    if size > limit:
        raise too_long("the formatted text", size, limit)


def spec_width(spec: str) -> int:
    """Width plus precision of a `str.format` spec (an upper bound on what they add)."""
    return sum(_number(d, "format width") for d in _DIGITS.findall(spec))


def check_format_string(fmt: str) -> None:
    """Widths written in a `str.format` template (nested `{:{w}}` widths are checked at render)."""
    limit = current_limits().max_text
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # a malformed format string fails at render with Python's own message
    size = len(fmt) + sum(spec_width(spec or "") for _, _, spec, _ in parsed)
    if size > limit:
        raise too_long("the formatted text", size, limit)


# -- checked operators ------------------------------------------------------------------------------

def checked_binop(operator: str, left: Any, right: Any) -> Any:
    limits = current_limits()
    if operator == "**":
        if (isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
                and math.log2(abs(left)) * right > limits.max_int_bits):
            raise LimitExceeded(f"{_short(left)} ** {_short(right)} would have about "
                                f"{int(math.log2(abs(left)) * right):,} bits (limit {limits.max_int_bits:,})",
                                "use smaller numbers")
        result = left ** right
    elif operator == "*":
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            limit = limits.max_text if isinstance(seq, str) else limits.max_items
            if len(seq) * n > limit:
                kind = "characters" if isinstance(seq, str) else "items"
                raise LimitExceeded(f"repeating {len(seq):,} {kind} {n:,} times gives {len(seq) * n:,} {kind} "
                                    f"(limit {limit:,})", "repeat fewer times")
        elif isinstance(left, int) and isinstance(right, int) and \
                left.bit_length() + right.bit_length() > limits.max_int_bits + 1:
            raise _too_many_bits(left.bit_length() + right.bit_length(), limits)
        result = left * right
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right)
        result = left % right
    elif operator == "+":
        if isinstance(left, str) and isinstance(right, str) and len(left) + len(right) > limits.max_text:
            raise too_long("the joined text", len(left) + len(right), limits.max_text)
        if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)) \
                and len(left) + len(right) > limits.max_items:
            raise LimitExceeded(f"the joined list would have {len(left) + len(right):,} items "
                                f"(limit {limits.max_items:,})", "build a shorter list")
        result = left + right
    else:
        result = _BINOPS[operator](left, right)
    if isinstance(result, int) and result.bit_length() > limits.max_int_bits:
        raise _too_many_bits(result.bit_length(), limits)
    return result


def _too_many_bits(bits: int, limits: RenderLimits) -> LimitExceeded:
    return LimitExceeded(f"the number would have {bits:,} bits (limit {limits.max_int_bits:,})", "use smaller numbers")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 20 else text[:17] + "..."


_BINOPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
           "**": lambda a, b: a ** b, "%": lambda a, b: a % b}


def check_str_method(owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple:
    """Refuse a string method call whose result would be over max_text; returns the args to call with."""
    limit = current_limits().max_text
    arg = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        check_width(arg, "width")
    elif name == "expandtabs":
        tab = arg if isinstance(arg, int) else 8
        size = len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(tab, 0)
        if size > limit:
            raise too_long("the expanded text", size, limit)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)) and isinstance(args[1], type(owner)):
        size = replace_size(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
        if size > limit:
            raise too_long("the replaced text", size, limit)
    elif name == "join" and args:
        items = list(args[0])
        size = len(owner) * max(len(items) - 1, 0) + sum(text_size(i, limit) for i in items)
        if size > limit:
            raise too_long("the joined text", size, limit)
        return (items,) + args[1:]
    elif name == "translate" and isinstance(arg, dict):
        longest = max((len(v) for v in arg.values() if isinstance(v, (str, bytes))), default=1)
        if len(owner) * longest > limit:
            raise too_long("the translated text", len(owner) * longest, limit)
    return args


GROWING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "translate"})
