"""llmops: prompts, chains, indexes, adapters and evals of an LLM application, versioned and linked by one store.

`Workspace` and `AssetVersion` are imported on first access (PEP 562), so `import llmops` and the
`llmops` command start without SQLAlchemy, Alembic or torch; `tests/test_api.py` guards both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmops.errors import LLMOpsError

if TYPE_CHECKING:
    from llmops.store.registry import AssetVersion
    from llmops.workspace import Workspace

__all__ = ["AssetVersion", "LLMOpsError", "Workspace"]
__version__ = "0.1.0"

_LAZY = {"AssetVersion": "llmops.store.registry", "Workspace": "llmops.workspace"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmops' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
