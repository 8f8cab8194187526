"""Inline SVG drawn on the server: metric line charts, step-latency bars, and node graphs (lineage,
chain steps) whose nodes are links. No JavaScript, so every chart reads without it, as the eval
report's charts (`llmops.evals.charts`, whose colours, escaping and number format these share) do.

    >>> svg = line_chart("loss", [("run a", [(0, 1.0), (1, 0.5)])], x_label="step")
    >>> svg.startswith("<svg") and 'data-metric="loss"' in svg
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from llmops.evals.charts import FONT, GRID, INK, NEUTRAL, svg_frame, svg_text

__all__ = ["PALETTE", "Node", "bar_chart", "graph", "line_chart"]

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"]


def _nice(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering lo..hi."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi == lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9 and len(ticks) < 50:
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 12))
        t += step
    return ticks


def _num(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.4g}"


def line_chart(name: str, series: list[tuple[str, list[tuple[float, float]]]], *, x_label: str = "step",
               width: int = 560, height: int = 240) -> str:
    """One metric over step or time, one line per series (label, [(x, y)]), a legend when several."""
    pts = [(x, y) for _, s in series for x, y in s if math.isfinite(x) and math.isfinite(y)]
    left, right, top, bottom = 62, 16, 12, 40 + (16 * math.ceil(len(series) / 3) if len(series) > 1 else 0)
    pw, ph = width - left - right, height - top - bottom
    body: list[str] = []
    if not pts:
        body.append(svg_text(width / 2, height / 2, "no finite values", anchor="middle", fill=NEUTRAL))
        return svg_frame(width, height, f"{name} against {x_label}", body, metric=name)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + pw * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return top + ph - ph * (y - y0) / (y1 - y0)

    for t in _nice(y0, y1):
        body.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{width - right}" y2="{sy(t):.1f}" stroke="{GRID}"/>')
        body.append(svg_text(left - 6, sy(t) + 4, _num(t), anchor="end", fill=NEUTRAL))
    for t in _nice(x0, x1):
        body.append(f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{top + ph}" stroke="{GRID}"/>')
        body.append(svg_text(sx(t), top + ph + 15, _num(t), anchor="middle", fill=NEUTRAL))
    body.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="{NEUTRAL}" stroke-width="0.6"/>')
    body.append(svg_text(left + pw / 2, top + ph + 30, x_label, anchor="middle", fill=NEUTRAL))
    for i, (label, s) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        good = [(x, y) for x, y in s if math.isfinite(x) and math.isfinite(y)]
        if len(good) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
            body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        if len(good) <= 60:
            body += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{color}"/>' for x, y in good]
        if good:
            body.append(f"<desc>{escape(f'{label}: last {_num(good[-1][1])} at {x_label} {_num(good[-1][0])}')}</desc>")
        if len(series) > 1:
            lx, ly = left + (i % 3) * (pw / 3), height - bottom + 44 + 16 * (i // 3)
            body.append(f'<rect x="{lx:.1f}" y="{ly - 9:.1f}" width="10" height="10" fill="{color}"/>')
            body.append(svg_text(lx + 14, ly, label[:28]))
    return svg_frame(width, height, f"{name} against {x_label}", body, metric=name)


def bar_chart(title: str, rows: list[tuple[str, float]], *, unit: str = "ms", width: int = 560) -> str:
    """Horizontal bars (label, value), e.g. the latency of each step of a request."""
    left, right, row_h, top = 150, 80, 22, 6
    height = top + row_h * max(len(rows), 1) + 8
    top_value = max([v for _, v in rows if math.isfinite(v)] + [0.0]) or 1.0
    body = []
    for i, (label, value) in enumerate(rows):
        y = top + i * row_h
        body.append(svg_text(left - 8, y + 15, label[:24], anchor="end"))
        w = (width - left - right) * max(value, 0) / top_value if math.isfinite(value) else 0
        body.append(f'<rect x="{left}" y="{y + 4}" width="{max(w, 1):.1f}" height="{row_h - 8}" rx="2" fill="{PALETTE[0]}"/>')
        body.append(svg_text(left + w + 6, y + 15, f"{_num(value)} {unit}", fill=INK))
    return svg_frame(width, height, title, body)


@dataclass
class Node:
    """A box in a graph: `column` orders left to right, `href` makes it a link."""

    id: str
    label: str
    sub: str = ""
    href: str | None = None
    column: int = 0
    kind: str = "version"  # version | run | root | input | step


_FILL = {"version": "#eff6ff", "run": "#f0fdf4", "root": "#fef3c7", "input": "#f3f4f6", "step": "#eff6ff"}
_STROKE = {"version": "#2563eb", "run": "#16a34a", "root": "#d97706", "input": "#6b7280", "step": "#2563eb"}


def graph(title: str, nodes: list[Node], edges: list[tuple[str, str, str]], *, uid: str = "g") -> str:
    """Nodes in columns (by `column`), edges (source, target, label) drawn as arrows left to right."""
    box_w, box_h, gap_x, gap_y, pad = 210, 42, 70, 14, 12
    columns = sorted({n.column for n in nodes})
    col_x = {c: pad + i * (box_w + gap_x) for i, c in enumerate(columns)}
    by_col: dict[int, list[Node]] = {}
    for n in nodes:
        by_col.setdefault(n.column, []).append(n)
    tallest = max((len(v) for v in by_col.values()), default=1)
    height = pad * 2 + tallest * (box_h + gap_y)
    width = pad * 2 + len(columns) * (box_w + gap_x) - gap_x
    pos: dict[str, tuple[float, float]] = {}
    for c, col in by_col.items():
        offset = (tallest - len(col)) * (box_h + gap_y) / 2
        for i, n in enumerate(col):
            pos[n.id] = (col_x[c], pad + offset + i * (box_h + gap_y))
    body = [f'<defs><marker id="{escape(uid)}-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="{NEUTRAL}"/></marker></defs>']
    for src, dst, label in edges:
        if src not in pos or dst not in pos:
            continue
        (ax, ay), (bx, by) = pos[src], pos[dst]
        if ax <= bx:
            x1, x2 = ax + box_w, bx
        else:
            x1, x2 = ax, bx + box_w
        y1, y2 = ay + box_h / 2, by + box_h / 2
        mid = (x1 + x2) / 2
        body.append(f'<path d="M{x1:.1f} {y1:.1f}C{mid:.1f} {y1:.1f} {mid:.1f} {y2:.1f} {x2:.1f} {y2:.1f}" fill="none" '
                    f'stroke="{NEUTRAL}" stroke-width="1.2" marker-end="url(#{escape(uid)}-arrow)">'
                    f"<title>{escape(label)}</title></path>")
        if label:
            body.append(f'<text x="{mid:.1f}" y="{(y1 + y2) / 2 - 3:.1f}" text-anchor="middle" fill="{NEUTRAL}" '
                        f'{FONT} font-size="10">{escape(label)}</text>')
    for n in nodes:
        x, y = pos[n.id]
        box = (f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="6" fill="{_FILL.get(n.kind, "#fff")}" '
               f'stroke="{_STROKE.get(n.kind, INK)}" stroke-width="{2 if n.kind == "root" else 1}"/>'
               + svg_text(x + 8, y + 17, _clip(n.label, 30), bold=True) + svg_text(x + 8, y + 33, _clip(n.sub, 34), fill=NEUTRAL)
               + f"<title>{escape(n.label + (' — ' + n.sub if n.sub else ''))}</title>")
        if n.href:
            box = f'<a href="{escape(n.href)}" data-node="{escape(n.id)}">{box}</a>'
        else:
            box = f'<g data-node="{escape(n.id)}">{box}</g>'
        body.append(box)
    return svg_frame(max(width, 240), max(height, 60), title, body)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
