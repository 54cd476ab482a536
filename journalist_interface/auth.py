"""Who is signed in: the officer, their offices, and their secret key for this request only.

The officer's secret key lives in the session state, which is stored
encrypted under a key that only the officer's cookie holds. It is opened at
the start of a request and dropped with the request.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, flash, g, redirect, request, session, url_for
from flask_babel import gettext as _
from nacl.public import PrivateKey

from dropbox import access
from dropbox.instance import Instance
from dropbox.models import Officer

View = TypeVar("View", bound=Callable[..., Any])


def instance() -> Instance:
    """The instance this app serves."""
    opened: Instance = current_app.extensions["dropbox"]
    return opened


def load_officer() -> None:
    """Before each request: find the signed-in officer, if any, and check they are still active."""
    g.officer, g.officer_key, g.office_codes = None, None, []
    officer_id = session.get("officer_id")
    if not isinstance(officer_id, int):
        return
    with instance().sessions() as db:
        officer = db.get(Officer, officer_id)
        if officer is None or not officer.active:
            session.clear()
            return
        g.officer = officer
        g.office_codes = access.office_codes(db, officer)
    g.officer_key = PrivateKey(base64.b64decode(session["secret_key"]))


def start_session(officer: Officer, secret_key: PrivateKey) -> None:
    """After sign-in: a new session id, holding the officer's id and key."""
    session.regenerate()  # type: ignore[attr-defined]
    session.clear()
    session["officer_id"] = officer.id
    session["secret_key"] = base64.b64encode(bytes(secret_key)).decode("ascii")


def signed_in(view: View) -> View:
    """Only for a signed-in officer; others are sent to the sign-in page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.officer is None:
            if getattr(session, "expired", False):
                flash(_("Your session ended. Please sign in again."), "info")
            return redirect(url_for("login", next=request.path))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def administrators(view: View) -> View:
    """Only for a signed-in administrator."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flask import abort

        if g.officer is None:
            return redirect(url_for("login", next=request.path))
        if not g.officer.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
