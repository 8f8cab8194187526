"""Continuous batching for the transformers backend: concurrent requests share forward passes.

    batcher = Batcher(backend, max_batch_size=8, wait_ms=5)     # a TransformersBackend
    batcher.start()
    stream = batcher.submit(Request.chat(messages), adapter="adapters/qa-lora")   # any thread
    for delta in stream: ...              # or `async for delta in stream` in an event loop
    stream.result                         # the Generation; greedy, it equals backend.generate(request)
    stream.cancel()                       # a client that went away: its slot is free at the next step
    batcher.close()

One background thread runs the loop. Each turn it admits waiting requests into free slots (a
joiner is prefilled on its own pass, then its KV cache is merged into the running batch by
left-padding, see llmops.models.kvcache), then runs one forward pass over all rows of each adapter
group. A row that finishes (end of sequence, stop string, max_tokens, context window, cancel)
leaves at once and frees its slot. The decoding is `llmops.models.transformers_backend.Decoder`,
the same loop `backend.generate` runs, with a sampler per row, so a greedy or seeded request
gives the same answer batched as alone. An idle batcher waits `wait_ms` after a first arrival so
that a burst of requests shares its first passes; a busy one takes newcomers at the next step.

Adapters: grouped per adapter, not PEFT mixed-adapter batches. The backend folds an adapter into
its own copy of the weights (`merge_and_unload`), so a group runs at base-model speed and its
answers equal `TransformersBackend(source, adapter_path=...)`'s exactly; a mixed batch would run
unmerged LoRA layers on every token (slower on CPU) and give slightly different numbers. Each
group keeps its own batch and cache and every group steps once per turn, so groups are served
round-robin and none starves; the slots (`max_batch_size`) are shared by all groups in arrival
order. An adapter's model is loaded on a helper thread, so loading one never stalls the others.

A backend exception fails only the requests it touched (a bad prompt: that request; a failed
forward pass: that group's rows) with BackendError, and the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from llmops.errors import BackendError
from llmops.models.protocol import Backend, Generation, Request
from llmops.models.transformers_backend import Decoder, Row, TransformersBackend

__all__ = ["BatchStream", "BatchedBackend", "Batcher", "BatcherStats"]

log = logging.getLogger(__name__)

BackendFactory = Callable[[str], TransformersBackend]


class BatchStream:
    """One submitted request: its text deltas as they come (sync or async iteration) and its result.

    Iterating raises the request's BackendError if it failed, and simply ends if it was cancelled.
    Like `GenerationStream`, `close()` stops the generation (here: cancels the request).
    """

    def __init__(self, request: Request, adapter: str | None, on_cancel: Callable[[BatchStream], None]):
        self.request = request
        self.adapter = adapter
        self._on_cancel = on_cancel
        self._cond = threading.Condition()
        self._deltas: deque[str] = deque()
        self._done = False
        self._cancelled = False
        self._result: Generation | None = None
        self._error: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- producer side (the batcher thread) --------------------------------------------------

    def _push(self, delta: str) -> None:
        with self._cond:
            self._deltas.append(delta)
            self._wake_locked()

    def _finish(self, result: Generation | None = None, error: BaseException | None = None) -> None:
        with self._cond:
            if self._done:
                return
            self._done, self._result, self._error = True, result, error
            self._wake_locked()

    def _wake_locked(self) -> None:
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that event loop is closed; nobody is waiting any more
                pass

    # -- consumer side -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Stop generating (a client that disconnected): the slot is freed at the batcher's next step."""
        with self._cond:
            if self._done:
                return
            self._cancelled = True
        self._on_cancel(self)

    close = cancel

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        with self._cond:
            while not self._deltas and not self._done:
                self._cond.wait()
            if self._deltas:
                return self._deltas.popleft()
        if self._error is not None:
            raise self._error
        raise StopIteration

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while True:
            with self._cond:
                if self._deltas:
                    return self._deltas.popleft()
                if self._done:
                    break
                future = self._future_locked()
            await future
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    def _future_locked(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((loop, future))
        return future

    async def wait(self) -> Generation:
        """Wait (without blocking the event loop) until the request is finished; its Generation."""
        while True:
            with self._cond:
                if self._done:
                    break
                future = self._future_locked()
            await future
        return self.result

    def result_blocking(self, timeout: float | None = None) -> Generation:
        """Block this thread until the request is finished; its Generation."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise BackendError(f"no answer within {timeout} s; cancel the request or wait longer")
        return self.result

    @property
    def result(self) -> Generation:
        if not self._done:
            raise BackendError("the request has not finished yet; iterate it to the end or await wait()")
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise BackendError("the request was cancelled before it finished")
        return self._result


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class BatcherStats:
    """Counters since start, for metrics and benchmarks (mean rows per step = rows_stepped / steps)."""

    steps: int = 0          # decoding forward passes (one per adapter group per turn)
    rows_stepped: int = 0   # rows summed over those passes
    prefills: int = 0       # prefill forward passes (joining rows)
    rows_prefilled: int = 0
    tokens: int = 0         # tokens generated for requests that finished (not failed or cancelled)
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    step_seconds: float = 0.0     # wall time in decoding passes
    prefill_seconds: float = 0.0  # wall time in prefill passes

    @property
    def rows_per_step(self) -> float:
        return self.rows_stepped / self.steps if self.steps else 0.0


@dataclass(eq=False)
class _Ticket:
    stream: BatchStream
    key: str | None            # the adapter folder (resolved), None for the base model
    arrived: float
    row: Row | None = None
    group: _Group | None = None  # set once admitted


@dataclass(eq=False)
class _Group:
    """The requests decoding on one backend (the base model or one adapter) and their decoder."""

    backend: TransformersBackend
    decoder: Decoder
    tickets: list[_Ticket] = field(default_factory=list)


class Batcher:
    """Dynamic batching over a `TransformersBackend`; see the module docstring.

    `backend_for(adapter_folder)` builds the backend of an adapter (default: the same base model
    with that adapter, `backend.with_adapter(folder)`); it is called once per folder.
    """

    def __init__(self, backend: TransformersBackend, *, max_batch_size: int = 8, wait_ms: float = 5,
                 max_queue: int = 256, backend_for: BackendFactory | None = None):
        if max_batch_size < 1 or max_queue < 1 or wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and wait_ms >= 0")
        self.base = backend
        self.max_batch_size = max_batch_size
        self.wait_ms = wait_ms
        self.max_queue = max_queue
        self._backend_for = backend_for or backend.with_adapter
        self._cond = threading.Condition()
        self._queue: deque[_Ticket] = deque()
        self._cancelled: list[_Ticket] = []      # admitted tickets to take out at the next step
        self._tickets: dict[int, _Ticket] = {}   # id(stream) -> ticket, while not finished
        self._backends: dict[str | None, TransformersBackend] = {None: backend}
        self._loading: dict[str, Future[TransformersBackend]] = {}
        self._groups: dict[int, _Group] = {}     # id(backend) -> group
        self._active = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._loader: ThreadPoolExecutor | None = None
        self.stats = BatcherStats()

    # -- public ------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.base.model_id

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot."""
        return len(self._queue)

    @property
    def active(self) -> int:
        """Requests being decoded (holding a slot)."""
        return self._active

    def start(self) -> Batcher:
        with self._cond:
            if self._closed:
                raise BackendError("this batcher is closed; create a new one")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="llmops-batcher", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float | None = 30) -> None:
        """Stop the loop; requests still waiting or decoding fail with BackendError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._loader is not None:
            self._loader.shutdown(wait=False, cancel_futures=True)
        with self._cond:
            left = list(self._tickets.values())
            self._queue.clear()
            self._tickets.clear()
            self._groups.clear()
            self._active = 0
        for ticket in left:
            ticket.stream._finish(error=BackendError("the server is shutting down; the request was not finished"))

    def __enter__(self) -> Batcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, request: Request, *, adapter: str | os.PathLike[str] | None = None) -> BatchStream:
        """Queue `request` (on the base model, or with the PEFT adapter in folder `adapter`).

        Requests queue until `start()`; a full queue or a closed batcher raises BackendError.
        """
        key = str(Path(adapter).expanduser().resolve()) if adapter is not None else None
        stream = BatchStream(request, key, self._cancel)
        ticket = _Ticket(stream, key, time.monotonic())
        with self._cond:
            if self._closed:
                raise BackendError("the batcher is closed; the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise BackendError(f"the server is overloaded: {len(self._queue)} requests are already "
                                   "waiting; retry later")
            if key not in self._backends:
                self._load_locked(key)
            self._queue.append(ticket)
            self._tickets[id(stream)] = ticket
            self._cond.notify_all()
        return stream

    def as_backend(self, adapter: str | os.PathLike[str] | None = None) -> BatchedBackend:
        """A `Backend` whose requests go through this batcher (chains served over HTTP share batches)."""
        return BatchedBackend(self, adapter)

    def forget(self, adapter: str | os.PathLike[str]) -> None:
        """Drop an adapter's backend (unloaded or retrained): the next request for it loads it again.

        Rows decoding on it finish on the old one.
        """
        key = str(Path(adapter).expanduser().resolve())
        with self._cond:
            self._backends.pop(key, None)

    # -- submission helpers (any thread, under the lock) -------------------------------------

    def _load_locked(self, key: str | None) -> None:
        if key is None or key in self._loading:
            return
        if self._loader is None:
            self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmops-adapter-load")
        future = self._loader.submit(self._backend_for, key)
        self._loading[key] = future
        future.add_done_callback(lambda _: self._wake())

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _cancel(self, stream: BatchStream) -> None:
        with self._cond:
            ticket = self._tickets.get(id(stream))
            if ticket is None:
                return
            if ticket in self._queue:  # not decoding yet: drop it now
                self._queue.remove(ticket)
                self._end(ticket)
                self.stats.cancelled += 1
            else:
                self._cancelled.append(ticket)
            self._cond.notify_all()

    def _end(self, ticket: _Ticket, result: Generation | None = None, error: BaseException | None = None) -> None:
        self._tickets.pop(id(ticket.stream), None)
        ticket.stream._finish(result, error)

    # -- the loop (the batcher thread) -------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._wait_for_work_locked()
                if self._closed:
                    return
                joiners = self._admit_locked()
            try:
                self._turn(joiners)
            except Exception as exc:  # a bug in the loop itself: fail what it held, keep serving
                log.exception("the batching loop failed; failing the requests it held")
                for group in list(self._groups.values()):
                    self._fail_group(group, exc)

    def _wait_for_work_locked(self) -> None:
        while not self._closed and not self._groups and not self._cancelled and not self._admissible_locked():
            self._cond.wait()
        if self._closed or self._groups or not self.wait_ms:
            return
        # Idle: let a burst gather so it shares its first passes.
        deadline = self._queue[0].arrived + self.wait_ms / 1000 if self._queue else 0.0
        while not self._closed and len(self._queue) < self.max_batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)

    def _admissible_locked(self) -> bool:
        # a forgotten adapter (in neither dict) is admissible too: admitting it starts its load
        return any(t.key in self._backends or t.key not in self._loading or self._loading[t.key].done()
                   for t in self._queue)

    def _admit_locked(self) -> list[_Ticket]:
        """Take waiting requests into free slots, oldest first; those whose adapter is loading stay queued."""
        for key, future in list(self._loading.items()):
            if future.done():
                del self._loading[key]
                error = future.exception()
                if error is None:
                    self._backends[key] = future.result()
                else:
                    failed = BackendError(str(error)) if not isinstance(error, BackendError) else error
                    for ticket in [t for t in self._queue if t.key == key]:
                        self._queue.remove(ticket)
                        self._end(ticket, error=failed)
                        self.stats.failed += 1
        joiners: list[_Ticket] = []
        room = self.max_batch_size - self._active
        for ticket in list(self._queue):
            if room <= 0:
                break
            backend = self._backends.get(ticket.key)
            if backend is None:
                if ticket.key not in self._loading:  # forgotten since it was submitted
                    self._load_locked(ticket.key)
                continue
            group = self._groups.get(id(backend))
            if group is not None and not group.decoder.can_join:
                continue
            if group is None:
                group = self._groups[id(backend)] = _Group(backend, Decoder(backend))
            self._queue.remove(ticket)
            group.tickets.append(ticket)
            ticket.group = group
            joiners.append(ticket)
            room -= 1
        self._active = self.max_batch_size - room
        return joiners

    def _turn(self, joiners: list[_Ticket]) -> None:
        """Prefill the joiners, take out cancelled rows, then one forward pass per group."""
        by_group: dict[int, tuple[_Group, list[_Ticket]]] = {}
        for ticket in joiners:
            if ticket.group is not None:
                by_group.setdefault(id(ticket.group), (ticket.group, []))[1].append(ticket)
        started = time.perf_counter()
        for group, tickets in by_group.values():
            self._prefill(group, tickets)
        self.stats.prefill_seconds += time.perf_counter() - started
        with self._cond:
            cancelled, self._cancelled = self._cancelled, []
        for ticket in cancelled:
            group = ticket.group
            if group is not None and ticket in group.tickets:
                if ticket.row is not None:
                    group.decoder.remove([ticket.row])
                self._leave(group, ticket)
                self.stats.cancelled += 1
        for group in list(self._groups.values()):
            if not group.decoder.rows:
                continue
            rows = len(group.decoder.rows)
            started = time.perf_counter()
            try:
                group.decoder.step()
            except Exception as exc:
                log.exception("a forward pass failed; failing its %d requests", rows)
                self._fail_group(group, exc)
                continue
            finally:
                self.stats.step_seconds += time.perf_counter() - started
            self.stats.steps += 1
            self.stats.rows_stepped += rows
            self._deliver(group)
        self._drop_empty_groups()

    def _prefill(self, group: _Group, tickets: list[_Ticket]) -> None:
        ready: list[_Ticket] = []
        for ticket in tickets:
            try:
                ticket.row = group.backend.new_row(ticket.stream.request)
            except Exception as exc:  # a prompt over the context window, no chat template, ...
                self._fail(group, ticket, exc)
                continue
            ready.append(ticket)
        if not ready:
            return
        try:
            self._add(group, ready)
        except Exception:
            # Find the culprit: prefill each alone (on fresh rows), so only a request that breaks fails.
            log.exception("prefilling %d requests together failed; retrying each alone", len(ready))
            for ticket in ready:
                ticket.row = group.backend.new_row(ticket.stream.request)
                self._add(group, [ticket])
        self._deliver(group)

    def _add(self, group: _Group, tickets: list[_Ticket]) -> None:
        """Prefill `tickets` together; a lone request that fails is failed, several re-raise."""
        try:
            group.decoder.add([t.row for t in tickets if t.row is not None])
        except Exception as exc:
            if len(tickets) > 1:
                raise
            log.exception("prefilling a request failed; failing that request only")
            self._fail(group, tickets[0], exc)
            return
        self.stats.prefills += 1
        self.stats.rows_prefilled += len(tickets)

    def _deliver(self, group: _Group) -> None:
        """Stream each row's new text; finished rows end their request and leave."""
        for ticket in list(group.tickets):
            row = ticket.row
            if row is None:
                continue
            delta = row.flush()
            if delta:
                ticket.stream._push(delta)
            if row.done:
                self.stats.tokens += len(row.ids)
                try:
                    result = group.backend.result(row)
                except Exception as exc:
                    self._fail(group, ticket, exc)
                    continue
                self._leave(group, ticket, result)
                self.stats.finished += 1

    def _leave(self, group: _Group, ticket: _Ticket, result: Generation | None = None,
               error: BaseException | None = None) -> None:
        with self._cond:
            if ticket in group.tickets:
                group.tickets.remove(ticket)
                self._active -= 1
            self._end(ticket, result, error)

    def _fail(self, group: _Group, ticket: _Ticket, exc: BaseException) -> None:
        error = exc if isinstance(exc, BackendError) else BackendError(f"the model failed on this request: {exc}")
        if ticket.row is not None and ticket.row in group.decoder.rows:
            group.decoder.remove([ticket.row])
        self._leave(group, ticket, error=error)
        self.stats.failed += 1

    def _fail_group(self, group: _Group, exc: BaseException) -> None:
        group.decoder.clear()
        error = exc if isinstance(exc, BackendError) else BackendError(f"the model failed: {exc}")
        for ticket in list(group.tickets):
            self._leave(group, ticket, error=error)
            self.stats.failed += 1
        self._drop_empty_groups()

    def _drop_empty_groups(self) -> None:
        with self._cond:
            for gid in [gid for gid, g in self._groups.items() if not g.tickets]:
                del self._groups[gid]


class BatchedBackend(Backend):
    """A `Backend` over a Batcher: `generate`, `stream` and `batch` share the batcher's forward passes."""

    def __init__(self, batcher: Batcher, adapter: str | os.PathLike[str] | None = None):
        self.batcher = batcher
        self.adapter = os.fspath(adapter) if adapter is not None else None
        self.model_id = batcher.model_id + ("+" + Path(self.adapter).name if self.adapter else "")

    def _stream(self, request: Request) -> Generator[str, None, Generation]:
        stream = self.batcher.submit(request, adapter=self.adapter)
        try:
            yield from stream
        finally:
            stream.cancel()  # a no-op once finished; frees the slot if our consumer stopped early
        return stream.result

    def batch(self, requests: Sequence[Request]) -> list[Generation]:
        streams = [self.batcher.submit(r, adapter=self.adapter) for r in requests]
        return [s.result_blocking() for s in streams]
