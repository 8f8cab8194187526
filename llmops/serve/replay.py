"""Re-run a served request through the exact versions its run recorded, and say whether the answer is the same.

    result = replay(ws, "chatcmpl-0193…")      # or the run id
    result.identical, result.old, result.new

A request is replayable when it was greedy (temperature 0) or sampled with a seed, and it finished.
A chat or completion request is generated again by the recorded model version (and adapter version)
with the recorded generation params; a chain request loads the recorded chain version and runs it
again on the recorded input, without opening a run, after checking that the chain still resolves
to the versions the request used (an alias that moved since makes it not replayable: loading the chain
now would use other versions). An LLMOpsError says why a request cannot be replayed (RunNotFound for
an unknown id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmops.errors import LLMOpsError
from llmops.serve.tracing import RUN_KIND

if TYPE_CHECKING:
    from llmops.workspace import Workspace

__all__ = ["ReplayResult", "replay"]


@dataclass
class ReplayResult:
    run_id: str
    route: str
    model: str | None
    versions: list[str]
    old: Any
    new: Any
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.old == self.new

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "route": self.route, "model": self.model, "versions": self.versions,
                "params": self.params, "old": self.old, "new": self.new, "identical": self.identical}


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return text


def _generation_params(params: dict[str, str]) -> dict[str, Any]:
    """The recorded generation params (stored as text) as GenerationParams keywords."""
    out: dict[str, Any] = {}
    try:
        if "temperature" in params:
            out["temperature"] = float(params["temperature"])
        if "top_p" in params:
            out["top_p"] = float(params["top_p"])
        if "max_tokens" in params:
            out["max_tokens"] = int(params["max_tokens"])
        if params.get("seed") not in (None, "None", "null"):
            out["seed"] = int(params["seed"])
    except ValueError as exc:
        raise LLMOpsError(f"a recorded generation param does not parse ({exc})") from None
    if "stop" in params:
        stop = _loads(params["stop"])
        out["stop"] = [stop] if isinstance(stop, str) else list(stop or [])
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _llm_request(route: str, body: Any, gen: dict[str, Any]) -> Any:
    from llmops.models import Request

    if not isinstance(body, dict):
        raise LLMOpsError("the recorded request body is missing or not a JSON object")
    if route == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise LLMOpsError("the recorded completion request holds no single text prompt")
        return Request.completion(prompt, **gen)
    messages = [{"role": m.get("role"), "content": _text(m.get("content"))}
                for m in body.get("messages") or [] if isinstance(m, dict)]
    return Request.chat(messages, **gen)


def _adapter_path(ws: "Workspace", av: Any) -> Any:
    from llmops.finetune.adapters import adapter_folder

    return adapter_folder(ws, av)


def _used(ws: "Workspace", run_id: str) -> list[str]:
    from sqlalchemy import select

    from llmops.store.engine import read
    from llmops.store.schema import EdgeRow

    with read(ws.engine) as conn:
        return [d for (d,) in conn.execute(select(EdgeRow.dst).where(
            EdgeRow.src == run_id, EdgeRow.relation == "used").order_by(EdgeRow.id))]


def replay(ws: "Workspace", some_id: str) -> ReplayResult:
    """Re-run the request a response id or run id names; LLMOpsError (RunNotFound for an unknown id) says why not."""
    run = ws.get_run(some_id)
    if run.kind != RUN_KIND:
        raise LLMOpsError(f"run {run.id} is a {run.kind!r} run, not a served request; replay re-runs requests "
                            "(their ids start with chatcmpl- or cmpl-, or show as kind 'request' in `llmops runs list`)")
    if run.status != "finished":
        raise LLMOpsError(f"request {run.id} did not finish ({run.status}: {run.error or 'no error recorded'}); "
                            "there is no answer to compare with")
    params = run.params
    gen = _generation_params(params)
    if gen.get("temperature", 0.0) > 0 and "seed" not in gen:
        raise LLMOpsError(f"request {run.id} sampled (temperature {gen['temperature']:g}) without a seed, so its "
                            "answer cannot be reproduced; send `seed` (or temperature 0) to make requests replayable")
    route = params.get("route", "")
    body = _loads(run.tags.get("request"))
    used = _used(ws, run.id)
    result = ReplayResult(run_id=run.id, route=route, model=params.get("model"), versions=used, old=None, new=None,
                          params=gen)
    if params.get("chain_ref"):
        _replay_chain(ws, run, params["chain_ref"], body, used, result)
    elif params.get("model_ref"):
        _replay_generation(ws, run, body, gen, result)
    else:
        raise LLMOpsError(f"request {run.id} records no model or chain version (it failed before resolving one)")
    return result


def _replay_generation(ws: "Workspace", run: Any, body: Any, gen: dict, result: ReplayResult) -> None:
    from llmops.models import load_backend

    if "response" not in run.tags:
        raise LLMOpsError(f"request {run.id} recorded no answer")
    model_av = ws.registry.get(run.params["model_ref"], record=False)
    adapter_path = None
    if run.params.get("adapter_ref"):
        adapter_path = _adapter_path(ws, ws.registry.get(run.params["adapter_ref"], record=False))
    request = _llm_request(result.route, body, gen)
    backend = load_backend(model_av.spec, adapter_path=adapter_path)
    try:
        result.new = backend.generate(request).text
    finally:
        backend.close()
    result.old = run.tags["response"]


def _replay_chain(ws: "Workspace", run: Any, chain_ref: str, body: Any, used: list[str], result: ReplayResult) -> None:
    chain = ws.chains.load(chain_ref)
    moved = sorted(set(chain.versions) - set(used))
    if moved:
        raise LLMOpsError(f"chain {chain_ref} now resolves to {', '.join(moved)}, which request {run.id} did not "
                            f"use (it used {', '.join(used)}): an alias moved since, so replaying would use other "
                            "versions")
    for name, bound in chain.pinned.bound.items():
        params = getattr(bound, "params", None)
        if hasattr(bound, "backend") and isinstance(params, dict) and params.get("temperature", 0) > 0 \
                and params.get("seed") is None:
            raise LLMOpsError(f"step {name!r} of {chain_ref} samples (temperature {params['temperature']:g}) "
                                "without a seed, so its answer cannot be reproduced")
    if result.route.startswith("chains."):
        inputs = body if isinstance(body, dict) else None
        if isinstance(inputs, dict) and "input" in inputs and len(inputs) == 1:
            inputs = inputs["input"]
    else:  # a chain served as a chat model: its one text input is the last user message
        messages = (body or {}).get("messages") or [] if isinstance(body, dict) else []
        users = [_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users and isinstance(body, dict) and isinstance(body.get("prompt"), str):
            users = [body["prompt"]]
        texts = [n for n, v in chain.pinned.spec.inputs.items() if v.type == "str"]
        if not users or len(texts) != 1:
            raise LLMOpsError(f"cannot tell which input of {chain_ref} request {run.id} filled")
        inputs = {texts[0]: users[-1]}
    if not isinstance(inputs, dict):
        raise LLMOpsError(f"request {run.id} recorded no chain input")
    execute = getattr(chain, "execute", None)
    if execute is not None:  # runs the chain without opening a run of its own
        gen = execute(inputs)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            output = stop.value[0]
    else:  # pragma: no cover - older runners
        output = chain.invoke_traced(inputs).output
    new = json.loads(json.dumps(output, ensure_ascii=False, default=str))
    if "output" in run.tags:
        result.old, result.new = _loads(run.tags["output"]), new
    else:
        result.old = run.tags.get("response")
        result.new = new if isinstance(new, str) else json.dumps(new, ensure_ascii=False, default=str)
