"""The files an ingestion spec names: globs expanded, kept inside the spec's folder, hashed, parsed.

Sources are confined to the spec file's folder unless the spec says `allow_outside: true`: specs are
shared and run by the server, so `../../etc/*`, an absolute path or a symlink leading out must not
read files silently. Hashing needs no parser and no model, which is what lets an unchanged ingestion
finish before anything heavy loads.
"""

from __future__ import annotations

import glob as globlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.digests import sha256_file
from llmops.errors import SpecError
from llmops.rag.loaders import Document, SourceProblem, detect_format, load_file
from llmops.rag.spec import IngestSpec, SourceSpec

Problems = list[tuple[str, str]]
_OUTSIDE_FIX = ("move the files under the spec's folder, or set `allow_outside: true` in the spec "
                "if you trust every file it names")


def display_path(path: Path, root: Path) -> str:
    """Paths as recorded in manifests: relative to the workspace (`../shared/x` too), so a moved clone still matches."""
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.as_posix()


@dataclass(frozen=True)
class SourceFile:
    """One matched file: where it is, how it is shown, which source entry matched it, and its digest."""

    path: Path
    shown: str
    spec: SourceSpec
    digest: str
    size: int
    loader: dict[str, Any]


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def gather_files(spec: IngestSpec, base: Path, *, spec_file: str) -> tuple[list[tuple[Path, SourceSpec]], Problems]:
    """Every file the globs match (sorted, de-duplicated, first source wins) and one problem per empty glob.

    Raises SpecError for a source outside `base` (unless `allow_outside`), before any file is read.
    """
    root = base.resolve()
    files: dict[Path, SourceSpec] = {}
    problems: Problems = []
    for i, src in enumerate(spec.sources):
        pattern = src.glob if os.path.isabs(src.glob) else str(root / src.glob)
        if not spec.allow_outside and not _inside(Path(os.path.normpath(re.split(r"[*?[]", pattern)[0] or "/")), root):
            raise SpecError(f"{src.glob!r} names files outside the spec's folder ({root})", file=spec_file,
                            field=f"sources[{i}]", fix=_OUTSIDE_FIX)
        matched = sorted(Path(p).resolve() for p in globlib.glob(pattern, recursive=True) if Path(p).is_file())
        if not spec.allow_outside:
            for p in matched:
                if not _inside(p, root):
                    raise SpecError(f"{src.glob!r} matches a link to {p}, outside the spec's folder ({root})",
                                    file=spec_file, field=f"sources[{i}]", fix=_OUTSIDE_FIX)
        if not matched:
            problems.append((src.glob, f"glob matched no files (looked in {root}); fix the pattern or remove the source"))
        for p in matched:
            files.setdefault(p, src)
    return sorted(files.items(), key=lambda kv: kv[0].as_posix()), problems


def hash_files(files: list[tuple[Path, SourceSpec]], root: Path, problems: Problems) -> list[SourceFile]:
    """Digest, size and loader options of each file; an unsupported file type is appended to `problems`."""
    out = []
    for path, src in files:
        shown = display_path(path, root)
        loader = src.loader_options()
        try:
            loader["format"] = detect_format(path, src)
            out.append(SourceFile(path, shown, src, sha256_file(path), path.stat().st_size, loader))
        except SourceProblem as exc:
            problems.append((shown, exc.reason))
        except OSError as exc:
            problems.append((shown, f"cannot read: {exc.strerror or exc}"))
    return out


def parse_files(files: list[SourceFile], problems: Problems) -> dict[str, list[Document]]:
    """Documents of each file, by shown path; unreadable files are appended to `problems` instead."""
    out = {}
    for f in files:
        try:
            out[f.shown] = load_file(f.path, f.spec, display=f.shown)
        except SourceProblem as exc:
            problems.append((f.shown, exc.reason))
    return out
