"""One ingestion: spec -> files -> chunks -> embeddings -> FAISS index -> verified, published index version.

Each ingestion is an `ingest` run, and holds the index's lock (llmops.rag.lock) from comparing with
the last published version to pushing, so two ingestions of one spec never both publish. It hashes
the files first and, when they, the settings and the embedder fingerprint (computed from the model's
files) match the last version, stops there: nothing is parsed and no model is loaded. Otherwise it
reuses the chunks of unchanged files, embeds only chunks the cache has not seen, builds and reads
back the index in a private folder, and only then pushes: `ws.registry.push` is the single atomic
publish point, so a process killed before it leaves the previous version serving.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import IngestError, LLMOpsError, NotFound
from llmops.rag.manifest import CHUNKS_FILE, EmbedderRecord, Manifest, SourceRecord, content_digest, read_manifest
from llmops.rag.progress import Progress, ProgressFn
from llmops.rag.sources import SourceFile, display_path, gather_files, hash_files, parse_files
from llmops.rag.spec import IngestSpec, load_spec

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """What an ingestion did; `to_dict()` is the `--json` summary.

    `published_by` names the run (and process id) that published `ref`: this one when `published`,
    else the earlier ingestion whose version is still current (possibly one that ran at the same time).
    """

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
    published_by: dict[str, Any] = field(default_factory=dict)
    av: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ref": self.ref, "version": self.version, "published": self.published,
                "run_id": self.run_id, "published_by": self.published_by, "counts": self.counts,
                "files": self.files, "skipped": self.skipped, "seconds": round(self.seconds, 3),
                "content_digest": self.content_digest, "tuning": self.tuning}


@dataclass
class _Previous:
    """The last published version of the index, read through the manifest model."""

    av: Any
    manifest: Manifest

    @property
    def chunks_digest(self) -> str:
        return self.av.files[CHUNKS_FILE]  # blobs are named by their sha256


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
    from llmops.rag.lock import index_lock

    t0 = time.perf_counter()
    path = resolve_spec_path(ws, spec_path)
    spec = load_spec(path)
    spec_file = display_path(path, ws.root)
    with Progress(progress, on_progress) as bar, ws.start_run(f"ingest {spec.name}", kind="ingest") as run, \
            index_lock(ws.home, spec.name):
        run.log_params({"spec_file": spec_file, "index": spec.name, "chunker": spec.chunker.config(),
                        "index_type": spec.index.type, "on_error": spec.on_error})
        job = _Job(ws, spec, path.parent, spec_file, run, bar, t0)
        files = job.hash_sources()
        job.previous = _previous(ws, spec.name)
        if job.unchanged_before_loading(files, embedder):
            return job.unchanged()
        documents = job.parse_changed(files, embedder)
        job.stop_on_problems()
        job.load_embedder(embedder)
        chunks = job.chunk(files, documents)
        if job.digest_unchanged(files, chunks):
            return job.unchanged()
        return job.embed_build_publish()


def _previous(ws, name: str) -> _Previous | None:
    try:
        av = ws.registry.get(f"index/{name}", record=False)
    except NotFound:
        return None
    return _Previous(av, read_manifest(av.spec, ref=av.ref))


class _Job:
    """The state one ingestion carries between its steps (each step is one method, in `ingest`'s order)."""

    def __init__(self, ws, spec: IngestSpec, base: Path, spec_file: str, run, bar: Progress, t0: float):
        self.ws, self.spec, self.base, self.spec_file, self.run, self.bar, self.t0 = ws, spec, base, spec_file, run, bar, t0
        self.problems: list[tuple[str, str]] = []
        self.previous: _Previous | None = None
        self.embedder = None
        self.fingerprint: str | None = None
        self.records: list[dict[str, Any]] = []
        self.sources: list[SourceRecord] = []
        self.status: dict[str, list[str]] = {}
        self.digest = ""
        self.counts: dict[str, int] = {}

    # -- 1. files ---------------------------------------------------------------------------------
    def hash_sources(self) -> list[SourceFile]:
        found, self.problems = gather_files(self.spec, self.base, spec_file=self.spec_file)
        self.bar("files", 0, len(found))
        files = hash_files(found, self.ws.root, self.problems)
        self.bar("files", len(found), len(found))
        return files

    # -- 2. nothing changed? (no model loaded) ----------------------------------------------------
    def unchanged_before_loading(self, files: list[SourceFile], embedder) -> bool:
        """True when the files, settings and embedder fingerprint give the last version's content digest."""
        from llmops.rag.fingerprint import predict_fingerprint, resolve_model

        prev = self.previous
        if prev is None or self.problems:
            return False
        m = prev.manifest
        if [f.shown for f in files] != [s.path for s in m.sources]:
            return False
        if embedder is not None:
            fp = embedder.fingerprint
        else:
            fp = predict_fingerprint(resolve_model(self.spec.embedder.model, self.base), **self.spec.embedder.load_options())
        if fp is None or fp != m.embedder.fingerprint:
            return False
        sources = [SourceRecord(path=f.shown, digest=f.digest, bytes=f.size, loader=f.loader, documents=0, chunks=0)
                   for f in files]
        digest = self._content_digest(fp, sources, m.counts.get("chunks", 0), prev.chunks_digest)
        if digest != m.content_digest:
            return False
        self.digest, self.sources, self.counts = digest, m.sources, dict(m.counts)
        self.status = self._status(files)
        return True

    def _content_digest(self, fingerprint: str, sources: list[SourceRecord], n_chunks: int, chunks_digest: str) -> str:
        from llmops.rag.index import plan_index

        plan = plan_index(self.spec.index, n_chunks, file=self.spec_file)
        tune = self.spec.index.tune.model_dump() if self.spec.index.tune else None
        return content_digest(embedder_fingerprint=fingerprint, chunker=self.spec.chunker.config(),
                              plan=plan.to_dict(), tune=tune, sources=sources, chunks_digest=chunks_digest)

    def _status(self, files: list[SourceFile]) -> dict[str, list[str]]:
        prev = {s.path: s.digest for s in self.previous.manifest.sources} if self.previous else {}
        status: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": [], "deleted": []}
        for f in files:
            status["added" if f.shown not in prev else "unchanged" if prev[f.shown] == f.digest else "changed"].append(f.shown)
        seen = {f.shown for f in files} | {p for p, _ in self.problems}
        status["deleted"] = sorted(p for p in prev if p not in seen)
        return status

    def unchanged(self) -> IngestResult:
        prev = self.previous
        self.run.record_used(prev.av)
        self.run.set_tags({"published": "false", "index_version": prev.av.ref})
        self.run.log_metrics({"chunks": self.counts.get("chunks", 0), "embedded": 0})
        log.info("%s is unchanged (content digest %s): nothing published", prev.av.ref, self.digest[:12])
        tuning = prev.manifest.index.tuning
        by = {"run_id": prev.av.run_id, "pid": prev.av.meta.get("build", {}).get("pid")}
        return IngestResult(self.spec.name, prev.av.ref, prev.av.version, False, self.run.id,
                            {**self.counts, "embedded": 0, "cached": 0}, self.status, self._skipped(),
                            time.perf_counter() - self.t0, self.digest, tuning.model_dump() if tuning else None,
                            by, prev.av)

    def _skipped(self) -> list[dict[str, str]]:
        return [{"path": p, "reason": r} for p, r in self.problems]

    # -- 3. parse what changed, and stop on bad files before loading a model -----------------------
    def _reusable(self, embedder_fingerprint: str | None) -> dict[str, Any]:
        """Source records of the last version whose chunks can be taken over as they are."""
        prev = self.previous
        if prev is None or prev.manifest.chunker != self.spec.chunker.config() \
                or prev.manifest.embedder.fingerprint != embedder_fingerprint:
            return {}
        return {s.path: s for s in prev.manifest.sources}

    def parse_changed(self, files: list[SourceFile], embedder) -> dict[str, list]:
        from llmops.rag.fingerprint import predict_fingerprint, resolve_model

        fp = embedder.fingerprint if embedder is not None else predict_fingerprint(
            resolve_model(self.spec.embedder.model, self.base), **self.spec.embedder.load_options())
        reusable = self._reusable(fp)
        todo = [f for f in files if not _same(reusable.get(f.shown), f)]
        return parse_files(todo, self.problems)

    def stop_on_problems(self) -> None:
        if self.problems and self.spec.on_error == "stop":
            raise IngestError(self.problems, spec_file=self.spec_file,
                              hint="fix or remove these files, or set `on_error: skip` in the spec to ingest the rest")
        for p, r in self.problems:
            log.warning("skipped %s: %s", p, r)

    # -- 4. chunk ---------------------------------------------------------------------------------
    def load_embedder(self, embedder) -> None:
        from llmops.rag.chunking import check_chunk_size
        from llmops.rag.embedder import load_spec_embedder

        if embedder is None:
            embedder = load_spec_embedder(self.spec.embedder.model, self.base, self.spec.embedder.load_options())
        self.embedder, self.fingerprint = embedder, embedder.fingerprint
        self.run.log_params({"embedder": self.spec.embedder.model, "embedder_fingerprint": embedder.fingerprint})
        check_chunk_size(self.spec.chunker, embedder.tokenizer, embedder.max_seq_length, file=self.spec_file)

    def chunk(self, files: list[SourceFile], documents: dict[str, list]) -> list:
        """Chunks of every readable file: the last version's for unchanged files, freshly cut for the rest."""
        from llmops.rag.chunking import Chunker
        from llmops.rag.manifest import read_records
        from llmops.rag.records import chunks_by_source, merge_chunks

        chunker = Chunker(self.spec.chunker, self.embedder.tokenizer, self.fingerprint)
        reusable = self._reusable(self.fingerprint)
        old_chunks: dict[str, list] = {}
        if any(_same(reusable.get(f.shown), f) for f in files):
            try:
                old_chunks = chunks_by_source(read_records(self.ws.registry.read_file(self.previous.av, CHUNKS_FILE)))
            except LLMOpsError as exc:
                log.warning("cannot reuse chunks of %s (%s); re-chunking every file", self.previous.av.ref, exc)
        bad = {p for p, _ in self.problems}
        all_chunks: list = []
        for f in files:
            if f.shown in bad:
                continue
            old = reusable.get(f.shown)
            if _same(old, f) and f.shown in old_chunks:
                chunks, docs = old_chunks[f.shown], old.documents
            else:
                if f.shown not in documents:  # reusable by digest, but the old chunks are unreadable
                    documents.update(parse_files([f], self.problems))
                    if f.shown not in documents:
                        continue
                chunks = [c for d in documents[f.shown] for c in chunker.split(d)]
                docs = len(documents[f.shown])
            all_chunks.extend(chunks)
            self.sources.append(SourceRecord(path=f.shown, digest=f.digest, bytes=f.size, loader=f.loader,
                                             documents=docs, chunks=len(chunks)))
            self.bar("chunks", len(all_chunks), 0)
        self.stop_on_problems()  # only new when old chunks could not be read
        if not all_chunks:
            raise IngestError(self.problems or [(self.spec_file, "no text to index")], spec_file=self.spec_file,
                              hint="the sources yielded no chunks")
        self.status = self._status(files)
        self.records = merge_chunks(all_chunks)
        self.bar("chunks", len(self.records), len(self.records))
        self.counts = {"files": len(self.sources), "skipped_files": len(self.problems),
                       "documents": sum(s.documents for s in self.sources), "chunks": len(self.records),
                       "occurrences": len(all_chunks)}
        return all_chunks

    def digest_unchanged(self, files: list[SourceFile], chunks: list) -> bool:
        from llmops.digests import sha256_hex
        from llmops.rag.manifest import records_bytes

        self.chunk_data = records_bytes(self.records)
        self.digest = self._content_digest(self.fingerprint, self.sources, len(self.records), sha256_hex(self.chunk_data))
        self.run.log_param("content_digest", self.digest)
        return self.previous is not None and self.previous.manifest.content_digest == self.digest

    # -- 5. embed, build, verify, publish ---------------------------------------------------------
    def embed_build_publish(self) -> IngestResult:
        from llmops.rag.build import build, embed_records, workdir, write_and_verify
        from llmops.rag.cache import EmbeddingCache
        from llmops.rag.index import plan_index
        from llmops.rag.records import faiss_ids

        spec, emb, ws = self.spec, self.embedder, self.ws
        ids = faiss_ids(self.records)
        plan = plan_index(spec.index, len(self.records), file=self.spec_file)
        cache_root = ws.home / "cache" / "embeddings"
        t_embed = time.perf_counter()
        with EmbeddingCache(cache_root, emb.fingerprint, emb.dim) as cache:
            vectors, embedded = embed_records(cache, emb, self.records, spec.embedder.batch_size, self.bar)
        embed_s = time.perf_counter() - t_embed
        self.bar("build", 0, 1)
        built = build(vectors, ids, plan, spec.index.tune, emb, self.records)
        self.bar("build", 1, 1)
        manifest = Manifest(
            name=spec.name, spec_file=self.spec_file, ingest_spec=spec.model_dump(mode="json"),
            embedder=EmbedderRecord(model=spec.embedder.model, fingerprint=emb.fingerprint, dim=emb.dim,
                                    max_seq_length=emb.max_seq_length, backend=getattr(emb, "backend", None),
                                    precision=getattr(emb, "precision", None)),
            chunker=spec.chunker.config(),
            index={**plan.to_dict(), "search_params": built.search_params, "tuning": built.tuning},
            sources=self.sources, skipped=self._skipped(), counts=self.counts, content_digest=self.digest)
        work = workdir(ws.home)
        try:
            self.bar("verify", 0, 1)
            files = write_and_verify(work, built.index, self.chunk_data, dim=emb.dim, expected=len(self.records))
            self.bar("verify", 1, 1)
            # how this build went: recorded with the version, but kept out of its digest
            build_meta = {"run_id": self.run.id, "pid": os.getpid(), "seconds": round(time.perf_counter() - self.t0, 3),
                          "embed_seconds": round(embed_s, 3), "index_seconds": round(built.seconds, 3),
                          "embedded": embedded, "cached": len(self.records) - embedded}
            self.bar("publish", 0, 1)
            av = ws.registry.push("index", spec.name, spec=manifest.to_spec(), files=files,
                                  message=f"ingest {self.spec_file}: {len(self.records)} chunks from "
                                          f"{len(self.sources)} files", meta={"build": build_meta})
            self.bar("publish", 1, 1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with EmbeddingCache(cache_root, emb.fingerprint, emb.dim) as cache:
            cache.prune()  # batch files orphaned by killed runs, over an hour old
        self.run.set_tags({"published": "true", "index_version": av.ref})
        self.run.log_metrics({"chunks": len(self.records), "embedded": embedded, "cached": len(self.records) - embedded,
                              "files": len(self.sources), "skipped_files": len(self.problems),
                              "embed_seconds": embed_s, "build_seconds": built.seconds})
        return IngestResult(spec.name, av.ref, av.version, True, self.run.id,
                            {**self.counts, "embedded": embedded, "cached": len(self.records) - embedded},
                            self.status, self._skipped(), time.perf_counter() - self.t0, self.digest,
                            built.tuning.model_dump() if built.tuning else None,
                            {"run_id": self.run.id, "pid": os.getpid()}, av)


def _same(old: SourceRecord | None, f: SourceFile) -> bool:
    return old is not None and old.digest == f.digest and old.loader == f.loader
