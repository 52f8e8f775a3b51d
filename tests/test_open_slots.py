"""images.open_slots (the queue's cache of 'readers this cell still needs') never
drifts from the labels module's rules, whichever way a cell changes."""

from __future__ import annotations

import threading

import pytest

from sqlalchemy import select, update

from models import Annotation, Image, Origin, Project, Split
from models.db import session_scope
from models.labels import OPEN, cell_states
from models.open_slots import refresh_open_slots
from tests.helpers import LoggedIn, make_user
from tests.reading_helpers import (
    contested_project, fake_active_model, flat_project, pool_ids, read_cells, shown, submission,
)


def _stored(settings, pid: int) -> dict[int, int]:
    with session_scope(settings.database_url) as s:
        return {i: n for i, n in s.execute(
            select(Image.id, Image.open_slots).where(Image.project_id == pid))}


def _expected(settings, pid: int) -> dict[int, int]:
    """What models/labels.py says, computed in Python from the whole history."""
    with session_scope(settings.database_url) as s:
        cells = cell_states(s, s.get(Project, pid))
        return {c.image_id: (c.need - len(c.votes) if c.split == Split.POOL and c.status == OPEN
                             else 0) for c in cells.values()}


def _check(settings, pid: int) -> dict[int, int]:
    stored = _stored(settings, pid)
    assert stored == _expected(settings, pid)
    return stored


def test_cache_follows_votes_undo_flags_curators_verification_and_rules(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 10, readers_per_cell=2, contested_readers=3,
                       contested_class_ids=[], agreement_share=0.0)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        project.contested_class_ids = [project.class_by_name("monocyte").id]
    assert set(_check(settings, pid).values()) == {2}  # imported: k = 2 each
    for name in ("r1", "r2", "r3"):
        make_user(settings, name, "pathologist")
    make_user(settings, "cara", "curator")
    make_user(settings, "adam", "admin")

    a, r1 = read_cells(app, pid, "r1", ["lymphocyte", "monocyte", "ambiguous", "platelet"])
    stored = _check(settings, pid)
    assert stored[a[0]] == 1 and stored[a[1]] == 2  # a contested vote raises k to 3
    assert stored[a[2]] == 0  # flagged: waits for a curator

    r1.post(f"/label/{pid}/undo")  # the platelet vote is voided
    assert _check(settings, pid)[a[3]] == 2

    b, _ = read_cells(app, pid, "r2", ["lymphocyte", "monocyte", "basophil"])
    stored = _check(settings, pid)
    assert stored[a[0]] == 0  # two agreeing votes: final

    curator = LoggedIn(app.test_client(), "cara")
    assert curator.post(f"/curate/cells/{a[2]}/resolve", htmx=False,
                        data={"choice": "eosinophil", "submission_id": "c1"}).status_code == 302
    assert _check(settings, pid)[a[2]] == 0

    # Bulk verification: confirmed cells get a vote each.
    rest = [i for i in pool_ids(settings, pid) if _stored(settings, pid)[i] == 2]
    version = fake_active_model(settings, pid, {i: ("basophil", 0.95) for i in rest})
    r3 = LoggedIn(app.test_client(), "r3")
    grid = [i for i in rest if f'data-image-id="{i}"' in
            r3.get(f"/label/{pid}/verify?class=basophil&min=0.9").text]
    assert grid
    assert r3.post(f"/label/{pid}/verify", htmx=False, data={
        "class": "basophil", "min": "0.9", "model_version_id": str(version), "batch": "v1",
        "image_id": [str(i) for i in grid]}).status_code == 302
    assert all(_check(settings, pid)[i] == 1 for i in grid)

    # Reading rules change: every cell is recomputed.
    admin = LoggedIn(app.test_client(), "adam")
    assert admin.post(f"/admin/projects/{pid}/reading", htmx=False, data={
        "readers_per_cell": "1", "contested_readers": "", "agreement_share": "0",
        "lease_minutes": "10"}).status_code == 302
    stored = _check(settings, pid)
    assert stored[a[1]] == 0 and all(stored[i] == 0 for i in grid)


def test_core_inserts_are_refreshed_explicitly(settings, tmp_path):
    """Bulk writes through Core bypass the ORM hook; refresh_open_slots puts it right."""
    pid = flat_project(settings, tmp_path, "p", 4)
    ids = pool_ids(settings, pid)
    reader = make_user(settings, "r1", "pathologist")
    with session_scope(settings.database_url) as s:
        lymphocyte = s.get(Project, pid).class_by_name("lymphocyte").id
        s.execute(Annotation.__table__.insert(), [
            {"image_id": i, "user_id": reader, "origin": Origin.READER, "kind": "label",
             "label_class_id": lymphocyte} for i in ids[:2]])
        s.execute(update(Image).where(Image.id == ids[3]).values(split=Split.TEST))
    assert _stored(settings, pid) != _expected(settings, pid)
    with session_scope(settings.database_url) as s:
        refresh_open_slots(s, s.get(Project, pid))
    assert _check(settings, pid) == {ids[0]: 0, ids[1]: 0, ids[2]: 1, ids[3]: 0}


@pytest.mark.slow
def test_readers_voting_on_one_cell_at_once_leave_the_cache_exact(app, settings, tmp_path):
    """k = 2 and 20 readers at once: pairs of readers vote on the same cells
    concurrently (on PostgreSQL, in overlapping transactions)."""
    # 40 cells: room for every reader's two votes and the lease each then holds.
    pid = flat_project(settings, tmp_path, "p", 40, readers_per_cell=2)
    names = [f"r{n}" for n in range(20)]
    for name in names:
        make_user(settings, name, "pathologist")
    start = threading.Barrier(len(names))
    errors: list[str] = []

    def work(name: str) -> None:
        try:
            reader = LoggedIn(app.test_client(), name)
            html = reader.get(f"/label/{pid}").text
            start.wait()
            for _ in range(2):
                if shown(html) is None:
                    return
                response = reader.post(f"/label/{pid}/cells/{shown(html)}",
                                       data={"choice": "lymphocyte",
                                             "submission_id": submission(html)})
                if response.status_code != 200:
                    errors.append(f"{name}: {response.status_code}")
                    return
                html = response.text
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    stored = _check(settings, pid)
    with session_scope(settings.database_url) as s:
        votes = [len(c.votes) for c in cell_states(s, s.get(Project, pid)).values()]
    assert max(votes) <= 2 and sum(votes) == 40
    assert sum(stored.values()) == 80 - 40


def test_a_cell_moved_to_the_test_split_leaves_the_queue(settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 3)
    ids = pool_ids(settings, pid)
    with session_scope(settings.database_url) as s:
        s.get(Image, ids[0]).split = Split.TEST
    assert _check(settings, pid) == {ids[0]: 0, ids[1]: 1, ids[2]: 1}
    with session_scope(settings.database_url) as s:
        s.get(Image, ids[0]).split = Split.POOL
    assert _check(settings, pid)[ids[0]] == 1


def test_cells_imported_into_an_agreement_sample_project(settings, tmp_path):
    """With an agreement sample, a new cell's k depends on its id: set after the INSERT."""
    pid = flat_project(settings, tmp_path, "p", 12, contested_readers=2, agreement_share=0.5)
    stored = _check(settings, pid)
    assert set(stored.values()) == {1, 2}


def test_migration_0005_backfills_what_the_rules_say(app, settings, tmp_path):
    """The migration writes its own SQL for the backfill: it must agree with the
    labels module on a history with every kind of vote."""
    from migrations.runner import downgrade, upgrade

    pid = contested_project(settings, tmp_path, 14, agreement_share=0.3)
    a, r1 = read_cells(app, pid, "r1", ["lymphocyte", "monocyte", "ambiguous", "unusable",
                                        "platelet", "basophil"])
    r1.post(f"/label/{pid}/undo")
    read_cells(app, pid, "r2", ["lymphocyte", "monocyte", "unusable", "eosinophil"])
    LoggedIn(app.test_client(), "cara").post(f"/curate/cells/{a[2]}/resolve", htmx=False,
                                             data={"choice": "excluded", "submission_id": "c"})
    expected = _check(settings, pid)
    assert len(set(expected.values())) >= 3  # a varied history: 0, 1, 2 and 3 all occur

    downgrade(settings.database_url, "0004")
    upgrade(settings.database_url)
    assert _stored(settings, pid) == expected


def test_a_claim_that_finds_the_cell_full_after_its_insert_is_withdrawn(settings, tmp_path):
    """PostgreSQL: a claim's room check reads its statement's snapshot.  When the slot
    it takes was just given up by a vote (the INSERT waited for that vote to commit),
    the INSERT goes through on a full cell; the second look withdraws it.  The state
    that INSERT leaves behind is built here directly: two votes and a third lease."""
    from datetime import timedelta

    import pytest

    from models import Kind, Lease, utcnow
    from models.labels import ReadingRules
    from webapp.label.leases import _kept

    if not settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time: its room check cannot be overtaken")
    pid = flat_project(settings, tmp_path, "p", 2, readers_per_cell=2)
    users = [make_user(settings, f"r{n}", "pathologist") for n in range(3)]
    cell, other = pool_ids(settings, pid)
    now = utcnow()
    with session_scope(settings.database_url) as s:
        lymphocyte = s.get(Project, pid).class_by_name("lymphocyte").id
        for user in users[:2]:
            s.add(Annotation(image_id=cell, user_id=user, origin=Origin.READER, kind=Kind.LABEL,
                             label_class_id=lymphocyte))
        s.add_all([Lease(image_id=i, user_id=users[2], slot=1, created_at=now,
                         expires_at=now + timedelta(minutes=10)) for i in (cell, other)])
    with session_scope(settings.database_url) as s:
        rules = ReadingRules.of(s.get(Project, pid))
        leases = dict(s.execute(select(Lease.image_id, Lease.id)).all())
        conn = s.connection()
        assert not _kept(conn, rules, cell, leases[cell], now)  # 2 votes + 1 lease > k = 2
        assert _kept(conn, rules, other, leases[other], now)  # room: the claim stands
    with session_scope(settings.database_url) as s:
        assert list(s.scalars(select(Lease.image_id))) == [other]


def test_a_cell_locked_for_a_vote_is_forgotten_when_its_transaction_ends(settings, tmp_path):
    """The refresh after a vote skips its own lock only while the vote's lock is held."""
    from models.open_slots import LOCKED, lock_for_vote, lock_for_votes

    pid = flat_project(settings, tmp_path, "p", 1)
    cell = pool_ids(settings, pid)[0]
    postgres = settings.database_url.startswith("postgresql")
    with session_scope(settings.database_url) as s:
        assert lock_for_vote(s, cell).id == cell
        assert s.info.get(LOCKED, set()) == ({cell} if postgres else set())
        s.commit()
        assert LOCKED not in s.info
        lock_for_vote(s, cell)
        s.rollback()
        assert LOCKED not in s.info
        lock_for_votes(s, [cell])  # bulk verification's lock
        assert s.info.get(LOCKED, set()) == ({cell} if postgres else set())
