"""The handle of a run in progress: buffers what it logs and writes it in batches.

One INSERT per metric is what makes per-call tracking slow; a run instead keeps params, metrics, tags
and lineage edges in memory and flushes them in one transaction when the buffer fills, every couple
of seconds from the workspace's heartbeat thread, and on exit. The heartbeat also tells readers the
process is alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.artifacts import check_name
from llmops.errors import InvalidValue, ParamConflict
from llmops.store import runs as run_store
from llmops.store.values import check_key, check_step, check_text, metric_value, text_value

if TYPE_CHECKING:
    from llmops.store.registry import AssetVersion
    from llmops.workspace import Workspace

MAX_ARTIFACT_NAME = 1024  # the run_artifacts.name column
FLUSH_EVERY_ROWS = 2000
FLUSH_EVERY_SECONDS = 2.0


def _items(values: object, what: str) -> list:
    if not isinstance(values, Mapping):
        raise InvalidValue(f"{what} must be a dict of key -> value, got {type(values).__name__}")
    return list(values.items())


class Run:
    """Log params (write-once), metrics (time series), tags, artifacts and lineage edges of one run."""

    def __init__(self, ws: "Workspace", run_id: str, name: str, kind: str, parent_id: str | None):
        self.id, self.name, self.kind, self.parent_id = run_id, name, kind, parent_id
        self._ws = ws
        self._lock = threading.RLock()
        self._params: dict[str, str] = {}
        self._pending_params: list[tuple[str, str]] = []
        self._pending_metrics: list[tuple[str, float, int, float]] = []
        self._pending_tags: dict[str, str] = {}
        self._pending_edges: list[tuple[str, str, str]] = []
        self._steps: dict[str, int] = {}
        self._last_flush = time.monotonic()

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.kind}:{self.name}>"

    def _restore(self, params: dict[str, str], steps: dict[str, int]) -> None:
        """Continue a stored run (Workspace.resume_run): its params and the last step of each metric."""
        with self._lock:
            self._params.update(params)
            self._steps.update(steps)

    # logging -------------------------------------------------------------------
    def log_param(self, key: str, value) -> None:
        self.log_params({key: value})

    def log_params(self, params: dict) -> None:
        """Params are write-once: the same value again is fine, a different one raises ParamConflict.

        Every key and value is checked first (llmops.store.values): one bad item raises InvalidValue
        and none of the call's params is kept, so nothing bad reaches the buffered batch.
        """
        items = [(check_key(k, "param"), v) for k, v in _items(params, "params")]
        items = [(k, text_value(k, v, "param")) for k, v in items]
        with self._lock:
            fresh = []
            for key, text in items:
                old = self._params.get(key)
                if old is not None and old != text:
                    raise ParamConflict(
                        f"param {key!r} of run {self.id} is already {old!r}; params are write-once, "
                        f"so {text!r} was not stored (log it as a metric or a tag if it changes)")
                if old is None:
                    fresh.append((key, text))
            for key, text in fresh:
                self._params[key] = text
            self._pending_params.extend(fresh)
        self._maybe_flush()

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Append one point per key; without `step`, each key counts its own steps 0, 1, 2, …"""
        now = time.time()
        items = [(check_key(k, "metric"), v) for k, v in _items(metrics, "metrics")]
        items = [(k, metric_value(k, v)) for k, v in items]
        with self._lock:
            points = [(k, v, check_step(k, step if step is not None else self._steps.get(k, -1) + 1), now)
                      for k, v in items]
            for key, _, s, _ in points:
                self._steps[key] = max(s, self._steps.get(key, -1))
            self._pending_metrics.extend(points)
        self._maybe_flush()

    def set_tag(self, key: str, value) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: dict) -> None:
        items = [(check_key(k, "tag"), v) for k, v in _items(tags, "tags")]
        items = [(k, text_value(k, v, "tag")) for k, v in items]
        with self._lock:
            self._pending_tags.update(items)
        self._maybe_flush()

    def log_artifact(self, data: bytes | str | Path, name: str | None = None) -> str:
        """Store a file or bytes as an artifact of this run; returns its digest."""
        if name is None:
            if isinstance(data, bytes):
                raise InvalidValue("log_artifact(bytes) needs name=, e.g. name='report.json'")
            name = Path(data).name
        check_text(check_name(name), f"artifact name {name[:60]!r}", MAX_ARTIFACT_NAME)
        digest = self._ws.artifacts.put(data)
        size = len(data) if isinstance(data, bytes) else Path(data).stat().st_size
        run_store.add_artifact(self._ws.engine, self.id, name, digest, size)
        return digest

    def record_used(self, av: "AssetVersion") -> None:
        with self._lock:
            self._pending_edges.append((self.id, "used", av.ref))

    def record_produced(self, av: "AssetVersion") -> None:
        with self._lock:
            self._pending_edges.append((self.id, "produced", av.ref))

    # flushing ------------------------------------------------------------------
    def _maybe_flush(self) -> None:
        size = len(self._pending_metrics) + len(self._pending_params)
        if size >= FLUSH_EVERY_ROWS or time.monotonic() - self._last_flush >= FLUSH_EVERY_SECONDS:
            self.flush()

    def flush(self, finish: tuple[str, str | None] | None = None) -> None:
        """Write everything buffered, in one transaction; also refreshes the heartbeat (or ends the run).

        A row the store refuses is left out and logged, never the rest of the batch; when the store
        itself fails (down, locked) the whole batch stays buffered for the next flush.
        """
        with self._lock:
            params, metrics = self._pending_params, self._pending_metrics
            tags, edges = self._pending_tags, self._pending_edges
            self._pending_params, self._pending_metrics, self._pending_tags, self._pending_edges = [], [], {}, []
            try:
                run_store.flush(self._ws.engine, self.id, params=params, metrics=metrics, tags=tags,
                                edges=edges, heartbeat=time.time(), finish=finish)
            except BaseException:
                # keep the batch so a later flush can still write it
                self._pending_params = params + self._pending_params
                self._pending_metrics = metrics + self._pending_metrics
                self._pending_tags = {**tags, **self._pending_tags}
                self._pending_edges = edges + self._pending_edges
                raise
            self._last_flush = time.monotonic()

    def _end(self, status: str, error: str | None) -> None:
        try:
            self.flush(finish=(status, error))
        except BaseException:
            # the store failed while writing the last batch: still record how the run ended
            run_store.finish(self._ws.engine, self.id, status="failed" if status == "finished" else status,
                             error=error or "could not write the run's last batch", now=time.time())
            raise
