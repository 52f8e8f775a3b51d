"""gunicorn's access log without the pages' polling.

Admin pages poll a round's row or a comparison every few seconds while it runs;
logged, those requests bury everything else in the console. The polled views
are marked by the ``X-Hemaloop-Poll`` header their htmx elements send
(``hx-headers``), so the filter needs no list of URLs to keep in step. Only
GETs count: a button inside a polled element (Cancel) inherits the header, and
its POST is worth a line.
"""

from __future__ import annotations

from gunicorn.glogging import Logger

POLL_HEADER = "X-HEMALOOP-POLL"


def is_polling(method: str, headers) -> bool:
    """``headers``: gunicorn's request headers, a list of (UPPER-CASE name, value)."""
    return method == "GET" and any(name == POLL_HEADER for name, _ in headers)


class QuietPollingLogger(Logger):
    """gunicorn's logger, less the access lines of successful polls (errors still show)."""

    def access(self, resp, req, environ, request_time):
        status = getattr(resp, "status_code", None) or 0
        if is_polling(req.method, req.headers) and status < 400:
            return
        super().access(resp, req, environ, request_time)
