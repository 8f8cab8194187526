"""Chain specs: structure (stage 1) and wiring against the prompts and chains they use (stage 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.errors import SpecError
from llmops.chains import ChainSpec, check_chain, load_chain_spec
from llmops.store.refs import parse_ref
from llmops.prompts.spec import load_prompt_spec

REPO = Path(__file__).resolve().parent.parent

RAG_PROMPT, _ = load_prompt_spec("rag.yaml", text="""
name: rag
template: "{% for d in context %}{{ d.text }} {% endfor %}Q: {{ question }}"
variables:
  question: str
  context: list
""")
SUMMARY_PROMPT, _ = load_prompt_spec("sum.yaml", text="""
name: sum
template: "{{ text }} ({{ words }})"
variables:
  text: str
  words: {type: int, default: 20}
""")


def resolver(chains: dict[str, ChainSpec] | None = None, missing: tuple[str, ...] = ()):
    prompts = {"rag": RAG_PROMPT, "sum": SUMMARY_PROMPT}

    def resolve(kind: str, ref: str):
        name = parse_ref(ref, default_kind=kind).name
        if name in missing:
            return None
        if kind == "prompt":
            return prompts.get(name)
        if kind == "chain":
            return (chains or {}).get(name)
        return True

    return resolve


GOOD = """
kind: chain
name: rag-qa
inputs: {question: str}
steps:
  - {name: retrieve, type: retrieve, index: handbook, k: 3, input: question, output: context}
  - {name: prompt, type: prompt, prompt: rag}
  - {name: generate, type: generate, model: smollm2, params: {max_tokens: 16}}
  - {name: answer, type: parse, parser: text}
"""


def chain(text: str) -> tuple[ChainSpec, object]:
    return load_chain_spec("prompts/c.yaml", text=text)


def check_error(text: str, resolve=None) -> str:
    spec, where = chain(text)
    with pytest.raises(SpecError) as info:
        check_chain(spec, resolve or resolver(), where)
    return str(info.value)


def test_good_chain_gets_a_plan_with_wiring_by_name():
    spec, where = chain(GOOD)
    plan = check_chain(spec, resolver(), where)
    assert plan.order == ("retrieve", "prompt", "generate", "answer")
    assert plan.wiring == {"retrieve": {"query": "question"},
                           "prompt": {"question": "question", "context": "context"},
                           "generate": {"prompt": "prompt"}, "answer": {"text": "generate"}}
    assert plan.output == "answer"


def test_steps_listed_out_of_order_run_in_dependency_order():
    text = GOOD.replace("  - {name: retrieve, type: retrieve, index: handbook, k: 3, input: question, output: context}\n", "")
    text = text.replace("parser: text}", "parser: text, input: generate}\n"
                        "  - {name: retrieve, type: retrieve, index: handbook, input: question, output: context}")
    text = text.replace("prompt: rag}", "prompt: rag}").replace("params: {max_tokens: 16}}", "params: {max_tokens: 16}, input: prompt}")
    text += "output: answer\n"
    spec, where = chain(text)
    assert check_chain(spec, resolver(), where).order == ("retrieve", "prompt", "generate", "answer")


def test_the_example_chain_checks_against_the_example_prompts():
    spec, where = load_chain_spec(REPO / "prompts" / "rag-qa.chain.yaml")
    rag_qa, _ = load_prompt_spec(REPO / "prompts" / "rag-qa.yaml")

    def resolve(kind, ref):
        return rag_qa if (kind, ref) == ("prompt", "rag-qa") else (None if kind in ("prompt", "chain") else True)

    plan = check_chain(spec, resolve, where)
    assert plan.order == ("retrieve", "prompt", "generate", "answer")
    assert plan.wiring["prompt"] == {"question": "question", "context": "context"}


@pytest.mark.parametrize("old, new, message", [
    ("prompt: rag}", "prompt: rga}",
     "prompts/c.yaml:7: steps[1].prompt: step 'prompt': prompt 'rga' does not exist "
     "(push it first or fix the name (see `llmops assets list`))"),
    ("prompt: rag}", "prompt: rag, inputs: {contxt: context}}",
     "prompts/c.yaml:7: steps[1].inputs.contxt: step 'prompt': maps 'contxt', which is not a variable of prompt rag "
     "(did you mean 'context'?)"),
    ("prompt: rag}", "prompt: rag, inputs: {context: contxt}}",
     "prompts/c.yaml:7: steps[1].inputs.context: step 'prompt': reads 'contxt', which is neither a chain input "
     "nor another step's output (did you mean 'context'?)"),
    ("output: context}", "output: docs}",
     "prompts/c.yaml:7: steps[1].inputs: step 'prompt': variable 'context' of prompt rag is not supplied: "
     "no chain input or step output is named 'context' "
     "(map it under inputs: (context: <value>) or declare a chain input 'context')"),
    ("prompt: rag}", "prompt: sum, inputs: {text: context}}",
     "prompts/c.yaml:7: steps[1].inputs.text: step 'prompt': variable 'text' of prompt sum is str but 'context' "
     "(output of step 'retrieve') is a list of documents (change the variable's type or feed it another value)"),
    ("input: question, output: context}", "output: context}",
     "prompts/c.yaml:6: steps[0]: step 'retrieve': has no input and no step before it "
     "(set `input:` to one of the chain inputs: question)"),
    ("parser: text}", "parser: text, input: context}",
     "prompts/c.yaml:9: steps[3].input: step 'answer': needs str but 'context' (output of step 'retrieve') "
     "is a list of documents"),
])
def test_wiring_errors(old, new, message):
    assert old in GOOD
    assert check_error(GOOD.replace(old, new)) == message


def test_a_step_output_that_feeds_nothing_is_an_error():
    text = GOOD.replace("  - {name: answer, type: parse, parser: text}",
                        "  - {name: extra, type: parse, parser: json, input: generate}\n"
                        "  - {name: answer, type: parse, parser: text, input: generate}")
    assert check_error(text) == ("prompts/c.yaml:9: steps[3]: step 'extra': its output 'extra' feeds nothing "
                                 "(read it in a later step, make it the chain's `output:`, or remove the step)")


def test_an_unused_chain_input_is_an_error():
    text = GOOD.replace("inputs: {question: str}", "inputs: {question: str, user: str}")
    assert check_error(text) == ("prompts/c.yaml:4: inputs.user: chain input 'user' is not read by any step "
                                 "(wire it into a step, give it a default, or remove it)")


def test_a_cycle_between_steps_is_named():
    text = """
kind: chain
name: loop
inputs: {question: str}
steps:
  - {name: a, type: parse, input: c}
  - {name: b, type: parse, input: a}
  - {name: c, type: parse, input: b}
  - {name: d, type: retrieve, index: x, input: question}
output: d
"""
    assert check_error(text) == ("prompts/c.yaml:6: steps[0]: steps form a cycle: a -> c -> b -> a "
                                 "(a step cannot read, directly or not, its own output)")


def test_a_step_reading_its_own_output_is_refused():
    text = "kind: chain\nname: c\ninputs: [q]\nsteps:\n  - {name: a, type: parse, input: a}\n"
    assert check_error(text) == ("prompts/c.yaml:5: steps[0].input: step 'a': reads 'a', which is neither a chain "
                                 "input nor another step's output (values: q)")


def test_a_cycle_through_sub_chains_is_named():
    outer, _ = chain("kind: chain\nname: outer\ninputs: [q]\nsteps:\n  - {name: s, type: chain, chain: inner}\n")
    inner, _ = chain("kind: chain\nname: inner\ninputs: [q]\nsteps:\n  - {name: s, type: chain, chain: outer}\n")
    with pytest.raises(SpecError) as info:
        check_chain(outer, resolver({"outer": outer, "inner": inner}))
    assert str(info.value) == "steps[0].chain: step 's': chains form a cycle: outer -> inner -> outer"


def test_sub_chain_inputs_are_wired_like_prompt_variables():
    inner, _ = chain(GOOD.replace("name: rag-qa", "name: inner"))
    outer, where = chain("kind: chain\nname: outer\ninputs: {q: str}\nsteps:\n"
                         "  - {name: qa, type: chain, chain: inner, inputs: {question: q}}\n")
    assert check_chain(outer, resolver({"inner": inner}), where).wiring == {"qa": {"question": "q"}}


@pytest.mark.parametrize("text, message", [
    ("kind: chain\nname: c\nsteps:\n  - {name: a, type: parse, parser: regex}\n",
     "prompts/c.yaml:4: steps[0]: parser: regex needs a `pattern:`"),
    ("kind: chain\nname: c\nsteps:\n  - {name: a, type: parse, parser: regex, pattern: '(a'}\n",
     "prompts/c.yaml:4: steps[0]: pattern does not compile: missing ), unterminated subpattern at position 0"),
    ("kind: chain\nname: c\nsteps:\n  - {name: a, type: retrieve, index: x, k: 0}\n",
     "prompts/c.yaml:4: steps[0].k: Input should be greater than or equal to 1"),
    ("kind: chain\nname: c\nsteps:\n  - {name: a, type: search, index: x}\n",
     "prompts/c.yaml:4: steps[0]: Input tag 'search' found using 'type' does not match any of the expected tags: "
     "'retrieve', 'prompt', 'generate', 'parse', 'chain'"),
    ("kind: chain\nname: c\nsteps:\n  - {name: a, type: generate, model: m, parms: {}}\n",
     "prompts/c.yaml:4: steps[0].parms: unknown field 'parms' (did you mean 'params'?)"),
    ("kind: chain\nname: c\nsteps:\n  - {name: a, type: parse}\n  - {name: a, type: parse}\n",
     "prompts/c.yaml: two steps are named 'a': step names must be unique"),
    ("kind: chain\nname: c\ninputs: [q]\nsteps:\n  - {name: a, type: parse, output: q}\n",
     "prompts/c.yaml: step 'a' outputs 'q', which is already a chain input: give it another `output:` name"),
    ("kind: chain\nname: c\nsteps: []\n",
     "prompts/c.yaml:3: steps: List should have at least 1 item after validation, not 0"),
])
def test_structure_errors(text, message):
    with pytest.raises(SpecError) as info:
        chain(text)
    assert str(info.value) == message


@pytest.mark.parametrize("ref, message", [
    ("handbook@99999999999999999999", "version '99999999999999999999' is not a version number: "
                                      "use 1 .. 2147483647 in ASCII digits"),
    ("handbook@²", "version '²' is not a version number: use 1 .. 2147483647 in ASCII digits"),
    ("chain/handbook", "'chain/handbook' is a chain ref; expected a index ref here"),
    ("handbook@", "'handbook@' ends in '@'"),
])
def test_a_bad_ref_is_a_spec_error_naming_file_line_and_field(ref, message):
    """Refs in chain files go through the one ref parser: no traceback, the file's line and field."""
    with pytest.raises(SpecError) as info:
        chain(f"kind: chain\nname: c\ninputs: [q]\nsteps:\n  - {{name: a, type: retrieve, index: '{ref}', input: q}}\n")
    assert str(info.value).startswith(f"prompts/c.yaml:5: steps[0].index: '{ref}'")
    assert message in str(info.value)


def test_external_refs_are_checked_through_the_resolver():
    assert check_error(GOOD, resolver(missing=("handbook",))) == (
        "prompts/c.yaml:6: steps[0].index: step 'retrieve': index 'handbook' does not exist "
        "(push it first or fix the name (see `llmops assets list`))")
