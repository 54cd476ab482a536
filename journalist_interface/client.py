"""The case server's API as the reviewer app (and any script) calls it: typed, one method a route.

The case server (`case_server/`) stores metadata and ciphertext and never
decrypts; the reviewer app (`journalist_interface/`) runs on the officer's
own machine, derives keys from the passphrase and decrypts there. Routes
are under `/api/v2`. Every body that travels is a definition of
dropbox/api_schema.py, which the case server reads and writes with too: the
client writes each request with `dump` and reads each answer with `load`.
An answer that does not match its definition is refused as malformed.

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

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from socksio.exceptions import ProtocolError as SocksReplyError

from dropbox import api_schema as schema

# The definitions the methods take and give, so that a script needs only this module.
from dropbox.api_schema import (
    AuditCheck,
    AuditPage,
    InboxPage,
    InboxQuery,
    Invitation,
    Me,
    NewItem,
    OfficerSummary,
    ReportBundle,
    SealedItem,
    SignIn,
    b64,
)

__all__ = [
    "ApiError",
    "AuditCheck",
    "AuditPage",
    "CaseServerClient",
    "InboxPage",
    "InboxQuery",
    "Invitation",
    "Me",
    "NewItem",
    "OfficerSummary",
    "ReportBundle",
    "SealedItem",
    "SignIn",
    "Unreachable",
    "b64",
]

PREFIX = "/api/v2"
TIMEOUT = httpx.Timeout(60.0, connect=30.0)
# A pooled connection is let go after this long idle: sooner than the case server's
# gunicorn closes an idle one (launcher/serve.py, KEEPALIVE_SECONDS). Otherwise a
# request can go out on a connection the server is closing at that instant, and get
# no answer ("Server disconnected without sending a response"), shown as unreachable.
KEEPALIVE_EXPIRY = 1.0
MALFORMED = "the case server sent a malformed answer"

T = TypeVar("T")


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


def _params(query: Any) -> dict[str, str]:
    """A query definition (`InboxQuery`, `AuditQuery`) as the parameters of a URL.

    An empty text or a false flag is left out, as the server reads a
    missing parameter; a true flag is sent as "true".
    """
    params: dict[str, str] = {}
    for spec in dataclasses.fields(query):
        value = getattr(query, spec.name)
        if isinstance(value, bool):
            if value:
                params[spec.name] = "true"
        elif value not in ("", None):
            params[spec.name] = str(value)
    return params


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


# What a request that never reached the case server raises: httpx's errors, and socksio's
# when tor's SOCKS port refuses with one of tor's own reply codes (a SocksPort with
# ExtendedErrors, as Tor Browser's has: "onion service missing client authorization"),
# which socksio cannot parse.
CONNECTION_ERRORS = (httpx.HTTPError, SocksReplyError)


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
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY),
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
        except CONNECTION_ERRORS:
            raise Unreachable() from None
        return self._answer(response)

    def _read(
        self,
        answer: type[T],
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> T:
        """Send `body` (a request definition, if the route takes one); the answer as `answer`."""
        sent = schema.dump(body) if body is not None else None
        data = self._call(method, path, json=sent, params=params)
        try:
            return schema.load(answer, data)
        except schema.Malformed:
            raise ApiError(502, MALFORMED) from None

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
        body = schema.SignInParametersRequest(username=username, device=device)
        return self._read(schema.SignInParameters, "POST", "/signin/params", body=body).header

    def sign_in(self, username: str, auth_key: bytes, code: str, device: str = "") -> SignIn:
        """Sign in with the auth key and a TOTP code; keeps the token for later calls."""
        body = schema.SignInRequest(username=username, auth_key=auth_key, code=code, device=device)
        result = self._read(SignIn, "POST", "/signin", body=body)
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
        body = schema.EnrolCheckRequest(username=username, code=code)
        self._read(schema.Ok, "POST", "/enrol/check", body=body)

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
    ) -> schema.Enrolled:
        """Complete enrolment: the server stores a verifier of the auth key, never the key."""
        body = schema.EnrolRequest(
            username=username,
            enrolment_code=enrolment_code,
            auth_key=auth_key,
            public_key=public_key,
            wrapped_secret_key=wrapped_secret_key,
            totp_secret=totp_secret,
            totp_code=totp_code,
        )
        return self._read(schema.Enrolled, "POST", "/enrol", body=body)

    # -- the signed-in officer

    def me(self) -> Me:
        return self._read(Me, "GET", "/me")

    def change_passphrase(
        self, *, auth_key: bytes, code: str, new_auth_key: bytes, new_wrapped_secret_key: bytes
    ) -> None:
        """Replace the verifier and the wrapped key; other sessions of the officer end."""
        body = schema.PassphraseRequest(
            auth_key=auth_key,
            code=code,
            new_auth_key=new_auth_key,
            new_wrapped_secret_key=new_wrapped_secret_key,
        )
        self._read(schema.Ok, "POST", "/account/passphrase", body=body)

    def replace_key(
        self,
        *,
        auth_key: bytes,
        code: str,
        new_auth_key: bytes,
        public_key: bytes,
        wrapped_secret_key: bytes,
        grants: dict[str, bytes],
    ) -> None:
        """Replace the officer's key with an X-Wing key made here, and their grants with ones
        sealed to it (one transaction on the server); other sessions of the officer end."""
        body = schema.KeyReplacementRequest(
            auth_key=auth_key,
            code=code,
            new_auth_key=new_auth_key,
            public_key=public_key,
            wrapped_secret_key=wrapped_secret_key,
            grants=[
                schema.Grant(office=office, sealed_office_key=sealed)
                for office, sealed in sorted(grants.items())
            ],
        )
        self._read(schema.Ok, "POST", "/account/key", body=body)

    def replace_totp(self, *, auth_key: bytes, secret: str, code: str) -> None:
        """Replace the TOTP secret; `code` must come from the new secret."""
        body = schema.TotpRequest(auth_key=auth_key, secret=secret, code=code)
        self._read(schema.Ok, "POST", "/account/totp", body=body)

    def notification_settings(self) -> schema.NotificationSettings:
        return self._read(schema.NotificationSettings, "GET", "/account/notifications")

    def choose_notifications(
        self, *, email: str, mode: str, openpgp_key: str = "", remove_openpgp_key: bool = False
    ) -> schema.NotificationSettings:
        """Change the officer's notification e-mails; the server checks a new OpenPGP key."""
        body = schema.NotificationSettingsRequest(
            email=email,
            mode=mode,  # type: ignore[arg-type]  # the server refuses another value
            openpgp_key=openpgp_key,
            remove_openpgp_key=remove_openpgp_key,
        )
        path = "/account/notifications"
        return self._read(schema.NotificationSettings, "POST", path, body=body)

    # -- reports

    def inbox(self, query: InboxQuery) -> InboxPage:
        return self._read(InboxPage, "GET", "/reports", params=_params(query))

    def report(self, report_id: str) -> ReportBundle:
        """The report and its sealed thread; marks it read and records the reading."""
        return self._read(ReportBundle, "GET", f"/reports/{_id(report_id)}")

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
        except CONNECTION_ERRORS:
            raise Unreachable() from None

    def add_item(self, report_id: str, kind: str, item: NewItem, acknowledge: bool = False) -> int:
        """Store a reply or note sealed on this machine; returns its number in the thread.

        `acknowledge` (a reply only): the reply also acknowledges a report not
        yet acknowledged, in the same step on the case server.
        """
        body = schema.NewItemRequest(
            item_id=item.item_id,
            size=item.size,
            key_block=item.key_block,
            body=item.body,
            kind=kind,
            acknowledge=acknowledge,
        )
        path = f"/reports/{_id(report_id)}/items"
        return self._read(schema.ItemCreated, "POST", path, body=body).seq

    def reveal(self, report_id: str, reason: NewItem) -> list[SealedItem]:
        """Post the sealed reason; get the identity items' ciphertext (recorded)."""
        body = schema.RevealRequest(reason=reason)
        path = f"/reports/{_id(report_id)}/reveal"
        return self._read(schema.Revealed, "POST", path, body=body).items

    def assign(self, report_id: str, assignee_id: int | None) -> schema.Assigned:
        body = schema.AssignRequest(assignee_id=assignee_id)
        return self._read(schema.Assigned, "POST", f"/reports/{_id(report_id)}/assign", body=body)

    def change_status(
        self, report_id: str, status: str, outcome: str | None = None
    ) -> schema.StatusChanged:
        body = schema.StatusRequest(status=status, outcome=outcome)
        path = f"/reports/{_id(report_id)}/status"
        return self._read(schema.StatusChanged, "POST", path, body=body)

    def refer(
        self, report_id: str, office: str, keep_copy: bool, key_blocks: dict[str, bytes]
    ) -> schema.Referred:
        """Hand the report over, with every item's key block re-sealed on this machine."""
        body = schema.ReferRequest(office=office, keep_copy=keep_copy, key_blocks=key_blocks)
        path = f"/reports/{_id(report_id)}/refer"
        return self._read(schema.Referred, "POST", path, body=body)

    def delete_report(self, report_id: str) -> schema.Deleted:
        return self._read(schema.Deleted, "POST", f"/reports/{_id(report_id)}/delete")

    def report_events(self, report_id: str) -> list[schema.AuditEntry]:
        """The report's audit events, oldest first (the handling office only: for an export)."""
        path = f"/reports/{_id(report_id)}/events"
        return self._read(schema.ReportEvents, "GET", path).events

    def record(self, report_id: str | None, action: str, detail: str) -> schema.Recorded:
        """Record what this machine found or did: `item.damaged` (detail: item id),
        `key.mismatch`, or `report.export` (detail: the OpenPGP fingerprint exported to).

        Without a report (a key found wrong at sign-in or at a grant), only
        `key.mismatch`.
        """
        path = f"/reports/{_id(report_id)}/events" if report_id is not None else "/events"
        body = schema.EventRequest(action=action, detail=detail)
        return self._read(schema.Recorded, "POST", path, body=body)

    # -- administration

    def officers(self) -> list[OfficerSummary]:
        return self._read(schema.Officers, "GET", "/officers").officers

    def invite(self, username: str, display_name: str, is_admin: bool, code: str) -> Invitation:
        body = schema.InviteRequest(
            username=username, display_name=display_name, is_admin=is_admin, code=code
        )
        return self._read(Invitation, "POST", "/officers", body=body)

    def reinvite(self, officer_id: int, code: str) -> Invitation:
        """A new enrolment code for an existing officer (forgotten passphrase, re-enrolment)."""
        body = schema.ConfirmRequest(code=code)
        return self._read(Invitation, "POST", f"/officers/{officer_id}/invite", body=body)

    def deactivate(self, officer_id: int, code: str) -> None:
        body = schema.ConfirmRequest(code=code)
        self._read(schema.Ok, "POST", f"/officers/{officer_id}/deactivate", body=body)

    def grant(self, officer_id: int, office: str, sealed_office_key: bytes, code: str) -> None:
        body = schema.GrantRequest(office=office, sealed_office_key=sealed_office_key, code=code)
        self._read(schema.Ok, "POST", f"/officers/{officer_id}/grants", body=body)

    def notification_failures(self) -> schema.NotificationFailures:
        return self._read(schema.NotificationFailures, "GET", "/notifications/failures")

    def audit_log(self, page: int = 1) -> AuditPage:
        params = _params(schema.AuditQuery(page=page))
        return self._read(AuditPage, "GET", "/audit", params=params)

    def verify_audit(self) -> AuditCheck:
        return self._read(AuditCheck, "POST", "/audit/verify")

    # -- statistics

    def statistics(self, query: schema.StatisticsQuery) -> schema.Statistics:
        """A period's statistics (small counts already hidden by the server); audited there."""
        return self._read(schema.Statistics, "GET", "/statistics", params=_params(query))
