"""The handbook QA dataset (evals/data/): well-formed rows, passages that really are in the corpus, and a
held-out split that shares no section and no passage text with the training split.

Passages are matched against the raw file for Markdown and against the text llmops's own loader
extracts for HTML (`llmops.rag.loaders.load_file`), which is what the index holds.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from llmops.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "evals" / "data"
CORPUS = ROOT / "rag" / "handbook"
SPLITS = ("train", "test")
FIELDS = {"id", "question", "answer", "passage", "source", "section", "passage_start", "passage_end", "split"}


def _load(split: str) -> list[dict]:
    lines = (DATA / f"handbook_qa.{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


ROWS = {split: _load(split) for split in SPLITS}
ALL = ROWS["train"] + ROWS["test"]


@functools.cache
def _builder():
    """evals/data/build_handbook_qa.py, loaded by path (the workspace's evals/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_handbook_qa", DATA / "build_handbook_qa.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


TEXTS = {name: _builder().corpus_text(name) for name in sorted({row["source"] for row in ALL})}


def _headings(name: str) -> list[tuple[int, str]]:
    """(offset, title) of every heading: Markdown `#` lines and `**bold**` lead-ins outside code fences;
    for the HTML glossary, the lines of the loader text that are its <h1> or a <dt> term."""
    text = TEXTS[name]
    if name.endswith(".html"):
        from bs4 import BeautifulSoup

        soup = BeautifulSoup((CORPUS / name).read_text(encoding="utf-8"), "html.parser")
        titles = {tag.get_text(strip=True) for tag in soup.find_all(["h1", "dt"])}
        return [(m.start(), m.group(0)) for m in re.finditer(r"^.+$", text, re.M) if m.group(0) in titles]
    found, fenced, offset = [], False, 0
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#+\s+(.+?)\s*$|\*\*(.+?)\*\*", line)):
            found.append((offset, m.group(1) or m.group(2)))
        offset += len(line)
    return found


def test_every_row_has_the_fields_with_the_right_types():
    for split, rows in ROWS.items():
        for row in rows:
            assert set(row) == FIELDS, row["id"]
            assert row["split"] == split, row["id"]
            assert re.fullmatch(r"hb-\d{4}", row["id"]), row["id"]
            for key in ("question", "answer", "passage", "source", "section"):
                assert isinstance(row[key], str) and row[key].strip() == row[key] and row[key], (row["id"], key)
            assert isinstance(row["passage_start"], int) and isinstance(row["passage_end"], int), row["id"]


def test_ids_and_questions_are_unique_across_both_splits():
    ids = [row["id"] for row in ALL]
    assert len(ids) == len(set(ids))
    questions = Counter(row["question"].casefold() for row in ALL)
    assert [q for q, n in questions.items() if n > 1] == []


def test_every_passage_occurs_verbatim_in_its_source_at_its_offsets():
    for row in ALL:
        text = TEXTS[row["source"]]
        assert text[row["passage_start"]:row["passage_end"]] == row["passage"], row["id"]
        assert text.count(row["passage"]) == 1, row["id"]  # unique, so a test can find it by text alone


def test_the_section_is_the_heading_path_the_passage_sits_under():
    for row in ALL:
        heads = _headings(row["source"])
        path = row["section"].split(" > ")
        before = [title for offset, title in heads if offset <= row["passage_start"]]
        assert before and before[-1] == path[-1], (row["id"], row["section"])
        assert path[0] == heads[0][1], (row["id"], row["section"])  # rooted at the document's title
        inside = [title for offset, title in heads if row["passage_start"] < offset < row["passage_end"]]
        assert inside == [], (row["id"], inside)


def test_no_test_section_appears_in_train():
    train = {(row["source"], row["section"]) for row in ROWS["train"]}
    test = {(row["source"], row["section"]) for row in ROWS["test"]}
    assert train & test == set()
    assert len(test) >= 6  # held-out questions come from several sections, not one


def test_no_test_passage_overlaps_a_train_passage():
    for name in TEXTS:
        train = {(r["passage_start"], r["passage_end"]) for r in ROWS["train"] if r["source"] == name}
        test = {(r["passage_start"], r["passage_end"]) for r in ROWS["test"] if r["source"] == name}
        clashes = [(a, b) for a in test for b in train if a[0] < b[1] and b[0] < a[1]]
        assert clashes == [], (name, clashes[:3])


def test_sizes_are_within_the_stated_ranges():
    assert 240 <= len(ALL) <= 320
    assert 0.20 <= len(ROWS["test"]) / len(ALL) <= 0.30
    for split in SPLITS:  # every Markdown page is in both splits
        sources = Counter(row["source"] for row in ROWS[split])
        assert {"architecture.md", "retrieval.md", "style.md"} <= set(sources), (split, sources)
    per_source = Counter(row["source"] for row in ALL)
    assert set(per_source) == {"architecture.md", "retrieval.md", "style.md", "glossary.html"}


def test_answers_are_short_and_questions_are_questions_not_copies():
    for row in ALL:
        assert 0 < len(row["answer"]) <= 300, row["id"]
        assert row["question"].endswith(("?", ".")), row["id"]  # a question, or "Give an example of ..."
        assert row["question"].rstrip("?") not in row["passage"], row["id"]
        assert row["answer"] != row["passage"], row["id"]


def test_the_files_are_what_the_build_script_makes_from_the_source():
    builder = _builder()
    rows = builder.build()
    for split in SPLITS:
        assert (DATA / f"handbook_qa.{split}.jsonl").read_text(encoding="utf-8") == builder.render(rows[split])


@pytest.mark.parametrize("source, message", [
    ("@ style.md\nP This sentence is not in the handbook.\nQ Why?\nA No.\n", "found 0 times"),
    ("@ style.md\nP One module per concept\nQ How many?\nA One.\n", "found 2 times"),
    ("@ retrieval.md\nP Chunk sizes are counted in tokens\nQ What unit?\nQ Again?\nA Tokens.\n",
     "a question must follow a passage or an answer"),
    ("@ style.md\nP **encode/httpx** (an HTTP client)\nQ What is it?\n", "the last question has no answer"),
])
def test_a_bad_source_line_is_an_error_naming_the_line(tmp_path, source, message):
    src = tmp_path / "qa.src.txt"
    src.write_text(source, encoding="utf-8")
    with pytest.raises(SpecError, match=re.escape(message)) as info:
        _builder().build(src)
    assert "qa.src.txt" in str(info.value)


def test_a_passage_across_a_heading_is_refused(tmp_path):
    src = tmp_path / "qa.src.txt"
    src.write_text("@ style.md\nP Read the originals when in doubt. ## What each model does well\n"
                   "Q Which sections?\nA Two.\n", encoding="utf-8")
    with pytest.raises(SpecError, match="crosses a heading") as info:
        _builder().build(src)
    assert "qa.src.txt:2" in str(info.value)
