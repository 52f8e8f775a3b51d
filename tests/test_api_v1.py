"""API v1: tokens (Account page, hashing, expiry, revocation, deactivation), scopes and
roles (401/403 JSON, never a redirect), labeling through the page's leases and rules,
cell pages and filters, rounds and model versions.  SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from models import Annotation, ApiToken, Origin, Project, RoundStatus, TrainingRound, User, utcnow
from models.db import session_scope
from models.tokens import hash_token
from tests.api_helpers import bearer, make_token, models_with_predictions
from tests.helpers import LoggedIn, make_user, open_to_readers


def _json_refusal(response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.is_json, response.headers.get("Content-Type")
    body = response.get_json()
    assert body["error"] and body["message"]
    assert "Location" not in response.headers


# --- the Account page -----------------------------------------------------------------------

def test_account_page_creates_a_token_shown_once_and_revokes_it(app, client, settings):
    make_user(settings, "reader", "pathologist")
    page = LoggedIn(client, "reader")
    assert page.get("/auth/account").status_code == 200
    response = page.post("/auth/account/tokens", htmx=False, data={
        "csrf_token": page.token, "name": "export script", "scopes": ["read", "label"],
        "expires": "30"})
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    token = re.search(r'id="token-value">(hml_[\w-]+)<', response.text).group(1)
    # Stored as a hash, with only a short prefix in the clear.
    with session_scope(settings.database_url) as s:
        row = s.scalar(select(ApiToken))
        assert row.token_hash == hash_token(token) and row.prefix == token[:12]
        assert token not in (row.name, row.prefix, row.token_hash)
        assert row.scopes == ["label", "read"]
        assert timedelta(days=29) < row.expires_at - utcnow() <= timedelta(days=30)
        token_id = row.id
    # Shown once: the page lists it by prefix only from now on.
    again = page.get("/auth/account").text
    assert token not in again and token[:12] in again

    assert client.get("/api/v1/projects", headers=bearer(token)).status_code == 200
    with session_scope(settings.database_url) as s:
        assert s.get(ApiToken, token_id).last_used_at is not None

    assert page.post(f"/auth/account/tokens/{token_id}/revoke", htmx=False,
                     data={"csrf_token": page.token}).status_code == 302
    _json_refusal(client.get("/api/v1/projects", headers=bearer(token)), 401)


def test_account_page_refuses_the_admin_scope_to_non_admins(app, client, settings):
    make_user(settings, "curator", "curator")
    other = make_user(settings, "other", "pathologist")
    foreign = make_token(settings, other, ["read"])
    page = LoggedIn(client, "curator")
    response = page.post("/auth/account/tokens", htmx=False, data={
        "csrf_token": page.token, "name": "x", "scopes": ["admin"], "expires": "never"})
    assert response.status_code == 403 and "admin scope is for admins" in response.text
    with session_scope(settings.database_url) as s:
        foreign_id = s.scalar(select(ApiToken.id))
        assert s.query(ApiToken).count() == 1  # only the other user's
    # Someone else's token cannot be revoked from this account.
    page.post(f"/auth/account/tokens/{foreign_id}/revoke", htmx=False,
              data={"csrf_token": page.token})
    assert client.get("/api/v1/projects", headers=bearer(foreign)).status_code == 200


# --- who may call ---------------------------------------------------------------------------

def test_missing_and_bad_tokens_are_401_json(app, client, settings, demo_project):
    uid = make_user(settings, "reader", "pathologist")
    expired = make_token(settings, uid, ["read"], expires_at=utcnow() - timedelta(seconds=1))
    revoked = make_token(settings, uid, ["read"])
    with session_scope(settings.database_url) as s:
        s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(revoked))
                 ).revoked_at = utcnow()
    url = f"/api/v1/projects/{demo_project}/cells"
    _json_refusal(client.get(url), 401)
    assert client.get(url).headers["WWW-Authenticate"].startswith("Bearer")
    for headers in ({"Authorization": "Bearer hml_not-a-token"}, {"Authorization": "Basic eDp5"},
                    bearer(expired), bearer(revoked)):
        _json_refusal(client.get(url, headers=headers), 401)
    # A body from an anonymous client is refused unread, as JSON.
    _json_refusal(client.post(f"/api/v1/projects/{demo_project}/annotations",
                              json={"image_id": 1, "choice": "lymphocyte"}), 401)
    # The older session-only /api routes answer 401 JSON too, not a login redirect.
    _json_refusal(client.get("/api/projects"), 401)
    _json_refusal(client.get("/api/v1/nothing-here", headers=bearer(expired)), 404)


def test_a_body_to_an_unknown_v1_url_with_a_token_is_404(app, client, settings):
    """Found by Schemathesis: POST /api/v1/projects/-5/leases (no route: ids are not
    negative) with a valid token was refused as anonymous (401)."""
    token = make_token(settings, make_user(settings, "reader", "pathologist"), ["label"])
    _json_refusal(client.post("/api/v1/projects/-5/leases", json={}, headers=bearer(token)), 404)
    _json_refusal(client.post("/api/v1/projects/-5/leases", json={}), 401)


def test_deactivating_a_user_disables_their_tokens(app, client, settings):
    uid = make_user(settings, "reader", "pathologist")
    token = make_token(settings, uid, ["read"])
    assert client.get("/api/v1/projects", headers=bearer(token)).status_code == 200
    with session_scope(settings.database_url) as s:
        s.get(User, uid).deactivate()
    _json_refusal(client.get("/api/v1/projects", headers=bearer(token)), 401)


def test_scopes_and_roles_are_403_json(app, client, settings, demo_project):
    reader = make_user(settings, "reader", "pathologist")
    admin = make_user(settings, "boss", "admin")
    read_only = make_token(settings, reader, ["read"])
    label_only = make_token(settings, reader, ["label"])
    admin_token = make_token(settings, admin, ["read", "admin"])
    p = demo_project
    _json_refusal(client.post(f"/api/v1/projects/{p}/leases", json={},
                              headers=bearer(read_only)), 403)
    _json_refusal(client.post(f"/api/v1/projects/{p}/annotations",
                              json={"image_id": 1, "choice": "lymphocyte"},
                              headers=bearer(read_only)), 403)
    _json_refusal(client.get(f"/api/v1/projects/{p}/cells", headers=bearer(label_only)), 403)
    _json_refusal(client.post(f"/api/v1/projects/{p}/rounds", headers=bearer(label_only)), 403)
    _json_refusal(client.get(f"/api/v1/projects/{p}/models", headers=bearer(read_only)), 403)
    # Readers do not see others' votes: no state or final-label filters.
    _json_refusal(client.get(f"/api/v1/projects/{p}/cells?state=final",
                             headers=bearer(read_only)), 403)
    assert client.get(f"/api/v1/projects/{p}/models", headers=bearer(admin_token)).status_code == 200
    # An admin demoted to curator: their token keeps the word "admin" but loses its power.
    with session_scope(settings.database_url) as s:
        s.get(User, admin).role = "curator"
    _json_refusal(client.get(f"/api/v1/projects/{p}/models", headers=bearer(admin_token)), 403)
    # A curator reads only the projects they are a reader of (admins read all).
    _json_refusal(client.get(f"/api/v1/projects/{p}/cells?state=open",
                             headers=bearer(admin_token)), 404)
    with session_scope(settings.database_url) as s:
        open_to_readers(s, s.get(Project, p))
    assert client.get(f"/api/v1/projects/{p}/cells?state=open",
                      headers=bearer(admin_token)).status_code == 200
    _json_refusal(client.get("/api/v1/projects/999999", headers=bearer(admin_token)), 404)


# --- labeling -------------------------------------------------------------------------------

def test_labeling_through_the_api_uses_the_pages_leases_and_rules(app, client, settings,
                                                                  demo_project):
    uid = make_user(settings, "reader", "pathologist")
    h = bearer(make_token(settings, uid, ["read", "label"]))
    p = demo_project
    lease = client.post(f"/api/v1/projects/{p}/leases", json={}, headers=h)
    assert lease.status_code == 200, lease.text
    cell = lease.get_json()["cell"]
    assert cell and lease.get_json()["expires_at"]
    # Asking again gives the cell already held, as a reloaded page does.
    assert client.post(f"/api/v1/projects/{p}/leases", json={}, headers=h
                       ).get_json()["cell"]["id"] == cell["id"]

    unknown = client.post(f"/api/v1/projects/{p}/annotations", headers=h,
                          json={"image_id": cell["id"], "choice": "dragon"})
    _json_refusal(unknown, 400)
    assert "Unknown class" in unknown.get_json()["message"]
    first = client.post(f"/api/v1/projects/{p}/annotations", headers=h, json={
        "image_id": cell["id"], "choice": "lymphocyte", "submission_id": "abc", "duration_ms": 900})
    assert first.status_code == 201, first.text
    body = first.get_json()
    assert body["created"] and body["annotation"]["label"] == "lymphocyte"
    assert body["annotation"]["user"] == "reader"
    # A retried request (same submission id) is recorded once.
    retry = client.post(f"/api/v1/projects/{p}/annotations", headers=h, json={
        "image_id": cell["id"], "choice": "lymphocyte", "submission_id": "abc"})
    assert retry.status_code == 201 and retry.get_json()["created"] is False
    assert retry.get_json()["annotation"]["id"] == body["annotation"]["id"]
    # A second vote on the same cell, and a cell never leased: refused as on the page.
    twice = client.post(f"/api/v1/projects/{p}/annotations", headers=h,
                        json={"image_id": cell["id"], "choice": "monocyte"})
    _json_refusal(twice, 409)
    assert "already labeled" in twice.get_json()["message"]
    with session_scope(settings.database_url) as s:
        from models import Image, Split

        other = s.scalar(select(Image.id).where(Image.project_id == p, Image.id != cell["id"],
                                                Image.split == Split.POOL))
    not_leased = client.post(f"/api/v1/projects/{p}/annotations", headers=h,
                             json={"image_id": other, "choice": "monocyte"})
    _json_refusal(not_leased, 409)
    assert not_leased.get_json()["detail"] == {"lease_lost": True}
    _json_refusal(client.post(f"/api/v1/projects/{p}/annotations", headers=h,
                              json={"choice": "monocyte"}), 422)

    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Annotation).where(Annotation.origin == Origin.READER)).all()
        assert [(a.image_id, a.user_id, a.submission_id, a.duration_ms) for a in rows] == [
            (cell["id"], uid, "abc", 900)]
    mine = client.get(f"/api/v1/projects/{p}/annotations", headers=h).get_json()
    assert [a["id"] for a in mine["items"]] == [body["annotation"]["id"]]

    # Backspace: undone once, the cell is leased back, and it can be labeled again.
    undo_url = f"/api/v1/projects/{p}/annotations/{body['annotation']['id']}/undo"
    undone = client.post(undo_url, headers=h)
    assert undone.status_code == 200 and undone.get_json()["undone"]["id"] == body["annotation"]["id"]
    _json_refusal(client.post(undo_url, headers=h), 404)
    assert client.post(f"/api/v1/projects/{p}/leases", json={}, headers=h
                       ).get_json()["cell"]["id"] == cell["id"]
    # As the README's example sends it: the lease's (null) suggestion passed on.
    again = client.post(f"/api/v1/projects/{p}/annotations", headers=h, json={
        "image_id": cell["id"], "choice": "monocyte", "model_version_id": None,
        "suggested_class_id": None, "submission_id": None, "duration_ms": None})
    assert again.status_code == 201, again.text
    kinds = [a["kind"] for a in client.get(f"/api/v1/projects/{p}/annotations",
                                           headers=h).get_json()["items"]]
    assert kinds == ["label", "retract", "label"]


# --- cells ----------------------------------------------------------------------------------

def test_cell_pages_cover_every_cell_once_and_filter_by_state(app, client, settings,
                                                              demo_project):
    curator = make_user(settings, "cur", "curator")
    reader = make_user(settings, "reader", "pathologist")
    h = bearer(make_token(settings, curator, ["read"]))
    hr = bearer(make_token(settings, reader, ["read", "label"]))
    p = demo_project
    seen, cursor, pages = [], 0, 0
    while cursor is not None:
        page = client.get(f"/api/v1/projects/{p}/cells?limit=7&cursor={cursor}", headers=h)
        assert page.status_code == 200, page.text
        seen += [c["id"] for c in page.get_json()["items"]]
        cursor = page.get_json()["next_cursor"]
        pages += 1
    assert len(seen) == 48 == len(set(seen)) and seen == sorted(seen) and pages == 7
    test_cells = client.get(f"/api/v1/projects/{p}/cells?split=test&limit=500", headers=h)
    assert {c["split"] for c in test_cells.get_json()["items"]} == {"test"}

    cell = client.post(f"/api/v1/projects/{p}/leases", json={}, headers=hr).get_json()["cell"]
    assert client.post(f"/api/v1/projects/{p}/annotations", headers=hr, json={
        "image_id": cell["id"], "choice": "eosinophil"}).status_code == 201
    states = {}
    for state in ("final", "open"):
        got = client.get(f"/api/v1/projects/{p}/cells?state={state}&limit=500", headers=h)
        states[state] = [c["id"] for c in got.get_json()["items"]]
    needs_one = len(states["final"]) == 1
    assert needs_one == (cell["id"] not in states["open"])
    if needs_one:
        assert states["final"] == [cell["id"]]
        labeled = client.get(f"/api/v1/projects/{p}/cells?label=eosinophil", headers=h).get_json()
        assert [c["id"] for c in labeled["items"]] == [cell["id"]]
        assert labeled["items"][0]["final_label"] == "eosinophil"
    one = client.get(f"/api/v1/cells/{cell['id']}", headers=h).get_json()
    assert one["id"] == cell["id"] and one["state"] in ("final", "open")
    # Readers get the cell without its state.
    assert client.get(f"/api/v1/cells/{cell['id']}", headers=hr).get_json()["state"] is None
    _json_refusal(client.get(f"/api/v1/projects/{p}/cells?label=dragon", headers=h), 400)
    _json_refusal(client.get(f"/api/v1/projects/{p}/cells?limit=0", headers=h), 422)


# --- rounds and model versions ---------------------------------------------------------------

def _label_next(client, headers, project_id: int, choice: str) -> int:
    cell = client.post(f"/api/v1/projects/{project_id}/leases", json={},
                       headers=headers).get_json()["cell"]
    assert client.post(f"/api/v1/projects/{project_id}/annotations", headers=headers, json={
        "image_id": cell["id"], "choice": choice}).status_code == 201
    return cell["id"]


def test_rounds_start_status_cancel(app, client, settings, demo_project):
    admin = make_user(settings, "boss", "admin")
    h = bearer(make_token(settings, admin, ["admin", "label"]))
    p = demo_project
    refused = client.post(f"/api/v1/projects/{p}/rounds", headers=h)
    _json_refusal(refused, 409)
    assert "labels so far: none" in refused.get_json()["message"]
    _label_next(client, h, p, "lymphocyte")
    _label_next(client, h, p, "monocyte")
    started = client.post(f"/api/v1/projects/{p}/rounds", headers=h)
    assert started.status_code == 202, started.text
    rnd = started.get_json()
    assert rnd["status"] == "queued" and rnd["trigger"] == "api"
    busy = client.post(f"/api/v1/projects/{p}/rounds", headers=h)
    _json_refusal(busy, 409)
    assert "already queued" in busy.get_json()["message"]
    assert client.get(f"/api/v1/rounds/{rnd['id']}", headers=h).get_json()["id"] == rnd["id"]
    assert [r["id"] for r in client.get(f"/api/v1/projects/{p}/rounds", headers=h
                                        ).get_json()["items"]] == [rnd["id"]]
    cancelled = client.post(f"/api/v1/rounds/{rnd['id']}/cancel", headers=h)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    _json_refusal(client.post(f"/api/v1/rounds/{rnd['id']}/cancel", headers=h), 409)
    with session_scope(settings.database_url) as s:
        r = s.get(TrainingRound, rnd["id"])
        assert r.status == RoundStatus.CANCELLED and r.triggered_by_id == admin
    _json_refusal(client.get("/api/v1/rounds/999999", headers=h), 404)


def test_model_versions_list_and_activate_404(app, client, settings, demo_project):
    admin = make_user(settings, "boss", "admin")
    h = bearer(make_token(settings, admin, ["admin"]))
    assert client.get(f"/api/v1/projects/{demo_project}/models", headers=h
                      ).get_json() == {"items": []}
    _json_refusal(client.post("/api/v1/models/999999/activate", headers=h), 404)


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/api/v1/docs"])
def test_document_and_docs_page_need_no_token_and_no_cdn(app, client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert "cdn" not in response.text.lower() and "<script>" not in response.text


def test_an_id_past_64_bits_is_404_not_a_crash(app, client, settings, demo_project):
    """Found by Schemathesis: /api/v1/cells/<20 digits> was a 500 (OverflowError in the
    SQLite driver; "integer out of range" on PostgreSQL from 2**31); every <int:...>
    route now stops at 2**31 - 1."""
    uid = make_user(settings, "boss", "admin")
    h = bearer(make_token(settings, uid, ["read", "admin"]))
    huge = 10**20
    for url in (f"/api/v1/cells/{huge}", f"/api/v1/projects/{huge}", f"/api/v1/rounds/{huge}",
                f"/api/v1/projects/{2**63}/cells", f"/api/v1/cells/{2**31}"):
        _json_refusal(client.get(url, headers=h), 404)
    LoggedIn(client, "boss")
    assert client.get(f"/images/{huge}").status_code == 404
    assert client.get(f"/images/{2**31}").status_code == 404
    assert client.get(f"/images/{2**31 - 1}").status_code == 404


# --- every v1 route, by rule ------------------------------------------------------------------

def _v1_routes(app) -> list[tuple[str, str, list[str]]]:
    """(method, url with ids filled in, scopes the view requires) for every API v1 route;
    routes added later (imports, exports, predict) are picked up here too."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api_v1.") or rule.endpoint in (
                "api_v1.openapi", "api_v1.docs"):
            continue
        spec = getattr(app.view_functions[rule.endpoint], "_spec", {})
        url = re.sub(r"<(?:int:)?\w+>", "1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, url, list(spec.get("roles") or [])))
    return out


def test_every_v1_route_is_401_without_a_token_and_403_without_its_scope(
        app, client, settings, demo_project):
    admin = make_user(settings, "boss", "admin")
    all_scopes = ["read", "label", "admin"]
    routes = _v1_routes(app)
    assert len(routes) >= 14
    for method, url, roles in routes:
        assert roles, f"{method} {url} states no scope"
        _json_refusal(client.open(url, method=method, json={}), 401)
        others = [s for s in all_scopes if s not in roles]
        token = make_token(settings, admin, others)
        _json_refusal(client.open(url, method=method, json={}, headers=bearer(token)), 403)


def test_predictions_filters_and_blind_reading(app, client, settings, demo_project):
    from models import Project

    _rounds, _versions, _images = models_with_predictions(settings, demo_project)
    reader = make_user(settings, "reader", "pathologist")
    curator = make_user(settings, "cur", "curator")
    hr = bearer(make_token(settings, reader, ["read", "label"]))
    hc = bearer(make_token(settings, curator, ["read"]))
    p = demo_project
    confident = client.get(f"/api/v1/projects/{p}/cells?min_confidence=0.8&limit=500",
                           headers=hr).get_json()["items"]
    assert confident and all(c["prediction"]["confidence"] >= 0.8 for c in confident)
    some = confident[0]["prediction"]["predicted_class"]
    by_class = client.get(f"/api/v1/projects/{p}/cells?predicted_class={some}&limit=500",
                          headers=hr).get_json()["items"]
    assert by_class and {c["prediction"]["predicted_class"] for c in by_class} == {some}
    lease = client.post(f"/api/v1/projects/{p}/leases", json={}, headers=hr).get_json()
    assert lease["model_version_id"] == _versions[1] and lease["suggested_class_id"]

    with session_scope(settings.database_url) as s:
        s.get(Project, p).blind_reading = True
    # Blind reading: readers see no prediction anywhere; curators still do.
    _json_refusal(client.get(f"/api/v1/projects/{p}/cells?min_confidence=0.8", headers=hr), 403)
    cells = client.get(f"/api/v1/projects/{p}/cells?limit=500", headers=hr).get_json()["items"]
    assert all(c["prediction"] is None for c in cells)
    assert client.get(f"/api/v1/cells/{confident[0]['id']}", headers=hr
                      ).get_json()["prediction"] is None
    assert client.get(f"/api/v1/cells/{confident[0]['id']}", headers=hc
                      ).get_json()["prediction"] is not None
    held = client.post(f"/api/v1/projects/{p}/leases", json={}, headers=hr).get_json()
    assert held["cell"]["prediction"] is None and held["suggested_class_id"] is None
