"""`ws.prompts`: get compiled prompts, render, diff, alias and history; push the prompts folder.

Why a layer over `ws.registry`: the registry stores any kind as a canonical dict; this layer knows
what a prompt *is* (a compiled, type-checked template). Chains live in `llmops.chains`; the folder
push (prompts and chains together, one transaction) is implemented there.

Caching: a pinned version (`qa@3`) never changes, so its compiled `Prompt` is kept per workspace
and served without a store query. An alias (`qa@production`) or a bare name (latest) is resolved
through the store on every get; the compiled object for the version it lands on is reused, so a
`Prompt` you hold never changes when the alias moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.errors import SpecError
from llmops.prompts.diff import PromptDiff, diff_prompts
from llmops.prompts.prompt import Prompt
from llmops.prompts.spec import PromptSpec, load_prompt_spec, value_matches
from llmops.store.refs import Ref, parse_ref

if TYPE_CHECKING:
    from llmops.store.registry import AssetVersion
    from llmops.workspace import Workspace

__all__ = ["PromptRegistry", "parse_var_pairs", "prompt_ref"]


def prompt_ref(ref: str) -> Ref:
    """`qa`, `qa@3`, `prompt/qa@production` -> a prompt Ref (another kind's ref is an InvalidRef)."""
    return parse_ref(ref, default_kind="prompt", kinds=("prompt",))


class PromptRegistry:
    """Prompts of one workspace (`ws.prompts`)."""

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
            r = prompt_ref(ref)
            if r.version is not None:
                prompt = self._compiled.get((r.name, r.version))
            if prompt is None:
                av = self._ws.registry.get(str(r), record=False)
                prompt = self._compiled.get((av.name, av.version))
                if prompt is None:
                    prompt = Prompt.from_asset(av)
                    self._compiled[(av.name, av.version)] = prompt
            if r.version is not None:
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

    def list(self) -> list[AssetVersion]:
        """Latest version of every prompt."""
        return self._ws.registry.list("prompt")

    def versions(self, name: str) -> list[AssetVersion]:
        """All versions of a prompt, oldest first."""
        return self._ws.registry.versions(prompt_ref(name).base)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every version (with its parent: history is a tree) and every alias move, oldest first."""
        return self._ws.registry.history(prompt_ref(name).base)

    def set_alias(self, name: str, alias: str, version: int, reason: str | None = None) -> AssetVersion:
        """Point `qa@<alias>` at `version` (recorded: who, when, from, to, why)."""
        return self._ws.registry.set_alias(prompt_ref(name).base, alias, version, reason=reason)

    alias = set_alias

    def diff(self, a: str, b: str) -> PromptDiff:
        """What changed from prompt `a` to `b`: each a ref (`qa@1`) or a prompt YAML file path."""
        spec_a, label_a, digest_a = self._diff_side(a)
        spec_b, label_b, digest_b = self._diff_side(b)
        return diff_prompts(spec_a, spec_b, label_a, label_b, a_digest=digest_a, b_digest=digest_b)

    def _diff_side(self, ref: str) -> tuple[PromptSpec, str, str | None]:
        if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
            path = Path(ref).expanduser()
            spec, _ = load_prompt_spec(path if path.is_absolute() or path.exists() else self._ws.root / path)
            return spec, ref, None
        r = prompt_ref(ref)
        av = self._ws.registry.get(str(r), record=False)
        label = f"{r.name}@{av.version}" if r.selector is None or r.version is not None \
            else f"{r.name}@{r.selector} (v{av.version})"
        return PromptSpec.model_validate(av.spec), label, av.digest

    # -- pushing -------------------------------------------------------------------------------
    def push_folder(self, paths: str | Path | Sequence[str | Path] | None = None, message: str | None = None, *,
                    fork: Iterable[str] = (), check_external: bool = False) -> list[AssetVersion]:
        """Validate every prompt and chain under `paths` (default: `prompts/`), then push them all in
        one transaction, or nothing. See `llmops.chains.folder.push_folder` (chains are checked
        against the prompts beside them, so the chains layer does the push).

        Each version's `outcome` is `new`, `unchanged` or `revert` (equal to version `same_as`).
        """
        from llmops.chains.folder import push_folder

        return push_folder(self._ws, paths, message, fork=fork, check_external=check_external)


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

