"""A step type is one class: a new one, defined here and registered through the public API, is
checked, pinned and run without touching llmops."""

from __future__ import annotations

import textwrap
from typing import Any, Literal

import pytest
from pydantic import Field

from llmops.chains import StepSpec, load_chain_spec, ref_field, register_step, step_types, unregister_step
from llmops.errors import SpecError
from test_chains import write


class CountWordsStep(StepSpec):
    """Counts the words of its input text and tags the count with the version of a prompt it names
    (a step with its own field, a ref that is checked and pinned, and a typed output)."""

    type: Literal["count_words"]
    rubric: ref_field("prompt") = Field(description="Prompt ref whose version labels the count.")
    input: str | None = Field(None, description="Value holding the text.")

    produces = "str"

    def check(self, plan: Any) -> dict[str, str]:
        wiring = plan.read("text", ("str",))
        plan.resolve("rubric")
        return wiring

    def pin(self, pin: Any) -> Any:
        prompt = pin.ws.prompts.get(self.rubric)
        pin.use(prompt.asset)
        return prompt.version

    def run(self, call: Any) -> Any:
        return f"{len(str(call.inputs['text']).split())} words (rubric v{call.bound})"


@pytest.fixture
def count_words():
    register_step(CountWordsStep)
    yield CountWordsStep
    unregister_step("count_words")


CHAIN = """\
    kind: chain
    name: counter
    inputs: {question: str}
    steps:
      - {name: count, type: count_words, rubric: rubric, input: question}
    """


def test_a_step_type_defined_outside_llmops_checks_pins_and_runs(ws, count_words):
    assert step_types()["count_words"] is CountWordsStep
    write(ws.root, "prompts/rubric.yaml", "name: rubric\ntemplate: Count the words.\n")
    write(ws.root, "prompts/counter.chain.yaml", CHAIN)
    pushed = ws.prompts.push_folder()
    assert sorted(av.ref for av in pushed) == ["chain/counter@1", "prompt/rubric@1"]
    assert ws.chains.get("counter@1").plan.wiring == {"count": {"text": "question"}}

    chain = ws.chains.load("counter")
    assert chain.versions == ["chain/counter@1", "prompt/rubric@1"]
    out = chain.invoke({"question": "how long should dough rise"})
    assert out == "5 words (rubric v1)"
    used = {dst for _, rel, dst in ws.lineage(out.run_id).upstream if rel == "used"}
    assert used == {"chain/counter@1", "prompt/rubric@1"}


def test_the_new_step_type_is_checked_like_the_built_in_ones(ws, count_words):
    write(ws.root, "prompts/counter.chain.yaml", CHAIN)
    with pytest.raises(SpecError) as info:
        ws.prompts.push_folder()
    assert str(info.value) == ("prompts/counter.chain.yaml:5: steps[0].rubric: step 'count': prompt 'rubric' "
                               "does not exist (push it first or fix the name (see `llmops assets list`))")
    bad_ref = CHAIN.replace("rubric: rubric", "rubric: 'rubric@²'")
    with pytest.raises(SpecError, match=r"^prompts/c.yaml:5: steps\[0\].rubric: 'rubric@²': version '²'"):
        load_chain_spec("prompts/c.yaml", text=textwrap.dedent(bad_ref))
    assert ws.registry.list() == []


def test_unregistered_step_types_are_refused_with_the_registered_ones_listed():
    with pytest.raises(SpecError) as info:
        load_chain_spec("prompts/c.yaml", text=textwrap.dedent(CHAIN))
    assert str(info.value) == (
        "prompts/c.yaml:5: steps[0]: Input tag 'count_words' found using 'type' does not match any of the "
        "expected tags: 'retrieve', 'prompt', 'generate', 'parse', 'chain'")


def test_a_step_type_name_is_registered_once():
    class Other(CountWordsStep):
        type: Literal["parse"]

    with pytest.raises(ValueError, match="step type 'parse' is already registered"):
        register_step(Other)
    with pytest.raises(TypeError, match="needs a field `type: Literal"):
        register_step(StepSpec)
