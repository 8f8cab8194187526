"""Every error llmops raises on purpose, each with a message that says what to do next.

    LLMOpsError
    ├── ConfigError            bad workspace folder or store URL
    ├── NotFound
    │   ├── RunNotFound
    │   ├── AssetNotFound
    │   └── AliasNotFound
    ├── InvalidRef             a malformed `kind/name@ref`
    ├── InvalidAlias           an alias that is a number, `latest`, or badly spelt
    ├── FilterSyntaxError      a run-search filter that does not parse (points at the column)
    ├── ParamConflict          a param logged twice with different values
    ├── InvalidArtifactName    `..`, absolute paths or NUL in an artifact name
    ├── InvalidValue           a metric that is not a number, a param that cannot be stored
    ├── CorruptArtifact        a blob whose bytes no longer match their digest
    ├── SpecError              a user file (YAML/JSONL spec, data) that fails validation
    │   └── TemplateError      a prompt template that fails to render or is unsafe
    ├── BackendError           a generation or embedding backend that cannot serve a request
    │   └── EmbedderMismatch   querying an index with another embedder than the one it was built with
    └── IngestError            source files of a RAG ingestion that cannot be read (one line per file)

The CLI prints `str(error)` on one line and exits 2; nothing else should reach users as a traceback.
"""

from __future__ import annotations

__all__ = [
    "AliasNotFound",
    "AssetNotFound",
    "BackendError",
    "ConfigError",
    "CorruptArtifact",
    "EmbedderMismatch",
    "FilterSyntaxError",
    "IngestError",
    "InvalidAlias",
    "InvalidArtifactName",
    "InvalidRef",
    "InvalidValue",
    "LLMOpsError",
    "NotFound",
    "ParamConflict",
    "RunNotFound",
    "SpecError",
    "TemplateError",
]


class LLMOpsError(Exception):
    """Base of every error llmops raises deliberately."""


class ConfigError(LLMOpsError):
    pass


class NotFound(LLMOpsError, LookupError):
    pass


class RunNotFound(NotFound):
    pass


class AssetNotFound(NotFound):
    pass


class AliasNotFound(NotFound):
    pass


class InvalidRef(LLMOpsError, ValueError):
    pass


class InvalidAlias(LLMOpsError, ValueError):
    pass


class FilterSyntaxError(LLMOpsError, ValueError):
    """A filter string that does not parse; `column` is the 1-based position of the mistake."""

    def __init__(self, message: str, text: str, column: int):
        self.text = text
        self.column = column
        pointer = " " * (column - 1) + "^"
        super().__init__(f"{message} at column {column}:\n  {text}\n  {pointer}")


class ParamConflict(LLMOpsError, ValueError):
    pass


class InvalidArtifactName(LLMOpsError, ValueError):
    pass


class InvalidValue(LLMOpsError, ValueError):
    pass


class CorruptArtifact(LLMOpsError):
    pass


class SpecError(LLMOpsError, ValueError):
    """A user file that fails validation. Names the file, the field (and line if known) and the fix."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 line: int | None = None, fix: str | None = None):
        self.file, self.field, self.line, self.fix = file, field, line, fix
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        if field:
            where += f"{field}: "
        text = where + message
        if fix:
            text += f" ({fix})"
        super().__init__(text)


class TemplateError(SpecError):
    pass


class BackendError(LLMOpsError):
    pass


class EmbedderMismatch(BackendError):
    """Vectors from one embedder are meaningless in an index built with another, so searching is refused."""


class IngestError(LLMOpsError):
    """Source files that could not be ingested; `problems` is a list of (file, reason), one per file."""

    def __init__(self, problems: list[tuple[str, str]], *, spec_file: str | None = None, hint: str | None = None):
        self.problems = list(problems)
        self.spec_file = spec_file
        head = f"{len(self.problems)} source problem(s)" + (f" in {spec_file}" if spec_file else "") + "; nothing was published:"
        lines = [head] + [f"  {file}: {reason}" for file, reason in self.problems]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))
