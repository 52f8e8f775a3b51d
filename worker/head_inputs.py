"""The head's input features for a set of cells, for a project's feature sources.

One code path for every user of a head: rounds (worker/training.py), pool
scoring (worker/scoring.py), MC-dropout and the cold start
(worker/review_queue.py), the strategy simulator (worker/simulation) and, through
the embeddings a round stores from these features, coreset/hybrid diversity and
the curator's nearest cells.

Each part comes through its own cache (worker/ml/feature_store.py):
backbone features under the backbone's key (worker/backbone.py), cell
descriptors under ``descriptor_key("cell")`` (computed on the worker once per
cell, versioned).  The parts are then standardised and concatenated by
worker/ml/feature_parts.py with the standardisation a classifier stores in
its model (or, in the simulator and for a fresh classifier, fitted on the
cells' parts without labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.feature_sources import uses_backbone, uses_descriptors


@dataclass
class Parts:
    """Raw parts for a list of cells (rows as given), the ok mask, and what failed."""

    sources: str
    parts: dict[str, np.ndarray]
    ok: np.ndarray
    failures: list[tuple[int, str]] = field(default_factory=list)  # (row, reason)
    cached: int = 0  # rows found in the cache (of the part that found fewest)


def read_parts(cache_dir: Path, sources: str, backbone_key: str | None, shas: Sequence[str],
               paths: Callable[[np.ndarray], list[Path]], classifier: Callable[[], object],
               batch_size: int, *, progress: Callable[[int, int], None] | None = None,
               store: bool = True, on_missing: Callable[[int], None] | None = None) -> Parts:
    """The parts ``sources`` reads for ``shas``: cached rows read, the rest computed.

    ``paths(rows)`` gives the image files of rows; ``classifier()`` the network
    that computes backbone features (only called when some are missing).
    ``store`` caches computed backbone features (descriptors are always cached:
    they do not depend on any model).  ``on_missing(n)`` hears how many cells
    need computing before the work starts.
    """
    from worker.backbone import features_through_cache
    from worker.ml.descriptors import DESCRIPTOR_DIM, cached_descriptors, descriptor_key
    from worker.ml.feature_parts import BACKBONE, DESCRIPTORS
    from worker.ml.feature_store import FeatureStore

    shas = list(shas)
    n = len(shas)
    ok = np.ones(n, dtype=bool)
    cached = n  # rows found in every part's cache (at least this few)
    parts: dict[str, np.ndarray] = {}
    reasons: dict[int, str] = {}
    desc_store = FeatureStore(Path(cache_dir), descriptor_key("cell"))
    desc_missing = 0
    if uses_descriptors(sources):
        _, found = desc_store.get_many(shas, DESCRIPTOR_DIM)
        desc_missing = int((~found).sum())
        cached = min(cached, int(found.sum()))
    if uses_backbone(sources):
        if not backbone_key:
            raise ValueError("backbone features need the backbone's cache key")
        feats, part_ok, failures, found = features_through_cache(
            Path(cache_dir), backbone_key, shas, paths, classifier, batch_size,
            progress=progress, store=store,
            on_missing=lambda m: on_missing(m + desc_missing) if on_missing else None)
        parts[BACKBONE] = feats
        ok &= part_ok
        reasons.update(dict(failures))
        cached = min(cached, found)
    elif on_missing is not None:
        on_missing(desc_missing)
    if uses_descriptors(sources):
        local: list[tuple[int, str]] = []
        all_paths = paths(np.arange(n)) if desc_missing else [""] * n
        feats, part_ok = cached_descriptors(desc_store, shas, all_paths, progress=progress,
                                            failures=local)
        parts[DESCRIPTORS] = feats
        ok &= part_ok
        for row, reason in local:
            reasons.setdefault(row, reason)
    return Parts(sources, parts, ok, sorted(reasons.items()), cached)


def fitted_head_input(sources: str, parts: Parts, rows: np.ndarray | None = None
                      ) -> tuple[np.ndarray, object]:
    """(head input, standardisation) with the standardisation fitted on ``rows``
    (default: every readable row): for a fresh classifier and the simulator."""
    from worker.ml.feature_parts import combine, fit_standardisation

    rows = np.flatnonzero(parts.ok) if rows is None else np.asarray(rows)
    stats = fit_standardisation(sources, {k: v[rows] for k, v in parts.parts.items()})
    return combine(sources, parts.parts, stats), stats


@dataclass(frozen=True)
class VersionView:
    """What reading a version's features needs, detached from its database session."""

    config: dict
    feature_key: str | None

    @classmethod
    def of(cls, version) -> "VersionView":
        return cls(dict(version.config or {}), version.feature_key)


def version_sources(version) -> str:
    """The feature sources a model version was trained on (older versions: backbone)."""
    return (version.config or {}).get("feature_sources") or "backbone"


def version_backbone_key(version) -> str | None:
    """The cache key of a version's backbone features (None for a descriptors-only head)."""
    if not uses_backbone(version_sources(version)):
        return None
    return version.feature_key


def version_features(settings, version, clf, shas: Sequence[str],
                     paths: Callable[[np.ndarray], list[Path]], *,
                     store: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A stored model version's head input for cells (zero rows where unreadable) and the
    ok mask, from the caches, standardised with the version's own model ``clf``
    (a CellClassifier, or a callable giving one, so fully cached calls can skip loading)."""
    from worker.ml.feature_parts import standardised_parts

    sources = version_sources(version)
    get_clf = clf if callable(clf) else (lambda: clf)
    parts = read_parts(settings.storage_dir / "features", sources,
                       version_backbone_key(version), shas, paths, get_clf,
                       settings.batch_size, store=store)
    if standardised_parts(sources):
        feats = get_clf().head_input(parts.parts)
    else:
        from worker.ml.feature_parts import combine

        feats = combine(sources, parts.parts, None)
    feats[~parts.ok] = 0.0
    return feats, parts.ok
