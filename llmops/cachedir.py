"""Where derived, re-creatable files live (ONNX exports, de-quantised GGUF weights): a per-user cache.

`LLMOPS_CACHE_DIR` overrides it; otherwise `$XDG_CACHE_HOME/llmops` or `~/.cache/llmops`. Nothing here
is a source of truth: deleting the folder only costs the time to derive its files again.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(area: str) -> Path:
    root = os.environ.get("LLMOPS_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "llmops")
    return Path(root) / area
