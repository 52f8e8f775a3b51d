"""The layers hold at run time, not only in import-linter's static graph: worker/ml
loads without SQLAlchemy or Celery (it imports models' plain modules, and
``import models`` loads no table), and the web process loads no TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO

PROBE = """
import sys
{imports}
print(",".join(sorted(m for m in ("sqlalchemy", "celery", "flask", "tensorflow")
                      if m in sys.modules)))
"""


def _loaded(imports: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return {m for m in out.strip().split(",") if m}


def test_worker_ml_loads_no_database_and_no_celery():
    pytest.importorskip("tensorflow")
    loaded = _loaded("import worker.ml.data, worker.ml.feature_store, worker.ml.embeddings, "
                     "worker.ml.selection, worker.ml.backend, worker.ml.descriptors")
    assert "sqlalchemy" not in loaded and "celery" not in loaded and "flask" not in loaded


def test_models_package_loads_its_tables_on_first_use_only():
    assert "sqlalchemy" not in _loaded("import models, models.files, models.strategies, "
                                       "models.pixels")
    assert "sqlalchemy" in _loaded("from models import Image")


def test_the_web_app_loads_no_tensorflow():
    loaded = _loaded("from webapp import create_app")
    assert "tensorflow" not in loaded and "flask" in loaded
