"""The reviewer interface: where intake officers decrypt, follow up and manage reports."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Flask, g, render_template, request, session
from flask_babel import Babel
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from dropbox.config import Config
from dropbox.instance import Instance
from dropbox.limits import Busy, DerivationGate, limiter_storage_uri
from dropbox.models import Outcome, Status
from dropbox.sessions import ServerSessionInterface
from dropbox.web import (
    refuse_nameless_form_fields,
    register_security_headers,
    register_transport,
)
from journalist_interface.api import register_api
from journalist_interface.auth import load_officer
from journalist_interface.views import ERROR_TEXT, register_views


def create_app(config: Config, instance: Instance | None = None) -> Flask:
    """Build the reviewer interface for an initialised instance."""
    app = Flask(__name__)
    instance = instance or Instance.open(config)
    app.extensions["dropbox"] = instance
    app.extensions["dropbox.gate"] = DerivationGate(config.limits.concurrent_derivations)
    app.config.update(
        SECRET_KEY=instance.secrets.app_secret,
        SESSION_COOKIE_NAME="dropbox_reviewer",
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=False,
        BABEL_DEFAULT_LOCALE="en",
    )
    app.session_interface = ServerSessionInterface(
        instance,
        "officer",
        lifetime=timedelta(hours=config.reviewer.absolute_hours),
        idle=timedelta(minutes=config.reviewer.idle_minutes),
        cookieless_prefix="/api/",
    )
    app.before_request(refuse_nameless_form_fields)
    csrf = CSRFProtect(app)
    app.extensions["dropbox.csrf"] = csrf
    Babel(app, locale_selector=lambda: "en")
    app.extensions["dropbox.limiter"] = Limiter(
        key_func=lambda: "everyone",
        app=app,
        storage_uri=limiter_storage_uri(config.limits.storage_uri),
        key_prefix="dropbox-reviewer",
        headers_enabled=False,
        default_limits=[],
    )
    app.before_request(load_officer)
    register_security_headers(app, config.reviewer.onion_address, allow_images=True)
    register_transport(app, config.reviewer)
    register_views(app, config)
    register_api(app, config)
    register_error_handlers(app)
    _template_globals(app, config)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return app


def _template_globals(app: Flask, config: Config) -> None:
    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "officer": g.get("officer"),
            "officer_offices": [
                (code, config.office(code).name) for code in g.get("office_codes", [])
            ],
            "status_labels": {s.value: s.value.capitalize() for s in Status},
            "outcome_labels": {o.value: o.value.capitalize() for o in Outcome},
            "category_labels": {c.code: c.label for c in config.categories},
            "office_names": {o.code: o.name for o in config.offices},
        }


def error_page(kind: str, status: int) -> tuple[Any, int]:
    """An error page in the house style, or JSON for the API."""
    title, message = ERROR_TEXT[kind]
    if request.path.startswith("/api/"):
        return {"error": str(message)}, status
    return render_template("error.html", title=title, message=message, status=status), status


def register_error_handlers(app: Flask) -> None:
    """Every error is a page in the same style (or JSON under /api); never a trace."""

    @app.errorhandler(CSRFError)
    def _csrf(_: CSRFError) -> tuple[Any, int]:
        return error_page("form_expired", 400)

    @app.errorhandler(Busy)
    def _busy(_: Busy) -> tuple[Any, int]:
        return error_page("busy", 503)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Any, int]:
        code = exc.code or 500
        kinds = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method"}
        kinds.update({413: "too_large", 429: "too_many"})
        return error_page(kinds.get(code, "server_error"), code)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Any, int]:
        app.logger.error("unexpected error in %s: %s", request.endpoint, type(exc).__name__)
        session.modified = False
        return error_page("server_error", 500)
