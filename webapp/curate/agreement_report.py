"""Agreement figures for a project, gathered from the readers' live votes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Flag, Project, User
from models.images import Split
from models.labels import cell_states

from .agreement import (cohen_kappa, fleiss_kappa, fleiss_kappa_per_category,
                        krippendorff_alpha, krippendorff_alpha_per_category)


@dataclass
class Report:
    categories: list[str]
    readers: dict[int, str]
    cells_with_two_or_more: int
    fleiss_kappa: float | None
    fleiss_cells: int
    krippendorff_alpha: float | None
    per_class: dict[str, dict[str, float | None]]
    pairs: list[dict]
    vs_curator: list[dict]
    # confusion[i][j]: pairs of votes on one cell where one reader said i, the other j.
    confusion: list[list[int]] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "categories": self.categories,
            "readers": {str(k): v for k, v in self.readers.items()},
            "cells_with_two_or_more_readers": self.cells_with_two_or_more,
            "fleiss_kappa": self.fleiss_kappa, "fleiss_cells": self.fleiss_cells,
            "krippendorff_alpha": self.krippendorff_alpha,
            "per_class": self.per_class, "cohen_kappa_pairs": self.pairs,
            "agreement_with_curator": self.vs_curator, "confusion": self.confusion,
        }


def _name(choice, names: dict[int, str]) -> str:
    return names[choice] if isinstance(choice, int) else Flag(choice).value


def agreement_report(session: Session, project: Project) -> Report:
    names = {c.id: c.name for c in project.classes}
    categories = [c.name for c in project.classes] + [Flag.AMBIGUOUS.value, Flag.UNUSABLE.value]
    index = {c: i for i, c in enumerate(categories)}
    states = cell_states(session, project, Split.POOL)
    votes = {i: {u: _name(v, names) for u, v in c.votes.items()} for i, c in states.items()
             if c.votes}
    reader_ids = sorted({u for v in votes.values() for u in v})
    readers = dict(session.execute(select(User.id, User.username)
                                   .where(User.id.in_(reader_ids or [-1]))).all())
    multi = {i: v for i, v in votes.items() if len(v) >= 2}
    units = [list(v.values()) for v in multi.values()]

    # Fleiss needs the same number of readers per cell: the most common count.
    fleiss, fleiss_cells, per_class_fleiss = None, 0, [None] * len(categories)
    if multi:
        m = Counter(len(v) for v in multi.values()).most_common(1)[0][0]
        rows = [v for v in units if len(v) == m]
        counts = np.zeros((len(rows), len(categories)))
        for r, unit in enumerate(rows):
            for choice in unit:
                counts[r, index[choice]] += 1
        fleiss, fleiss_cells = fleiss_kappa(counts), len(rows)
        per_class_fleiss = fleiss_kappa_per_category(counts)

    per_class = {c: {"fleiss_kappa": per_class_fleiss[i],
                     "krippendorff_alpha": krippendorff_alpha_per_category(units, c) if units else None}
                 for i, c in enumerate(categories)}

    pairs = []
    confusion = np.zeros((len(categories), len(categories)), dtype=int)
    for a, b in combinations(reader_ids, 2):
        shared = [(v[a], v[b]) for v in multi.values() if a in v and b in v]
        if shared:
            pairs.append({"readers": [readers.get(a), readers.get(b)], "cells": len(shared),
                          "cohen_kappa": cohen_kappa([x for x, _ in shared], [y for _, y in shared]),
                          "agreement": sum(x == y for x, y in shared) / len(shared)})
        for x, y in shared:
            confusion[index[x], index[y]] += 1
            confusion[index[y], index[x]] += 1 if x != y else 0

    vs_curator = []
    for u in reader_ids:
        settled = [(votes[i][u], names.get(c.curator.label_class_id, "excluded"))
                   for i, c in states.items() if c.curator is not None and i in votes and u in votes[i]]
        if settled:
            vs_curator.append({"reader": readers.get(u), "cells": len(settled),
                               "agreement": sum(x == y for x, y in settled) / len(settled)})
    return Report(categories, readers, len(multi), fleiss, fleiss_cells,
                  krippendorff_alpha(units) if units else None, per_class, pairs, vs_curator,
                  confusion.tolist())
