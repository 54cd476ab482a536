"""Refusals of the case server: a status, a plain-words message, and JSON `{"error": ...}`."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from dropbox.cases import Conflict
from dropbox.errors import AccessDenied, DropboxError, NotFound
from dropbox.web.limits import Busy

# The HTTP authentication scheme of the bearer tokens (RFC 6750): not a secret.
BEARER = "Bearer"

HTTP_TEXT = {
    400: "the request is malformed",
    401: "sign in first",
    403: "you may not do this",
    404: "there is no such thing here",
    405: "this method is not allowed here",
    413: "the request is too large",
    415: "send JSON, with Content-Type: application/json",
    429: "too many requests; wait a minute and try again",
    503: "the server is busy; try again shortly",
}


class ApiError(Exception):
    """A refusal with an HTTP status and a plain-words message for the JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def unauthorised(message: str) -> ApiError:
    """A 401 that names the bearer scheme."""
    return ApiError(401, message, {"WWW-Authenticate": f'{BEARER} realm="dropbox"'})


def _json(status: int, message: str, **extra: Any) -> Response:
    response = jsonify({"error": message, **extra})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Every error is JSON `{"error": ...}`; never a trace."""

    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Response:
        response = _json(exc.status, exc.message, **exc.extra)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(Conflict)
    def _conflict(exc: Conflict) -> Response:
        return _json(409, str(exc))

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> Response:
        return _json(404, str(exc))

    @app.errorhandler(AccessDenied)
    def _denied(exc: AccessDenied) -> Response:
        return _json(403, str(exc))

    @app.errorhandler(DropboxError)
    def _refused(exc: DropboxError) -> Response:
        return _json(400, str(exc))

    @app.errorhandler(Busy)
    def _busy(_: Busy) -> Response:
        return _json(503, HTTP_TEXT[503])

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = exc.code or 500
        response = _json(code, HTTP_TEXT.get(code, "the server could not do this"))
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # e.g. Allow on a 405
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        current_app.logger.error("unexpected error in %s: %s", request.endpoint, type(exc).__name__)
        return _json(500, "something went wrong on the server; try again")
