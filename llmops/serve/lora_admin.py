"""vLLM's runtime LoRA routes, so `llmops serve` can stand where `vllm serve` stands.

    POST /v1/load_lora_adapter   {"lora_name": "qa", "lora_path": "/adapters/qa", "load_inplace": false}
    POST /v1/unload_lora_adapter {"lora_name": "qa"}

They answer as vLLM's do (`vllm/entrypoints/openai/serving_models.py`): `200` with the plain text
`Success: LoRA adapter 'qa' added successfully.` (`… removed successfully.`), or an error in the OpenAI
format:

    400 InvalidUserInput  `Both 'lora_name' and 'lora_path' must be provided.`
    400 InvalidUserInput  `The lora adapter 'qa' has already been loaded. If you want to load the adapter
                          in place, set 'load_inplace' to True.`
    404 NotFoundError     `Loading lora qa failed: No adapter found for /adapters/qa` (no adapter_config.json)
    400 BadRequestError   an adapter vLLM would refuse (not LoRA, DoRA, modules_to_save, rank over the
                          limit) or that the server's own check refuses (vLLM up to 0.9 answers 400 here;
                          later releases 500)
    400 InvalidUserInput  `'lora_name' needs to be provided to unload a LoRA adapter.`
    404 NotFoundError     `The lora adapter 'qa' cannot be found.`

As in vLLM the routes exist only when the environment sets `VLLM_ALLOW_RUNTIME_LORA_UPDATING`
(`1` or `true`); otherwise they answer 404 and say so. They need an API key that covers `admin`
(a key scoped `*` does) once keys are in use.

A loaded name becomes a model name the server serves: `app.state.loras` (a `LoraRegistry`) maps it
to the adapter folder, and the server's model resolution consults it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["ADMIN_SCOPE", "LoadedLora", "LoraRegistry", "read_lora_config", "router", "runtime_updates_allowed"]

ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
ADMIN_SCOPE = "admin"


def runtime_updates_allowed(environ: dict | None = None) -> bool:
    """vLLM's switch: `VLLM_ALLOW_RUNTIME_LORA_UPDATING` set to 1 or true (any case)."""
    return (environ if environ is not None else os.environ).get(ENV, "").strip().lower() in ("1", "true")


class LoraError(Exception):
    """A load the registry refuses: `status` and vLLM's error `type` say how the route answers."""

    def __init__(self, status: int, type: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type, message


def read_lora_config(path: str | Path) -> dict:
    """The adapter_config.json of a PEFT LoRA folder; LoraError as vLLM answers a folder it cannot use."""
    config = Path(path) / "adapter_config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoraError(404, "NotFoundError", "") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise LoraError(400, "BadRequestError", f"cannot read {config}: {exc}") from None
    if not isinstance(data, dict):
        raise LoraError(400, "BadRequestError", f"{config} is not a JSON object")
    problems = []
    if str(data.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"it is a {data.get('peft_type')} adapter, not LoRA")
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in data]
    if missing:
        problems.append(f"Missing required configuration fields: {set(missing)}")
    if data.get("modules_to_save"):
        problems.append("vLLM only supports modules_to_save being None.")
    if data.get("use_dora"):
        problems.append("vLLM does not yet support DoRA.")
    if problems:
        raise LoraError(400, "BadRequestError", f"{config}: {' '.join(problems)}")
    return data


@dataclass(frozen=True)
class LoadedLora:
    name: str
    path: str
    rank: int
    target_modules: list[str]
    base_model: str | None
    loaded_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "rank": self.rank, "target_modules": self.target_modules,
                "base_model": self.base_model, "loaded_at": self.loaded_at}


class LoraRegistry:
    """Adapters loaded at run time, by name (`app.state.loras`); thread-safe.

    `check(lora)` (optional) is the server's own test of an adapter before it is accepted (for
    example that it fits the served base model); it raises to refuse it. `name in loras`,
    `loras[name]` (a LoadedLora), `loras.get(name)` and iteration read it.
    """

    def __init__(self, check: Callable[[LoadedLora], None] | None = None):
        self._lock = threading.Lock()
        self._loras: dict[str, LoadedLora] = {}
        self.check = check

    def __contains__(self, name: object) -> bool:
        return name in self._loras

    def __getitem__(self, name: str) -> LoadedLora:
        return self._loras[name]

    def get(self, name: str, default: Any = None) -> LoadedLora | None:
        return self._loras.get(name, default)

    def __iter__(self):
        return iter(list(self._loras))

    def __len__(self) -> int:
        return len(self._loras)

    def values(self) -> list[LoadedLora]:
        return list(self._loras.values())

    def load(self, name: str | None, path: str | None, *, load_inplace: bool = False) -> LoadedLora:
        if not name or not path:
            raise LoraError(400, "InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided.")
        with self._lock:
            if name in self._loras and not load_inplace:
                raise LoraError(400, "InvalidUserInput",
                                f"The lora adapter '{name}' has already been loaded. If you want to load the "
                                "adapter in place, set 'load_inplace' to True.")
            try:
                config = read_lora_config(path)
            except LoraError as exc:
                if exc.status == 404:
                    exc.message = f"Loading lora {name} failed: No adapter found for {path}"
                raise
            targets = config["target_modules"]
            lora = LoadedLora(name=name, path=str(Path(path).resolve()), rank=int(config["r"]),
                              target_modules=[targets] if isinstance(targets, str) else list(targets),
                              base_model=config.get("base_model_name_or_path"))
            if self.check is not None:
                try:
                    self.check(lora)
                except Exception as exc:
                    raise LoraError(400, "BadRequestError", f"Loading lora {name} failed: {exc}") from None
            self._loras[name] = lora
            return lora

    def unload(self, name: str | None) -> LoadedLora:
        if not name:
            raise LoraError(400, "InvalidUserInput", "'lora_name' needs to be provided to unload a LoRA adapter.")
        with self._lock:
            if name not in self._loras:
                raise LoraError(404, "NotFoundError", f"The lora adapter '{name}' cannot be found.")
            return self._loras.pop(name)


def registry_of(app: Any) -> LoraRegistry:
    """The app's LoraRegistry (`app.state.loras`), made on first use."""
    loras = getattr(app.state, "loras", None)
    if loras is None:
        loras = app.state.loras = LoraRegistry()
    return loras


def _error(status: int, type: str, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": type, "param": None, "code": status}},
                        status_code=status)


def _make_router():
    from fastapi import APIRouter, Depends, Request
    from fastapi.responses import PlainTextResponse
    from starlette.concurrency import run_in_threadpool

    from llmops.serve.keys import require_key

    api = APIRouter()

    async def body_of(request: Request) -> dict | Any:
        if not runtime_updates_allowed():
            return _error(404, "NotFoundError", f"runtime LoRA updating is off: start the server with {ENV}=True "
                                                "to load and unload adapters (as vLLM)")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "BadRequestError", "the body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "BadRequestError", "the body must be a JSON object")
        return body

    async def load_lora_adapter(request: Request):
        """Load a PEFT LoRA folder under a name, which then serves as a model name (as vLLM)."""
        body = await body_of(request)
        if not isinstance(body, dict):
            return body
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, (str, type(None))) or not isinstance(path, (str, type(None))):
            return _error(400, "InvalidUserInput", "'lora_name' and 'lora_path' must be strings")
        try:
            await run_in_threadpool(registry_of(request.app).load, name, path,
                                    load_inplace=bool(body.get("load_inplace", False)))
        except LoraError as exc:
            return _error(exc.status, exc.type, exc.message)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora_adapter(request: Request):
        """Forget a loaded adapter name (as vLLM)."""
        body = await body_of(request)
        if not isinstance(body, dict):
            return body
        name = body.get("lora_name")
        if not isinstance(name, (str, type(None))):
            return _error(400, "InvalidUserInput", "'lora_name' must be a string")
        try:
            registry_of(request.app).unload(name)
        except LoraError as exc:
            return _error(exc.status, exc.type, exc.message)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    for endpoint, path in ((load_lora_adapter, "/v1/load_lora_adapter"), (unload_lora_adapter, "/v1/unload_lora_adapter")):
        endpoint.__annotations__ = {"request": Request}  # this module's annotations are strings
        api.add_api_route(path, endpoint, methods=["POST"], dependencies=[Depends(require_key(ADMIN_SCOPE))],
                          tags=["lora"])
    return api


def __getattr__(name: str) -> Any:
    if name == "router":  # built on first use: FastAPI is imported only by the server
        global router
        router = _make_router()
        return router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
