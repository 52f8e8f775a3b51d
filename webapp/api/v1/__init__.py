"""API v1: everything the pages do, for programs, with personal access tokens.

Conventions, for every module here (and the ones still to come: imports,
exports, predict):

- One module per resource, its routes on `bp` (an APIFlask APIBlueprint),
  imported at the bottom of this file.
- Every route states its scope with `@bp.auth_required(token_auth,
  roles=[Scope.X.value])`: a missing, unknown, expired or revoked token is
  401, a token without the scope (or whose user's role no longer allows it)
  is 403.  Scopes: `read`, `label`, `admin` (models/tokens.py).
- The acting user is `acting_user()`; every project is looked up with
  `webapp.auth.access.require_project` (404 when not visible).
- Request and response bodies are marshmallow schemas from `schemas.py`
  (`@bp.input` / `@bp.output`): the OpenAPI document at
  /api/v1/openapi.json is generated from them, and the test suite runs
  Schemathesis against it.  Errors are `ErrorOut` JSON, never a redirect
  or an HTML page.
- Lists are `{"items": [...], "next_cursor": int | null}`; pass
  `cursor=<next_cursor>` for the next page.
- Request bodies are JSON except uploads (multipart, with
  `webapp.limits.accepts_upload` on the view for the large body limit).

Browser sessions are not accepted here (so no CSRF token is needed): a
program sends `Authorization: Bearer <token>`, made in the Account page.
"""

from apiflask import APIBlueprint

bp = APIBlueprint("api_v1", __name__, url_prefix="/api/v1")

# The document's sections, in this order (a new module adds its tag here).
TAGS = [
    {"name": "projects", "description": "The projects you may see."},
    {"name": "cells", "description": "Cells, their predictions and (for curators) states."},
    {"name": "annotations", "description": "Labeling: lease a cell, record a decision."},
    {"name": "rounds", "description": "Training rounds (admin scope)."},
    {"name": "models", "description": "Model versions (admin scope)."},
    {"name": "predict", "description": "What a model makes of new cell images (read scope)."},
    {"name": "imports", "description": "Upload cells into a project; follow the import "
                                       "(admin scope)."},
    {"name": "exports", "description": "Labels, class folders, the model package, the "
                                       "agreement report: streamed downloads (read scope; "
                                       "curators and admins)."},
]

from . import (annotations, cells, docs, models_versions, predict, projects,  # noqa: E402,F401
               rounds)
from . import exports, imports  # noqa: E402,F401
