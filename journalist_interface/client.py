"""The case server's API as the reviewer app (and any script) calls it: typed, one method a route.

This module is the contract between the two halves. The case server
(`case_server/`) stores metadata and ciphertext and never decrypts; the
reviewer app (`journalist_interface/`) runs on the officer's own machine,
derives keys from the passphrase and decrypts there. Everything that goes
over the wire is here: routes under `/api/v2`, JSON bodies, binary values
as standard base64, times as RFC 3339, days as ISO dates.

Sign-in never hands over the passphrase: `signin_parameters` returns the
officer's wrap header (cost and salt; a stable fake one for an unknown
name), the app derives (auth key, wrapping key) with Argon2id, and `sign_in`
sends only the auth key and a TOTP code. The answer carries the officer's
wrapped secret key and office keys sealed to the officer, opened locally.

Every method raises `ApiError` (with the server's plain-words message) for
a refusal, and `Unreachable` when the server cannot be reached. Over Tor
the client goes through the SOCKS proxy (`socks="127.0.0.1:9050"`); in tests
it may be given an `httpx.WSGITransport` around the real case server.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import httpx

PREFIX = "/api/v2"
TIMEOUT = httpx.Timeout(60.0, connect=30.0)


class ApiError(Exception):
    """The case server refused a request; `message` is for the officer to read."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class Unreachable(ApiError):
    """The case server could not be reached (tor down, server down, timeout)."""

    def __init__(self, message: str = "the case server cannot be reached; try again") -> None:
        super().__init__(0, message)


def b64(data: bytes) -> str:
    """Bytes as standard base64 text, as every binary value travels."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    """Base64 text back to bytes; ApiError if the server sent something else."""
    if not isinstance(text, str):
        raise ApiError(502, "the case server sent a malformed answer")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(502, "the case server sent a malformed answer") from None


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _day(value: Any) -> date:
    return date.fromisoformat(value)


# --- what the server sends back --------------------------------------------------------


@dataclass(frozen=True)
class OfficeInfo:
    """An office: code, name, and the public key the server holds for it (to be checked)."""

    code: str
    name: str
    public_key: bytes

    @classmethod
    def parse(cls, d: dict[str, Any]) -> OfficeInfo:
        return cls(d["code"], d["name"], unb64(d["public_key"]))


@dataclass(frozen=True)
class Grant:
    """An office key sealed to the signed-in officer's public key."""

    office: str
    sealed_office_key: bytes

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Grant:
        return cls(d["office"], unb64(d["sealed_office_key"]))


@dataclass(frozen=True)
class Me:
    """The signed-in officer, their opaque key material, and the labels the pages show."""

    id: int
    username: str
    display_name: str
    is_admin: bool
    public_key: bytes
    wrapped_secret_key: bytes = field(repr=False)
    grants: list[Grant]
    offices: list[OfficeInfo]
    categories: dict[str, str]  # code -> label
    statuses: list[str]
    outcomes: list[str]

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Me:
        return cls(
            id=d["id"],
            username=d["username"],
            display_name=d["display_name"],
            is_admin=d["is_admin"],
            public_key=unb64(d["public_key"]),
            wrapped_secret_key=unb64(d["wrapped_secret_key"]),
            grants=[Grant.parse(g) for g in d["grants"]],
            offices=[OfficeInfo.parse(o) for o in d["offices"]],
            categories=dict(d["categories"]),
            statuses=list(d["statuses"]),
            outcomes=list(d["outcomes"]),
        )


@dataclass(frozen=True)
class SignIn:
    """A successful sign-in: the bearer token, a device token, and who signed in."""

    token: str = field(repr=False)
    device: str = field(repr=False)
    me: Me

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SignIn:
        return cls(d["token"], d["device"], Me.parse(d["me"]))


@dataclass(frozen=True)
class Row:
    """One report in the inbox (metadata only)."""

    id: str
    designation: str
    office: str
    category: str
    status: str
    urgent: bool
    received: date
    last_activity: datetime | None
    acknowledge_due: date
    feedback_due: date
    acknowledged: bool
    acknowledge_overdue: bool
    feedback_overdue: bool
    assignee: str | None
    unread: int

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Row:
        return cls(
            d["id"],
            d["designation"],
            d["office"],
            d["category"],
            d["status"],
            d["urgent"],
            _day(d["received"]),
            _time(d["last_activity"]),
            _day(d["acknowledge_due"]),
            _day(d["feedback_due"]),
            d["acknowledged"],
            d["acknowledge_overdue"],
            d["feedback_overdue"],
            d["assignee"],
            d["unread"],
        )


@dataclass(frozen=True)
class Person:
    """An officer as another officer sees them: to pick an assignee."""

    id: int
    display_name: str

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Person:
        return cls(d["id"], d["display_name"])


@dataclass(frozen=True)
class InboxPage:
    """A page of the inbox: rows, how many match in all, and who reports can be assigned to."""

    rows: list[Row]
    total: int
    page: int
    pages: int
    assignees: list[Person]

    @classmethod
    def parse(cls, d: dict[str, Any]) -> InboxPage:
        return cls(
            [Row.parse(r) for r in d["rows"]],
            d["total"],
            d["page"],
            d["pages"],
            [Person.parse(p) for p in d["assignees"]],
        )


@dataclass(frozen=True)
class StatusChange:
    """One move of a report's status."""

    from_status: str | None
    to_status: str
    outcome: str | None
    at: datetime | None
    officer: str | None

    @classmethod
    def parse(cls, d: dict[str, Any]) -> StatusChange:
        return cls(d["from_status"], d["to_status"], d["outcome"], _time(d["at"]), d["officer"])


@dataclass(frozen=True)
class SealedItem:
    """One thread item as the server holds it: metadata and ciphertext.

    `body` is the whole envelope body for message kinds (message, reply,
    note, reveal, acknowledgement) and, after a reveal, for identity items;
    None for files and unrevealed identity items, which come with `head`
    instead (the first `envelope.HEAD_BYTES` of the body: enough to check the
    key, the size and the sealed name and type). `body_length` is the stored
    body's length in bytes, to check against the sealed size.
    """

    id: str
    seq: int
    kind: str
    author: str | None
    created_at: datetime | None
    size: int
    deleted_by_source: bool
    unread: bool
    key_block: bytes
    body_length: int
    body: bytes | None = None
    head: bytes | None = None

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SealedItem:
        return cls(
            id=d["id"],
            seq=d["seq"],
            kind=d["kind"],
            author=d["author"],
            created_at=_time(d["created_at"]),
            size=d["size"],
            deleted_by_source=d["deleted_by_source"],
            unread=d["unread"],
            key_block=unb64(d["key_block"]),
            body_length=d["body_length"],
            body=unb64(d["body"]) if d.get("body") is not None else None,
            head=unb64(d["head"]) if d.get("head") is not None else None,
        )


@dataclass(frozen=True)
class ReportBundle:
    """Everything a report page needs, in one round trip: metadata and the sealed thread.

    `reading_office` is the office through which the caller reads it (the
    handling office if they hold it, else the office that kept a copy);
    `handling` says whether they may act on it. `shared_up_to` is, for a
    kept copy, the last item number the copy was given (None if not a copy
    or unknown). `offices` are the offices a referral may go to.
    """

    id: str
    designation: str
    office: str
    category: str
    status: str
    outcome: str | None
    urgent: bool
    received: date
    last_activity: datetime | None
    acknowledge_due: date
    feedback_due: date
    acknowledged_at: datetime | None
    closed_at: datetime | None
    assignee_id: int | None
    assignee: str | None
    source_public_key: bytes
    reading_office: str
    handling: bool
    shared_up_to: int | None
    shared_with: list[str]
    next_statuses: list[str]
    status_changes: list[StatusChange]
    assignees: list[Person]
    items: list[SealedItem]

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ReportBundle:
        return cls(
            id=d["id"],
            designation=d["designation"],
            office=d["office"],
            category=d["category"],
            status=d["status"],
            outcome=d["outcome"],
            urgent=d["urgent"],
            received=_day(d["received"]),
            last_activity=_time(d["last_activity"]),
            acknowledge_due=_day(d["acknowledge_due"]),
            feedback_due=_day(d["feedback_due"]),
            acknowledged_at=_time(d["acknowledged_at"]),
            closed_at=_time(d["closed_at"]),
            assignee_id=d["assignee_id"],
            assignee=d["assignee"],
            source_public_key=unb64(d["source_public_key"]),
            reading_office=d["reading_office"],
            handling=d["handling"],
            shared_up_to=d["shared_up_to"],
            shared_with=list(d["shared_with"]),
            next_statuses=list(d["next_statuses"]),
            status_changes=[StatusChange.parse(c) for c in d["status_changes"]],
            assignees=[Person.parse(p) for p in d["assignees"]],
            items=[SealedItem.parse(i) for i in d["items"]],
        )


@dataclass(frozen=True)
class NewItem:
    """An item sealed on the officer's machine, to be stored as it is.

    `item_id` is chosen by the sealer (`reports.new_id()`), because the
    envelope is bound to (report id, item id); `size` is the plaintext size
    sealed in the key block, which the server checks against the body length.
    """

    item_id: str
    size: int
    key_block: bytes
    body: bytes

    def json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "size": self.size,
            "key_block": b64(self.key_block),
            "body": b64(self.body),
        }


@dataclass(frozen=True)
class OfficerSummary:
    """An officer as an administrator sees them."""

    id: int
    username: str
    display_name: str
    is_admin: bool
    active: bool
    enrolled: bool
    public_key: bytes | None
    offices: list[str]

    @classmethod
    def parse(cls, d: dict[str, Any]) -> OfficerSummary:
        key = d.get("public_key")
        return cls(
            d["id"],
            d["username"],
            d["display_name"],
            d["is_admin"],
            d["active"],
            d["enrolled"],
            unb64(key) if key is not None else None,
            list(d["offices"]),
        )


@dataclass(frozen=True)
class Invitation:
    """A one-time enrolment code for a new officer, and until when it works."""

    officer_id: int
    code: str = field(repr=False)
    expires_at: datetime | None

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Invitation:
        return cls(d["officer_id"], d["code"], _time(d["expires_at"]))


@dataclass(frozen=True)
class AuditEntry:
    """One audit event (never content)."""

    id: int
    at: datetime | None
    actor: str
    action: str
    report_id: str | None
    detail: str

    @classmethod
    def parse(cls, d: dict[str, Any]) -> AuditEntry:
        return cls(d["id"], _time(d["at"]), d["actor"], d["action"], d["report_id"], d["detail"])


@dataclass(frozen=True)
class AuditPage:
    """A page of the audit log, newest first."""

    events: list[AuditEntry]
    page: int
    pages: int

    @classmethod
    def parse(cls, d: dict[str, Any]) -> AuditPage:
        return cls([AuditEntry.parse(e) for e in d["events"]], d["page"], d["pages"])


@dataclass(frozen=True)
class AuditCheck:
    """The result of verifying the audit chain on the server."""

    ok: bool
    events: int
    problems: list[str]

    @classmethod
    def parse(cls, d: dict[str, Any]) -> AuditCheck:
        return cls(d["ok"], d["events"], list(d["problems"]))


@dataclass(frozen=True)
class InboxQuery:
    """The inbox filters, as the pages take them."""

    status: str = ""
    category: str = ""
    mine: bool = False
    overdue: bool = False
    urgent: bool = False
    sort: str = "received"
    page: int = 1

    def params(self) -> dict[str, str]:
        out = {"sort": self.sort, "page": str(self.page)}
        if self.status:
            out["status"] = self.status
        if self.category:
            out["category"] = self.category
        for name in ("mine", "overdue", "urgent"):
            if getattr(self, name):
                out[name] = "true"
        return out


# --- the client ------------------------------------------------------------------------


_ID_CHARACTERS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_")


def _id(text: str) -> str:
    """A report or item id as a path segment; ApiError 404 for text no id can be.

    Ids come from page addresses the officer's browser sends: anything else
    (a NUL, a slash, a lone surrogate) is refused here, before a request is built.
    """
    if not (0 < len(text) <= 64 and set(text) <= _ID_CHARACTERS):
        raise ApiError(404, "there is no such report or item")
    return text


class CaseServerClient:
    """One officer's connection to the case server (one bearer token at most)."""

    def __init__(
        self,
        base_url: str,
        *,
        socks: str | None = None,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        proxy = f"socks5h://{socks}" if socks else None
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + PREFIX,
            proxy=proxy,
            transport=transport,
            timeout=TIMEOUT,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )
        self.token = token

    def close(self) -> None:
        self._http.close()

    # -- plumbing

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        try:
            response = self._http.request(
                method, path, json=json, params=params, headers=self._headers()
            )
        except httpx.HTTPError:
            raise Unreachable() from None
        return self._answer(response)

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and data is not None:
            return data
        message = "the case server refused the request"
        extra: dict[str, Any] = {}
        if isinstance(data, dict):
            message = str(data.get("error", message))
            extra = {k: v for k, v in data.items() if k != "error"}
        raise ApiError(response.status_code, message, **extra)

    # -- signing in (no token)

    def signin_parameters(self, username: str, device: str = "") -> bytes:
        """The officer's wrap header (cost, salt): the same answer whether or not they exist.

        `device` is the device token of an earlier sign-in, if any: as at
        sign-in, it gives this machine its own rate-limit budget, which a
        flood from elsewhere does not spend.
        """
        body = {"username": username, "device": device}
        return unb64(self._call("POST", "/signin/params", json=body)["header"])

    def sign_in(self, username: str, auth_key: bytes, code: str, device: str = "") -> SignIn:
        """Sign in with the auth key and a TOTP code; keeps the token for later calls."""
        body = {"username": username, "auth_key": b64(auth_key), "code": code, "device": device}
        result = SignIn.parse(self._call("POST", "/signin", json=body))
        self.token = result.token
        return result

    def sign_out(self) -> None:
        """End the token on the server (and forget it here)."""
        if self.token:
            try:
                self._call("POST", "/signout")
            finally:
                self.token = None

    def check_enrolment(self, username: str, code: str) -> None:
        """ApiError unless this one-time enrolment code is valid for this username now."""
        self._call("POST", "/enrol/check", json={"username": username, "code": code})

    def enrol(
        self,
        username: str,
        enrolment_code: str,
        *,
        auth_key: bytes,
        public_key: bytes,
        wrapped_secret_key: bytes,
        totp_secret: str,
        totp_code: str,
    ) -> None:
        """Complete enrolment: the server stores a verifier of the auth key, never the key."""
        self._call(
            "POST",
            "/enrol",
            json={
                "username": username,
                "enrolment_code": enrolment_code,
                "auth_key": b64(auth_key),
                "public_key": b64(public_key),
                "wrapped_secret_key": b64(wrapped_secret_key),
                "totp_secret": totp_secret,
                "totp_code": totp_code,
            },
        )

    # -- the signed-in officer

    def me(self) -> Me:
        return Me.parse(self._call("GET", "/me"))

    def change_passphrase(
        self, *, auth_key: bytes, code: str, new_auth_key: bytes, new_wrapped_secret_key: bytes
    ) -> None:
        """Replace the verifier and the wrapped key; other sessions of the officer end."""
        self._call(
            "POST",
            "/account/passphrase",
            json={
                "auth_key": b64(auth_key),
                "code": code,
                "new_auth_key": b64(new_auth_key),
                "new_wrapped_secret_key": b64(new_wrapped_secret_key),
            },
        )

    def replace_totp(self, *, auth_key: bytes, secret: str, code: str) -> None:
        """Replace the TOTP secret; `code` must come from the new secret."""
        self._call(
            "POST",
            "/account/totp",
            json={"auth_key": b64(auth_key), "secret": secret, "code": code},
        )

    # -- reports

    def inbox(self, query: InboxQuery) -> InboxPage:
        return InboxPage.parse(self._call("GET", "/reports", params=query.params()))

    def report(self, report_id: str) -> ReportBundle:
        """The report and its sealed thread; marks it read and records the reading."""
        return ReportBundle.parse(self._call("GET", f"/reports/{_id(report_id)}"))

    @contextmanager
    def item_body(self, report_id: str, item_id: str) -> Iterator[httpx.Response]:
        """Stream a file item's ciphertext (recorded as a download); use as a context manager."""
        try:
            with self._http.stream(
                "GET",
                f"/reports/{_id(report_id)}/items/{_id(item_id)}/body",
                headers=self._headers(),
            ) as response:
                if not response.is_success:
                    response.read()
                    self._answer(response)
                yield response
        except httpx.HTTPError:
            raise Unreachable() from None

    def add_item(self, report_id: str, kind: str, item: NewItem, acknowledge: bool = False) -> int:
        """Store a reply or note sealed on this machine; returns its number in the thread.

        `acknowledge` (a reply only): the reply also acknowledges a report not
        yet acknowledged, in the same step on the case server.
        """
        body: dict[str, Any] = {"kind": kind, **item.json()}
        if acknowledge:
            body["acknowledge"] = True
        return int(self._call("POST", f"/reports/{_id(report_id)}/items", json=body)["seq"])

    def reveal(self, report_id: str, reason: NewItem) -> list[SealedItem]:
        """Post the sealed reason; get the identity items' ciphertext (recorded)."""
        data = self._call(
            "POST", f"/reports/{_id(report_id)}/reveal", json={"reason": reason.json()}
        )
        return [SealedItem.parse(i) for i in data["items"]]

    def assign(self, report_id: str, assignee_id: int | None) -> None:
        self._call("POST", f"/reports/{_id(report_id)}/assign", json={"assignee_id": assignee_id})

    def change_status(self, report_id: str, status: str, outcome: str | None = None) -> None:
        self._call(
            "POST", f"/reports/{_id(report_id)}/status", json={"status": status, "outcome": outcome}
        )

    def refer(
        self, report_id: str, office: str, keep_copy: bool, key_blocks: dict[str, bytes]
    ) -> None:
        """Hand the report over, with every item's key block re-sealed on this machine."""
        self._call(
            "POST",
            f"/reports/{_id(report_id)}/refer",
            json={
                "office": office,
                "keep_copy": keep_copy,
                "key_blocks": {k: b64(v) for k, v in key_blocks.items()},
            },
        )

    def delete_report(self, report_id: str) -> None:
        self._call("POST", f"/reports/{_id(report_id)}/delete", json={})

    def record(self, report_id: str | None, action: str, detail: str) -> None:
        """Record what this machine found: `item.damaged` (detail: item id) or `key.mismatch`.

        Without a report (a key found wrong at sign-in or at a grant), only
        `key.mismatch`.
        """
        path = f"/reports/{_id(report_id)}/events" if report_id is not None else "/events"
        self._call("POST", path, json={"action": action, "detail": detail})

    # -- administration

    def officers(self) -> list[OfficerSummary]:
        return [OfficerSummary.parse(o) for o in self._call("GET", "/officers")["officers"]]

    def invite(self, username: str, display_name: str, is_admin: bool, code: str) -> Invitation:
        body = {
            "username": username,
            "display_name": display_name,
            "is_admin": is_admin,
            "code": code,
        }
        return Invitation.parse(self._call("POST", "/officers", json=body))

    def reinvite(self, officer_id: int, code: str) -> Invitation:
        """A new enrolment code for an existing officer (forgotten passphrase, re-enrolment)."""
        return Invitation.parse(
            self._call("POST", f"/officers/{officer_id}/invite", json={"code": code})
        )

    def deactivate(self, officer_id: int, code: str) -> None:
        self._call("POST", f"/officers/{officer_id}/deactivate", json={"code": code})

    def grant(self, officer_id: int, office: str, sealed_office_key: bytes, code: str) -> None:
        self._call(
            "POST",
            f"/officers/{officer_id}/grants",
            json={"office": office, "sealed_office_key": b64(sealed_office_key), "code": code},
        )

    def audit_log(self, page: int = 1) -> AuditPage:
        return AuditPage.parse(self._call("GET", "/audit", params={"page": str(page)}))

    def verify_audit(self) -> AuditCheck:
        return AuditCheck.parse(self._call("POST", "/audit/verify", json={}))
