"""Officer administration and the audit log, under /api/v2: administrators only.

Every change (invite, re-invite, deactivate, grant) needs a fresh TOTP
`code` of the acting administrator, burned as at sign-in: a stolen token
alone cannot mint administrators, lock officers out or open an office to
someone. A grant stores an office key sealed on the granting officer's
machine, to the new officer's key as checked there against the fingerprint
the officer read out; the server cannot open it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from case_server import tokens
from case_server.errors import ApiError
from case_server.wire import read
from crypto.keys import is_sealed_secret_key
from dropbox import api_schema as schema
from dropbox import audit, cases, notify, officers, offices
from dropbox.api_schema import dump
from dropbox.config import Config
from dropbox.models import AuditEvent, Officer

PREFIX = "/api/v2"
AUDIT_PER_PAGE = 100
# Row ids in URLs: beyond this no row exists (and no database integer overflows).
MAX_ROW_ID = 2**31 - 1
CONFIRM_REFUSED = (
    "confirm with a fresh code from your authenticator app; a code works only once,"
    " so wait for the next one if you just used it"
)


def _administrator(db: Session) -> Officer:
    """The calling officer if an active administrator; 401 without a token, 403 otherwise."""
    officer = tokens.current_officer(db)
    if not officer.is_admin:
        raise ApiError(403, "only administrators may do this")
    return officer


def _confirm(db: Session, officer: Officer, code: str) -> None:
    """Burn the administrator's fresh TOTP code, or refuse with 400."""
    if not code.strip():
        raise ApiError(400, CONFIRM_REFUSED)
    if not officers.confirm_action(db, officer, code):
        raise ApiError(400, CONFIRM_REFUSED)


def _target(db: Session, officer_id: int) -> Officer:
    found = db.get(Officer, officer_id) if officer_id <= MAX_ROW_ID else None
    if found is None:
        raise ApiError(404, "there is no such officer")
    return found


def officer_summary(db: Session, officer: Officer) -> schema.OfficerSummary:
    """An officer as an administrator sees them."""
    return schema.OfficerSummary(
        id=officer.id,
        username=officer.username,
        display_name=officer.display_name,
        is_admin=officer.is_admin,
        active=officer.active,
        enrolled=officers.enrolled(officer),
        public_key=officer.public_key,
        offices=offices.granted_codes(db, officer),
    )


def invitation(officer: Officer, code: str) -> dict[str, Any]:
    """A one-time enrolment code for the officer, and until when it works."""
    return dump(
        schema.Invitation(officer_id=officer.id, code=code, expires_at=officer.enrolment_expires_at)
    )


def register_admin(app: Flask, config: Config) -> None:
    """Attach the administration routes under /api/v2."""
    bp = Blueprint("admin", __name__, url_prefix=PREFIX)

    @bp.get("/officers")
    def list_officers() -> dict[str, Any]:
        """Every officer: role, state, enrolment, public key and offices."""
        with tokens.instance().readers() as db:
            _administrator(db)
            summaries = [officer_summary(db, o) for o in officers.list_all(db)]
            return dump(schema.Officers(officers=summaries))

    @bp.post("/officers")
    def invite() -> dict[str, Any]:
        """Create an officer who enrols with a one-time code (shown to the administrator once)."""
        sent = read(schema.InviteRequest)
        username = officers.normalise_username(sent.username)
        display_name = sent.display_name
        with tokens.instance().sessions.begin() as db:
            me = _administrator(db)
            # A slip in the form is told before the administrator's code is used up.
            officers.check_username(username)
            officers.check_display_name(display_name)
            if db.execute(select(Officer.id).where(Officer.username == username)).first():
                raise ApiError(400, f"an officer called {username!r} already exists")
            _confirm(db, me, sent.code)
            created, code = officers.create_enrolment(
                db, username, display_name, sent.is_admin, me.username
            )
            return invitation(created, code)

    @bp.post(f"/officers/<int(max={MAX_ROW_ID}):officer_id>/invite")
    def reinvite(officer_id: int) -> dict[str, Any]:
        """A new enrolment code; the officer's old credentials, grants and tokens go."""
        sent = read(schema.ConfirmRequest)
        with tokens.instance().sessions.begin() as db:
            me = _administrator(db)
            target = _target(db, officer_id)
            if target.id == me.id:
                raise ApiError(400, "you cannot re-invite yourself; ask another administrator")
            if not target.active:
                raise ApiError(400, f"{target.username} is deactivated")
            _confirm(db, me, sent.code)
            code = officers.reinvite(db, target, me.username)
            return invitation(target, code)

    @bp.post(f"/officers/<int(max={MAX_ROW_ID}):officer_id>/deactivate")
    def deactivate(officer_id: int) -> dict[str, Any]:
        """Deactivate an officer: their tokens end, their grants go."""
        sent = read(schema.ConfirmRequest)
        with tokens.instance().sessions.begin() as db:
            me = _administrator(db)
            target = _target(db, officer_id)
            if target.id == me.id:
                raise ApiError(400, "you cannot deactivate your own account")
            _confirm(db, me, sent.code)
            officers.deactivate(db, target, me.username)
        return dump(schema.Ok(ok=True))

    @bp.post(f"/officers/<int(max={MAX_ROW_ID}):officer_id>/grants")
    def grant(officer_id: int) -> dict[str, Any]:
        """Store an office key sealed to the officer on the granting officer's machine."""
        sent = read(schema.GrantRequest)
        code = sent.office
        sealed = sent.sealed_office_key
        if not is_sealed_secret_key(sealed):
            raise ApiError(400, "'sealed_office_key' must be an office key sealed to the officer")
        if code not in {o.code for o in config.offices}:
            raise ApiError(400, f"there is no office {code!r}")
        with tokens.instance().sessions.begin() as db:
            me = _administrator(db)
            target = _target(db, officer_id)
            if not (target.active and officers.enrolled(target)):
                raise ApiError(
                    400, f"{target.username} has not finished enrolment or is deactivated"
                )
            offices.get(db, code)
            _confirm(db, me, sent.code)
            offices.store_grant(db, code, target, sealed, me.username, granted_by=me)
        return dump(schema.Ok(ok=True))

    @bp.get("/notifications/failures")
    def notification_failures() -> dict[str, Any]:
        """Notification mails that failed: being retried, or given up (each is audited too)."""
        with tokens.instance().readers() as db:
            _administrator(db)
            rows = [
                schema.NotificationFailure(
                    officer=f.officer,
                    display_name=f.display_name,
                    what=f.what,
                    attempts=f.attempts,
                    last_error=f.last_error,
                    next_attempt_at=f.next_attempt_at,
                    gave_up_on=f.gave_up_on,
                )
                for f in notify.failures(db)
            ]
        return dump(schema.NotificationFailures(failures=rows, mail_enabled=config.mail.enabled))

    @bp.get("/audit")
    def audit_log() -> dict[str, Any]:
        """A page of the audit log, newest first."""
        try:
            page = max(1, int(request.args.get("page", "1")))
        except ValueError:
            raise ApiError(400, "'page' must be a whole number") from None
        with tokens.instance().readers() as db:
            _administrator(db)
            total = db.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
            pages = max(1, -(-total // AUDIT_PER_PAGE))
            page = min(page, pages)
            events = db.execute(
                select(AuditEvent)
                .order_by(AuditEvent.id.desc())
                .limit(AUDIT_PER_PAGE)
                .offset((page - 1) * AUDIT_PER_PAGE)
            ).scalars()
            entries = [cases.wire_event(e) for e in events]
            return dump(schema.AuditPage(events=entries, page=page, pages=pages))

    @bp.post("/audit/verify")
    def audit_verify() -> dict[str, Any]:
        """Walk the audit chain on the server: whether it is intact, and what is wrong if not."""
        with tokens.instance().sessions.begin() as db:
            _administrator(db)
            result = audit.verify(db)
        problems = [] if result.ok else [f"event {result.first_broken}: {result.problem}"]
        return dump(schema.AuditCheck(ok=result.ok, events=result.events, problems=problems))

    app.register_blueprint(bp)
