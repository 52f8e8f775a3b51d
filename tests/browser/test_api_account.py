"""In a real browser: a token made in the Account page works for a program, and the
API's browsable page (vendored Swagger UI) renders under the CSP with no violation."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser.helpers import log_in, wait_for_js
from tests.browser.test_csp import WATCH
from tests.helpers import make_user

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_token_from_the_account_page_lists_cells(live_server, page, settings, demo_project):
    page.add_init_script(WATCH)
    make_user(settings, "reader", "pathologist")
    log_in(page, live_server, "reader")
    page.click("text=Account")
    page.fill("input[name=name]", "my script")
    page.check("input[name=scopes][value=label]")
    assert page.locator("input[name=scopes][value=admin]").count() == 0  # not an admin
    page.click("button:has-text('Create token')")
    token = page.text_content("#token-value").strip()
    assert token.startswith("hml_")
    assert page.locator("#tokens tbody tr").count() == 1

    request = urllib.request.Request(f"{live_server}/api/v1/projects/{demo_project}/cells?limit=5",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert len(json.load(response)["items"]) == 5
    assert page.evaluate("window.__csp") == [] and page.js_errors == []


def test_api_docs_page_renders_under_the_csp(live_server, page):
    console = []
    page.on("console", lambda msg: console.append(msg.text))
    page.add_init_script(WATCH)
    page.goto(f"{live_server}/api/v1/docs")
    wait_for_js(page, "document.querySelectorAll('.opblock').length >= 11")
    assert page.evaluate("document.body.innerText.includes('/api/v1/projects/{project_id}/cells')")
    assert page.evaluate("window.__csp") == [], page.evaluate("window.__csp")
    assert not [m for m in console if "Content Security Policy" in m], console
    assert page.js_errors == []
