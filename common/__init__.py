"""What every layer uses and that needs nothing of ours: the webapp, the models
and the worker's ML core (which may import neither SQLAlchemy nor the webapp)
all import from here, so nothing here imports them (an import-linter contract
in pyproject.toml keeps it so).

- ``files``: writing a file so that a reader never sees half of it.
- ``strategies``: the names of the review-round strategies and the default.
"""
