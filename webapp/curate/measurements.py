"""The curator's measurements panel: a cell's nucleus and cell measurements beside
the range of each among the cells whose final label is each class in question.

The values come from ``cell_measurements`` (computed on a worker,
worker/describe.py); nothing here loads scikit-image.  A class's range is the
10th to 90th percentile (linear interpolation, as NumPy's default) of the
value over that class's final cells (consensus, curator, or a trusted reference label:
models.labels.training_label) that were measured, the cell itself left
out; with fewer than MIN_CELLS cells no range is drawn, only the count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import CellMeasurement, Project
from models.labels import CellState, training_label

LOW, HIGH = 10.0, 90.0
MIN_CELLS = 5


@dataclass(frozen=True)
class Measure:
    column: str
    label: str
    hint: str
    area: bool = False  # pixels, shown in µm² where the project knows its pixel size
    digits: int = 2


MEASURES = [
    Measure("nucleus_area_px", "Nucleus area", "of the nucleus mask", area=True, digits=0),
    Measure("nucleus_lobes", "Lobes", "pieces of the nucleus where it is over half its thickest",
            digits=1),
    Measure("nucleus_to_cell", "Nucleus-to-cell ratio", "nucleus area / cell area"),
    Measure("nucleus_circularity", "Nucleus circularity", "4π·area/perimeter²; 1 is a disc"),
    Measure("nucleus_solidity", "Nucleus solidity", "area / convex hull area"),
    Measure("chromatin_density", "Chromatin density", "mean darkness inside the nucleus (0–1)"),
    Measure("chromatin_contrast", "Chromatin contrast", "GLCM contrast: coarse, clumped chromatin is higher"),
    Measure("cell_area_px", "Cell area", "nucleus and cytoplasm", area=True, digits=0),
]


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile of sorted values, interpolated linearly between ranks."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class ClassRange:
    n: int
    low: float | None = None
    high: float | None = None
    place: str | None = None  # "inside", "below", "above"; None without a range or value


def class_range(values: list[float], value: float | None) -> ClassRange:
    values = sorted(values)
    if len(values) < MIN_CELLS:
        return ClassRange(len(values))
    low, high = percentile(values, LOW), percentile(values, HIGH)
    place = None
    if value is not None:
        place = "below" if value < low else "above" if value > high else "inside"
    return ClassRange(len(values), low, high, place)


@dataclass(frozen=True)
class Row:
    measure: Measure
    value: float | None
    unit: str
    pixels: float | None  # the area in pixels, beside µm²
    ranges: dict[int, ClassRange]


@dataclass(frozen=True)
class Panel:
    measurement: CellMeasurement | None
    rows: list[Row]
    class_ids: list[int]
    microns_per_pixel: float | None


def _scale(measure: Measure, mpp: float | None) -> tuple[float, str]:
    if not measure.area:
        return 1.0, ""
    return (mpp * mpp, "µm²") if mpp else (1.0, "px")


def panel(session: Session, project: Project, image_id: int, states: dict[int, CellState],
          class_ids: list[int]) -> Panel:
    """The cell's measurements and, per class in ``class_ids``, each value's range."""
    own = session.get(CellMeasurement, image_id)
    mpp = project.microns_per_pixel
    if own is None or own.error is not None:
        return Panel(own, [], class_ids, mpp)
    # "Final" as training sees it: consensus, a curator, or a trusted reference label.
    final = {i: c for i, s in states.items() if i != image_id
             and (c := training_label(project, s)) in class_ids}
    columns = [getattr(CellMeasurement, m.column) for m in MEASURES]
    others = session.execute(
        select(CellMeasurement.image_id, *columns).where(
            CellMeasurement.project_id == project.id,
            CellMeasurement.descriptor_version == own.descriptor_version,
            CellMeasurement.error.is_(None))).all()
    by_class: dict[int, list[tuple]] = {c: [] for c in class_ids}
    for row in others:
        if row[0] in final:
            by_class[final[row[0]]].append(row[1:])
    rows = []
    for k, m in enumerate(MEASURES):
        factor, unit = _scale(m, mpp)
        raw = getattr(own, m.column)
        value = None if raw is None else raw * factor
        ranges = {c: class_range([r[k] * factor for r in by_class[c] if r[k] is not None], value)
                  for c in class_ids}
        rows.append(Row(m, value, unit, raw if m.area and mpp else None, ranges))
    return Panel(own, rows, class_ids, mpp)


def panel_classes(project: Project, state: CellState, predicted: list[int]) -> list[int]:
    """The classes in question: the readers' votes, the final (or trusted reference)
    class, the model's top two."""
    ids = [*state.voted_classes]
    final = training_label(project, state)
    if final is not None:
        ids.append(final)
    return list(dict.fromkeys(ids + predicted[:2]))
