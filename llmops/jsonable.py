"""Values as strict JSON: what `--json` output and HTTP answers are made of.

JSON has no Infinity or NaN, yet a metric may be infinite (a diverged loss). They are written as the
strings "Infinity", "-Infinity" and "NaN" (the spelling JavaScript's `Number()` and Python's `float()`
read back), so every output parses with a strict JSON parser.

    >>> json_safe({"loss": float("inf"), "at": [1, 2.5, float("nan")]})
    {'loss': 'Infinity', 'at': [1, 2.5, 'NaN']}
"""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import PurePath

__all__ = ["json_safe"]

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", errors="backslashreplace")
    if isinstance(key, float):
        return _float(key) if not math.isfinite(key) else repr(key)
    return str(key)


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else _NON_FINITE[value]


def json_safe(obj: object) -> object:
    """`obj` with every value `json.dumps(..., allow_nan=False)` would refuse made representable:
    non-finite floats as strings, dict keys as strings (bytes decoded), tuples and sets as lists,
    datetimes as ISO 8601, paths and anything else as `str()`."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return _float(obj)
    if isinstance(obj, dict):
        return {_key(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((json_safe(v) for v in obj), key=repr)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", errors="backslashreplace")
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        try:
            return json_safe(obj.item())
        except (TypeError, ValueError):
            pass
    return str(obj)
