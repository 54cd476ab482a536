"""The OpenAPI 3.0.3 document of the case server's API (/api/v2), served at /api/v2/openapi.json.

Every route of case_server/ is described here, in the shapes
journalist_interface/client.py sends and parses. Binary values are base64
strings (`format: byte`): key blocks, envelope bodies and heads, public keys,
wrapped and sealed keys. Nothing the server sends can be read without a key
the server does not hold.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from dropbox import inbox
from dropbox.config import Config
from dropbox.models import ItemKind, Outcome, Status

PREFIX = "/api/v2"

STRING: dict[str, Any] = {"type": "string"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
INTEGER: dict[str, Any] = {"type": "integer"}
BYTES: dict[str, Any] = {"type": "string", "format": "byte", "description": "Base64"}
DAY: dict[str, Any] = {"type": "string", "format": "date"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
AN_ID: dict[str, Any] = {"type": "string", "pattern": "^[0-9a-f]{32}$"}  # reports.new_id


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref(schema))}


def _common(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _nullable(schema: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {**schema, "nullable": True, **more}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required is None else required
    return schema


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": _json(_ref(schema))}


def _schemas(config: Config) -> dict[str, Any]:
    statuses = [s.value for s in Status]
    outcomes = [o.value for o in Outcome]
    categories = [c.code for c in config.categories]
    offices = [o.code for o in config.offices]
    kinds = [k.value for k in ItemKind]
    code = {**STRING, "description": "A current TOTP code (6 digits); each works only once"}
    ok = _object({"ok": {**BOOLEAN, "enum": [True]}})
    new_item = {
        "item_id": {**AN_ID, "description": "Chosen by the sealer; the envelope is bound to it"},
        "size": {**INTEGER, "minimum": 0, "description": "The sealed plaintext's size"},
        "key_block": BYTES,
        "body": {**BYTES, "description": "The whole envelope body, of body_size(size) bytes"},
    }
    return {
        "Error": _object(
            {"error": {**STRING, "description": "What went wrong, in plain words"}},
        ),
        "LockedOut": _object(
            {
                "error": STRING,
                "retry_after": {**INTEGER, "description": "Seconds until the username may retry"},
            }
        ),
        "Ok": ok,
        # --- signing in and enrolment
        "UsernameRequest": _object({"username": STRING}),
        "SignInParameters": _object(
            {
                "header": {
                    **BYTES,
                    "description": "The officer's wrap header (KDF cost and salt); a stable"
                    " fake one for a name that is not an enrolled officer's",
                }
            }
        ),
        "SignInRequest": _object(
            {
                "username": STRING,
                "auth_key": {**BYTES, "description": "Derived on the officer's machine"},
                "code": code,
                "device": {
                    **STRING,
                    "description": "The device token an earlier sign-in on this machine gave",
                },
            },
            required=["username", "auth_key", "code"],
        ),
        "SignIn": _object(
            {
                "token": {**STRING, "description": "Send as 'Authorization: Bearer <token>'"},
                "device": {**STRING, "description": "Keep it; send it with the next sign-in"},
                "me": _ref("Me"),
            }
        ),
        "EnrolCheckRequest": _object({"username": STRING, "code": STRING}),
        "EnrolRequest": _object(
            {
                "username": STRING,
                "enrolment_code": STRING,
                "auth_key": BYTES,
                "public_key": BYTES,
                "wrapped_secret_key": BYTES,
                "totp_secret": {**STRING, "description": "Base32"},
                "totp_code": code,
            }
        ),
        "Enrolled": _object(
            {"ok": {**BOOLEAN, "enum": [True]}, "officer_id": INTEGER, "username": STRING}
        ),
        "OfficeInfo": _object(
            {"code": {**STRING, "enum": offices}, "name": STRING, "public_key": BYTES}
        ),
        "Grant": _object(
            {
                "office": {**STRING, "enum": offices},
                "sealed_office_key": {**BYTES, "description": "Sealed to the officer's key"},
            }
        ),
        "Me": _object(
            {
                "id": INTEGER,
                "username": STRING,
                "display_name": STRING,
                "is_admin": BOOLEAN,
                "public_key": BYTES,
                "wrapped_secret_key": {**BYTES, "description": "Opaque to the server"},
                "grants": _array(_ref("Grant")),
                "offices": _array(_ref("OfficeInfo")),
                "categories": {
                    "type": "object",
                    "additionalProperties": STRING,
                    "description": "Category code -> label",
                },
                "statuses": _array({**STRING, "enum": statuses}),
                "outcomes": _array({**STRING, "enum": outcomes}),
            }
        ),
        "PassphraseRequest": _object(
            {
                "auth_key": BYTES,
                "code": code,
                "new_auth_key": BYTES,
                "new_wrapped_secret_key": BYTES,
            }
        ),
        "TotpRequest": _object({"auth_key": BYTES, "secret": STRING, "code": code}),
        # --- reports
        "Person": _object({"id": INTEGER, "display_name": STRING}),
        "InboxRow": _object(
            {
                "id": AN_ID,
                "designation": {**STRING, "description": "A random label for the source"},
                "office": {**STRING, "enum": offices},
                "category": {**STRING, "enum": categories},
                "status": {**STRING, "enum": statuses},
                "urgent": BOOLEAN,
                "received": DAY,
                "last_activity": _nullable(TIME),
                "acknowledge_due": DAY,
                "feedback_due": DAY,
                "acknowledged": BOOLEAN,
                "acknowledge_overdue": BOOLEAN,
                "feedback_overdue": BOOLEAN,
                "assignee": _nullable(STRING, description="The assigned officer's name"),
                "unread": {**INTEGER, "description": "Items from the source not yet opened"},
            }
        ),
        "InboxPage": _object(
            {
                "rows": _array(_ref("InboxRow")),
                "total": {**INTEGER, "description": "Reports matching the filters"},
                "page": INTEGER,
                "pages": INTEGER,
                "assignees": _array(_ref("Person")),
            }
        ),
        "StatusChange": _object(
            {
                "from_status": _nullable(STRING),
                "to_status": STRING,
                "outcome": _nullable(STRING),
                "at": _nullable(TIME),
                "officer": _nullable(STRING),
            }
        ),
        "SealedItem": _object(
            {
                "id": AN_ID,
                "seq": INTEGER,
                "kind": {**STRING, "enum": kinds},
                "author": _nullable(STRING, description="The officer who wrote it"),
                "created_at": _nullable(TIME),
                "size": INTEGER,
                "deleted_by_source": BOOLEAN,
                "unread": BOOLEAN,
                "key_block": BYTES,
                "body_length": {**INTEGER, "description": "The stored body's length in bytes"},
                "body": _nullable(
                    BYTES,
                    description="The whole body: messages, replies, notes, reasons,"
                    " acknowledgements; identity items only in the answer to a reveal",
                ),
                "head": _nullable(
                    BYTES,
                    description="Files and identity items: the body's first bytes (version,"
                    " stream header, sealed name and type)",
                ),
            }
        ),
        "ReportBundle": _object(
            {
                "id": AN_ID,
                "designation": STRING,
                "office": {**STRING, "enum": offices},
                "category": {**STRING, "enum": categories},
                "status": {**STRING, "enum": statuses},
                "outcome": _nullable(STRING, enum=[*outcomes, None]),
                "urgent": BOOLEAN,
                "received": DAY,
                "last_activity": _nullable(TIME),
                "acknowledge_due": DAY,
                "feedback_due": DAY,
                "acknowledged_at": _nullable(TIME),
                "closed_at": _nullable(TIME),
                "assignee_id": _nullable(INTEGER),
                "assignee": _nullable(STRING),
                "source_public_key": BYTES,
                "reading_office": {
                    **STRING,
                    "enum": offices,
                    "description": "The caller's office through which the report is read",
                },
                "handling": {
                    **BOOLEAN,
                    "description": "False when the caller's office only kept a copy",
                },
                "shared_up_to": _nullable(
                    INTEGER, description="For a kept copy: the last item number it was given"
                ),
                "shared_with": _array({**STRING, "enum": offices}),
                "next_statuses": _array({**STRING, "enum": statuses}),
                "status_changes": _array(_ref("StatusChange")),
                "assignees": _array(_ref("Person")),
                "items": _array(_ref("SealedItem")),
            }
        ),
        "NewItem": _object(new_item),
        "NewItemRequest": _object(
            {
                "kind": {**STRING, "enum": [ItemKind.REPLY.value, ItemKind.NOTE.value]},
                **new_item,
                "acknowledge": {
                    **BOOLEAN,
                    "default": False,
                    "description": "With a reply only: also acknowledge the report, if it is"
                    " not acknowledged yet (status acknowledged where the workflow allows)",
                },
            },
            required=["kind", *new_item],
        ),
        "ItemCreated": _object(
            {"id": AN_ID, "seq": INTEGER, "status": {**STRING, "enum": statuses}}
        ),
        "RevealRequest": _object({"reason": _ref("NewItem")}),
        "Revealed": _object({"items": _array(_ref("SealedItem"))}),
        "AssignRequest": _object(
            {"assignee_id": _nullable(INTEGER, description="null: nobody")},
        ),
        "Assigned": _object({"assignee_id": _nullable(INTEGER)}),
        "StatusRequest": _object(
            {
                "status": {**STRING, "enum": statuses},
                "outcome": _nullable(STRING, enum=[*outcomes, None], description="To close"),
            },
            required=["status"],
        ),
        "StatusChanged": _object(
            {"status": {**STRING, "enum": statuses}, "outcome": _nullable(STRING)}
        ),
        "ReferRequest": _object(
            {
                "office": {**STRING, "enum": offices},
                "keep_copy": BOOLEAN,
                "key_blocks": {
                    "type": "object",
                    "additionalProperties": BYTES,
                    "description": "Item id -> the item's key block re-sealed for the"
                    " referral; exactly the report's items",
                },
            },
            required=["office", "key_blocks"],
        ),
        "Referred": _object(
            {"office": {**STRING, "enum": offices}, "status": {**STRING, "enum": statuses}}
        ),
        "Deleted": _object({"deleted": AN_ID}),
        "EventRequest": _object(
            {
                "action": {**STRING, "enum": ["item.damaged", "key.mismatch"]},
                "detail": {
                    **STRING,
                    "maxLength": 200,
                    "description": "For item.damaged the item's id; never content",
                },
            },
            required=["action"],
        ),
        "Recorded": _object({"recorded": STRING}),
        # --- administration
        "OfficerSummary": _object(
            {
                "id": INTEGER,
                "username": STRING,
                "display_name": STRING,
                "is_admin": BOOLEAN,
                "active": BOOLEAN,
                "enrolled": BOOLEAN,
                "public_key": _nullable(BYTES),
                "offices": _array({**STRING, "enum": offices}),
            }
        ),
        "Officers": _object({"officers": _array(_ref("OfficerSummary"))}),
        "InviteRequest": _object(
            {"username": STRING, "display_name": STRING, "is_admin": BOOLEAN, "code": code},
            required=["username", "code"],
        ),
        "Invitation": _object(
            {
                "officer_id": INTEGER,
                "code": {**STRING, "description": "The one-time enrolment code, shown once"},
                "expires_at": _nullable(TIME),
            }
        ),
        "ConfirmRequest": _object({"code": code}),
        "GrantRequest": _object(
            {
                "office": {**STRING, "enum": offices},
                "sealed_office_key": {
                    **BYTES,
                    "description": "The office key sealed to the officer's public key",
                },
                "code": code,
            }
        ),
        "AuditEntry": _object(
            {
                "id": INTEGER,
                "at": _nullable(TIME),
                "actor": STRING,
                "action": STRING,
                "report_id": _nullable(STRING),
                "detail": STRING,
            }
        ),
        "AuditPage": _object(
            {"events": _array(_ref("AuditEntry")), "page": INTEGER, "pages": INTEGER}
        ),
        "AuditCheck": _object({"ok": BOOLEAN, "events": INTEGER, "problems": _array(STRING)}),
    }


def _responses() -> dict[str, Any]:
    return {
        "BadRequest": _answer("The request is malformed or was refused", "Error"),
        "Unauthorized": {
            "description": "No token, or an unknown, expired or ended one, or a deactivated"
            " officer's",
            "headers": {"WWW-Authenticate": {"schema": STRING}},
            "content": _json(_ref("Error")),
        },
        "Forbidden": _answer(
            "The officer may not do this (their office only kept a copy of the report,"
            " or they are not an administrator)",
            "Error",
        ),
        "NotFound": _answer("No such thing, or the officer may not see it", "Error"),
        "Conflict": _answer("The request does not fit the report as it is now", "Error"),
        "TooLarge": _answer("The request body is too large", "Error"),
        "TooMany": {
            "description": "Too many requests or failed attempts; wait",
            "headers": {"Retry-After": {"schema": INTEGER}},
            "content": _json({"oneOf": [_ref("LockedOut"), _ref("Error")]}),
        },
    }


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if public:
        operation["security"] = []
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = _body(body)
        responses = {"400": _common("BadRequest"), "413": _common("TooLarge"), **responses}
    if not public:
        responses = {"401": _common("Unauthorized"), **responses}
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def _paths(config: Config) -> dict[str, Any]:
    statuses = [s.value for s in Status]
    categories = [c.code for c in config.categories]
    flag = {"type": "string", "enum": ["1", "0", "true", "false", "yes", "no"]}
    report = {"$ref": "#/components/parameters/ReportId"}
    officer = {"$ref": "#/components/parameters/OfficerId"}
    seen = {"404": _common("NotFound")}
    acting = {"403": _common("Forbidden"), "404": _common("NotFound")}
    admin = {"403": _common("Forbidden")}
    admin_one = {"403": _common("Forbidden"), "404": _common("NotFound")}
    p = PREFIX
    return {
        f"{p}/openapi.json": {
            "get": _operation(
                "getOpenApi",
                "This document",
                {
                    "200": {
                        "description": "The OpenAPI document",
                        "content": _json({"type": "object"}),
                    }
                },
                public=True,
            )
        },
        # --- signing in
        f"{p}/signin/params": {
            "post": _operation(
                "signinParameters",
                "The wrap header to derive the auth and wrapping keys with",
                {"200": _answer("The header", "SignInParameters"), "429": _common("TooMany")},
                body="UsernameRequest",
                public=True,
            )
        },
        f"{p}/signin": {
            "post": _operation(
                "signIn",
                "Sign in with the auth key and a TOTP code; a bearer token",
                {
                    "200": _answer("Signed in", "SignIn"),
                    "401": _answer("Wrong username, key or code (or a used code)", "Error"),
                    "429": _common("TooMany"),
                },
                body="SignInRequest",
                public=True,
            )
        },
        f"{p}/signout": {
            "post": _operation("signOut", "End the token", {"204": {"description": "Ended"}})
        },
        f"{p}/enrol/check": {
            "post": _operation(
                "checkEnrolment",
                "Whether a one-time enrolment code works for a username now",
                {"200": _answer("It works", "Ok"), "429": _common("TooMany")},
                body="EnrolCheckRequest",
                public=True,
            )
        },
        f"{p}/enrol": {
            "post": _operation(
                "enrol",
                "Complete enrolment with credentials made on the officer's machine",
                {"200": _answer("Enrolled", "Enrolled"), "429": _common("TooMany")},
                body="EnrolRequest",
                public=True,
            )
        },
        f"{p}/me": {
            "get": _operation(
                "me",
                "The signed-in officer, their opaque keys and the labels pages show",
                {"200": _answer("The officer", "Me")},
            )
        },
        f"{p}/account/passphrase": {
            "post": _operation(
                "changePassphrase",
                "Replace the auth key's verifier and the wrapped key; other tokens end",
                {"200": _answer("Changed", "Ok")},
                body="PassphraseRequest",
            )
        },
        f"{p}/account/totp": {
            "post": _operation(
                "replaceTotp",
                "Replace the TOTP secret (the code must come from the new one)",
                {"200": _answer("Replaced", "Ok")},
                body="TotpRequest",
            )
        },
        # --- reports
        f"{p}/reports": {
            "get": _operation(
                "listReports",
                "The inbox: reports of the officer's offices (metadata only)",
                {"200": _answer("A page of the inbox", "InboxPage"), "400": _common("BadRequest")},
                parameters=[
                    _query("status", {**STRING, "enum": statuses}),
                    _query("category", {**STRING, "enum": categories}),
                    _query("mine", flag, "Only reports assigned to the caller"),
                    _query("overdue", flag, "Only reports past a due date"),
                    _query("urgent", flag, "Only urgent reports"),
                    _query("sort", {**STRING, "enum": list(inbox.SORTS), "default": "received"}),
                    _query("page", {**INTEGER, "minimum": 1, "default": 1}),
                ],
            )
        },
        f"{p}/reports/{{report_id}}": {
            "parameters": [report],
            "get": _operation(
                "getReport",
                "The report and its sealed thread (marks it read; recorded as report.read)",
                {"200": _answer("The report", "ReportBundle"), **seen},
            ),
        },
        f"{p}/reports/{{report_id}}/items/{{item_id}}/body": {
            "parameters": [
                report,
                {
                    "name": "item_id",
                    "in": "path",
                    "required": True,
                    "schema": AN_ID,
                    "description": "A file item of the report",
                },
            ],
            "get": _operation(
                "getItemBody",
                "A file's stored ciphertext, streamed (recorded as file.download)",
                {
                    "200": {
                        "description": "The envelope body",
                        "headers": {"Content-Length": {"schema": INTEGER}},
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    **seen,
                },
            ),
        },
        f"{p}/reports/{{report_id}}/items": {
            "parameters": [report],
            "post": _operation(
                "addItem",
                "Store a reply or a note sealed on the officer's machine",
                {
                    "201": _answer("Stored", "ItemCreated"),
                    "409": _common("Conflict"),
                    **acting,
                },
                body="NewItemRequest",
            ),
        },
        f"{p}/reports/{{report_id}}/reveal": {
            "parameters": [report],
            "post": _operation(
                "revealIdentity",
                "Store the sealed reason (a reveal item), record identity.reveal, and get"
                " the identity items' ciphertext",
                {
                    "200": _answer("The identity items", "Revealed"),
                    "409": _common("Conflict"),
                    **seen,
                },
                body="RevealRequest",
            ),
        },
        f"{p}/reports/{{report_id}}/assign": {
            "parameters": [report],
            "post": _operation(
                "assignReport",
                "Assign the report to an officer of the handling office, or to nobody",
                {"200": _answer("Assigned", "Assigned"), **acting},
                body="AssignRequest",
            ),
        },
        f"{p}/reports/{{report_id}}/status": {
            "parameters": [report],
            "post": _operation(
                "changeStatus",
                "Move the report along its lifecycle (closing needs an outcome)",
                {
                    "200": _answer("The new status", "StatusChanged"),
                    "409": _common("Conflict"),
                    **acting,
                },
                body="StatusRequest",
            ),
        },
        f"{p}/reports/{{report_id}}/refer": {
            "parameters": [report],
            "post": _operation(
                "referReport",
                "Hand the report to another office with re-sealed key blocks",
                {
                    "200": _answer("Referred", "Referred"),
                    "409": _answer(
                        "The key blocks do not cover exactly the report's items, or one is"
                        " malformed or not sealed as the referral needs",
                        "Error",
                    ),
                    **acting,
                },
                body="ReferRequest",
            ),
        },
        f"{p}/reports/{{report_id}}/delete": {
            "parameters": [report],
            "post": _operation(
                "deleteReport",
                "Crypto-shred the report",
                {"200": _answer("Deleted", "Deleted"), **acting},
            ),
        },
        f"{p}/reports/{{report_id}}/events": {
            "parameters": [report],
            "post": _operation(
                "recordEvent",
                "Record what the officer's machine found: item.damaged or key.mismatch",
                {"201": _answer("Recorded", "Recorded"), **seen},
                body="EventRequest",
            ),
        },
        f"{p}/events": {
            "post": _operation(
                "recordUnattachedEvent",
                "Record a key.mismatch the officer's machine found outside any report",
                {"201": _answer("Recorded", "Recorded")},
                body="EventRequest",
            ),
        },
        # --- administration
        f"{p}/officers": {
            "get": _operation(
                "listOfficers", "Every officer", {"200": _answer("Officers", "Officers"), **admin}
            ),
            "post": _operation(
                "inviteOfficer",
                "Create an officer who enrols with a one-time code",
                {"200": _answer("The invitation", "Invitation"), **admin},
                body="InviteRequest",
            ),
        },
        f"{p}/officers/{{officer_id}}/invite": {
            "parameters": [officer],
            "post": _operation(
                "reinviteOfficer",
                "A new enrolment code; the officer's credentials, grants and tokens go",
                {"200": _answer("The invitation", "Invitation"), **admin_one},
                body="ConfirmRequest",
            ),
        },
        f"{p}/officers/{{officer_id}}/deactivate": {
            "parameters": [officer],
            "post": _operation(
                "deactivateOfficer",
                "Deactivate an officer: tokens end, grants go",
                {"200": _answer("Deactivated", "Ok"), **admin_one},
                body="ConfirmRequest",
            ),
        },
        f"{p}/officers/{{officer_id}}/grants": {
            "parameters": [officer],
            "post": _operation(
                "grantOffice",
                "Store an office key sealed to the officer on the granting machine",
                {"200": _answer("Granted", "Ok"), **admin_one},
                body="GrantRequest",
            ),
        },
        f"{p}/audit": {
            "get": _operation(
                "auditLog",
                "A page of the audit log, newest first",
                {"200": _answer("Events", "AuditPage"), "400": _common("BadRequest"), **admin},
                parameters=[_query("page", {**INTEGER, "minimum": 1, "default": 1})],
            )
        },
        f"{p}/audit/verify": {
            "post": _operation(
                "verifyAudit",
                "Verify the audit chain on the server",
                {"200": _answer("The result", "AuditCheck"), **admin},
            )
        },
    }


def openapi_document(config: Config) -> dict[str, Any]:
    """The OpenAPI 3.0.3 description of every route of the case server."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Dropbox case server API",
            "version": "2.0.0",
            "description": (
                "For the reviewer app on each officer's machine: sign-in without the"
                " passphrase, the inbox, sealed threads and files, storing what the officer's"
                " machine sealed, referral with re-sealed key blocks, administration and the"
                " audit log. The server never decrypts; every reading is recorded."
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": _paths(config),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"A token from POST {PREFIX}/signin",
                }
            },
            "parameters": {
                "ReportId": {
                    "name": "report_id",
                    "in": "path",
                    "required": True,
                    "schema": AN_ID,
                    "description": "The report's id",
                },
                "OfficerId": {
                    "name": "officer_id",
                    "in": "path",
                    "required": True,
                    "schema": {**INTEGER, "minimum": 0, "maximum": 2**31 - 1},
                    "description": "The officer's id",
                },
            },
            "schemas": _schemas(config),
            "responses": _responses(),
        },
    }


def register_openapi(app: Flask, config: Config) -> None:
    """Serve the document at GET /api/v2/openapi.json (no token needed)."""
    document = openapi_document(config)

    @app.get(f"{PREFIX}/openapi.json")
    def openapi_json() -> dict[str, Any]:
        return document
