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
