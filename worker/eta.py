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

    def set_units(self, units: float) -> None:
        """The current phase's real amount of work, once known (e.g. cells not cached)."""
        if self._index >= 0:
            self.phases[self._index].units = units

    def update(self, fraction: float) -> None:
        self._fraction = min(max(fraction, 0.0), 1.0)

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
        elapsed = self.clock() - self._phase_started
        speed = self._speed_factor(current, elapsed)
        if speed is None:
            return None
        if self._fraction >= MIN_FRACTION and elapsed >= MIN_PHASE_SECONDS:
            left = elapsed * (1 - self._fraction) / self._fraction
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
        return phase.seconds_per_unit * speed

    def _current_sample(self, current: Phase, elapsed: float) -> tuple[float, float] | None:
        """(seconds, units done) of the running phase, once measurable."""
        if (current.calibrates and current.units > 0 and self._fraction >= MIN_FRACTION
                and elapsed >= MIN_PHASE_SECONDS):
            return elapsed, self._fraction * current.units
        return None

    def _speed_factor(self, current: Phase, elapsed: float) -> float | None:
        """Measured time / prior time over what has been measured; None if nothing has."""
        measured, prior = self._speed
        sample = self._current_sample(current, elapsed)
        if sample is not None:
            measured += sample[0]
            prior += sample[1] * current.seconds_per_unit
        if prior <= 0:
            return None
        return measured / prior

    def _close_current(self) -> None:
        if self._index < 0:
            return
        p = self.phases[self._index]
        elapsed = self.clock() - self._phase_started
        done = p.units * max(self._fraction, 0.0) if self._fraction < 1 else p.units
        # A phase that ended before reporting progress did all its work.
        done = p.units if done <= 0 else done
        if p.units <= 0 or not p.calibrates:
            return
        seconds, units = self._measured.get(p.rate_kind, (0.0, 0.0))
        self._measured[p.rate_kind] = (seconds + elapsed, units + done)
        self._speed[0] += elapsed
        self._speed[1] += done * p.seconds_per_unit
