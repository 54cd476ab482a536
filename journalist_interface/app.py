"""The reviewer app: the officer's pages, served on 127.0.0.1 of the officer's own machine.

It has no database: it talks to the case server through `client.py`, and
derives keys, decrypts and seals here. A web app on loopback can be reached
by any page the officer's browser opens, so every request must come to its
own address and port (a page of another site that rebinds its DNS name to
127.0.0.1 still sends its own name as Host), every form carries a CSRF token,
a non-GET request from another origin is refused, and the session cookie is
HttpOnly and SameSite=Strict. The key that signs the cookie is new at every
start, so a restart ends every session (the keys were in memory anyway).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import httpx
from flask import (
    Flask,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import Babel
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from dropbox.web import (
    refuse_nameless_form_fields,
    register_robots_and_icon,
    register_security_headers,
)
from journalist_interface import vault
from journalist_interface.client import ApiError, Unreachable
from journalist_interface.settings import ReviewerSettings
from journalist_interface.signin import said

ERROR_TEXT: dict[str, tuple[Any, Any]] = {
    "bad_request": (_l("Bad request"), _l("The request could not be understood.")),
    "forbidden": (_l("Not allowed"), _l("Your account may not open this page.")),
    "not_found": (_l("Not found"), _l("There is no such page or report, or you may not see it.")),
    "method": (_l("Not allowed here"), _l("This address does not take that kind of request.")),
    "too_large": (_l("Too large"), _l("What was sent is too large.")),
    "too_many": (_l("Too many attempts"), _l("Wait a minute, then try again.")),
    "busy": (_l("Busy"), _l("The server is busy. Wait a minute, then try again.")),
    "form_expired": (_l("Form expired"), _l("The form expired. Go back, reload and retry.")),
    "other_origin": (
        _l("Refused"),
        _l("This request came from another site, so it was refused. Nothing was changed."),
    ),
    "unreachable": (
        _l("The case server cannot be reached"),
        _l(
            "The case server did not answer. Check that tor is running and connected,"
            " then try again. Nothing was changed."
        ),
    ),
    "server_error": (
        _l("Something went wrong"),
        _l("The request failed. Nothing was changed. Try again in a minute."),
    ),
}

# Largest request body: forms and a recovery file.
MAX_CONTENT_LENGTH = 4 * 1024 * 1024


def create_reviewer_app(
    settings: ReviewerSettings, transport: httpx.BaseTransport | None = None
) -> Flask:
    """Build the reviewer app (`transport`: the case server in this process, for tests)."""
    app = Flask("journalist_interface")
    app.extensions["reviewer.settings"] = settings
    app.extensions["reviewer.transport"] = transport
    app.extensions["reviewer.vault"] = vault.new_vault(settings)
    configure_shell(app, settings.origins)
    app.before_request(vault.load_entry)
    _register_blueprints(app)
    register_error_handlers(app)
    _template_globals(app)
    return app


def configure_shell(app: Flask, origins: tuple[str, ...]) -> None:
    """What every app served on the officer's loopback needs, online or offline (`offline.py`).

    The cookie, the Host check against `origins` (the first is the usual
    address), the Origin check, CSRF, the security headers; in this order,
    before anything else reads the request.
    """
    app.extensions["reviewer.origins"] = origins
    app.config.update(
        # New at every start: a restart voids every session, as it forgets every key.
        SECRET_KEY=secrets.token_bytes(32),
        SESSION_COOKIE_NAME="dropbox_reviewer",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=False,  # plain http on loopback
        # Test clients and url_for outside a request use the app's own address.
        SERVER_NAME=origins[0],
        MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=False,
        BABEL_DEFAULT_LOCALE="en",
    )
    # Before anything else reads the request: its Host, then its Origin.
    app.before_request(_check_host)
    app.before_request(_check_origin)
    app.before_request(refuse_nameless_form_fields)
    csrf = CSRFProtect(app)
    app.extensions["dropbox.csrf"] = csrf
    Babel(app, locale_selector=lambda: "en")
    register_security_headers(app, "", allow_images=True)
    register_robots_and_icon(app)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def _register_blueprints(app: Flask) -> None:
    from journalist_interface.account import register_account
    from journalist_interface.admin import register_admin
    from journalist_interface.reports import register_reports
    from journalist_interface.signin import register_signin
    from journalist_interface.statistics import register_statistics

    register_signin(app)
    register_reports(app)
    register_account(app)
    register_admin(app)
    register_statistics(app)


# --- where requests may come from ----------------------------------------------------


def _refusal(title: Any, message: Any, status: int) -> Response:
    body = render_template("error.html", title=title, message=message, status=status)
    return Response(body, status=status, mimetype="text/html")


def _check_host() -> Response | None:
    """Only this app's own loopback address and port: a rebound DNS name is refused."""
    g.entry = None
    origins: tuple[str, ...] = current_app.extensions["reviewer.origins"]
    host = request.environ.get("HTTP_HOST", "").lower()
    if host in origins:
        return None
    g.host_refused = True
    message = _("This page can only be opened at %(address)s", address=f"http://{origins[0]}")
    return _refusal(_("Wrong address"), message, 400)


# What a browser says in Sec-Fetch-Site about a request from this app's own pages (or
# typed by the officer); "same-site" is another port or name of 127.0.0.1: refused too.
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})


def _check_origin() -> Response | None:
    """A request that changes something must not come from another site's page.

    Checked on what the browser says, before the CSRF token: Sec-Fetch-Site
    must not name another site, and an Origin, if sent, must be this app's.
    Under the `no-referrer` policy every page sends, browsers send `Origin:
    null` even from the app's own forms, so "null" passes only where
    Sec-Fetch-Site says same-origin (a sandboxed frame or a data: page of
    another site, which also send "null", say cross-site).
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    origin = request.headers.get("Origin")
    own = f"http://{request.environ.get('HTTP_HOST', '').lower()}"
    refused = bool(site) and site not in _OWN_FETCH_SITES
    if origin is not None and not refused:
        if origin.strip().lower() == "null":
            refused = site != "same-origin"
        else:
            refused = origin.strip().lower() != own
    if not refused:
        return None
    title, message = ERROR_TEXT["other_origin"]
    return _refusal(title, message, 403)


# --- template globals ---------------------------------------------------------------


def _template_globals(app: Flask) -> None:
    @app.context_processor
    def _globals() -> dict[str, Any]:
        entry = None if g.get("host_refused") else vault.current()
        if entry is None:
            return {
                "officer": None,
                "officer_offices": [],
                "status_labels": {},
                "outcome_labels": {},
                "category_labels": {},
                "office_names": {},
            }
        me = entry.me
        names = {o.code: o.name for o in me.offices}
        return {
            "officer": me,
            "officer_offices": [
                (grant.office, names.get(grant.office, grant.office)) for grant in me.grants
            ],
            "status_labels": {s: s.capitalize() for s in me.statuses},
            "outcome_labels": {o: o.capitalize() for o in me.outcomes},
            "category_labels": dict(me.categories),
            "office_names": names,
        }


# --- errors -------------------------------------------------------------------------


def error_page(kind: str, status: int) -> tuple[str, int]:
    """An error page in the house style."""
    title, message = ERROR_TEXT[kind]
    return render_template("error.html", title=title, message=message, status=status), status


def api_error_page(error: ApiError) -> Any:
    """What a refusal of the case server shows: its own words, or the page for its status.

    A 401 means the token ended on the server (deactivated, signed out
    elsewhere, expired): the keys here are forgotten too, and the officer
    signs in again.
    """
    if isinstance(error, Unreachable):
        return error_page("unreachable", 502)
    if error.status == 401:
        vault.end()
        flash(_("Your session ended. Please sign in again."), "info")
        return redirect(url_for("signin.login"))
    if error.status == 403:
        return error_page("forbidden", 403)
    if error.status == 404:
        return error_page("not_found", 404)
    if error.status == 429:
        return error_page("too_many", 429)
    status = error.status if 400 <= error.status < 600 else 502
    return render_template(
        "error.html", title=_("Refused"), message=said(error.message), status=status
    ), status


def register_error_handlers(app: Flask) -> None:
    """Every error is a page in the same style; never a trace."""

    @app.errorhandler(CSRFError)
    def _csrf(_: CSRFError) -> tuple[str, int]:
        return error_page("form_expired", 400)

    @app.errorhandler(ApiError)
    def _api(error: ApiError) -> Any:
        return api_error_page(error)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[str, int]:
        code = exc.code or 500
        kinds = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method"}
        kinds.update({413: "too_large", 429: "too_many"})
        return error_page(kinds.get(code, "server_error"), code)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[str, int]:
        app.logger.error("unexpected error in %s: %s", request.endpoint, type(exc).__name__)
        session.modified = False
        return error_page("server_error", 500)
