"""Writing files so that a reader never sees half of one (fileio/atomic.py).

A package of its own, below everything else: the webapp (image store), the
models (the instance's secret key) and the worker's ML core (models, features,
embeddings) all write this way, and worker.ml may import neither SQLAlchemy
(which ``models`` loads) nor the webapp.
"""

from .atomic import atomic_write

__all__ = ["atomic_write"]
