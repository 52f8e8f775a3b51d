"""The labeling page works under the Content-Security-Policy, with no violation logged."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models import Annotation, Origin
from models.db import session_scope
from tests.browser.helpers import log_in, wait_for_js
from tests.helpers import make_user

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# Records every violation the page reports, from before its first script runs.
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", e => {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


def test_labeling_under_the_csp_logs_no_violation(live_server, page, settings, demo_project):
    console = []
    page.on("console", lambda msg: console.append(msg.text))
    page.add_init_script(WATCH)
    make_user(settings, "reader", "pathologist")

    log_in(page, live_server, "reader")
    page.wait_for_selector("#cell[data-ready]")
    csp = page.evaluate("fetch(location.href).then(r => r.headers.get('content-security-policy'))")
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
    # The class colours reach the buttons (data-css, applied by static/js/styles.js).
    colour = "getComputedStyle(document.querySelector('.class-btn')).getPropertyValue('--c').trim()"
    assert page.evaluate(colour)

    for key in "123":
        image_id = page.get_attribute("#cell", "data-image-id")
        page.keyboard.press(key)
        wait_for_js(page,
            f"(c => c && c.dataset.imageId !== '{image_id}' && c.dataset.ready)"
            "(document.querySelector('#cell'))")
    # ...and to the buttons of cells htmx swapped in.
    assert page.evaluate(colour)

    with session_scope(settings.database_url) as s:
        stored = s.scalar(select(func.count(Annotation.id))
                          .where(Annotation.origin == Origin.READER))
    assert stored == 3
    assert page.evaluate("window.__csp") == []
    assert not [m for m in console if "Content Security Policy" in m], console
    assert page.js_errors == []

    # Control: the watcher does see a violation, so the empty list above means something.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<b style=\"color: red\">x</b>')")
    wait_for_js(page, "window.__csp.length > 0")
    assert "style-src" in page.evaluate("window.__csp")[0]
