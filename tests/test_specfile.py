"""The one YAML loader of every spec file: line numbers for errors, and bounded cost on hostile input."""

import pytest

from llmops.errors import SpecError
from llmops.specfile import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_yaml, load_yaml_file

# 9 levels of 9 aliases each: 400 bytes that expand to 9**9 (387 million) strings
BOMB = "a: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, n in zip("abcdefgh", "bcdefghi"))


def test_alias_bomb_is_refused_before_it_expands():
    with pytest.raises(SpecError, match=rf"bomb.yaml:1: YAML expands to more than {MAX_NODES:,} values"):
        load_yaml(BOMB, "bomb.yaml")


def test_a_few_aliases_are_still_fine():
    data, where = load_yaml("name: qa\nbase: &m {temperature: 0.2}\nmodel: *m\n", "ok.yaml")
    assert data["model"] == {"temperature": 0.2} and where.line(("model",)) == 3


def test_self_referencing_alias_is_refused():
    with pytest.raises(SpecError, match="nested more than"):
        load_yaml("a: &a [*a]\n", "loop.yaml")


@pytest.mark.parametrize("text", ["a: " + "[" * 5000 + "]" * 5000, "a: " + "{b: " * (MAX_DEPTH + 2) + "1" + "}" * (MAX_DEPTH + 2)])
def test_deep_nesting_is_refused(text):
    with pytest.raises(SpecError, match="nested"):
        load_yaml(text, "deep.yaml")


def test_oversized_document_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("text: '" + "x" * MAX_BYTES + "'\n")
    with pytest.raises(SpecError, match=r"big.yaml: file is .* characters; spec files are limited .*JSONL"):
        load_yaml_file(path)


def test_duplicate_keys_and_non_mappings_name_the_line():
    with pytest.raises(SpecError, match=r"dup.yaml:3: a: duplicate key 'a' \(first on line 1\)"):
        load_yaml("a: 1\nb: 2\na: 3\n", "dup.yaml")
    with pytest.raises(SpecError, match="list.yaml:1: expected a mapping"):
        load_yaml("- 1\n- 2\n", "list.yaml")
