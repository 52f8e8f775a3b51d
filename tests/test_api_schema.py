"""Schemathesis against /api/v1/openapi.json: generated requests to every operation,
authenticated with an admin token carrying every scope.  No 5xx; every status code,
content type and body matches the document.  SQLite and PostgreSQL.

Path ids are real ones (a project with cells, rounds, model versions with
predictions) half of the time, random the other half, so the run reaches the
code behind the 404s.  Bounded: MAX_EXAMPLES per operation.
"""

from __future__ import annotations

import io
import itertools

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from tests.api_helpers import bearer, make_token, models_with_predictions
from tests.helpers import make_user

MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _own_decisions(client, headers, project_id: int, n: int) -> list[int]:
    """Decisions of the token's user (for undo to find), made through the API."""
    ids = []
    for _ in range(n):
        cell = client.post(f"/api/v1/projects/{project_id}/leases", json={},
                           headers=headers).get_json()["cell"]
        response = client.post(f"/api/v1/projects/{project_id}/annotations", headers=headers,
                               json={"image_id": cell["id"], "choice": "lymphocyte"})
        ids.append(response.get_json()["annotation"]["id"])
    return ids


def _finished_import(client, headers, project_id: int, settings) -> int:
    """An import made through the API and run as the worker runs it (for its report)."""
    from worker.imports import run_import_job

    response = client.post(f"/api/v1/projects/{project_id}/imports", headers=headers,
                           data={"files": [(io.BytesIO(b"not an image"), "x.jpg")]},
                           content_type="multipart/form-data")
    job_id = response.get_json()["id"]
    run_import_job(settings, job_id)
    return job_id


def test_every_operation_answers_as_documented(app, settings, demo_project):
    admin = make_user(settings, "boss", "admin")
    headers = bearer(make_token(settings, admin, ["read", "label", "admin"]))
    rounds, versions, images = models_with_predictions(settings, demo_project)
    annotations = _own_decisions(app.test_client(), headers, demo_project, 3)
    imports = [_finished_import(app.test_client(), headers, demo_project, settings)]
    real = {"project_id": [demo_project], "image_id": images, "round_id": rounds,
            "version_id": versions, "annotation_id": annotations, "import_id": imports}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # 14 before issue 13's imports (4) and exports (5); other features add theirs.
    assert len(operations) >= 23

    seen: dict[str, set[int]] = {}
    for operation in operations:
        calls = itertools.count()

        @given(case=operation.as_strategy(), data=st.data())
        @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        def run(case, data):
            # All ids real (the path's, a body's image_id), or all generated, in turn
            # (the first call real):
            # every operation reaches the real thing, however few examples Hypothesis runs.
            # (Drawn every time, so Hypothesis sees the same draws whichever way it goes.)
            picks = {name: data.draw(st.sampled_from(real[name]))
                     for name in sorted(case.path_parameters or {})}
            cell = data.draw(st.sampled_from(images))
            if next(calls) % 2 == 0:  # noqa: B023 -- run() is called within this iteration
                case.path_parameters.update(picks)
                if isinstance(case.body, dict) and "image_id" in case.body:
                    case.body["image_id"] = cell
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            seen.setdefault(case.operation.label, set()).add(response.status_code)

        run()  # hypothesis draws the arguments
    # The run reached the real thing, not only refusals: every operation got past the
    # token, the validation and the id lookup at least once.
    assert len(seen) == len(operations)
    for label, codes in seen.items():
        assert codes - {401, 403, 404, 422}, (label, codes)
