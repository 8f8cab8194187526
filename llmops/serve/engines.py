"""What generates for the server: one engine per base model, and the relay that lets async routes read
blocking generators.

    transformers  `Batcher` (llmops.serve.batcher) over the model's TransformersBackend: concurrent
                  requests share forward passes; an adapter is chosen per request
    openai/vllm   `UpstreamEngine`: an OpenAIBackend per served name, forwarding to the upstream server

Every engine's `submit(request, target)` returns a stream with the Batcher's interface: `async for` text
deltas, `await wait()`, `.result` (a Generation) and `.cancel()` (frees the slot of a client that left).
A `Relay` runs a blocking generator (a backend's stream, a chain's `execute`) on a worker thread and gives
it that same interface, so routes read every source alike.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from llmops.errors import BackendError

if TYPE_CHECKING:
    from llmops.models import Request
    from llmops.serve.models import Target
    from llmops.serve.settings import ServeSettings

__all__ = ["Engines", "Relay", "UpstreamEngine"]

log = logging.getLogger(__name__)

_DONE, _DELTA, _ERROR, _STOPPED = "done", "delta", "error", "stopped"


class Relay:
    """A blocking generator (yields deltas, returns a value) run on a worker thread, read from asyncio.

    `make(cancelled)` builds the generator on the worker; `cancelled` is a threading.Event it may poll while
    it waits for something other than its own deltas. `cancel()` stops it at its next delta and closes it.
    """

    def __init__(self, make: Callable[[threading.Event], Generator[Any, None, Any]], executor: ThreadPoolExecutor):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self._result: Any = None
        self._finished = False
        self._error: BaseException | None = None
        executor.submit(self._work, make)

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop closed (server shutting down): nobody is reading
            pass

    def _work(self, make: Callable[[threading.Event], Generator[Any, None, Any]]) -> None:
        try:
            if self.cancelled.is_set():
                self._put((_STOPPED, None))
                return
            gen = make(self.cancelled)
            try:
                while True:
                    if self.cancelled.is_set():
                        self._put((_STOPPED, None))
                        return
                    try:
                        delta = next(gen)
                    except StopIteration as stop:
                        self._put((_DONE, stop.value))
                        return
                    self._put((_DELTA, delta))
            finally:
                gen.close()
        except BaseException as exc:  # reported to the reader, who answers with the right status
            self._put((_ERROR, exc))

    def cancel(self) -> None:
        self.cancelled.set()

    def __aiter__(self):
        return self._deltas()

    async def _deltas(self):
        while not self._finished:
            kind, value = await self._queue.get()
            if kind == _DELTA:
                yield value
                continue
            self._finished = True
            if kind == _DONE:
                self._result = value
            elif kind == _ERROR:
                self._error = value
                raise value
            else:
                raise BackendError("the generation was cancelled")
        if self._error is not None:
            raise self._error

    async def wait(self) -> Any:
        async for _ in self:
            pass
        return self._result

    @property
    def result(self) -> Any:
        if not self._finished or self._error is not None:
            raise BackendError("the stream has not finished; iterate it to the end before reading `result`")
        return self._result


class _BatchEngine:
    """The Batcher over the base model's backend; adapters chosen per request."""

    def __init__(self, spec: dict, settings: ServeSettings):
        from llmops.models import load_backend
        from llmops.serve.batcher import Batcher

        self.batcher = Batcher(load_backend(spec), max_batch_size=settings.max_batch_size,
                               wait_ms=settings.batch_wait_ms, max_queue=settings.max_queue)
        self.batcher.start()

    @property
    def queue_depth(self) -> int:
        return self.batcher.queue_depth

    @property
    def active(self) -> int:
        return self.batcher.active

    def submit(self, request: Request, target: Target, *, stream: bool = True) -> Any:
        adapter = str(target.adapter_folder) if target.adapter_folder else None
        return self.batcher.submit(request, adapter=adapter)

    def close(self) -> None:
        self.batcher.close()


class UpstreamEngine:
    """Forwards to an OpenAI-compatible server (vLLM, TGI, another llmops) under the target's pinned name."""

    def __init__(self, base_url: str, executor: ThreadPoolExecutor, *, timeout_s: float):
        self.base_url, self._executor, self._timeout = base_url, executor, timeout_s
        self._backends: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.queue_depth = 0
        self.active = 0
        self._count = threading.Lock()

    def _backend(self, name: str) -> Any:
        from llmops.models.openai_backend import OpenAIBackend

        with self._lock:
            if name not in self._backends:
                self._backends[name] = OpenAIBackend(self.base_url, name, timeout_s=self._timeout)
            return self._backends[name]

    def _gen(self, request: Request, name: str, stream: bool):
        with self._count:
            self.active += 1
        try:
            backend = self._backend(name)
            if stream:
                return (yield from backend._stream(request))
            return backend.generate(request)
        finally:
            with self._count:
                self.active -= 1

    def submit(self, request: Request, target: Target, *, stream: bool = True) -> Relay:
        """A non-streamed request is forwarded as one (`generate`), so the upstream's usage is exact."""
        name = target.upstream_name
        return Relay(lambda cancelled: self._gen(request, name, stream), self._executor)

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()


class Engines:
    """The engines of one app, one per base model, built on first use (loading a model is slow: call
    `get` off the event loop). Engines are keyed by the model's files, so a chain's generate step and a
    request naming the same model share one batcher."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=min(settings.max_concurrency, 512) + 8,
                                           thread_name_prefix="llmops-serve")
        self._by_source: dict[str, Any] = {}
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()
        self.upstream: UpstreamEngine | None = None
        if settings.backend in ("openai", "vllm") and settings.upstream_url:
            self.upstream = UpstreamEngine(settings.upstream_url, self.executor, timeout_s=settings.timeout_s)

    def use_upstream(self, base_url: str) -> None:
        """Forward every generation to this server from now on (the vllm backend, once vLLM is up)."""
        self.upstream = UpstreamEngine(base_url, self.executor, timeout_s=self.settings.timeout_s)

    def forget(self, adapter_folder: str) -> None:
        """An adapter folder reloaded in place: the next request loads it again."""
        with self._lock:
            engines = list(self._by_source.values())
        for engine in engines:
            batcher = getattr(engine, "batcher", None)
            if batcher is not None:
                batcher.forget(adapter_folder)

    def get(self, target: Target) -> Any:
        """The engine that serves `target`'s base model (built now if needed; BackendError if it cannot load)."""
        if self.upstream is not None:
            return self.upstream
        assert target.model is not None
        return self._engine(target.model.spec, target.model.name)

    def _engine(self, spec: dict, name: str) -> Any:
        from llmops.models.sources import DEFAULT_MODEL, resolve_source

        if spec.get("backend", "transformers") != "transformers":
            raise BackendError(f"model {name} is served by the {spec.get('backend')} backend, which this server "
                               "does not run in process; serve it with --backend openai --upstream URL")
        source = resolve_source(spec.get("source", DEFAULT_MODEL))
        key = f"{source.folder}|{source.gguf_file or ''}"
        with self._lock:
            engine = self._by_source.get(key)
            if engine is None:
                engine = self._by_source[key] = _BatchEngine(spec, self.settings)
                self._names[key] = name
            return engine

    def share(self, backend: Any) -> Any:
        """A chain step's backend routed through the batcher of its base model: the same answers, shared
        forward passes. Other backends (remote, vLLM) are returned as they are."""
        from llmops.models.transformers_backend import TransformersBackend

        if self.upstream is not None or not isinstance(backend, TransformersBackend):
            return backend
        src = backend.source
        path = src.folder / src.gguf_file if src.gguf_file else src.folder
        engine = self._engine({"source": str(path), "device": backend.device_name}, src.model_id)
        return engine.batcher.as_backend(backend.adapter_path)

    def loaded(self) -> dict[str, Any]:
        """Engines by model name (for metrics and health)."""
        with self._lock:
            out = {self._names[key]: engine for key, engine in self._by_source.items()}
        if self.upstream is not None:
            out["upstream"] = self.upstream
        return out

    def relay(self, make: Callable[[threading.Event], Generator[Any, None, Any]]) -> Relay:
        return Relay(make, self.executor)

    def close(self) -> None:
        for engine in list(self._by_source.values()):
            try:
                engine.close()
            except Exception:  # closing must go on for the others
                log.warning("closing an engine failed", exc_info=True)
        if self.upstream is not None:
            self.upstream.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
