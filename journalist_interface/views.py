"""The reviewer interface's pages: sign-in, inbox, report, account, enrolment and administration."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pyotp
import qrcode
import qrcode.image.svg
from flask import (
    Flask,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter import Limiter
from markupsafe import Markup
from nacl.public import PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse

from crypto.errors import DecryptionError
from crypto.keys import fingerprint
from dropbox import access, audit, casework, inbox, officers, offices
from dropbox.config import Config, fingerprint_digest
from dropbox.errors import DropboxError, NotFound
from dropbox.models import AuditEvent, OfficeGrant, Officer, Outcome, Report, Status, StatusChange
from dropbox.reports import check_source_key
from dropbox.sessions import session_id_hash
from dropbox.web import MAX_ROW_ID, form_row_id, size_text
from journalist_interface.auth import (
    DEVICE_COOKIE,
    administrators,
    instance,
    normalise_username,
    safe_next,
    set_device_cookie,
    signed_in,
    signin_guard,
    start_session,
)

ERROR_TEXT: dict[str, tuple[Any, Any]] = {
    "bad_request": (_l("Bad request"), _l("The request could not be understood.")),
    "forbidden": (_l("Not allowed"), _l("Your account may not open this page.")),
    "not_found": (_l("Not found"), _l("There is no such page or report, or you may not see it.")),
    "method": (_l("Not allowed here"), _l("This address does not take that kind of request.")),
    "too_large": (_l("Too large"), _l("What was sent is too large.")),
    "too_many": (_l("Too many attempts"), _l("Wait a minute, then try again.")),
    "busy": (_l("Busy"), _l("The server is busy. Wait a minute, then try again.")),
    "form_expired": (_l("Form expired"), _l("The form expired. Go back, reload and retry.")),
    "server_error": (
        _l("Something went wrong"),
        _l("The request failed. Nothing was changed. Try again in a minute."),
    ),
}


# Refused administrator actions: granting administrator rights or an office, deactivating.
CONFIRM_REFUSED = _l(
    "Nothing was changed: confirm with a new code from your authenticator app. "
    "Each code works only once, so if you just used one, wait for the next."
)


# A reply to a report whose first item binds no copy of the source's key.
UNCHECKED_SENT = _l(
    "Your message was sent to the source. The source's key could not be checked:"
    " this report was made before reports carried a sealed copy of it."
)


def qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code (no external image)."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode("utf-8")
    svg = svg[svg.index("<svg") :]
    # qrcode draws the URI as path geometry: no text of it (the username) is in the SVG.
    return Markup(svg)  # noqa: S704 - made by qrcode, not user input  # nosec B704


def _officer(db: Session) -> Officer:
    officer = db.get(Officer, g.officer.id)
    if officer is None:
        abort(403)
    return officer


def _report(db: Session, officer: Officer, report_id: str) -> Report:
    try:
        return access.report_for(db, officer, report_id)
    except NotFound:
        abort(404)


def register_views(app: Flask, config: Config) -> None:
    """Attach every page of the reviewer interface."""
    limiter: Limiter = app.extensions["dropbox.limiter"]
    cost = config.crypto.kdf_cost

    # --- signing in -------------------------------------------------------------

    def _signin_budget() -> str:
        """Each known device has its own budget of attempts; every other client shares one."""
        username = normalise_username(request.form.get("username", ""))
        return signin_guard().budget_key(username, request.cookies.get(DEVICE_COOKIE))

    @app.route("/login", methods=["GET", "POST"])
    @limiter.limit("60/minute", methods=["POST"], key_func=_signin_budget)
    def login() -> Any:
        """Sign in with username, passphrase and a TOTP code."""
        if request.method == "GET":
            return render_template("login.html", error=None, locked_until=None, username="")
        username = normalise_username(request.form.get("username", ""))
        guard = signin_guard()
        attempt = guard.attempt(username, request.cookies.get(DEVICE_COOKIE))
        # Counted before any work, alike for every username: a spent budget is
        # refused at once, whether or not an officer has that username.
        locked_until = guard.enter(attempt)
        if locked_until is None:
            with app.extensions["dropbox.gate"].slot(), instance().sessions.begin() as db:
                result = officers.sign_in(
                    db,
                    username,
                    request.form.get("passphrase", ""),
                    request.form.get("code", ""),
                    cost,
                )
                if result.ok:
                    assert result.officer is not None and result.secret_key is not None  # noqa: S101
                    start_session(result.officer, result.secret_key)
            if result.ok:
                target = safe_next(app, request.args.get("next", "")) or url_for("inbox")
                response = redirect(target)
                set_device_cookie(response, guard.succeeded(attempt, username))
                return response
            locked_until = guard.locked_until(attempt)
        locked = locked_until.strftime("%H:%M:%S UTC") if locked_until else None
        error = (
            _("Too many failed attempts with this username. Try again after %(t)s.", t=locked)
            if locked
            else _("The username, passphrase or code is not right. A code works only once.")
        )
        return render_template("login.html", error=error, locked_until=locked, username=username), (
            429 if locked else 400
        )

    @app.post("/logout")
    def logout() -> WerkzeugResponse:
        """End the session now."""
        if g.officer is not None:
            with instance().sessions.begin() as db:
                audit.record(db, g.officer.username, "officer.sign_out")
        session.clear()
        # The signed-in session's row goes now; a new one only carries the message below.
        session.regenerate()  # type: ignore[attr-defined]
        flash(_("You are signed out."), "info")
        return redirect(url_for("login"))

    # --- inbox ------------------------------------------------------------------

    @app.get("/", endpoint="inbox")
    @signed_in
    def inbox_page() -> str:
        """The reports of the officer's offices, with their deadlines."""
        args = {k: v for k, v in request.args.items() if v}
        try:
            page_number = int(args.get("page", "1"))
        except ValueError:
            page_number = 1
        filters = inbox.Filters(
            status=args.get("status", ""),
            category=args.get("category", ""),
            mine=args.get("mine") == "1",
            overdue=args.get("overdue") == "1",
            urgent=args.get("urgent") == "1",
            sort=args.get("sort", "received") if args.get("sort") in inbox.SORTS else "received",
            page=page_number,
        )
        today = datetime.now(UTC).date()
        with instance().sessions() as db:
            page = inbox.list_reports(db, _officer(db), g.office_codes, filters, today)
        return render_template(
            "inbox.html",
            page=page,
            filters=filters,
            args=args,
            categories=[(c.code, c.label) for c in config.categories],
            statuses=[(s.value, s.value.capitalize()) for s in Status],
            today=today,
        )

    # --- a report ---------------------------------------------------------------

    def _render_report(db: Session, officer: Officer, report: Report, **extra: Any) -> str:
        office_key = access.office_key(db, officer, g.officer_key, report)
        entries = casework.thread(instance(), db, officer, office_key, report)
        handling = access.handles(db, officer, report)
        changes = list(
            db.execute(
                select(StatusChange, Officer.display_name)
                .outerjoin(Officer, Officer.id == StatusChange.officer_id)
                .where(StatusChange.report_id == report.id)
                .order_by(StatusChange.id)
            ).all()
        )
        history = [
            {
                "from_status": c.from_status,
                "to_status": c.to_status,
                "outcome": c.outcome,
                "at": c.at,
                "officer_name": name,
            }
            for c, name in changes
        ]
        assignable = [
            (o.id, o.display_name)
            for o in db.execute(
                select(Officer)
                .join(OfficeGrant, OfficeGrant.officer_id == Officer.id)
                .where(OfficeGrant.office_code == report.office_code, Officer.active)
                .order_by(Officer.display_name)
            ).scalars()
        ]
        return render_template(
            "report.html",
            report=report,
            entries=entries,
            status_changes=history,
            assignable=assignable,
            refer_to=[(o.code, o.name) for o in config.offices if o.code != report.office_code],
            next_statuses=sorted(casework.TRANSITIONS.get(report.status, frozenset())),
            outcomes=[(o.value, o.value.capitalize()) for o in Outcome],
            has_identity=any(e.kind == "identity" for e in entries),
            identity=extra.get("identity"),
            is_handling=handling,
            source_key=check_source_key(instance(), db, report, office_key) if handling else None,
            format_size=size_text,
            today=datetime.now(UTC).date(),
        )

    @app.get("/reports/<report_id>")
    @signed_in
    def report(report_id: str) -> str:
        """The whole thread, decrypted for this request."""
        with instance().sessions.begin() as db:
            officer = _officer(db)
            return _render_report(db, officer, _report(db, officer, report_id))

    @app.get("/reports/<report_id>/files/<item_id>")
    @signed_in
    def download(report_id: str, item_id: str) -> Response | tuple[str, int]:
        """A file, decrypted as it streams; always a download, never shown inline."""
        with instance().sessions.begin() as db:
            officer = _officer(db)
            found = _report(db, officer, report_id)
            office_key = access.office_key(db, officer, g.officer_key, found)
            try:
                opened = casework.open_file(instance(), db, officer, office_key, found, item_id)
            except NotFound:
                abort(404)
            except casework.NotShared:
                return render_template(
                    "error.html",
                    title=_("File not shared with your office"),
                    message=_(
                        "This file was added after your office referred the report,"
                        " and is not shared with your office."
                    ),
                    status=403,
                ), 403
            except DecryptionError:
                # Leaving the block commits the "damaged" audit event.
                return render_template(
                    "error.html",
                    title=_("Damaged file"),
                    message=_("This file is damaged and cannot be decrypted."),
                    status=422,
                ), 422
        ascii_name = opened.name.encode("ascii", "replace").decode().replace('"', "")
        disposition = (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(opened.name)}"
        )

        def body() -> Any:
            try:
                yield from opened.chunks
            except DecryptionError:
                # Headers are gone: cutting the response off makes the download fail.
                raise

        response = Response(stream_with_context(body()), mimetype="application/octet-stream")
        response.headers["Content-Disposition"] = disposition
        response.headers["Content-Length"] = str(opened.size)
        return response

    @contextmanager
    def _casework(
        report_id: str, handling_only: bool = True
    ) -> Iterator[tuple[Session, Officer, Report]]:
        """One transaction for one action on a report the officer may act on.

        Any exception (a refusal, a 404) rolls it back and releases the
        database at once, except a refused key (KeyMismatch, the source's or
        an office's): it is raised before anything was sealed or changed, and
        its "key.mismatch" event is committed before it is raised on.
        """
        refused: offices.KeyMismatch | None = None
        with instance().sessions.begin() as db:
            officer = _officer(db)
            found = _report(db, officer, report_id)
            if handling_only and not access.handles(db, officer, found):
                abort(403)
            try:
                yield db, officer, found
            except offices.KeyMismatch as mismatch:
                refused = mismatch
        if refused is not None:
            raise refused

    def _done(report_id: str, error: DropboxError | None, message: str) -> WerkzeugResponse:
        flash(str(error) if error else message, "error" if error else "info")
        return redirect(url_for("report", report_id=report_id))

    @app.post("/reports/<report_id>/reply")
    @signed_in
    def reply(report_id: str) -> WerkzeugResponse:
        """Send a message to the source."""
        try:
            with _casework(report_id) as (db, officer, found):
                office_key = access.office_key(db, officer, g.officer_key, found)
                # A refused key (SourceKeyMismatch) commits its event (`_casework`).
                sent = casework.reply(
                    instance(), db, officer, office_key, found, request.form.get("message", "")
                )
        except DropboxError as error:
            return _done(report_id, error, "")
        if not sent.source_key_checked:
            return _done(report_id, None, str(UNCHECKED_SENT))
        return _done(report_id, None, _("Your message was sent to the source."))

    @app.post("/reports/<report_id>/notes")
    @signed_in
    def note(report_id: str) -> WerkzeugResponse:
        """Add an internal note."""
        try:
            with _casework(report_id) as (db, officer, found):
                office_key = access.office_key(db, officer, g.officer_key, found)
                casework.add_note(
                    instance(),
                    db,
                    officer,
                    found,
                    request.form.get("text", ""),
                    office_key=office_key,
                )
        except DropboxError as error:
            return _done(report_id, error, "")
        return _done(report_id, None, _("The note was saved."))

    @app.post("/reports/<report_id>/assign")
    @signed_in
    def assign(report_id: str) -> WerkzeugResponse:
        """Assign the report to an officer, or to nobody."""
        raw = request.form.get("assignee_id", "")
        try:
            with _casework(report_id) as (db, officer, found):
                if raw and form_row_id(raw) is None:
                    raise DropboxError(_("Choose an officer of the office handling the report."))
                casework.assign(db, officer, found, form_row_id(raw))
        except DropboxError as error:
            return _done(report_id, error, "")
        return _done(report_id, None, _("The assignment was saved."))

    @app.post("/reports/<report_id>/status")
    @signed_in
    def status(report_id: str) -> WerkzeugResponse:
        """Change the report's status."""
        form = request.form
        try:
            with _casework(report_id) as (db, officer, found):
                casework.change_status(
                    instance(),
                    db,
                    officer,
                    found,
                    form.get("status", ""),
                    form.get("outcome") or None,
                    form.get("reason", ""),
                    office_key=access.office_key(db, officer, g.officer_key, found),
                )
        except DropboxError as error:
            return _done(report_id, error, "")
        return _done(report_id, None, _("The status was changed."))

    @app.post("/reports/<report_id>/refer")
    @signed_in
    def refer(report_id: str) -> WerkzeugResponse:
        """Refer the report to the other office."""
        to_office = request.form.get("office", "")
        keep_copy = request.form.get("keep_copy") == "yes"
        try:
            with _casework(report_id) as (db, officer, found):
                if to_office not in {o.code for o in config.offices}:
                    raise DropboxError(_("Choose an office to refer to."))
                office_key = access.office_key(db, officer, g.officer_key, found)
                casework.refer(instance(), db, officer, office_key, found, to_office, keep_copy)
        except DropboxError as error:
            return _done(report_id, error, "")
        flash(_("The report was referred to %(office)s.", office=config.office(to_office).name))
        if keep_copy:
            return redirect(url_for("report", report_id=report_id))
        return redirect(url_for("inbox"))

    @app.post("/reports/<report_id>/identity")
    @signed_in
    def reveal(report_id: str) -> Any:
        """Reveal the source's identity details, with a recorded reason."""
        try:
            with _casework(report_id, handling_only=False) as (db, officer, found):
                office_key = access.office_key(db, officer, g.officer_key, found)
                try:
                    identity = casework.reveal_identity(
                        instance(), db, officer, office_key, found, request.form.get("reason", "")
                    )
                except DecryptionError:
                    # Returned inside the block, so that the reveal attempt and the
                    # "item.damaged" event are committed, not rolled back.
                    damaged = DropboxError(_("The identity details are damaged."))
                    return _done(report_id, damaged, "")
                return _render_report(db, officer, found, identity=identity)
        except DropboxError as error:
            return _done(report_id, error, "")

    @app.get("/reports/<report_id>/delete")
    @signed_in
    def confirm_delete(report_id: str) -> str:
        """Ask before deleting."""
        with _casework(report_id) as (_db, _officer_row, found):
            return render_template("confirm_delete.html", report=found)

    @app.post("/reports/<report_id>/delete")
    @signed_in
    def delete(report_id: str) -> WerkzeugResponse:
        """Crypto-shred the report, once its designation has been typed to confirm."""
        confirmation = request.form.get("confirm", "").strip().lower()
        with _casework(report_id) as (db, officer, found):
            if confirmation != found.designation.lower():
                flash(_("Type the designation exactly to confirm the deletion."), "error")
                return redirect(url_for("confirm_delete", report_id=report_id))
            blobs = casework.delete_report(instance(), db, officer, found)
        casework.remove_blobs(instance(), blobs)
        flash(_("The report was deleted."), "info")
        return redirect(url_for("inbox"))

    # --- account ----------------------------------------------------------------

    @app.get("/account")
    @signed_in
    def account() -> str:
        """The officer's own account."""
        codes = g.office_codes
        return render_template(
            "account.html",
            offices=[(c, config.office(c).name) for c in codes],
            # Of the key this session holds, not of the database's row: the two differ
            # if someone swapped the row, and the administrator compares against this.
            key_fingerprint=fingerprint(g.officer_key.public_key),
        )

    @app.post("/account/passphrase")
    @signed_in
    def change_passphrase() -> WerkzeugResponse:
        """Re-wrap the key under a new passphrase; other sessions end."""
        current = request.form.get("current_passphrase", "")
        new = request.form.get("new_passphrase", "")
        if new != request.form.get("confirm_passphrase", ""):
            flash(_("The two new passphrases differ."), "error")
            return redirect(url_for("account"))
        with instance().sessions.begin() as db:
            officer = _officer(db)
            if officers.unlock(officer, current, cost) is None:
                flash(_("The current passphrase is not right."), "error")
                return redirect(url_for("account"))
            try:
                officers.change_passphrase(officer, g.officer_key, new, cost)
            except DropboxError as error:
                flash(str(error), "error")
                return redirect(url_for("account"))
            current_id = getattr(session, "session_id", None)
            keep = session_id_hash(current_id) if current_id else None
            officers.end_sessions(db, officer, keep)
            audit.record(db, officer.username, "officer.passphrase")
        flash(_("Your passphrase was changed. Your other sessions were signed out."), "info")
        return redirect(url_for("account"))

    def _totp_page(secret: str, username: str, action: str, error: str | None = None) -> str:
        uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name="Dropbox reviewer")
        return render_template(
            "totp_setup.html",
            qr_svg=qr_svg(uri),
            secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            uri=uri,
            action=action,
            error=error,
        )

    @app.post("/account/totp")
    @signed_in
    def reenrol_totp() -> str:
        """Start setting up a new authenticator; the old one works until this is confirmed."""
        session["pending_totp"] = pyotp.random_base32()
        return _totp_page(session["pending_totp"], g.officer.username, "confirm_totp")

    @app.post("/account/totp/confirm")
    @signed_in
    def confirm_totp() -> Any:
        """Finish setting up a new authenticator with a code from it."""
        secret = session.get("pending_totp")
        if not secret:
            return redirect(url_for("account"))
        with instance().sessions.begin() as db:
            replaced = officers.replace_totp(db, _officer(db), secret, request.form.get("code", ""))
        if not replaced:
            return _totp_page(
                secret, g.officer.username, "confirm_totp", _("That code is not right.")
            ), 400
        session.pop("pending_totp", None)
        flash(_("Your new authenticator is set up."), "info")
        return redirect(url_for("account"))

    # --- enrolment --------------------------------------------------------------

    @app.route("/enrol", methods=["GET", "POST"])
    @limiter.limit("20/minute", methods=["POST"])
    def enrol() -> Any:
        """A new officer turns an enrolment code into a passphrase and a TOTP device."""
        if request.method == "GET":
            return render_template("enrol.html", error=None, username="")
        username = request.form.get("username", "").strip().lower()
        passphrase = request.form.get("passphrase", "")
        if passphrase != request.form.get("confirm_passphrase", ""):
            return render_template(
                "enrol.html", error=_("The two passphrases differ."), username=username
            ), 400
        try:
            with app.extensions["dropbox.gate"].slot(), instance().sessions.begin() as db:
                officer, key, secret = officers.complete_enrolment(
                    db, username, request.form.get("code", ""), passphrase, cost
                )
                officer_id = officer.id
        except DropboxError as error:
            return render_template("enrol.html", error=str(error), username=username), 400
        session.regenerate()  # type: ignore[attr-defined]
        session.clear()
        session["enrolling_id"] = officer_id
        session["enrolling_key"] = base64.b64encode(bytes(key)).decode("ascii")
        session["enrolling_secret"] = secret
        return _totp_page(secret, username, "enrol_confirm")

    @app.post("/enrol/confirm")
    def enrol_confirm() -> Any:
        """Finish enrolment with a first code from the new device."""
        officer_id = session.get("enrolling_id")
        if not isinstance(officer_id, int):
            return redirect(url_for("enrol"))
        with instance().sessions.begin() as db:
            officer = db.get(Officer, officer_id)
            if officer is None:
                abort(404)
            key = PrivateKey(base64.b64decode(session["enrolling_key"]))
            if not officers.confirm_totp(officer, key, request.form.get("code", "")):
                return _totp_page(
                    session["enrolling_secret"],
                    officer.username,
                    "enrol_confirm",
                    _("That code is not right. Wait for the next one and try again."),
                ), 400
        session.clear()
        flash(
            _(
                "You are enrolled. Your key's fingerprint is %(fingerprint)s: read it out to the"
                " administrator who grants you an office (it is also on your account page)."
                " Sign in, then ask for access to your office.",
                fingerprint=fingerprint(key.public_key),
            ),
            "info",
        )
        return redirect(url_for("login"))

    # --- administration ---------------------------------------------------------

    def _officer_rows(db: Session) -> list[dict[str, Any]]:
        rows = []
        for row in officers.list_all(db):
            rows.append(
                {
                    "id": row.id,
                    "username": row.username,
                    "display_name": row.display_name,
                    "is_admin": row.is_admin,
                    "active": row.active,
                    "enrolled": row.password_hash is not None,
                    "offices": offices.granted_codes(db, row),
                }
            )
        return rows

    def _confirmed(db: Session) -> bool:
        """The acting administrator confirmed with a fresh code of their own (now used up).

        A stolen session alone cannot mint administrators, deactivate officers
        or open an office to someone: each needs the administrator's device too.
        """
        return officers.confirm_action(
            db, _officer(db), g.officer_key, request.form.get("code", "")
        )

    @app.route("/admin/officers", methods=["GET", "POST"], endpoint="officers")
    @administrators
    def officers_page() -> Any:
        """Officer accounts: invite, deactivate, grant office access."""
        new_code = new_username = error = None
        status_code = 200
        if request.method == "POST":
            is_admin = request.form.get("is_admin") == "yes"
            try:
                with instance().sessions.begin() as db:
                    if is_admin and not _confirmed(db):
                        raise DropboxError(str(CONFIRM_REFUSED))
                    created, new_code = officers.create_enrolment(
                        db,
                        request.form.get("username", "").strip().lower(),
                        request.form.get("display_name", ""),
                        is_admin,
                        cost,
                        g.officer.username,
                    )
                    new_username = created.username
            except DropboxError as exc:
                error, status_code = str(exc), 400
        with instance().sessions() as db:
            rows = _officer_rows(db)
        return render_template(
            "officers.html",
            officers=rows,
            new_code=new_code,
            new_username=new_username,
            grantable=[(c, config.office(c).name) for c in g.office_codes],
            errors=error,
        ), status_code

    @app.post(f"/admin/officers/<int(max={MAX_ROW_ID}):officer_id>/deactivate")
    @administrators
    def deactivate(officer_id: int) -> WerkzeugResponse:
        """Deactivate an officer: sessions end, grants go."""
        if officer_id == g.officer.id:
            flash(_("You cannot deactivate your own account."), "error")
            return redirect(url_for("officers"))
        with instance().sessions.begin() as db:
            target = db.get(Officer, officer_id)
            if target is None:
                abort(404)
            if not _confirmed(db):
                flash(str(CONFIRM_REFUSED), "error")
                return redirect(url_for("officers"))
            officers.deactivate(db, target, g.officer.username)
        flash(_("The officer was deactivated."), "info")
        return redirect(url_for("officers"))

    @app.post("/admin/grants")
    @administrators
    def grant() -> WerkzeugResponse:
        """Give an officer access to an office whose key the administrator holds."""
        code = request.form.get("office", "")
        target_id = form_row_id(request.form.get("officer_id", ""))
        read_out = request.form.get("fingerprint", "")
        if code not in g.office_codes or target_id is None:
            flash(_("Choose an officer and an office you have access to."), "error")
            return redirect(url_for("officers"))
        # A slip in typing it is told before the administrator's code is used up.
        if fingerprint_digest(read_out) is None:
            flash(offices.MALFORMED_FINGERPRINT, "error")
            return redirect(url_for("officers"))
        refused: offices.KeyMismatch | None = None
        with instance().sessions.begin() as db:
            me = _officer(db)
            target = db.get(Officer, target_id)
            if target is None:
                abort(404)
            try:
                if not _confirmed(db):
                    raise DropboxError(str(CONFIRM_REFUSED))
                office_key = offices.office_key(db, me, g.officer_key, code)
                offices.grant(
                    db, code, target, office_key, me.username, granted_by=me, read_out=read_out
                )
            except offices.KeyMismatch as mismatch:
                # Nothing was sealed; its "key.mismatch" event commits with the block.
                refused = mismatch
            except DropboxError as exc:
                db.rollback()
                flash(str(exc), "error")
                return redirect(url_for("officers"))
        if refused is not None:
            flash(str(refused), "error")
            return redirect(url_for("officers"))
        flash(_("Access was granted."), "info")
        return redirect(url_for("officers"))

    @app.get("/admin/audit")
    @administrators
    def audit_log() -> str:
        """The audit log, newest first, and whether its chain is intact."""
        per_page = 100
        try:
            page = max(1, int(request.args.get("page", "1")))
        except ValueError:
            page = 1
        with instance().sessions() as db:
            total = db.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
            pages = max(1, -(-total // per_page))
            page = min(page, pages)
            events = list(
                db.execute(
                    select(AuditEvent)
                    .order_by(AuditEvent.id.desc())
                    .limit(per_page)
                    .offset((page - 1) * per_page)
                ).scalars()
            )
            verification = audit.verify(db)
        return render_template(
            "audit.html", events=events, verification=verification, page=page, pages=pages
        )
