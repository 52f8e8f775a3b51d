"""Models kept loaded in a worker process between tasks (the predict worker).

Loading a classifier costs seconds (and tracing its forward pass more); a
prediction on one image costs tens of milliseconds.  So the predict worker
keeps the last few versions it used, keyed by file and modification time: a
version file that was replaced is loaded afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

# Active models of a few projects at once; each InceptionV3 is ~90 MB of weights.
KEEP = 3

_lock = threading.Lock()
_models: "OrderedDict[tuple[str, int], object]" = OrderedDict()


def classifier(path: Path):
    """The CellClassifier stored at ``path``, loaded once per process."""
    from worker.ml.backend import CellClassifier

    path = Path(path)
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    clf = CellClassifier.load(path)  # outside the lock: seconds
    with _lock:
        _models[key] = clf
        _models.move_to_end(key)
        while len(_models) > KEEP:
            _models.popitem(last=False)
    return clf


def loaded() -> list[str]:
    """The files of the models held now (oldest first), for logs and tests."""
    with _lock:
        return [k[0] for k in _models]
