"""Every route of the app, enumerated from its url_map: who may reach it, and what
an id no column can hold does to it.

A route added without an entry in POLICY fails test_every_route_has_a_policy,
so a new page cannot skip the access check.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.helpers import LoggedIn, csrf_token, make_user

PUBLIC = "public"  # anyone, logged in or not
LOGIN = "login"  # any logged-in user, whatever the role
TOKEN = "token"  # API v1: a bearer token only; a browser session, any role, gets 401 JSON
ROLES = ["pathologist", "curator", "admin"]
RANK = {LOGIN: 0, "pathologist": 1, "curator": 2, "admin": 3}

# endpoint -> the least a user must be to reach it.
POLICY = {
    "static": PUBLIC,
    "healthz": PUBLIC,
    "readyz": PUBLIC,
    "auth.login": PUBLIC,
    "auth.logout": LOGIN,
    "auth.account": LOGIN,
    "auth.create_token": LOGIN,
    "auth.revoke_token": LOGIN,
    "api_v1.activate": TOKEN,
    "api_v1.cancel": TOKEN,
    "api_v1.create_annotation": TOKEN,
    "api_v1.get_cell": TOKEN,
    "api_v1.get_project": TOKEN,
    "api_v1.get_round": TOKEN,
    "api_v1.list_annotations": TOKEN,
    "api_v1.list_cells": TOKEN,
    "api_v1.list_projects": TOKEN,
    "api_v1.list_rounds": TOKEN,
    "api_v1.list_versions": TOKEN,
    "api_v1.next_cell": TOKEN,
    "api_v1.start_round": TOKEN,
    "api_v1.undo_annotation": TOKEN,
    "api_v1.create_import": TOKEN,  # imports (webapp/api/v1/imports.py)
    "api_v1.list_imports": TOKEN,
    "api_v1.get_import": TOKEN,
    "api_v1.get_import_report": TOKEN,
    "api_v1.export_labels_csv": TOKEN,  # exports (webapp/api/v1/exports.py)
    "api_v1.export_labels_jsonl": TOKEN,
    "api_v1.export_folders": TOKEN,
    "api_v1.export_model": TOKEN,
    "api_v1.export_agreement": TOKEN,
    "api_v1.docs": PUBLIC,
    "api_v1.openapi": PUBLIC,
    "index": LOGIN,
    "images.file": LOGIN,
    "label.index": "pathologist",
    "label.page": "pathologist",
    "label.next_": "pathologist",
    "label.decide": "pathologist",
    "label.skip": "pathologist",
    "label.undo_last": "pathologist",
    "label.verify_page": "pathologist",
    "label.verify_confirm": "pathologist",
    "api.projects": "pathologist",
    "api.queue": "pathologist",
    "api.agreement": "curator",
    "api.cell_history": "curator",
    "curate.index": "curator",
    "curate.cell": "curator",
    "curate.history": "curator",
    "curate.measurements": "curator",
    "curate.resolve": "curator",
    "curate.undo_resolution": "curator",
    "exports.index": "curator",
    "exports.download": "curator",
    "curate.agreement": "curator",
    "predict.index": "pathologist",
    "predict.page": "pathologist",
    "predict.predict": "pathologist",
    "predict.spool_file": "pathologist",
    "predict.add": "admin",
    "api_v1.predict": TOKEN,
    "api.round_status": "admin",
    "admin.index": "admin",
    "admin.start_round": "admin",
    "admin.cancel": "admin",
    "admin.round_row": "admin",
    "admin.round_detail": "admin",
    "admin.models": "admin",
    "admin.activate_version": "admin",
    "admin.project_settings": "admin",
    "admin.reading_settings": "admin",
    "admin.active_learning": "admin",
    "admin.save_strategy": "admin",
    "admin.rebuild_review_queue": "admin",
    "admin.start_comparison": "admin",
    "admin.comparison": "admin",
    "admin.cancel_comparison": "admin",
    # issue 15: backbone pretraining (webapp/admin/pretraining.py)
    "admin.pretraining": "admin",
    "admin.start_pretraining": "admin",
    "admin.pretraining_run": "admin",
    "admin.cancel_pretraining_run": "admin",
    "admin.choose_backbone": "admin",
    "admin.project_figures": "admin",
    "admin.reading_preview": "admin",
    "admin.round_result": "admin",
    "admin.activate_user": "admin",
    "admin.add_project_class": "admin",
    "admin.add_project_member": "admin",
    "admin.change_role": "admin",
    "admin.create_user_view": "admin",
    "admin.deactivate": "admin",
    "admin.import_job": "admin",
    "admin.import_report": "admin",
    "admin.import_status": "admin",
    "admin.start_describe": "admin",
    "admin.describe_status": "admin",
    "admin.new_project": "admin",
    "admin.project_page": "admin",
    "admin.remove_project_member": "admin",
    "admin.reset_password": "admin",
    "admin.upload": "admin",
    "admin.users": "admin",
}

MISSING_ID = 987654  # no row has it: allowed users get a 404, nothing is written


def _url(rule, ids: dict[str, int] | None = None, default: int = MISSING_ID) -> str:
    def value(match: re.Match) -> str:
        converter, name = match.group(1), match.group(2)
        if converter == "int":
            return str((ids or {}).get(name, default))
        return {"filename": "css/app.css"}.get(name, "x")

    return re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", value, rule.rule)


def _requests(app):
    """(endpoint, method, url) for every rule and method, logout last (it ends the session)."""
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, _url(rule)))
    return sorted(out, key=lambda r: (r[0] == "auth.logout", r))


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and urlsplit(response.location).path == "/auth/login"


class Anonymous(LoggedIn):
    """Not logged in, but sending a valid CSRF token (from the login page), so a
    POST reaches the access check rather than stopping at CSRF."""

    def __init__(self, client):
        self.client = client
        self.token = csrf_token(client.get("/auth/login").text)


def test_every_route_has_a_policy(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - POLICY.keys() == set(), "add the new routes to POLICY"
    assert POLICY.keys() - endpoints == set(), "POLICY names routes that are gone"


def test_each_route_admits_exactly_its_roles(app, settings):
    for role in ROLES:
        make_user(settings, role, role)
    clients = {"anonymous": Anonymous(app.test_client())}
    clients.update({role: LoggedIn(app.test_client(), role) for role in ROLES})
    seen = 0
    for endpoint, method, url in _requests(app):
        need = POLICY[endpoint]
        for who, client in clients.items():
            send = client.get if method == "GET" else client.post
            response = send(url)
            where = (who, method, url, response.status_code)
            assert response.status_code < 500, where
            if need == PUBLIC:
                assert response.status_code != 403 and not _is_login_redirect(response), where
            elif need == TOKEN:  # tests/test_api_v1.py tries the tokens and their scopes
                assert response.status_code == 401 and response.is_json, where
            elif who == "anonymous" and endpoint.startswith("api."):
                assert response.status_code == 401 and response.is_json, where  # never a redirect
            elif who == "anonymous":
                assert _is_login_redirect(response), where
            elif endpoint == "auth.logout":  # allowed, it ends the session (tried last)
                assert _is_login_redirect(response), where
                assert _is_login_redirect(client.get("/label/")), where
            elif RANK[who] >= RANK[need]:
                assert response.status_code != 403 and not _is_login_redirect(response), where
            else:
                assert response.status_code == 403, where
            response.close()
            seen += 1
    # Every route was tried by all four: the count docs/reliability.md reports.
    assert seen == 4 * len(_requests(app))


@pytest.mark.parametrize("huge", [2**31, 2**63, 99999999999999999999])
def test_ids_no_column_can_hold_are_404_on_every_int_route(app, settings, huge):
    """PostgreSQL's integer ends at 2**31 - 1 (NumericValueOutOfRange beyond it), SQLite's
    at 2**63 - 1 (OverflowError): every <int:> route answers 404 for either."""
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    tried = 0
    for rule in app.url_map.iter_rules():
        names = [n for n, c in rule._converters.items() if type(c).__name__ != "PathConverter"]
        for name in names:  # each id in turn, the others ordinary missing ids
            url = _url(rule, {name: huge})
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                send = admin.get if method == "GET" else admin.post
                response = send(url)
                assert response.status_code == 404, (method, url, response.status_code)
                tried += 1
    assert tried >= 30
    # The largest id a column holds is an ordinary missing row.
    response = admin.get(f"/images/{2**31 - 1}")
    assert response.status_code == 404 and f"There is no image {2**31 - 1}." in response.text


def test_huge_ids_in_forms_are_a_clear_refusal(app, settings, tmp_path):
    """Ids that arrive in a form field rather than the URL end the same way."""
    from tests.reading_helpers import flat_project, shown, submission

    pid = flat_project(settings, tmp_path, "p", 2)
    make_user(settings, "reader", "pathologist")
    reader = LoggedIn(app.test_client(), "reader")
    html = reader.get(f"/label/{pid}").text
    for field in ["model_version_id", "suggested_class_id"]:
        response = reader.post(f"/label/{pid}/cells/{shown(html)}", data={
            "choice": "lymphocyte", "submission_id": submission(html), field: str(2**63)})
        assert response.status_code == 400, (field, response.status_code)
        assert "is not an id of this project" in response.text
    for field in ["image_id", "wrong", "model_version_id"]:
        form = {"class": "lymphocyte", "model_version_id": "1", "batch": "b1",
                "image_id": [str(shown(html))], field: str(2**63)}
        response = reader.post(f"/label/{pid}/verify", data=form)
        assert response.status_code == 400, (field, response.status_code)
        assert "out of range" in response.text
