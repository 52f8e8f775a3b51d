"""Answers to the admin pages' polling (htmx ``hx-trigger="every …"``).

A polled fragment that has reached its end is sent with status 286, htmx's
"stop polling" (the swap still happens), and with an ``HX-Trigger`` event so
other parts of the page that depend on it (the project's figures, a round's
metrics) refresh themselves once, without a reload.
"""

from __future__ import annotations

import json

from flask import make_response

STOP_POLLING = 286

# How often a fragment polls: often while work runs, rarely while it waits in a queue.
RUNNING_EVERY = "2s"
QUEUED_EVERY = "5s"


def every(status: str) -> str:
    return RUNNING_EVERY if status == "running" else QUEUED_EVERY


def polled(html: str, *, finished: bool, events: tuple[str, ...] = ()):
    """``events``: named per thing (``round-7-finished``) rather than filtered on the
    client, since htmx's ``[…]`` trigger filters need eval, which the CSP forbids."""
    response = make_response(html)
    if finished:
        response.status_code = STOP_POLLING
        if events:
            response.headers["HX-Trigger"] = json.dumps({name: {} for name in events})
    return response


def time_left(seconds: float) -> str:
    """'40 s', '3 min': minutes rounded up from 90 s on, as the round rows say it."""
    if seconds >= 90:
        return f"{int(-(-seconds // 60))} min"
    return f"{max(1, round(seconds))} s"
