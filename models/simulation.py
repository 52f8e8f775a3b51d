"""Admin strategy comparisons: the simulator run over a project's own labeled cells."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, String, Text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow
from .job_status import JobStatus


SimulationStatus = JobStatus  # queued, running, succeeded, failed, cancelled


class SimulationRun(Base):
    __tablename__ = "simulation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    status: Mapped[SimulationStatus] = mapped_column(
        Enum(SimulationStatus, name="simulation_status",
             values_callable=lambda e: [m.value for m in e], native_enum=False, length=10),
        default=SimulationStatus.QUEUED)
    # strategies, initial, batch, rounds, repeats.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[float] = mapped_column(default=0.0)
    phase: Mapped[str] = mapped_column(String(200), default="queued")
    # summary.json of the run; the curves and plot are files under storage.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    output_dir: Mapped[str | None] = mapped_column(String(500))
    # A message for the admin (a refusal), never an exception's text.
    error: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Seconds left in the current phase (backbone features, then the rounds),
    # from that phase's measured rate; None until there is a rate.
    eta_seconds: Mapped[float | None]
    # The worker's last progress report: a run silent for longer than
    # HEMALOOP_ROUND_STALE_SECONDS lost its worker (a redelivered task finds the
    # row running and does nothing, so nothing else would end it).
    heartbeat_at: Mapped[datetime | None]


def fail_lost_simulations(session: Session, stale_seconds: float) -> int:
    """Fail running comparisons whose worker has not reported for ``stale_seconds``."""
    from datetime import timedelta

    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    done = session.execute(update(SimulationRun).where(
        SimulationRun.status == SimulationStatus.RUNNING,
        SimulationRun.heartbeat_at < cutoff)
        .values(status=SimulationStatus.FAILED, phase="worker lost", eta_seconds=None,
                finished_at=utcnow(),
                error=f"No progress from the worker for over {stale_seconds:.0f} s; it is "
                      "presumed lost. Start the comparison again."))
    session.commit()
    return done.rowcount


def cancel_simulation(session: Session, run: SimulationRun) -> bool:
    """Mark a queued or running comparison cancelled; False when it has already ended.

    A queued run is then never claimed; a running one stops at its next progress
    report (worker/simulation_runs.py writes progress only while the row is running).
    """
    done = session.execute(update(SimulationRun).where(
        SimulationRun.id == run.id,
        SimulationRun.status.in_([SimulationStatus.QUEUED, SimulationStatus.RUNNING]))
        .values(status=SimulationStatus.CANCELLED, phase="cancelled", eta_seconds=None,
                finished_at=utcnow()))
    session.commit()
    session.refresh(run)
    return done.rowcount == 1
