"""llmops: prompts, chains, indexes, adapters and evals of an LLM application, versioned and linked by one store."""

from llmops.errors import LLMOpsError
from llmops.store.registry import AssetVersion
from llmops.workspace import Workspace

__all__ = ["AssetVersion", "LLMOpsError", "Workspace"]
__version__ = "0.1.0"
