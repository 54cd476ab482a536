"""Signing in, signing out and enrolling: the passphrase never leaves this machine.

Sign-in: the case server hands out the officer's wrap header (cost and
salt; a stable fake one for a name it does not know), this app runs
Argon2id on the passphrase and sends only the authentication key and the
TOTP code. The answer carries the officer's wrapped secret key and the
office keys sealed to them, opened here with the wrapping key (which never
leaves) and kept in the vault, in memory, until sign-out or the timeouts.

Enrolment: the officer's one-time code is checked with the server, then the
key pair, the wrap and a TOTP secret are made here and held in memory until
the officer confirms a first code; only then is anything sent.
"""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import pyotp
import qrcode
import qrcode.image.svg
from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from markupsafe import Markup
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from crypto.errors import DecryptionError
from crypto.keys import fingerprint, is_hybrid
from journalist_interface import casefile, vault
from journalist_interface.client import ApiError, Unreachable

blueprint = Blueprint("signin", __name__)

DEVICE_COOKIE = "dropbox_reviewer_device"
DEVICE_LIFETIME = timedelta(days=180)
MIN_PASSPHRASE_CHARS = 12

WRONG = "The username, passphrase or code is not right. A code works only once."
LOCKED = "Too many failed attempts with this username. Try again after %(t)s."
UNREACHABLE = (
    "The case server cannot be reached. Check that tor is running and connected, then try again."
)
WEAK_COST = (
    "The case server asked for a weaker passphrase derivation than this app accepts, so"
    " nothing was sent. Tell your administrator: the server may have been tampered with."
)


def register_signin(app: Flask) -> None:
    """Attach the sign-in pages."""
    app.register_blueprint(blueprint)


def normalise_username(text: str) -> str:
    """A username as typed, as the sign-in compares it."""
    return text.strip().lower()


def said(message: str) -> str:
    """A refusal in the case server's words, as a sentence on a page."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message[-1] in ".!?" else message + "."


def normalise_code(text: str) -> str:
    """A TOTP code as typed (spaces forgiven)."""
    return "".join(text.split())


# --- where an officer lands after signing in ----------------------------------------

MAX_NEXT_CHARS = 2048


def safe_next(app: Flask, target: str) -> str | None:
    """`target` if it is the path of a page of this app, else None (then: the inbox).

    Only a path that starts with a single "/" and names a GET route of the
    app is taken: no scheme, no host, no backslash, no whitespace or control
    character, in the text as given or once percent-decoded (browsers drop
    tabs and newlines from a Location, and read a backslash as a slash).
    """
    if not target or len(target) > MAX_NEXT_CHARS or not target.isascii():
        return None
    for form in (target, unquote(target)):
        if "\\" in form or any(c.isspace() or not c.isprintable() for c in form):
            return None
    parts = urlsplit(target)
    path = unquote(parts.path)
    if parts.scheme or parts.netloc or parts.fragment:
        return None
    # As given (what a browser resolves) and as decoded (what the app routes).
    if not (target.startswith("/") and path.startswith("/")):
        return None
    if target.startswith("//") or path.startswith("//"):
        return None
    try:
        endpoint, _args = app.url_map.bind("reviewer.invalid").match(path, method="GET")
    except HTTPException:  # no such page, not a GET route, or a redirect elsewhere
        return None
    if endpoint == "static" or endpoint.startswith("signin."):
        return None
    return target


# --- the TOTP set-up page, shared with the account page ------------------------------


def qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code (no external image)."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode("utf-8")
    svg = svg[svg.index("<svg") :]
    # qrcode draws the URI as path geometry: no text of it (the username) is in the SVG.
    return Markup(svg)  # noqa: S704 - made by qrcode, not user input  # nosec B704


def totp_page(secret: str, username: str, action: str, error: str | None = None) -> str:
    """The page that sets up an authenticator app for `secret`, posting its code to `action`."""
    uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name="Dropbox reviewer")
    return render_template(
        "totp_setup.html",
        qr_svg=qr_svg(uri),
        secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        uri=uri,
        action=action,
        error=error,
    )


def code_fits(secret: str, code: str) -> bool:
    """Whether `code` is valid now for `secret` (checked here before anything is sent)."""
    return len(code) == 6 and code.isdigit() and pyotp.TOTP(secret).verify(code, valid_window=1)


# --- signing in ---------------------------------------------------------------------


def _login_form(error: str | None, username: str, status: int, locked: str | None = None) -> Any:
    page = render_template("login.html", error=error, locked_until=locked, username=username)
    return page, status


def _locked_until(error: ApiError) -> str | None:
    """The end of a lock the server reported (in seconds from now), as the page shows it."""
    wait = error.extra.get("retry_after")
    if isinstance(wait, bool) or not isinstance(wait, int) or not 0 <= wait <= 86400:
        return None
    return (datetime.now(UTC) + timedelta(seconds=wait)).strftime("%H:%M:%S UTC")


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in with username, passphrase and a TOTP code."""
    if request.method == "GET":
        return render_template("login.html", error=None, locked_until=None, username="")
    settings = vault.settings()
    username = normalise_username(request.form.get("username", ""))
    client = vault.new_client()
    kept = False
    try:
        try:
            # The device token on both calls: a flood against the username must not
            # use up this browser's budget for either of them.
            device = request.cookies.get(DEVICE_COOKIE, "")
            header = client.signin_parameters(username, device)
            try:
                auth_key, wrapping_key = casefile.derive_auth(
                    request.form.get("passphrase", ""), header, settings.minimum_cost
                )
            except casefile.UnsafeHeader:
                return _login_form(_(WEAK_COST), username, 502)
            code = normalise_code(request.form.get("code", ""))
            result = client.sign_in(username, auth_key, code, device=device)
        except Unreachable:
            return _login_form(_(UNREACHABLE), username, 502)
        except ApiError as error:
            if error.status == 429:
                locked = _locked_until(error)
                text = _(LOCKED, t=locked) if locked else said(error.message)
                return _login_form(text, username, 429, locked)
            return _login_form(_(WRONG), username, 400)
        try:
            keyring = casefile.open_keyring(result.me, wrapping_key)
        except (casefile.KeyMismatch, DecryptionError) as refused:
            # The server's copy of this officer's keys is not the one the passphrase
            # opens: nothing is opened or kept, the mismatch is recorded, and the
            # server session ends at once.
            detail = (
                refused.detail
                if isinstance(refused, casefile.KeyMismatch)
                else "officer key: the wrapped secret key does not open with the passphrase"
            )
            with contextlib.suppress(ApiError):
                client.record(None, "key.mismatch", detail)
            with contextlib.suppress(ApiError):
                client.sign_out()
            message = (
                refused.message
                if isinstance(refused, casefile.KeyMismatch)
                else _(
                    "Your key on the case server cannot be opened with your passphrase:"
                    " it may have been replaced. You were not signed in. Tell your"
                    " administrator."
                )
            )
            return _login_form(message, username, 409)
        del wrapping_key
        entry = vault.Entry(
            client=client, me=result.me, keyring=keyring, username=result.me.username
        )
        vault.start(entry)  # a fresh session: what is flashed comes after it
        kept = True
        for office in keyring.unopened:
            flash(
                _(
                    "Your key for office %(office)s did not open: ask an administrator to"
                    " grant you that office again.",
                    office=office,
                ),
                "error",
            )
        if not is_hybrid(keyring.officer_key):
            flash(
                _(
                    "Your key is of the older kind (X25519). You can replace it with a"
                    " post-quantum X-Wing key on your account page."
                ),
                "info",
            )
    finally:
        if not kept:
            client.close()
    target = safe_next(current_app, request.args.get("next", "")) or url_for("reports.inbox")
    response = redirect(target)
    response.set_cookie(
        DEVICE_COOKIE,
        result.device,
        max_age=int(DEVICE_LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        samesite="Strict",
    )
    return response


@blueprint.post("/logout")
def logout() -> WerkzeugResponse:
    """End the session now: the server's token ends and the keys here are forgotten."""
    vault.end()
    flash(_("You are signed out."), "info")
    return redirect(url_for("signin.login"))


# --- enrolment ----------------------------------------------------------------------


def _enrol_form(error: str, username: str, status: int = 400) -> Any:
    return render_template("enrol.html", error=error, username=username), status


@blueprint.route("/enrol", methods=["GET", "POST"])
def enrol() -> Any:
    """A new officer turns an enrolment code into a passphrase, a key pair and a TOTP device."""
    if request.method == "GET":
        return render_template("enrol.html", error=None, username="")
    settings = vault.settings()
    username = normalise_username(request.form.get("username", ""))
    code = request.form.get("code", "").strip()
    passphrase = request.form.get("passphrase", "")
    if passphrase != request.form.get("confirm_passphrase", ""):
        return _enrol_form(_("The two passphrases differ."), username)
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        return _enrol_form(
            _("a passphrase needs at least %(n)s characters", n=MIN_PASSPHRASE_CHARS), username
        )
    client = vault.new_client()
    try:
        client.check_enrolment(username, code)
    except Unreachable:
        return _enrol_form(_(UNREACHABLE), username, 502)
    except ApiError as error:
        return _enrol_form(said(error.message), username)
    finally:
        client.close()
    credentials = casefile.new_credentials(passphrase, settings.officer_cost)
    pending = vault.Enrolment(
        username=username, code=code, credentials=credentials, totp_secret=pyotp.random_base32()
    )
    old = session.get(vault.ENROLMENT_KEY)
    if isinstance(old, str):
        vault.vault().forget_enrolment(old)
    session[vault.ENROLMENT_KEY] = vault.vault().add_enrolment(pending)
    return totp_page(pending.totp_secret, username, "signin.enrol_confirm")


@blueprint.post("/enrol/confirm")
def enrol_confirm() -> Any:
    """Finish enrolment with a first code from the new device: only now is anything stored."""
    enrolment_id = session.get(vault.ENROLMENT_KEY)
    pending = vault.vault().enrolment(enrolment_id) if isinstance(enrolment_id, str) else None
    if pending is None:
        session.pop(vault.ENROLMENT_KEY, None)
        flash(_("Your enrolment took too long or was already finished. Start again."), "error")
        return redirect(url_for("signin.enrol"))
    code = normalise_code(request.form.get("code", ""))
    if not code_fits(pending.totp_secret, code):
        message = _("That code is not right. Wait for the next one and try again.")
        return totp_page(
            pending.totp_secret, pending.username, "signin.enrol_confirm", message
        ), 400
    credentials = pending.credentials
    client = vault.new_client()
    try:
        client.enrol(
            pending.username,
            pending.code,
            auth_key=credentials.auth_key,
            public_key=credentials.public_key,
            wrapped_secret_key=credentials.wrapped_secret_key,
            totp_secret=pending.totp_secret,
            totp_code=code,
        )
    except Unreachable:
        error = _(UNREACHABLE)
        return totp_page(pending.totp_secret, pending.username, "signin.enrol_confirm", error), 502
    except ApiError as refused:
        page = totp_page(
            pending.totp_secret, pending.username, "signin.enrol_confirm", said(refused.message)
        )
        return page, 400
    finally:
        client.close()
    vault.vault().forget_enrolment(enrolment_id)  # type: ignore[arg-type]
    session.pop(vault.ENROLMENT_KEY, None)
    flash(
        _(
            "You are enrolled. Your key's fingerprint is %(fingerprint)s: read it out to the"
            " administrator who grants you an office (it is also on your account page)."
            " Sign in, then ask for access to your office.",
            fingerprint=fingerprint(credentials.secret_key.public_key),
        ),
        "info",
    )
    return redirect(url_for("signin.login"))
