"""Ingestion spec: strict YAML, clear errors naming the file and field."""

from __future__ import annotations

import pytest

from llmops.errors import SpecError
from llmops.rag.spec import IngestSpec, load_spec, parse_spec


def test_minimal_spec_gets_defaults_and_shorthand_sources():
    spec = parse_spec({"sources": ["docs/*.md", {"glob": "c.jsonl", "id_field": "_id", "title_field": "title"}]})
    assert [s.glob for s in spec.sources] == ["docs/*.md", "c.jsonl"]
    assert spec.sources[1].id_field == "_id" and spec.sources[0].format is None
    assert (spec.chunker.kind, spec.embedder.model, spec.index.type, spec.on_error) == ("recursive", "default", "flat", "stop")
    assert spec.chunker.config() == {"kind": "recursive", "chunk_size": 200, "chunk_overlap": 32}
    assert parse_spec({"sources": "a.md", "chunker": {"kind": "none"}}).chunker.config() == {"kind": "none"}


@pytest.mark.parametrize("data, field, words", [
    ({"sources": ["a"], "chunker": {"kind": "recursive", "size": 3}}, "chunker.size", "unknown key"),
    ({"source": ["a"]}, "source", "unknown key"),
    ({}, "sources", "Field required"),
    ({"sources": ["a"], "chunker": {"chunk_size": 10, "chunk_overlap": 10}}, "chunker", "must be smaller"),
    ({"sources": ["a"], "index": {"type": "flat", "params": {"nlist": 4}}}, "index.params", "no parameter nlist"),
    ({"sources": ["a"], "index": {"type": "hnsw", "params": {"nprobe": 4}}}, "index.params", "allowed: M, efConstruction, efSearch"),
    ({"sources": ["a"], "index": {"type": "flat", "tune": {"target": 0.9}}}, "index", "nothing to tune"),
    ({"sources": ["a"], "index": {"type": "annoy"}}, "index.type", "flat"),
    ({"sources": ["a"], "on_error": "ignore"}, "on_error", "skip"),
])
def test_bad_specs_name_the_field(data, field, words):
    with pytest.raises(SpecError) as exc:
        parse_spec(data, file="rag/x.yaml")
    assert exc.value.file == "rag/x.yaml" and exc.value.field == field
    assert words in str(exc.value) and str(exc.value).startswith("rag/x.yaml: ")


def test_load_spec_defaults_name_to_file_stem(tmp_path):
    p = tmp_path / "my handbook.yaml"
    p.write_text("sources: [docs/*.md]\nindex: {type: ivf, params: {nlist: 8}}\n")
    spec = load_spec(p)
    assert spec.name == "my-handbook" and spec.index.params == {"nlist": 8}
    p.write_text("name: kb\nsources: [a]\n")
    assert load_spec(p).name == "kb"


def test_load_spec_reports_yaml_line_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("sources:\n  - a\n chunker: [\n")
    with pytest.raises(SpecError, match=r"bad.yaml:3: malformed YAML"):
        load_spec(p)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")


def test_spec_round_trips_through_json():
    spec = parse_spec({"sources": ["a"], "index": {"type": "hnsw", "params": {"M": 16}, "tune": {"target": 0.9}}})
    again = IngestSpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec and again.index.tune.k == 10


@pytest.mark.parametrize("data, field, words", [
    ({"index": {"type": "hnsw", "params": {"M": 100000000}}}, "index.params", "M is 100000000, out of range: use 2 to 256"),
    ({"index": {"type": "hnsw", "params": {"efConstruction": 10**6}}}, "index.params", "efConstruction is 1000000, out of range: use 1 to 4096"),
    ({"index": {"type": "hnsw", "params": {"efSearch": 0}}}, "index.params", "efSearch is 0, out of range: use 1 to 4096"),
    ({"index": {"type": "ivf", "params": {"nlist": 10**7}}}, "index.params", "nlist is 10000000, out of range: use 1 to 65536"),
    ({"index": {"type": "ivf", "params": {"nprobe": -1}}}, "index.params", "nprobe is -1, out of range: use 1 to 65536"),
    ({"index": {"type": "hnsw", "tune": {"k": 0}}}, "index.tune.k", "greater than or equal to 1"),
    ({"index": {"type": "hnsw", "tune": {"queries": 10**9}}}, "index.tune.queries", "less than or equal to 100000"),
    ({"index": {"type": "hnsw", "tune": {"target": 1.5}}}, "index.tune.target", "less than or equal to 1"),
    ({"chunker": {"chunk_size": 10**9}}, "chunker.chunk_size", "less than or equal to 8192"),
    ({"embedder": {"batch_size": 10**9}}, "embedder.batch_size", "less than or equal to 4096"),
    ({"embedder": {"max_seq_length": 0}}, "embedder.max_seq_length", "greater than or equal to 1"),
])
def test_numbers_have_ranges_named_in_the_error(data, field, words):
    with pytest.raises(SpecError) as exc:
        parse_spec({"sources": ["a"], **data}, file="rag/x.yaml")
    assert exc.value.field == field and words in str(exc.value)


def test_errors_in_a_file_name_the_line_and_suggest_the_key(tmp_path):
    p = tmp_path / "kb.yaml"
    p.write_text("sources: [docs/*.md]\nindex:\n  type: hnsw\n  params: {M: 100000000}\n")
    with pytest.raises(SpecError, match=r"kb.yaml:4: index.params: M is 100000000, out of range"):
        load_spec(p)
    p.write_text("sources: [docs/*.md]\nchunker:\n  chunk_sise: 100\n")
    with pytest.raises(SpecError, match=r"kb.yaml:3: chunker.chunk_sise: unknown key \(did you mean 'chunk_size'\?\)"):
        load_spec(p)


def test_defaults_fit_the_default_embedder():
    # all-MiniLM-L6-v2 reads 256 tokens, 2 of them special: the default chunk must fit in 254
    spec = parse_spec({"sources": ["a"]})
    assert spec.embedder.model == "default" and spec.chunker.chunk_size <= 254
