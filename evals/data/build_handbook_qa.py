"""Build the handbook QA dataset's train and test JSONL files from the hand-written `handbook_qa.src.txt`.

The source file holds every question once, grouped under the passage it is about; this script finds each
passage verbatim in its corpus file (whitespace in the source matches any run of whitespace in the corpus,
so a passage can be written on one line), names the section it lies in from the headings, and assigns
whole sections to the held-out test split by the fixed list `TEST_SECTIONS`. Nothing is random: the same
source gives the same files, byte for byte.

    .venv/bin/python evals/data/build_handbook_qa.py            # rewrite the two JSONL files
    .venv/bin/python evals/data/build_handbook_qa.py --check    # exit 1 if they are out of date

Source format, one item per line (blank lines and lines starting with `#` are ignored):

    @ retrieval.md           the corpus file (in rag/handbook/) of the passages that follow
    P <passage>              a span of that file; the questions below are about it
    Q <question>
    A <reference answer>     follows its question
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from llmops.errors import SpecError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS = ROOT / "rag" / "handbook"
SOURCE = HERE / "handbook_qa.src.txt"
OUTPUTS = {"train": HERE / "handbook_qa.train.jsonl", "test": HERE / "handbook_qa.test.jsonl"}

# Whole sections held out: their passages are covered by no training question.
TEST_SECTIONS = frozenset({
    "llmops — architecture > Embedded defaults (work offline, on a laptop CPU)",
    "llmops — architecture > Rules of the house",
    "Retrieval indexes in llmops > The ingestion spec > Bad input",
    "Retrieval indexes in llmops > Crash safety",
    "Retrieval indexes in llmops > Evaluating",
    "How llmops code should read > What each model does well > encode/httpx",
    "How llmops code should read > What to avoid",
    "llmops glossary > Manifest",
    "llmops glossary > Recall@k",
})

log = logging.getLogger("build_handbook_qa")


@dataclass(frozen=True)
class Section:
    path: tuple[str, ...]
    start: int
    end: int

    @property
    def name(self) -> str:
        return " > ".join(self.path)


def corpus_text(name: str) -> str:
    """The text a passage is matched against: the raw file for Markdown, llmops's loader text for HTML."""
    path = CORPUS / name
    if path.suffix == ".html":
        from llmops.rag.loaders import load_file
        from llmops.rag.spec import SourceSpec

        (doc,) = load_file(path, SourceSpec(glob=name))
        return doc.text
    return path.read_text(encoding="utf-8")


def _headings(name: str, text: str) -> list[tuple[int, tuple[str, ...]]]:
    """(offset, heading path) of every heading, in order.

    Markdown: `#` headings outside code fences, and a line opening with `**name**` as a heading one
    level below the current one (how style.md names its model codebases). HTML: the `<h1>` and each
    glossary term `<dt>` under it, found as whole lines of the loader text.
    """
    found: list[tuple[int, tuple[str, ...]]] = []
    if name.endswith(".html"):
        from bs4 import BeautifulSoup

        soup = BeautifulSoup((CORPUS / name).read_text(encoding="utf-8"), "html.parser")
        title = soup.h1.get_text(strip=True)
        pos = 0
        for tag in [soup.h1, *soup.find_all("dt")]:
            term = tag.get_text(strip=True)
            match = re.compile(rf"^{re.escape(term)}$", re.M).search(text, pos)
            if match is None:
                raise SpecError(f"heading {term!r} is not a line of the loader text", file=name)
            found.append((match.start(), (title,) if tag.name == "h1" else (title, term)))
            pos = match.end()
        return found
    path: list[str] = []
    fenced, offset = False, 0
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#{1,6})\s+(.+?)\s*$", line)):
            path = path[: len(m.group(1)) - 1] + [m.group(2)]
            found.append((offset, tuple(path)))
        elif not fenced and (m := re.match(r"\*\*(.+?)\*\*", line)):
            found.append((offset, (*path, m.group(1))))
        offset += len(line)
    return found


def sections(name: str, text: str) -> list[Section]:
    """Each heading's region: from its heading to the next heading of any level."""
    heads = _headings(name, text)
    ends = [start for start, _ in heads[1:]] + [len(text)]
    return [Section(path, start, end) for (start, path), end in zip(heads, ends)]


def locate(passage: str, text: str) -> tuple[int, int]:
    """The one (start, end) span of `text` that `passage` matches, whitespace runs matching any whitespace."""
    pattern = r"\s+".join(re.escape(word) for word in passage.split())
    spans = [m.span() for m in re.finditer(pattern, text)]
    if len(spans) != 1:
        raise ValueError(f"passage found {len(spans)} times (must be exactly once)")
    return spans[0]


def build(source: Path = SOURCE) -> dict[str, list[dict]]:
    """Rows for each split, in source order, ids numbered across both splits."""
    texts: dict[str, str] = {}
    secs: dict[str, list[Section]] = {}
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    seen: set[str] = set()
    file = passage = question = None
    span: tuple[int, int] | None = None
    section: Section | None = None
    count = 0
    for lineno, raw in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tag, _, body = line.partition(" ")
        body = body.strip()
        at = {"file": source.name, "line": lineno}
        if tag == "@":
            file = body
            if file not in texts:
                texts[file] = corpus_text(file)
                secs[file] = sections(file, texts[file])
            passage = None
        elif tag == "P":
            if file is None:
                raise SpecError("passage before any `@ file` line", **at, fix="name its corpus file first")
            try:
                span = locate(body, texts[file])
            except ValueError as exc:
                raise SpecError(f"{exc} in {file}", **at, fix="copy the passage from the file") from None
            inside = [s for s in secs[file] if s.start <= span[0] < s.end]
            if not inside or span[1] > inside[0].end:
                raise SpecError(f"passage crosses a heading in {file}", **at, fix="cut it at the heading")
            section, passage, question = inside[0], texts[file][span[0]:span[1]], None
        elif tag == "Q":
            if passage is None or question is not None:
                raise SpecError("a question must follow a passage or an answer", **at)
            if body in seen:
                raise SpecError(f"duplicate question {body!r}", **at, fix="ask it once")
            seen.add(body)
            question = body
        elif tag == "A":
            if question is None or not body:
                raise SpecError("an answer must follow its question and not be empty", **at)
            count += 1
            split = "test" if section.name in TEST_SECTIONS else "train"
            rows[split].append({"id": f"hb-{count:04d}", "question": question, "answer": body,
                                "passage": passage, "source": file, "section": section.name,
                                "passage_start": span[0], "passage_end": span[1], "split": split})
            question = None
        else:
            raise SpecError(f"unknown line tag {tag!r}", **at, fix="start the line with @, P, Q or A")
    if question is not None:
        raise SpecError("the last question has no answer", file=source.name, fix="add an `A` line")
    names = {s.name for ss in secs.values() for s in ss}
    if missing := sorted(TEST_SECTIONS - names):
        raise SpecError(f"TEST_SECTIONS names sections not in the corpus: {missing}", file=Path(__file__).name)
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = build()
    stale = [path for split, path in OUTPUTS.items()
             if not path.exists() or path.read_text(encoding="utf-8") != render(rows[split])]
    if "--check" in argv:
        for path in stale:
            log.error("%s is out of date: re-run evals/data/build_handbook_qa.py", path.relative_to(ROOT))
        return 1 if stale else 0
    from llmops.atomic import atomic_write

    for split, path in OUTPUTS.items():
        atomic_write(path, render(rows[split]))
        log.info("%s: %d questions", path.relative_to(ROOT), len(rows[split]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
