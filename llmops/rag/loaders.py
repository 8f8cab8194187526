"""Turn source files into documents: Markdown, text, HTML (BeautifulSoup), PDF (pypdf) and JSONL.

Every problem with a file is a `SourceProblem` naming the file and saying what is wrong with it, so the
ingestion can list every bad file at once and either stop or skip them, as the spec says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.rag.spec import EXTENSIONS, SourceSpec

_SNIFF = 8192


@dataclass(frozen=True)
class Document:
    """One unit of text from a source file: a whole text/Markdown/HTML file, a PDF page or a JSONL line."""

    doc_id: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = "text"


class SourceProblem(Exception):
    """A file that cannot be ingested; `str()` is the reason, `file` the file's display path."""

    def __init__(self, file: str, reason: str):
        self.file, self.reason = file, reason
        super().__init__(reason)


def detect_format(path: Path, spec: SourceSpec) -> str:
    if spec.format:
        return spec.format
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise SourceProblem(str(path), f"unsupported file type {path.suffix or '(no extension)'!r}: "
                            "use .md .txt .html .pdf .jsonl, or set `format:` on the source")
    return fmt


def _read_text(path: Path, display: str, encoding: str) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise SourceProblem(display, "empty file")
    if b"\x00" in data[:_SNIFF] and not encoding.lower().replace("-", "").startswith("utf16"):
        raise SourceProblem(display, "binary file (contains NUL bytes), not text: remove it from the glob")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceProblem(display, f"encoding error: not valid {encoding} at byte {exc.start}; "
                            "convert the file or set `encoding:` on its source") from None
    except LookupError:
        raise SourceProblem(display, f"unknown encoding {encoding!r} in the source's `encoding:`") from None
    return text.removeprefix("\ufeff")


def _html_text(html: str) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else None
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    lines = [line.strip() for line in soup.get_text("\n").splitlines()]
    text, blank = [], False
    for line in lines:  # keep paragraph breaks, drop runs of blank lines
        if line:
            text.append(line)
            blank = False
        elif not blank and text:
            text.append("")
            blank = True
    return "\n".join(text).strip(), title


def _pdf_documents(path: Path, display: str) -> list[Document]:
    import logging

    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns on every odd object; we report per file instead
    if path.stat().st_size == 0:
        raise SourceProblem(display, "empty file")
    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            raise SourceProblem(display, "unreadable PDF: it is encrypted; decrypt it first")
        pages = [(i + 1, (page.extract_text() or "").strip()) for i, page in enumerate(reader.pages)]
    except SourceProblem:
        raise
    except Exception as exc:  # pypdf raises many types for damaged files
        raise SourceProblem(display, f"unreadable PDF ({type(exc).__name__}: {exc})") from None
    docs = [Document(f"{display}#page={n}", text, display, {"page": n}, "pdf") for n, text in pages if text]
    if not docs:
        raise SourceProblem(display, "PDF has no extractable text (a scan? run OCR on it first)")
    return docs


def _jsonl_documents(path: Path, display: str, spec: SourceSpec) -> list[Document]:
    text = _read_text(path, display, spec.encoding)
    docs: list[Document] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceProblem(display, f"line {lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise SourceProblem(display, f"line {lineno}: expected a JSON object")
        body = row.get(spec.text_field)
        if not isinstance(body, str):
            raise SourceProblem(display, f"line {lineno}: no string field {spec.text_field!r}; "
                                "set `text_field:` on the source")
        title = row.get(spec.title_field) if spec.title_field else None
        if spec.title_field and title is not None and not isinstance(title, str):
            raise SourceProblem(display, f"line {lineno}: field {spec.title_field!r} is not a string")
        full = ((title or "") + " " + body).strip() if spec.title_field else body.strip()
        if spec.id_field:
            if spec.id_field not in row:
                raise SourceProblem(display, f"line {lineno}: no field {spec.id_field!r}; set `id_field:` on the source")
            doc_id = str(row[spec.id_field])
        else:
            doc_id = f"{display}#L{lineno}"
        if doc_id in seen:
            raise SourceProblem(display, f"line {lineno}: duplicate id {doc_id!r}")
        seen.add(doc_id)
        if not full:
            continue
        meta: dict[str, Any] = {"line": lineno}
        if title:
            meta["title"] = title
        docs.append(Document(doc_id, full, display, meta, "jsonl"))
    if not docs:
        raise SourceProblem(display, "empty file (no JSONL line with text)")
    return docs


def load_file(path: Path, spec: SourceSpec, *, display: str | None = None) -> list[Document]:
    """Parse one file into documents, or raise SourceProblem saying why it cannot be used."""
    display = display or str(path)
    try:
        fmt = detect_format(path, spec)
    except SourceProblem as exc:
        raise SourceProblem(display, exc.reason) from None
    try:
        if fmt == "pdf":
            return _pdf_documents(path, display)
        if fmt == "jsonl":
            return _jsonl_documents(path, display, spec)
        text = _read_text(path, display, spec.encoding)
        meta: dict[str, Any] = {}
        if fmt == "html":
            text, title = _html_text(text)
            if title:
                meta["title"] = title
        text = text.strip()
        if not text:
            raise SourceProblem(display, "empty file (no text)")
        return [Document(display, text, display, meta, fmt)]
    except OSError as exc:
        raise SourceProblem(display, f"cannot read: {exc.strerror or exc}") from None
