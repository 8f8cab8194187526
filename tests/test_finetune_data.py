"""The fine-tuning data pipeline on the tiny model's tokenizer: formats, the very ids serving sends,
completion-only labels, truncation, the seeded split, retrieval as the chain does it, and bad records."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from llmops.errors import SpecError
from llmops.finetune.data import IGNORE, build_dataset
from llmops.finetune.spec import load_job
from llmops.models import Request

JOB = """\
base_model: tiny
dataset: data.jsonl
training: {{max_steps: 5, batch_size: 2, max_seq_len: {max_seq_len}, seed: {seed}}}
output: tiny-qa
"""


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def write_rows(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def job_of(ws, extra: str = "", *, max_seq_len: int = 256, seed: int = 0, rows: list | None = None):
    if rows is not None:
        write_rows(ws.root / "finetune" / "data.jsonl", rows)
    path = write(ws.root, "finetune/job.yaml", JOB.format(max_seq_len=max_seq_len, seed=seed) + extra)
    return load_job(path, ws)


def chat(i: int) -> dict:
    return {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"question {i}"},
                         {"role": "assistant", "content": f"answer number {i}"}]}


def test_chat_records_give_the_ids_serving_sends_and_loss_on_the_completion_only(ws, tiny_llm):
    tok = tiny_llm.tokenizer
    ds = build_dataset(ws, job_of(ws, rows=[chat(i) for i in range(10)]), tok)
    assert ds.format == "messages" and ds.stats.records == 10 and len(ds.train) + len(ds.validation) == 10
    by_line = {e.line: e for e in ds.train + ds.validation}
    for line, e in by_line.items():
        prompt = chat(line - 1)["messages"][:-1]
        served = tiny_llm.encode(Request.chat(prompt))
        completion = tok(f"answer number {line - 1}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert e.input_ids == served + completion
        assert e.labels == [IGNORE] * len(served) + completion
        assert e.prompt_tokens == len(served) and not e.truncated
    assert "<|im_start|>assistant\nanswer number 0<|im_end|>" in ds.preview and ds.preview_line == 1


def test_text_prompts_encode_as_completion_requests_and_full_loss_is_a_setting(ws, tiny_llm):
    rows = [{"prompt": f"Q: thing {i}\nA:", "completion": f" it is {i}"} for i in range(6)]
    job = job_of(ws, "validation: {fraction: 0.2}\n", rows=rows)
    job = job.__class__(job.spec.model_copy(update={"training": job.spec.training.model_copy(
        update={"completion_only_loss": False})}), job.path, job.digest, job.where, job.root)
    ds = build_dataset(ws, job, tiny_llm.tokenizer)
    assert ds.format == "prompt_completion"
    e = next(x for x in ds.train + ds.validation if x.line == 1)
    served = tiny_llm.encode(Request.completion("Q: thing 0\nA:"))
    assert e.input_ids[:len(served)] == served and e.labels == e.input_ids


def test_chat_turns_in_prompt_completion_records(ws, tiny_llm):
    rows = [{"prompt": [{"role": "user", "content": f"hi {i}"}], "completion": [{"role": "assistant", "content": f"yo {i}"}]}
            for i in range(4)]
    ds = build_dataset(ws, job_of(ws, rows=rows), tiny_llm.tokenizer)
    e = next(x for x in ds.train + ds.validation if x.line == 2)
    assert e.input_ids[:e.prompt_tokens] == tiny_llm.encode(Request.chat([{"role": "user", "content": "hi 1"}]))


def test_long_examples_are_cut_at_the_end_and_counted(ws, tiny_llm):
    rows = [chat(i) for i in range(8)]
    rows[3]["messages"][1]["content"] = "word " * 200
    ds = build_dataset(ws, job_of(ws, max_seq_len=100, rows=rows), tiny_llm.tokenizer)
    everything = ds.train + ds.validation
    assert all(len(e.input_ids) <= 100 and len(e.labels) == len(e.input_ids) for e in everything)
    long = next(e for e in everything if e.line == 4)
    assert long.truncated and long.trained_tokens == 0 and long.prompt_tokens > 100
    assert ds.stats.truncated == 1 and ds.stats.no_completion == 1 and ds.stats.truncated_share == 1 / 8
    assert sum(c for _, _, c in ds.stats.histogram()) == 8


def test_the_validation_split_is_seeded_and_a_file_can_replace_it(ws, tiny_llm):
    rows = [chat(i) for i in range(40)]
    lines = lambda ds: sorted(e.line for e in ds.validation)  # noqa: E731
    a = build_dataset(ws, job_of(ws, "validation: {fraction: 0.25}\n", rows=rows), tiny_llm.tokenizer)
    b = build_dataset(ws, job_of(ws, "validation: {fraction: 0.25}\n"), tiny_llm.tokenizer)
    c = build_dataset(ws, job_of(ws, "validation: {fraction: 0.25}\n", seed=1), tiny_llm.tokenizer)
    assert len(a.validation) == 10 and len(a.train) == 30 and lines(a) == lines(b) and lines(a) != lines(c)
    assert not set(lines(a)) & {e.line for e in a.train}
    write_rows(ws.root / "finetune" / "val.jsonl", [chat(100), chat(101)])
    d = build_dataset(ws, job_of(ws, "validation: {file: val.jsonl}\n"), tiny_llm.tokenizer)
    assert len(d.train) == 40 and [e.line for e in d.validation] == [1, 2]
    write_rows(ws.root / "finetune" / "val.jsonl", [chat(100), chat(5)])
    with pytest.raises(SpecError, match="also in the training data") as info:
        build_dataset(ws, job_of(ws, "validation: {file: val.jsonl}\n"), tiny_llm.tokenizer)
    assert info.value.line == 2 and info.value.file.endswith("val.jsonl")


@pytest.mark.parametrize("bad, line, field, words", [
    ("{not json", 3, None, "not valid JSON"),
    ("[1, 2]", 3, None, "not an object"),
    ("{}", 3, None, "empty record"),
    (json.dumps(chat(0)), 3, None, "duplicate record (same as line 1)"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}), 3, "messages[0]", "last turn must be the assistant"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}), 3,
     "messages[1].content", "answer is empty"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}), 3,
     "messages[0]", "role"),
    (json.dumps({"prompt": "x", "completion": "y"}), 3, "messages", "no field 'messages'"),
])
def test_bad_records_name_the_file_the_line_and_the_field(ws, tiny_llm, bad, line, field, words):
    rows = [chat(0), chat(1), bad, chat(3)]
    with pytest.raises(SpecError) as info:
        build_dataset(ws, job_of(ws, rows=rows), tiny_llm.tokenizer)
    err = info.value
    assert err.file == "finetune/data.jsonl" and err.line == line and err.field == field, str(err)
    assert words in str(err)


def test_every_bad_record_is_counted_in_one_error(ws, tiny_llm):
    rows = [chat(0), "{}", chat(2), "{}", "oops", chat(5)]
    with pytest.raises(SpecError) as info:
        build_dataset(ws, job_of(ws, rows=rows), tiny_llm.tokenizer)
    assert info.value.line == 2 and "and 2 more bad records: line 4, 5" in str(info.value)


def test_an_empty_dataset_and_a_missing_file_are_refused(ws, tiny_llm):
    with pytest.raises(SpecError, match="no records"):
        build_dataset(ws, job_of(ws, rows=["", "  "]), tiny_llm.tokenizer)
    (ws.root / "finetune" / "data.jsonl").unlink()
    with pytest.raises(SpecError, match="no file 'data.jsonl'") as info:
        build_dataset(ws, job_of(ws), tiny_llm.tokenizer)
    assert info.value.field == "dataset" and info.value.line == 2


PROMPT = """\
name: ask
messages:
  - {role: system, content: "Use the context."}
  - role: user
    content: "{% for d in context %}{{ d.text }} {% endfor %}Q: {{ question }}"
variables:
  question: {type: str}
  context: {type: list}
"""
CHAIN = """\
kind: chain
name: rag
inputs: {question: str}
steps:
  - {name: retrieve, type: retrieve, index: kb, k: 2, input: question, output: context}
  - {name: prompt, type: prompt, prompt: ask}
output: prompt
"""
TEMPLATE = """\
template: {prompt: ask, inputs: {question: q}, completion: a}
retrieval: {index: kb, k: 2, query: q, into: context}
"""


@pytest.fixture
def rag_ws(ws, embedder_dir):
    """A workspace with an index `kb` (tiny embedder), the prompt `ask` and a chain retrieve -> prompt."""
    from rag_support import write_corpus, write_spec

    write_corpus(ws.root)
    ws.rag.ingest(write_spec(ws.root, embedder_dir, name="kb"))
    write(ws.root, "prompts/ask.yaml", PROMPT)
    write(ws.root, "prompts/rag.chain.yaml", CHAIN)
    ws.prompts.push_folder(ws.root / "prompts")
    return ws


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory):
    from rag_support import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-embedder"))


QUESTIONS = ["how do I install alpha", "what does beta configure", "where are the logs", "installing gamma"]


def test_template_with_retrieval_renders_what_the_chain_renders_at_serving_time(rag_ws, tiny_llm):
    ws = rag_ws
    rows = [{"q": q, "a": f"answer {i}", "id": i} for i, q in enumerate(QUESTIONS)]
    ds = build_dataset(ws, job_of(ws, TEMPLATE, rows=rows), tiny_llm.tokenizer)
    assert ds.format == "template" and {v.ref for v in ds.uses} == {"prompt/ask@1", "index/kb@1"}
    chain = ws.chains.load("rag@1")
    for e in ds.train + ds.validation:
        rendered = chain.invoke({"question": QUESTIONS[e.line - 1]})
        assert isinstance(rendered, list) and "Q: " + QUESTIONS[e.line - 1] in rendered[-1]["content"]
        assert e.input_ids[:e.prompt_tokens] == tiny_llm.encode(Request.chat(rendered))


def test_template_errors_name_the_record_line_and_the_missing_field(rag_ws, tiny_llm):
    ws = rag_ws
    rows = [{"q": "install alpha", "a": "x"}, {"question": "typo", "a": "y"}, {"q": "beta", "a": "z"}]
    with pytest.raises(SpecError) as info:
        build_dataset(ws, job_of(ws, TEMPLATE, rows=rows), tiny_llm.tokenizer)
    err = info.value
    assert err.line == 2 and err.field == "q" and "the retrieval query" in str(err) and "question" in str(err)
    rows = [{"q": "install alpha"}]
    with pytest.raises(SpecError) as info:
        build_dataset(ws, job_of(ws, TEMPLATE, rows=rows), tiny_llm.tokenizer)
    assert info.value.field == "a" and "the completion" in str(info.value)
    bad = {"template: {prompt: ask, inputs: {question: q}, completion: a}\n": (
        "template: {prompt: ask, inputs: {question: q, nosuch: q}, completion: a}\n", "template.inputs.nosuch"),
        "into: context": ("into: ctx", "retrieval.into"), "index: kb,": ("index: nosuch,", "retrieval.index")}
    for old, (new, field) in bad.items():
        with pytest.raises(SpecError) as info:
            build_dataset(ws, job_of(ws, TEMPLATE.replace(old, new), rows=[{"q": "x", "a": "y"}]), tiny_llm.tokenizer)
        assert info.value.field == field and info.value.file.endswith("job.yaml"), str(info.value)
    with pytest.raises(SpecError, match="push the prompt first") as info:
        build_dataset(ws, job_of(ws, TEMPLATE.replace("prompt: ask", "prompt: nosuch")), tiny_llm.tokenizer)
    assert info.value.field == "template.prompt"


def test_a_path_dataset_is_pushed_only_on_request_and_a_ref_reads_the_same_records(ws, tiny_llm):
    rows = [chat(i) for i in range(6)]
    ds = build_dataset(ws, job_of(ws, rows=rows), tiny_llm.tokenizer)
    assert ds.source_ref is None and ws.registry.list("dataset") == []  # building writes nothing
    av = ds.push(ws)
    assert av.ref == "dataset/data@1" and av.digest == ds.source.digest and ds.source_ref == av
    assert ds.push(ws) == av and ws.registry.versions("dataset/data")[-1].version == 1
    again = build_dataset(ws, job_of(ws).__class__(
        job_of(ws).spec.model_copy(update={"dataset": "dataset/data@1"}), job_of(ws).path, "", None, ws.root),
        tiny_llm.tokenizer)
    assert again.source_ref == av
    assert [e.input_ids for e in again.train] == [e.input_ids for e in ds.train]
    with pytest.raises(SpecError, match="cannot resolve"):
        build_dataset(ws, job_of(ws).__class__(job_of(ws).spec.model_copy(update={"dataset": "dataset/nope@1"}),
                                               job_of(ws).path, "", None, ws.root), tiny_llm.tokenizer)
