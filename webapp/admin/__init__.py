"""Admins: projects at a glance, training rounds, model quality."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.context_processor
def _polling_helpers() -> dict:
    from .polling import every, time_left

    return {"poll_every": every, "time_left": time_left}


from . import routes  # noqa: E402,F401
from . import active_learning  # noqa: E402,F401
from . import describe, imports, people, projects  # noqa: E402,F401
from . import pretraining  # noqa: E402,F401  (issue 15)
