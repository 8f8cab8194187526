"""API keys of `llmops serve`: created once, stored hashed, limited to some models or chains.

    key, secret = create_key(ws, "support-bot", scopes=["smollm2*", "chain/rag-qa"])   # secret shown once
    list_keys(ws)            # names, prefixes, scopes, dates: never a secret
    revoke_key(ws, "support-bot")

Only the sha256 of a secret is stored, with its first characters (`prefix`) so a user can tell keys
apart and the server can find the candidates; the hashes are compared in constant time.

Keys are required as soon as one active key exists (or when `ServeSettings.api_keys_required` says
so): a request then needs `Authorization: Bearer <secret>`, and gets 401 without a valid one, 403 when
the key's scopes do not cover what it asks for. Scopes are fnmatch patterns over model names
(`smollm2`, `smollm2:handbook-qa@2`) and chain names (`chain/rag-qa`); a name asked for with an
`@ref` is covered by a pattern for the name without it. `["*"]` (the default) covers everything.

`require_key(scope)` is the FastAPI dependency; `scope` says what the request asks for:
`None` (any valid key will do), `"model"` (the JSON body's `model`), `"chain"` (the path's `{name}`,
as `chain/NAME`), a callable `request -> name`, or a fixed name such as `"admin"`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import inspect
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from llmops.errors import InvalidValue, LLMOpsError, NotFound
from llmops.store.engine import read, write
from llmops.store.schema import ApiKeyRow
from llmops.store.values import check_key

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from llmops.workspace import Workspace

__all__ = ["ApiKey", "authenticate", "covers", "create_key", "keys_required", "list_keys",
           "require_key", "revoke_key"]

SECRET_PREFIX = "llmops-"
PREFIX_LEN = len(SECRET_PREFIX) + 8  # what is stored and shown of a secret
MAX_SCOPE = 255


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: never its secret."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def covers(self, resource: str | None) -> bool:
        return covers(self.scopes, resource)

    def to_dict(self) -> dict:
        return {"name": self.name, "prefix": self.prefix, "scopes": self.scopes, "active": self.active,
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def _key(row) -> ApiKey:
    return ApiKey(id=row.id, name=row.name, prefix=row.prefix, scopes=json.loads(row.scopes),
                  created_at=_dt(row.created_at), revoked_at=_dt(row.revoked_at))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def covers(scopes: list[str], resource: str | None) -> bool:
    """Whether fnmatch patterns `scopes` cover `resource` (or the resource without its `@ref`).

    >>> covers(["smollm2*"], "smollm2:handbook-qa@2"), covers(["chain/rag-qa"], "chain/rag-qa@3")
    (True, True)
    >>> covers(["chain/rag-qa"], "smollm2")
    False
    """
    if resource is None:
        return True
    names = {resource, resource.split("@", 1)[0]}
    return any(fnmatch.fnmatchcase(n, p) for p in scopes for n in names)


def _check_scopes(scopes: list[str] | None) -> list[str]:
    if scopes is None or len(scopes) == 0:
        return ["*"]
    out = []
    for s in scopes:
        if not isinstance(s, str) or not s.strip():
            raise InvalidValue(f"scope {s!r} is empty; give a model or chain name pattern such as 'smollm2*' "
                               "or 'chain/rag-qa'")
        if not s.isprintable() or len(s) > MAX_SCOPE:
            raise InvalidValue(f"scope {s[:60]!r} must be printable text of at most {MAX_SCOPE} characters")
        out.append(s.strip())
    return list(dict.fromkeys(out))


def create_key(ws: "Workspace", name: str, scopes: list[str] | None = None) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret is returned this once and never stored."""
    check_key(name, "API key", noun="name")
    if not name.isprintable() or name != name.strip():
        raise InvalidValue(f"API key name {name[:60]!r} must be printable text without surrounding spaces")
    scopes = _check_scopes(scopes)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    try:
        with write(ws.engine) as conn:
            conn.execute(insert(ApiKeyRow).values(name=name, hash=_hash(secret), prefix=secret[:PREFIX_LEN],
                                                  scopes=json.dumps(scopes), created_at=now, revoked_at=None))
            row = conn.execute(select(ApiKeyRow).where(ApiKeyRow.name == name)).one()
    except IntegrityError:
        raise LLMOpsError(f"an API key named {name!r} already exists (names stay taken after a revoke); "
                          "choose another name") from None
    return _key(row), secret


def list_keys(ws: "Workspace", *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, oldest first (secrets are not stored, so none is shown)."""
    stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
    if not include_revoked:
        stmt = stmt.where(ApiKeyRow.revoked_at.is_(None))
    with read(ws.engine) as conn:
        return [_key(r) for r in conn.execute(stmt)]


def revoke_key(ws: "Workspace", name: str) -> ApiKey:
    """Revoke a key by name: requests with it get 401 from now on."""
    with write(ws.engine) as conn:
        done = conn.execute(update(ApiKeyRow).where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))
                            .values(revoked_at=time.time()))
        row = conn.execute(select(ApiKeyRow).where(ApiKeyRow.name == name)).first()
    if row is None:
        raise NotFound(f"no API key named {name[:80]!r}; list them with `llmops keys list`")
    if done.rowcount == 0:
        raise NotFound(f"API key {name!r} was already revoked")
    return _key(row)


def any_active_key(engine: "Engine") -> bool:
    with read(engine) as conn:
        return bool(conn.execute(select(exists().where(ApiKeyRow.revoked_at.is_(None)))).scalar())


def authenticate(engine: "Engine", secret: str) -> ApiKey | None:
    """The active key whose secret this is, or None. Hashes are compared in constant time."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) < PREFIX_LEN:
        return None
    digest = _hash(secret)
    with read(engine) as conn:
        rows = conn.execute(select(ApiKeyRow).where(ApiKeyRow.prefix == secret[:PREFIX_LEN],
                                                    ApiKeyRow.revoked_at.is_(None))).all()
    found = None
    for row in rows:
        if hmac.compare_digest(row.hash, digest):
            found = row
    return _key(found) if found is not None else None


def keys_required(engine: "Engine", settings: Any = None) -> bool:
    """`settings.api_keys_required` when set, else whether any active key exists."""
    setting = getattr(settings, "api_keys_required", None)
    return setting if setting is not None else any_active_key(engine)


# -- the FastAPI dependency ------------------------------------------------------------------------

async def _resource(request: Any, scope: str | Callable | None) -> str | None:
    if scope is None:
        return None
    if callable(scope):
        value = scope(request)
        return await value if inspect.isawaitable(value) else value
    if scope == "model":
        try:
            body = await request.json()
        except ValueError:
            return None  # the route answers the malformed body itself
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None
    if scope == "chain":
        name = request.path_params.get("name")
        return f"chain/{name}" if name else None
    return scope


def require_key(scope: str | Callable | None = None) -> Callable:
    """A FastAPI dependency: the request's ApiKey (also set as `request.state.api_key`), or None when
    keys are not required; raises HTTPException 401 (missing or invalid key) or 403 (not in scope)."""
    from fastapi import HTTPException, Request
    from starlette.concurrency import run_in_threadpool

    async def dependency(request: Request) -> ApiKey | None:
        ws = request.app.state.ws
        request.state.api_key = None
        if not await run_in_threadpool(keys_required, ws.engine, getattr(request.app.state, "settings", None)):
            return None
        header = request.headers.get("authorization", "")
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            raise HTTPException(401, "this server requires an API key: send `Authorization: Bearer KEY` "
                                     "(create one with `llmops keys create NAME`)",
                                headers={"WWW-Authenticate": "Bearer"})
        key = await run_in_threadpool(authenticate, ws.engine, secret.strip())
        if key is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        resource = await _resource(request, scope)
        if not key.covers(resource):
            raise HTTPException(403, f"API key {key.name!r} may not use {resource!r} "
                                     f"(its scopes: {', '.join(key.scopes)})")
        request.state.api_key = key
        return key

    dependency.__annotations__ = {"request": Request, "return": Any}  # resolved here, not from module globals
    return dependency
