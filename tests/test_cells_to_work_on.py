"""Which pool cells are worked on, with k > 1: a cell with one of its two votes
still needs a reader (the labeling queue and review rounds offer it) and has no
final label yet (the model scores it, in a round and after an activation)."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select

from models import Image, Project, Split
from models.db import session_scope
from models.labels import EXCLUDED, FINAL, NEEDS_READERS, cell_states, unlabeled_pool
from models.review import ReviewQueueItem
from tests.helpers import LoggedIn
from tests.reading_helpers import contested_project, fake_active_model, pool_ids, read_cells
from worker.ml.selection import BatchTooLarge
from worker.review_queue import build_review_queue
from worker.scoring import plan_chunks


def _project_in_every_state(app, settings, tmp_path) -> tuple[int, dict[str, int]]:
    """k = 2 (3 after a monocyte vote); one cell in each state the rules know."""
    pid = contested_project(settings, tmp_path, 8)
    a, _ = read_cells(app, pid, "r1", ["lymphocyte", "monocyte", "ambiguous", "unusable",
                                       "neutrophil", "basophil"])
    b, _ = read_cells(app, pid, "r2", ["lymphocyte", "monocyte", "unusable", "lymphocyte"])
    assert b == [a[0], a[1], a[3], a[4]]  # the flagged cell left the queue
    untouched = [i for i in pool_ids(settings, pid) if i not in a]
    curator = LoggedIn(app.test_client(), "cara")
    assert curator.post(f"/curate/cells/{untouched[0]}/resolve", htmx=False,
                        data={"choice": "eosinophil", "submission_id": "c1"}).status_code == 302
    return pid, {"final": a[0], "contested, 2 of 3": a[1], "flagged": a[2], "excluded": a[3],
                 "disputed": a[4], "one of 2": a[5], "curated": untouched[0],
                 "untouched": untouched[1]}


def test_one_vote_of_two_is_offered_reviewed_and_scored(app, settings, tmp_path):
    pid, cell = _project_in_every_state(app, settings, tmp_path)
    needs_readers = {cell[n] for n in ("contested, 2 of 3", "one of 2", "untouched")}
    undecided = needs_readers | {cell["flagged"], cell["disputed"]}

    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        states = cell_states(s, project, Split.POOL)
        # The SQL condition and the Python rules agree on "no final label".
        assert {i for i, _ in unlabeled_pool(s, project)} == undecided == {
            c.image_id for c in states.values() if c.status not in (FINAL, EXCLUDED)}
        assert set(s.scalars(select(Image.id).where(Image.project_id == pid,
                                                    NEEDS_READERS))) == needs_readers

    # A review round chooses among the cells that still need a reader: all three fit,
    # a fourth is refused.
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        project.al_strategy, project.al_round_size, project.review_random_share = "random", 3, 0.0
    queue_id = build_review_queue(settings, pid, trigger="admin", seed=1)
    with session_scope(settings.database_url) as s:
        assert set(s.scalars(select(ReviewQueueItem.image_id)
                             .where(ReviewQueueItem.queue_id == queue_id))) == needs_readers
        s.get(Project, pid).al_round_size = 4
    with pytest.raises(BatchTooLarge):
        build_review_queue(settings, pid, trigger="admin", seed=1)

    # Re-scoring after an activation covers every cell without a final label.
    version = fake_active_model(settings, pid, {})
    one_per_chunk = dataclasses.replace(settings, score_chunk_cells=1)
    chunks = plan_chunks(one_per_chunk, version, only_missing=True)
    assert all(lo == hi for lo, hi in chunks)
    assert {lo for lo, _ in chunks} == undecided
