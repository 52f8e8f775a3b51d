"""A tiny trained classifier for the tests that predict (tests/test_predict.py,
tests/ml/test_ml_gradcam.py, the Predict page's browser test): trained once per
session (the ``tiny_model`` fixture in tests/conftest.py), then installed as a
model version of each test's project."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from tests.helpers import DEMO_DIR, add_round

# Three classes, so a prediction has a top three.
TINY_CLASSES = ["lymphocyte", "neutrophil", "eosinophil"]
TINY_SIZE = 75


def demo_cells(per_class: int = 6) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for index, name in enumerate(TINY_CLASSES):
        files = sorted((DEMO_DIR / name).iterdir())[:per_class]
        paths += files
        labels += [index] * len(files)
    return paths, labels


def train_tiny_model(folder: Path) -> Path:
    """75 px, random init, head fitted on 6 demo cells per class: seconds on 2 cores."""
    import numpy as np

    from worker.ml.backend import CellClassifier

    paths, labels = demo_cells()
    clf, _ = CellClassifier.create(list(range(len(TINY_CLASSES))), TINY_SIZE, "none", seed=0)
    features, ok = clf.features(paths, 32)
    assert ok.all()
    clf.fit_head(features, np.asarray(labels), epochs=20, seed=0)
    path = folder / "tiny.keras"
    clf.save(path)
    return path


def install_model(settings, project_id: int, model: Path, *, active: bool = True,
                  temperature: float = 1.5) -> int:
    """A model version of ``project_id`` from the tiny model (its own copy, with the
    project's class ids); returns the version id."""
    from sqlalchemy import select

    from models import LabelClass, ModelVersion, RoundStatus
    from models.db import session_scope
    from worker.activation import activate

    with session_scope(settings.database_url) as s:
        ids = {c.name: c.id for c in s.scalars(
            select(LabelClass).where(LabelClass.project_id == project_id))}
    class_ids = [ids[name] for name in TINY_CLASSES]
    rel = Path("models") / f"project-{project_id}" / f"tiny-{uuid.uuid4().hex[:8]}.keras"
    target = settings.storage_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, target)
    meta = json.loads(model.with_suffix(".json").read_text())
    target.with_suffix(".json").write_text(json.dumps({**meta, "class_ids": class_ids}))
    round_id = add_round(settings, project_id, status=RoundStatus.SUCCEEDED)
    with session_scope(settings.database_url) as s:
        version = ModelVersion(project_id=project_id, round_id=round_id,
                               artifact_path=rel.as_posix(), class_ids=class_ids,
                               input_size=TINY_SIZE, backbone_weights="none", metrics={},
                               temperature=temperature)
        s.add(version)
        s.flush()
        if active:
            activate(s, version)
        return version.id
