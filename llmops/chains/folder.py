"""Pushing a folder of prompts and chains: everything validated together, then one transaction.

Why here and not in `llmops.prompts`: chains are checked against the prompts beside them (the
folder being pushed) and in the registry, so the layer that knows both kinds does the push.
`ws.prompts.push_folder` is the public door; it calls `push_folder` below.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.chains.plan import ChainPlan, Resolver, check_chain
from llmops.chains.registry import SPEC_KINDS, registry_resolver
from llmops.chains.spec import ChainSpec, parse_chain_spec
from llmops.errors import InvalidRef, SpecError
from llmops.prompts.spec import PromptSpec, canonical_spec, parse_prompt_spec
from llmops.prompts.template import CompiledPrompt
from llmops.specfile import SourceMap, load_yaml
from llmops.store.refs import parse_ref
from llmops.store.registry import PushItem

if TYPE_CHECKING:
    from llmops.store.registry import AssetVersion
    from llmops.workspace import Workspace

__all__ = ["FolderItem", "load_folder", "push_folder"]

log = logging.getLogger(__name__)

Paths = str | Path | Sequence[str | Path] | None


@dataclass(frozen=True)
class FolderItem:
    """One validated file of a folder push."""

    path: Path
    display: str          # the path as errors show it (relative to the workspace when inside)
    kind: str             # "prompt" or "chain"
    spec: PromptSpec | ChainSpec
    where: SourceMap
    plan: ChainPlan | None = None  # chains only: run order and wiring

    @property
    def name(self) -> str:
        return self.spec.name


def load_folder(ws: Workspace, paths: Paths = None, *, check_external: bool = False) -> list[FolderItem]:
    """Validate every prompt and chain under `paths` (default: the workspace's `prompts/`).

    Writes nothing. Raises SpecError naming file, line, field and fix; with several bad files,
    one SpecError lists them all (its `.errors` holds each).
    """
    items: list[FolderItem] = []
    errors: list[SpecError] = []
    for path in _collect(ws, paths):
        try:
            items.append(_load_file(ws, path))
        except SpecError as exc:
            errors.append(exc)
    seen: dict[tuple[str, str], FolderItem] = {}
    for item in items:
        first = seen.setdefault((item.kind, item.name), item)
        if first is not item:
            errors.append(item.where.error(
                ("name",), f"{item.kind} '{item.name}' is also defined in {first.display}",
                fix=f"each {item.kind} lives in one file: rename one of them"))
    if not errors:
        resolve = _folder_resolver(ws, items, check_external)
        checked = []
        for item in items:
            if item.kind == "chain":
                try:
                    plan = check_chain(item.spec, resolve, item.where)  # type: ignore[arg-type]
                    item = FolderItem(item.path, item.display, item.kind, item.spec, item.where, plan)
                except SpecError as exc:
                    errors.append(exc)
            checked.append(item)
        items = checked
    if len(errors) == 1:
        raise errors[0]
    if errors:
        error = SpecError(f"{len(errors)} files failed validation, nothing was pushed:\n  "
                          + "\n  ".join(str(e) for e in errors))
        error.errors = errors  # type: ignore[attr-defined]
        raise error
    return items


def push_folder(ws: Workspace, paths: Paths = None, message: str | None = None, *,
                fork: Iterable[str] = (), check_external: bool = False) -> list[AssetVersion]:
    """Validate everything under `paths`, then push every prompt and chain; all or nothing.

    Each returned version's `outcome` says what its file did: `new`, `unchanged` (the latest
    version already holds it) or `revert` (a new version equal to the older version `same_as`).
    `fork` lists refs like `qa@1` (or `chain/rag-qa@2`): the new version of that asset records that
    version as its parent instead of the latest, so history is a tree. `check_external` also
    requires the index, model and adapter refs of chains to exist (off by default: an index is
    often built after the prompts are pushed).
    """
    items = load_folder(ws, paths, check_external=check_external)
    parents = _fork_parents(ws, fork, items)
    ordered = sorted(items, key=lambda i: (SPEC_KINDS.index(i.kind), i.display))
    pushed = ws.registry.push_many([
        PushItem(item.kind, item.name, canonical_spec(item.spec), message=message,
                 parent=parents.get((item.kind, item.name)))
        for item in ordered])
    for item, av in zip(ordered, pushed):
        log.info("%s %s (%s)", av.ref, describe_outcome(av), item.display)
    return pushed


def describe_outcome(av: AssetVersion) -> str:
    """`new`, `unchanged` or `reverts @N`: what a push did, in words."""
    return f"reverts @{av.same_as}" if av.outcome == "revert" else av.outcome


def _fork_parents(ws: Workspace, fork: Iterable[str], items: list[FolderItem]) -> dict[tuple[str, str], int]:
    parents: dict[tuple[str, str], int] = {}
    present = {(i.kind, i.name) for i in items}
    for text in fork:
        r = parse_ref(text, default_kind="prompt", kinds=SPEC_KINDS)
        if r.version is None:
            raise InvalidRef(f"fork {text!r}: name the version to fork from, e.g. {r.at(1)}")
        if (r.kind, r.name) not in present:
            raise SpecError(f"fork {text!r}: {r.kind} '{r.name}' is not among the files being pushed")
        ws.registry.get(str(r), record=False)  # AssetNotFound if absent
        parents[(r.kind, r.name)] = r.version
    return parents


def _collect(ws: Workspace, paths: Paths) -> list[Path]:
    if paths is None:
        paths = [ws.root / "prompts"]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for given in paths:
        path = _locate(ws, given)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.is_file():
            files.append(path)
        else:
            raise SpecError("no such file or folder", file=str(given),
                            fix="pass the prompts folder or YAML files, e.g. `llmops prompts push prompts/`")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise SpecError("no .yaml files found", file=", ".join(str(p) for p in paths),
                        fix="put prompts and chains as .yaml files in this folder")
    return unique


def _locate(ws: Workspace, given: str | Path) -> Path:
    """A path as given (relative to the current folder), else relative to the workspace."""
    path = Path(given).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return ws.root / path


def _load_file(ws: Workspace, path: Path) -> FolderItem:
    try:
        display = str(path.resolve().relative_to(ws.root))
    except ValueError:
        display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read file: {exc}", file=display) from exc
    data, where = load_yaml(text, display)
    kind = data.get("kind", "prompt")
    if kind == "chain":
        return FolderItem(path, display, "chain", parse_chain_spec(data, where), where)
    if kind != "prompt":
        raise where.error(("kind",), f"unknown kind {kind!r}", fix="use `kind: prompt` (the default) or `kind: chain`")
    spec = parse_prompt_spec(data, where)
    CompiledPrompt(spec, spec.name, where)  # template checks, with file lines in errors
    return FolderItem(path, display, "prompt", spec, where)


def _folder_resolver(ws: Workspace, items: list[FolderItem], check_external: bool) -> Resolver:
    """Prompts and chains of the folder first (for a bare or `@latest` ref), then the registry."""
    local = {(i.kind, i.name): i.spec for i in items}
    from_registry = registry_resolver(ws)

    def resolve(kind: str, ref: str) -> Any:
        if kind in SPEC_KINDS:
            r = parse_ref(ref, default_kind=kind, kinds=(kind,))
            if r.selector in (None, "latest") and (kind, r.name) in local:
                return local[(kind, r.name)]
            return from_registry(kind, ref)
        return from_registry(kind, ref) if check_external else True

    return resolve
