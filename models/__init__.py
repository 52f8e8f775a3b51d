"""hemaloop's data model: SQLAlchemy 2 tables shared by webapp, worker and Alembic."""

from .annotations import Annotation, Flag, Kind, Origin
from .base import Base, utcnow
from .images import Image, Split
from .leases import Lease
from . import open_slots  # noqa: F401  (keeps images.open_slots current on every flush)
from .projects import LabelClass, Project
from .review import QueueStatus, ReviewQueue, ReviewQueueItem
from .simulation import SimulationRun, SimulationStatus
from .training import ModelVersion, Prediction, RoundStatus, TrainingRound
from .users import Role, User

__all__ = [
    "Annotation", "Base", "Flag", "Image", "Kind", "LabelClass", "Lease", "ModelVersion", "Origin",
    "Prediction", "Project", "QueueStatus", "ReviewQueue", "ReviewQueueItem", "Role",
    "RoundStatus", "SimulationRun", "SimulationStatus", "Split", "TrainingRound", "User",
    "utcnow",
]
