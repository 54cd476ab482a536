"""Administration: officer accounts (invite, deactivate, grant an office), the audit log, and
the notification e-mails that failed.

Granting an office seals the office's secret key to the new officer's
public key, here: from the key this administrator holds, or from the
office's recovery file and its passphrase. Before anything is sealed, the
officer's public key as the server hands it out is checked against the
fingerprint the officer read out from their own reviewer app; a mismatch
seals nothing. Each action also needs a fresh code from the
administrator's authenticator app, which the case server checks.
"""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from crypto.keys import KeyChain, is_hybrid, public_key_from_bytes
from dropbox.api_schema import OfficerSummary
from dropbox.config import fingerprint_digest
from dropbox.offices import MALFORMED_FINGERPRINT
from dropbox.web import MAX_ROW_ID, form_row_id
from journalist_interface import casefile, vault
from journalist_interface.client import ApiError, Unreachable
from journalist_interface.signin import normalise_code, normalise_username, said

blueprint = Blueprint("admin", __name__)

MAX_RECOVERY_BYTES = 64 * 1024


def register_admin(app: Flask) -> None:
    """Attach the administration pages."""
    app.register_blueprint(blueprint)


def _entry() -> vault.Entry:
    entry = vault.current()
    assert entry is not None  # noqa: S101 - the decorator sent everyone else to sign in
    return entry


def _refused(error: ApiError) -> str:
    """The server's words for a refusal the page shows; raised on for the error pages."""
    if isinstance(error, Unreachable) or error.status in (401, 404):
        raise error
    return said(error.message)


def _older_key(public_key: bytes | None) -> bool:
    """Whether an officer's key is of the kind made before X-Wing (X25519)."""
    try:
        return public_key is not None and not is_hybrid(public_key_from_bytes(public_key))
    except ValueError:
        return False  # no key at all: the page says nothing of its kind


def _officers_page(
    new_code: str | None = None, new_username: str | None = None, error: str | None = None
) -> Any:
    entry = _entry()
    rows = entry.client.officers()
    names = {o.code: o.name for o in entry.me.offices}
    return render_template(
        "officers.html",
        officers=rows,
        older_keys={row.id for row in rows if _older_key(row.public_key)},
        new_code=new_code,
        new_username=new_username,
        grantable=[(code, names.get(code, code)) for code in sorted(entry.keyring.office_keys)],
        all_offices=[(o.code, o.name) for o in entry.me.offices],
        errors=error,
    ), (400 if error else 200)


@blueprint.route("/admin/officers", methods=["GET", "POST"], endpoint="officers")
@vault.administrators
def officers_page() -> Any:
    """Officer accounts: invite, deactivate, grant office access."""
    if request.method == "GET":
        return _officers_page()
    entry = _entry()
    try:
        invitation = entry.client.invite(
            normalise_username(request.form.get("username", "")),
            request.form.get("display_name", "").strip(),
            request.form.get("is_admin") == "yes",
            normalise_code(request.form.get("code", "")),
        )
    except ApiError as error:
        return _officers_page(error=_refused(error))
    username = normalise_username(request.form.get("username", ""))
    return _officers_page(new_code=invitation.code, new_username=username)


@blueprint.post(f"/admin/officers/<int(max={MAX_ROW_ID}):officer_id>/invite")
@vault.administrators
def reinvite(officer_id: int) -> Any:
    """A new enrolment code for an officer (forgotten passphrase, lost key: they re-enrol)."""
    entry = _entry()
    try:
        invitation = entry.client.reinvite(officer_id, normalise_code(request.form.get("code", "")))
    except ApiError as error:
        return _officers_page(error=_refused(error))
    found = [o.username for o in entry.client.officers() if o.id == officer_id]
    return _officers_page(new_code=invitation.code, new_username=found[0] if found else "")


@blueprint.post(f"/admin/officers/<int(max={MAX_ROW_ID}):officer_id>/deactivate")
@vault.administrators
def deactivate(officer_id: int) -> WerkzeugResponse:
    """Deactivate an officer: their sessions end, their grants go."""
    entry = _entry()
    if officer_id == entry.me.id:
        flash(_("You cannot deactivate your own account."), "error")
        return redirect(url_for("admin.officers"))
    try:
        entry.client.deactivate(officer_id, normalise_code(request.form.get("code", "")))
    except ApiError as error:
        flash(_refused(error), "error")
        return redirect(url_for("admin.officers"))
    flash(_("The officer was deactivated."), "info")
    return redirect(url_for("admin.officers"))


def _recovered_key(entry: vault.Entry, office: str) -> KeyChain | str:
    """The office key from the uploaded recovery file, or what to tell the administrator."""
    upload = request.files.get("recovery_file")
    data = upload.read(MAX_RECOVERY_BYTES + 1) if upload is not None else b""
    if not data:
        return str(_("Choose the office's recovery file, or use the office key you hold."))
    if len(data) > MAX_RECOVERY_BYTES:
        return str(_("That is not a recovery file: it is far too large."))
    try:
        opened: KeyChain = casefile.open_recovery(
            data,
            request.form.get("recovery_passphrase", ""),
            office,
            entry.me,
            vault.settings().pins,
        )
    except (casefile.KeyMismatch, casefile.RecoveryError) as refused:
        message = said(refused.message)
        return message
    return opened


@blueprint.post("/admin/grants")
@vault.administrators
def grant() -> WerkzeugResponse:
    """Give an officer an office: its key, sealed here to their checked public key."""
    entry = _entry()
    office = request.form.get("office", "")
    target_id = form_row_id(request.form.get("officer_id", ""))
    read_out = request.form.get("fingerprint", "")
    from_recovery = request.form.get("key_source") == "recovery"
    if target_id is None or office not in {o.code for o in entry.me.offices}:
        flash(_("Choose an officer and an office."), "error")
        return redirect(url_for("admin.officers"))
    # A slip in typing it is told before the administrator's code is used up.
    if fingerprint_digest(read_out) is None:
        flash(_(MALFORMED_FINGERPRINT), "error")
        return redirect(url_for("admin.officers"))
    office_key: KeyChain | str | None
    if from_recovery:
        office_key = _recovered_key(entry, office)
    else:
        office_key = entry.keyring.office_keys.get(office)
        if office_key is None:
            office_key = _(
                "You hold no key for that office: choose its recovery file instead,"
                " or ask an officer of that office to grant it."
            )
    if isinstance(office_key, str):
        flash(office_key, "error")
        return redirect(url_for("admin.officers"))
    target = _find(entry, target_id)
    if not (target.active and target.enrolled):
        flash(_("That officer has not enrolled yet, or was deactivated."), "error")
        return redirect(url_for("admin.officers"))
    try:
        sealed = casefile.seal_grant(office_key, target, read_out)
    except casefile.KeyMismatch as mismatch:
        # Nothing was sealed. Text that is no fingerprint at all is a typing slip,
        # not a mismatch: nothing is recorded for it.
        if not isinstance(mismatch, casefile.NotAFingerprint):
            with contextlib.suppress(ApiError):
                entry.client.record(None, "key.mismatch", mismatch.detail)
        flash(mismatch.message, "error")
        return redirect(url_for("admin.officers"))
    try:
        entry.client.grant(target.id, office, sealed, normalise_code(request.form.get("code", "")))
    except ApiError as error:
        flash(_refused(error), "error")
        return redirect(url_for("admin.officers"))
    flash(_("Access was granted."), "info")
    return redirect(url_for("admin.officers"))


def _find(entry: vault.Entry, officer_id: int) -> OfficerSummary:
    for row in entry.client.officers():
        if row.id == officer_id:
            return row
    abort(404)


@blueprint.get("/admin/audit")
@vault.administrators
def audit_log() -> str:
    """The audit log, newest first, and whether its chain is intact (checked by the server)."""
    entry = _entry()
    try:
        page = min(max(1, int(request.args.get("page", "1"))), 10**6)
    except ValueError:
        page = 1
    log = entry.client.audit_log(page)
    verification = entry.client.verify_audit()
    return render_template(
        "audit.html",
        events=log.events,
        verification=verification,
        page=log.page,
        pages=log.pages,
    )


@blueprint.get("/admin/notifications")
@vault.administrators
def notification_failures() -> str:
    """Notification e-mails that failed: retried later, or given up (each is in the audit log)."""
    answer = _entry().client.notification_failures()
    return render_template(
        "notification_failures.html", failures=answer.failures, mail_enabled=answer.mail_enabled
    )
