"""The HTTP server behind `llmops serve`: an OpenAI-compatible API, chains over HTTP, metrics.

    from llmops.serve import Batcher, ServeSettings, create_app
    app = create_app(ws, settings=ServeSettings(max_concurrency=16))   # a FastAPI app; run it with uvicorn
    batcher = Batcher(backend).start()      # continuous batching over a TransformersBackend (batcher.py)

Nothing heavy is imported here: FastAPI, uvicorn and the models load when an app is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Batcher", "ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from llmops.serve.app import create_app

        return create_app
    if name == "Batcher":
        from llmops.serve.batcher import Batcher

        return Batcher
    if name == "ServeSettings":
        from llmops.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module 'llmops.serve' has no attribute {name!r}")
