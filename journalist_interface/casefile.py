"""The reviewer app's cryptography: keys, threads, replies, referral and grants, in memory.

Pure functions: no Flask, no database, no disk. The case server hands over
ciphertext and public keys (the definitions of `dropbox.api_schema`, read by
`journalist_interface.client`); everything here runs on the officer's own
machine and keeps what it decrypts in memory.

A server that cannot read anything can still try to hand out public keys of
its own, so nothing is sealed to a key before it is checked (issue 12,
point 5): an office's key against the office secret key the officer holds
and the fingerprint pinned in the app's settings (`trusted_office_key`); a
new officer's key against the fingerprint they read out (`seal_grant`); the
source's key against the copy bound in the report's first item
(`open_thread`, `reply_recipients`). A mismatch raises `KeyMismatch` before
anything is sealed: its `message` is for the officer, its `detail` for the
`key.mismatch` audit event the caller posts.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import BinaryIO

from crypto import envelope, recovery
from crypto.errors import DecryptionError
from crypto.kdf import SALT_BYTES, KdfCost
from crypto.keys import (
    KeyChain,
    Recipient,
    derive_officer_keys,
    fingerprint,
    generate_hybrid_key,
    is_hybrid,
    open_sealed_secret_key,
    public_key_from_bytes,
    seal_secret_key,
    unwrap_with_wrapping_key,
    wrap_parameters,
    wrap_with_wrapping_key,
)
from dropbox.api_schema import Me, NewItem, OfficerSummary, ReportBundle, SealedItem
from dropbox.config import fingerprint_digest
from dropbox.items import (
    SourceKeyCheck,
    check_kind,
    item_context,
    message_document,
    message_type,
    new_id,
    read_bound_source_key,
    read_message_document,
)
from dropbox.models import SOURCE_KINDS, ItemKind
from dropbox.offices import MALFORMED_FINGERPRINT, OFFICER_KEY_WARNING

# --- errors ------------------------------------------------------------------------------


class KeyMismatch(Exception):
    """A public key the server handed out is not one this app can vouch for: nothing was sealed.

    `message` is for the officer; `detail` is for the `key.mismatch` audit
    event (which key, against what; never any content).
    """

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class SourceKeyMismatch(KeyMismatch):
    """The source's key on the server cannot be trusted: nothing was sealed to it."""


class NotAFingerprint(KeyMismatch):
    """The text typed as a read-out fingerprint is no fingerprint at all (a typing slip).

    A KeyMismatch, so that one handler shows it; nothing was sealed. It is no
    sign of a swapped key: a caller may skip the audit event for it.
    """


class UnsafeHeader(DecryptionError):
    """The server's wrap header is damaged or asks for a cost below this app's minimum.

    An auth key derived at a trivial cost would let the server guess the
    passphrase cheaply, so nothing is derived.
    """

    def __init__(self) -> None:
        super().__init__(
            "The case server sent sign-in parameters that are damaged or weaker than this"
            " app's minimum: nothing was derived from your passphrase."
        )
        self.message = str(self.args[0])


class RecoveryError(Exception):
    """A recovery file that cannot be used (not one, another office's, wrong passphrase)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# What an officer reads when a reply is refused, by what the first item said.
KEY_REFUSALS: dict[str, str] = {
    SourceKeyCheck.DIFFERS: (
        "The reply was not sent: the source's key on the server does not match the one"
        " the source sent with the report. An administrator should check the server."
    ),
    SourceKeyCheck.UNREADABLE: (
        "The reply was not sent: the source's key cannot be checked, because the report's"
        " first message is missing or damaged. An administrator should check the server."
    ),
}
# The audit event's detail: which key, and why; never any content.
KEY_EVENTS: dict[str, str] = {
    SourceKeyCheck.DIFFERS: "source key: differs from the copy sealed in the source's messages",
    SourceKeyCheck.UNREADABLE: "source key: the report's first item is missing or damaged",
}

MESSAGE_KINDS = frozenset(
    {ItemKind.MESSAGE, ItemKind.ACKNOWLEDGEMENT, ItemKind.REPLY, ItemKind.NOTE, ItemKind.REVEAL}
)
# Kinds an officer seals in the reviewer app.
OFFICER_KINDS = frozenset({ItemKind.REPLY, ItemKind.NOTE, ItemKind.REVEAL})


# --- keys held in memory --------------------------------------------------------------------


@dataclass
class Keyring:
    """The signed-in officer's secret key and the office keys it opens; shown without keys."""

    officer_key: KeyChain = field(repr=False)
    office_keys: dict[str, KeyChain] = field(repr=False)
    # Offices whose grant did not open with the officer's key (ask for a new grant).
    unopened: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Keyring(offices={sorted(self.office_keys)!r}, unopened={self.unopened!r})"


@dataclass(frozen=True)
class Credentials:
    """A new officer's key material, made on their own machine at enrolment."""

    auth_key: bytes = field(repr=False)
    public_key: bytes
    wrapped_secret_key: bytes = field(repr=False)
    secret_key: KeyChain = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """The fingerprint the officer reads out to the administrator who grants them an office."""
        return fingerprint(public_key_from_bytes(self.public_key))


def _compact(text: str) -> str:
    """A fingerprint as compared: no spaces, upper case (people copy them by hand)."""
    return "".join(text.split()).upper()


def _same_fingerprint(public_key: bytes, text: str) -> bool:
    """Whether `text` is the fingerprint of `public_key` (X25519 or X-Wing; never of the other)."""
    try:
        key = public_key_from_bytes(public_key)
    except ValueError:
        return False
    shown = _compact(fingerprint(key)).encode("utf-8")
    return hmac.compare_digest(shown, _compact(text).encode("utf-8"))


def _is_fingerprint(text: str) -> bool:
    return fingerprint_digest(text) is not None


def derive_auth(passphrase: str, header: bytes, minimum: KdfCost) -> tuple[bytes, bytes]:
    """(auth key, wrapping key) from the passphrase and the officer's wrap header.

    The header's cost is checked before anything is derived: UnsafeHeader if
    it is damaged or below `minimum`.
    """
    try:
        cost, salt = wrap_parameters(header, minimum=minimum)
    except DecryptionError:
        raise UnsafeHeader() from None
    derived = derive_officer_keys(passphrase, salt, cost)
    return derived.auth_key, derived.wrapping_key


def _office_info_key(me: Me, code: str) -> bytes | None:
    for office in me.offices:
        if office.code == code:
            return office.public_key
    return None


def open_keyring(me: Me, wrapping_key: bytes) -> Keyring:
    """Unwrap the officer's secret key and open every office key granted to it.

    KeyMismatch if the wrapped key does not open or is not the key of
    `me.public_key` (the server handed out another wrap or another public
    key), or if an office key opened is not the key the server lists for that
    office. A grant that does not open with the officer's key is left out
    (`Keyring.unopened`): the officer can still work with the other offices.
    """
    try:
        officer_key = unwrap_with_wrapping_key(me.wrapped_secret_key, wrapping_key)
    except DecryptionError:
        raise KeyMismatch(
            "Your key on the case server does not open with your passphrase."
            " An administrator should check the server.",
            f"officer key: the wrapped key of {me.username} does not open",
        ) from None
    return _open_grants(me, officer_key)


def _open_grants(me: Me, officer_key: KeyChain) -> Keyring:
    """The keyring of `officer_key`, once it is the key the server lists for the officer.

    KeyMismatch if it is not, or if an office key opened is not the key the
    server lists for that office; a grant that does not open is left out.
    """
    if not hmac.compare_digest(bytes(officer_key.public_key), bytes(me.public_key)):
        raise KeyMismatch(
            "The public key the case server holds for you is not your key."
            " An administrator should check the server.",
            f"officer key: {me.username} differs from the key their passphrase opens",
        )
    office_keys: dict[str, KeyChain] = {}
    unopened: list[str] = []
    for grant in me.grants:
        try:
            office_key = open_sealed_secret_key(grant.sealed_office_key, officer_key)
        except DecryptionError:
            unopened.append(grant.office)
            continue
        listed = _office_info_key(me, grant.office)
        if listed is None or not hmac.compare_digest(bytes(office_key.public_key), listed):
            raise _office_mismatch(grant.office, "the office key you hold")
        office_keys[grant.office] = office_key
    return Keyring(officer_key, office_keys, unopened)


def unlock(me: Me, passphrase: str, header: bytes, minimum: KdfCost) -> tuple[bytes, Keyring]:
    """Derive from the passphrase and open the keyring: (auth key, keyring)."""
    auth_key, wrapping_key = derive_auth(passphrase, header, minimum)
    return auth_key, open_keyring(me, wrapping_key)


def _wrap(secret_key: KeyChain, passphrase: str, cost: KdfCost) -> tuple[bytes, bytes]:
    """(auth key, wrapped secret key) under a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    derived = derive_officer_keys(passphrase, salt, cost)
    return derived.auth_key, wrap_with_wrapping_key(secret_key, derived.wrapping_key, salt, cost)


def new_credentials(passphrase: str, cost: KdfCost) -> Credentials:
    """A new key (X-Wing), wrapped under the passphrase, and the auth key the server will check."""
    secret_key = generate_hybrid_key()
    auth_key, wrapped = _wrap(secret_key, passphrase, cost)
    return Credentials(auth_key, bytes(secret_key.public_key), wrapped, secret_key)


def rewrap(secret_key: KeyChain, new_passphrase: str, cost: KdfCost) -> tuple[bytes, bytes]:
    """The same key wrapped under a new passphrase (and a new salt): (new auth key, new wrap)."""
    return _wrap(secret_key, new_passphrase, cost)


# --- an officer enrolled before X-Wing gets an X-Wing key --------------------------------------


class KeyReplacementRefused(Exception):
    """The officer's key cannot be replaced now; `message` says why, and nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class NewOfficerKey:
    """An officer's new X-Wing key, wrapped, and each office they hold sealed to it."""

    secret_key: KeyChain = field(repr=False)
    auth_key: bytes = field(repr=False)
    wrapped_secret_key: bytes = field(repr=False)
    grants: dict[str, bytes] = field(repr=False)  # office code -> office key sealed to the new key

    @property
    def public_key(self) -> bytes:
        return bytes(self.secret_key.public_key)

    @property
    def fingerprint(self) -> str:
        """What the officer reads out from now on."""
        return fingerprint(self.secret_key.public_key)


def new_officer_key(
    me: Me, keyring: Keyring, passphrase: str, cost: KdfCost, pins: dict[str, str]
) -> NewOfficerKey:
    """Make the signed-in officer an X-Wing key here, and seal every office they hold to it.

    For an officer enrolled before X-Wing, whose key is X25519: every grant
    to it is sealed with X25519 alone. The new key is made here and wrapped
    under the passphrase (already checked by the caller) as at enrolment; the
    office keys are opened again from the officer's own grants, as the
    server lists them now, and each must be the key the server lists for its
    office *and* match its pinned fingerprint (`trusted_office_key`) before it
    is sealed to the new key. Nothing is ever sealed to a key the server
    sends: only to the key made here, so no fingerprint needs reading out.
    KeyReplacementRefused if the key is X-Wing already or a grant does not
    open; KeyMismatch if the server's keys differ (the caller records it).
    """
    officer_key = keyring.officer_key
    if is_hybrid(officer_key):
        raise KeyReplacementRefused("Your key is already an X-Wing key: nothing was changed.")
    current = _open_grants(me, officer_key)
    if current.unopened:
        raise KeyReplacementRefused(
            f"Your key for office {current.unopened[0]} does not open, so it cannot be moved to"
            " a new key. Ask an administrator to grant you that office again, then try again."
            " Nothing was changed."
        )
    for code in current.office_keys:
        trusted_office_key(code, me, current, pins)
    secret_key = generate_hybrid_key()
    auth_key, wrapped = _wrap(secret_key, passphrase, cost)
    grants = {
        code: seal_secret_key(office_key, secret_key.public_key)
        for code, office_key in current.office_keys.items()
    }
    return NewOfficerKey(secret_key, auth_key, wrapped, grants)


def keyring_after_replacement(me: Me, new: NewOfficerKey) -> Keyring:
    """The keyring of the new key, from the officer as the server lists them after the change.

    KeyMismatch if the server does not list the new key or an office key that
    opens differs from the listed one; a grant that does not open is left out.
    """
    return _open_grants(me, new.secret_key)


# --- checking public keys before sealing -----------------------------------------------------


def _office_mismatch(code: str, against: str) -> KeyMismatch:
    return KeyMismatch(
        f"Nothing was sent: the key of office {code} on the server does not match {against}."
        " An administrator should check the server.",
        f"office key: {code} differs from {against}",
    )


def trusted_office_key(code: str, me: Me, keyring: Keyring, pins: dict[str, str]) -> Recipient:
    """An office's public key as the server lists it, once it is checked: the only key to seal to.

    It must equal the public half of the office's secret key if the keyring
    holds it, and match the fingerprint pinned for the office in the app's
    settings if there is one (both are checked when both are there: a held
    key comes from a grant the server stores, and the server can seal a key
    of its own to the officer). With neither, nothing vouches for the key:
    KeyMismatch, as for a key that differs.
    """
    listed = _office_info_key(me, code)
    try:
        listed_key = public_key_from_bytes(listed or b"")
    except ValueError:
        raise _office_mismatch(code, "any key (it is missing or damaged)") from None
    assert listed is not None  # noqa: S101 - a key was read from it
    held = keyring.office_keys.get(code)
    pin = pins.get(code, "").strip()
    if held is None and not pin:
        raise KeyMismatch(
            f"Nothing was sent: there is no pinned fingerprint for office {code}; add it to"
            " the reviewer app's settings (--pin CODE=FINGERPRINT, as `office create` printed).",
            f"office key: {code} has no pinned fingerprint",
        )
    if held is not None and not hmac.compare_digest(bytes(held.public_key), listed):
        raise _office_mismatch(code, "the office key you hold")
    if pin and not _same_fingerprint(listed, pin):
        raise _office_mismatch(code, "the fingerprint pinned in the reviewer app's settings")
    return listed_key


# --- reading a thread --------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadEntry:
    """One item of the thread as an officer sees it."""

    id: str
    seq: int
    kind: str  # an ItemKind, unless the server says otherwise (and the item is then damaged)
    from_source: bool
    created_at: datetime | None
    size: int
    author: str | None = None
    text: str | None = None
    details: dict[str, str] | None = None
    file_name: str | None = None
    content_type: str | None = None
    damaged: bool = False
    # Added after the reader's office referred the report and kept a copy:
    # sealed to the offices handling it since, not to the reader's.
    not_shared: bool = False
    deleted_by_source: bool = False
    unread: bool = False


@dataclass(frozen=True)
class Thread:
    """A report's thread opened in memory: its entries, the damaged items, the source key check."""

    entries: list[ThreadEntry]
    damaged: list[str]  # item ids, for `item.damaged` events
    source_key: str  # a SourceKeyCheck: "matches", "not bound", "differs" or "unreadable"


def _reading_key(bundle: ReportBundle, keyring: Keyring) -> KeyChain:
    key = keyring.office_keys.get(bundle.reading_office)
    if key is None:
        raise KeyMismatch(
            f"You hold no key for office {bundle.reading_office} that opens:"
            " ask an administrator for a new grant.",
            f"office key: no key held for {bundle.reading_office}",
        )
    return key


def _handling_key(bundle: ReportBundle, keyring: Keyring) -> KeyChain:
    key = keyring.office_keys.get(bundle.office)
    if key is None or bundle.reading_office != bundle.office:
        raise KeyMismatch(
            f"Only the office handling this report ({bundle.office}) can do that, with its key.",
            f"office key: no key held for {bundle.office}",
        )
    return key


@dataclass(frozen=True)
class _Sharing:
    """Which items an office reading through a kept copy was never given.

    An office that referred a report and kept a copy was given every item up
    to the referral (`bundle.shared_up_to`); what the handling office adds
    later is sealed to that office alone and has no entry for the copy's
    office: "not shared", not damaged. An entry that is there and fails to
    open, an item up to the referral, or any failure for the handling office
    itself is damage.
    """

    # The recipient ids of the copy's keys (its current and older ones); None for the
    # handling office.
    reader: frozenset[bytes] | None = None
    shared_up_to: int | None = None

    @classmethod
    def of(cls, bundle: ReportBundle, office_key: KeyChain) -> _Sharing:
        if bundle.reading_office == bundle.office:
            return cls()
        keys = KeyChain.of(office_key).keys
        ids = frozenset(envelope.recipient_id(key.public_key) for key in keys)
        return cls(ids, bundle.shared_up_to)

    def withheld(self, item: SealedItem) -> bool:
        """True if the item was added after the referral and not sealed to the reader."""
        if self.reader is None:
            return False
        if self.shared_up_to is not None and item.seq <= self.shared_up_to:
            return False
        try:
            return self.reader.isdisjoint(envelope.recipient_ids(item.key_block))
        except DecryptionError:
            return False  # a key block that does not parse is damaged, whoever reads it


def _context(report_id: str, item: SealedItem) -> bytes:
    return item_context(report_id, item.id)


def open_head(report_id: str, item: SealedItem, office_key: KeyChain) -> envelope.Contents:
    """A file's or identity item's name, type and size, checked from its head (or whole body)."""
    head = item.head if item.head is not None else item.body
    if head is None or item.kind not in (ItemKind.FILE, ItemKind.IDENTITY):
        raise DecryptionError()
    contents = envelope.read_head(
        item.key_block, head, item.body_length, office_key, _context(report_id, item)
    )
    check_kind(contents, item.kind)
    return contents


def open_message(report_id: str, item: SealedItem, office_key: KeyChain) -> bytes:
    """Decrypt a message kind's (or a revealed identity item's) document in memory."""
    if item.body is None or item.kind not in MESSAGE_KINDS | {ItemKind.IDENTITY}:
        raise DecryptionError()
    contents, data = envelope.decrypt_bytes(
        item.key_block, item.body, office_key, _context(report_id, item)
    )
    check_kind(contents, item.kind)
    return data


def source_key_check(
    items: list[SealedItem], opened: dict[str, bytes], source_public_key: bytes
) -> str:
    """Compare the server's source key with the copies bound in the source's messages.

    `opened` holds the decrypted documents of the items that opened. The
    report's first item (the lowest number) must be the source's message,
    and open: items deleted or renumbered, or damage there, leave nothing
    that vouches for the key. Every later message from the source that opens
    binds a copy too, so that moving the first message behind an answer does
    not pass a newer report off as one made before keys were bound.
    """
    if not items:
        return SourceKeyCheck.UNREADABLE
    first_seq = min(i.seq for i in items)
    bound: list[bytes] = []
    first_opened = False  # stays False if the first item is not the source's message
    for item in sorted(items, key=lambda i: i.seq):
        if item.kind != ItemKind.MESSAGE:
            continue
        data = opened.get(item.id)
        try:
            if data is None:
                raise DecryptionError()
            key = read_bound_source_key(data)
        except DecryptionError:
            if item.seq == first_seq:
                return SourceKeyCheck.UNREADABLE
            continue  # a damaged answer vouches for nothing; the thread reports it
        first_opened = first_opened or item.seq == first_seq
        if key is not None:
            bound.append(key)
    if not first_opened:
        return SourceKeyCheck.UNREADABLE
    row_key = bytes(source_public_key)
    # Constant time: the key is not secret, but nothing should hint how much of it matched.
    if not all([hmac.compare_digest(key, row_key) for key in bound]):
        return SourceKeyCheck.DIFFERS
    return SourceKeyCheck.MATCHES if bound else SourceKeyCheck.NOT_BOUND


def open_thread(bundle: ReportBundle, keyring: Keyring) -> Thread:
    """The whole thread, decrypted in memory with the key of the office the officer reads through.

    Identity details are not decrypted here (see `open_identity`); files and
    identity items are checked from their head. An item that does not open,
    is of no known kind, or whose sealed type does not fit its kind is
    damaged (listed in `Thread.damaged`, for the caller to record); the rest
    of the thread still works. An item added after the reader's office
    referred the report (keeping a copy) is not shared with it, and no damage.
    """
    office_key = _reading_key(bundle, keyring)
    sharing = _Sharing.of(bundle, office_key)
    items = sorted(bundle.items, key=lambda i: i.seq)
    entries: list[ThreadEntry] = []
    damaged: list[str] = []
    opened: dict[str, bytes] = {}
    for item in items:
        base = ThreadEntry(
            id=item.id,
            seq=item.seq,
            kind=item.kind,
            from_source=item.kind in SOURCE_KINDS,
            created_at=item.created_at,
            size=item.size,
            author=item.author,
            deleted_by_source=item.deleted_by_source,
            unread=item.unread,
        )
        try:
            if item.kind not in set(ItemKind):
                raise DecryptionError()  # nothing says how to open an item of no known kind
            if item.kind in (ItemKind.FILE, ItemKind.IDENTITY):
                # Key, length, header and context checked; the content is not decrypted.
                contents = open_head(bundle.id, item, office_key)
                if item.kind == ItemKind.FILE:
                    base = replace(
                        base, file_name=contents.name, content_type=contents.content_type
                    )
                entries.append(replace(base, size=contents.size))
            else:
                data = open_message(bundle.id, item, office_key)
                text, details = read_message_document(data)
                opened[item.id] = data
                entries.append(replace(base, size=len(data), text=text, details=details))
        except DecryptionError:
            if sharing.withheld(item):
                entries.append(replace(base, not_shared=True))
            else:
                entries.append(replace(base, damaged=True))
                damaged.append(item.id)
    check = source_key_check(items, opened, bundle.source_public_key)
    return Thread(entries, damaged, str(check))


def open_identity(
    items: list[SealedItem], bundle: ReportBundle, keyring: Keyring
) -> tuple[dict[str, str], list[str]]:
    """The source's identity details from the items `client.reveal` returned: (details, damaged).

    Items the server calls identity items are opened; one that does not open
    or whose sealed type is not an identity document is damaged (unless it
    was never shared with the reader's kept copy). Empty details and no
    damage: nothing to show.
    """
    office_key = _reading_key(bundle, keyring)
    sharing = _Sharing.of(bundle, office_key)
    details: dict[str, str] = {}
    damaged: list[str] = []
    for item in sorted(items, key=lambda i: i.seq):
        if item.kind != ItemKind.IDENTITY:
            continue
        try:
            details.update(read_message_document(open_message(bundle.id, item, office_key))[1])
        except DecryptionError:
            if not sharing.withheld(item):
                damaged.append(item.id)
    return details, damaged


# --- sealing -----------------------------------------------------------------------------------


def seal_text(report_id: str, text: str, kind: str, recipients: list[Recipient]) -> NewItem:
    """Seal an officer's text (a reply, a note, a reveal reason) as a new item of the report."""
    if kind not in OFFICER_KINDS:
        raise ValueError(f"an officer does not write items of kind {kind!r}")
    if not recipients:
        raise ValueError("an item needs at least one recipient")
    item_id = new_id()
    data = message_document(text)
    key_block, body = envelope.encrypt_bytes(
        data,
        recipients,
        item_context(report_id, item_id),
        content_type=message_type(ItemKind(kind)),
    )
    return NewItem(item_id=item_id, size=len(data), key_block=key_block, body=body)


def reply_recipients(
    bundle: ReportBundle, thread: Thread, keyring: Keyring, me: Me, pins: dict[str, str]
) -> list[Recipient]:
    """Who a reply is sealed to, checked: [the handling office's key, the source's key].

    SourceKeyMismatch if the source's key differs from the copy bound in the
    report's first item or cannot be checked (a report made before keys were
    bound, "not bound", is allowed); KeyMismatch if the office's key does not
    match the key the officer holds (and its pin).
    """
    refused = KEY_REFUSALS.get(thread.source_key)
    if refused is not None:
        raise SourceKeyMismatch(refused, KEY_EVENTS[thread.source_key])
    if thread.source_key not in (SourceKeyCheck.MATCHES, SourceKeyCheck.NOT_BOUND):
        raise SourceKeyMismatch(
            KEY_REFUSALS[SourceKeyCheck.UNREADABLE], KEY_EVENTS[SourceKeyCheck.UNREADABLE]
        )
    try:
        # X-Wing for a report made since sources got hybrid keys, X25519 before;
        # either way the very key the source's messages bind (checked above).
        source = public_key_from_bytes(bundle.source_public_key)
    except ValueError:
        raise SourceKeyMismatch(
            KEY_REFUSALS[SourceKeyCheck.DIFFERS], KEY_EVENTS[SourceKeyCheck.DIFFERS]
        ) from None
    _handling_key(bundle, keyring)
    office = trusted_office_key(bundle.office, me, keyring, pins)
    return [office, source]


def office_recipients(
    bundle: ReportBundle, keyring: Keyring, me: Me, pins: dict[str, str]
) -> list[Recipient]:
    """Who a note or a reveal reason is sealed to, checked: the handling office's key, and the
    reader's own office's key if they read through a kept copy."""
    recipients = [trusted_office_key(bundle.office, me, keyring, pins)]
    if bundle.reading_office != bundle.office:
        recipients.append(trusted_office_key(bundle.reading_office, me, keyring, pins))
    return recipients


def referral_key_blocks(
    bundle: ReportBundle,
    keyring: Keyring,
    to_key: Recipient,
    keep_copy: bool,
    me: Me,
    pins: dict[str, str],
) -> tuple[dict[str, bytes], list[str]]:
    """Every item's key block re-sealed for a referral: (new key blocks by item id, damaged ids).

    The new office is given each item's key (with the handling office's
    key); unless the referring office keeps a copy, its own entry is then
    removed. Both keys are checked first: `to_key` must be the key the server
    lists for an office and pass `trusted_office_key` (pinned), the referring
    office's against the key held. An item whose key block does not open is
    damaged and keeps its key block as it is, so the server still gets one
    for every item.
    """
    office_key = _handling_key(bundle, keyring)
    from_key = trusted_office_key(bundle.office, me, keyring, pins)
    to_code = next(
        (
            o.code
            for o in me.offices
            if o.code != bundle.office and hmac.compare_digest(o.public_key, bytes(to_key))
        ),
        None,
    )
    if to_code is None:
        raise KeyMismatch(
            "Nothing was sent: the key to refer the report to is not the key of another office"
            " on the server. An administrator should check the server.",
            "office key: the referral key is no other office's key",
        )
    to_key = trusted_office_key(to_code, me, keyring, pins)
    blocks: dict[str, bytes] = {}
    damaged: list[str] = []
    for item in bundle.items:
        try:
            key_block = envelope.add_recipient(item.key_block, office_key, to_key)
            if not keep_copy:
                key_block = envelope.remove_recipient(key_block, from_key)
                # and any entry for an older key of the office (before it was re-sealed)
                for older in KeyChain.of(office_key).previous:
                    key_block = envelope.remove_recipient(key_block, older.public_key)
        except (DecryptionError, ValueError):
            damaged.append(item.id)
            key_block = item.key_block
        blocks[item.id] = key_block
    return blocks, damaged


# --- files -------------------------------------------------------------------------------------


def decrypt_file(
    key_block: bytes, body: BinaryIO, office_key: KeyChain, report_id: str, item_id: str
) -> tuple[envelope.Contents, Iterator[bytes]]:
    """Open a downloaded file item: (contents, its plaintext in authenticated chunks).

    `body` is the seekable ciphertext (the app spools the download to a
    temporary file: ciphertext only). A response cannot take back what it
    has sent, so the whole file is authenticated in a first pass, keeping
    nothing, before the second pass yields the first chunk: damage anywhere
    raises DecryptionError here, not halfway through the download. The sealed
    name and type must be a file's.
    """
    ctx = item_context(report_id, item_id)

    def reader() -> envelope.EnvelopeReader:
        body.seek(0)
        opened = envelope.EnvelopeReader(key_block, body, office_key, ctx)
        check_kind(opened.contents, ItemKind.FILE)
        return opened

    try:
        first = reader()
        for _ in first.chunks():
            pass
        second = reader()
    except (OSError, ValueError) as exc:
        raise DecryptionError() from exc
    if second.contents != first.contents:
        raise DecryptionError()

    def chunks() -> Iterator[bytes]:
        try:
            yield from second.chunks()
        except (OSError, ValueError) as exc:
            raise DecryptionError() from exc

    return first.contents, chunks()


# --- administration ----------------------------------------------------------------------------


def seal_grant(office_key: KeyChain, officer: OfficerSummary, read_out: str) -> bytes:
    """The office key sealed to a new officer, once their key matches the fingerprint read out.

    Whoever controls the server could list a key of their own for the officer
    and receive the office key. The officer reads the fingerprint of the key
    they hold from their own reviewer app; it must match the key the server
    lists (compared in constant time). NotAFingerprint if the text is no
    fingerprint, KeyMismatch if it differs: nothing sealed either way.
    """
    if not _is_fingerprint(read_out):
        raise NotAFingerprint(
            MALFORMED_FINGERPRINT,
            f"officer key: the fingerprint typed for {officer.username} is malformed",
        )
    if officer.public_key is None or not _same_fingerprint(officer.public_key, read_out):
        raise KeyMismatch(
            OFFICER_KEY_WARNING.format(username=officer.username),
            f"officer key: {officer.username} differs from the fingerprint they read out",
        )
    return seal_secret_key(office_key, public_key_from_bytes(officer.public_key))


def open_recovery(
    data: bytes, passphrase: str, code: str, me: Me, pins: dict[str, str]
) -> KeyChain:
    """An office's secret key from its recovery file, checked against the server and the pin.

    RecoveryError if the file is not a recovery file, is another office's, or
    the passphrase is not right; KeyMismatch if the key the server lists for
    the office (or the pin in the settings) is not the file's key.
    """
    try:
        parsed = recovery.load(data)
    except recovery.RecoveryFileError as exc:
        raise RecoveryError(str(exc)) from None
    if parsed.office != code:
        raise RecoveryError(f"this recovery file is office {parsed.office}'s, not {code}'s")
    listed = _office_info_key(me, code)
    if listed is None or not hmac.compare_digest(listed, bytes(parsed.public_key)):
        raise _office_mismatch(code, "the office key in the recovery file")
    pin = pins.get(code, "").strip()
    if pin and not _same_fingerprint(bytes(parsed.public_key), pin):
        raise _office_mismatch(code, "the fingerprint pinned in the reviewer app's settings")
    try:
        return recovery.open_secret_key(parsed, passphrase)
    except DecryptionError:
        raise RecoveryError("the recovery passphrase is not right for this file") from None


__all__ = [
    "KEY_EVENTS",
    "KEY_REFUSALS",
    "Credentials",
    "KeyMismatch",
    "KeyReplacementRefused",
    "Keyring",
    "NewOfficerKey",
    "NotAFingerprint",
    "RecoveryError",
    "SourceKeyMismatch",
    "Thread",
    "ThreadEntry",
    "UnsafeHeader",
    "check_kind",
    "decrypt_file",
    "derive_auth",
    "keyring_after_replacement",
    "new_credentials",
    "new_officer_key",
    "office_recipients",
    "open_head",
    "open_identity",
    "open_keyring",
    "open_message",
    "open_recovery",
    "open_thread",
    "referral_key_blocks",
    "reply_recipients",
    "rewrap",
    "seal_grant",
    "seal_text",
    "source_key_check",
    "trusted_office_key",
    "unlock",
]
