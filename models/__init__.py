"""hemaloop's data model: SQLAlchemy 2 tables shared by webapp, worker and Alembic.

``from models import Image`` loads every table (models/tables.py); ``import
models`` alone does not.  The package also holds modules with no database in
them, which worker/ml uses and which must not drag SQLAlchemy into a process
that has no database (the import contracts in pyproject.toml): ``files``
(atomic writes), ``strategies`` (the strategy names) and ``pixels`` (image
depth rules).
"""

from importlib import import_module

__all__ = [
    "Annotation", "ApiToken", "Base", "CellMeasurement", "DescribeRun", "DescribeStatus", "Flag",
    "Image", "ImportJob", "ImportStatus", "Kind",
    "LabelClass", "Lease", "ModelVersion", "Origin", "Prediction", "Project", "ProjectMember",
    "QueueStatus", "ReviewQueue", "ReviewQueueItem", "Role",
    "RoundStatus", "Scope", "SimulationRun", "SimulationStatus", "Split", "TrainingRound", "User",
    "utcnow",
    # issue 15: self-supervised pretraining (models/pretraining.py)
    "BackboneChoice", "PretrainingRun", "PretrainingStatus", "ProjectBackbone",
]


def __getattr__(name: str):
    # PEP 562: the tables load on the first use of one of their names.
    if name in __all__:
        value = getattr(import_module(".tables", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
