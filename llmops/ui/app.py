"""The web UI as a FastAPI sub-application: `create_ui_app(ws)`, mounted at `/ui` by `llmops serve`
and by `llmops ui`.

Pages are rendered on the server from the workspace API with Jinja2 (templates/), with inline SVG
charts, so they read without JavaScript; the one stylesheet and script ship in static/. Links are
built from the mount point the request arrived under (`scope["root_path"]`), so the same app works
at `/ui`, behind a proxy prefix, or anywhere else it is mounted.

Read-only by default. The two actions that change something (moving an alias, running the
playground) are POSTs that need an API key when the server has keys on (`api_keys_required`), and
refuse cross-site form posts (an `Origin` that is not this host).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from llmops.errors import LLMOpsError, NotFound

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_FORM_BYTES = 1 << 20
PAGE_SIZES = (25, 50, 100, 200)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'")


class Forbidden(LLMOpsError):
    """An action refused: no or a wrong API key, or a cross-site form post (HTTP 401/403)."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


class BadRequest(LLMOpsError):
    """A page argument that cannot be read (HTTP 400)."""


@lru_cache(maxsize=1)
def env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    e = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                    trim_blocks=True, lstrip_blocks=True)
    e.filters.update(dt=fmt_time, num=fmt_num, pretty=pretty_json, short=lambda s: str(s)[:12],
                     q=lambda v: urllib.parse.quote(str(v), safe=""), dur=fmt_duration)
    return e


def fmt_time(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(run: Any) -> str:
    if run.ended_at is None:
        return "—"
    s = (run.ended_at - run.started_at).total_seconds()
    return f"{s * 1000:.0f} ms" if s < 1 else (f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min")


def fmt_num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if value != value:
        return "NaN"
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


class UI:
    """What every page handler shares: the workspace, the key check, and rendering."""

    def __init__(self, ws: Any, api_keys_required: Callable[[], bool] | None):
        self.ws = ws
        self._keys_required = api_keys_required
        self.backends: dict[tuple, Any] = {}  # the playground's loaded models, kept for the next run
        self.backends_lock = threading.Lock()

    @staticmethod
    def base(request: Request) -> str:
        """Where the UI is mounted, e.g. `/ui`: every link starts with it."""
        return request.scope.get("root_path", "").rstrip("/")

    def keys_on(self) -> bool:
        """Whether actions need an API key now: the server's setting, else whether any key exists."""
        if self._keys_required is not None:
            return bool(self._keys_required())
        keys = _keys_module()
        return bool(keys is not None and keys.keys_required(self.ws.engine))

    def render(self, request: Request, template: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env().get_template(template).render(base=self.base(request), keys_on=self.keys_on(),
                                                   request=request, **ctx)
        return HTMLResponse(html, status_code=http_status)

    def redirect(self, request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(self.base(request) + path, status_code=303)

    async def form(self, request: Request) -> dict[str, str]:
        """A url-encoded form body (what the pages' forms send), size-limited; last value wins."""
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest(f"the form is larger than {MAX_FORM_BYTES} bytes")
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest("the form is not UTF-8 text") from None
        return dict(pairs)

    def authorize(self, request: Request, form: dict[str, str], resource: str | None = None) -> None:
        """Refuse a cross-site post, and, when keys are on, a post without a valid key for `resource`
        (a key from the form's `api_key` field or an `Authorization: Bearer` header)."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
            raise Forbidden(f"a form posted from {origin} is refused: use the UI on this server", 403)
        if not self.keys_on():
            return
        secret = (form.get("api_key") or "").strip()
        auth = request.headers.get("authorization", "")
        if not secret and auth.lower().startswith("bearer "):
            secret = auth[7:].strip()
        if not secret:
            raise Forbidden("this server requires an API key for actions: paste it in the form's API key field "
                            "(create one with `llmops keys create NAME`)")
        keys = _keys_module()
        key = keys.authenticate(self.ws.engine, secret) if keys is not None else None
        if key is None:
            raise Forbidden("invalid or revoked API key")
        if resource is not None and not key.covers(resource):
            raise Forbidden(f"API key {key.name!r} may not use {resource!r} (its scopes: {', '.join(key.scopes)})", 403)


def _keys_module() -> Any:
    """`llmops.serve.keys` (API keys live with the server), or None in a build without it."""
    try:
        from llmops.serve import keys
    except ImportError:
        return None
    return keys


def page_number(value: str | None) -> int:
    try:
        n = int(value or 1)
    except ValueError:
        raise BadRequest(f"page {value!r} is not a page number: use 1, 2, …") from None
    if not 1 <= n <= 10**7:
        raise BadRequest(f"page {value!r} is out of range: use 1, 2, …")
    return n


def page_size(value: str | None, default: int = 50) -> int:
    try:
        n = int(value or default)
    except ValueError:
        raise BadRequest(f"per_page {value!r} is not a number: use one of {', '.join(map(str, PAGE_SIZES))}") from None
    if n not in PAGE_SIZES:
        raise BadRequest(f"per_page {n} is not offered: use one of {', '.join(map(str, PAGE_SIZES))}")
    return n


def create_ui_app(ws: Any, *, api_keys_required: Callable[[], bool] | None = None) -> FastAPI:
    """The UI over workspace `ws`; `api_keys_required()` says whether actions need an API key now."""
    from llmops.ui import assets, evals, lineage, playground, requests, runs

    app = FastAPI(title="llmops UI", docs_url=None, redoc_url=None, openapi_url=None)
    ui = UI(ws, api_keys_required)
    app.state.ui = ui
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (runs, assets, lineage, evals, requests, playground):
        app.include_router(module.router(ui))

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        return ui.redirect(request, "/runs")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("content-security-policy", CSP)
        response.headers.setdefault("x-content-type-options", "nosniff")
        response.headers.setdefault("referrer-policy", "same-origin")
        return response

    @app.exception_handler(NotFound)
    def not_found(request: Request, exc: NotFound) -> HTMLResponse:
        return ui.render(request, "error.html.j2", 404, title="Not found", message=str(exc))

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> HTMLResponse:
        return ui.render(request, "error.html.j2", exc.status, title="Not allowed", message=str(exc))

    @app.exception_handler(LLMOpsError)
    def bad(request: Request, exc: LLMOpsError) -> HTMLResponse:
        return ui.render(request, "error.html.j2", 400, title="Cannot show this", message=str(exc))

    @app.exception_handler(404)
    def no_page(request: Request, exc: Exception) -> HTMLResponse:
        return ui.render(request, "error.html.j2", 404, title="Not found",
                         message=f"there is no page at {request.url.path}")

    return app


def standalone_app(ws: Any, *, api_keys_required: Callable[[], bool] | None = None) -> FastAPI:
    """The UI alone (`llmops ui`): a bare app with the UI mounted at `/ui`, as `llmops serve` mounts it."""
    app = FastAPI(title="llmops UI", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/ui", create_ui_app(ws, api_keys_required=api_keys_required))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/runs")

    return app
