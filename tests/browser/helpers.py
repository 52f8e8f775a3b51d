"""Helpers the browser tests share: signing in, waiting on the page, where
screenshots go.  (Fixtures are in tests/browser/conftest.py.)"""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import PASSWORD

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def log_in(page, base: str, username: str) -> None:
    """Sign in through the login form, as a person would."""
    page.goto(base + "/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.keyboard.press("Enter")


def wait_for_js(page, expression: str, timeout: float = 15.0) -> None:
    """Wait until a JavaScript expression is truthy in the page.

    Playwright's wait_for_function evaluates its predicate with eval inside the
    page, which the Content-Security-Policy (no 'unsafe-eval') refuses;
    page.evaluate goes through the DevTools protocol, which CSP does not govern.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)
