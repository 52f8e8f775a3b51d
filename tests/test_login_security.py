"""Login and sessions, as an attacker would try them (issue 11, "Login and sessions").

Failed-login limits, the same work for unknown users, sessions that end on the
server, security headers and a CSP without inline code, and request bodies
refused unread for anonymous clients.
"""

from __future__ import annotations

import hashlib
import io
import re
import time

import pytest

from models.db import session_scope
from models.settings import load_settings
from tests.helpers import (
    PASSWORD,
    REDIS_URL,
    LoggedIn,
    base_env,
    csrf_token,
    make_user,
)
from webapp.auth import sessions
from webapp.auth.throttle import TOO_MANY
from webapp.bootstrap import deactivate_user, set_password

WRONG = "not-the-password"


def _login_post(client, username: str, password: str, addr: str = "127.0.0.1"):
    page = client.get("/auth/login", environ_base={"REMOTE_ADDR": addr})
    return client.post("/auth/login", data={
        "username": username, "password": password, "csrf_token": csrf_token(page.text)},
        environ_base={"REMOTE_ADDR": addr})


def _reads_projects(client) -> bool:
    response = client.get("/api/projects")
    return response.status_code == 200 and response.is_json


# --- failed-login limits ----------------------------------------------------------------

def test_forty_wrong_passwords_then_the_right_one_is_refused(app, settings):
    make_user(settings, "ada", "pathologist")
    client = app.test_client()
    codes = [_login_post(client, "ada", WRONG).status_code for _ in range(40)]
    # Ten failures are answered (and checked); the rest are refused unchecked.
    assert codes[:10] == [401] * 10
    assert set(codes[10:]) == {429}

    response = _login_post(client, "ada", PASSWORD)
    assert response.status_code == 429
    assert TOO_MANY in response.text and 'id="login-refused"' in response.text
    assert not _reads_projects(client)
    # Case and spaces do not buy a fresh count.
    assert _login_post(client, " ADA ", PASSWORD).status_code == 429


def test_successful_logins_do_not_count(app, settings):
    make_user(settings, "ada", "pathologist")
    for _ in range(12):
        client = app.test_client()
        assert _login_post(client, "ada", PASSWORD).status_code == 302


def test_one_address_spraying_many_usernames_is_refused(app, settings):
    make_user(settings, "ada", "pathologist")
    client = app.test_client()
    codes = [_login_post(client, f"guess{i}", WRONG, addr="10.0.0.9").status_code
             for i in range(31)]
    assert codes[:30] == [401] * 30 and codes[30] == 429
    # That address is refused even for a real account and its right password...
    assert _login_post(client, "ada", PASSWORD, addr="10.0.0.9").status_code == 429
    # ...while another address logs in.
    assert _login_post(app.test_client(), "ada", PASSWORD, addr="10.0.0.10").status_code == 302


@pytest.mark.redis
def test_failed_logins_are_counted_in_redis_across_processes(tmp_path, sqlite_url):
    """Each web process gets its own limiter storage; with Redis they share the counts."""
    if not REDIS_URL:
        pytest.skip("HEMALOOP_TEST_REDIS_URL is not set")
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_RATELIMIT_STORAGE_URL=REDIS_URL))
    make_user(settings, "ada", "pathologist")
    first = create_app(settings)
    for _ in range(10):
        assert _login_post(first.test_client(), "ada", WRONG).status_code == 401
    second = create_app(settings)  # a fresh storage connection, as another process has
    assert _login_post(second.test_client(), "ada", PASSWORD).status_code == 429


def test_limit_storage_follows_a_redis_broker(tmp_path):
    env = base_env(tmp_path, HEMALOOP_BROKER_URL="redis://cache:6379/0")
    assert load_settings(env).ratelimit_storage_url == "redis://cache:6379/0"
    assert load_settings(base_env(tmp_path)).ratelimit_storage_url == "memory://"


# --- no username enumeration ---------------------------------------------------------------

def test_unknown_and_known_users_cost_one_hash_check_each(app, settings, monkeypatch):
    make_user(settings, "ada", "pathologist")
    make_user(settings, "gone", "pathologist")
    with session_scope(settings.database_url) as s:
        deactivate_user(s, "gone")
        from sqlalchemy import select

        from models import User

        real_hash = s.scalar(select(User.password_hash).where(User.username == "ada"))
    calls = []
    real_scrypt = hashlib.scrypt

    def counting_scrypt(*args, **kwargs):
        calls.append(1)
        return real_scrypt(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)
    counts = {}
    for username, password in [("ada", WRONG), ("nobody", WRONG), ("gone", PASSWORD),
                               ("ada", PASSWORD)]:
        client = app.test_client()
        page = client.get("/auth/login")
        calls.clear()
        client.post("/auth/login", data={"username": username, "password": password,
                                         "csrf_token": csrf_token(page.text)})
        counts[(username, password)] = len(calls)
    assert set(counts.values()) == {1}, counts
    # The dummy is made like real hashes: same method, same cost.
    from models.users import dummy_password_hash

    assert dummy_password_hash().split("$")[0] == real_hash.split("$")[0]


# --- sessions end on the server ---------------------------------------------------------------

def _copied_cookie(app, logged_in: LoggedIn):
    thief = app.test_client()
    thief.set_cookie("session", logged_in.client.get_cookie("session").value)
    return thief


def test_a_copied_cookie_stops_working_at_logout(app, settings):
    make_user(settings, "ada", "pathologist")
    ada = LoggedIn(app.test_client(), "ada")
    thief = _copied_cookie(app, ada)
    assert _reads_projects(thief)
    ada.post("/auth/logout", htmx=False)
    assert not _reads_projects(thief)
    assert not _reads_projects(ada.client)
    # Logging in again works, with a new session.
    assert _reads_projects(LoggedIn(app.test_client(), "ada").client)


def test_a_new_password_ends_open_sessions(app, settings):
    make_user(settings, "ada", "pathologist")
    ada = LoggedIn(app.test_client(), "ada")
    thief = _copied_cookie(app, ada)
    with session_scope(settings.database_url) as s:
        set_password(s, "ada", "a-brand-new-password")
    assert not _reads_projects(thief) and not _reads_projects(ada.client)
    assert _reads_projects(LoggedIn(app.test_client(), "ada", "a-brand-new-password").client)


def test_deactivation_ends_open_sessions(app, settings):
    make_user(settings, "ada", "pathologist")
    ada = LoggedIn(app.test_client(), "ada")
    thief = _copied_cookie(app, ada)
    with session_scope(settings.database_url) as s:
        deactivate_user(s, "ada")
    assert not _reads_projects(thief) and not _reads_projects(ada.client)
    assert _login_post(app.test_client(), "ada", PASSWORD).status_code == 401


def test_sessions_expire_after_the_idle_time(tmp_path, sqlite_url, monkeypatch):
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_SESSION_IDLE_MINUTES="1"))
    app = create_app(settings)
    make_user(settings, "ada", "pathologist")
    start = time.time()
    monkeypatch.setattr(sessions, "now", lambda: start)
    ada = LoggedIn(app.test_client(), "ada")
    # Activity keeps it alive: each request within the minute moves the clock on.
    for offset in (50, 100, 150):
        monkeypatch.setattr(sessions, "now", lambda offset=offset: start + offset)
        assert _reads_projects(ada.client), offset
    thief = _copied_cookie(app, ada)
    monkeypatch.setattr(sessions, "now", lambda: start + 150 + 61)
    assert not _reads_projects(thief)
    assert not _reads_projects(ada.client)


def test_session_cookie_is_secure_when_set(tmp_path, sqlite_url):
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_SECURE_COOKIES="true"))
    app = create_app(settings)
    make_user(settings, "ada", "pathologist")
    client = app.test_client()
    page = client.get("/auth/login", base_url="https://localhost")
    response = client.post("/auth/login", base_url="https://localhost", data={
        "username": "ada", "password": PASSWORD, "csrf_token": csrf_token(page.text)})
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


# --- headers and the Content-Security-Policy ---------------------------------------------------

HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
           "Referrer-Policy")


def _get_urls(app, ids: dict[str, int]) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        if rule.endpoint == "static":
            urls.append("/static/css/app.css")
            continue
        values = {arg: ids.get(arg, 1) for arg in rule.arguments}
        with app.test_request_context():
            from flask import url_for

            urls.append(url_for(rule.endpoint, **values))
    return urls


def test_every_page_carries_the_security_headers(app, settings, demo_project):
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    ids = {"project_id": demo_project}
    urls = _get_urls(app, ids) + ["/no-such-page"]
    assert len(urls) > 20
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=", re.IGNORECASE)
    for client in (app.test_client(), admin.client):
        for url in urls:
            response = client.get(url)
            for name in HEADERS:
                assert name in response.headers, (url, response.status_code, name)
            csp = response.headers["Content-Security-Policy"]
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            if response.mimetype == "text/html":
                assert not inline.search(response.text), (url, inline.search(response.text))


# --- request bodies -----------------------------------------------------------------------------

class CountingStream(io.BytesIO):
    """A request body that records how much of it the server read."""

    def __init__(self, size: int):
        super().__init__(b"x" * size)
        self.size = size
        self.read_bytes = 0

    def _count(self, data):
        self.read_bytes += len(data)
        return data

    def read(self, n=-1):
        return self._count(super().read(n))

    def read1(self, n=-1):
        return self._count(super().read1(n))

    def readline(self, n=-1):
        return self._count(super().readline(n))

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.read_bytes += n
        return n


def _post_routes(app) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if "POST" in rule.methods:
            with app.test_request_context():
                from flask import url_for

                urls.append(url_for(rule.endpoint, **{a: 1 for a in rule.arguments}))
    return urls


def test_anonymous_bodies_are_refused_unread(app):
    urls = _post_routes(app)
    assert "/auth/login" in urls and len(urls) > 10
    for url in urls:
        if url == "/auth/login":
            continue
        body = CountingStream(5 * 1024 * 1024)
        response = app.test_client().post(
            url, input_stream=body, content_length=body.size,
            content_type="multipart/form-data; boundary=xyz")
        assert response.status_code == 401, (url, response.status_code)
        assert body.read_bytes == 0, url


def test_the_login_form_takes_a_small_body_only(app):
    body = CountingStream(64 * 1024)
    response = app.test_client().post(
        "/auth/login", input_stream=body, content_length=body.size,
        content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413


def test_ordinary_forms_are_small_and_upload_routes_large(tmp_path, sqlite_url):
    from webapp import create_app
    from webapp.limits import accepts_upload

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_MAX_FORM_BYTES=str(64 * 1024),
                                      HEMALOOP_MAX_UPLOAD_BYTES=str(4 * 1024 * 1024)))
    app = create_app(settings)

    @accepts_upload
    def take_upload():
        from flask import request

        return {"bytes": len(request.files["file"].read())}

    def ordinary():
        from flask import request

        return {"fields": len(request.form)}

    app.add_url_rule("/test/upload", view_func=take_upload, methods=["POST"])
    app.add_url_rule("/test/form", view_func=ordinary, methods=["POST"])
    make_user(settings, "ada", "pathologist")
    ada = LoggedIn(app.test_client(), "ada")
    two_mb = b"\0" * (2 * 1024 * 1024)

    response = ada.post("/test/upload", data={"file": (io.BytesIO(two_mb), "a.bin")})
    assert response.status_code == 200 and response.json == {"bytes": len(two_mb)}
    response = ada.post("/test/form", data={"file": (io.BytesIO(two_mb), "a.bin")})
    assert response.status_code == 413
    big = b"\0" * (5 * 1024 * 1024)
    response = ada.post("/test/upload", data={"file": (io.BytesIO(big), "a.bin")})
    assert response.status_code == 413
    # A small ordinary form still goes through.
    assert ada.post("/test/form", data={"a": "1"}).json == {"fields": 1}


@pytest.mark.parametrize("proxies, expected", [("0", "10.0.0.1"), ("1", "203.0.113.7")])
def test_client_address_comes_from_the_proxy_only_when_trusted(tmp_path, sqlite_url, proxies,
                                                                expected):
    """The per-address count keys on the client behind a trusted TLS proxy."""
    from webapp import create_app
    from webapp.auth.throttle import _address_key

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_TRUSTED_PROXIES=proxies))
    app = create_app(settings)
    app.add_url_rule("/test/key", view_func=lambda: {"key": _address_key()})
    response = app.test_client().get("/test/key", environ_base={"REMOTE_ADDR": "10.0.0.1"},
                                     headers={"X-Forwarded-For": "203.0.113.7"})
    assert response.json == {"key": f"login-address:{expected}"}
