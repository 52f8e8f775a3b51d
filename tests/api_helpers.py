"""Helpers for API v1 tests: tokens made the way the Account page makes them, and a
project with model versions and predictions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from models import (ApiToken, Image, ModelVersion, Prediction, Project, RoundStatus, Scope,
                    Split, User)
from models.db import session_scope
from tests.helpers import add_round


def make_token(settings, user_id: int, scopes: list[str], expires_at: datetime | None = None,
               name: str = "test") -> str:
    with session_scope(settings.database_url) as s:
        user = s.get(User, user_id)
        row, token = ApiToken.issue(user, name, [Scope(x) for x in scopes], expires_at)
        s.add(row)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def models_with_predictions(settings, project_id: int) -> tuple[list[int], list[int], list[int]]:
    """Two finished rounds and their versions (the second active, with predictions)."""
    rounds = [add_round(settings, project_id, status=RoundStatus.SUCCEEDED) for _ in range(2)]
    with session_scope(settings.database_url) as s:
        images = s.scalars(select(Image).where(Image.project_id == project_id)).all()
        class_ids = [c.id for c in s.get(Project, project_id).classes]
        versions = []
        for i, round_id in enumerate(rounds):
            v = ModelVersion(project_id=project_id, round_id=round_id, artifact_path="x.keras",
                             class_ids=class_ids, input_size=75, backbone_weights="none",
                             metrics={}, is_active=i == 1)
            s.add(v)
            s.flush()
            versions.append(v.id)
        for n, image in enumerate(images):
            if image.split != Split.POOL:
                continue
            conf = (n % 10) / 10 + 0.05
            s.add(Prediction(model_version_id=versions[1], image_id=image.id,
                             probabilities={str(class_ids[0]): conf},
                             predicted_class_id=class_ids[n % len(class_ids)], confidence=conf,
                             entropy=1 - conf, margin=conf / 2, least_confidence=1 - conf))
        return rounds, versions, [i.id for i in images]
