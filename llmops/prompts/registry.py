"""`ws.prompts`: push a folder of prompts and chains, get compiled prompts, diff and history.

Why a layer over `ws.registry`: the registry stores any kind as a canonical dict; this layer knows
what a prompt *is* (a compiled, type-checked template) and what a folder push must guarantee
(everything validated together, chains checked against the prompts beside them, nothing pushed
when one file is bad).

Caching: a pinned version (`qa@3`) never changes, so its compiled `Prompt` is kept per workspace
and served without a store query. An alias (`qa@production`) or a bare name (latest) is resolved
through the store on every get; the compiled object for the version it lands on is reused, so a
`Prompt` you hold never changes when the alias moves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.errors import AliasNotFound, AssetNotFound, InvalidRef, SpecError
from llmops.store.registry import PushItem
from llmops.prompts.chain_spec import ChainPlan, ChainSpec, Resolver, check_chain, parse_chain_spec, split_ref
from llmops.prompts.diff import PromptDiff, diff_prompts
from llmops.prompts.prompt import Prompt
from llmops.specfile import SourceMap, load_yaml
from llmops.prompts.spec import PromptSpec, canonical_spec, load_prompt_spec, parse_prompt_spec, value_matches
from llmops.prompts.template import CompiledPrompt

if TYPE_CHECKING:
    from llmops.store.registry import AssetVersion
    from llmops.workspace import Workspace

__all__ = ["FolderItem", "PromptRegistry", "parse_var_pairs", "registry_resolver"]

log = logging.getLogger(__name__)

KINDS = ("prompt", "chain")


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


class PromptRegistry:
    """Prompts and chains of one workspace (`ws.prompts`)."""

    def __init__(self, ws: Workspace):
        self._ws = ws
        self._compiled: dict[tuple[str, int], Prompt] = {}   # (name, version) -> compiled prompt
        self._pinned: dict[str, Prompt] = {}                   # exact ref text "qa@3" -> prompt
        self._recorded: set[tuple[str, str]] = set()           # (run id, version ref) already recorded

    # -- reading -------------------------------------------------------------------------------
    def get(self, ref: str) -> Prompt:
        """`qa`, `qa@3`, `qa@production` or `prompt/qa@3` -> the compiled Prompt of that version.

        Inside an active run, records a `used` edge to the resolved version (never the alias).
        """
        prompt = self._pinned.get(ref)
        if prompt is None:
            name, selector = split_ref(ref, "prompt")
            if selector is not None and selector.isdigit():
                prompt = self._compiled.get((name, int(selector)))
            if prompt is None:
                target = f"prompt/{name}@{selector}" if selector else f"prompt/{name}"
                av = self._ws.registry.get(target, record=False)
                prompt = self._compiled.get((av.name, av.version))
                if prompt is None:
                    prompt = Prompt.from_asset(av)
                    self._compiled[(av.name, av.version)] = prompt
            if selector is not None and selector.isdigit():
                self._pinned[ref] = prompt
        run = self._ws.active_run()
        if run is not None:
            self._record(run, prompt)
        return prompt

    def _record(self, run: Any, prompt: Prompt) -> None:
        key = (run.id, prompt.ref)
        if key not in self._recorded:
            run.record_used(prompt.asset)
            self._recorded.add(key)

    def render(self, ref: str, **variables: Any) -> str | list[dict[str, str]]:
        """`get(ref).render(**variables)`."""
        return self.get(ref).render(**variables)

    def list(self, kind: str = "prompt") -> list[AssetVersion]:
        """Latest version of every prompt (or chain, with kind="chain")."""
        return self._ws.registry.list(kind)

    def versions(self, name: str) -> list[AssetVersion]:
        """All versions of a prompt (`qa`) or chain (`chain/rag-qa`), oldest first."""
        kind, base = _kind_and_name(name)
        return self._ws.registry.versions(f"{kind}/{base}")

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every version (with its parent: history is a tree) and every alias move, oldest first."""
        kind, base = _kind_and_name(name)
        return self._ws.registry.history(f"{kind}/{base}")

    def set_alias(self, name: str, alias: str, version: int, reason: str | None = None) -> AssetVersion:
        """Point `qa@<alias>` at `version` (recorded: who, when, from, to, why)."""
        kind, base = _kind_and_name(name)
        return self._ws.registry.set_alias(f"{kind}/{base}", alias, int(version), reason=reason)

    alias = set_alias

    def diff(self, a: str, b: str) -> PromptDiff:
        """What changed from prompt `a` to `b`: each a ref (`qa@1`) or a prompt YAML file path."""
        spec_a, label_a, digest_a = self._diff_side(a)
        spec_b, label_b, digest_b = self._diff_side(b)
        return diff_prompts(spec_a, spec_b, label_a, label_b, a_digest=digest_a, b_digest=digest_b)

    def _diff_side(self, ref: str) -> tuple[PromptSpec, str, str | None]:
        if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
            spec, _ = load_prompt_spec(self._locate(ref))
            return spec, ref, None
        name, selector = split_ref(ref, "prompt")
        av = self._ws.registry.get(f"prompt/{name}@{selector}" if selector else f"prompt/{name}", record=False)
        label = f"{name}@{av.version}" if selector is None or selector.isdigit() else f"{name}@{selector} (v{av.version})"
        return PromptSpec.model_validate(av.spec), label, av.digest

    def chain(self, ref: str, *, check_external: bool = True) -> tuple[AssetVersion, ChainSpec, ChainPlan]:
        """A pushed chain version, its spec and its checked run plan (for the chain runner).

        Refs are resolved against the registry now; `check_external=False` skips index, model
        and adapter refs (when the caller resolves those itself).
        """
        name, selector = split_ref(ref, "chain")
        av = self._ws.registry.get(f"chain/{name}@{selector}" if selector else f"chain/{name}", record=False)
        spec = ChainSpec.model_validate(av.spec)
        resolve = registry_resolver(self._ws)
        if not check_external:
            inner = resolve

            def resolve(kind: str, ref: str) -> Any:
                return inner(kind, ref) if kind in KINDS else True
        return av, spec, check_chain(spec, resolve)

    # -- pushing -------------------------------------------------------------------------------
    def load_folder(self, paths: str | Path | Sequence[str | Path] | None = None, *,
                    check_external: bool = False) -> list[FolderItem]:
        """Validate every prompt and chain under `paths` (default: the workspace's `prompts/`).

        Writes nothing. Raises SpecError naming file, line, field and fix; with several bad files,
        one SpecError lists them all (its `.errors` holds each).
        """
        files = self._collect(paths)
        items: list[FolderItem] = []
        errors: list[SpecError] = []
        for path in files:
            try:
                items.append(self._load_file(path))
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
            resolve = self._folder_resolver(items, check_external)
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

    def push_folder(self, paths: str | Path | Sequence[str | Path] | None = None, message: str | None = None, *,
                    fork: Iterable[str] = (), check_external: bool = False) -> list[AssetVersion]:
        """Validate everything under `paths`, then push every prompt and chain; all or nothing.

        An unchanged file returns its existing version (no new version). `fork` lists refs like
        `qa@1` (or `chain/rag-qa@2`): the new version of that asset records that version as its
        parent instead of the latest, so history is a tree. `check_external` also requires the
        index, model and adapter refs of chains to exist (off by default: an index is often built
        after the prompts are pushed).
        """
        items = self.load_folder(paths, check_external=check_external)
        parents = self._fork_parents(fork, items)
        ordered = sorted(items, key=lambda i: (KINDS.index(i.kind), i.display))
        before = {(i.kind, i.name): self._latest_version(i.kind, i.name) for i in ordered}
        pushed = self._ws.registry.push_many([
            PushItem(item.kind, item.name, canonical_spec(item.spec), message=message,
                     parent=parents.get((item.kind, item.name)))
            for item in ordered])
        for item, av in zip(ordered, pushed):
            prev = before[(item.kind, item.name)]
            log.info("%s %s (%s)", av.ref, "new" if prev is None or av.version > prev else "unchanged", item.display)
        return pushed

    def _latest_version(self, kind: str, name: str) -> int | None:
        try:
            return self._ws.registry.get(f"{kind}/{name}", record=False).version
        except AssetNotFound:
            return None

    def _fork_parents(self, fork: Iterable[str], items: list[FolderItem]) -> dict[tuple[str, str], int]:
        parents: dict[tuple[str, str], int] = {}
        present = {(i.kind, i.name) for i in items}
        for ref in fork:
            kind, rest = _kind_and_name(ref)
            name, selector = split_ref(rest, kind)
            if selector is None or not selector.isdigit():
                raise InvalidRef(f"fork {ref!r}: name the version to fork from, e.g. {kind}/{name}@1")
            if (kind, name) not in present:
                raise SpecError(f"fork {ref!r}: {kind} '{name}' is not among the files being pushed")
            self._ws.registry.get(f"{kind}/{name}@{selector}", record=False)  # AssetNotFound if absent
            parents[(kind, name)] = int(selector)
        return parents

    def _collect(self, paths: str | Path | Sequence[str | Path] | None) -> list[Path]:
        if paths is None:
            paths = [self._ws.root / "prompts"]
        elif isinstance(paths, (str, Path)):
            paths = [paths]
        files: list[Path] = []
        for given in paths:
            path = self._locate(given)
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                               and not any(part.startswith(".") for part in p.relative_to(path).parts))
                files.extend(found)
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

    def _locate(self, given: str | Path) -> Path:
        """A path as given (relative to the current folder), else relative to the workspace."""
        path = Path(given).expanduser()
        if path.is_absolute() or path.exists():
            return path
        return self._ws.root / path

    def _display(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self._ws.root))
        except ValueError:
            return str(path)

    def _load_file(self, path: Path) -> FolderItem:
        display = self._display(path)
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

    def _folder_resolver(self, items: list[FolderItem], check_external: bool) -> Resolver:
        local = {(i.kind, i.name): i.spec for i in items}
        from_registry = registry_resolver(self._ws)

        def resolve(kind: str, ref: str) -> Any:
            if kind in KINDS:
                name, selector = split_ref(ref, kind)
                if (selector is None or selector == "latest") and (kind, name) in local:
                    return local[(kind, name)]
                return from_registry(kind, ref)
            return from_registry(kind, ref) if check_external else True

        return resolve


def registry_resolver(ws: Workspace) -> Resolver:
    """A chain-ref resolver over the registry alone: specs for prompts and chains, versions else.

    A model ref also resolves when it names a model llmops can load locally (`smollm2`, a path).
    """
    def resolve(kind: str, ref: str) -> Any:
        try:
            name, selector = split_ref(ref, kind)
        except InvalidRef:
            return None
        target = f"{kind}/{name}@{selector}" if selector else f"{kind}/{name}"
        try:
            av = ws.registry.get(target, record=False)
        except (AssetNotFound, AliasNotFound, InvalidRef):
            if kind == "model" and selector is None:
                from llmops.models.sources import is_local_source

                return True if is_local_source(name) else None
            return None
        if kind == "prompt":
            return PromptSpec.model_validate(av.spec)
        if kind == "chain":
            return ChainSpec.model_validate(av.spec)
        return av

    return resolve


def _kind_and_name(ref: str) -> tuple[str, str]:
    """`chain/rag-qa@2` -> ("chain", "rag-qa@2"); `qa` -> ("prompt", "qa")."""
    kind, slash, rest = ref.partition("/")
    if slash and kind in KINDS:
        return kind, rest
    if slash:
        raise InvalidRef(f"{ref!r}: only prompt/ and chain/ refs live here")
    return "prompt", ref


def parse_var_pairs(prompt: Prompt, pairs: Iterable[str]) -> dict[str, Any]:
    """`["question=Why?", "k=3"]` -> typed values per the prompt's declared variables (for `--var`).

    str stays text; int/float/bool are parsed; list and dict are JSON.
    """
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key:
            raise SpecError(f"--var {pair!r} is not KEY=VALUE", fix="write --var question='What is X?'")
        var = prompt.variables.get(key)
        if var is None or var.type == "str":
            out[key] = text  # unknown names are reported by render() with the declared list
            continue
        try:
            if var.type == "bool":
                lowered = text.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                value: Any = lowered in ("true", "1", "yes")
            elif var.type == "int":
                value = int(text)
            elif var.type == "float":
                value = float(text)
            else:
                value = json.loads(text)
        except (ValueError, json.JSONDecodeError):
            raise SpecError(f"prompt {prompt.label}: --var {key}={text!r} is not a {var.type}",
                            fix="lists and dicts are written as JSON, e.g. --var tags='[\"a\"]'") from None
        if not value_matches(var.type, value):
            raise SpecError(f"prompt {prompt.label}: --var {key}={text!r} is not a {var.type}")
        out[key] = value
    return out

