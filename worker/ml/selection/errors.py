"""Selection errors: ValueErrors whose messages are written for users."""

from __future__ import annotations

from collections.abc import Iterable


class SelectionError(ValueError):
    """A selection request that cannot be met; the message says why."""


class UnknownStrategy(SelectionError):
    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        super().__init__(f"Unknown strategy {name!r}; known strategies: {', '.join(known)}.")


class BatchTooLarge(SelectionError):
    def __init__(self, batch: int, pool: int):
        self.batch, self.pool = batch, pool
        super().__init__(f"The round size {batch} is larger than the pool of {pool} "
                         "unlabeled cells.")
