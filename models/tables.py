"""Every table of the data model, and the flush hook that keeps ``images.open_slots``
current.

Imported whole, before any session exists (models/db.py), and on the first
``from models import X``: a session never flushes without the hook, and every
relationship finds the class it names.
"""

from .annotations import Annotation, Flag, Kind, Origin
from .base import Base, utcnow
from .images import Image, Split
from .import_jobs import ImportJob, ImportStatus
from .leases import Lease
from .measurements import CellMeasurement, DescribeRun, DescribeStatus
from .memberships import ProjectMember
from .pretraining import BackboneChoice, PretrainingRun, PretrainingStatus, ProjectBackbone
from .projects import LabelClass, Project
from .review import QueueStatus, ReviewQueue, ReviewQueueItem
from .simulation import SimulationRun, SimulationStatus
from .tokens import ApiToken, Scope
from .training import ModelVersion, Prediction, RoundStatus, TrainingRound
from .users import Role, User

# After every mapped class: it builds queries, which configure the mappers.
from . import open_slots  # noqa: E402,F401  (keeps images.open_slots current on every flush)

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
