"""The asset registry: one mechanism for every kind (prompt, chain, index, model, adapter, dataset, …).

Versions are immutable and content-addressed: the digest is the sha256 of the canonical JSON of the
kind, the spec and the digests of the files, so pushing the content the latest version already holds
returns that version. Aliases are movable pointers whose every move is recorded. Refs are parsed by
`llmops.store.refs`, the one parser.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

from sqlalchemy import Engine, func, insert, select, text

from llmops.artifacts import ArtifactStore, check_name
from llmops.digests import canonical_json, sha256_json
from llmops.errors import AliasNotFound, AssetNotFound, InvalidRef, InvalidValue
from llmops.store.engine import read, write
from llmops.store.lineage import add_edges
from llmops.store.refs import Ref, check_alias, check_kind, check_name as check_asset_name, parse_ref, parse_version
from llmops.store.schema import AliasEventRow, AliasRow, AssetVersionRow

Outcome = Literal["new", "unchanged", "revert"]


def who() -> str:
    return os.environ.get("LLMOPS_USER") or getpass.getuser()


@dataclass(frozen=True)
class AssetVersion:
    """One immutable version. `same_as` names the earliest version with identical content (a revert);
    `outcome` says what the push that returned it did: `new`, `unchanged` (the latest already held this
    content) or `revert` (a new version equal to version `same_as`); empty when read, not pushed."""

    kind: str
    name: str
    version: int
    digest: str
    created_at: datetime
    run_id: str | None
    spec: dict
    files: dict[str, str]
    message: str | None
    parent: int | None
    created_by: str = ""
    meta: dict = field(default_factory=dict, compare=False)
    same_as: int | None = None
    outcome: Outcome | Literal[""] = field(default="", compare=False)

    def __hash__(self) -> int:  # spec and files are dicts; identity is the ref and its digest
        return hash((self.kind, self.name, self.version, self.digest))

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}@{self.version}"

    def to_dict(self) -> dict:
        return {"ref": self.ref, "kind": self.kind, "name": self.name, "version": self.version, "digest": self.digest,
                "created_at": self.created_at.isoformat(), "created_by": self.created_by, "run_id": self.run_id,
                "message": self.message, "parent": self.parent, "same_as": self.same_as, "files": self.files,
                "spec": self.spec, "meta": self.meta}


@dataclass(frozen=True)
class PushItem:
    """One version to push: what `Registry.push` takes, for `push_many`."""

    kind: str
    name: str
    spec: dict
    files: dict[str, bytes | Path] | None = None
    message: str | None = None
    parent: int | None = None
    meta: dict | None = None


def _version(row, outcome: Outcome | Literal[""] = "") -> AssetVersion:
    return AssetVersion(
        kind=row.kind, name=row.name, version=row.version, digest=row.digest,
        created_at=datetime.fromtimestamp(row.created_at, tz=timezone.utc), run_id=row.run_id,
        spec=json.loads(row.spec), files=json.loads(row.files), message=row.message, parent=row.parent,
        created_by=row.created_by, meta=json.loads(row.meta) if row.meta else {}, same_as=row.same_as,
        outcome=outcome,
    )


class Registry:
    """Push, resolve, list, alias and diff asset versions of every kind."""

    def __init__(self, engine: Engine, artifacts: ArtifactStore, active_run: Callable[[], object | None]):
        self._engine = engine
        self._artifacts = artifacts
        self._active_run = active_run
        self._pinned: dict[tuple[str, str, int], AssetVersion] = {}  # immutable, so safe to keep

    # writing -------------------------------------------------------------------
    def push(self, kind: str, name: str, spec: dict, files: dict[str, bytes | Path] | None = None,
             message: str | None = None, parent: int | None = None, meta: dict | None = None) -> AssetVersion:
        """Store a new version, or return the latest one when it already holds identical content.

        Pushing the content of an older version (a revert) makes a new version, so `latest` is always
        what was pushed last; it records `same_as` (the older version) and its parent is the previous
        latest. The returned version's `outcome` says which of the three happened.
        `parent` records which version this one was forked from; by default, the latest version.
        `meta` records how it was made (timings, counts of work done): kept, but not part of the digest.
        """
        return self.push_many([PushItem(kind, name, spec, files, message, parent, meta)])[0]

    def push_many(self, items: "list[PushItem]") -> list[AssetVersion]:
        """Push several versions in one transaction: all of them land, or none does."""
        prepared = []
        for item in items:
            check_kind(item.kind)
            check_asset_name(item.name, item.kind)
            if item.parent is not None:
                parse_version(item.parent)
            try:
                spec_json = canonical_json(item.spec)
                meta_json = canonical_json(item.meta) if item.meta else None
            except (TypeError, ValueError) as exc:
                raise InvalidValue(f"the spec of {item.kind}/{item.name} is not JSON-serialisable: {exc}") from None
            # blobs first: they are idempotent, and unreferenced ones are harmless if the transaction fails
            files = {check_name(f): self._artifacts.put(data) for f, data in sorted((item.files or {}).items())}
            prepared.append((item, spec_json, meta_json, files, _digest(item.kind, item.spec, files)))
        run = self._active_run()
        with write(self._engine) as conn:
            _lock_assets(conn, {(item.kind, item.name) for item, *_ in prepared})
            out = [self._insert(conn, item, digest, spec_json, meta_json, files, run)
                   for item, spec_json, meta_json, files, digest in prepared]
        for av in out:
            self._pinned[(av.kind, av.name, av.version)] = av
        return out

    @staticmethod
    def _insert(conn, item: PushItem, digest, spec_json, meta_json, file_digests, run) -> AssetVersion:
        kind, name, parent, now = item.kind, item.name, item.parent, time.time()
        latest_row = conn.execute(select(AssetVersionRow).where(
            AssetVersionRow.kind == kind, AssetVersionRow.name == name)
            .order_by(AssetVersionRow.version.desc()).limit(1)).first()
        if latest_row is not None and latest_row.digest == digest:
            return _version(latest_row, "unchanged")
        same_as = conn.execute(select(func.min(AssetVersionRow.version)).where(
            AssetVersionRow.kind == kind, AssetVersionRow.name == name, AssetVersionRow.digest == digest)).scalar()
        latest = latest_row.version if latest_row is not None else None
        if parent is not None and (latest is None or not 1 <= parent <= latest):
            raise AssetNotFound(f"cannot fork {kind}/{name}@{parent}: no such version "
                                f"(versions are 1..{latest or 0})")
        parent = parent if parent is not None else latest
        version = (latest or 0) + 1
        run_id = getattr(run, "id", None)
        conn.execute(insert(AssetVersionRow).values(
            kind=kind, name=name, version=version, digest=digest, spec=spec_json,
            files=canonical_json(file_digests), message=item.message, parent=parent,
            meta=meta_json, same_as=same_as,
            created_at=now, created_by=who(), run_id=run_id))
        ref = f"{kind}/{name}@{version}"
        edges = []
        if parent is not None:
            edges.append((ref, "derived_from", f"{kind}/{name}@{parent}"))
        if run_id:
            edges.append((run_id, "produced", ref))
        if edges:
            add_edges(conn, edges, now)
        row = conn.execute(select(AssetVersionRow).where(
            AssetVersionRow.kind == kind, AssetVersionRow.name == name, AssetVersionRow.version == version)).one()
        return _version(row, "new" if same_as is None else "revert")

    def set_alias(self, ref: str, alias: str, version: int, reason: str | None = None) -> AssetVersion:
        """Point `kind/name@alias` at `version`, recording who moved it, from where, when and why."""
        r = parse_ref(ref)
        if r.selector is not None:
            raise InvalidRef(f"set_alias takes kind/name without a version, got {ref!r}")
        check_alias(alias)
        target = self.get(str(r.at(parse_version(version))), record=False)
        run = self._active_run()
        with write(self._engine) as conn:
            current = conn.execute(select(AliasRow.version).where(
                AliasRow.kind == r.kind, AliasRow.name == r.name, AliasRow.alias == alias)).scalar()
            if current is None:
                conn.execute(insert(AliasRow).values(kind=r.kind, name=r.name, alias=alias, version=target.version))
            else:
                conn.execute(AliasRow.__table__.update().where(
                    AliasRow.kind == r.kind, AliasRow.name == r.name, AliasRow.alias == alias).values(version=target.version))
            conn.execute(insert(AliasEventRow).values(
                kind=r.kind, name=r.name, alias=alias, from_version=current, to_version=target.version,
                at=time.time(), who=who(), reason=reason, run_id=getattr(run, "id", None)))
        return target

    # reading -------------------------------------------------------------------
    def get(self, ref: str, *, kind: str | None = None, record: bool = True) -> AssetVersion:
        """Resolve `kind/name@N`, `@alias`, `@latest` or bare `kind/name` (latest) to one version.

        Inside an active run this records a `used` edge to the resolved version, never to the alias.
        """
        r = parse_ref(ref, default_kind=kind)
        av = self._resolve(r)
        run = self._active_run()
        if record and run is not None:
            run.record_used(av)
        return av

    def _resolve(self, r: Ref) -> AssetVersion:
        if r.version is not None:
            cached = self._pinned.get((r.kind, r.name, r.version))
            if cached is not None:
                return cached
        with read(self._engine) as conn:
            q = select(AssetVersionRow).where(AssetVersionRow.kind == r.kind, AssetVersionRow.name == r.name)
            if r.selector is None or r.selector == "latest":
                row = conn.execute(q.order_by(AssetVersionRow.version.desc()).limit(1)).first()
            elif r.version is not None:
                row = conn.execute(q.where(AssetVersionRow.version == r.version)).first()
            else:
                version = conn.execute(select(AliasRow.version).where(
                    AliasRow.kind == r.kind, AliasRow.name == r.name, AliasRow.alias == r.selector)).scalar()
                if version is None:
                    known = conn.execute(select(AliasRow.alias).where(AliasRow.kind == r.kind, AliasRow.name == r.name)).scalars().all()
                    exists = conn.execute(q.limit(1)).first() is not None
                    if not exists:
                        raise AssetNotFound(self._missing(r.base))
                    raise AliasNotFound(
                        f"{r.base} has no alias {r.selector!r} (aliases: {', '.join(sorted(known)) or 'none'}); "
                        f"point it at a version first")
                row = conn.execute(q.where(AssetVersionRow.version == version)).first()
        if row is None:
            suffix = f"@{r.selector}" if r.selector else ""
            raise AssetNotFound(self._missing(r.base + suffix))
        av = _version(row)
        self._pinned[(av.kind, av.name, av.version)] = av
        return av

    @staticmethod
    def _missing(what: str) -> str:
        return f"no asset version {what!r}"

    def find(self, kind: str, name: str, digest: str) -> AssetVersion | None:
        """The earliest version of `kind/name` holding content `digest`, or None."""
        with read(self._engine) as conn:
            row = conn.execute(select(AssetVersionRow).where(
                AssetVersionRow.kind == kind, AssetVersionRow.name == name, AssetVersionRow.digest == digest)
                .order_by(AssetVersionRow.version).limit(1)).first()
        return _version(row) if row else None

    def list(self, kind: str | None = None) -> list[AssetVersion]:
        """The latest version of every asset (of one kind, if given)."""
        latest = select(AssetVersionRow.kind, AssetVersionRow.name, func.max(AssetVersionRow.version).label("v")) \
            .group_by(AssetVersionRow.kind, AssetVersionRow.name)
        if kind:
            latest = latest.where(AssetVersionRow.kind == kind)
        latest = latest.subquery()
        q = select(AssetVersionRow).join(latest, (AssetVersionRow.kind == latest.c.kind)
                                         & (AssetVersionRow.name == latest.c.name)
                                         & (AssetVersionRow.version == latest.c.v)) \
            .order_by(AssetVersionRow.kind, AssetVersionRow.name)
        with read(self._engine) as conn:
            return [_version(r) for r in conn.execute(q)]

    def versions(self, ref: str) -> list[AssetVersion]:
        r = parse_ref(ref)
        with read(self._engine) as conn:
            rows = conn.execute(select(AssetVersionRow).where(
                AssetVersionRow.kind == r.kind, AssetVersionRow.name == r.name).order_by(AssetVersionRow.version)).all()
        if not rows:
            raise AssetNotFound(self._missing(r.base))
        return [_version(row) for row in rows]

    def aliases(self, ref: str) -> dict[str, int]:
        r = parse_ref(ref)
        with read(self._engine) as conn:
            return dict(conn.execute(select(AliasRow.alias, AliasRow.version).where(
                AliasRow.kind == r.kind, AliasRow.name == r.name)).all())

    def history(self, ref: str) -> list[dict]:
        """Every version and every alias move of one asset, oldest first."""
        r = parse_ref(ref)
        events = [{"at": v.created_at, "event": "version", "version": v.version, "parent": v.parent,
                   "same_as": v.same_as, "digest": v.digest, "who": v.created_by, "message": v.message, "run_id": v.run_id}
                  for v in self.versions(r.base)]
        with read(self._engine) as conn:
            for e in conn.execute(select(AliasEventRow).where(
                    AliasEventRow.kind == r.kind, AliasEventRow.name == r.name).order_by(AliasEventRow.id)):
                events.append({"at": datetime.fromtimestamp(e.at, tz=timezone.utc), "event": "alias", "alias": e.alias,
                               "from": e.from_version, "to": e.to_version, "who": e.who, "reason": e.reason,
                               "run_id": e.run_id})
        return sorted(events, key=lambda e: e["at"])

    def read_file(self, av: AssetVersion, name: str) -> bytes:
        return self._artifacts.get(self._file_digest(av, name))

    def file_path(self, av: AssetVersion, name: str) -> Path:
        return self._artifacts.path(self._file_digest(av, name))

    @staticmethod
    def _file_digest(av: AssetVersion, name: str) -> str:
        try:
            return av.files[name]
        except KeyError:
            raise AssetNotFound(f"{av.ref} has no file {name!r} (files: {', '.join(sorted(av.files)) or 'none'})") from None

    def diff(self, a: str, b: str) -> dict:
        """A structured diff of two versions: spec keys added, removed and changed (by dotted path), and files."""
        va, vb = self.get(a, record=False), self.get(b, record=False)
        fa, fb = _flatten(va.spec), _flatten(vb.spec)
        return {
            "a": va.ref, "b": vb.ref, "same": va.digest == vb.digest,
            "spec": {
                "added": {k: fb[k] for k in sorted(fb.keys() - fa.keys())},
                "removed": {k: fa[k] for k in sorted(fa.keys() - fb.keys())},
                "changed": {k: [fa[k], fb[k]] for k in sorted(fa.keys() & fb.keys()) if fa[k] != fb[k]},
            },
            "files": {
                "added": sorted(vb.files.keys() - va.files.keys()),
                "removed": sorted(va.files.keys() - vb.files.keys()),
                "changed": sorted(k for k in va.files.keys() & vb.files.keys() if va.files[k] != vb.files[k]),
            },
        }


def _digest(kind: str, spec: dict, file_digests: dict[str, str]) -> str:
    return sha256_json({"kind": kind, "spec": spec, "files": file_digests})


def _lock_assets(conn, assets: set[tuple[str, str]]) -> None:
    """Serialise pushes to the same asset so version numbers never collide.

    SQLite's BEGIN IMMEDIATE already holds the one write lock; PostgreSQL takes a transaction-scoped
    advisory lock per asset, in sorted order so two multi-asset pushes cannot deadlock.
    """
    if conn.dialect.name != "postgresql":
        return
    for kind, name in sorted(assets):
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"llmops-asset:{kind}/{name}"})


def _flatten(obj, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}, "c": [1]} -> {"a.b": 1, "c": [1]}; lists stay whole so they diff as values."""
    if isinstance(obj, dict) and obj:
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}
