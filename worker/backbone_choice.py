"""Which backbone weights a project's next round (and cold start) starts from.

The installation's HEMALOOP_BACKBONE_WEIGHTS, unless the project's admin chose
otherwise (models/pretraining.py's ``ProjectBackbone``): random
initialisation, ImageNet, or the weights file of one of the project's
succeeded pretraining runs, which goes in exactly where a local ImageNet
``.h5`` would.  The feature cache keys a weights file by its content
(worker/backbone.py's ``source_key``), so a new backbone never reuses the
features of another, and the warm-start check sees the change and starts the
next round afresh.
"""

from __future__ import annotations

from dataclasses import replace

from models import BackboneChoice, PretrainingRun, PretrainingStatus, ProjectBackbone
from models.db import session_scope
from models.settings import Settings

from .launch import RoundError


class BackboneChoiceError(RoundError):
    """The chosen pretraining run cannot be used (a message for the admin; a round
    that meets it fails with it)."""


def weights_setting(session, settings: Settings, project_id: int) -> str:
    """The backbone weights setting ("auto", "none", "imagenet" or a file path) for the project."""
    row = session.get(ProjectBackbone, project_id)
    if row is None or row.choice == BackboneChoice.SETTING:
        return settings.backbone_weights
    if row.choice == BackboneChoice.RANDOM:
        return "none"
    if row.choice == BackboneChoice.IMAGENET:
        return "imagenet"
    run = session.get(PretrainingRun, row.pretraining_run_id) if row.pretraining_run_id else None
    if run is None or run.status != PretrainingStatus.SUCCEEDED or not run.weights_path:
        raise BackboneChoiceError(
            "The project's chosen pretrained backbone is gone; choose another on its "
            "Pretraining page.")
    return str(settings.storage_dir / run.weights_path)


def project_settings(settings: Settings, project_id: int) -> Settings:
    """``settings`` with the project's backbone weights in place of the installation's."""
    with session_scope(settings.database_url) as s:
        weights = weights_setting(s, settings, project_id)
    if weights == settings.backbone_weights:
        return settings
    return replace(settings, backbone_weights=weights)
