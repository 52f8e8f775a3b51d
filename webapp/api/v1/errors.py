"""Error answers of API v1: `ErrorOut` JSON, whichever code path refuses."""

from __future__ import annotations

from flask import Response, jsonify


def json_error(status: int, error: str, message: str, **detail) -> Response:
    """A refusal a view returns itself (past `@bp.output`, which would reshape it)."""
    body = {"error": error, "message": message}
    if detail:
        body["detail"] = detail
    response = jsonify(body)
    response.status_code = status
    return response


def error_processor(error):
    """APIFlask's own errors (validation, authentication) in the same shape."""
    body = {"error": error.message, "message": _MESSAGES.get(error.status_code, error.message)}
    if error.detail:
        body["detail"] = error.detail
    return body, error.status_code, error.headers


_MESSAGES = {
    422: "The request's parameters or body are not valid; `detail` says which and why. "
         "Nothing was saved.",
}
