"""Prompt specs, strict sandboxed templates, prompt diffs, chain specs and the folder push.

    ws.prompts.push_folder("prompts/", message="shorter answers")
    qa = ws.prompts.get("qa@production")
    qa.render(question="How many vacation days?")
    print(render_diff(ws.prompts.diff("qa@1", "qa@2"), "markdown"))
"""

from llmops.prompts.chain_spec import ChainPlan, ChainSpec, check_chain, load_chain_spec
from llmops.prompts.diff import FORMATS, PromptDiff, diff_prompts, render_diff
from llmops.prompts.prompt import Prompt
from llmops.prompts.registry import FolderItem, PromptRegistry, parse_var_pairs, registry_resolver
from llmops.prompts.spec import PromptSpec, VariableSpec, canonical_spec, load_prompt_spec

__all__ = [
    "FORMATS",
    "ChainPlan",
    "ChainSpec",
    "FolderItem",
    "Prompt",
    "PromptDiff",
    "PromptRegistry",
    "PromptSpec",
    "VariableSpec",
    "canonical_spec",
    "check_chain",
    "diff_prompts",
    "load_chain_spec",
    "load_prompt_spec",
    "parse_var_pairs",
    "registry_resolver",
    "render_diff",
]
