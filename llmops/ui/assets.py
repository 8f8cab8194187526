"""Assets: every asset (`/assets`), one asset's versions, aliases and alias history
(`/assets/{kind}/{name}`), one version (`/assets/{kind}/{name}@{ref}`: its spec, files, and for a
chain its steps as a graph), a diff of two versions (prompts side by side, with eval deltas when a
suite measured both), and moving an alias (POST, recorded with its reason like `llmops assets alias`).
"""

from __future__ import annotations

import difflib
import mimetypes
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from llmops.errors import AssetNotFound, LLMOpsError
from llmops.store.refs import check_kind, parse_ref, parse_version
from llmops.ui import queries
from llmops.ui.app import UI, BadRequest, page_number, page_size
from llmops.ui.svg import Node, graph


def side_by_side(a: str, b: str) -> list[tuple[str | None, str | None, str]]:
    """Rows (left line, right line, change) of two texts: `same`, `changed`, `removed` or `added`."""
    la, lb = a.splitlines(), b.splitlines()
    rows: list[tuple[str | None, str | None, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=la, b=lb, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [(x, y, "same") for x, y in zip(la[i1:i2], lb[j1:j2])]
        elif op == "delete":
            rows += [(x, None, "removed") for x in la[i1:i2]]
        elif op == "insert":
            rows += [(None, y, "added") for y in lb[j1:j2]]
        else:
            left, right = la[i1:i2], lb[j1:j2]
            for k in range(max(len(left), len(right))):
                x = left[k] if k < len(left) else None
                y = right[k] if k < len(right) else None
                rows.append((x, y, "changed" if x is not None and y is not None else ("removed" if y is None else "added")))
    return rows


def chain_graph(base: str, version: Any, uid: str = "chain") -> str:
    """A chain version's steps as a graph: inputs on the left, each step in the column of its depth,
    an arrow per value a step reads (labelled with the parameter); nodes link to the versions they name."""
    spec, plan = version.spec, version.plan
    depth: dict[str, int] = {f"input:{n}": 0 for n in spec.inputs}
    nodes = [Node(f"input:{n}", n, f"input · {v.type}", None, 0, "input") for n, v in spec.inputs.items()]
    edges = []
    producer = {s.out: s.name for s in spec.steps}
    for name in plan.order:
        step = spec.step(name)
        sources = []
        for param, value in plan.wiring.get(name, {}).items():
            src = producer.get(value)
            node = src if src is not None else f"input:{value}"
            sources.append(node)
            edges.append((node, name, param if param != value else ""))
        depth[name] = 1 + max((depth.get(s, 0) for s in sources), default=0)
        refs = list(step.refs())
        sub = " · ".join(ref for _, _, ref in refs) or step.type  # type: ignore[attr-defined]
        href = None
        if refs:
            _, kind, ref = refs[0]
            try:
                r = parse_ref(ref, default_kind=kind)
                href = f"{base}/assets/{r.kind}/{r.short}"
            except LLMOpsError:
                href = None
        final = " (output)" if step.out == plan.output else ""
        nodes.append(Node(name, f"{name} [{step.type}]{final}", sub, href, depth[name], "step"))  # type: ignore[attr-defined]
    return graph(f"steps of {version.ref}", nodes, edges, uid=uid)


def _split(kind: str, name_ref: str) -> tuple[str, str, str | None]:
    check_kind(kind)
    name, at, selector = name_ref.partition("@")
    r = parse_ref(f"{kind}/{name}" + (f"@{selector}" if at else ""))
    return r.kind, r.name, r.selector if at else None


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    ws = ui.ws

    @r.get("/assets", response_class=HTMLResponse)
    def index(request: Request, kind: str = "", page: str = "1", per_page: str = "100") -> HTMLResponse:
        if kind:
            check_kind(kind)
        result = queries.assets(ws, kind=kind or None, page=page_number(page), size=page_size(per_page, 100))
        return ui.render(request, "assets.html.j2", page=result, kind=kind, kinds=queries.asset_kinds(ws),
                         args={"kind": kind, "per_page": result.size})

    @r.get("/assets/{kind}/{name_ref}", response_class=HTMLResponse)
    def asset(request: Request, kind: str, name_ref: str, page: str = "1") -> HTMLResponse:
        kind, name, selector = _split(kind, name_ref)
        if selector is not None:
            return version_page(request, kind, name, selector)
        result = queries.versions(ws, kind, name, page=page_number(page))
        if not result.total:
            raise AssetNotFound(f"no asset {kind}/{name}")
        aliases = ws.registry.aliases(f"{kind}/{name}")
        events, n_events = queries.alias_events(ws, kind, name)
        by_version: dict[int, list[str]] = {}
        for a, v in sorted(aliases.items()):
            by_version.setdefault(v, []).append(a)
        latest = result.items[0].version if result.number == 1 else None
        return ui.render(request, "asset.html.j2", kind=kind, name=name, page=result, aliases=aliases,
                         by_version=by_version, events=events, n_events=n_events, latest=latest, args={})

    def version_page(request: Request, kind: str, name: str, selector: str) -> HTMLResponse:
        av = ws.registry.get(f"{kind}/{name}@{selector}", record=False)
        aliases = sorted(a for a, v in ws.registry.aliases(av.ref).items() if v == av.version)
        chain_svg, chain_error, prompt = None, None, None
        if kind == "chain":
            try:
                chain_svg = chain_graph(ui.base(request), ws.chains.get(av.ref))
            except LLMOpsError as exc:
                chain_error = str(exc)
        if kind == "prompt":
            from llmops.prompts.diff import template_text
            from llmops.prompts.spec import PromptSpec

            try:
                prompt = template_text(PromptSpec.model_validate(av.spec))
            except Exception:  # a stored spec this version of llmops cannot read: the JSON still shows
                prompt = None
        return ui.render(request, "version.html.j2", av=av, aliases=aliases, selector=selector, chain_svg=chain_svg,
                         chain_error=chain_error, prompt_text=prompt, used_by=queries.used_by_count(ws, av.ref),
                         produced_by=queries.run_names(ws, [av.run_id]).get(av.run_id) if av.run_id else None)

    @r.get("/assets/{kind}/{name_ref}/files/{file:path}")
    def file(kind: str, name_ref: str, file: str) -> Response:
        kind, name, selector = _split(kind, name_ref)
        av = ws.registry.get(f"{kind}/{name}@{selector or 'latest'}", record=False)
        data = ws.registry.read_file(av, file)
        media = mimetypes.guess_type(file)[0] or "application/octet-stream"
        safe = media in ("application/json", "text/plain", "text/csv", "application/x-yaml")
        return Response(data, media_type=media if safe else "application/octet-stream", headers={
            "content-disposition": ("inline" if safe else "attachment")
            + f"; filename*=UTF-8''{urllib.parse.quote(file.rsplit('/', 1)[-1], safe='')}"})

    @r.get("/assets/{kind}/{name}/diff", response_class=HTMLResponse)
    def diff(request: Request, kind: str, name: str, a: str = "", b: str = "") -> HTMLResponse:
        kind, name, _ = _split(kind, name)
        if not a or not b:
            raise BadRequest("give two versions to compare: ?a=1&b=2 (numbers or aliases)")
        ref_a, ref_b = f"{kind}/{name}@{a}", f"{kind}/{name}@{b}"
        va, vb = ws.registry.get(ref_a, record=False), ws.registry.get(ref_b, record=False)
        prompt_diff, rows, note = None, None, None
        if kind == "prompt":
            from llmops.prompts.diff import template_text
            from llmops.prompts.spec import PromptSpec

            try:
                prompt_diff = ws.prompts.diff(ref_a, ref_b)
                rows = side_by_side(template_text(PromptSpec.model_validate(va.spec)),
                                    template_text(PromptSpec.model_validate(vb.spec)))
            except (LLMOpsError, ValueError) as exc:  # a stored spec this llmops cannot read as a prompt
                prompt_diff, rows, note = None, None, f"shown as a spec diff: {str(exc).splitlines()[0]}"
        from llmops.ui.evals import eval_deltas

        return ui.render(request, "diff.html.j2", kind=kind, name=name, va=va, vb=vb, rows=rows, note=note,
                         prompt_diff=prompt_diff, structured=ws.registry.diff(va.ref, vb.ref),
                         evals=eval_deltas(ws, va.ref, vb.ref))

    @r.post("/assets/{kind}/{name}/alias")
    async def move_alias(request: Request, kind: str, name: str) -> Response:
        kind, name, _ = _split(kind, name)
        form = await ui.form(request)
        ui.authorize(request, form)
        alias, version, reason = (form.get("alias") or "").strip(), form.get("version") or "", (form.get("reason") or "").strip()
        if not reason:
            raise BadRequest("say why the alias moves (the reason field): it is recorded in the alias history")
        await run_in_threadpool(ws.registry.set_alias, f"{kind}/{name}", alias, parse_version(version.strip()),
                                reason=reason)
        return ui.redirect(request, f"/assets/{kind}/{name}#history")

    return r
