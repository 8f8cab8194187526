"""Small inline SVG charts for the eval HTML report: no JavaScript, no external file, works offline.

Each function returns one `<svg>` element as a string; every piece of text in it is escaped here,
so the template inserts it with `|safe`. Missing or non-finite figures are drawn as "n/a", never
as a bar at 0.

    >>> svg = metric_chart("rougeL", 1.0, Interval(0.41, 0.38, 0.44), Interval(0.39, 0.36, 0.42))
    >>> svg.startswith("<svg") and 'data-metric="rougeL"' in svg
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

__all__ = ["Interval", "delta_chart", "delta_histogram", "finite", "fmt", "fmt_ci", "fmt_pct", "metric_chart",
           "svg_frame", "svg_text"]

CANDIDATE = "#2563eb"
BASELINE = "#9ca3af"
BETTER = "#15803d"
WORSE = "#b91c1c"
NEUTRAL = "#6b7280"
INK = "#1f2937"
GRID = "#e5e7eb"
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12"'


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval; any part may be None (unknown or non-finite)."""

    value: float | None
    low: float | None = None
    high: float | None = None


def finite(x: object) -> float | None:
    """`x` as a float when it is a finite number (or a numeric string such as "0.5"), else None."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(x: object, scale: float = 1.0, *, signed: bool = False) -> str:
    """A figure in the metric's own units: 3 decimals on a 0..1 scale, 1 decimal on 0..100.

    Non-finite values keep their name ("NaN", "Infinity") so a reviewer sees what went wrong.

    >>> fmt(0.41234), fmt(41.234, 100), fmt(-0.02, signed=True), fmt(float("nan")), fmt(None)
    ('0.412', '41.2', '-0.020', 'NaN', '—')
    """
    if x is None:
        return "—"
    f = finite(x)
    if f is None:
        try:
            f = float(x)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(x)
        return "NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity")
    digits = 1 if scale and scale > 1 else 3
    text = f"{f:+.{digits}f}" if signed else f"{f:.{digits}f}"
    return text.lstrip("+-") if float(text) == 0 else text


def fmt_ci(iv: Interval | None, scale: float = 1.0, *, signed: bool = False) -> str:
    """A figure with its interval, as tables show it.

    >>> fmt_ci(Interval(-0.05, -0.09, -0.01), signed=True), fmt_ci(None)
    ('-0.050 [-0.090, -0.010]', '—')
    """
    if iv is None:
        return "—"
    text = fmt(iv.value, scale, signed=signed)
    if iv.low is not None and iv.high is not None:
        text += f" [{fmt(iv.low, scale, signed=signed)}, {fmt(iv.high, scale, signed=signed)}]"
    return text


def fmt_pct(p: float | None) -> str:
    """A probability as a whole percentage: `fmt_pct(0.04)` is '4%'."""
    return "—" if p is None else f"{p * 100:.0f}%"


def svg_frame(width: int, height: int, label: str, body: list[str], **data: str) -> str:
    """An accessible <svg> around `body`: a title for screen readers, `data-*` attributes for tests."""
    attrs = "".join(f' data-{k}="{escape(v)}"' for k, v in data.items())
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}"{attrs}>'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


def svg_text(x: float, y: float, text: str, *, anchor: str = "start", fill: str = INK, bold: bool = False) -> str:
    """Escaped SVG text in the reports' font."""
    weight = ' font-weight="600"' if bold else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}" {FONT}{weight}>'
        f"{escape(text)}</text>"
    )


def metric_chart(
    name: str,
    scale: float,
    candidate: Interval,
    baseline: Interval | None = None,
    *,
    labels: tuple[str, str] = ("candidate", "baseline"),
    minimum: float | None = None,
) -> str:
    """Horizontal bars for one metric, candidate above baseline, each with its interval as a whisker.

    `minimum` (a `min` gate's threshold) is drawn as a dashed red line across the bars.
    """
    scale = finite(scale) or 1.0
    rows = [(labels[0], candidate, CANDIDATE)]
    if baseline is not None:
        rows.append((labels[1], baseline, BASELINE))
    tops = [finite(v) for _, iv, _ in rows for v in (iv.value, iv.high, minimum)]
    domain = max([scale] + [t for t in tops if t is not None])
    left, right, width, row_h, top = 92, 78, 560, 26, 8
    plot = width - left - right
    height = top + row_h * len(rows) + 22

    def x(v: float) -> float:
        return left + plot * max(0.0, min(v, domain)) / domain

    body = []
    for i in range(5):
        tick = domain * i / 4
        body.append(
            f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{height - 18}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        body.append(svg_text(x(tick), height - 5, fmt(tick, scale), anchor="middle", fill=NEUTRAL))
    for r, (label, iv, color) in enumerate(rows):
        y = top + r * row_h
        body.append(svg_text(left - 8, y + 16, label, anchor="end"))
        value, low, high = finite(iv.value), finite(iv.low), finite(iv.high)
        if value is None:
            body.append(svg_text(left + 4, y + 16, f"n/a ({fmt(iv.value, scale)})", fill=WORSE))
            continue
        body.append(
            f'<rect x="{left}" y="{y + 4}" width="{max(x(value) - left, 1):.1f}" height="{row_h - 10}" '
            f'rx="2" fill="{color}" fill-opacity="0.85"/>'
        )
        if low is not None and high is not None:
            mid = y + row_h / 2 - 1
            body.append(
                f'<path d="M{x(low):.1f} {mid - 6}v12M{x(low):.1f} {mid}H{x(high):.1f}M{x(high):.1f} {mid - 6}v12" '
                f'stroke="{INK}" stroke-width="1.5" fill="none"/>'
            )
        ci = f" [{fmt(low, scale)}, {fmt(high, scale)}]" if low is not None and high is not None else ""
        body.append(svg_text(width - right + 6, y + 16, fmt(value, scale), bold=True))
        label_text = f"{name} {label}: {fmt(value, scale)}{ci}"
        body.append(f"<desc>{escape(label_text)}</desc>")
    if finite(minimum) is not None:
        gx = x(float(minimum))  # type: ignore[arg-type]
        body.append(
            f'<line x1="{gx:.1f}" y1="{top - 4}" x2="{gx:.1f}" y2="{height - 18}" stroke="{WORSE}" '
            f'stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
        body.append(f"<desc>{escape(f'gate: minimum {fmt(minimum, scale)}')}</desc>")
    return svg_frame(width, height, f"{name}: candidate against baseline", body, metric=name)


def delta_chart(rows: list[tuple[str, float | None, float | None, float | None, float]]) -> str:
    """A forest plot of per-metric deltas (candidate − baseline) with intervals around zero.

    `rows` are (metric, delta, low, high, scale); deltas are drawn as a share of each metric's scale
    so BLEU (0..100) and ROUGE (0..1) sit on one axis, and labelled in their own units. Green when
    the whole interval is above zero, red when below, grey when it straddles zero.
    """
    left, right, width, row_h, top = 110, 190, 560, 24, 8
    plot = width - left - right
    height = top + row_h * max(len(rows), 1) + 22
    spans = [abs(finite(v) or 0.0) / (finite(s) or 1.0) for _, d, lo, hi, s in rows for v in (d, lo, hi)]
    half = max(spans + [0.02]) * 1.1

    def x(share: float) -> float:
        return left + plot * (0.5 + max(-half, min(share, half)) / (2 * half))

    body = [
        f'<line x1="{x(0):.1f}" y1="{top - 2}" x2="{x(0):.1f}" y2="{height - 18}" stroke="{INK}" stroke-width="1"/>',
        svg_text(x(-half), height - 5, "worse", fill=WORSE),
        svg_text(x(half), height - 5, "better", anchor="end", fill=BETTER),
    ]
    for r, (name, delta, low, high, scale) in enumerate(rows):
        scale = finite(scale) or 1.0
        y = top + r * row_h + row_h / 2
        body.append(svg_text(left - 8, y + 4, name, anchor="end"))
        d, lo, hi = finite(delta), finite(low), finite(high)
        if d is None:
            body.append(svg_text(x(0) + 6, y + 4, f"n/a ({fmt(delta, scale)})", fill=WORSE))
            continue
        color = BETTER if lo is not None and lo > 0 else WORSE if hi is not None and hi < 0 else NEUTRAL
        if lo is not None and hi is not None:
            body.append(
                f'<line x1="{x(lo / scale):.1f}" y1="{y}" x2="{x(hi / scale):.1f}" y2="{y}" '
                f'stroke="{color}" stroke-width="2"/>'
            )
        body.append(f'<circle cx="{x(d / scale):.1f}" cy="{y}" r="4.5" fill="{color}"/>')
        ci = f" [{fmt(lo, scale, signed=True)}, {fmt(hi, scale, signed=True)}]" if lo is not None and hi is not None else ""
        body.append(svg_text(width - right + 8, y + 4, fmt(d, scale, signed=True) + ci, fill=color))
    return svg_frame(width, height, "Change per metric, candidate minus baseline", body, chart="deltas")


def delta_histogram(changes: list[float | None], scale: float, metric: str, bins: int = 21) -> str:
    """How many examples got better or worse on `metric`, binned by score change (−scale..+scale).

    An odd number of bins keeps "no change" in a grey bin of its own at the centre.
    """
    scale = finite(scale) or 1.0
    values = [c for c in (finite(v) for v in changes) if c is not None]
    counts = [0] * bins
    for v in values:
        share = max(-1.0, min(v / scale, 1.0))
        counts[min(int((share + 1) / 2 * bins), bins - 1)] += 1
    left, right, width, height, top, bottom = 40, 30, 900, 150, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts + [1])
    bar_w = plot_w / bins
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}"/>',
        f'<line x1="{left + plot_w / 2}" y1="{top}" x2="{left + plot_w / 2}" y2="{top + plot_h}" stroke="{GRID}"/>',
        svg_text(left - 6, top + 10, str(peak), anchor="end", fill=NEUTRAL),
        svg_text(left - 6, top + plot_h, "0", anchor="end", fill=NEUTRAL),
    ]
    for i, n in enumerate(counts):
        mid_share = (i + 0.5) / bins * 2 - 1
        color = NEUTRAL if i == bins // 2 and bins % 2 else WORSE if mid_share < 0 else BETTER
        h = plot_h * n / peak
        body.append(
            f'<rect x="{left + i * bar_w + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
            f'height="{h:.1f}" fill="{color}" fill-opacity="0.75"><title>{n}</title></rect>'
        )
    for share in (-1, -0.5, 0, 0.5, 1):
        body.append(
            svg_text(left + plot_w * (share + 1) / 2, height - 6, fmt(share * scale, scale, signed=True), anchor="middle",
                  fill=NEUTRAL)
        )
    label = f"Per-example change in {metric} ({len(values)} examples)"
    return svg_frame(width, height, label, body, chart="histogram", metric=metric)
