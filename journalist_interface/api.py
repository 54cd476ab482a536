"""The reviewer interface's JSON API under /api/v1: the services the pages use, with bearer tokens.

A token is issued for a passphrase and a TOTP code. Like the session cookie,
it holds a random id and a random key: the officer_sessions row holds only
BLAKE2b(id) and the state (the officer's id and secret key) encrypted under
the key, so a database dump yields no usable token. Tokens last 15 minutes
and end when the officer is deactivated. No cookie is read or set, so the
blueprint is exempt from CSRF. Revealing a source's identity is not offered
here: it stays in the pages, behind a recorded reason.

Every read, download, reply and status change is recorded in the audit log
by the casework functions themselves; this module adds only "api.token".
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, Response, current_app, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from nacl.public import PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto.errors import DecryptionError
from dropbox import access, audit, casework, inbox, officers, offices, sessions
from dropbox.config import Config
from dropbox.errors import AccessDenied, DropboxError, NotFound
from dropbox.models import Officer, Outcome, Report, Status, StatusChange
from journalist_interface.auth import instance, normalise_username, signin_guard

PREFIX = "/api/v1"
TOKEN_LIFETIME = timedelta(minutes=15)
# Marks the state of an API token, so that a browser session's cookie is not
# accepted as a bearer token (it would skip the idle timeout of the pages).
API_SCOPE = "api"
# The HTTP authentication scheme, and the OAuth 2 token type (RFC 6750): not a secret.
BEARER = "Bearer"
TRUE_VALUES = frozenset({"1", "true", "yes"})
FALSE_VALUES = frozenset({"", "0", "false", "no"})


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


def _unauthorised(message: str) -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": f'{BEARER} realm="dropbox"'})


def _time(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as RFC 3339."""
    return value.replace(tzinfo=UTC).isoformat() if value is not None else None


def _day(value: date | datetime) -> str:
    return (value.date() if isinstance(value, datetime) else value).isoformat()


# --- request parsing --------------------------------------------------------------


def _json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is expected."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser can follow: not a request we take
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "send a JSON object, with Content-Type: application/json")
    return data


def _text(data: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON can spell lone surrogates ("\ud800"); no text holds them
        raise ApiError(400, f"'{name}' must be text without lone surrogates") from None
    return value


def _flag(name: str) -> bool:
    value = request.args.get(name, "").strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ApiError(400, f"'{name}' must be true or false")


def _filters(config: Config) -> inbox.Filters:
    """The inbox filters from the query string; unknown values are refused, not ignored."""
    args = request.args
    status = args.get("status", "")
    if status and status not in set(Status):
        raise ApiError(400, f"unknown status {status!r}")
    category = args.get("category", "")
    if category and category not in {c.code for c in config.categories}:
        raise ApiError(400, f"unknown category {category!r}")
    sort = args.get("sort", "") or "received"
    if sort not in inbox.SORTS:
        raise ApiError(400, f"'sort' must be one of {', '.join(inbox.SORTS)}")
    raw_page = args.get("page", "") or "1"
    digits = raw_page.lstrip("0")  # isascii: isdigit alone also takes digits int() refuses ("²")
    if not (raw_page.isascii() and raw_page.isdigit()) or not digits:
        raise ApiError(400, "'page' must be a whole number from 1")
    return inbox.Filters(
        status=status,
        category=category,
        mine=_flag("mine"),
        overdue=_flag("overdue"),
        urgent=_flag("urgent"),
        sort=sort,
        page=int(digits) if len(digits) <= 9 else 10**9,  # beyond the last: the last is shown
    )


# --- who is calling -----------------------------------------------------------------


def _caller() -> tuple[int, PrivateKey]:
    """The officer id and secret key behind the bearer token, or a 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER.lower() or not token:
        raise _unauthorised("send a token in the header 'Authorization: Bearer <token>'")
    state = sessions.open_token(instance(), token)
    if state is None or state.get("scope") != API_SCOPE:
        raise _unauthorised("this token is unknown or expired; ask for a new one")
    officer_id, secret_key = state.get("officer_id"), state.get("secret_key")
    if not isinstance(officer_id, int) or not isinstance(secret_key, str):
        raise _unauthorised("this token is unknown or expired; ask for a new one")
    try:
        key = PrivateKey(base64.b64decode(secret_key, validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise _unauthorised("this token is unknown or expired; ask for a new one") from None
    return officer_id, key


def _officer(db: Session, officer_id: int) -> Officer:
    """The calling officer, loaded in this transaction; a deactivated one gets a 401."""
    officer = db.get(Officer, officer_id)
    if officer is None or not officer.active:
        raise _unauthorised("this token no longer works")
    return officer


def _handling(db: Session, officer: Officer, report: Report) -> None:
    """Only the office handling a report may act on it, as on the pages."""
    if not access.handles(db, officer, report):
        raise ApiError(403, "your office keeps a copy of this report to read; it cannot act on it")


# --- what is sent back --------------------------------------------------------------


def _row(row: inbox.Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "designation": row.designation,
        "office": row.office_code,
        "category": row.category,
        "status": row.status,
        "urgent": row.urgent,
        "received": _day(row.received_at),
        "last_activity": _time(row.last_activity_at),
        "acknowledge_due": _day(row.acknowledge_due),
        "feedback_due": _day(row.feedback_due),
        "acknowledged": row.acknowledged,
        "acknowledge_overdue": row.acknowledge_overdue,
        "feedback_overdue": row.feedback_overdue,
        "assignee": row.assignee,
        "unread": row.unread,
    }


def _entry(entry: casework.ThreadEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "seq": entry.seq,
        "kind": entry.kind,
        "from_source": entry.from_source,
        "created_at": _time(entry.created_at),
        "size": entry.size,
        "author": entry.author,
        "text": entry.text,
        "details": entry.details,
        "file_name": entry.file_name,
        "content_type": entry.content_type,
        "damaged": entry.damaged,
        "not_shared": entry.not_shared,
        "deleted_by_source": entry.deleted_by_source,
        "unread": entry.unread,
    }


def _report(
    db: Session, officer: Officer, report: Report, entries: list[casework.ThreadEntry]
) -> dict[str, Any]:
    assignee = db.get(Officer, report.assignee_id) if report.assignee_id else None
    changes = db.execute(
        select(StatusChange, Officer.display_name)
        .outerjoin(Officer, Officer.id == StatusChange.officer_id)
        .where(StatusChange.report_id == report.id)
        .order_by(StatusChange.id)
    ).all()
    handling = access.handles(db, officer, report)
    return {
        "id": report.id,
        "designation": report.designation,
        "office": report.office_code,
        "category": report.category,
        "status": report.status,
        "outcome": report.outcome,
        "urgent": report.urgent,
        "received": _day(report.received_at),
        "last_activity": _time(report.last_activity_at),
        "acknowledge_due": _day(report.acknowledge_due),
        "feedback_due": _day(report.feedback_due),
        "acknowledged": report.acknowledged_at is not None,
        "acknowledged_at": _time(report.acknowledged_at),
        "closed_at": _time(report.closed_at),
        "assignee": assignee.display_name if assignee else None,
        "handling": handling,
        "next_statuses": (
            sorted(casework.TRANSITIONS.get(report.status, frozenset())) if handling else []
        ),
        "status_changes": [
            {
                "from_status": change.from_status,
                "to_status": change.to_status,
                "outcome": change.outcome,
                "at": _time(change.at),
                "officer": name,
            }
            for change, name in changes
        ],
        "items": [_entry(e) for e in entries],
    }


# --- the routes ---------------------------------------------------------------------


def register_api(app: Flask, config: Config) -> None:
    """Attach the JSON API under /api/v1 (no cookies, so no CSRF)."""
    api = Blueprint("api", __name__, url_prefix=PREFIX)
    limiter: Limiter = app.extensions["dropbox.limiter"]
    cost = config.crypto.kdf_cost
    document = openapi_document(config)

    @api.errorhandler(ApiError)
    def _refused(exc: ApiError) -> ResponseReturnValue:
        return {"error": exc.message, **exc.extra}, exc.status, exc.headers

    @api.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> ResponseReturnValue:
        return {"error": str(exc)}, 404

    @api.errorhandler(AccessDenied)
    def _denied(exc: AccessDenied) -> ResponseReturnValue:
        return {"error": str(exc)}, 403

    @api.errorhandler(DropboxError)
    def _refused_by_service(exc: DropboxError) -> ResponseReturnValue:
        return {"error": str(exc)}, 400

    @api.get("/openapi.json")
    def openapi() -> ResponseReturnValue:
        """This API described in OpenAPI 3.0.3 (no token needed)."""
        return jsonify(document)

    def _signin_budget() -> str:
        """Each known device has its own budget of attempts; every other client shares one."""
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            data = None
        if not isinstance(data, dict):
            return "everyone"
        username, device = data.get("username"), data.get("device")
        if not isinstance(username, str) or not isinstance(device, str):
            return "everyone"
        return signin_guard().budget_key(normalise_username(username), device)

    @api.post("/token")
    @limiter.limit("60/minute", key_func=_signin_budget)
    def token() -> ResponseReturnValue:
        """A 15-minute bearer token for a username, passphrase and a fresh TOTP code.

        The same guard as the sign-in page: failures count against the
        username, alike whether it exists, unless the body brings the device
        token that an earlier success on this client returned ("device").
        """
        data = _json_body()
        username = normalise_username(_text(data, "username"))
        passphrase, code = _text(data, "passphrase"), _text(data, "code")
        device = _text(data, "device", required=False)
        guard = signin_guard()
        attempt = guard.attempt(username, device)
        officer_id, secret_key, device_token = None, None, ""
        locked_until = guard.enter(attempt)
        if locked_until is None:
            with current_app.extensions["dropbox.gate"].slot(), instance().sessions.begin() as db:
                result = officers.sign_in(db, username, passphrase, code, cost)
                if result.ok:
                    assert result.officer is not None and result.secret_key is not None  # noqa: S101
                    officer_id, secret_key = result.officer.id, result.secret_key
                    # Recorded with the sign-in it follows: never a token without its event.
                    audit.record(db, result.officer.username, "api.token")
            if officer_id is not None:
                device_token = guard.succeeded(attempt, username)
            else:
                locked_until = guard.locked_until(attempt)
        if officer_id is None or secret_key is None:
            if locked_until is not None:
                until = locked_until.replace(tzinfo=UTC)
                wait = max(1, math.ceil((until - datetime.now(UTC)).total_seconds()))
                raise ApiError(
                    429,
                    "too many failed attempts with this username; try again after retry_after",
                    {"Retry-After": str(wait)},
                    retry_after=until.isoformat(),
                )
            raise _unauthorised(
                "the username, passphrase or code is not right; a code works only once"
            )
        state = {
            "officer_id": officer_id,
            "secret_key": base64.b64encode(bytes(secret_key)).decode("ascii"),
            "scope": API_SCOPE,
        }
        issued = sessions.issue_token(instance(), officer_id, state, TOKEN_LIFETIME)
        return {
            "token": issued,
            "token_type": BEARER,
            "expires_in": int(TOKEN_LIFETIME.total_seconds()),
            "device": device_token,
        }

    @api.get("/reports")
    def reports() -> ResponseReturnValue:
        """The inbox: reports of the officer's offices, filtered, sorted and paged."""
        officer_id, _ = _caller()
        filters = _filters(config)
        today = datetime.now(UTC).date()
        with instance().sessions() as db:
            officer = _officer(db, officer_id)
            page = inbox.list_reports(db, officer, access.office_codes(db, officer), filters, today)
        return {
            "rows": [_row(r) for r in page.rows],
            "total": page.total,
            "page": page.page,
            "pages": page.pages,
            "page_size": inbox.PAGE_SIZE,
        }

    @api.get("/reports/<report_id>")
    def report(report_id: str) -> ResponseReturnValue:
        """A report and its whole thread, decrypted for this request (identity stays hidden)."""
        officer_id, officer_key = _caller()
        with instance().sessions.begin() as db:
            officer = _officer(db, officer_id)
            found = access.report_for(db, officer, report_id)
            office_key = access.office_key(db, officer, officer_key, found)
            entries = casework.thread(instance(), db, officer, office_key, found)
            return _report(db, officer, found, entries)

    @api.get("/reports/<report_id>/files/<item_id>")
    def download(report_id: str, item_id: str) -> ResponseReturnValue:
        """A file, decrypted as it streams; always a download, never shown inline."""
        officer_id, officer_key = _caller()
        with instance().sessions.begin() as db:
            officer = _officer(db, officer_id)
            found = access.report_for(db, officer, report_id)
            office_key = access.office_key(db, officer, officer_key, found)
            opened: casework.FileDownload | None
            try:
                opened = casework.open_file(instance(), db, officer, office_key, found, item_id)
            except DecryptionError:
                opened = None  # the "item.damaged" event commits with this transaction
        if opened is None:
            return {"error": "this file is damaged and cannot be decrypted"}, 422
        ascii_name = opened.name.encode("ascii", "replace").decode().replace('"', "")
        disposition = (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(opened.name)}"
        )

        def body() -> Iterator[bytes]:
            # A chunk that fails to authenticate raises: the response is cut off,
            # so the download fails instead of delivering altered content.
            yield from opened.chunks

        response = Response(stream_with_context(body()), mimetype="application/octet-stream")
        response.headers["Content-Disposition"] = disposition
        response.headers["Content-Length"] = str(opened.size)
        return response

    @api.post("/reports/<report_id>/replies")
    def reply(report_id: str) -> ResponseReturnValue:
        """Send a message to the source."""
        officer_id, officer_key = _caller()
        message = _text(_json_body(), "message")
        with instance().sessions.begin() as db:
            officer = _officer(db, officer_id)
            found = access.report_for(db, officer, report_id)
            _handling(db, officer, found)
            office_key = access.office_key(db, officer, officer_key, found)
            try:
                sent = casework.reply(instance(), db, officer, office_key, found, message)
            except offices.KeyMismatch as mismatch:
                # Answered inside the block: the "key.mismatch" event commits.
                return {"error": str(mismatch)}, 409
            item_id, checked = sent.item.id, sent.source_key_checked
        return {"id": item_id, "source_key_checked": checked}, 201

    @api.post("/reports/<report_id>/status")
    def status(report_id: str) -> ResponseReturnValue:
        """Move the report along its lifecycle; closing needs an outcome and a reason."""
        officer_id, officer_key = _caller()
        data = _json_body()
        to_status = _text(data, "status")
        outcome = _text(data, "outcome", required=False) or None
        reason = _text(data, "reason", required=False)
        with instance().sessions.begin() as db:
            officer = _officer(db, officer_id)
            found = access.report_for(db, officer, report_id)
            _handling(db, officer, found)
            office_key = access.office_key(db, officer, officer_key, found)
            try:
                casework.change_status(
                    instance(),
                    db,
                    officer,
                    found,
                    to_status,
                    outcome,
                    reason,
                    office_key=office_key,
                )
            except offices.KeyMismatch as mismatch:
                # Closing writes a note: a refused office key commits its event, as above.
                return {"error": str(mismatch)}, 409
            now_status, now_outcome = found.status, found.outcome
        return {"status": now_status, "outcome": now_outcome}

    app.extensions["dropbox.csrf"].exempt(api)
    app.register_blueprint(api)


# --- the OpenAPI document -----------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref(schema))}


def _common(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **more}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required is None else required
    return schema


def openapi_document(config: Config) -> dict[str, Any]:
    """The OpenAPI 3.0.3 description of every route of this API."""
    statuses = [s.value for s in Status]
    outcomes = [o.value for o in Outcome]
    categories = [c.code for c in config.categories]
    offices = [o.code for o in config.offices]
    string, boolean, integer = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
    day = {"type": "string", "format": "date"}
    time = {"type": "string", "format": "date-time"}
    an_id = {"type": "string", "pattern": "^[0-9a-f]{32}$"}  # as reports.new_id makes them
    report_id = {"$ref": "#/components/parameters/ReportId"}

    def flag(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "string", "enum": ["1", "0", "true", "false"]},
        }

    schemas: dict[str, Any] = {
        "Error": _object({"error": {**string, "description": "What went wrong, in plain words"}}),
        "LockedOut": _object(
            {
                "error": string,
                "retry_after": {
                    **time,
                    "description": "When this username may be tried again without a device token",
                },
            }
        ),
        "TokenRequest": _object(
            {
                "username": string,
                "passphrase": {**string, "format": "password"},
                "code": {**string, "description": "The current TOTP code (6 digits)"},
                "device": {
                    **string,
                    "description": "The device token an earlier token response gave this client:"
                    " failures from a flood against the username do not lock it out",
                },
            },
            required=["username", "passphrase", "code"],
        ),
        "Token": _object(
            {
                "token": {**string, "description": "Send as 'Authorization: Bearer <token>'"},
                "token_type": {**string, "enum": [BEARER]},
                "expires_in": {**integer, "description": "Seconds until the token expires"},
                "device": {
                    **string,
                    "description": "Keep it, and send it as 'device' with the next token request",
                },
            }
        ),
        "InboxRow": _object(
            {
                "id": an_id,
                "designation": {**string, "description": "A random label for the source"},
                "office": {**string, "enum": offices},
                "category": {**string, "enum": categories},
                "status": {**string, "enum": statuses},
                "urgent": boolean,
                "received": day,
                "last_activity": time,
                "acknowledge_due": day,
                "feedback_due": day,
                "acknowledged": boolean,
                "acknowledge_overdue": boolean,
                "feedback_overdue": boolean,
                "assignee": _nullable("string", description="The assigned officer's name"),
                "unread": {**integer, "description": "Items from the source not yet opened"},
            }
        ),
        "InboxPage": _object(
            {
                "rows": {"type": "array", "items": _ref("InboxRow")},
                "total": {**integer, "description": "Reports matching the filters"},
                "page": integer,
                "pages": integer,
                "page_size": integer,
            }
        ),
        "ThreadItem": _object(
            {
                "id": an_id,
                "seq": integer,
                "kind": {
                    **string,
                    "enum": [
                        "message",
                        "file",
                        "identity",
                        "acknowledgement",
                        "reply",
                        "note",
                        "reveal",
                    ],
                },
                "from_source": boolean,
                "created_at": time,
                "size": {**integer, "description": "Size of the content in bytes"},
                "author": _nullable("string", description="The officer who wrote it"),
                "text": _nullable(
                    "string",
                    description="Messages, replies, notes, reasons for revealing the identity",
                ),
                "details": _nullable(
                    "object",
                    additionalProperties={"type": "string"},
                    description="Labelled details sent with a message",
                ),
                "file_name": _nullable("string"),
                "content_type": _nullable("string"),
                "damaged": {**boolean, "description": "The item cannot be decrypted"},
                "not_shared": {
                    **boolean,
                    "description": "Added after your office referred the report keeping a copy:"
                    " sealed to the offices handling it since, not to yours (not damage)",
                },
                "deleted_by_source": boolean,
                "unread": boolean,
            }
        ),
        "StatusChange": _object(
            {
                "from_status": _nullable("string"),
                "to_status": string,
                "outcome": _nullable("string"),
                "at": time,
                "officer": _nullable("string"),
            }
        ),
        "Report": _object(
            {
                "id": an_id,
                "designation": string,
                "office": {**string, "enum": offices},
                "category": {**string, "enum": categories},
                "status": {**string, "enum": statuses},
                "outcome": _nullable("string", enum=[*outcomes, None]),
                "urgent": boolean,
                "received": day,
                "last_activity": time,
                "acknowledge_due": day,
                "feedback_due": day,
                "acknowledged": boolean,
                "acknowledged_at": _nullable("string", format="date-time"),
                "closed_at": _nullable("string", format="date-time"),
                "assignee": _nullable("string"),
                "handling": {
                    **boolean,
                    "description": "False when the officer's office only kept a copy",
                },
                "next_statuses": {"type": "array", "items": {**string, "enum": statuses}},
                "status_changes": {"type": "array", "items": _ref("StatusChange")},
                "items": {"type": "array", "items": _ref("ThreadItem")},
            }
        ),
        "ReplyRequest": _object({"message": {**string, "minLength": 1}}),
        "ReplyCreated": _object(
            {
                "id": {**an_id, "description": "The new item's id"},
                "source_key_checked": {
                    **boolean,
                    "description": (
                        "False if the report was made before its first item carried a sealed"
                        " copy of the source's key, so the key replies go to was not checked"
                    ),
                },
            }
        ),
        "StatusRequest": _object(
            {
                "status": {**string, "enum": statuses},
                "outcome": _nullable("string", enum=[*outcomes, None], description="To close"),
                "reason": _nullable("string", description="Needed to close"),
            },
            required=["status"],
        ),
        "StatusChanged": _object(
            {"status": {**string, "enum": statuses}, "outcome": _nullable("string")}
        ),
    }
    responses = {
        "BadRequest": _answer("The request is malformed or was refused", "Error"),
        "Unauthorized": {
            "description": "No token, or an unknown, expired or revoked one",
            "headers": {"WWW-Authenticate": {"schema": string}},
            "content": _json(_ref("Error")),
        },
        "Forbidden": _answer(
            "The officer may not do this: their office only kept a copy of the report, "
            "or their office grant cannot be opened",
            "Error",
        ),
        "NotFound": _answer("No such report (or the officer may not see it)", "Error"),
        "TooLarge": _answer("The request body is too large", "Error"),
        "TooMany": _answer("Too many requests; wait a minute", "Error"),
        "Busy": _answer("The server is busy; try again shortly", "Error"),
    }
    read_errors = {
        "401": _common("Unauthorized"),
        "403": _common("Forbidden"),
        "404": _common("NotFound"),
    }
    write_errors = {"400": _common("BadRequest"), **read_errors, "413": _common("TooLarge")}
    paths = {
        f"{PREFIX}/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        f"{PREFIX}/token": {
            "post": {
                "operationId": "createToken",
                "summary": "Exchange a passphrase and a TOTP code for a 15-minute token",
                "security": [],
                "requestBody": {"required": True, "content": _json(_ref("TokenRequest"))},
                "responses": {
                    "200": _answer("A new token", "Token"),
                    "400": _common("BadRequest"),
                    "401": _answer("Wrong username, passphrase or code (or a used code)", "Error"),
                    "413": _common("TooLarge"),
                    "429": {
                        "description": "Too many failed attempts with this username (a"
                        " minute's lock, except for its known devices), or too many requests",
                        "headers": {"Retry-After": {"schema": integer}},
                        "content": _json(
                            {"oneOf": [_ref("LockedOut"), _ref("Error")]},
                        ),
                    },
                    "503": _common("Busy"),
                },
            }
        },
        f"{PREFIX}/reports": {
            "get": {
                "operationId": "listReports",
                "summary": "The inbox: reports of the officer's offices",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {**string, "enum": statuses},
                    },
                    {
                        "name": "category",
                        "in": "query",
                        "required": False,
                        "schema": {**string, "enum": categories},
                    },
                    flag("mine", "Only reports assigned to the caller"),
                    flag("overdue", "Only reports past a due date"),
                    flag("urgent", "Only urgent reports"),
                    {
                        "name": "sort",
                        "in": "query",
                        "required": False,
                        "schema": {**string, "enum": list(inbox.SORTS), "default": "received"},
                    },
                    {
                        "name": "page",
                        "in": "query",
                        "required": False,
                        "schema": {**integer, "minimum": 1, "default": 1},
                    },
                ],
                "responses": {
                    "200": _answer("A page of the inbox", "InboxPage"),
                    "400": _common("BadRequest"),
                    "401": _common("Unauthorized"),
                },
            }
        },
        f"{PREFIX}/reports/{{report_id}}": {
            "parameters": [report_id],
            "get": {
                "operationId": "getReport",
                "summary": "A report and its thread, decrypted (recorded in the audit log)",
                "responses": {"200": _answer("The report", "Report"), **read_errors},
            },
        },
        f"{PREFIX}/reports/{{report_id}}/files/{{item_id}}": {
            "parameters": [
                report_id,
                {
                    "name": "item_id",
                    "in": "path",
                    "required": True,
                    "schema": an_id,
                    "description": "The id of a file item of the report",
                },
            ],
            "get": {
                "operationId": "downloadFile",
                "summary": "A file, decrypted as it streams (recorded in the audit log)",
                "responses": {
                    "200": {
                        "description": "The file's content",
                        "headers": {
                            "Content-Disposition": {"schema": string},
                            "Content-Length": {"schema": integer},
                        },
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    **read_errors,
                    "422": _answer("The file is damaged and cannot be decrypted", "Error"),
                },
            },
        },
        f"{PREFIX}/reports/{{report_id}}/replies": {
            "parameters": [report_id],
            "post": {
                "operationId": "replyToSource",
                "summary": "Send a message to the source",
                "requestBody": {"required": True, "content": _json(_ref("ReplyRequest"))},
                "responses": {
                    "201": _answer("The reply was sent", "ReplyCreated"),
                    **write_errors,
                    "409": _answer(
                        "Not sent: the source's key on the server does not match the copy in"
                        " the report's first item, or that copy cannot be read, or the"
                        " office's key does not match the key the officer holds or the"
                        " fingerprint pinned in the configuration (recorded in the audit log)",
                        "Error",
                    ),
                },
            },
        },
        f"{PREFIX}/reports/{{report_id}}/status": {
            "parameters": [report_id],
            "post": {
                "operationId": "changeStatus",
                "summary": "Change the report's status",
                "requestBody": {"required": True, "content": _json(_ref("StatusRequest"))},
                "responses": {
                    "200": _answer("The new status", "StatusChanged"),
                    **write_errors,
                    "409": _answer(
                        "Not closed: closing writes a note, and the office's key on the server"
                        " does not match the key the officer holds or the fingerprint pinned"
                        " in the configuration (recorded in the audit log)",
                        "Error",
                    ),
                },
            },
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Dropbox reviewer API",
            "version": "1.0.0",
            "description": (
                "For intake officers: the inbox, reports, files, replies and status changes "
                "of their offices' reports. Every decryption is recorded in the audit log."
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from POST /api/v1/token",
                }
            },
            "parameters": {
                "ReportId": {
                    "name": "report_id",
                    "in": "path",
                    "required": True,
                    "schema": an_id,
                    "description": "The report's id",
                }
            },
            "schemas": schemas,
            "responses": responses,
        },
    }
