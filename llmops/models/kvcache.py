"""Batch surgery on a transformers KV cache, so that rows can join and leave a batch being decoded.

A cache holds, per layer, keys and values shaped (rows, kv heads, length, head dim). Rows are
right-aligned: every row's newest token sits in the last column, and a row shorter than the batch
is left-padded with zeros that its attention mask (1 = a real token, 0 = padding) hides:

    row a:  [k0 k1 k2 k3]   mask [1 1 1 1]
    row b:  [ 0  0 k0 k1]   mask [0 0 1 1]       (positions are passed explicitly, so padding shifts nothing)

`merge` left-pads the shorter of two caches and stacks them; `select` keeps some rows; `trim_left`
drops leading columns that no remaining row uses. Only transformers' plain growing layers
(`DynamicLayer`, transformers >= 4.56 and 5.x) are reshaped here; for any other cache (sliding
windows, linear attention, quantised) `mergeable` is False and the decoder lets rows join only an
empty batch rather than guess at a layout.
"""

from __future__ import annotations

from typing import Any

__all__ = ["leading_padding", "merge", "mergeable", "select", "trim_left"]


def _layers(cache: Any) -> list[Any]:
    return list(getattr(cache, "layers", None) or [])


def mergeable(cache: Any) -> bool:
    """True when every layer of `cache` is a plain `DynamicLayer` holding 4-D keys and values."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # transformers < 4.56 kept lists of tensors; not reshaped here
        return False
    layers = _layers(cache)
    return bool(layers) and all(
        type(layer) is DynamicLayer and getattr(layer, "keys", None) is not None and layer.keys.dim() == 4
        for layer in layers)


def select(cache: Any, rows: list[int]) -> Any:
    """Keep only `rows` (indices, in that order); the cache is changed in place and returned."""
    import torch

    cache.batch_select_indices(torch.tensor(rows, dtype=torch.long))
    return cache


def merge(cache: Any, mask: Any, other: Any, other_mask: Any) -> tuple[Any, Any]:
    """Stack `other`'s rows under `cache`'s, left-padding the shorter; returns (cache, mask), `cache` changed."""
    import torch

    length = max(mask.shape[1], other_mask.shape[1])

    def pad(t: Any, dim: int) -> Any:
        missing = length - t.shape[dim]
        if not missing:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    for mine, theirs in zip(_layers(cache), _layers(other), strict=True):
        mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)], dim=0)
        mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)], dim=0)
    return cache, torch.cat([pad(mask, 1), pad(other_mask, 1)], dim=0)


def leading_padding(mask: Any) -> int:
    """How many leading columns are padding in every row (a row always has a real token at the end)."""
    used = mask.any(dim=0).nonzero()
    return int(used[0]) if len(used) else int(mask.shape[1])


def trim_left(cache: Any, columns: int) -> Any:
    """Drop the first `columns` positions of every row (padding that no row attends to); in place."""
    for layer in _layers(cache):
        layer.keys = layer.keys[:, :, columns:, :]
        layer.values = layer.values[:, :, columns:, :]
    return cache
