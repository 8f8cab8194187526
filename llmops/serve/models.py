"""Model names as clients send them, resolved to versions: what `/v1/models` lists and `model` may name.

    smollm2                      a base model: the model asset of that name (the embedded SmolLM2 is
                                 registered on first use, as a chain's generate step does)
    smollm2:handbook-qa          that base with an adapter: `production`, else the latest version
    smollm2:handbook-qa@3        ... a version, or an alias (`@staging`)
    chain/rag-qa[@ref]           a chain version (latest by default); its input is the last user message

Every request resolves its name again, so an alias moved while the server runs takes effect on the next
request; the versions resolved are what the request's run records as used.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.errors import AliasNotFound, AssetNotFound, BackendError, InvalidAlias, InvalidRef
from llmops.serve.errors import APIError

if TYPE_CHECKING:
    from llmops.store.registry import AssetVersion

__all__ = ["Target", "list_models", "resolve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What a `model` name resolved to: a base model (and adapter), or a chain version."""

    name: str
    model: AssetVersion | None = None
    adapter: AssetVersion | None = None
    adapter_folder: Path | None = None
    chain: AssetVersion | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def is_chain(self) -> bool:
        return self.chain is not None

    @property
    def used(self) -> list[str]:
        return [av.ref for av in (self.model, self.adapter, self.chain) if av is not None]

    @property
    def upstream_name(self) -> str:
        """The pinned name an upstream server (another llmops, or vLLM with the adapters registered) serves."""
        assert self.model is not None
        if self.adapter is None:
            return self.model.name
        return f"{self.model.name}:{self.adapter.name}@{self.adapter.version}"


def _embedded_installed() -> bool:
    from llmops.models.sources import SMOLLM2_PACKAGE

    return importlib.util.find_spec(SMOLLM2_PACKAGE) is not None


def _not_found(message: str, ws: Any) -> APIError:
    names = ", ".join(card["id"] for card in list_models(ws)[:20]) or "none"
    return APIError(404, f"{message}; served models: {names}", param="model", code="model_not_found")


def resolve_model(ws: Any, name: str) -> AssetVersion:
    """A base model asset by name (or `name@ref`); the embedded SmolLM2 is registered on first use."""
    from llmops.models import model_spec
    from llmops.models.sources import SMOLLM2_ALIASES
    from llmops.store.refs import parse_ref

    if not name or "/" in name:
        raise _not_found(f"no base model {name!r}", ws)
    try:
        return ws.registry.get(str(parse_ref(name, default_kind="model", kinds=("model",))), record=False)
    except (InvalidRef, InvalidAlias) as exc:
        raise APIError(400, f"{name!r} is not a model name: {exc}", param="model", code="invalid_model") from None
    except (AssetNotFound, AliasNotFound):
        if name.lower() not in SMOLLM2_ALIASES or not _embedded_installed():
            raise _not_found(f"no model {name!r}", ws) from None
    return ws.registry.push("model", name, spec=model_spec(name), message="registered on first use (serve)")


def resolve_adapter(ws: Any, ref: str, model_av: AssetVersion) -> tuple[AssetVersion, Path]:
    """An adapter version for a base (llmops.finetune.adapters' rule: a bare name is `production`, else
    latest), as an API error: 400 for a bad name or an adapter of another base, 404 for none."""
    from llmops.finetune.adapters import resolve_adapter as resolve_for_base

    try:
        return resolve_for_base(ws, ref, model_av)
    except (InvalidRef, InvalidAlias) as exc:
        raise APIError(400, f"{ref!r} is not an adapter name: {exc}", param="model", code="invalid_model") from None
    except (AssetNotFound, AliasNotFound) as exc:
        raise _not_found(f"no adapter {ref!r} ({exc})", ws) from None
    except BackendError as exc:  # an adapter trained on another base model
        raise APIError(400, str(exc), param="model", code="adapter_base_mismatch") from None


def resolve(ws: Any, name: str, loras: Any = None) -> Target:
    """Resolve a request's `model` (see the module docstring); unknown names are a 404 listing what exists.

    `loras` (the app's `LoraRegistry`) holds adapter folders loaded at run time by name, as vLLM's
    `/v1/load_lora_adapter` does; such a name is served on the base model it was made from.
    """
    from llmops.store.refs import parse_ref

    if not isinstance(name, str) or not name.strip():
        raise APIError(400, "`model` is empty; name one from /v1/models", param="model", code="invalid_model")
    if loras is not None and name in loras:
        return _loaded_lora(ws, name, loras[name])
    if name.startswith("chain/"):
        try:
            av = ws.registry.get(str(parse_ref(name, kinds=("chain",))), record=False)
        except (InvalidRef, InvalidAlias) as exc:
            raise APIError(400, f"{name!r} is not a chain name: {exc}", param="model", code="invalid_model") from None
        except (AssetNotFound, AliasNotFound) as exc:
            raise _not_found(f"no chain {name!r} ({exc})", ws) from None
        return Target(name=name, chain=av, labels={"model": "", "adapter": "", "chain": av.name})
    base, _, adapter = name.partition(":")
    model_av = resolve_model(ws, base)
    if not adapter:
        return Target(name=name, model=model_av, labels={"model": model_av.name, "adapter": "", "chain": ""})
    adapter_av, folder = resolve_adapter(ws, adapter, model_av)
    return Target(name=name, model=model_av, adapter=adapter_av, adapter_folder=folder,
                  labels={"model": model_av.name, "adapter": adapter_av.name, "chain": ""})


def _loaded_lora(ws: Any, name: str, lora: Any) -> Target:
    """A runtime-loaded adapter: its base is the model asset whose files it names (`base_model_name_or_path`),
    or the only model asset there is."""
    from llmops.models.sources import resolve_source

    models = ws.registry.list("model")
    base = None
    if lora.base_model:
        for av in models:
            try:
                if resolve_source(av.spec.get("source", "")).folder == resolve_source(lora.base_model).folder:
                    base = av
            except Exception:  # a base path that does not exist here: fall back below
                pass
    if base is None and len(models) == 1:
        base = models[0]
    if base is None:
        raise APIError(400, f"adapter {name!r} was loaded from {lora.path}, whose base model "
                            f"({lora.base_model or 'not recorded'}) is not one this server serves",
                       param="model", code="adapter_base_mismatch")
    return Target(name=name, model=base, adapter_folder=Path(lora.path),
                  labels={"model": base.name, "adapter": name, "chain": ""})


def adapter_base(av: AssetVersion) -> str | None:
    """The name of the base model an adapter was trained on, when its spec records it."""
    from llmops.store.refs import parse_ref

    spec = av.spec or {}
    for key in ("base_model", "base", "model"):
        value = spec.get(key)
        if isinstance(value, dict):
            value = value.get("ref") or value.get("name")
        if isinstance(value, str) and value:
            try:
                return parse_ref(value, default_kind="model").name
            except InvalidRef:
                return value
    return None


def list_models(ws: Any, loras: Any = None) -> list[dict[str, Any]]:
    """`/v1/models` entries: base models, `BASE:ADAPTER` for each adapter of that base, `chain/NAME`, and
    the adapters loaded at run time by name.

    An adapter whose spec records no base model is listed under every base.
    """
    from llmops.models.sources import DEFAULT_MODEL

    models = ws.registry.list("model")
    cards: list[dict[str, Any]] = []
    bases = {av.name for av in models}
    for av in models:
        cards.append({"id": av.name, "created": int(av.created_at.timestamp()), "root": av.ref})
    if DEFAULT_MODEL not in bases and _embedded_installed():
        cards.append({"id": DEFAULT_MODEL, "created": 0, "root": None})
        bases.add(DEFAULT_MODEL)
    for av in ws.registry.list("adapter"):
        base = adapter_base(av)
        for b in sorted(bases) if base is None else ([base] if base in bases else []):
            cards.append({"id": f"{b}:{av.name}", "created": int(av.created_at.timestamp()), "root": av.ref,
                          "parent": b})
    for av in ws.registry.list("chain"):
        cards.append({"id": f"chain/{av.name}", "created": int(av.created_at.timestamp()), "root": av.ref})
    for lora in (loras.values() if loras is not None else []):
        cards.append({"id": lora.name, "created": int(lora.loaded_at), "root": lora.path, "parent": lora.base_model})
    return cards
