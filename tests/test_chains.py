"""Chains as LangChain Runnables, on a tiny local LLM and a tiny embedder: pinning, tracing, streaming."""

from __future__ import annotations

import textwrap

import pytest
from langchain_core.runnables import RunnableLambda

from llmops.errors import SpecError
from rag_support import build_tiny_model as build_tiny_embedder
from rag_support import write_corpus, write_spec


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory):
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


def write(root, rel, text):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def chain_ws(ws, tiny_llm_dir, embedder_dir):
    """A workspace with the tiny model registered, an index `kb`, a prompt and a rag chain pushed."""
    from llmops.models import model_spec

    ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    write_corpus(ws.root)
    ws.rag.ingest(write_spec(ws.root, embedder_dir, name="kb"))
    write(ws.root, "prompts/ask.yaml", """\
        name: ask
        messages:
          - {role: system, content: "Use the context."}
          - role: user
            content: "{% for d in context %}{{ d.text }} {% endfor %}Q: {{ question }}"
        variables:
          question: {type: str}
          context: {type: list}
        model_params: {temperature: 0, max_tokens: 8}
        """)
    write(ws.root, "prompts/rag.chain.yaml", """\
        kind: chain
        name: rag
        inputs: {question: str}
        steps:
          - {name: retrieve, type: retrieve, index: kb, k: 2, input: question, output: context}
          - {name: prompt, type: prompt, prompt: ask}
          - {name: generate, type: generate, model: tiny}
          - {name: answer, type: parse, parser: text}
        output: answer
        """)
    ws.prompts.push_folder(ws.root / "prompts")
    ws.registry.set_alias("chain/rag", "production", 1)
    return ws


def test_invoke_records_a_chain_run_with_pinned_versions(chain_ws):
    chain = chain_ws.chains.load("rag@production")
    out = chain.invoke({"question": "how long should dough rise?"})
    assert isinstance(out, str) and out == out.strip()
    run = chain_ws.get_run(out.run_id)
    assert (run.kind, run.status, run.params["chain"]) == ("chain", "finished", "chain/rag@1")
    assert run.metrics["tokens.completion"] > 0 and run.metrics["tokens.prompt"] > 0
    assert {"latency_ms.retrieve", "latency_ms.prompt", "latency_ms.generate", "latency_ms.answer"} <= set(run.metrics)
    used = {dst for src, rel, dst in chain_ws.lineage(run.id).upstream if rel == "used"}
    assert used == {"chain/rag@1", "prompt/ask@1", "index/kb@1", "model/tiny@1"}
    assert chain.invoke({"question": "how long should dough rise?"}) == out  # greedy: reproducible


def test_loaded_chain_keeps_its_versions_when_aliases_move(chain_ws):
    chain = chain_ws.chains.load("rag@production")
    before = chain.versions
    write(chain_ws.root, "prompts/ask.yaml", (chain_ws.root / "prompts/ask.yaml").read_text().replace("Use the context.", "Be brief."))
    chain_ws.prompts.push_folder(chain_ws.root / "prompts")
    chain_ws.registry.set_alias("chain/rag", "production", 1)
    out = chain.invoke({"question": "bread?"})
    used = {dst for src, rel, dst in chain_ws.lineage(out.run_id).upstream if rel == "used"}
    assert "prompt/ask@1" in used and "prompt/ask@2" not in used
    assert chain.versions == before


def test_stream_concatenates_to_invoke_and_batch_matches(chain_ws):
    chain = chain_ws.chains.load("rag@1")
    q = {"question": "what does bread need?"}
    pieces = list(chain.stream(q))
    assert "".join(pieces) == chain.invoke(q)
    assert chain.batch([q, {"question": "bake?"}]) == [chain.invoke(q), chain.invoke({"question": "bake?"})]


def test_composes_with_lcel_and_ainvoke(chain_ws):
    import asyncio

    chain = chain_ws.chains.load("rag@1")
    pipeline = RunnableLambda(lambda q: {"question": q}) | chain | RunnableLambda(len)
    assert pipeline.invoke("bread?") == len(chain.invoke({"question": "bread?"}))
    assert asyncio.run(chain.ainvoke({"question": "bread?"})) == chain.invoke({"question": "bread?"})
    assert list(chain.get_input_schema().model_fields) == ["question"]


@pytest.mark.parametrize("inputs, message", [
    ({}, "missing input 'question'"),
    ({"question": "q", "qestion": "q"}, "unknown input 'qestion'"),
    ({"question": 3}, "input 'question' must be str"),
])
def test_bad_inputs_are_clear_and_record_nothing(chain_ws, inputs, message):
    chain = chain_ws.chains.load("rag@1")
    before = len(chain_ws.search_runs("attributes.kind = 'chain'"))
    with pytest.raises(SpecError, match=message):
        chain.invoke(inputs)
    assert len(chain_ws.search_runs("attributes.kind = 'chain'")) == before


def test_failed_step_marks_the_run_failed(chain_ws):
    write(chain_ws.root, "prompts/json.chain.yaml", """\
        kind: chain
        name: as-json
        inputs: {question: str, context: list}
        steps:
          - {name: prompt, type: prompt, prompt: ask}
          - {name: generate, type: generate, model: tiny}
          - {name: parsed, type: parse, parser: json}
        """)
    chain_ws.prompts.push_folder(chain_ws.root / "prompts")
    with pytest.raises(SpecError, match="model output is not JSON"):
        chain_ws.chains.load("as-json").invoke({"question": "q", "context": []})
    run = chain_ws.search_runs("attributes.name = 'as-json'")[0]
    assert run.status == "failed" and "not JSON" in run.error


def test_an_input_with_default_null_may_be_left_out(ws):
    """One rule decides what a call must pass: the chain's input model (an input without `default:` is required)."""
    write(ws.root, "prompts/greet.yaml", """\
        name: greet
        template: "Hello {{ name }}{% if style %}, in a {{ style }} way{% endif %}."
        variables:
          name: str
          style: {type: str, default: null}
        """)
    write(ws.root, "prompts/greet.chain.yaml", """\
        kind: chain
        name: greet
        inputs:
          name: str
          style: {type: str, default: null}
        steps:
          - {name: prompt, type: prompt, prompt: greet}
        """)
    ws.prompts.push_folder()
    chain = ws.chains.load("greet")
    assert chain.invoke({"name": "Ada"}) == "Hello Ada."
    assert chain.invoke({"name": "Ada", "style": "formal"}) == "Hello Ada, in a formal way."
    schema = chain.get_input_schema().model_json_schema()
    assert schema["required"] == ["name"] and set(schema["properties"]) == {"name", "style"}
    with pytest.raises(SpecError, match="missing input 'name'"):
        chain.invoke({"style": "formal"})
