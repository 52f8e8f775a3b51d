"""The Export page: labels, class folders, the model package, the agreement report.

For curators and admins.  Pathologists get 403: an export holds every reader's
votes with their names and the curators' notes, which the labeling page never
shows a reader (blind reading hides even the model's view), and the whole data set.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    current_app,
    render_template,
    request,
    stream_with_context,
)
from flask_login import current_user
from sqlalchemy import select

from models import ModelVersion, Project, Role
from models.db import get_sessionmaker

from ..auth.roles import role_required
from ..auth.access import require_project
from ..db import get_db
from .filters import STATES, ExportError, parse_filters
from .formats import FORMATS, export_stream

bp = Blueprint("exports", __name__, url_prefix="/exports")


def export_response(project: Project, format_name: str, args) -> Response:
    """A streamed download of one export, filters from ``args`` (a query string's
    MultiDict: state (repeated or comma-separated), class, since, version).

    Raises ExportError (with its ``status``) before streaming anything; the
    API's routes can call this as it is and turn the error into JSON.

    The stream reads through a session of its own: the request's session is
    closed at teardown, which comes before the body is sent.
    """
    settings = current_app.config["HEMALOOP"]
    session = get_sessionmaker(settings.database_url)()
    try:
        project = session.get(Project, project.id)
        filters = parse_filters(project, args.getlist("state"), args.get("class") or None,
                                args.get("since") or None)
        version = args.get("version") or None
        # ASCII digits only ("²".isdigit() is true), and an id a column can hold.
        if version is not None and not (version.isascii() and version.isdigit()
                                        and int(version) < 2 ** 31):
            raise ExportError(f"'{version}' is not a model version number.")
        export = export_stream(session, project, format_name, settings.storage_dir,
                               filters=filters, version_id=int(version) if version else None)
    except BaseException:
        session.close()
        raise

    def body():
        try:
            yield from export.chunks
        except Exception:
            # Too late for an error status: the download ends short, and the log says why.
            current_app.logger.exception("export of project %s (%s) failed midway",
                                         project.id, export.format.name)
            raise
        finally:
            session.close()

    response = Response(stream_with_context(body()), mimetype=export.format.mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/projects/<int:project_id>")
@role_required(Role.CURATOR)
def index(project_id: int):
    project = require_project(get_db(), current_user, project_id)
    versions = get_db().scalars(select(ModelVersion).where(ModelVersion.project_id == project.id)
                                .order_by(ModelVersion.id.desc())).all()
    return render_template("exports/index.html", project=project, formats=FORMATS.values(),
                           states=STATES, versions=versions)


@bp.get("/projects/<int:project_id>/download")
@role_required(Role.CURATOR)
def download(project_id: int):
    project = require_project(get_db(), current_user, project_id)
    try:
        return export_response(project, request.args.get("format", "csv"), request.args)
    except ExportError as exc:
        return render_template("_error.html", title="Export not made",
                               message=str(exc)), exc.status
