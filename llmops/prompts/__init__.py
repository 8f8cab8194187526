"""Prompt specs, strict sandboxed templates, prompt diffs and the prompt registry.

    ws.prompts.push_folder("prompts/", message="shorter answers")
    qa = ws.prompts.get("qa@production")
    qa.render(question="How many vacation days?")
    print(render_diff(ws.prompts.diff("qa@1", "qa@2"), "markdown"))

Chains (which the prompts folder also holds) live in `llmops.chains`.
"""

from llmops.prompts.diff import FORMATS, PromptDiff, diff_prompts, render_diff
from llmops.prompts.prompt import Prompt
from llmops.prompts.registry import PromptRegistry, parse_var_pairs
from llmops.prompts.spec import PromptSpec, VariableSpec, canonical_spec, load_prompt_spec

__all__ = [
    "FORMATS",
    "Prompt",
    "PromptDiff",
    "PromptRegistry",
    "PromptSpec",
    "VariableSpec",
    "canonical_spec",
    "diff_prompts",
    "load_prompt_spec",
    "parse_var_pairs",
    "render_diff",
]
