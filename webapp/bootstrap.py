"""First accounts and projects: used by the CLI (``make run``) and by tests."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models import LabelClass, Project, ProjectMember, Role, User
from models.fine_tune_cost import gpu_worker_known
from models.presets import PRESETS, RESERVED_HOTKEYS


class SetupError(ValueError):
    """A project or account cannot be created as asked; the message says why."""


def create_user(session: Session, username: str, role: Role, password: str | None = None,
                projects: Iterable[Project] = ()) -> tuple[User, str]:
    """Create an account; returns it with its password (generated when not given).

    A pathologist or curator sees only ``projects`` (and those they are added
    to later); admins see every project.
    """
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
    if role != Role.ADMIN:  # admins see every project without rows
        for project in projects:
            add_member(session, project, user)
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
    user.must_change_password = False
    session.flush()
    return password


def one_time_password(session: Session, user: User) -> str:
    """An admin's reset: a generated password the user must replace at their next
    login; their open sessions end."""
    password = secrets.token_urlsafe(12)
    user.set_password(password)  # bumps session_version
    user.must_change_password = True
    session.flush()
    return password


def add_member(session: Session, project: Project, user: User) -> bool:
    """``user`` may read ``project``; False when they already could."""
    if session.get(ProjectMember, (project.id, user.id)) is not None:
        return False
    session.add(ProjectMember(project_id=project.id, user_id=user.id))
    session.flush()
    return True


def remove_member(session: Session, project: Project, user: User) -> None:
    session.execute(delete(ProjectMember).where(ProjectMember.project_id == project.id,
                                                ProjectMember.user_id == user.id))
    session.flush()


def add_all_readers(session: Session, project: Project) -> int:
    """Every active pathologist and curator joins ``project`` (the demo project)."""
    readers = session.scalars(select(User).where(
        User.role.in_([Role.PATHOLOGIST, Role.CURATOR]), User.is_active))
    return sum(add_member(session, project, user) for user in readers)


def deactivate_user(session: Session, username: str) -> None:
    """The account can no longer log in, and its open sessions end now."""
    _existing_user(session, username).deactivate()
    session.flush()


@dataclass(frozen=True)
class ClassSpec:
    name: str
    hotkey: str
    colour: str


COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def check_classes(specs: Sequence[ClassSpec], existing: Sequence[LabelClass] = ()) -> list[str]:
    """Problems with a set of classes (new ones in ``specs``, beside ``existing``), for the user.

    Hotkeys are single keys, compared as the labeling page compares them (lower
    case), and must not be one of the page's own keys (models/presets.py).
    """
    problems: list[str] = []
    names = {c.name.lower(): c.name for c in existing}
    keys = {c.hotkey.lower(): c.name for c in existing}
    if len(specs) + len(existing) < 2:
        problems.append("a project needs at least two classes")
    for spec in specs:
        name, key = spec.name.strip(), spec.hotkey.strip().lower()
        if not name or len(name) > 60:
            problems.append(f"class name {name!r}: needs 1 to 60 characters")
        elif "/" in name or "\\" in name:
            problems.append(f"class name {name!r}: no slashes (it names a folder in imports)")
        elif name.lower() in names:
            problems.append(f"class name {name!r} is used twice")
        if len(key) != 1:
            problems.append(f"hotkey of {name!r}: one key, such as 1 or q")
        elif key in RESERVED_HOTKEYS:
            problems.append(f"hotkey {key!r} of {name!r} is the labeling page's own key "
                            f"(reserved: {' '.join(sorted(k for k in RESERVED_HOTKEYS if len(k) == 1))},"
                            " Enter, Backspace)")
        elif key in keys:
            problems.append(f"hotkey {key!r} of {name!r} is already {keys[key]!r}'s")
        if not COLOUR.fullmatch(spec.colour.strip()):
            problems.append(f"colour of {name!r}: a #rrggbb value")
        names.setdefault(name.lower(), name)
        if len(key) == 1:
            keys.setdefault(key, name)
    return problems


def preset_classes(preset: str) -> list[ClassSpec]:
    if preset not in PRESETS:
        raise SetupError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return [ClassSpec(*c) for c in PRESETS[preset]]


def add_class(session: Session, project: Project, spec: ClassSpec) -> LabelClass:
    """A new class at the end of the project's classes; existing labels stay.

    The next round trains a new network: a warm start needs the same classes
    (worker/training.py refuses one when they changed).
    """
    problems = check_classes([spec], project.classes)
    problems = [p for p in problems if not p.startswith("a project needs")]
    if problems:
        raise SetupError("; ".join(problems))
    position = max((c.position for c in project.classes), default=-1) + 1
    label_class = LabelClass(project_id=project.id, position=position, name=spec.name.strip(),
                             hotkey=spec.hotkey.strip().lower(), colour=spec.colour.strip().lower())
    project.classes.append(label_class)
    session.flush()
    return label_class


def create_project(session: Session, name: str, preset: str = "pbc8", *, test_share: float = 0.1,
                   train_on_reference: bool = False, min_labels_per_class: int = 1,
                   fine_tune_blocks: int | None = None,
                   retrain_after_new_labels: int | None = None,
                   classes: Sequence[ClassSpec] | None = None, **settings) -> Project:
    """A project with a preset's classes, or ``classes`` when given.

    ``settings`` are further Project columns (reading rules, strategy), set as given.
    ``fine_tune_blocks=None``: 2 where a GPU worker is known, else head only (0):
    on a CPU worker fine-tuning takes most of a round for little gain.
    """
    if fine_tune_blocks is None:
        fine_tune_blocks = 2 if gpu_worker_known(session) else 0
    name = name.strip()
    if not name or len(name) > 120:
        raise SetupError("a project name needs 1 to 120 characters")
    specs = list(classes) if classes is not None else preset_classes(preset)
    problems = check_classes(specs)
    if problems:
        raise SetupError("; ".join(problems))
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
                      retrain_after_new_labels=retrain_after_new_labels, **settings)
    project.classes = [
        LabelClass(position=i, name=c.name.strip(), hotkey=c.hotkey.strip().lower(),
                   colour=c.colour.strip().lower())
        for i, c in enumerate(specs)
    ]
    session.add(project)
    session.flush()
    return project


def find_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise SetupError(f"no project named {name!r}")
    return project
