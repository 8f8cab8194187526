"""The web UI: server-rendered pages over the workspace (runs, assets, diffs, lineage, eval reports,
request traces, a playground), as a FastAPI sub-application.

    app.mount("/ui", create_ui_app(ws))          # what `llmops serve` does
    llmops ui --port 8001                          # the UI alone

FastAPI and Jinja2 are imported only when the app is created, so `import llmops` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_ui_app"]


def create_ui_app(ws: Any, *, api_keys_required: Callable[[], bool] | None = None) -> "FastAPI":
    """The UI over workspace `ws`, to mount at `/ui`; `api_keys_required()` says whether actions
    (moving an alias, running the playground) need an API key now."""
    from llmops.ui.app import create_ui_app as create

    return create(ws, api_keys_required=api_keys_required)
