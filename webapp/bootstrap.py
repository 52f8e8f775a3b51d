"""First accounts and projects: used by the CLI (``make run``) and by tests."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import LabelClass, Project, Role, User
from models.fine_tune_cost import gpu_worker_known
from models.presets import PRESETS


class SetupError(ValueError):
    """A project or account cannot be created as asked; the message says why."""


def create_user(session: Session, username: str, role: Role, password: str | None = None
                ) -> tuple[User, str]:
    """Create an account; returns it with its password (generated when not given)."""
    username = username.strip()
    if not username or len(username) > 80:
        raise SetupError("a username needs 1 to 80 characters")
    if session.scalar(select(User).where(User.username == username)):
        raise SetupError(f"user {username!r} already exists")
    if password is not None and len(password) < 8:
        raise SetupError("a password needs at least 8 characters")
    password = password or secrets.token_urlsafe(12)
    user = User(username=username, role=role)
    user.set_password(password)
    session.add(user)
    session.flush()
    return user, password


def _existing_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        raise SetupError(f"no user named {username.strip()!r}")
    return user


def set_password(session: Session, username: str, password: str | None = None) -> str:
    """A new password for an account (generated when not given); ends its sessions."""
    if password is not None and len(password) < 8:
        raise SetupError("a password needs at least 8 characters")
    user = _existing_user(session, username)
    password = password or secrets.token_urlsafe(12)
    user.set_password(password)  # bumps session_version: old sessions end
    session.flush()
    return password


def deactivate_user(session: Session, username: str) -> None:
    """The account can no longer log in, and its open sessions end now."""
    _existing_user(session, username).deactivate()
    session.flush()


def create_project(session: Session, name: str, preset: str = "pbc8", *, test_share: float = 0.1,
                   train_on_reference: bool = False, min_labels_per_class: int = 1,
                   fine_tune_blocks: int | None = None,
                   retrain_after_new_labels: int | None = None) -> Project:
    """``fine_tune_blocks=None``: 2 where a GPU worker is known, else head only (0):
    on a CPU worker fine-tuning takes most of a round for little gain."""
    if fine_tune_blocks is None:
        fine_tune_blocks = 2 if gpu_worker_known(session) else 0
    name = name.strip()
    if not name or len(name) > 120:
        raise SetupError("a project name needs 1 to 120 characters")
    if preset not in PRESETS:
        raise SetupError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not 0 <= test_share < 1:
        raise SetupError("the test share must be at least 0 and below 1")
    if not 0 <= fine_tune_blocks <= 11:
        raise SetupError("fine-tune blocks must be from 0 to 11 (InceptionV3 has 11)")
    if retrain_after_new_labels is not None and retrain_after_new_labels < 1:
        raise SetupError("the retraining interval must be at least 1 new label")
    if session.scalar(select(Project).where(Project.name == name)):
        raise SetupError(f"project {name!r} already exists")
    project = Project(name=name, test_share=test_share, train_on_reference=train_on_reference,
                      min_labels_per_class=min_labels_per_class, fine_tune_blocks=fine_tune_blocks,
                      retrain_after_new_labels=retrain_after_new_labels)
    project.classes = [
        LabelClass(position=i, name=cls, hotkey=key, colour=colour)
        for i, (cls, key, colour) in enumerate(PRESETS[preset])
    ]
    session.add(project)
    session.flush()
    return project


def find_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise SetupError(f"no project named {name!r}")
    return project
