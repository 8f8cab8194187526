"""LoRA adapters as versions: what an `adapter/<name>` spec records, pushing one, laying one out for
PEFT, and refusing to load one onto a base model it was not trained on.

PEFT keeps only the base model's *name* in `adapter_config.json`, so an adapter trained on one
checkpoint loads silently onto another of the same name and shape, and answers worse. The adapter's
spec therefore records the base model's fingerprint (sha256 of its files, `llmops.models.fingerprint`),
and every loader (chains, the eval harness, the server) calls `check_adapter_base` first:

    av, folder = resolve_adapter(ws, "handbook-qa", model_av)    # @production, else the latest
    backend = load_backend(model_av.spec, adapter_path=folder)

Adapters pushed before fingerprints were recorded load with a logged warning.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Iterable

from llmops.errors import AliasNotFound, BackendError

__all__ = ["ADAPTER_FILES", "adapter_folder", "adapter_spec", "base_fingerprint", "check_adapter_base",
           "push_adapter", "resolve_adapter"]

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
DEFAULT_ALIAS = "production"


def _version(av: Any) -> dict[str, str] | None:
    return None if av is None else {"ref": av.ref, "digest": av.digest}


def adapter_spec(*, base_av: Any, dataset_av: Any, job_digest: str, lora: dict, files: Iterable[str] = ADAPTER_FILES,
                 validation_av: Any = None, uses: Iterable[Any] = ()) -> dict[str, Any]:
    """The spec of an adapter version: the base model (ref and fingerprint), the dataset version(s),
    the job spec's digest, the versions that rendered the data (prompt, index) and the LoRA settings."""
    base = {"ref": base_av.ref, "fingerprint": (base_av.spec or {}).get("fingerprint"),
            "source": (base_av.spec or {}).get("source")}
    spec = {"format": "peft-lora", "base": base, "dataset": _version(dataset_av), "job": {"digest": job_digest},
            "lora": dict(lora), "files": sorted(files), "inputs": [_version(v) for v in uses]}
    if validation_av is not None:
        spec["validation"] = _version(validation_av)
    return spec


def base_fingerprint(av: Any) -> str | None:
    """The base model fingerprint an adapter version records (None for adapters pushed without one)."""
    base = av.spec.get("base") if isinstance(av.spec, dict) else None
    fp = base.get("fingerprint") if isinstance(base, dict) else None
    return fp if isinstance(fp, str) and fp else None


def push_adapter(ws: Any, name: str, folder: str | Path, *, base_av: Any, dataset_av: Any, job: Any, run: Any = None,
                 validation_av: Any = None, uses: Iterable[Any] = (), meta: dict | None = None,
                 message: str | None = None) -> Any:
    """Push a PEFT adapter folder (adapter_model.safetensors + adapter_config.json) as `adapter/<name>`.

    `job` is the loaded Job (its digest and LoRA settings go into the spec); `meta` holds training
    figures (kept, not digested). The run, when given, records the inputs as used and the adapter as
    produced. Refuses a name whose earlier versions were trained on another base model.
    """
    folder = Path(folder)
    missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
    if missing:
        raise BackendError(f"{folder} is not a saved PEFT adapter: no {', '.join(missing)} "
                           "(save it with peft_model.save_pretrained(folder))")
    fp = (base_av.spec or {}).get("fingerprint")
    for other in _versions(ws, name):
        theirs = base_fingerprint(other)
        if theirs is not None and fp is not None and theirs != fp:
            raise BackendError(f"adapter/{name} already holds {other.ref}, trained on another base model "
                               f"(fingerprint {theirs[:12]}, not {base_av.ref}'s {fp[:12]}); "
                               "give this job another `output:` name")
    uses = list(uses)
    lora = {"peft_type": "LORA", "task_type": "CAUSAL_LM", **job.spec.lora.model_dump(mode="json")}
    spec = adapter_spec(base_av=base_av, dataset_av=dataset_av, job_digest=job.digest, lora=lora,
                        validation_av=validation_av, uses=uses)
    av = ws.registry.push("adapter", name, spec, files={f: folder / f for f in ADAPTER_FILES},
                          message=message or f"fine-tuned by {job.path.name}", meta=meta)
    if run is not None:
        for used in [base_av, dataset_av, validation_av, *uses]:
            if used is not None:
                run.record_used(used)
        run.record_produced(av)
    return av


def _versions(ws: Any, name: str) -> list[Any]:
    from llmops.errors import AssetNotFound

    try:
        return ws.registry.versions(f"adapter/{name}")
    except AssetNotFound:
        return []


def adapter_folder(ws: Any, av: Any) -> Path:
    """The adapter's files laid out as a PEFT folder, once per digest (written atomically)."""
    from llmops.atomic import atomic_dir

    target = ws.home / "cache" / "adapters" / av.digest
    if not target.exists():
        with atomic_dir(target) as tmp:
            for name in av.files:
                dest = tmp / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ws.registry.file_path(av, name), dest)
    return target


def check_adapter_base(adapter_av: Any, model_av: Any) -> None:
    """Raise BackendError when the adapter was trained on another base model than `model_av`.

    An adapter without a recorded fingerprint (pushed before they were recorded), or a model asset
    without one, cannot be checked: it loads, with a warning.
    """
    theirs = base_fingerprint(adapter_av)
    ours = (model_av.spec or {}).get("fingerprint") if isinstance(model_av.spec, dict) else None
    if theirs is None:
        log.warning("%s records no base model fingerprint; loading it onto %s unchecked (push it again "
                    "from a fine-tuning job to record one)", adapter_av.ref, model_av.ref)
        return
    if ours is None:
        log.warning("%s has no fingerprint; cannot check that %s was trained on it", model_av.ref, adapter_av.ref)
        return
    if theirs != ours:
        trained_on = (adapter_av.spec.get("base") or {}).get("ref", "another model")
        raise BackendError(
            f"{adapter_av.ref} was trained on {trained_on} (fingerprint {theirs[:12]}), not on {model_av.ref} "
            f"(fingerprint {ours[:12]}); load it onto the base it was trained on, or train an adapter for "
            f"{model_av.ref}")


def resolve_adapter(ws: Any, ref: str, model_av: Any) -> tuple[Any, Path]:
    """An adapter version for `model_av` and its PEFT folder.

    A bare name means `@production` when that alias exists, else the latest version. Raises
    BackendError when the adapter was trained on another base (`check_adapter_base`).
    """
    from llmops.store.refs import parse_ref

    r = parse_ref(ref, default_kind="adapter", kinds=("adapter",))
    av = None
    if r.selector is None:
        try:
            av = ws.registry.get(str(r.at(DEFAULT_ALIAS)))
        except AliasNotFound:
            av = None
    if av is None:
        av = ws.registry.get(str(r))
    check_adapter_base(av, model_av)
    return av, adapter_folder(ws, av)
