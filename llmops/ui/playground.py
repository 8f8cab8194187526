"""The playground (`/playground`): run a chain, or a prompt on a model (with an adapter), on inputs
typed in a form. Each run is recorded as a `request` run, like a served request (params naming the
versions, the request and response as tags, latency and token metrics, `used` edges), so it shows
under Requests and in lineage. Running needs the API key when the server has keys on.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from llmops.errors import LLMOpsError
from llmops.ui.app import UI, BadRequest

MAX_BACKENDS = 2  # loaded models kept between playground runs
ROUTE = "ui.playground"
CHUNK_FIELDS = ("index", "chunk_id", "score", "rank", "source")


def typed(name: str, var: Any, raw: str | None) -> Any:
    """A form field as the declared variable type; `...` when left empty for an optional variable."""
    kind = var.type
    if kind == "bool":
        return raw in ("on", "true", "1", "yes")
    if raw is None or (raw == "" and (not var.required or kind != "str")):
        if var.required:
            raise BadRequest(f"input {name!r} is required ({kind}): fill it in")
        return ...
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind in ("list", "dict"):
            value = json.loads(raw)
            if not isinstance(value, list if kind == "list" else dict):
                raise ValueError(f"not a JSON {'array' if kind == 'list' else 'object'}")
            return value
    except ValueError as exc:
        raise BadRequest(f"input {name!r} must be {kind}: {exc}") from None
    return raw


def read_inputs(variables: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name, var in variables.items():
        value = typed(name, var, form.get(f"in.{name}"))
        if value is not ...:
            out[name] = value
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def run_chain(ws: Any, ref: str, inputs: dict) -> str:
    """Invoke a chain inside a `request` run (the chain's own run is its child); returns the run id."""
    with ws.start_run("playground", kind="request") as run:
        run.set_tag("request", _dumps(inputs))
        t0 = time.perf_counter()
        result = ws.chains.invoke_traced(ref, inputs)
        total = (time.perf_counter() - t0) * 1000
        run.log_params({"route": ROUTE, "chain_ref": result.used[0]})
        for used in result.used:
            run.record_used(ws.registry.get(used, record=False))
        output = result.output if isinstance(result.output, str) else None
        run.set_tags({"output": _dumps(result.output), **({"response": output} if output is not None else {})})
        if result.retrieved:  # as the server records it: one row per chunk, without its text
            run.set_tag("retrieved", _dumps([{"step": step, **{k: doc.get(k) for k in CHUNK_FIELDS}}
                                             for step, docs in result.retrieved.items() for doc in docs]))
        run.log_metrics({f"latency_ms.step.{k}": v for k, v in result.steps.items()})
        run.log_metrics({"latency_ms.total": round(total, 3), "tokens.prompt": result.tokens.get("prompt", 0),
                         "tokens.completion": result.tokens.get("completion", 0)})
    return run.id


def run_prompt(ui: UI, prompt_ref: str, model_ref: str, adapter_ref: str, inputs: dict) -> str:
    """Render a prompt version and generate with a model (and adapter) inside a `request` run."""
    from llmops.chains.steps import _model
    from llmops.models import Request as GenRequest
    from llmops.models import load_backend

    ws = ui.ws
    with ws.start_run("playground", kind="request") as run:
        run.set_tag("request", _dumps(inputs))
        t0 = time.perf_counter()
        prompt = ws.prompts.get(prompt_ref)
        model_av = _model(ws, model_ref)
        run.record_used(model_av)
        adapter_av, adapter_path = None, None
        if adapter_ref:
            adapter_av = ws.registry.get(adapter_ref, kind="adapter")
            adapter_path = _adapter_folder(ws, adapter_av, model_av)
        run.log_params({"route": ROUTE, "model": model_ref, "prompt_ref": prompt.asset.ref, "model_ref": model_av.ref,
                        **({"adapter_ref": adapter_av.ref} if adapter_av else {})})
        key = (model_av.digest, adapter_av.digest if adapter_av else None)
        with ui.backends_lock:  # two runs at once load a model once
            backend = ui.backends.get(key)
            if backend is None:
                backend = load_backend(model_av.spec, adapter_path=adapter_path)
                while len(ui.backends) >= MAX_BACKENDS:
                    ui.backends.pop(next(iter(ui.backends))).close()
                ui.backends[key] = backend
        t1 = time.perf_counter()
        rendered = prompt.render_vars(inputs)
        params = prompt.model_params.as_dict()
        req = GenRequest.chat(rendered, **params) if isinstance(rendered, list) else GenRequest.completion(str(rendered), **params)
        t2 = time.perf_counter()
        gen = backend.generate(req)
        t3 = time.perf_counter()
        run.set_tags({"response": gen.text, "rendered": _dumps(rendered)})
        run.log_metrics({"latency_ms.load": round((t1 - t0) * 1000, 3), "latency_ms.render": round((t2 - t1) * 1000, 3),
                         "latency_ms.generate": round((t3 - t2) * 1000, 3), "latency_ms.total": round((t3 - t0) * 1000, 3),
                         "tokens.prompt": gen.prompt_tokens, "tokens.completion": gen.completion_tokens})
    return run.id


def _adapter_folder(ws: Any, adapter_av: Any, model_av: Any) -> Any:
    """The adapter as a PEFT folder, checked against the base model when the fine-tuning module can."""
    try:
        from llmops.finetune import adapters
    except ImportError:
        adapters = None
    if adapters is not None and hasattr(adapters, "adapter_folder"):
        if hasattr(adapters, "check_adapter_base"):
            adapters.check_adapter_base(adapter_av, model_av)
        return adapters.adapter_folder(ws, adapter_av)
    from llmops.chains.steps import _adapter_folder as folder

    return folder(ws, adapter_av)


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    ws = ui.ws

    def form_page(request: Request, *, chain: str = "", prompt: str = "", model: str = "", adapter: str = "",
                  values: dict | None = None, error: str | None = None, status: int = 200) -> HTMLResponse:
        variables, target, problem = None, None, None
        try:
            if chain:
                version = ws.chains.get(chain)
                variables, target = dict(version.spec.inputs), version.ref
            elif prompt:
                p = ws.prompts.get(prompt)
                variables, target = dict(p.variables), p.asset.ref
        except LLMOpsError as exc:
            problem = str(exc)
        return ui.render(request, "playground.html.j2", status, chains=ws.chains.list(), prompts=ws.prompts.list(),
                         models=ws.registry.list("model"), adapters=ws.registry.list("adapter"), chain=chain,
                         prompt=prompt, model=model, adapter=adapter, variables=variables, target=target,
                         values=values or {}, error=error or problem)

    @r.get("/playground", response_class=HTMLResponse)
    def show(request: Request, chain: str = "", prompt: str = "", model: str = "", adapter: str = "") -> HTMLResponse:
        return form_page(request, chain=chain.strip(), prompt=prompt.strip(), model=model.strip(), adapter=adapter.strip())

    @r.post("/playground")
    async def run(request: Request) -> Response:
        form = await ui.form(request)
        chain, prompt = form.get("chain", "").strip(), form.get("prompt", "").strip()
        model, adapter = form.get("model", "").strip(), form.get("adapter", "").strip()
        # what an API key's scopes must cover: as `/v1/chains/NAME` and `model: NAME:ADAPTER` are checked
        ui.authorize(request, form, f"chain/{chain.removeprefix('chain/')}" if chain else (f"{model}:{adapter}" if adapter else model))
        values = {k[3:]: v for k, v in form.items() if k.startswith("in.")}
        try:
            if chain:
                version = await run_in_threadpool(ws.chains.get, chain)
                inputs = read_inputs(dict(version.spec.inputs), form)
                run_id = await run_in_threadpool(run_chain, ws, version.ref, inputs)
            elif prompt:
                if not model:
                    raise BadRequest("choose a model to run the prompt on")
                p = await run_in_threadpool(ws.prompts.get, prompt)
                inputs = read_inputs(dict(p.variables), form)
                run_id = await run_in_threadpool(run_prompt, ui, p.asset.ref, model, adapter, inputs)
            else:
                raise BadRequest("choose a chain, or a prompt and a model")
        except LLMOpsError as exc:
            return form_page(request, chain=chain, prompt=prompt, model=model, adapter=adapter, values=values,
                             error=str(exc), status=400)
        return ui.redirect(request, f"/requests/{run_id}")

    return r
