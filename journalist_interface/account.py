"""The officer's own account: key fingerprint, passphrase, authenticator app, notification e-mails.

An officer enrolled before X-Wing, whose key is X25519, can replace it here
with an X-Wing key made on this machine (`/account/key`): an explicit step,
because the key's fingerprint changes and the officer must tell their
administrator the new one.

The current passphrase is checked here, by deriving from it again and
opening the officer's wrapped key; only the authentication key derived from
it goes to the server, which checks it as at sign-in. A new passphrase
re-wraps the key held here: the server gets the new auth key and the new
wrap, never the key or the passphrase.

Notification e-mails (`/account/notifications`) are the case server's to
send (dropbox/notify.py): this page sends the officer's address, how often
they want mail, and the OpenPGP public key the mails must be encrypted to,
which the server checks before it keeps it.
"""

from __future__ import annotations

import contextlib
import hmac
from dataclasses import replace
from typing import Any

import pyotp
from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from crypto.errors import DecryptionError
from crypto.keys import WRAP_HEADER_BYTES, fingerprint, is_hybrid, unwrap_with_wrapping_key
from dropbox import openpgp
from dropbox.api_schema import NotificationSettings
from journalist_interface import casefile, vault
from journalist_interface.client import ApiError, Unreachable
from journalist_interface.signin import (
    MIN_PASSPHRASE_CHARS,
    code_fits,
    normalise_code,
    said,
    totp_page,
)

blueprint = Blueprint("account", __name__)

WRONG_CURRENT = "The current passphrase is not right."


def register_account(app: Flask) -> None:
    """Attach the account pages."""
    app.register_blueprint(blueprint)


def _refusal(refused: ApiError) -> str:
    """What the officer reads when the case server refuses a change to their account.

    An outage, an ended sign-in or a missing account are not refusals of the
    change: they go on to the handlers every page shares.
    """
    if isinstance(refused, Unreachable) or refused.status in (401, 404):
        raise refused
    return said(refused.message)


def _record_mismatch(entry: vault.Entry, mismatch: casefile.KeyMismatch) -> None:
    """Record on the case server what did not match, if it answers; the caller tells the officer."""
    with contextlib.suppress(ApiError):
        entry.client.record(None, "key.mismatch", mismatch.detail)


def current_auth_key(entry: vault.Entry, passphrase: str) -> bytes | None:
    """The auth key of `passphrase` if it is the officer's current one (checked here), else None.

    The passphrase must open the officer's wrapped key to the very key this
    session holds: a wrong one is told at once, without asking the server.
    """
    wrapped = entry.me.wrapped_secret_key
    try:
        auth_key, wrapping_key = casefile.derive_auth(
            passphrase, wrapped[:WRAP_HEADER_BYTES], vault.settings().minimum_cost
        )
        opened = unwrap_with_wrapping_key(wrapped, wrapping_key)
    except DecryptionError:
        return None
    if not hmac.compare_digest(bytes(opened), bytes(entry.keyring.officer_key)):
        return None
    return auth_key


def _entry() -> vault.Entry:
    entry = vault.current()
    assert entry is not None  # noqa: S101 - the decorator sent everyone else to sign in
    return entry


@blueprint.get("/account")
@vault.signed_in
def account() -> str:
    """The officer's own account, as the case server has it now (one round trip)."""
    entry = _entry()
    # Fresh from the server: grants given or taken since sign-in show, and a
    # deactivated officer's token is refused (and they are sent to sign in).
    entry.me = entry.client.me()
    names = {o.code: o.name for o in entry.me.offices}
    return render_template(
        "account.html",
        offices=[(g.office, names.get(g.office, g.office)) for g in entry.me.grants],
        # Of the key this app holds, not of the server's copy of the public key:
        # the two differ if someone swapped it there, and the administrator compares
        # against this one.
        key_fingerprint=fingerprint(entry.keyring.officer_key.public_key),
        # An officer enrolled before X-Wing: offered a new key (the form below).
        older_key=not is_hybrid(entry.keyring.officer_key),
    )


@blueprint.post("/account/passphrase")
@vault.signed_in
def change_passphrase() -> WerkzeugResponse:
    """Re-wrap the key under a new passphrase; other sessions end."""
    entry = _entry()
    settings = vault.settings()
    new = request.form.get("new_passphrase", "")
    if new != request.form.get("confirm_passphrase", ""):
        flash(_("The two new passphrases differ."), "error")
        return redirect(url_for("account.account"))
    if len(new) < MIN_PASSPHRASE_CHARS:
        flash(_("a passphrase needs at least %(n)s characters", n=MIN_PASSPHRASE_CHARS), "error")
        return redirect(url_for("account.account"))
    auth_key = current_auth_key(entry, request.form.get("current_passphrase", ""))
    if auth_key is None:
        flash(_(WRONG_CURRENT), "error")
        return redirect(url_for("account.account"))
    new_auth_key, new_wrapped = casefile.rewrap(
        entry.keyring.officer_key, new, settings.officer_cost
    )
    try:
        entry.client.change_passphrase(
            auth_key=auth_key,
            code=normalise_code(request.form.get("code", "")),
            new_auth_key=new_auth_key,
            new_wrapped_secret_key=new_wrapped,
        )
    except ApiError as refused:
        flash(_refusal(refused), "error")
        return redirect(url_for("account.account"))
    entry.me = replace(entry.me, wrapped_secret_key=new_wrapped)
    flash(_("Your passphrase was changed. Your other sessions were signed out."), "info")
    return redirect(url_for("account.account"))


@blueprint.post("/account/key")
@vault.signed_in
def replace_key() -> WerkzeugResponse:
    """Give an officer enrolled before X-Wing a new X-Wing key, made here; tell its fingerprint.

    The passphrase is checked here and wraps the new key, as at enrolment;
    each office key the officer holds is opened again from their own grant,
    checked against the server's key and the pin, and sealed to the new key
    on this machine (casefile.new_officer_key). The server replaces the key,
    the wrap and the grants in one transaction, or nothing.
    """
    entry = _entry()
    settings = vault.settings()
    if is_hybrid(entry.keyring.officer_key):
        flash(_("Your key is already an X-Wing key: nothing was changed."), "info")
        return redirect(url_for("account.account"))
    passphrase = request.form.get("current_passphrase", "")
    auth_key = current_auth_key(entry, passphrase)
    if auth_key is None:
        flash(_(WRONG_CURRENT), "error")
        return redirect(url_for("account.account"))
    # Fresh from the server: the grants as they are now, each opened and checked again.
    entry.me = entry.client.me()
    try:
        new = casefile.new_officer_key(
            entry.me, entry.keyring, passphrase, settings.officer_cost, settings.pins
        )
    except casefile.KeyReplacementRefused as refused:
        flash(refused.message, "error")
        return redirect(url_for("account.account"))
    except casefile.KeyMismatch as mismatch:
        _record_mismatch(entry, mismatch)  # nothing was made or sent
        flash(mismatch.message, "error")
        return redirect(url_for("account.account"))
    try:
        entry.client.replace_key(
            auth_key=auth_key,
            code=normalise_code(request.form.get("code", "")),
            new_auth_key=new.auth_key,
            public_key=new.public_key,
            wrapped_secret_key=new.wrapped_secret_key,
            grants=new.grants,
        )
    except ApiError as refused:
        flash(_refusal(refused), "error")
        return redirect(url_for("account.account"))
    entry.me = entry.client.me()
    try:
        keyring = casefile.keyring_after_replacement(entry.me, new)
    except casefile.KeyMismatch as mismatch:
        # The server said yes but does not hold what was sent: sign out, as a sign-in would refuse.
        _record_mismatch(entry, mismatch)
        vault.end()
        flash(mismatch.message, "error")  # after the session is cleared, so that it is shown
        return redirect(url_for("signin.login"))
    entry.keyring.office_keys.clear()
    entry.keyring = keyring
    flash(
        _(
            "You have a new X-Wing key, and your offices were moved to it. Its fingerprint is"
            " %(fingerprint)s. Please tell your administrator: the fingerprint they have for you"
            " is the old one, and any new office is granted to this one. Your other sessions"
            " were signed out.",
            fingerprint=new.fingerprint,
        ),
        "info",
    )
    return redirect(url_for("account.account"))


@blueprint.post("/account/totp")
@vault.signed_in
def reenrol_totp() -> Any:
    """Start setting up a new authenticator; the old one works until this is confirmed."""
    entry = _entry()
    auth_key = current_auth_key(entry, request.form.get("current_passphrase", ""))
    if auth_key is None:
        flash(_(WRONG_CURRENT), "error")
        return redirect(url_for("account.account"))
    entry.pending_totp = vault.PendingTotp(secret=pyotp.random_base32(), auth_key=auth_key)
    return totp_page(entry.pending_totp.secret, entry.username, "account.confirm_totp")


@blueprint.post("/account/totp/confirm")
@vault.signed_in
def confirm_totp() -> Any:
    """Finish setting up a new authenticator with a code from it."""
    entry = _entry()
    pending = entry.pending_totp
    if pending is None:
        return redirect(url_for("account.account"))
    code = normalise_code(request.form.get("code", ""))
    if not code_fits(pending.secret, code):
        error = _("That code is not right.")
        return totp_page(pending.secret, entry.username, "account.confirm_totp", error), 400
    try:
        entry.client.replace_totp(auth_key=pending.auth_key, secret=pending.secret, code=code)
    except ApiError as refused:
        error = _refusal(refused)
        page = totp_page(pending.secret, entry.username, "account.confirm_totp", error)
        return page, 400
    entry.pending_totp = None
    flash(_("Your new authenticator is set up."), "info")
    return redirect(url_for("account.account"))


MODES = ("none", "immediate", "digest")
MAX_KEY_CHARS = 64 * 1024


def _notifications_page(
    settings: NotificationSettings, form: dict[str, str] | None = None, error: str | None = None
) -> Any:
    return render_template(
        "notifications.html",
        settings=settings,
        fingerprint=openpgp.grouped(settings.openpgp_fingerprint or ""),
        form=form or {"email": settings.email, "mode": settings.mode},
        error=error,
        username=_entry().username,
    ), (400 if error else 200)


@blueprint.get("/account/notifications")
@vault.signed_in
def notifications() -> Any:
    """The officer's notification e-mails, as the case server has them (one round trip)."""
    return _notifications_page(_entry().client.notification_settings())


@blueprint.post("/account/notifications")
@vault.signed_in
def choose_notifications() -> Any:
    """Save the officer's choice; a refused key or address is told, and what was typed kept."""
    entry = _entry()
    form = {
        "email": request.form.get("email", "").strip(),
        "mode": request.form.get("mode", ""),
        "openpgp_key": request.form.get("openpgp_key", ""),
    }
    remove = request.form.get("remove_openpgp_key") == "yes"
    error = None
    if form["mode"] not in MODES:
        error = _("Choose how you want to be told.")
    elif len(form["openpgp_key"]) > MAX_KEY_CHARS:
        error = _(
            "That key is far too large: export only your public key, with its minimal options."
        )
    if error is None:
        try:
            entry.client.choose_notifications(
                email=form["email"],
                mode=form["mode"],
                openpgp_key=form["openpgp_key"],
                remove_openpgp_key=remove,
            )
        except ApiError as refused:
            error = _refusal(refused)
    if error is not None:
        return _notifications_page(entry.client.notification_settings(), form, error)
    flash(_("Your notification settings were saved."), "info")
    return redirect(url_for("account.notifications"))
