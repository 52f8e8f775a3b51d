"""Choosing which cells readers label next: the active-learning strategies.

NumPy only, no database: production review rounds (worker/review_queue.py)
and the simulator (worker/simulation/) both call :func:`select_batch`, so what
the simulator measures is what the labeling queue does.

Strategies (``STRATEGIES``, a registry by name):

- ``random``: uniform, the baseline every other strategy must beat.
- ``least_confidence``, ``margin``, ``entropy``: uncertainty of the
  (calibrated) prediction.
- ``bald``: mutual information over MC-dropout passes of the head.
- ``coreset``: k-center greedy on the embeddings, away from labeled cells.
- ``hybrid``: the top M most uncertain (by margin), then a diverse B of them
  (uncertainty-weighted k-means representatives).
- ``class_balanced``: most uncertain cells, with the batch shared out over
  predicted classes in inverse proportion to how many labels each class has.

Before any model exists every strategy except ``random`` uses the cold start:
k-means representatives of the backbone-feature embeddings.
"""

from __future__ import annotations

from models.strategies import DEFAULT_STRATEGY

from .errors import BatchTooLarge, SelectionError, UnknownStrategy
from .strategies import (
    COLD_START, STRATEGIES, Candidates, Strategy, check_request, cold_start,
    get_strategy, select_batch,
)

__all__ = [
    "BatchTooLarge", "COLD_START", "Candidates", "DEFAULT_STRATEGY", "STRATEGIES",
    "SelectionError", "Strategy", "UnknownStrategy", "check_request", "cold_start",
    "get_strategy", "select_batch",
]
