"""Small server-side line charts (inline SVG): no JavaScript, no CDN, air-gap safe."""

from __future__ import annotations

from dataclasses import dataclass

PALETTE = ["#3056d3", "#e4572e", "#17a398", "#b54708", "#6a3d9a"]


@dataclass(frozen=True)
class Line:
    name: str
    points: str  # SVG polyline "x,y x,y ..."
    colour: str
    last: float | None


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lines: list[Line]
    y_min: float
    y_max: float
    x_labels: list[str]
    pad: int = 30


def line_chart(series: dict[str, list[float | None]], x_labels: list[str] | None = None,
               width: int = 560, height: int = 200, y_range: tuple[float, float] | None = None
               ) -> Chart | None:
    """Lay out one polyline per series over a shared x axis; None when there is nothing."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not values:
        return None
    n = max(len(vs) for vs in series.values())
    lo, hi = y_range or (min(values), max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 30
    plot_w, plot_h = width - 2 * pad, height - 2 * pad

    def xy(i: int, v: float) -> str:
        x = pad + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)
        y = pad + plot_h * (1 - (v - lo) / (hi - lo))
        return f"{x:.1f},{y:.1f}"

    lines = []
    for k, (name, vs) in enumerate(series.items()):
        pts = " ".join(xy(i, v) for i, v in enumerate(vs) if v is not None)
        last = next((v for v in reversed(vs) if v is not None), None)
        lines.append(Line(name, pts, PALETTE[k % len(PALETTE)], last))
    return Chart(width, height, lines, lo, hi, x_labels or [str(i + 1) for i in range(n)], pad)
