"""What fine-tuning costs on the workers that have trained lately, from the timings
rounds record (``timings.fine_tune_s``), and whether any of them had a GPU.

Read from finished rounds rather than asked of the workers: the webapp never
imports TensorFlow, workers come and go, and a measured round is what an admin
weighs a setting against.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from sqlalchemy import select
from sqlalchemy.orm import Session

from .training import RoundStatus, TrainingRound

RECENT = 30  # the rounds looked at: recent enough to be today's workers


@dataclass(frozen=True)
class WorkerCost:
    worker: str
    gpu: bool
    rounds: int  # rounds that fine-tuned
    blocks: int  # blocks fine-tuned in the latest of them
    fine_tune_s: float  # median seconds spent fine-tuning
    round_s: float | None  # median seconds of those rounds in all
    head_only_round_s: float | None  # median seconds of this worker's head-only rounds


def _recent(session: Session) -> list[TrainingRound]:
    return list(session.scalars(
        select(TrainingRound).where(TrainingRound.status == RoundStatus.SUCCEEDED)
        .order_by(TrainingRound.id.desc()).limit(RECENT)))


def _on_gpu(rnd: TrainingRound) -> bool:
    # Rounds record whether TensorFlow saw a GPU (worker/training.py build_network).
    # Older rounds recorded only the Keras dtype policy in force: with the default
    # HEMALOOP_MIXED_PRECISION=auto a worker picks mixed_float16 only on a GPU.
    config = rnd.config or {}
    if "gpu" in config:
        return bool(config["gpu"])
    return str(config.get("precision", "")).startswith("mixed")


def gpu_worker_known(session: Session) -> bool:
    """Whether a recent round (of any project) trained on a GPU."""
    return any(_on_gpu(r) for r in _recent(session))


def fine_tune_costs(session: Session) -> list[WorkerCost]:
    """Per worker, medians over its recent rounds; empty when none has fine-tuned yet."""
    by_worker: dict[str, list[TrainingRound]] = {}
    for rnd in _recent(session):
        by_worker.setdefault(rnd.worker or "unknown worker", []).append(rnd)
    costs = []
    for worker, rounds in by_worker.items():
        tuned = [r for r in rounds if (r.timings or {}).get("fine_tune_s") is not None]
        if not tuned:
            continue
        totals = [r.timings["total_s"] for r in tuned if r.timings.get("total_s")]
        head_only = [r.timings["total_s"] for r in rounds
                     if r not in tuned and (r.timings or {}).get("total_s")]
        costs.append(WorkerCost(
            worker=worker, gpu=any(_on_gpu(r) for r in rounds), rounds=len(tuned),
            blocks=int((tuned[0].config or {}).get("fine_tune_blocks") or 0),
            fine_tune_s=median(r.timings["fine_tune_s"] for r in tuned),
            round_s=median(totals) if totals else None,
            head_only_round_s=median(head_only) if head_only else None))
    return costs
