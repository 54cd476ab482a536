"""One officer's whole journey through a real reviewer app, and the secrets it must keep.

Shared by the server memory test and the wire test (issue 12, "Proof"). A
fresh instance is served for real: the source interface and the case
server under gunicorn (tests/served.py), the reviewer app as its own
process (`dropbox reviewer`), talking to the case server over loopback
TCP. A source sends a report carrying unique canaries (its text, a file's
name and content, identity details); an officer then signs in to the
reviewer app over HTTP, as a browser would, with CSRF tokens from the
forms, reads the report, downloads the file, replies, writes a note,
reveals the identity with a reason and refers the report, keeping a copy.
Each step checks the page the reviewer app answered, so that a journey
that silently failed cannot pass for one that leaked nothing.

`Secrets` holds every value that must never reach the server, in each form
a careless program might send or keep it (`forms`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pyotp
from nacl.public import PrivateKey
from sqlalchemy import select

from crypto.keys import (
    KeyChain,
    XWingSecretKey,
    derive_officer_keys,
    fingerprint,
    public_key_from_bytes,
    seal_secret_key,
    unwrap_with_wrapping_key,
    wrap_parameters,
)
from dropbox import officers, offices
from dropbox.config import load
from dropbox.instance import Instance
from dropbox.models import Item, ItemKind, Officer, Report
from tests.conftest import CHEAP_COST
from tests.served import Browser, Prepared, Served, report_form
from tests.source_helpers import csrf_token

USERNAME = "memory-officer"
HANDLING = "OIO"  # the office the report goes to ("fraud"); the officer holds its key
REFER_TO = "ECO"
CATEGORY = "fraud"


MARKER = "CANARY"  # in every text secret, so that a memory search can rule chunks out fast


def _token(label: str) -> str:
    """A unique, plain-ASCII marker (stored one byte a character in any Python string)."""
    return f"{MARKER}{label}{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Canaries:
    """Plaintext that only a source and the office's officers may ever see, each unique."""

    message: str = field(default_factory=lambda: _token("MSG"))
    file_name: str = field(default_factory=lambda: _token("FNAME"))
    file_body: str = field(default_factory=lambda: _token("FILE"))
    identity_name: str = field(default_factory=lambda: _token("NAME"))
    identity_contact: str = field(default_factory=lambda: _token("CONTACT"))
    reply: str = field(default_factory=lambda: _token("REPLY"))
    note: str = field(default_factory=lambda: _token("NOTE"))
    reason: str = field(default_factory=lambda: _token("REASON"))

    @property
    def message_text(self) -> str:
        return f"The stores clerk signs for deliveries never made, see {self.message} for dates."

    @property
    def file_content(self) -> bytes:
        return f"Ledger page 4, the entries marked {self.file_body} are forged.\n".encode() * 40

    @property
    def file_title(self) -> str:
        return f"{self.file_name}.txt"

    def from_source(self) -> dict[str, str]:
        """What the source sent (the source interface receives it in plaintext, by design)."""
        return {
            "report text": self.message,
            "file name": self.file_name,
            "file content": self.file_body,
            "identity name": self.identity_name,
            "identity contact": self.identity_contact,
        }

    def from_officer(self) -> dict[str, str]:
        """What the officer wrote in the reviewer app (sealed there; no server sees it)."""
        return {"reply": self.reply, "note": self.note, "reveal reason": self.reason}

    def all(self) -> dict[str, str]:
        return {**self.from_source(), **self.from_officer()}


@dataclass
class Secrets:
    """The officer's passphrase and keys, the offices' keys, and the derived auth key."""

    passphrase: str
    totp_secret: str
    officer_key: KeyChain
    auth_key: bytes
    office_keys: dict[str, KeyChain]
    canaries: Canaries

    def needles(self, *, passphrase: bool = True) -> dict[str, bytes]:
        """Every secret by name, as raw bytes (text as UTF-8)."""
        found: dict[str, bytes] = {}
        if passphrase:
            found["passphrase"] = self.passphrase.encode()
        found.update(raw_secret_keys("officer secret key", self.officer_key))
        for code, key in self.office_keys.items():
            found.update(raw_secret_keys(f"{code} office secret key", key))
        for name, text in self.canaries.all().items():
            found[f"canary: {name}"] = text.encode()
        return found


def raw_secret_keys(name: str, key: PrivateKey | XWingSecretKey | KeyChain) -> dict[str, bytes]:
    """Each key of a chain as the memory holding it would: never the chain's encoding alone.

    `name` is the current key's own 32 bytes (an X25519 key, or an X-Wing seed); an
    X-Wing key also gives what its seed expands to (the ML-KEM-768 seed d || z and the
    X25519 secret key), and an older key of the chain is `name (older N)`.
    """
    found: dict[str, bytes] = {}
    for index, held in enumerate(KeyChain.of(key).keys):
        label = name if index == 0 else f"{name} (older {index})"
        found[label] = bytes(held)
        if isinstance(held, XWingSecretKey):
            expanded = hashlib.shake_256(bytes(held)).digest(96)
            found[f"{label} (ML-KEM seed)"] = expanded[:64]
            found[f"{label} (X-Wing's X25519 part)"] = expanded[64:]
    return found


# --- the forms a secret may take -----------------------------------------------------------


def base64_forms(data: bytes) -> list[bytes]:
    """Base64 of `data` (standard and URL-safe) at each of the three alignments it may sit at.

    Inside a longer encoded value, `data` starts at some byte offset: modulo
    3 that gives three different encodings. For each, only the characters
    that depend on `data` alone are kept, so the piece matches wherever
    `data` sits in a longer value.
    """
    forms: list[bytes] = []
    for shift in range(3):
        padded = b"\0" * shift + data
        first = -(-8 * shift // 6)  # the first character made of `data` bits only
        last = 8 * (shift + len(data)) // 6  # one past the last such character
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            piece = encode(padded)[first:last]
            if piece not in forms:
                forms.append(piece)
    return forms


def forms(data: bytes, *, text: bool) -> list[bytes]:
    """Raw, base64 (both alphabets, any alignment), hex; text also URL-encoded and UTF-16/32."""
    found = [data, *base64_forms(data), data.hex().encode(), data.hex().upper().encode()]
    if text:
        decoded = data.decode()
        found += [
            quote(decoded).encode(),
            quote_plus(decoded).encode(),
            decoded.encode("utf-16-le"),
            decoded.encode("utf-32-le"),
        ]
    unique: list[bytes] = []
    for form in found:
        if form not in unique:
            unique.append(form)
    return unique


def all_forms(needles: dict[str, bytes]) -> dict[str, list[bytes]]:
    """Each needle in every form (`forms`); keys are random bytes, everything else text."""
    return {name: forms(value, text="secret key" not in name) for name, value in needles.items()}


# --- making the instance -------------------------------------------------------------------


def open_instance(prepared: Prepared) -> Instance:
    return Instance.open(load(prepared.config))


def add_officer(prepared: Prepared, canaries: Canaries) -> Secrets:
    """An officer of the handling office, with a known passphrase, at the cheap test cost.

    The officer's secret key is unwrapped here, in the test, exactly as the
    reviewer app does at sign-in: it is the needle to look for.
    """
    passphrase = f"memory test passphrase {_token('PASS')}"
    instance = open_instance(prepared)
    try:
        with instance.sessions.begin() as db:
            officer, totp_secret = officers.add(db, USERNAME, passphrase, CHEAP_COST, "test")
            assert officer.public_key is not None and officer.wrapped_secret_key is not None
            wrapped = bytes(officer.wrapped_secret_key)
            cost, salt = wrap_parameters(wrapped, minimum=CHEAP_COST)
            derived = derive_officer_keys(passphrase, salt, cost)
            officer_key = unwrap_with_wrapping_key(wrapped, derived.wrapping_key)
            assert bytes(officer_key.public_key) == officer.public_key
            # The grant as an administrator's reviewer app makes it: the office key sealed to
            # the officer's public key there, stored as it is.
            sealed = seal_secret_key(
                prepared.office_keys[HANDLING], public_key_from_bytes(officer.public_key)
            )
            offices.store_grant(db, HANDLING, officer, sealed, "test")
    finally:
        instance.close()
    return Secrets(
        passphrase, totp_secret, officer_key, derived.auth_key, prepared.office_keys, canaries
    )


def pins(prepared: Prepared) -> dict[str, str]:
    """Every office's key fingerprint, as `office create` printed them."""
    return {code: fingerprint(key.public_key) for code, key in prepared.office_keys.items()}


def submit(source: Served, canaries: Canaries) -> None:
    """The source's report, through the served source interface, with a file and identity."""
    browser = Browser(source, identify=False)
    _, page = browser.new_codename()
    fields = {
        "category": CATEGORY,
        "message": canaries.message_text,
        "identity_name": canaries.identity_name,
        "identity_contact": canaries.identity_contact,
    }
    body, content_type = report_form(page, fields, [(canaries.file_title, canaries.file_content)])
    sent = browser.request("POST", "/report", body=body, content_type=content_type)
    assert sent.status == 302, (sent.status, sent.body[:500])
    assert sent.headers["Location"].endswith("/receipt"), sent.headers


@dataclass(frozen=True)
class Stored:
    """The ids the officer's pages link to (read from the database, as the inbox lists them)."""

    report_id: str
    file_id: str


def stored(prepared: Prepared) -> Stored:
    instance = open_instance(prepared)
    try:
        with instance.sessions() as db:
            report_id = db.execute(select(Report.id)).scalar_one()
            file_id = db.execute(
                select(Item.id).where(Item.report_id == report_id, Item.kind == ItemKind.FILE)
            ).scalar_one()
    finally:
        instance.close()
    return Stored(report_id, file_id)


def officer_id(prepared: Prepared) -> int:
    instance = open_instance(prepared)
    try:
        with instance.sessions() as db:
            return db.execute(select(Officer.id).where(Officer.username == USERNAME)).scalar_one()
    finally:
        instance.close()


# --- the journey ----------------------------------------------------------------------------


def _form(client: httpx.Client, page_path: str, path: str, data: dict[str, str]) -> httpx.Response:
    """POST a form of `page_path` with that page's CSRF token, as a browser would."""
    page = client.get(page_path)
    assert page.status_code == 200, (page_path, page.status_code, page.text[:500])
    return client.post(path, data={"csrf_token": csrf_token(page.text), **data})


def _page(client: httpx.Client, response: httpx.Response) -> str:
    """The page a form's answer shows: the redirect's target, or the answer itself."""
    if response.is_redirect:
        location = response.headers["Location"]
        followed = client.get(location)
        assert followed.status_code == 200, (location, followed.status_code, followed.text[:500])
        return followed.text
    assert response.status_code == 200, (response.status_code, response.text[:500])
    return response.text


_TAGS = re.compile(r"<[^>]+>")


def _shown(page: str) -> str:
    return html.unescape(_TAGS.sub(" ", page))


def journey(base_url: str, secret: Secrets, ids: Stored) -> httpx.Client:
    """Sign in, read, download, reply, note, reveal, refer (keeping a copy), download again.

    Returns the signed-in client, still open: the reviewer app keeps the
    officer's keys until sign-out, which is what the memory test wants to
    find there. The caller closes it.
    """
    canaries = secret.canaries
    client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=60)
    report = f"/reports/{ids.report_id}"

    signed_in = _form(
        client,
        "/login",
        "/login",
        {
            "username": USERNAME,
            "passphrase": secret.passphrase,
            "code": pyotp.TOTP(secret.totp_secret).now(),
        },
    )
    assert signed_in.status_code in (302, 303), (signed_in.status_code, signed_in.text[:1000])

    page = client.get(report)
    assert page.status_code == 200, (page.status_code, page.text[:1000])
    shown = _shown(page.text)
    assert canaries.message in shown, "the report page does not show the decrypted report"
    assert canaries.file_name in shown, "the report page does not show the file's name"
    assert canaries.identity_name not in shown, "the identity is shown before any reveal"

    download = client.get(f"{report}/files/{ids.file_id}")
    assert download.status_code == 200, (download.status_code, download.text[:500])
    assert download.content == canaries.file_content

    replied = _page(client, _form(client, report, f"{report}/reply", {"message": canaries.reply}))
    assert canaries.reply in _shown(replied), "the reply is not in the thread"

    noted = _page(client, _form(client, report, f"{report}/notes", {"text": canaries.note}))
    assert canaries.note in _shown(noted), "the note is not in the thread"

    revealed = _page(
        client, _form(client, report, f"{report}/identity", {"reason": canaries.reason})
    )
    shown = _shown(revealed)
    assert canaries.identity_name in shown and canaries.identity_contact in shown, (
        "the identity was not revealed"
    )

    referred = _form(client, report, f"{report}/refer", {"office": REFER_TO, "keep_copy": "yes"})
    assert referred.is_redirect, (referred.status_code, referred.text[:1000])
    after = client.get(report)  # through the kept copy
    assert after.status_code == 200, (after.status_code, after.text[:500])
    assert canaries.message in _shown(after.text), "the kept copy cannot be read"
    # The file once more, through the kept copy: the last thing the app decrypted.
    again = client.get(f"{report}/files/{ids.file_id}")
    assert again.status_code == 200, (again.status_code, again.text[:500])
    assert again.content == canaries.file_content
    return client


def log_tail(path: Path, lines: int = 60) -> str:
    """The end of a process's log, for an assertion message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
