"""Security headers on every response.

The Content-Security-Policy allows scripts and styles from this server's own
files only: no inline ``<script>``, no ``style=`` attributes, no event-handler
attributes, no eval (htmx's eval-based features and its injected indicator
``<style>`` are switched off in base.html's htmx-config).  Values that used to
be inline styles (a class's colour, a bar's width) travel as ``data-*``
attributes and static/js/styles.js applies them through the CSSOM, which CSP
permits.  The favicon is a data: URI, hence ``img-src data:``.
"""

from __future__ import annotations

from flask import Flask

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",  # for browsers that ignore frame-ancestors
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def init_app(app: Flask) -> None:
    secure = app.config["HEMALOOP"].secure_cookies

    @app.after_request
    def _security_headers(response):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if secure:
            # Only behind TLS: tells browsers to keep to HTTPS for a year.
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response
