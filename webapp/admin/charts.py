"""Small server-side line charts (inline SVG): no JavaScript, no CDN, air-gap safe.

Hand-written rather than a plotting library: two line charts of a few dozen
points each do not justify matplotlib in the webapp (which must stay light) or
Vega-Lite (a vendored JavaScript bundle under a strict CSP). Each chart carries
its title, axis titles with units, and tick labels.
"""

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
class Tick:
    at: float  # pixel position along its axis
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lines: list[Line]
    y_min: float
    y_max: float
    x_labels: list[str]
    title: str
    x_title: str
    y_title: str
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    left: int
    top: int
    plot_w: int
    plot_h: int


def line_chart(series: dict[str, list[float | None]], *, title: str, x_title: str,
               y_title: str, x_labels: list[str] | None = None, width: int = 600,
               height: int = 260, y_range: tuple[float, float] | None = None) -> Chart | None:
    """Lay out one polyline per series over a shared x axis; None when there is nothing."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not values:
        return None
    n = max(len(vs) for vs in series.values())
    lo, hi = y_range or (min(values), max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    # Room for the title above, tick labels and axis titles left and below.
    left, top, right, bottom = 62, 28, 16, 46
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(i: float) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    lines = []
    for k, (name, vs) in enumerate(series.items()):
        pts = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in enumerate(vs) if v is not None)
        last = next((v for v in reversed(vs) if v is not None), None)
        lines.append(Line(name, pts, PALETTE[k % len(PALETTE)], last))
    labels = x_labels or [str(i + 1) for i in range(n)]
    step = max(1, -(-n // 10))  # at most about ten x labels
    x_ticks = [Tick(px(i), labels[i]) for i in range(0, n, step)]
    if (n - 1) % step:
        x_ticks.append(Tick(px(n - 1), labels[n - 1]))
    y_ticks = [Tick(py(lo + (hi - lo) * k / 4), f"{lo + (hi - lo) * k / 4:.2f}") for k in range(5)]
    return Chart(width, height, lines, lo, hi, labels, title, x_title, y_title, x_ticks, y_ticks,
                 left, top, plot_w, plot_h)
