"""Inter-reader agreement statistics (nominal categories), pure and small.

Cohen's kappa for two readers, Fleiss' kappa for a fixed number of readers
per cell (overall and per category), Krippendorff's alpha for any number of
readers per cell with missing votes.  Unit-tested against the textbook
worked examples (tests/test_agreement_stats.py).  A statistic that is
undefined (no data, or no variation to agree about) is None.
"""

from __future__ import annotations

from collections import Counter
from itertools import permutations
from typing import Hashable, Sequence

import numpy as np


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Agreement of two readers over the same cells, corrected for chance."""
    if len(a) != len(b):
        raise ValueError("both readers must rate the same cells")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if expected >= 1:
        return None  # both readers always said the same single category
    return (observed - expected) / (1 - expected)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """``counts[i, j]``: readers who put cell i in category j; every row sums to n."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or len(counts) == 0:
        return None
    n = counts.sum(axis=1)
    if not np.allclose(n, n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of readers per cell")
    n = n[0]
    per_cell = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    p = counts.sum(axis=0) / counts.sum()
    expected = float((p ** 2).sum())
    if expected >= 1:
        return None
    return float((per_cell.mean() - expected) / (1 - expected))


def fleiss_kappa_per_category(counts: np.ndarray) -> list[float | None]:
    """Fleiss (1971)'s kappa for each category j (agreement on j versus the rest)."""
    counts = np.asarray(counts, dtype=float)
    cells, n = len(counts), counts.sum(axis=1)[0]
    p = counts.sum(axis=0) / counts.sum()
    out: list[float | None] = []
    for j in range(counts.shape[1]):
        if p[j] in (0.0, 1.0):
            out.append(None)
            continue
        disagreement = (counts[:, j] * (n - counts[:, j])).sum()
        out.append(float(1 - disagreement / (cells * n * (n - 1) * p[j] * (1 - p[j]))))
    return out


def krippendorff_alpha(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Nominal alpha; ``units`` holds each cell's votes (any number, missing allowed).

    Cells with fewer than two votes carry no pairable values and are ignored.
    """
    coincidence: Counter = Counter()
    for votes in units:
        m = len(votes)
        if m < 2:
            continue
        for c, k in permutations(votes, 2):
            coincidence[(c, k)] += 1 / (m - 1)
    totals: Counter = Counter()
    for (c, _k), o in coincidence.items():
        totals[c] += o
    n = sum(totals.values())
    if n <= 1:
        return None
    observed = sum(o for (c, k), o in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if expected == 0:
        return None  # every vote the same category: nothing to disagree about
    return float(1 - (n - 1) * observed / expected)


def krippendorff_alpha_per_category(units: Sequence[Sequence[Hashable]], category: Hashable
                                    ) -> float | None:
    """Alpha on "this category or not": how reliably readers recognise one class."""
    return krippendorff_alpha([[v == category for v in votes] for votes in units])
