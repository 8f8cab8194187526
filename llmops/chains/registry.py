"""`ws.chains`: pushed chain versions, checked and loaded as Runnables.

    chain = ws.chains.load("rag-qa@production")     # every ref pinned once
    chain.invoke({"question": "How many vacation days?"})
    ws.chains.get("rag-qa@2").plan.order             # the checked run plan

Chains are pushed with the prompts they use, in one transaction: `ws.prompts.push_folder`
(implemented by `llmops.chains.folder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops.chains.plan import ChainPlan, Resolver, check_chain
from llmops.chains.spec import ChainSpec, stored_chain_spec
from llmops.errors import AliasNotFound, AssetNotFound, InvalidRef
from llmops.store.refs import parse_ref

if TYPE_CHECKING:
    from llmops.chains.runner import ChainResult, LLMOpsChain, Pinned
    from llmops.store.registry import AssetVersion
    from llmops.workspace import Workspace

__all__ = ["ChainRegistry", "ChainVersion", "registry_resolver"]

#: Kinds whose specs a chain check reads (the others only need to exist).
SPEC_KINDS = ("prompt", "chain")


@dataclass(frozen=True)
class ChainVersion:
    """A pushed chain version with its spec and checked run plan."""

    av: AssetVersion
    spec: ChainSpec
    plan: ChainPlan

    @property
    def ref(self) -> str:
        return self.av.ref


def chain_ref(ref: str) -> str:
    """`rag-qa@2` or `chain/rag-qa@2` -> `chain/rag-qa@2` (anything else is an InvalidRef)."""
    return str(parse_ref(ref, default_kind="chain", kinds=("chain",)))


class ChainRegistry:
    """Chains of one workspace (`ws.chains`): get, load as Runnables, invoke with a trace, diff."""

    def __init__(self, ws: Workspace):
        self._ws = ws

    def get(self, ref: str, *, check_external: bool = False) -> ChainVersion:
        """A pushed chain version, its spec and its plan, checked against the registry now.

        `check_external` also requires its index, model and adapter refs to resolve (loading a
        chain resolves those itself, with clearer errors from the step that needs them).
        """
        av = self._ws.registry.get(chain_ref(ref), record=False)
        spec = stored_chain_spec(av.spec, av.ref)
        resolve = registry_resolver(self._ws)
        if not check_external:
            inner = resolve

            def resolve(kind: str, ref: str) -> Any:
                return inner(kind, ref) if kind in SPEC_KINDS else True
        return ChainVersion(av, spec, check_chain(spec, resolve))

    def pin(self, ref: str) -> Pinned:
        """Resolve the chain and every ref of its steps to one version each (and load them)."""
        from llmops.chains.runner import pin

        version = self.get(ref)
        return pin(self._ws, version.av, version.spec, version.plan, self.pin)

    def load(self, ref: str) -> LLMOpsChain:
        """A chain version as a LangChain Runnable, its refs pinned now."""
        from llmops.chains.runner import LLMOpsChain  # LangChain is loaded when a chain is

        return LLMOpsChain(self._ws, self.pin(ref))

    def invoke_traced(self, ref: str, inputs: dict) -> ChainResult:
        """Load and run once; the result carries the run id, the versions used and step timings."""
        return self.load(ref).invoke_traced(inputs)

    def list(self) -> list[AssetVersion]:
        """The latest version of every chain."""
        return self._ws.registry.list("chain")

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every version (with its parent) and every alias move of a chain, oldest first."""
        return self._ws.registry.history(parse_ref(name, default_kind="chain", kinds=("chain",)).base)

    def diff(self, a: str, b: str) -> dict:
        """A structured diff of two chain versions' specs."""
        return self._ws.registry.diff(chain_ref(a), chain_ref(b))


def registry_resolver(ws: Workspace) -> Resolver:
    """A chain-ref resolver over the registry alone: specs for prompts and chains, versions else.

    A model ref also resolves when it names a model llmops can load locally (`smollm2`, a path).
    """
    from llmops.prompts.spec import PromptSpec

    def resolve(kind: str, ref: str) -> Any:
        try:
            r = parse_ref(ref, default_kind=kind, kinds=(kind,))
            av = ws.registry.get(str(r), record=False)
        except InvalidRef:
            return None
        except (AssetNotFound, AliasNotFound):
            if kind == "model" and r.selector is None:
                from llmops.models.sources import is_local_source

                return True if is_local_source(r.name) else None
            return None
        if kind == "prompt":
            return PromptSpec.model_validate(av.spec)
        if kind == "chain":
            return stored_chain_spec(av.spec, av.ref)
        return av

    return resolve
