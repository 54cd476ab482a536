"""The OpenAPI 3.0.3 document of the case server's API (/api/v2), built from the code itself.

No field is written here. Each request and answer body is a definition in
dropbox/api_schema.py, which the routes read and write with, and its schema
is generated from the definition's type hints. The paths and methods come
from the app's URL map, each summary from its view's docstring. What the URL
map cannot tell (which definitions a route reads and answers with, and how
it may refuse) is in `OPERATIONS`, one entry a route; building the document
fails if a route has no entry or an entry has no route.

Binary values are base64 strings (`format: byte`): key blocks, envelope
bodies and heads, public keys, wrapped and sealed keys. Nothing the server
sends can be read without a key the server does not hold.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any

from flask import Flask

from case_server import wire
from case_server.admin import MAX_ROW_ID
from dropbox import api_schema as schema
from dropbox import cases, inbox, statistics
from dropbox.api_schema import Doc, Known
from dropbox.config import Config
from dropbox.models import ItemKind, Outcome, Status

PREFIX = "/api/v2"
VARIABLE = re.compile(r"<(?:[^:<>]+:)?([a-z_]+)>")  # <report_id>, <int(max=9):officer_id>

# The schemas of the types a definition may use, beside definitions, lists and maps.
SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    bytes: {"type": "string", "format": "byte", "description": "Base64"},
    date: {"type": "string", "format": "date"},
    datetime: {"type": "string", "format": "date-time"},
}
JSON_TYPES = {str: "string", bool: "boolean", int: "integer"}

# Path variables, by name: what the URL map's converters do not say.
PATH_VARIABLES: dict[str, tuple[Any, str]] = {
    "report_id": (schema.AnId, "The report's id"),
    "item_id": (schema.AnId, "A file item of the report"),
    "officer_id": (Annotated[int, Doc(minimum=0, maximum=MAX_ROW_ID)], "The officer's id"),
}


@dataclass(frozen=True)
class Refusal:
    """A refusal many routes share, under components/responses."""

    name: str
    description: str
    body: Any = schema.Error
    headers: tuple[str, ...] = ()


REFUSALS: dict[int, Refusal] = {
    400: Refusal("BadRequest", "The request is malformed or was refused"),
    401: Refusal(
        "Unauthorized",
        "No token, or an unknown, expired or ended one, or a deactivated officer's",
        headers=("WWW-Authenticate",),
    ),
    403: Refusal(
        "Forbidden",
        "The officer may not do this (their office only kept a copy of the report,"
        " or they are not an administrator)",
    ),
    404: Refusal("NotFound", "No such thing, or the officer may not see it"),
    409: Refusal("Conflict", "The request does not fit the report as it is now"),
    413: Refusal("TooLarge", "The request body is too large"),
    422: Refusal("Damaged", "The file is damaged: its content is missing", body=schema.Damaged),
    429: Refusal(
        "TooMany",
        "Too many requests or failed attempts; wait",
        body=schema.LockedOut | schema.Error,
        headers=("Retry-After",),
    ),
}
HEADERS: dict[str, dict[str, Any]] = {
    "WWW-Authenticate": {"type": "string"},
    "Retry-After": {"type": "integer"},
    "Content-Length": {"type": "integer"},
}


@dataclass(frozen=True)
class Operation:
    """What the URL map cannot tell about a route: its bodies and how it may refuse.

    `answer` is the definition of the success body (None: no body), or a
    ready OpenAPI response for a body that is not a definition. A route with
    a `body` may also refuse with 400 and 413; one that is not `public`, with
    401. `refusals` are the other shared refusals; `explained`, refusals
    with an `Error` body and a description of their own.
    """

    answer: type | dict[str, Any] | None
    status: int = 200
    body: type | None = None
    query: type | None = None
    public: bool = False
    refusals: tuple[int, ...] = ()
    explained: Mapping[int, str] = field(default_factory=dict)


DOCUMENT = {
    "description": "The OpenAPI document",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
FILE_BODY = {
    "description": "The envelope body",
    "headers": {"Content-Length": {"schema": HEADERS["Content-Length"]}},
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}

# Flask endpoint name -> what the route reads, answers and refuses.
OPERATIONS: dict[str, Operation] = {
    "openapi_json": Operation(DOCUMENT, public=True),
    # --- signing in (case_server/signin.py)
    "signin.signin_params": Operation(
        schema.SignInParameters,
        body=schema.SignInParametersRequest,
        public=True,
        refusals=(429,),
    ),
    "signin.signin": Operation(
        schema.SignIn,
        body=schema.SignInRequest,
        public=True,
        refusals=(429,),
        explained={401: "Wrong username, key or code (or a used code)"},
    ),
    "signin.signout": Operation(None, status=204),
    "signin.enrol_check": Operation(
        schema.Ok, body=schema.EnrolCheckRequest, public=True, refusals=(429,)
    ),
    "signin.enrol": Operation(
        schema.Enrolled, body=schema.EnrolRequest, public=True, refusals=(429,)
    ),
    "signin.me": Operation(schema.Me),
    "signin.change_passphrase": Operation(schema.Ok, body=schema.PassphraseRequest),
    "signin.replace_key": Operation(
        schema.Ok,
        body=schema.KeyReplacementRequest,
        explained={409: "The grants sent are not for exactly the offices the officer holds"},
    ),
    "signin.replace_totp": Operation(schema.Ok, body=schema.TotpRequest),
    "signin.notification_settings": Operation(schema.NotificationSettings),
    "signin.choose_notifications": Operation(
        schema.NotificationSettings, body=schema.NotificationSettingsRequest
    ),
    # --- reports (case_server/reports.py)
    "reports.list_reports": Operation(schema.InboxPage, query=schema.InboxQuery, refusals=(400,)),
    "reports.get_report": Operation(schema.ReportBundle, refusals=(404,)),
    "reports.item_body": Operation(FILE_BODY, refusals=(404, 422)),
    "reports.add_item": Operation(
        schema.ItemCreated, status=201, body=schema.NewItemRequest, refusals=(403, 404, 409)
    ),
    "reports.reveal": Operation(schema.Revealed, body=schema.RevealRequest, refusals=(404, 409)),
    "reports.assign": Operation(schema.Assigned, body=schema.AssignRequest, refusals=(403, 404)),
    "reports.change_status": Operation(
        schema.StatusChanged, body=schema.StatusRequest, refusals=(403, 404, 409)
    ),
    "reports.refer": Operation(
        schema.Referred,
        body=schema.ReferRequest,
        refusals=(403, 404),
        explained={
            409: "The key blocks do not cover exactly the report's items, or one is malformed"
            " or not sealed as the referral needs"
        },
    ),
    "reports.delete": Operation(schema.Deleted, refusals=(403, 404)),
    "reports.record": Operation(
        schema.Recorded, status=201, body=schema.EventRequest, refusals=(403, 404)
    ),
    "reports.report_events": Operation(schema.ReportEvents, refusals=(403, 404)),
    "reports.record_unattached": Operation(schema.Recorded, status=201, body=schema.EventRequest),
    # --- administration (case_server/admin.py)
    "admin.list_officers": Operation(schema.Officers, refusals=(403,)),
    "admin.invite": Operation(schema.Invitation, body=schema.InviteRequest, refusals=(403,)),
    "admin.reinvite": Operation(schema.Invitation, body=schema.ConfirmRequest, refusals=(403, 404)),
    "admin.deactivate": Operation(schema.Ok, body=schema.ConfirmRequest, refusals=(403, 404)),
    "admin.grant": Operation(schema.Ok, body=schema.GrantRequest, refusals=(403, 404)),
    "admin.notification_failures": Operation(schema.NotificationFailures, refusals=(403,)),
    "admin.audit_log": Operation(schema.AuditPage, query=schema.AuditQuery, refusals=(400, 403)),
    "admin.audit_verify": Operation(schema.AuditCheck, refusals=(403,)),
    # --- statistics (case_server/statistics.py)
    "statistics.statistics_for": Operation(
        schema.Statistics, query=schema.StatisticsQuery, refusals=(400, 403)
    ),
}


def known_rules(config: Config) -> dict[str, dict[str, Any]]:
    """The keywords of each rule a definition names with `Known`, for this configuration."""
    return {
        "offices": {"enum": [o.code for o in config.offices]},
        "categories": {"enum": [c.code for c in config.categories]},
        "statuses": {"enum": [s.value for s in Status]},
        "outcomes": {"enum": [o.value for o in Outcome]},
        "item kinds": {"enum": [k.value for k in ItemKind]},
        "officer kinds": {"enum": sorted(k.value for k in cases.OFFICER_KINDS)},
        "event actions": {"enum": sorted(cases.EVENT_ACTIONS)},
        "event detail": {"maxLength": cases.MAX_EVENT_DETAIL},
        "sorts": {"enum": list(inbox.SORTS)},
        "statistics_offices": {"enum": [*(o.code for o in config.offices), statistics.ALL]},
    }


def _first_paragraph(text: str | None) -> tuple[str, str]:
    """A docstring's first paragraph (one line), and the rest."""
    cleaned = inspect.cleandoc(text or "")
    first, _, rest = cleaned.partition("\n\n")
    return " ".join(first.split()), rest.strip()


def _camel(name: str) -> str:
    head, *tail = name.split("_")
    return head + "".join(word.capitalize() for word in tail)


class Schemas:
    """OpenAPI schemas made from type hints; each definition once, under components/schemas."""

    def __init__(self, known: Mapping[str, Mapping[str, Any]]) -> None:
        self.known = known
        self.components: dict[str, dict[str, Any]] = {}
        self._defined: dict[str, type] = {}

    def of(self, hint: Any) -> dict[str, Any]:
        """The schema of a field's type hint."""
        bare, metadata = schema.unwrap(hint)
        return self._annotate(self._bare(bare), metadata)

    def _annotate(self, made: dict[str, Any], metadata: list[Any]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for note in metadata:
            if isinstance(note, Doc):
                extra.update(note.keywords)
            elif isinstance(note, Known):
                extra.update(self.known[note.name])
        if extra and "$ref" in made:  # OpenAPI 3.0 ignores what sits beside a $ref
            made = {"allOf": [made]}
        made.update(extra)
        if made.get("nullable") and "enum" in made and None not in made["enum"]:
            made["enum"] = [*made["enum"], None]
        return made

    def _bare(self, hint: Any) -> dict[str, Any]:
        inner = schema.optional(hint)
        if inner is not None:
            made = self.of(inner)
            made = {"allOf": [made]} if "$ref" in made else made
            return {**made, "nullable": True}
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            return {"oneOf": [self.of(choice) for choice in typing.get_args(hint)]}
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            return self.define(hint)
        if origin is list:
            (item,) = typing.get_args(hint)
            return {"type": "array", "items": self.of(item)}
        if origin is dict:
            key, item = typing.get_args(hint)
            if key is not str:
                raise TypeError(f"JSON object keys are strings, not {key!r}")
            return {"type": "object", "additionalProperties": self.of(item)}
        if origin is typing.Literal:
            values = list(typing.get_args(hint))
            return {"type": JSON_TYPES[type(values[0])], "enum": values}
        if hint in SIMPLE:
            return dict(SIMPLE[hint])
        raise TypeError(f"no OpenAPI schema for {hint!r}")

    def define(self, definition: type) -> dict[str, str]:
        """A definition's schema, added to the components once; a $ref to it."""
        name = definition.__name__
        known = self._defined.setdefault(name, definition)
        if known is not definition:
            raise TypeError(f"two definitions are called {name}: {known!r} and {definition!r}")
        ref = {"$ref": f"#/components/schemas/{name}"}
        if name in self.components:
            return ref
        component: dict[str, Any] = {"type": "object"}
        self.components[name] = component  # before the fields: a definition may hold itself
        summary, _ = _first_paragraph(definition.__doc__)
        if summary:
            component["description"] = summary
        properties: dict[str, Any] = {}
        required: list[str] = []
        for spec in dataclasses.fields(definition):
            made = self.of(schema.hints(definition)[spec.name])
            if spec.default is dataclasses.MISSING:
                required.append(spec.name)
            elif spec.default not in ("", None) and "$ref" not in made:
                made["default"] = spec.default
            properties[spec.name] = made
        component["properties"] = properties
        if required:
            component["required"] = required
        # The answers carry exactly these fields, and the requests need no others.
        component["additionalProperties"] = False
        return ref

    def query(self, definition: type) -> list[dict[str, Any]]:
        """A definition's fields as query parameters (every one may be left out)."""
        parameters = []
        for spec in dataclasses.fields(definition):
            hint = schema.hints(definition)[spec.name]
            bare, metadata = schema.unwrap(hint)
            if bare is bool:  # as wire.flag reads it
                flags = sorted((wire.TRUE_VALUES | wire.FALSE_VALUES) - {""})
                made = self._annotate({"type": "string", "enum": flags}, metadata)
            else:
                made = self.of(hint)
                if spec.default not in ("", None, dataclasses.MISSING):
                    made["default"] = spec.default
            parameter: dict[str, Any] = {"name": spec.name, "in": "query", "required": False}
            if "description" in made:
                parameter["description"] = made.pop("description")
            parameter["schema"] = made
            parameters.append(parameter)
        return parameters

    def content(self, hint: Any) -> dict[str, Any]:
        """A JSON body of this definition (or of one of several)."""
        return {"application/json": {"schema": self.of(hint)}}


def _response(schemas: Schemas, answer: type | dict[str, Any] | None) -> dict[str, Any]:
    if answer is None:
        return {"description": "Done; no body"}
    if isinstance(answer, dict):
        return answer
    summary, _ = _first_paragraph(answer.__doc__)
    return {"description": summary, "content": schemas.content(answer)}


def _refusal(schemas: Schemas, refusal: Refusal) -> dict[str, Any]:
    made: dict[str, Any] = {"description": refusal.description}
    if refusal.headers:
        made["headers"] = {h: {"schema": HEADERS[h]} for h in refusal.headers}
    made["content"] = schemas.content(refusal.body)
    return made


def _operation(
    schemas: Schemas, view: Callable[..., Any], spec: Operation, used: set[int]
) -> dict[str, Any]:
    summary, description = _first_paragraph(view.__doc__)
    if not summary:
        raise LookupError(f"the view {view.__name__} needs a docstring: it is its summary")
    made: dict[str, Any] = {"operationId": _camel(view.__name__), "summary": summary}
    if description:
        made["description"] = " ".join(description.split())
    if spec.public:
        made["security"] = []
    if spec.query is not None:
        made["parameters"] = schemas.query(spec.query)
    codes = set(spec.refusals)
    if spec.body is not None:
        made["requestBody"] = {"required": True, "content": schemas.content(spec.body)}
        codes |= {400, 413}
    if not spec.public:
        codes.add(401)
    responses: dict[str, Any] = {str(spec.status): _response(schemas, spec.answer)}
    for code in codes - set(spec.explained):
        used.add(code)
        responses[str(code)] = {"$ref": f"#/components/responses/{REFUSALS[code].name}"}
    for code, text in spec.explained.items():
        responses[str(code)] = {"description": text, "content": schemas.content(schema.Error)}
    made["responses"] = dict(sorted(responses.items()))
    return made


def _path_parameters(schemas: Schemas, rule: str) -> list[dict[str, Any]]:
    parameters = []
    for name in VARIABLE.findall(rule):
        if name not in PATH_VARIABLES:
            raise LookupError(f"the path variable {name!r} of {rule} is not in PATH_VARIABLES")
        hint, description = PATH_VARIABLES[name]
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": schemas.of(hint),
                "description": description,
            }
        )
    return parameters


def build_document(
    app: Flask, operations: Mapping[str, Operation], known: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of every route of `app` under /api/v2."""
    schemas = Schemas(known)
    paths: dict[str, dict[str, Any]] = {}
    used: set[int] = set()
    described: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(f"{PREFIX}/"):
            continue
        if rule.endpoint not in operations:
            raise LookupError(f"{rule.rule} ({rule.endpoint}) has no entry in OPERATIONS")
        described.add(rule.endpoint)
        path = paths.setdefault(VARIABLE.sub(r"{\1}", rule.rule), {})
        parameters = _path_parameters(schemas, rule.rule)
        if parameters:
            path["parameters"] = parameters
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            path[method.lower()] = _operation(schemas, view, operations[rule.endpoint], used)
    stale = set(operations) - described
    if stale:
        raise LookupError(f"OPERATIONS describes routes the app does not have: {sorted(stale)}")
    responses = {REFUSALS[c].name: _refusal(schemas, REFUSALS[c]) for c in sorted(used)}
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
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"A token from POST {PREFIX}/signin",
                }
            },
            "schemas": schemas.components,
            "responses": responses,
        },
    }


def register_openapi(app: Flask, config: Config) -> None:
    """Serve the document at GET /api/v2/openapi.json (no token needed); register it last."""
    document: dict[str, Any] = {}

    @app.get(f"{PREFIX}/openapi.json")
    def openapi_json() -> dict[str, Any]:
        """This document."""
        return document

    document.update(build_document(app, OPERATIONS, known_rules(config)))
