"""hemaloop's data model: SQLAlchemy 2 tables shared by webapp, worker and Alembic."""

from .annotations import Annotation, Flag, Kind, Origin
from .base import Base, utcnow
from .images import Image, Split
from .leases import Lease
from .projects import LabelClass, Project
from .review import QueueStatus, ReviewQueue, ReviewQueueItem
from .simulation import SimulationRun, SimulationStatus
from .tokens import ApiToken, Scope
from .training import ModelVersion, Prediction, RoundStatus, TrainingRound
from .users import Role, User

# After every mapped class: it builds queries, which configure the mappers.
from . import open_slots  # noqa: E402,F401  (keeps images.open_slots current on every flush)

__all__ = [
    "Annotation", "ApiToken", "Base", "Flag", "Image", "Kind", "LabelClass", "Lease",
    "ModelVersion", "Origin",
    "Prediction", "Project", "QueueStatus", "ReviewQueue", "ReviewQueueItem", "Role",
    "RoundStatus", "Scope", "SimulationRun", "SimulationStatus", "Split", "TrainingRound", "User",
    "utcnow",
]
