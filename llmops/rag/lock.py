"""One ingestion of an index at a time: a per-index file lock in the workspace (`fcntl.flock`).

Held from "compare with the last published version" to "push", so a second `rag ingest` of the same
spec waits, then finds the first one's version and publishes nothing. The kernel drops the lock when
its process dies (kill -9 included), so a crash never leaves it held. It serialises processes on one
machine; workspaces shared between machines through PostgreSQL rely on the registry's own push
lock, which keeps versions distinct but may publish twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def index_lock(home: Path, name: str) -> Iterator[None]:
    """Exclusive lock on `<home>/locks/index-<name>.lock`; waits (and says so) while another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the registry still keeps versions distinct
        yield
        return
    folder = Path(home) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"index-{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            log.warning("another ingestion of index %s is running (pid %s); waiting for it", name, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
