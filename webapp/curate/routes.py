from __future__ import annotations

from flask import render_template
from sqlalchemy import select

from models import Annotation, Flag, Image, LabelClass, Origin, Project, Role, User

from ..auth.roles import role_required
from ..db import get_db
from . import bp


@bp.get("/")
@role_required(Role.CURATOR)
def index():
    """Cells a reader flagged ambiguous, newest first, with who flagged them."""
    db = get_db()
    rows = db.execute(
        select(Annotation, Image, User, Project)
        .join(Image, Image.id == Annotation.image_id)
        .join(Project, Project.id == Image.project_id)
        .outerjoin(User, User.id == Annotation.user_id)
        .where(Annotation.origin == Origin.READER, Annotation.flag == Flag.AMBIGUOUS)
        .order_by(Annotation.created_at.desc())
        .limit(200)
    ).all()
    suggested = {c.id: c.name for c in db.scalars(select(LabelClass))}
    return render_template("curate/index.html", rows=rows, suggested=suggested)
