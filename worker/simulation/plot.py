"""An SVG line plot of accuracy against labels, mean ± sd bands over repeats.

Hand-written SVG (no matplotlib): the project has no plotting dependency, the
admin pages already draw server-side SVG, and this plot is a handful of
polylines and polygons.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .curves import MeanCurve

PALETTE = ["#444444", "#3056d3", "#e4572e", "#17a398", "#b54708", "#6a3d9a", "#c2185b",
           "#2e7d32", "#00838f", "#8d6e63"]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def svg_plot(curves: Sequence[MeanCurve], *, target: float | None = None,
             title: str = "Accuracy vs labels", y_label: str = "test accuracy (share correct)",
             width: int = 720, height: int = 420) -> str:
    left, right, top, bottom = 60, 170, 36, 48
    pw, ph = width - left - right, height - top - bottom
    xs = [x for c in curves for x in c.labels] or [0, 1]
    ys = [m + s for c in curves for m, s in zip(c.mean, c.sd)] + \
         [m - s for c in curves for m, s in zip(c.mean, c.sd)] + ([target] if target else [])
    x_lo, x_hi = 0.0, float(max(xs)) or 1.0
    y_lo, y_hi = (max(0.0, min(ys) - 0.02), min(1.0, max(ys) + 0.02)) if ys else (0.0, 1.0)
    if y_hi - y_lo < 1e-6:
        y_lo, y_hi = y_lo - 0.05, y_hi + 0.05

    def px(x: float) -> float:
        return left + pw * (x - x_lo) / (x_hi - x_lo)

    def py(y: float) -> float:
        return top + ph * (1 - (y - y_lo) / (y_hi - y_lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    for t in _ticks(y_lo, y_hi):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.2f}</text>')
    for t in _ticks(x_lo, x_hi):
        out.append(f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{t:.0f}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">'
               'labels given (cells whose class the oracle revealed)</text>')
    out.append(f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    if target is not None:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(target):.1f}" '
                   f'y2="{py(target):.1f}" stroke="#000" stroke-dasharray="5 4"/>')
        out.append(f'<text x="{left + pw - 4}" y="{py(target) - 4:.1f}" text-anchor="end">'
                   f'target {target:.3f}</text>')
    for k, c in enumerate(curves):
        colour = PALETTE[k % len(PALETTE)]
        upper = [f"{px(x):.1f},{py(m + s):.1f}" for x, m, s in zip(c.labels, c.mean, c.sd)]
        lower = [f"{px(x):.1f},{py(m - s):.1f}" for x, m, s in zip(c.labels, c.mean, c.sd)]
        line = [f"{px(x):.1f},{py(m):.1f}" for x, m in zip(c.labels, c.mean)]
        out.append(f'<polygon points="{" ".join(upper + lower[::-1])}" fill="{colour}" '
                   'fill-opacity="0.15" stroke="none"/>')
        out.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{colour}" '
                   'stroke-width="2"/>')
        ly = top + 14 + 18 * k
        out.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 32}" y1="{ly - 4}" '
                   f'y2="{ly - 4}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{left + pw + 38}" y="{ly}">{escape(c.strategy)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
