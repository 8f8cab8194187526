"""Content-addressed blob store: `<home>/artifacts/sha256/ab/cdef…`, written atomically, verified on read.

A blob's name is the sha256 of its bytes, so writing the same bytes twice stores them once, and a reader
can always tell whether the bytes on disk are still the ones that were written.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from llmops.atomic import atomic_write
from llmops.digests import sha256_file, sha256_hex
from llmops.errors import CorruptArtifact, InvalidArtifactName, NotFound

_CHUNK = 1 << 20
# Blobs are read-only on disk: a blob is its digest, so nothing may change it in place.
_BLOB_MODE = 0o444


def check_name(name: str) -> str:
    """Refuse artifact names that could escape their folder: `..`, absolute paths, NUL, backslashes, empty parts."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise InvalidArtifactName(f"artifact name {name!r} is not allowed: use a relative path like 'reports/eval.json'")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        raise InvalidArtifactName(
            f"artifact name {name!r} is not allowed: no '..', '.', empty parts or absolute paths; "
            "use a relative path like 'reports/eval.json'"
        )
    return name


def _corrupt(digest: str, path: Path) -> CorruptArtifact:
    return CorruptArtifact(
        f"artifact {digest} at {path} is corrupted (its bytes no longer match its digest); "
        "restore it from a backup or re-create the version that wrote it"
    )


class ArtifactStore:
    """Blobs under `root`, addressed by sha256 hex digest."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _blob(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise NotFound(f"{digest!r} is not a sha256 digest")
        return self.root / "sha256" / digest[:2] / digest[2:]

    def put(self, data: bytes | Path | str) -> str:
        """Store bytes or a file's contents; returns the digest. Idempotent.

        Written to a temp file, fsynced, made read-only and renamed into place (llmops.atomic), so a
        crash leaves the old state or the whole blob, never part of one.
        """
        if isinstance(data, (str, Path)):
            src = Path(data)
            digest = sha256_file(src)
            target = self._blob(digest)
            if not target.exists():
                with open(src, "rb") as f:
                    atomic_write(target, iter(lambda: f.read(_CHUNK), b""), mode=_BLOB_MODE)
            return digest
        digest = sha256_hex(data)
        target = self._blob(digest)
        if not target.exists():
            atomic_write(target, data, mode=_BLOB_MODE)
        return digest

    def exists(self, digest: str) -> bool:
        return self._blob(digest).exists()

    def get(self, digest: str) -> bytes:
        """The blob's bytes, after checking they still hash to `digest`."""
        path = self._blob(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"artifact {digest} is missing from {self.root}") from None
        if sha256_hex(data) != digest:
            raise _corrupt(digest, path)
        return data

    def path(self, digest: str) -> Path:
        """A verified local path to the blob (read-only: never modify it)."""
        path = self._blob(digest)
        if not path.exists():
            raise NotFound(f"artifact {digest} is missing from {self.root}")
        if sha256_file(path) != digest:
            raise _corrupt(digest, path)
        return path
