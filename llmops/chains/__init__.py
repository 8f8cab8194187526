"""Chains: specs of named, wired steps; the plan checker; step types (one class each); the runner.

    chain = ws.chains.load("rag-qa@production")      # a LangChain Runnable, every ref pinned
    chain.invoke({"question": "How many vacation days?"})

A new step type is one `StepSpec` subclass registered with `register_step` (see
`llmops.chains.spec`). The runner (and LangChain) load on first use of a runner name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmops.chains import steps as _steps  # noqa: F401  (registers the built-in step types)
from llmops.chains.plan import ChainPlan, Planner, Resolver, check_chain
from llmops.chains.registry import ChainRegistry, ChainVersion, registry_resolver
from llmops.chains.spec import (ChainSpec, StepSpec, input_model, load_chain_spec, parse_chain_spec, ref_field,
                                register_step, step_types, unregister_step)

if TYPE_CHECKING:
    from llmops.chains.runner import (ChainResult, LLMOpsChain, Pinning, StepCall, TracedDict, TracedList,
                                      TracedStr)

__all__ = [
    "ChainPlan",
    "ChainRegistry",
    "ChainResult",
    "ChainSpec",
    "ChainVersion",
    "LLMOpsChain",
    "Pinning",
    "Planner",
    "Resolver",
    "StepCall",
    "StepSpec",
    "TracedDict",
    "TracedList",
    "TracedStr",
    "check_chain",
    "input_model",
    "load_chain_spec",
    "parse_chain_spec",
    "ref_field",
    "register_step",
    "registry_resolver",
    "step_types",
    "unregister_step",
]

_RUNNER = {"ChainResult", "LLMOpsChain", "Pinning", "StepCall", "TracedDict", "TracedList", "TracedStr"}


def __getattr__(name: str):
    if name in _RUNNER:
        from llmops.chains import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'llmops.chains' has no attribute {name!r}")
