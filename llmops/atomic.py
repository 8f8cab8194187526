"""Write-to-temp-then-rename: a reader sees the old file or the new one, never half of one.

Every file llmops publishes (blobs, caches, converted weights, indexes) is written through here, so a
crash or a full disk leaves at most a stray `.tmp` file beside the target, never a truncated target.

    with atomic_path(final) as tmp:      # for writers that want a path (faiss.write_index, np.save)
        write_something(tmp)
    atomic_write(final, b"bytes")        # the common case
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "atomic_write"]


@contextmanager
def atomic_path(final: str | Path, *, mode: int = 0o644, fsync: bool = True) -> Iterator[Path]:
    """A temporary file beside `final`, renamed onto it when the block succeeds and removed otherwise.

    `mode` is applied before the rename (mkstemp makes files private; caches are shared).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(final: str | Path, data: bytes | str | Iterable[bytes], *, mode: int = 0o644) -> Path:
    """Write bytes, text (UTF-8) or an iterable of byte blocks to `final` atomically; returns `final`."""
    with atomic_path(final, mode=mode) as tmp, open(tmp, "wb") as f:
        if isinstance(data, str):
            f.write(data.encode("utf-8"))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            f.write(data)
        else:
            for block in data:
                f.write(block)
    return Path(final)


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """A temporary folder beside `final`, renamed onto it when the block succeeds and removed otherwise.

    If another process published `final` first, its copy is kept and ours is dropped.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
