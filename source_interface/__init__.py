"""The source interface: where a source reports and follows up, with no JavaScript at all."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from flask import Flask, g, request, session
from flask_babel import Babel
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from dropbox.config import Category, Config, Office
from dropbox.instance import Instance
from dropbox.web import (
    refuse_nameless_form_fields,
    register_robots_and_icon,
    register_security_headers,
    register_transport,
)
from dropbox.web.limits import Busy, DerivationGate, limiter_storage_uri
from dropbox.web.sessions import ServerSessionInterface, session_key
from source_interface.uploads import (
    StreamingRequest,
    discard_upload,
    prepare_upload,
    refuse_upload_without_session,
)
from source_interface.views import LANGUAGE_NAMES, error_page, register_views


def create_app(config: Config, instance: Instance | None = None) -> Flask:
    """Build the source interface for an initialised instance."""
    app = Flask(__name__)
    app.request_class = StreamingRequest
    instance = instance or Instance.open(config)
    app.extensions["dropbox"] = instance
    app.extensions["dropbox.gate"] = DerivationGate(config.limits.concurrent_derivations)
    app.config.update(
        SECRET_KEY=instance.secrets.app_secret,
        SESSION_COOKIE_NAME="dropbox_source",
        MAX_CONTENT_LENGTH=config.source.max_upload_mib * 1024 * 1024,
        # Text fields stay in memory (never on disk); a report's text is far below this.
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        # The session's own absolute expiry bounds the token; a long report must not fail.
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=False,
        BABEL_DEFAULT_LOCALE="en",
    )
    # Sessions live where limits.storage_uri says (the database, or Redis): any worker reads them.
    app.session_interface = ServerSessionInterface(
        instance, "source", timedelta(minutes=config.source.session_minutes)
    )
    register_extensions(app, config)
    register_security_headers(app, config.source.onion_address)
    register_robots_and_icon(app)
    register_transport(app, config.source)
    register_views(app, config)
    register_error_handlers(app)
    _quiet_logs(app)
    return app


def register_extensions(app: Flask, config: Config) -> None:
    """Uploads, CSRF, translations and rate limits, in the order they must run."""
    # Before CSRF: checking the token reads the form, and with it the files,
    # which must stream into an envelope, never into a temporary file; and
    # before that, an upload from a session that may not send one is refused unread.
    app.before_request(refuse_upload_without_session)
    app.before_request(prepare_upload)
    app.teardown_request(discard_upload)
    app.before_request(refuse_nameless_form_fields)
    CSRFProtect(app)

    def locale() -> str:
        pinned: str | None = g.get("dropbox_language")
        if pinned is not None:
            return pinned
        language = session.get("language")
        return language if language in config.source.languages else config.source.languages[0]

    @app.before_request
    def _pin_language() -> None:
        # Fixed when the request starts, so that a page rendered after the session is
        # cleared (the logged-out page) is still in the language the source chose.
        g.dropbox_language = locale()

    # The catalogues are in source_interface/translations (Flask-Babel's default folder).
    Babel(app, locale_selector=locale)
    app.extensions["dropbox.locale"] = locale

    @app.template_filter("localized")
    def _localized(value: Office | Category | Iterable[Office | Category]) -> Any:
        """Offices and categories with their configured texts in the page's language."""
        if isinstance(value, Office | Category):
            return value.localized(locale())
        return [item.localized(locale()) for item in value]

    limiter = Limiter(
        key_func=lambda: session_key(session),
        app=app,
        # Shared across workers with redis://; the prefix keeps the two interfaces'
        # counters apart when they share one Redis.
        storage_uri=limiter_storage_uri(config.limits.storage_uri),
        key_prefix="dropbox-source",
        headers_enabled=False,
        default_limits=[],
    )
    app.extensions["dropbox.limiter"] = limiter

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "languages": [(code, LANGUAGE_NAMES[code]) for code in config.source.languages],
            "current_language": locale(),
            "logged_in": bool(session.get("report_id")),
            "session_minutes": config.source.session_minutes,
            "office_names": {o.code: o.localized(locale()).name for o in config.offices},
        }


def register_error_handlers(app: Flask) -> None:
    """Every error is a page in the same calm style; never a trace."""

    @app.errorhandler(CSRFError)
    def _csrf(_: CSRFError) -> tuple[str, int]:
        return error_page("form_expired", 400)

    @app.errorhandler(Busy)
    def _busy(_: Busy) -> tuple[str, int]:
        return error_page("busy", 503)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[str, int]:
        code = exc.code or 500
        known = {400: "bad_request", 404: "not_found", 405: "not_found", 413: "too_large"}
        if code == 429:
            return error_page("too_many", 429)
        return error_page(known.get(code, "server_error"), code)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[str, int]:
        # The exception type only: a message could hold user input.
        app.logger.error("unexpected error in %s: %s", request.endpoint, type(exc).__name__)
        return error_page("server_error", 500)


def _quiet_logs(app: Flask) -> None:
    # Werkzeug's request log (development server) holds the client address.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.logger.setLevel(logging.WARNING)
