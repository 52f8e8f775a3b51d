"""Time left in a round (worker/eta.py): the measured rate of the current phase plus
the work left in every later phase, priced by what has been measured; driven by a
clock the test controls.  And one number for the admin page and the CLI."""

from __future__ import annotations

import pytest

from worker.eta import EtaEstimator, Phase


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _plan() -> list[Phase]:
    # Priors: reading a cell 0.02 s, a fine-tuning cell-epoch 0.06 s.
    return [
        Phase("build", 1, 3.0, calibrates=False),
        Phase("features", 100, 0.02, kind="forward"),
        Phase("fine_tune", 50, 0.06),
        Phase("refeature", 100, 0.02, kind="forward"),
        Phase("publish", 1, 2.0, calibrates=False),
    ]


def test_nothing_measured_yet_gives_no_estimate():
    clock = Clock()
    eta = EtaEstimator(_plan(), clock)
    assert eta.seconds_left() is None
    eta.start("build")
    clock.advance(2)
    assert eta.seconds_left() is None  # building says nothing about the machine's speed
    eta.start("features")
    eta.update(0.01)
    clock.advance(0.2)
    assert eta.seconds_left() is None  # too little of the phase to measure


def test_the_estimate_prices_every_remaining_phase_by_measured_rates():
    """This machine reads cells 5x slower than the prior (0.1 s, not 0.02 s)."""
    clock = Clock()
    eta = EtaEstimator(_plan(), clock)
    eta.start("build")
    clock.advance(3)
    eta.start("features")
    clock.advance(3)
    eta.update(0.05)  # the first batch, 5 cells, with the graph's warm-up
    assert eta.seconds_left() is None  # one report: nothing measured yet
    clock.advance(0.5)
    eta.update(0.1)  # 5 more cells in 0.5 s: 0.1 s a cell
    # 9 s left here; fine-tuning at its prior x the measured speed factor (5):
    # 50 x 0.06 x 5 = 15 s; re-reading 100 x 0.1 = 10 s; publishing, a fixed cost, 2 s.
    assert eta.seconds_left() == pytest.approx(9 + 15 + 10 + 2)

    clock.advance(9)
    eta.update(1.0)
    eta.start("fine_tune")
    # Reading measured at 0.1 s a cell; fine-tuning not measured yet: its prior x 5.
    assert eta.seconds_left() == pytest.approx(15 + 10 + 2)
    clock.advance(4)
    eta.update(0.1)
    clock.advance(16)
    eta.update(0.5)  # fine-tuning is slower than its prior said: 16 s for 40 %
    # 20 s left here; re-reading at reading's own measured rate (10 s), not at the new
    # speed factor; publishing 2 s.
    assert eta.seconds_left() == pytest.approx(20 + 10 + 2)
    clock.advance(5)  # no report during a long epoch: the estimate counts down
    assert eta.seconds_left() == pytest.approx(15 + 10 + 2)
    clock.advance(15)
    eta.update(1.0)
    eta.start("refeature")
    assert eta.seconds_left() == pytest.approx(10 + 2)


def test_the_first_batch_warm_up_does_not_inflate_the_rate():
    """The first report of a phase carries one-off costs (building the graph); the rate
    is measured from it to the latest report once there are two."""
    clock = Clock()
    eta = EtaEstimator([Phase("features", 100, 0.02, kind="forward")], clock)
    eta.start("features")
    clock.advance(10)  # 8 s of warm-up, then 20 cells at 0.1 s
    eta.update(0.2)
    assert eta.seconds_left() is None  # from the phase's start it would say 40 s
    clock.advance(2)
    eta.update(0.4)  # 20 more cells in 2 s: 0.1 s a cell
    assert eta.seconds_left() == pytest.approx(6)


def test_a_steady_round_counts_down_with_the_clock():
    """With rates that match what was measured, the estimate falls one second per
    second across phases: it neither grows nor jumps (issue 14: 3 -> 7 min)."""
    clock = Clock()
    eta = EtaEstimator([Phase("features", 100, 0.02, kind="forward"),
                        Phase("refeature", 100, 0.02, kind="forward")], clock)
    eta.start("features")
    estimates = []
    clock.advance(5)  # 0.5 s a cell
    eta.update(0.1)
    assert eta.seconds_left() is None
    for done in range(20, 101, 10):
        clock.advance(5)
        eta.update(done / 100)
        estimates.append(eta.seconds_left())
    eta.start("refeature")
    for done in range(10, 101, 10):
        clock.advance(5)
        eta.update(done / 100)
        estimates.append(eta.seconds_left())
    assert estimates[0] == pytest.approx(40 + 50)
    for earlier, later in zip(estimates, estimates[1:]):
        assert later == pytest.approx(earlier - 5)
    assert estimates[-1] == pytest.approx(0)


def test_cached_cells_and_skipped_phases_cost_nothing():
    clock = Clock()
    eta = EtaEstimator(_plan(), clock)
    eta.start("features")
    eta.set_units(20)  # 80 of the 100 cells came from the cache
    clock.advance(1)
    eta.update(0.25)
    clock.advance(1)
    eta.update(0.5)  # 5 cells in 1 s: 0.2 s a cell
    left = eta.seconds_left()
    # 2 s here, fine-tuning 50 x 0.06 x 10 = 30 s, re-reading 100 x 0.2 = 20 s, publish 2 s.
    assert left == pytest.approx(2 + 30 + 20 + 2)
    eta.skip("refeature")  # fine-tuning not kept: nothing to re-read
    assert eta.seconds_left() == pytest.approx(left - 20)
    clock.advance(2)
    eta.update(1.0)
    eta.start("publish")  # fine-tuning never ran (too few labels): dropped
    assert eta.seconds_left() == pytest.approx(2)


def test_progress_stores_the_estimate_and_page_and_cli_show_the_same(settings):
    """The worker's Progress writes the estimator's value; the admin page's round row
    and `hemaloop round`'s progress bar word that one stored number the same way."""
    from models import RoundStatus
    from models.db import session_scope
    from tests.helpers import add_round
    from webapp.bootstrap import create_project
    from webapp.cli import progress_text
    from worker.round_state import Progress

    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    round_id = add_round(settings, pid, status=RoundStatus.RUNNING, worker="w")
    clock = Clock()
    progress = Progress(settings, round_id, clock=clock)
    progress.plan([Phase("features", 100, 0.02, kind="forward"),
                   Phase("head", 10, 1.0)])
    progress.phase(0.0, 0.8, "reading cells", name="features")
    clock.advance(10)
    progress(0.05, "reading cells: 5/100")  # the first batch
    clock.advance(20)
    # 20 cells in 20 s: 75 s left here; the head at its prior x 50: 10 x 1 x 50 s.
    progress(0.25, "reading cells: 25/100")
    from models import TrainingRound

    with session_scope(settings.database_url) as s:
        rnd = s.get(TrainingRound, round_id)
        assert rnd.eta_seconds == pytest.approx(75 + 500)
        assert rnd.time_left == "about 10 min left"
        assert progress_text(rnd) == "reading cells: 25/100 · about 10 min left"

    from webapp import create_app

    from tests.helpers import LoggedIn, make_user

    app = create_app(settings)
    app.config["TESTING"] = True
    make_user(settings, "boss", "admin")
    row = LoggedIn(app.test_client(), "boss").get(f"/admin/rounds/{round_id}/row")
    assert "reading cells: 25/100 · about 10 min left" in row.text
