"""One ingestion: spec -> files -> chunks -> embeddings -> FAISS index -> verified, published index version.

Each ingestion is an `ingest` run. It diffs the files against the latest version's manifest (unchanged
files reuse their chunk records), embeds only chunks the cache has not seen, builds the index in a
private temp folder, reads the written files back to check that index and chunk records agree
(count and ids), and only then pushes the version: `ws.registry.push` is the single atomic publish
point, so a process killed anywhere before it leaves the previous version serving, and one killed
after it has published a complete version.

The manifest's `content_digest` covers content and configuration (embedder fingerprint, chunker and
index config, every source file's digest, the chunk records), never timings: an ingestion whose
content digest equals the latest version's publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmops.errors import IngestError, LLMOpsError, NotFound
from llmops.rag.chunking import Chunk, Chunker, check_chunk_size, faiss_id
from llmops.rag.loaders import SourceProblem, detect_format, load_file
from llmops.rag.spec import IngestSpec, SourceSpec, load_spec

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "llmops.rag.index/1"
INDEX_FILE, CHUNKS_FILE = "index.faiss", "chunks.jsonl"
ProgressFn = Callable[[str, int, int], None]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def display_path(path: Path, root: Path) -> str:
    """Paths as recorded in manifests: relative to the workspace (`../shared/x` too), so a moved clone still matches."""
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.as_posix()


@dataclass
class IngestResult:
    """What an ingestion did; `to_dict()` is the `--json` summary."""

    name: str
    ref: str | None
    version: int | None
    published: bool
    run_id: str
    counts: dict[str, int]
    files: dict[str, list[str]]
    skipped: list[dict[str, str]]
    seconds: float
    content_digest: str
    tuning: dict[str, Any] | None = None
    av: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ref": self.ref, "version": self.version, "published": self.published,
                "run_id": self.run_id, "counts": self.counts, "files": self.files, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "content_digest": self.content_digest, "tuning": self.tuning}


class Progress:
    """Feeds `on_progress(stage, done, total)` and, when asked, one rich progress display on stderr with a
    bar per stage (files, chunks, embedding batches, …); rich falls back to plain output off a terminal.

    Stages in order: files, chunks (total 0 = not known yet), embedding batches, build, verify, publish.
    """

    def __init__(self, show: bool, callback: ProgressFn | None):
        self.show, self.callback = show, callback
        self._bars = None
        self._tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.show:
            if self._bars is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, TimeElapsedColumn

                self._bars = Bars(TextColumn("{task.description:>17}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=Console(stderr=True))
                self._bars.start()
            if stage not in self._tasks:
                self._tasks[stage] = self._bars.add_task(stage, total=total or None)
            self._bars.update(self._tasks[stage], completed=done, total=total or None)
        if self.callback is not None:
            self.callback(stage, done, total)

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


def gather_files(spec: IngestSpec, base: Path) -> tuple[list[tuple[Path, SourceSpec]], list[tuple[str, str]]]:
    """Every file the globs match (sorted, de-duplicated, first source wins) and one problem per empty glob."""
    import glob as globlib

    files: dict[Path, SourceSpec] = {}
    problems: list[tuple[str, str]] = []
    for src in spec.sources:
        pattern = src.glob if os.path.isabs(src.glob) else str(base / src.glob)
        matched = sorted(Path(p).resolve() for p in globlib.glob(pattern, recursive=True) if Path(p).is_file())
        if not matched:
            problems.append((src.glob, f"glob matched no files (looked in {base}); fix the pattern or remove the source"))
        for p in matched:
            files.setdefault(p, src)
    return sorted(files.items(), key=lambda kv: kv[0].as_posix()), problems


def _previous(ws, name: str):
    try:
        return ws.registry.get(f"index/{name}", record=False)
    except NotFound:
        return None


def read_records(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def _reusable_chunks(ws, prev, chunker_cfg: dict, fingerprint: str) -> tuple[dict[str, dict], dict[str, list[Chunk]]]:
    """Source entries and chunk lists of the previous version, when its chunking can be reused as is."""
    if prev is None or prev.spec.get("format") != MANIFEST_FORMAT:
        return {}, {}
    m = prev.spec
    if m.get("chunker") != chunker_cfg or m.get("embedder", {}).get("fingerprint") != fingerprint:
        return {}, {}
    try:
        records = read_records(ws.registry.read_file(prev, CHUNKS_FILE))
    except LLMOpsError as exc:
        log.warning("cannot reuse chunks of %s (%s); re-chunking every file", prev.ref, exc)
        return {}, {}
    by_source: dict[str, list[tuple[int, Chunk]]] = {}
    for rec in records:
        for occ in rec["occurrences"]:
            by_source.setdefault(occ["source"], []).append((occ["n"], Chunk(
                rec["id"], rec["text"], occ["source"], occ["doc_id"], occ["seq"], occ.get("start"),
                occ.get("metadata", {}))))
    chunks = {s: [c for _, c in sorted(pairs, key=lambda p: p[0])] for s, pairs in by_source.items()}
    return {s["path"]: s for s in m.get("sources", [])}, chunks


def merge_chunks(chunks: list[Chunk]) -> list[dict[str, Any]]:
    """Chunk records, one per distinct id in first-seen order; a text that repeats lists every occurrence."""
    records: dict[str, dict[str, Any]] = {}
    counters: dict[str, int] = {}
    for c in chunks:
        n = counters.get(c.source, 0)
        counters[c.source] = n + 1
        occ = {**c.occurrence(), "n": n}
        rec = records.get(c.id)
        if rec is None:
            records[c.id] = {"id": c.id, "text": c.text, "occurrences": [occ]}
        else:
            rec["occurrences"].append(occ)
    return list(records.values())


def records_bytes(records: list[dict[str, Any]]) -> bytes:
    return "".join(canonical(r) + "\n" for r in records).encode("utf-8")


def verify_build(index_path: Path, chunks_path: Path, *, dim: int, expected: int) -> dict[str, int]:
    """Read the written files back and check they agree: same count, same ids, right dimension."""
    from llmops.rag.index import index_ids, read_index

    index = read_index(index_path)
    records = read_records(chunks_path.read_bytes())
    ids = index_ids(index)
    want = np.array([faiss_id(r["id"]) for r in records], dtype=np.int64)
    problems = []
    if index.ntotal != len(records) or len(records) != expected:
        problems.append(f"index holds {index.ntotal} vectors, chunk records {len(records)}, expected {expected}")
    if index.d != dim:
        problems.append(f"index dimension {index.d} != embedder dimension {dim}")
    if len(np.unique(ids)) != len(ids):
        problems.append("index has duplicate ids")
    if set(ids.tolist()) != set(want.tolist()):
        problems.append(f"{len(set(ids.tolist()) ^ set(want.tolist()))} ids differ between index and chunk records")
    if problems:
        raise LLMOpsError("the built index and its chunk records disagree (" + "; ".join(problems)
                          + "); nothing was published: run the ingestion again")
    return {"vectors": int(index.ntotal), "chunks": len(records)}


def _embed(cache, embedder, records: list[dict[str, Any]], batch_size: int, progress: Progress) -> tuple[np.ndarray, int]:
    """Vectors for every record, from the cache or freshly embedded (longest first, one cache file per batch)."""
    ids = [r["id"] for r in records]
    vectors, found = cache.get(ids)
    missing = [i for i in range(len(ids)) if not found[i]]
    missing.sort(key=lambda i: -len(records[i]["text"]))
    batches = [missing[i:i + batch_size] for i in range(0, len(missing), batch_size)]
    progress("embedding batches", 0, len(batches))
    for b, rows in enumerate(batches, start=1):
        vecs = embedder.encode([records[i]["text"] for i in rows], batch_size=batch_size, show_progress=False)
        cache.put([ids[i] for i in rows], vecs)
        vectors[rows] = vecs
        progress("embedding batches", b, len(batches))
    return vectors, len(missing)


def resolve_spec_path(ws, spec_path: str | Path) -> Path:
    """A relative spec path is looked up in the workspace first ("rag/handbook.yaml"), then in the cwd."""
    p = Path(spec_path).expanduser()
    if not p.is_absolute() and (ws.root / p).exists():
        p = ws.root / p
    return p.resolve()


def ingest(ws, spec_path: str | Path, *, embedder=None, progress: bool = False,
           on_progress: ProgressFn | None = None) -> IngestResult:
    """Ingest the files a spec names and publish a new index version if anything changed.

    `embedder` overrides the spec's model. Raises SpecError for a bad spec, IngestError for bad files
    (unless `on_error: skip`).
    """
    from llmops.rag.cache import EmbeddingCache
    from llmops.rag.index import build_index, plan_index, sample_queries, tune_index, write_index

    t0 = time.perf_counter()
    path = resolve_spec_path(ws, spec_path)
    spec = load_spec(path)
    spec_file = display_path(path, ws.root)
    base = path.parent
    bar = Progress(progress, on_progress)
    with ws.start_run(f"ingest {spec.name}", kind="ingest") as run:
        run.log_params({"spec_file": spec_file, "index": spec.name, "chunker": spec.chunker.config(),
                        "index_type": spec.index.type, "on_error": spec.on_error})
        if embedder is None:
            embedder = load_embedder_for(resolve_model(spec.embedder.model, base), spec.embedder.load_options())
        run.log_params({"embedder": spec.embedder.model, "embedder_fingerprint": embedder.fingerprint})
        check_chunk_size(spec.chunker, embedder.tokenizer, embedder.max_seq_length, file=spec_file)
        chunker = Chunker(spec.chunker, embedder.tokenizer, embedder.fingerprint)
        chunker_cfg = chunker.config

        files, problems = gather_files(spec, base)
        prev = _previous(ws, spec.name)
        sources, all_chunks, status = _read_sources(ws, files, problems, prev, chunker, bar)

        skipped = [{"path": p, "reason": r} for p, r in problems]
        if problems:
            if spec.on_error == "stop":
                raise IngestError(problems, spec_file=spec_file,
                                  hint="fix or remove these files, or set `on_error: skip` in the spec to ingest the rest")
            for p, r in problems:
                log.warning("skipped %s: %s", p, r)
        if not all_chunks:
            raise IngestError(problems or [(spec_file, "no text to index")], spec_file=spec_file,
                              hint="the sources yielded no chunks")

        records = merge_chunks(all_chunks)
        bar("chunks", len(records), len(records))
        fids = np.array([faiss_id(r["id"]) for r in records], dtype=np.int64)
        if len(np.unique(fids)) != len(fids):  # 60-bit prefixes of sha256: practically never
            raise LLMOpsError("two chunk ids share a FAISS id; change the chunker settings slightly and ingest again")
        chunk_data = records_bytes(records)
        plan = plan_index(spec.index, len(records), file=spec_file)
        content = {
            "format": MANIFEST_FORMAT, "embedder": embedder.fingerprint, "chunker": chunker_cfg,
            "index": plan.to_dict(), "tune": spec.index.tune.model_dump() if spec.index.tune else None,
            "sources": [{k: s[k] for k in ("path", "digest", "loader")} for s in sources],
            "chunks": hashlib.sha256(chunk_data).hexdigest(),
        }
        content_digest = hashlib.sha256(canonical(content).encode()).hexdigest()
        counts = {"files": len(sources), "skipped_files": len(problems),
                  "documents": sum(s["documents"] for s in sources), "chunks": len(records),
                  "occurrences": len(all_chunks)}
        run.log_param("content_digest", content_digest)

        if prev is not None and prev.spec.get("content_digest") == content_digest:
            run.record_used(prev)
            run.set_tags({"published": "false", "index_version": prev.ref})
            run.log_metrics({"chunks": len(records), "embedded": 0})
            bar.close()
            log.info("%s is unchanged (content digest %s): nothing published", prev.ref, content_digest[:12])
            return IngestResult(spec.name, prev.ref, prev.version, False, run.id, {**counts, "embedded": 0, "cached": 0},
                                status, skipped, time.perf_counter() - t0, content_digest,
                                prev.spec.get("index", {}).get("tuning"), prev)

        cache_root = ws.home / "cache" / "embeddings"
        t_embed = time.perf_counter()
        with EmbeddingCache(cache_root, embedder.fingerprint, embedder.dim) as cache:
            vectors, embedded = _embed(cache, embedder, records, spec.embedder.batch_size, bar)
        embed_s = time.perf_counter() - t_embed

        t_build = time.perf_counter()
        bar("build", 0, 1)
        index = build_index(vectors, fids, plan)
        search_params, tuning = dict(plan.search_params), None
        if spec.index.tune is not None:
            t = spec.index.tune
            texts = sample_queries([r["text"] for r in records], t.queries)
            result = tune_index(index, plan, target=t.target, k=t.k, queries=embedder.encode(texts))
            search_params[result.param] = result.value
            tuning = {**result.to_dict(), "queries_from": "chunk text spans", "seed": 0}
        build_s = time.perf_counter() - t_build
        bar("build", 1, 1)

        work = _workdir(ws)
        try:
            index_path, chunks_path = work / INDEX_FILE, work / CHUNKS_FILE
            write_index(index, index_path)
            chunks_path.write_bytes(chunk_data)
            bar("verify", 0, 1)
            verify_build(index_path, chunks_path, dim=embedder.dim, expected=len(records))
            bar("verify", 1, 1)
            manifest = {
                "format": MANIFEST_FORMAT, "name": spec.name, "spec_file": spec_file,
                "ingest_spec": spec.model_dump(mode="json"),
                "embedder": embedder_record(spec.embedder.model, embedder),
                "chunker": chunker_cfg,
                "index": {**plan.to_dict(), "search_params": search_params, "tuning": tuning},
                "sources": sources, "skipped": skipped, "counts": counts,
                "content_digest": content_digest,
            }
            # how this build went: recorded with the version, but kept out of its digest
            build = {"run_id": run.id, "seconds": round(time.perf_counter() - t0, 3),
                     "embed_seconds": round(embed_s, 3), "index_seconds": round(build_s, 3),
                     "embedded": embedded, "cached": len(records) - embedded}
            bar("publish", 0, 1)
            av = ws.registry.push("index", spec.name, spec=manifest,
                                  files={INDEX_FILE: index_path, CHUNKS_FILE: chunks_path},
                                  message=f"ingest {spec_file}: {len(records)} chunks from {len(sources)} files",
                                  meta={"build": build})
            bar("publish", 1, 1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            bar.close()
        with EmbeddingCache(cache_root, embedder.fingerprint, embedder.dim) as cache:
            cache.prune()  # batch files orphaned by killed runs, over an hour old
        run.set_tags({"published": "true", "index_version": av.ref})
        run.log_metrics({"chunks": len(records), "embedded": embedded, "cached": len(records) - embedded,
                         "files": len(sources), "skipped_files": len(problems),
                         "embed_seconds": embed_s, "build_seconds": build_s})
        return IngestResult(spec.name, av.ref, av.version, True, run.id,
                            {**counts, "embedded": embedded, "cached": len(records) - embedded},
                            status, skipped, time.perf_counter() - t0, content_digest, tuning, av)


def _read_sources(ws, files, problems, prev, chunker: Chunker, bar: Progress):
    """Load and chunk every file, reusing the previous version's chunks for files whose digest is unchanged.

    Appends unreadable files to `problems`; returns (source entries, chunks, file status vs. the previous version).
    """
    prev_sources, prev_chunks = _reusable_chunks(ws, prev, chunker.config, chunker.fingerprint)
    prev_digests = {s["path"]: s["digest"] for s in (prev.spec.get("sources", []) if prev else [])}
    sources: list[dict[str, Any]] = []
    all_chunks: list[Chunk] = []
    status: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": [], "deleted": []}
    bar("files", 0, len(files))
    for i, (fpath, src) in enumerate(files, start=1):
        shown = display_path(fpath, ws.root)
        digest, size = sha256_file(fpath), fpath.stat().st_size
        options = src.loader_options()
        old = prev_sources.get(shown)
        try:
            options["format"] = detect_format(fpath, src)
            if old and old["digest"] == digest and old.get("loader") == options and shown in prev_chunks:
                chunks, docs = prev_chunks[shown], old["documents"]
            else:
                documents = load_file(fpath, src, display=shown)
                chunks, docs = [c for d in documents for c in chunker.split(d)], len(documents)
        except SourceProblem as exc:
            problems.append((shown, exc.reason))
        else:
            if shown not in prev_digests:
                status["added"].append(shown)
            else:
                status["unchanged" if prev_digests[shown] == digest else "changed"].append(shown)
            all_chunks.extend(chunks)
            sources.append({"path": shown, "digest": digest, "bytes": size, "loader": options,
                            "documents": docs, "chunks": len(chunks)})
        bar("files", i, len(files))
        bar("chunks", len(all_chunks), 0)
    seen = {s["path"] for s in sources} | {p for p, _ in problems}
    status["deleted"] = sorted(p for p in prev_digests if p not in seen)
    return sources, all_chunks, status


def resolve_model(model: str, base: Path) -> str:
    """'default' stays as is; a relative model folder is relative to the spec file's folder."""
    if model == "default" or os.path.isabs(model):
        return model
    candidate = (base / model).resolve()
    return str(candidate) if candidate.exists() else model


def load_embedder_for(model: str, options: dict[str, Any]):
    """The embedder for a model and its vector-changing options (load_embedder keeps one per settings)."""
    from llmops.rag.embedder import load_embedder

    return load_embedder({"model": model, **options})


def embedder_record(spec_model: str, embedder) -> dict[str, Any]:
    """The manifest's `embedder` entry: enough to load the very same embedder again at query time."""
    rec = {"model": spec_model, "fingerprint": embedder.fingerprint, "dim": embedder.dim,
           "max_seq_length": embedder.max_seq_length}
    for key in ("backend", "precision"):
        if getattr(embedder, key, None) is not None:
            rec[key] = getattr(embedder, key)
    return rec


def _workdir(ws) -> Path:
    """A private build folder; ones left by killed runs (older than an hour) are removed first."""
    root = ws.home / "cache" / "rag-build"
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - 3600
    for old in root.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="build-", dir=root))

