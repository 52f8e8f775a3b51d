"""Time left in a training round: the work left in every phase, priced by measured rates.

A round is a fixed sequence of phases (build, features, head, fine-tuning,
re-reading, publishing), each a known amount of work in units (cells,
cell-epochs, epochs) with a prior cost per unit.  As the round runs:

* the current phase's remaining time comes from its own measured rate
  (elapsed in the phase / fraction done);
* a phase not started yet is priced at the measured rate of a finished or
  running phase of the same kind (re-reading cells costs what reading them
  did), or else at its prior times the speed factor measured so far (how much
  faster or slower this machine is than the priors, e.g. GPU vs CPU).

The estimate is written on the round row (eta_seconds) and both the admin page
and ``hemaloop round`` show that one number.  Pure logic with an injectable
clock, so it is tested without a network or a database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

# Before this much of a phase is done (and this long has passed in it), its
# rate is too noisy to measure.
MIN_FRACTION = 0.02
MIN_PHASE_SECONDS = 0.5


@dataclass
class Phase:
    name: str
    units: float           # amount of work: cells, cell-epochs, epochs...
    seconds_per_unit: float  # the prior cost of one unit
    kind: str = ""         # phases of one kind share a measured rate ("" = the name)
    # Phases whose time says nothing about the machine's speed (building the
    # network, publishing) do not move the speed factor.
    calibrates: bool = True

    @property
    def rate_kind(self) -> str:
        return self.kind or self.name


class EtaEstimator:
    def __init__(self, phases: list[Phase], clock: Callable[[], float] = time.monotonic):
        self.phases = list(phases)
        self.clock = clock
        self._index = -1
        self._phase_started = clock()
        self._fraction = 0.0
        # The phase's first report (a baseline: the first batch carries warm-up
        # costs, e.g. building the graph) and its latest: (clock, fraction).
        self._first: tuple[float, float] | None = None
        self._latest: tuple[float, float] | None = None
        # kind -> (seconds, units) measured in finished phases
        self._measured: dict[str, tuple[float, float]] = {}
        # (measured seconds, prior seconds) of finished calibrating phases
        self._speed = [0.0, 0.0]

    # --- driving it -------------------------------------------------------------------

    def start(self, name: str, units: float | None = None) -> None:
        """Enter phase ``name`` (phases skipped on the way cost nothing)."""
        self._close_current()
        names = [p.name for p in self.phases]
        if name not in names:
            raise KeyError(name)
        new = names.index(name)
        # Phases skipped (fine-tuning not needed, nothing to re-read) are dropped.
        for p in self.phases[self._index + 1:new]:
            p.units = 0
        self._index = new
        if units is not None:
            self.phases[new].units = units
        self._phase_started = self.clock()
        self._fraction = 0.0
        self._first = self._latest = None

    def set_units(self, units: float) -> None:
        """The current phase's real amount of work, once known (e.g. cells not cached)."""
        if self._index >= 0:
            self.phases[self._index].units = units

    def update(self, fraction: float) -> None:
        self._fraction = min(max(fraction, 0.0), 1.0)
        if self._fraction <= 0:
            return
        now = self.clock()
        if self._first is None:
            self._first = (now, self._fraction)
        self._latest = (now, self._fraction)

    def skip(self, name: str) -> None:
        """A phase that will not run after all (e.g. fine-tuning not kept: no re-reading)."""
        for p in self.phases[self._index + 1:]:
            if p.name == name:
                p.units = 0

    # --- reading it -------------------------------------------------------------------

    def seconds_left(self) -> float | None:
        """Seconds left in the round, or None until something has been measured."""
        if self._index < 0:
            return None
        current = self.phases[self._index]
        now = self.clock()
        elapsed = now - self._phase_started
        sample = self._current_sample(current)
        speed = self._speed_factor(current, sample)
        if speed is None:
            return None
        if sample is not None:
            # The phase's own rate at its latest report, counted down since.
            seconds, fraction = sample
            latest_at = self._latest[0]
            left = seconds * (1 - self._fraction) / fraction - (now - latest_at)
            left = max(left, 0.0)
        else:
            left = max(current.units * self._rate(current, speed) - elapsed, 0.0)
        for p in self.phases[self._index + 1:]:
            left += p.units * self._rate(p, speed)
        return max(left, 0.0)

    # --- inside ----------------------------------------------------------------------

    def _rate(self, phase: Phase, speed: float) -> float:
        seconds, units = self._measured.get(phase.rate_kind, (0.0, 0.0))
        if units > 0:
            return seconds / units
        # Fixed costs (building, publishing) do not scale with the machine's speed.
        return phase.seconds_per_unit * (speed if phase.calibrates else 1.0)

    def _current_sample(self, current: Phase) -> tuple[float, float] | None:
        """(seconds, fraction) the running phase took for the work measured, once
        measurable: from its first report to its latest (the first report carries
        one-off costs, e.g. building the graph for the first batch, so a phase is
        measured only once it has reported twice)."""
        if self._latest is None or self._fraction < MIN_FRACTION:
            return None
        (t0, f0), (t1, f1) = self._first, self._latest
        if f1 > f0 and t1 - t0 >= MIN_PHASE_SECONDS:
            return t1 - t0, f1 - f0
        return None

    def _speed_factor(self, current: Phase,
                      sample: tuple[float, float] | None) -> float | None:
        """Measured time / prior time over what has been measured; None if nothing has."""
        measured, prior = self._speed
        if sample is not None and current.calibrates and current.units > 0:
            measured += sample[0]
            prior += sample[1] * current.units * current.seconds_per_unit
        if prior <= 0:
            return None
        return measured / prior

    def _close_current(self) -> None:
        if self._index < 0:
            return
        p = self.phases[self._index]
        if p.units <= 0 or not p.calibrates:
            return
        sample = self._current_sample(p)
        if sample is not None:
            # Its measured rate, without the first report's warm-up.
            elapsed, done = sample[0], sample[1] * p.units
        else:
            # A phase that ended before reporting twice: all of it, all its work.
            elapsed, done = self.clock() - self._phase_started, p.units
        seconds, units = self._measured.get(p.rate_kind, (0.0, 0.0))
        self._measured[p.rate_kind] = (seconds + elapsed, units + done)
        self._speed[0] += elapsed
        self._speed[1] += done * p.seconds_per_unit
