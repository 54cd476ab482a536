"""Every JSON body of the case server's API (/api/v2), each written once as a typed definition.

Both ends use these definitions. The case server (case_server/) reads a
request with `load` (through `case_server.wire.read`) and writes an answer
with `dump`; case_server/openapi.py builds the OpenAPI document from the
same type hints. The reviewer app's client (journalist_interface/client.py)
writes its requests with `dump` and reads every answer with `load`. `Error`,
`LockedOut` and `Damaged` describe the refusals case_server/errors.py writes.

A value travels as its type says: bytes as standard base64, a datetime as
RFC 3339 (a naive one is UTC, as the database stores it), a date as an ISO
date. A field with a default may be left out of a request; every field of
an answer is always sent.

`Annotated` adds what a type cannot say: `Doc` a description and other
OpenAPI keywords, `Known` a rule only the running server knows (the
configured offices, the statuses of the lifecycle). `load` checks the JSON
types (and the value of a `Literal`) only; the rules named by `Known` are
the domain's to check, with its own messages. A field that holds a secret
(a token, the wrapped key, an enrolment code) is left out of the repr, so
that a value printed or logged does not show it.

The module lives in the core so that both apps may import it, and they
never import each other. It imports nothing of the project, of Flask or of
the database.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar

T = TypeVar("T")


class Doc:
    """A field's description and other OpenAPI keywords (`pattern`, `minimum`, ...)."""

    def __init__(self, description: str = "", **keywords: Any) -> None:
        self.keywords = {"description": description, **keywords} if description else keywords


@dataclass(frozen=True)
class Known:
    """A rule the running server knows, named: openapi.py fills in its keywords (an enum...)."""

    name: str


class Malformed(ValueError):
    """A body that does not have the types its definition says; the message names why."""


# --- the values that recur ------------------------------------------------------------

AnId = Annotated[str, Doc(pattern="^[0-9a-f]{32}$")]  # dropbox.items.new_id
# A public key's length tells its kind (crypto.keys.public_key_from_bytes).
PublicKeyBytes = Annotated[
    bytes, Doc("X-Wing (1216 bytes), or X25519 (32 bytes) for a key made before X-Wing")
]
OfficeCode = Annotated[str, Known("offices")]
CategoryCode = Annotated[str, Known("categories")]
StatusName = Annotated[str, Known("statuses")]
OutcomeName = Annotated[str, Known("outcomes")]
TotpCode = Annotated[str, Doc("A current TOTP code (6 digits); each works only once")]
ConfirmCode = Annotated[
    str, Doc("A fresh TOTP code of the acting administrator; each works only once")
]


# --- refusals ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Error:
    """A refusal, in plain words."""

    error: Annotated[str, Doc("What went wrong, in plain words")]


@dataclass(frozen=True, kw_only=True)
class LockedOut:
    """Too many failed sign-ins with this username: refused until the lock ends."""

    error: str
    retry_after: Annotated[int, Doc("Seconds until the username may retry")]


@dataclass(frozen=True, kw_only=True)
class Damaged:
    """The file's stored content is missing; the damage is recorded."""

    error: str
    damaged: Literal[True]


@dataclass(frozen=True, kw_only=True)
class Ok:
    """Done."""

    ok: Literal[True]


# --- signing in and enrolment -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SignInParametersRequest:
    """Whose wrap header to send."""

    username: str
    device: Annotated[str, Doc("The device token an earlier sign-in on this machine gave")] = ""


@dataclass(frozen=True, kw_only=True)
class SignInParameters:
    """The wrap header to derive the auth key and the wrapping key with."""

    header: Annotated[
        bytes,
        Doc(
            "The officer's wrap header (KDF cost and salt); a stable fake one for a name"
            " that is not an enrolled officer's"
        ),
    ]


@dataclass(frozen=True, kw_only=True)
class SignInRequest:
    """An auth key derived on the officer's machine, and a TOTP code."""

    username: str
    auth_key: Annotated[bytes, Doc("Derived on the officer's machine")]
    code: TotpCode
    device: Annotated[str, Doc("The device token an earlier sign-in on this machine gave")] = ""


@dataclass(frozen=True, kw_only=True)
class OfficeInfo:
    """An office, and the public key the server holds for it (the app checks it)."""

    code: OfficeCode
    name: str
    public_key: PublicKeyBytes


@dataclass(frozen=True, kw_only=True)
class Grant:
    """An office key sealed to the officer's public key."""

    office: OfficeCode
    sealed_office_key: Annotated[bytes, Doc("Sealed to the officer's key")]


@dataclass(frozen=True, kw_only=True)
class Me:
    """The signed-in officer, their opaque keys and the labels the pages show."""

    id: int
    username: str
    display_name: str
    is_admin: bool
    public_key: PublicKeyBytes
    wrapped_secret_key: Annotated[bytes, Doc("Opaque to the server")] = field(repr=False)
    grants: list[Grant]
    offices: list[OfficeInfo]
    categories: Annotated[dict[str, str], Doc("Category code -> label")]
    statuses: list[StatusName]
    outcomes: list[OutcomeName]


@dataclass(frozen=True, kw_only=True)
class SignIn:
    """Signed in: a bearer token, a device token, and who signed in."""

    token: Annotated[str, Doc("Send as 'Authorization: Bearer <token>'")] = field(repr=False)
    device: Annotated[str, Doc("Keep it; send it with the next sign-in")] = field(repr=False)
    me: Me


@dataclass(frozen=True, kw_only=True)
class EnrolCheckRequest:
    """A one-time enrolment code to check, for a username."""

    username: str
    code: Annotated[str, Doc("The one-time enrolment code")]


@dataclass(frozen=True, kw_only=True)
class EnrolRequest:
    """Credentials made on the officer's machine, and the one-time enrolment code."""

    username: str
    enrolment_code: str
    auth_key: bytes
    public_key: Annotated[bytes, Doc("The new X-Wing public key (1216 bytes)")]
    wrapped_secret_key: bytes
    totp_secret: Annotated[str, Doc("Base32")]
    totp_code: TotpCode


@dataclass(frozen=True, kw_only=True)
class Enrolled:
    """Enrolled: the officer may sign in."""

    ok: Literal[True]
    officer_id: int
    username: str


@dataclass(frozen=True, kw_only=True)
class PassphraseRequest:
    """The current auth key and code, and what the new passphrase gives."""

    auth_key: bytes
    code: TotpCode
    new_auth_key: bytes
    new_wrapped_secret_key: bytes


@dataclass(frozen=True, kw_only=True)
class KeyReplacementRequest:
    """An officer's new X-Wing key, made on their machine, and their grants sealed to it."""

    auth_key: bytes
    code: TotpCode
    new_auth_key: bytes
    public_key: Annotated[bytes, Doc("The new X-Wing public key (1216 bytes)")]
    wrapped_secret_key: Annotated[bytes, Doc("Opaque to the server")] = field(repr=False)
    grants: Annotated[
        list[Grant], Doc("Each office the officer holds, its key sealed to the new key")
    ]


@dataclass(frozen=True, kw_only=True)
class TotpRequest:
    """The auth key, a new TOTP secret, and a code from that new secret."""

    auth_key: bytes
    secret: Annotated[str, Doc("Base32")]
    code: TotpCode


# --- notification e-mails ------------------------------------------------------------------

NotificationMode = Annotated[
    Literal["none", "immediate", "digest"],
    Doc("none; a mail as soon as something arrives; or one daily summary"),
]


@dataclass(frozen=True, kw_only=True)
class NotificationSettings:
    """The signed-in officer's notification e-mails (they only ever count, never describe)."""

    email: str
    mode: NotificationMode
    openpgp_fingerprint: Annotated[
        str | None, Doc("The OpenPGP key every mail is encrypted to; null: none")
    ]
    openpgp_user_ids: list[str]
    openpgp_expires: datetime | None
    mail_enabled: Annotated[bool, Doc("Whether the server is set up to send mail at all")]


@dataclass(frozen=True, kw_only=True)
class NotificationSettingsRequest:
    """New notification settings; an empty `openpgp_key` keeps the key registered."""

    email: str = ""
    mode: NotificationMode
    openpgp_key: Annotated[
        str,
        Doc(
            "An ASCII-armoured OpenPGP public key; refused if expired, revoked or unable to encrypt"
        ),
    ] = ""
    remove_openpgp_key: bool = False


# --- reports ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InboxQuery:
    """The inbox's filters, sort and page (a query string)."""

    status: StatusName = ""
    category: CategoryCode = ""
    mine: Annotated[bool, Doc("Only reports assigned to the caller")] = False
    overdue: Annotated[bool, Doc("Only reports past a due date")] = False
    urgent: Annotated[bool, Doc("Only urgent reports")] = False
    sort: Annotated[str, Known("sorts")] = "received"
    page: Annotated[int, Doc(minimum=1)] = 1


@dataclass(frozen=True, kw_only=True)
class Person:
    """An officer as another officer sees them: to pick an assignee."""

    id: int
    display_name: str


@dataclass(frozen=True, kw_only=True)
class InboxRow:
    """One report in the inbox (metadata only)."""

    id: AnId
    designation: Annotated[str, Doc("A random label for the source")]
    office: OfficeCode
    category: CategoryCode
    status: StatusName
    urgent: bool
    received: date
    last_activity: datetime | None
    acknowledge_due: date
    feedback_due: date
    acknowledged: bool
    acknowledge_overdue: bool
    feedback_overdue: bool
    assignee: Annotated[str | None, Doc("The assigned officer's name")]
    unread: Annotated[int, Doc("Items from the source not yet opened")]


@dataclass(frozen=True, kw_only=True)
class InboxPage:
    """A page of the inbox, how many reports match, and who reports can be assigned to."""

    rows: list[InboxRow]
    total: Annotated[int, Doc("Reports matching the filters")]
    page: int
    pages: int
    assignees: list[Person]


@dataclass(frozen=True, kw_only=True)
class StatusChange:
    """One move of a report's status: who (none for the system) and when."""

    from_status: StatusName | None
    to_status: StatusName
    outcome: OutcomeName | None
    at: datetime | None
    officer: str | None


@dataclass(frozen=True, kw_only=True)
class SealedItem:
    """One thread item as the server holds it: metadata and ciphertext."""

    id: AnId
    seq: int
    kind: Annotated[str, Known("item kinds")]
    author: Annotated[str | None, Doc("The officer who wrote it")]
    created_at: datetime | None
    size: int
    deleted_by_source: bool
    unread: bool
    key_block: bytes
    body_length: Annotated[int, Doc("The stored body's length in bytes")]
    body: Annotated[
        bytes | None,
        Doc(
            "The whole body: messages, replies, notes, reasons, acknowledgements; identity"
            " items only in the answer to a reveal"
        ),
    ]
    head: Annotated[
        bytes | None,
        Doc(
            "Files and identity items: the body's first bytes (version, stream header, sealed"
            " name and type)"
        ),
    ]


@dataclass(frozen=True, kw_only=True)
class ReportBundle:
    """The report and its sealed thread."""

    id: AnId
    designation: str
    office: OfficeCode
    category: CategoryCode
    status: StatusName
    outcome: OutcomeName | None
    urgent: bool
    received: date
    last_activity: datetime | None
    acknowledge_due: date
    feedback_due: date
    acknowledged_at: datetime | None
    closed_at: datetime | None
    assignee_id: int | None
    assignee: str | None
    source_public_key: Annotated[
        bytes,
        Doc(
            "The key the source's replies are sealed to: X-Wing (1216 bytes), or X25519"
            " (32 bytes) for a report made before X-Wing"
        ),
    ]
    reading_office: Annotated[
        OfficeCode, Doc("The caller's office through which the report is read")
    ]
    handling: Annotated[bool, Doc("False when the caller's office only kept a copy")]
    shared_up_to: Annotated[int | None, Doc("For a kept copy: the last item number it was given")]
    shared_with: list[OfficeCode]
    next_statuses: list[StatusName]
    status_changes: list[StatusChange]
    assignees: list[Person]
    items: list[SealedItem]


@dataclass(frozen=True, kw_only=True)
class NewItem:
    """An item sealed on the officer's machine, to be stored as it is."""

    item_id: Annotated[AnId, Doc("Chosen by the sealer; the envelope is bound to it")]
    size: Annotated[int, Doc("The sealed plaintext's size", minimum=0)]
    key_block: bytes
    body: Annotated[bytes, Doc("The whole envelope body, of body_size(size) bytes")]


@dataclass(frozen=True, kw_only=True)
class NewItemRequest(NewItem):
    """A reply or a note sealed on the officer's machine."""

    kind: Annotated[str, Known("officer kinds")]
    acknowledge: Annotated[
        bool,
        Doc(
            "With a reply only: also acknowledge the report, if it is not acknowledged yet"
            " (status acknowledged where the workflow allows)"
        ),
    ] = False


@dataclass(frozen=True, kw_only=True)
class ItemCreated:
    """Stored: the item's number in the thread, and the report's status after it."""

    id: AnId
    seq: int
    status: StatusName


@dataclass(frozen=True, kw_only=True)
class RevealRequest:
    """Why the identity is revealed, sealed on the officer's machine (a reveal item)."""

    reason: NewItem


@dataclass(frozen=True, kw_only=True)
class Revealed:
    """The identity items, with their whole bodies."""

    items: list[SealedItem]


@dataclass(frozen=True, kw_only=True)
class AssignRequest:
    """Whom to assign the report to."""

    assignee_id: Annotated[int | None, Doc("null: nobody")]


@dataclass(frozen=True, kw_only=True)
class Assigned:
    """Assigned."""

    assignee_id: int | None


@dataclass(frozen=True, kw_only=True)
class StatusRequest:
    """The status to move to (and the outcome, to close)."""

    status: StatusName
    outcome: Annotated[OutcomeName | None, Doc("To close")] = None


@dataclass(frozen=True, kw_only=True)
class StatusChanged:
    """The report's status (and outcome) now."""

    status: StatusName
    outcome: OutcomeName | None


@dataclass(frozen=True, kw_only=True)
class ReferRequest:
    """The office to hand the report to, with every item's key block re-sealed for it."""

    office: OfficeCode
    keep_copy: bool = False
    key_blocks: Annotated[
        dict[str, bytes],
        Doc(
            "Item id -> the item's key block re-sealed for the referral; exactly the report's items"
        ),
    ]


@dataclass(frozen=True, kw_only=True)
class Referred:
    """Referred: the handling office and the status now."""

    office: OfficeCode
    status: StatusName


@dataclass(frozen=True, kw_only=True)
class Deleted:
    """Deleted: the report's key blocks are destroyed."""

    deleted: AnId


@dataclass(frozen=True, kw_only=True)
class EventRequest:
    """What the officer's machine found: never content."""

    action: Annotated[str, Known("event actions")]
    detail: Annotated[
        str, Doc("For item.damaged the item's id; never content"), Known("event detail")
    ] = ""


@dataclass(frozen=True, kw_only=True)
class Recorded:
    """Recorded in the audit log."""

    recorded: str


# --- administration -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OfficerSummary:
    """An officer as an administrator sees them."""

    id: int
    username: str
    display_name: str
    is_admin: bool
    active: bool
    enrolled: bool
    public_key: PublicKeyBytes | None
    offices: list[OfficeCode]


@dataclass(frozen=True, kw_only=True)
class Officers:
    """Every officer."""

    officers: list[OfficerSummary]


@dataclass(frozen=True, kw_only=True)
class InviteRequest:
    """Who to invite, confirmed by the administrator's code."""

    username: str
    display_name: str = ""
    is_admin: bool = False
    code: ConfirmCode


@dataclass(frozen=True, kw_only=True)
class Invitation:
    """A one-time enrolment code, and until when it works."""

    officer_id: int
    code: Annotated[str, Doc("The one-time enrolment code, shown once")] = field(repr=False)
    expires_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class ConfirmRequest:
    """The administrator's code, to confirm a change."""

    code: ConfirmCode


@dataclass(frozen=True, kw_only=True)
class GrantRequest:
    """An office key sealed to the officer on the granting machine."""

    office: OfficeCode
    sealed_office_key: Annotated[bytes, Doc("The office key sealed to the officer's public key")]
    code: ConfirmCode


@dataclass(frozen=True, kw_only=True)
class NotificationFailure:
    """A notification mail that failed: retried later, or given up."""

    officer: str
    display_name: str
    what: Annotated[str, Doc("What the mail counts, in words")]
    attempts: int
    last_error: str
    next_attempt_at: Annotated[datetime | None, Doc("When it is tried again; null: given up")]
    gave_up_on: date | None


@dataclass(frozen=True, kw_only=True)
class NotificationFailures:
    """Notification mails that failed and were not sent since."""

    failures: list[NotificationFailure]
    mail_enabled: bool


@dataclass(frozen=True, kw_only=True)
class AuditQuery:
    """Which page of the audit log (a query string)."""

    page: Annotated[int, Doc(minimum=1)] = 1


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """One audit event (never content)."""

    id: int
    at: datetime | None
    actor: str
    action: str
    report_id: str | None
    detail: str


@dataclass(frozen=True, kw_only=True)
class ReportEvents:
    """A report's audit events, oldest first: for its export by the office handling it."""

    events: list[AuditEntry]


@dataclass(frozen=True, kw_only=True)
class AuditPage:
    """A page of the audit log, newest first."""

    events: list[AuditEntry]
    page: int
    pages: int


@dataclass(frozen=True, kw_only=True)
class AuditCheck:
    """Whether the audit chain is intact, and what is wrong if not."""

    ok: bool
    events: int
    problems: list[str]


# --- statistics ------------------------------------------------------------------------------

StatisticsOffice = Annotated[str, Known("statistics_offices")]


@dataclass(frozen=True, kw_only=True)
class StatisticsQuery:
    """Which office and which months (a query string); `download` records a download."""

    office: Annotated[
        StatisticsOffice,
        Doc("An office code, or 'all' (administrators); left out: the caller's first office"),
    ] = ""
    year: Annotated[int, Doc("Left out: this year")] = 0
    from_month: Annotated[int, Doc("The first month of the period", minimum=1, maximum=12)] = 1
    to_month: Annotated[int, Doc("The last month of the period", minimum=1, maximum=12)] = 12
    download: Annotated[
        bool, Doc("The figures are for a download: recorded as statistics.download")
    ] = False


@dataclass(frozen=True, kw_only=True)
class StatisticsCell:
    """One figure: its value, or none when hidden to protect a small count."""

    value: int | None
    shown: Annotated[
        Literal["value", "fewer", "withheld"],
        Doc(
            "value: shown; fewer: below the threshold; withheld: not small, hidden so that"
            " a small count cannot be worked out from the others"
        ),
    ]


@dataclass(frozen=True, kw_only=True)
class StatisticsRow:
    """A row of a table: what it counts, and one cell a column."""

    key: str
    cells: list[StatisticsCell]


@dataclass(frozen=True, kw_only=True)
class StatisticsTable:
    """A table of figures: its columns (office codes, and 'all' for every office) and rows."""

    key: str
    columns: list[str]
    rows: list[StatisticsRow]


@dataclass(frozen=True, kw_only=True)
class Statistics:
    """A period's statistics for an office, or every office: counts from metadata only."""

    office: StatisticsOffice
    year: int
    from_month: int
    to_month: int
    today: Annotated[date, Doc("The day what is overdue was counted")]
    counted_at: Annotated[
        datetime, Doc("When the figures were counted (a worker reuses them for a minute)")
    ]
    threshold: Annotated[int, Doc("Counts below this are hidden")]
    offices: Annotated[list[OfficeCode], Doc("The offices the caller may see statistics of")]
    tables: list[StatisticsTable]


# --- reading the type hints ------------------------------------------------------------------


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    """A definition's fields and their type hints (with `Annotated` kept), in order."""
    if cls not in _HINTS:
        found = typing.get_type_hints(cls, include_extras=True)
        _HINTS[cls] = {f.name: found[f.name] for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def unwrap(hint: Any) -> tuple[Any, list[Any]]:
    """A hint without `Annotated`, and the metadata it carried."""
    metadata: list[Any] = []
    while typing.get_origin(hint) is Annotated:
        metadata.extend(hint.__metadata__)
        hint = hint.__origin__
    return hint, metadata


def optional(hint: Any) -> Any | None:
    """For `X | None`, X; for any other hint, None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1 and len(typing.get_args(hint)) == 2:
            return rest[0]
    return None


# --- answers: a definition as JSON -----------------------------------------------------------


def b64(data: bytes) -> str:
    """Bytes as standard base64 text, as every binary value travels."""
    return base64.b64encode(data).decode("ascii")


def dump(value: Any) -> dict[str, Any]:
    """A definition's instance as the JSON object that travels."""
    return {name: _dump(getattr(value, name), hint) for name, hint in hints(type(value)).items()}


def _dump(value: Any, hint: Any) -> Any:
    hint, _ = unwrap(hint)
    if value is None:
        return None
    inner = optional(hint)
    if inner is not None:
        return _dump(value, inner)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_dump(v, item) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {str(k): _dump(v, item) for k, v in value.items()}
    if hint is bytes:
        return b64(value)
    if hint is datetime:
        aware = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.isoformat()
    if hint is date:
        return (value.date() if isinstance(value, datetime) else value).isoformat()
    if dataclasses.is_dataclass(hint):
        return dump(value)
    return value


# --- requests (and answers read back): JSON as a definition -------------------------------


def load(cls: type[T], data: Any, where: str = "") -> T:
    """A JSON body as the definition `cls`; `Malformed` naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise Malformed(f"'{where}' must be an object" if where else "send a JSON object")
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f"{where}.{spec.name}" if where else spec.name
        raw = data.get(spec.name)
        if raw is None and spec.default is not dataclasses.MISSING:
            values[spec.name] = spec.default
        else:
            values[spec.name] = _load(raw, hints(cls)[spec.name], name)
    return cls(**values)


def _load(raw: Any, hint: Any, name: str) -> Any:
    hint, _ = unwrap(hint)
    inner = optional(hint)
    if inner is not None:
        return None if raw is None else _load(raw, inner, name)
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return load(hint, raw, name)  # type: ignore[arg-type]
    if origin is dict:
        if not isinstance(raw, dict):
            raise Malformed(f"'{name}' must be an object")
        _, item = typing.get_args(hint)
        return {str(k): _load(v, item, f"{name}.{k}") for k, v in raw.items()}
    if origin is list:
        if not isinstance(raw, list):
            raise Malformed(f"'{name}' must be a list")
        (item,) = typing.get_args(hint)
        return [_load(v, item, f"{name}.{i}") for i, v in enumerate(raw)]
    if hint is str:
        return _text(raw, name)
    if hint is bool:
        if not isinstance(raw, bool):
            raise Malformed(f"'{name}' must be true or false")
        return raw
    if hint is int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise Malformed(f"'{name}' must be a whole number")
        return raw
    if hint is bytes:
        if not isinstance(raw, str):
            raise Malformed(f"'{name}' must be base64 text")
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise Malformed(f"'{name}' must be base64 text") from None
    if hint is datetime or hint is date:
        try:
            return hint.fromisoformat(raw)
        except (TypeError, ValueError):
            kind = "an RFC 3339 time" if hint is datetime else "an ISO date"
            raise Malformed(f"'{name}' must be {kind}") from None
    if origin is Literal:
        allowed = typing.get_args(hint)
        if not any(raw == value and type(raw) is type(value) for value in allowed):
            raise Malformed(f"'{name}' must be {' or '.join(json.dumps(v) for v in allowed)}")
        return raw
    raise TypeError(f"no JSON value reads as {hint!r} ({name})")


def _text(raw: Any, name: str) -> str:
    if not isinstance(raw, str):
        raise Malformed(f"'{name}' must be a string")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # JSON can spell lone surrogates ("\ud800"); no text holds them
        raise Malformed(f"'{name}' must be text without lone surrogates") from None
    return raw
