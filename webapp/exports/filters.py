"""Which cells an export covers: by state, by final class, labeled since a date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from models import Project
from models.labels import DISPUTED, EXCLUDED, FINAL, FLAGGED, OPEN

# ``labeled``: any final label, however reached (readers, curator, or a reference
# label the project trains or tests on), which is what a training set wants.
LABELED = "labeled"
STATES = (OPEN, FINAL, EXCLUDED, DISPUTED, FLAGGED, LABELED)


class ExportError(ValueError):
    """A request the export cannot serve (an unknown class, a bad date, no model…);
    the message is meant for the person who asked, ``status`` for an HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Filters:
    states: frozenset[str] = frozenset()  # empty: every state
    class_id: int | None = None  # the final label's class
    since: datetime | None = None  # labeled at or after (UTC)

    @property
    def empty(self) -> bool:
        return not self.states and self.class_id is None and self.since is None


ALL = Filters()  # no filter: every cell


def parse_since(text: str) -> datetime:
    """``2026-11-30`` (midnight UTC) or an ISO date-time (UTC unless it says otherwise)."""
    text = text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"'{text}' is not a date (use YYYY-MM-DD or an ISO date-time).") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_filters(project: Project, states=None, class_name: str | None = None,
                  since: str | None = None) -> Filters:
    """Filters from strings (a query string, CLI options); ExportError names what is wrong.

    ``states`` is an iterable of state names, or one comma-separated string.
    """
    if isinstance(states, str):
        states = states.split(",")
    wanted = frozenset(s.strip().lower() for s in (states or []) if s and s.strip())
    unknown = sorted(wanted - set(STATES))
    if unknown:
        raise ExportError(f"Unknown state {', '.join(unknown)}; states are {', '.join(STATES)}.")
    class_id = None
    if class_name:
        label_class = project.class_by_name(class_name.strip())
        if label_class is None:
            raise ExportError(f"Project {project.name} has no class '{class_name}'; its classes "
                              f"are {', '.join(c.name for c in project.classes)}.")
        class_id = label_class.id
    return Filters(wanted, class_id, parse_since(since) if since else None)
