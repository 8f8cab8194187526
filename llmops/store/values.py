"""What a run's params, metrics and tags may hold: checked when they are logged, not when they are written.

A run buffers what it logs and writes it later in one batch, so a value the database refuses would
otherwise surface at flush time, far from the call that logged it. These limits are the same on SQLite
and PostgreSQL (SQLite would accept more; PostgreSQL would not), so a run that logs on one store
logs on the other:

    key           str, 1..255 characters, no NUL, valid Unicode (no lone surrogates)
    param, tag    text after conversion (str, or sorted JSON for dict/list/tuple), at most
                  MAX_TEXT characters, no NUL, valid Unicode; bytes are refused (decode them first)
    metric        a real number (not bool) within float range; +inf and -inf are kept, NaN is refused
    step          an integer 0 .. 2**31-1

    >>> check_step("loss", 3)
    3
    >>> metric_value("loss", float("inf"))
    inf
"""

from __future__ import annotations

import json
import math
from numbers import Integral, Real

from llmops.errors import InvalidValue

__all__ = ["MAX_KEY", "MAX_STEP", "MAX_TEXT", "check_key", "check_step", "check_text", "metric_value", "text_value"]

MAX_KEY = 255
MAX_TEXT = 16 * 2**20
MAX_STEP = 2**31 - 1


def _clip(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def check_text(text: str, what: str, limit: int) -> str:
    """`text` as the store can hold it, or InvalidValue naming `what` and the rule it breaks."""
    if len(text) > limit:
        raise InvalidValue(f"{what} is {len(text)} characters long; the limit is {limit} on every store")
    if "\x00" in text:
        raise InvalidValue(f"{what} contains a NUL character (\\x00), which PostgreSQL cannot store; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(f"{what} is not valid Unicode (it holds a lone surrogate); "
                           "decode it with errors='replace' first") from None
    return text


def check_key(key: object, what: str, limit: int = MAX_KEY, noun: str = "key") -> str:
    """A param, metric or tag key (or a run's name or kind): a non-empty string of at most `limit` characters."""
    if not isinstance(key, str):
        raise InvalidValue(f"{what} {noun} {_clip(key)} is a {type(key).__name__}; {noun}s are strings of "
                           f"1..{limit} characters, e.g. 'learning_rate'")
    if not key:
        raise InvalidValue(f"{what} {noun} is empty; {noun}s are strings of 1..{limit} characters")
    return check_text(key, f"{what} {noun} {_clip(key)}", limit)


def text_value(key: str, value: object, what: str) -> str:
    """A param or tag value as stored: strings as they are, dict/list/tuple as sorted JSON, else str()."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidValue(f"{what} {key!r} is bytes; decode it to text first (or log it with log_artifact)")
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list, tuple)):
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError) as exc:
            raise InvalidValue(f"{what} {key!r} cannot be written as JSON ({exc}); pass a string") from None
    else:
        try:
            text = str(value)
        except Exception as exc:  # a broken __str__ of the caller's own object
            raise InvalidValue(f"{what} {key!r} cannot be turned into text ({exc}); pass a string") from None
    return check_text(text, f"{what} {key!r}", MAX_TEXT)


def metric_value(key: str, value: object) -> float:
    """A metric as a float. Infinities are kept (a diverged loss is worth recording); NaN is refused,
    because SQLite stores it as NULL and the point would read back as missing."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidValue(f"metric {key!r} must be a number, got {_clip(value)}")
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        raise InvalidValue(f"metric {key!r} = {_clip(value)} is out of the range of a 64-bit float") from None
    if math.isnan(number):
        raise InvalidValue(f"metric {key!r} must be a number, got NaN; skip the point or log it as a tag")
    return number


def check_step(key: str, step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, Integral):
        raise InvalidValue(f"step of metric {key!r} must be an integer 0..{MAX_STEP}, got {_clip(step)}")
    if not 0 <= step <= MAX_STEP:
        raise InvalidValue(f"step {step} of metric {key!r} is out of range: steps are 0..{MAX_STEP} on every store")
    return int(step)
