"""The Workspace: one folder (or store URL) holding the store, the artifacts and the registries.

`Workspace(".")` opens (and on first use creates) `.llmops/` with a SQLite store and a blob folder;
`store_url=` or `LLMOPS_STORE_URL` points the store at PostgreSQL instead, for a team.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import traceback
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from pathlib import Path
from typing import Iterator

from sqlalchemy.exc import DBAPIError, OperationalError

from llmops.artifacts import ArtifactStore
from llmops.errors import ConfigError, InvalidValue
from llmops.run import Run
from llmops.store import lineage as lineage_store
from llmops.store import migrate
from llmops.store import runs as run_store
from llmops.store.engine import default_url, is_read_only, make_engine, sqlite_path
from llmops.store.registry import Registry, who
from llmops.store.values import check_key

log = logging.getLogger(__name__)
HEARTBEAT_INTERVAL = 5.0
LOST_AFTER = 60.0


def new_run_id() -> str:
    """Time-ordered, 32 hex characters: 12 of milliseconds, 20 random."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def _shown(engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _make_home(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"cannot create the workspace folder {home}: a part of that path is a file; "
                          "a workspace must be a folder") from None
    except OSError as exc:
        raise ConfigError(f"cannot create the workspace folder {home}: {exc.strerror or exc}; "
                          "choose a folder you can write") from None


class Workspace:
    """Store + artifacts + registries, rooted at one folder."""

    def __init__(self, path: str | os.PathLike = ".", store_url: str | None = None, *, create: bool = True,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL, lost_after: float = LOST_AFTER):
        """Open the workspace at `path`; `create=False` refuses (ConfigError) to make one where none is,
        and creates nothing. A workspace this process cannot write is opened read-only."""
        root = Path(path).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"workspace {root} is a file, not a folder")
        home = root / ".llmops"
        url = store_url or default_url(home)
        db = sqlite_path(url)
        if not create and db is not None and not db.is_file():
            if db != home / "store.db":
                raise ConfigError(f"no llmops store at {db}")
            raise ConfigError(f"no llmops workspace at {root}" + ("" if home.is_dir() else " (no .llmops folder there)"))
        read_only = db is not None and db.exists() and is_read_only(db)
        engine = make_engine(url, read_only=read_only)  # validates the URL before anything is created
        if create:
            _make_home(home)
        try:
            if not create and migrate.current_revision(engine) is None:
                raise ConfigError(f"no llmops store at {_shown(engine)}: it holds no llmops tables yet")
            migrate.upgrade(engine)
        except ConfigError:
            engine.dispose()
            raise
        except (OperationalError, DBAPIError) as exc:
            engine.dispose()
            raise ConfigError(f"cannot open the store at {_shown(engine)}: "
                              f"{exc.orig or exc}; check LLMOPS_STORE_URL and that the database is running") from None
        self.root, self.home, self.engine, self.read_only = root, home, engine, read_only
        self.heartbeat_interval, self.lost_after = heartbeat_interval, lost_after
        self.artifacts = ArtifactStore(home / "artifacts")
        self._active: ContextVar[Run | None] = ContextVar(f"llmops-active-run-{id(self)}", default=None)
        self._live: dict[str, Run] = {}
        self._heartbeat: threading.Thread | None = None
        self._closed = threading.Event()
        self.registry = Registry(engine, self.artifacts, self.active_run)

    def __repr__(self) -> str:
        return f"<Workspace {self.root} store={_shown(self.engine)}>"

    def close(self) -> None:
        self._closed.set()
        self.engine.dispose()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # runs ------------------------------------------------------------------------
    def active_run(self) -> Run | None:
        return self._active.get()

    @contextmanager
    def start_run(self, name: str, kind: str = "custom", *, tags: dict | None = None) -> Iterator[Run]:
        """Open a run; an exception inside marks it `failed` (with the error) and re-raises.

        A run started inside another records it as parent.
        """
        check_key(name, "run", noun="name")
        check_key(kind, "run", limit=64, noun="kind")
        parent = self._active.get()
        run = Run(self, new_run_id(), name, kind, parent.id if parent else None)
        run_store.create(self.engine, run_id=run.id, name=name, kind=kind, parent_id=run.parent_id,
                         user=who(), now=time.time())
        if tags:
            run.set_tags(tags)
        with self._tracked(run):
            yield run

    @contextmanager
    def resume_run(self, run_id: str, *, drop_metrics_after: int | None = None) -> Iterator[Run]:
        """Reopen a killed, failed or lost run under the same id, as `start_run` opens a new one.

        Its status is `running` again and owned by this process; params keep their stored values
        (write-once still holds), and metrics logged without `step` continue after each key's last
        stored step. `drop_metrics_after=S` first deletes the points with a step above S, e.g. what an
        interrupted job logged after its last checkpoint, so that no step is stored twice.
        Refuses (LLMOpsError) a finished run and one another live process still holds.
        """
        if not isinstance(run_id, str):
            raise InvalidValue(f"run id must be text, got {type(run_id).__name__}")
        run_id = self.get_run(run_id).id  # a unique prefix is fine, as everywhere else
        got = run_store.reopen(self.engine, run_id, drop_metrics_after=drop_metrics_after,
                               lost_after=self.lost_after, now=time.time())
        run = Run(self, run_id, got.name, got.kind, got.parent_id)
        run._restore(got.params, got.steps)
        with self._tracked(run):
            yield run

    @contextmanager
    def _tracked(self, run: Run) -> Iterator[None]:
        """Make `run` the active one while the block runs, then end it: finished, failed or killed."""
        token = self._active.set(run)
        self._live[run.id] = run
        self._ensure_heartbeat()
        try:
            yield
        except BaseException as exc:
            status = "killed" if isinstance(exc, KeyboardInterrupt) else "failed"
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            run._end(status, detail)
            raise
        else:
            run._end("finished", None)
        finally:
            self._active.reset(token)
            self._live.pop(run.id, None)

    def _ensure_heartbeat(self) -> None:
        """One daemon thread per workspace flushes every live run every `heartbeat_interval` seconds."""
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._beat, name="llmops-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._closed.wait(self.heartbeat_interval):
            for run in list(self._live.values()):
                try:
                    run.flush()
                except Exception:  # a transient store error must not stop the heartbeat
                    log.warning("heartbeat flush of run %s failed", run.id, exc_info=True)

    def _flush_live(self) -> None:
        for run in list(self._live.values()):
            run.flush()

    def get_run(self, run_id: str) -> run_store.RunInfo:
        """A run by id, unique prefix, or served response id (`chatcmpl-…`, `cmpl-…`: it names its request run)."""
        from llmops.serve.tracing import run_id_of

        self._flush_live()
        return run_store.get(self.engine, run_id_of(run_id), self.lost_after, time.time())

    def search_runs(self, filter: str | None = None, order_by: str | list[str] | None = None,
                    limit: int | None = None) -> list[run_store.RunInfo]:
        """Runs matching `filter` (see llmops.store.search for the grammar), newest first by default."""
        self._flush_live()
        return run_store.search_runs(self.engine, filter, order_by, limit, self.lost_after, time.time())

    # lineage ---------------------------------------------------------------------
    def lineage(self, node: str, depth: int | None = None) -> lineage_store.LineageGraph:
        """Walk lineage edges up and down from a run id (as `get_run` takes it) or an asset ref (`kind/name@N`)."""
        self._flush_live()
        if "/" in node:
            root = self.registry.get(node, record=False).ref
        else:
            root = self.get_run(node).id
        graph = lineage_store.walk(self.engine, root, depth=depth)
        for n in graph.nodes:
            if lineage_store.is_ref(n):
                av = self.registry.get(n, record=False)
                graph.nodes[n] = {"type": "version", "digest": av.digest, "created_at": av.created_at.isoformat()}
        return graph

    # kind-specific registries (imported lazily: they pull heavier dependencies) -----
    @cached_property
    def prompts(self):
        from llmops.prompts.registry import PromptRegistry

        return PromptRegistry(self)

    @cached_property
    def chains(self):
        from llmops.chains import ChainRegistry

        return ChainRegistry(self)

    @cached_property
    def rag(self):
        from llmops.rag.service import RagService

        return RagService(self)
