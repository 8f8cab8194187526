"""Stop strings and safe streaming, as pure functions shared by the in-process backends.

A streamed delta must never contain text that a later token turns into a stop string,
so the end of the text that could still grow into one is held back:

    >>> cut_at_stop("Paris.\\nQ: next", ("\\nQ:",))
    ('Paris.', True)
    >>> emittable("Paris.\\n", ("\\nQ:",))     # "\\n" may be the start of "\\nQ:"
    'Paris.'
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["cut_at_stop", "emittable"]

# What a byte-level tokenizer decodes a partial UTF-8 character to; never stream it.
REPLACEMENT_CHAR = "\ufffd"


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Return `text` cut before the earliest stop string, and whether one was found."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1 and at < cut:
            cut = at
    return text[:cut], cut != len(text)


def emittable(text: str, stops: Sequence[str]) -> str:
    """The longest prefix of `text` that no further text can change.

    Holds back a trailing partial character and any suffix that is a proper
    prefix of a stop string (it may yet complete into one and be cut).
    """
    end = len(text)
    while end and text[end - 1] == REPLACEMENT_CHAR:
        end -= 1
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, end), held, -1):
            if text.endswith(stop[:n], 0, end):
                held = n
                break
    return text[: end - held]
