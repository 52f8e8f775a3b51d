"""Server-side SVG layouts for the agreement page (the admin charts' approach)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeatCell:
    x: int
    y: int
    size: int
    value: int
    alpha: float


def heatmap(matrix: list[list[int]], size: int = 34) -> tuple[list[HeatCell], int]:
    """Squares shaded by count (diagonal: agreement); returns them and the grid's width."""
    top = max((v for row in matrix for v in row), default=0) or 1
    cells = [HeatCell(j * size, i * size, size, v, 0.08 + 0.85 * v / top if v else 0.0)
             for i, row in enumerate(matrix) for j, v in enumerate(row)]
    return cells, size * len(matrix)


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    x0: float
    width: float


def kappa_bars(items: list[tuple[str, float | None]], width: int = 320) -> list[Bar]:
    """Horizontal bars on a -1..1 axis, zero in the middle."""
    half = width / 2
    out = []
    for label, value in items:
        if value is None:
            out.append(Bar(label, None, half, 0))
            continue
        v = max(-1.0, min(1.0, value))
        out.append(Bar(label, value, half + min(v, 0) * half, abs(v) * half))
    return out
