"""Specification of the reviewer app's cryptography (journalist_interface/casefile.py).

Real envelopes throughout, made as the source interface and the case server
make them (`message_document`, `message_type`, `item_context`), and the API's
own definitions (`ReportBundle`, `SealedItem`, `Me` of dropbox/api_schema.py) built by hand:
no database, no server, no mocks. Each substitution of issue 12 point 5 is
tested: a key the server hands out that nothing vouches for stops the action
with KeyMismatch before anything is sealed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import pytest
from nacl.public import PrivateKey

from crypto import codenames, envelope, recovery
from crypto.envelope import HEAD_BYTES, decrypt_bytes
from crypto.errors import DecryptionError
from crypto.kdf import PRODUCTION_COST
from crypto.keys import (
    WRAP_HEADER_BYTES,
    KeyChain,
    Recipient,
    XWingSecretKey,
    fingerprint,
    generate_keypair,
    open_sealed_secret_key,
    seal_secret_key,
)
from dropbox.api_schema import Grant, Me, OfficeInfo, OfficerSummary, ReportBundle, SealedItem
from dropbox.items import item_context, message_document, message_type, new_id
from dropbox.models import ItemKind
from journalist_interface import casefile
from journalist_interface.casefile import (
    KEY_EVENTS,
    KEY_REFUSALS,
    KeyMismatch,
    Keyring,
    NotAFingerprint,
    RecoveryError,
    SourceKeyMismatch,
    UnsafeHeader,
)
from tests.conftest import CHEAP_COST

PASSPHRASE = "correct horse battery staple"


# --- a world built by hand -----------------------------------------------------------------------


@dataclass
class World:
    """Two offices, an officer of OIO, and a source.

    The source's keys are derived from a codename as the source interface
    derives them: `source`, the X-Wing key of every new report, and
    `classical_source`, the X25519 key of reports made before.
    """

    oio: PrivateKey = field(default_factory=generate_keypair)
    eco: PrivateKey = field(default_factory=generate_keypair)
    derived: codenames.SourceSecrets = field(
        default_factory=lambda: codenames.derive(codenames.generate(), bytes(16), CHEAP_COST)
    )
    credentials: casefile.Credentials = field(
        default_factory=lambda: casefile.new_credentials(PASSPHRASE, CHEAP_COST)
    )

    @property
    def source(self) -> XWingSecretKey:
        return self.derived.hybrid_key

    @property
    def classical_source(self) -> PrivateKey:
        return self.derived.secret_key

    @property
    def officer_key(self) -> PrivateKey:
        return self.credentials.secret_key

    def me(self, *codes: str) -> Me:
        keys = {"OIO": self.oio, "ECO": self.eco}
        return Me(
            id=1,
            username="alice",
            display_name="Alice",
            is_admin=True,
            public_key=self.credentials.public_key,
            wrapped_secret_key=self.credentials.wrapped_secret_key,
            grants=[
                Grant(
                    office=c,
                    sealed_office_key=seal_secret_key(keys[c], self.officer_key.public_key),
                )
                for c in codes or ("OIO",)
            ],
            offices=[
                OfficeInfo(
                    code="OIO", name="Integrity office", public_key=bytes(self.oio.public_key)
                ),
                OfficeInfo(code="ECO", name="Ethics office", public_key=bytes(self.eco.public_key)),
            ],
            categories={},
            statuses=[],
            outcomes=[],
        )

    def keyring(self, *codes: str) -> Keyring:
        keys = {"OIO": self.oio, "ECO": self.eco}
        return Keyring(self.officer_key, {c: keys[c] for c in codes or ("OIO",)})

    def pins(self) -> dict[str, str]:
        return {"OIO": fingerprint(self.oio.public_key), "ECO": fingerprint(self.eco.public_key)}


@pytest.fixture
def world() -> World:
    return World()


REPORT = new_id()


def message_item(
    seq: int,
    kind: ItemKind,
    text: str,
    recipients: list[Recipient],
    *,
    details: dict[str, str] | None = None,
    source_key: Recipient | None = None,
    report_id: str = REPORT,
    head_only: bool = False,
) -> SealedItem:
    item_id = new_id()
    data = message_document(text, details, source_key=source_key)
    key_block, body = envelope.encrypt_bytes(
        data, recipients, item_context(report_id, item_id), content_type=message_type(kind)
    )
    return SealedItem(
        id=item_id,
        seq=seq,
        kind=kind,
        author=None,
        created_at=datetime(2025, 1, 2),
        size=len(data),
        deleted_by_source=False,
        unread=True,
        key_block=key_block,
        body_length=len(body),
        body=None if head_only else body,
        head=body[:HEAD_BYTES] if head_only else None,
    )


def file_item(
    seq: int,
    content: bytes,
    recipients: list[Recipient],
    *,
    name: str = "ledger.pdf",
    report_id: str = REPORT,
) -> tuple[SealedItem, bytes]:
    """A file item as the bundle carries it (head only), and its whole body."""
    item_id = new_id()
    key_block, body = envelope.encrypt_bytes(
        content,
        recipients,
        item_context(report_id, item_id),
        name=name,
        content_type="application/pdf",
    )
    item = SealedItem(
        id=item_id,
        seq=seq,
        kind=ItemKind.FILE,
        author=None,
        created_at=datetime(2025, 1, 2),
        size=len(content),
        deleted_by_source=False,
        unread=True,
        key_block=key_block,
        body_length=len(body),
        body=None,
        head=body[:HEAD_BYTES],
    )
    return item, body


def bundle_of(world: World, items: list[SealedItem], **changes: object) -> ReportBundle:
    bundle = ReportBundle(
        id=REPORT,
        designation="quiet heron",
        office="OIO",
        category="fraud",
        status="received",
        outcome=None,
        urgent=False,
        received=date(2025, 1, 2),
        last_activity=None,
        acknowledge_due=date(2025, 1, 9),
        feedback_due=date(2025, 4, 2),
        acknowledged_at=None,
        closed_at=None,
        assignee_id=None,
        assignee=None,
        source_public_key=bytes(world.source.public_key),
        reading_office="OIO",
        handling=True,
        shared_up_to=None,
        shared_with=[],
        next_statuses=[],
        status_changes=[],
        assignees=[],
        items=items,
    )
    return replace(bundle, **changes)  # type: ignore[arg-type]


def standard_items(world: World) -> list[SealedItem]:
    """A report as the source interface makes it: message, identity, file, acknowledgement."""
    oio = world.oio.public_key
    return [
        message_item(
            1,
            ItemKind.MESSAGE,
            "The director signs his own invoices.",
            [oio],
            details={"where": "Finance"},
            source_key=world.source.public_key,
        ),
        message_item(
            2, ItemKind.IDENTITY, "", [oio], details={"name": "Jo Source"}, head_only=True
        ),
        file_item(3, b"%PDF-1.7 ledger", [oio])[0],
        message_item(4, ItemKind.ACKNOWLEDGEMENT, "Received.", [oio, world.source.public_key]),
    ]


def with_office_key(me: Me, code: str, key: PrivateKey) -> Me:
    """`me` as a server that lists `key` for office `code` would send it."""
    offices = [
        replace(o, public_key=bytes(key.public_key)) if o.code == code else o for o in me.offices
    ]
    return replace(me, offices=offices)


def flip(data: bytes, offset: int) -> bytes:
    altered = bytearray(data)
    altered[offset] ^= 0x01
    return bytes(altered)


# --- reading a thread ----------------------------------------------------------------------------


def test_thread_opens_messages_and_checks_files_and_identity_from_their_head(world: World) -> None:
    thread = casefile.open_thread(bundle_of(world, standard_items(world)), world.keyring())
    assert thread.damaged == []
    assert thread.source_key == "matches"
    message, identity, file, ack = thread.entries
    assert message.text == "The director signs his own invoices."
    assert message.details == {"where": "Finance"}
    assert message.from_source and not ack.from_source
    assert identity.kind == "identity" and identity.text is None and identity.details is None
    assert not identity.damaged
    assert (file.file_name, file.content_type, file.size) == ("ledger.pdf", "application/pdf", 15)
    assert ack.text == "Received."


def test_thread_is_in_item_order_whatever_order_the_server_sends(world: World) -> None:
    items = standard_items(world)
    thread = casefile.open_thread(bundle_of(world, items[::-1]), world.keyring())
    assert [e.seq for e in thread.entries] == [1, 2, 3, 4]
    assert thread.source_key == "matches"


def test_a_damaged_body_is_damaged_and_the_rest_still_opens(world: World) -> None:
    items = standard_items(world)
    assert items[3].body is not None
    items[3] = replace(items[3], body=flip(items[3].body, len(items[3].body) - 3))
    thread = casefile.open_thread(bundle_of(world, items), world.keyring())
    assert thread.damaged == [items[3].id]
    assert thread.entries[3].damaged and thread.entries[3].text is None
    assert thread.entries[0].text is not None


def test_a_damaged_file_head_is_damaged(world: World) -> None:
    items = standard_items(world)
    assert items[2].head is not None
    items[2] = replace(items[2], head=flip(items[2].head, 40))
    thread = casefile.open_thread(bundle_of(world, items), world.keyring())
    assert thread.damaged == [items[2].id]
    assert thread.entries[2].file_name is None


def test_a_truncated_file_is_damaged_in_the_thread(world: World) -> None:
    items = standard_items(world)
    items[2] = replace(items[2], body_length=items[2].body_length - 1)
    thread = casefile.open_thread(bundle_of(world, items), world.keyring())
    assert thread.damaged == [items[2].id]


def test_bodies_swapped_between_items_are_both_damaged(world: World) -> None:
    oio = world.oio.public_key
    first = message_item(1, ItemKind.MESSAGE, "one", [oio], source_key=world.source.public_key)
    second = message_item(2, ItemKind.MESSAGE, "two", [oio], source_key=world.source.public_key)
    # The server moves each item's ciphertext (key block and body) to the other's row.
    swapped = [
        replace(first, key_block=second.key_block, body=second.body),
        replace(second, key_block=first.key_block, body=first.body),
    ]
    thread = casefile.open_thread(bundle_of(world, swapped), world.keyring())
    assert sorted(thread.damaged) == sorted([first.id, second.id])
    assert thread.source_key == "unreadable"


def test_an_item_of_another_report_is_damaged(world: World) -> None:
    other = message_item(
        1, ItemKind.MESSAGE, "elsewhere", [world.oio.public_key], report_id=new_id()
    )
    thread = casefile.open_thread(bundle_of(world, [other]), world.keyring())
    assert thread.damaged == [other.id]


@pytest.mark.parametrize(
    ("index", "claimed"),
    [
        (3, ItemKind.REPLY),  # an acknowledgement passed off as a reply
        (0, ItemKind.NOTE),  # the source's message passed off as an internal note
        (3, "banana"),  # no known kind
    ],
)
def test_a_kind_that_does_not_fit_the_sealed_type_is_damaged(
    world: World, index: int, claimed: str
) -> None:
    items = standard_items(world)
    items[index] = replace(items[index], kind=claimed)
    thread = casefile.open_thread(bundle_of(world, items), world.keyring())
    assert thread.damaged == [items[index].id]
    assert thread.entries[index].text is None


def test_a_file_passed_off_as_identity_and_identity_as_file_are_damaged(world: World) -> None:
    items = standard_items(world)
    items[1] = replace(items[1], kind=ItemKind.FILE)
    items[2] = replace(items[2], kind=ItemKind.IDENTITY)
    thread = casefile.open_thread(bundle_of(world, items), world.keyring())
    assert sorted(thread.damaged) == sorted([items[1].id, items[2].id])


def test_a_message_without_body_or_a_file_without_head_is_damaged(world: World) -> None:
    items = standard_items(world)
    items[2] = replace(items[2], head=None)
    items[3] = replace(items[3], body=None)
    thread = casefile.open_thread(bundle_of(world, items), world.keyring())
    assert sorted(thread.damaged) == sorted([items[2].id, items[3].id])


def test_a_reader_without_the_reading_office_key_is_refused(world: World) -> None:
    with pytest.raises(KeyMismatch):
        casefile.open_thread(bundle_of(world, standard_items(world)), world.keyring("ECO"))


# --- kept copies: not shared is not damaged ------------------------------------------------------


def kept_copy_world(world: World) -> tuple[ReportBundle, list[SealedItem]]:
    """ECO reads a report OIO now handles, through the copy ECO kept up to item 2."""
    oio, eco = world.oio.public_key, world.eco.public_key
    items = [
        message_item(1, ItemKind.MESSAGE, "first", [oio, eco], source_key=world.source.public_key),
        message_item(2, ItemKind.NOTE, "shared note", [oio, eco]),
        message_item(3, ItemKind.NOTE, "after the referral", [oio]),
        message_item(4, ItemKind.REPLY, "later reply", [oio, eco, world.source.public_key]),
    ]
    bundle = bundle_of(world, items, reading_office="ECO", handling=False, shared_up_to=2)
    return bundle, items


def test_kept_copy_items_after_the_referral_without_an_entry_are_not_shared(world: World) -> None:
    bundle, _ = kept_copy_world(world)
    thread = casefile.open_thread(bundle, world.keyring("ECO"))
    assert thread.damaged == []
    assert [e.not_shared for e in thread.entries] == [False, False, True, False]
    assert thread.entries[3].text == "later reply"


def test_kept_copy_items_up_to_the_referral_that_fail_are_damaged(world: World) -> None:
    bundle, items = kept_copy_world(world)
    # Item 2 lost ECO's entry: it was given to the copy, so that is damage, not withholding.
    items[1] = message_item(2, ItemKind.NOTE, "shared note", [world.oio.public_key])
    thread = casefile.open_thread(replace(bundle, items=items), world.keyring("ECO"))
    assert thread.damaged == [items[1].id]
    assert not thread.entries[1].not_shared


def test_kept_copy_item_with_an_entry_that_fails_is_damaged(world: World) -> None:
    bundle, items = kept_copy_world(world)
    assert items[3].body is not None
    items[3] = replace(items[3], body=flip(items[3].body, len(items[3].body) - 2))
    thread = casefile.open_thread(replace(bundle, items=items), world.keyring("ECO"))
    assert thread.damaged == [items[3].id]


def test_the_handling_office_never_sees_withheld_only_damage(world: World) -> None:
    bundle, items = kept_copy_world(world)
    items[2] = message_item(3, ItemKind.NOTE, "only ECO", [world.eco.public_key])
    handling = replace(bundle, items=items, reading_office="OIO", handling=True, shared_up_to=None)
    thread = casefile.open_thread(handling, world.keyring("OIO"))
    assert thread.damaged == [items[2].id]


# --- the source's key (point 5: bound in the first item) -----------------------------------------


def test_reply_is_sealed_to_the_checked_office_and_source_keys(world: World) -> None:
    bundle = bundle_of(world, standard_items(world))
    thread = casefile.open_thread(bundle, world.keyring())
    recipients = casefile.reply_recipients(
        bundle, thread, world.keyring(), world.me(), world.pins()
    )
    assert [bytes(k) for k in recipients] == [
        bytes(world.oio.public_key),
        bytes(world.source.public_key),
    ]
    item = casefile.seal_text(REPORT, "Thank you, we are on it.", "reply", recipients)
    ctx = item_context(REPORT, item.item_id)
    for key in (world.oio, world.source):
        contents, data = decrypt_bytes(item.key_block, item.body, key, ctx)
        assert contents.content_type == message_type(ItemKind.REPLY)
        assert data == message_document("Thank you, we are on it.")
    assert item.size == len(message_document("Thank you, we are on it."))
    # The sealed reply reads back as a reply in the thread.
    sealed = SealedItem(
        id=item.item_id,
        seq=5,
        kind="reply",
        author="Alice",
        created_at=None,
        size=item.size,
        deleted_by_source=False,
        unread=False,
        key_block=item.key_block,
        body_length=len(item.body),
        body=item.body,
        head=None,
    )
    entries = casefile.open_thread(replace(bundle, items=[*bundle.items, sealed]), world.keyring())
    assert entries.entries[-1].text == "Thank you, we are on it."


def test_a_source_key_swapped_on_the_server_stops_the_reply(world: World) -> None:
    bundle = bundle_of(
        world, standard_items(world), source_public_key=bytes(generate_keypair().public_key)
    )
    thread = casefile.open_thread(bundle, world.keyring())
    assert thread.source_key == "differs"
    with pytest.raises(SourceKeyMismatch) as refused:
        casefile.reply_recipients(bundle, thread, world.keyring(), world.me(), world.pins())
    assert refused.value.message == KEY_REFUSALS["differs"]
    assert refused.value.detail == KEY_EVENTS["differs"]


def test_a_later_answer_binding_another_key_also_differs(world: World) -> None:
    items = standard_items(world)
    items.append(
        message_item(
            5,
            ItemKind.MESSAGE,
            "answer",
            [world.oio.public_key],
            source_key=generate_keypair().public_key,
        )
    )
    assert casefile.open_thread(bundle_of(world, items), world.keyring()).source_key == "differs"


def old_items(world: World) -> list[SealedItem]:
    """A report made before sources got hybrid keys: everything bound and sealed to X25519."""
    oio, classical = world.oio.public_key, world.classical_source.public_key
    return [
        message_item(1, ItemKind.MESSAGE, "The depot sells fuel.", [oio], source_key=classical),
        message_item(2, ItemKind.ACKNOWLEDGEMENT, "Received.", [oio, classical]),
    ]


@pytest.mark.parametrize(
    "swapped_in",
    [
        lambda world: XWingSecretKey.generate().public_key,
        lambda world: generate_keypair().public_key,
        lambda world: world.classical_source.public_key,
    ],
    ids=["another hybrid key", "an X25519 key", "the source's own X25519 key"],
)
def test_a_hybrid_source_key_swapped_on_the_server_stops_the_reply(
    world: World, swapped_in: Callable[[World], Recipient]
) -> None:
    """Another X-Wing key, or an X25519 key (a downgrade), in place of the bound X-Wing key.

    Even the X25519 key the same codename derives is refused: a report whose
    messages bind an X-Wing key is never answered with X25519 alone.
    """
    row_key = bytes(swapped_in(world))
    bundle = bundle_of(world, standard_items(world), source_public_key=row_key)
    thread = casefile.open_thread(bundle, world.keyring())
    assert thread.source_key == "differs"
    with pytest.raises(SourceKeyMismatch) as refused:
        casefile.reply_recipients(bundle, thread, world.keyring(), world.me(), world.pins())
    assert refused.value.detail == KEY_EVENTS["differs"]


def test_a_reply_to_a_hybrid_source_has_an_x_wing_entry_the_source_opens(world: World) -> None:
    bundle = bundle_of(world, standard_items(world))
    thread = casefile.open_thread(bundle, world.keyring())
    recipients = casefile.reply_recipients(
        bundle, thread, world.keyring(), world.me(), world.pins()
    )
    assert recipients[1] == world.source.public_key
    item = casefile.seal_text(REPORT, "Which depot?", "reply", recipients)
    source_id = envelope.recipient_id(world.source.public_key)
    assert envelope.key_block_version(item.key_block) == 2
    assert (source_id, True) in envelope.recipient_entries(item.key_block)
    ctx = item_context(REPORT, item.item_id)
    assert decrypt_bytes(item.key_block, item.body, world.source, ctx)[1] == (
        message_document("Which depot?")
    )
    with pytest.raises(DecryptionError):
        decrypt_bytes(item.key_block, item.body, world.classical_source, ctx)


def test_a_report_with_an_x25519_source_key_is_answered_with_x25519(world: World) -> None:
    """A report made before hybrid source keys: it matches; the reply's source entry is X25519."""
    classical = world.classical_source.public_key
    bundle = bundle_of(world, old_items(world), source_public_key=bytes(classical))
    thread = casefile.open_thread(bundle, world.keyring())
    assert thread.source_key == "matches"
    recipients = casefile.reply_recipients(
        bundle, thread, world.keyring(), world.me(), world.pins()
    )
    assert [bytes(k) for k in recipients] == [bytes(world.oio.public_key), bytes(classical)]
    item = casefile.seal_text(REPORT, "Which depot?", "reply", recipients)
    assert (envelope.recipient_id(classical), False) in envelope.recipient_entries(item.key_block)
    ctx = item_context(REPORT, item.item_id)
    assert decrypt_bytes(item.key_block, item.body, world.classical_source, ctx)[1] == (
        message_document("Which depot?")
    )


@pytest.mark.parametrize(
    "swapped_in",
    [
        lambda world: generate_keypair().public_key,
        lambda world: XWingSecretKey.generate().public_key,
        lambda world: world.source.public_key,
    ],
    ids=["another X25519 key", "a hybrid key", "the source's own hybrid key"],
)
def test_an_x25519_source_key_swapped_on_the_server_stops_the_reply(
    world: World, swapped_in: Callable[[World], Recipient]
) -> None:
    """No switch is taken from the server: not even to the hybrid key of the same codename."""
    row_key = bytes(swapped_in(world))
    bundle = bundle_of(world, old_items(world), source_public_key=row_key)
    thread = casefile.open_thread(bundle, world.keyring())
    assert thread.source_key == "differs"
    with pytest.raises(SourceKeyMismatch):
        casefile.reply_recipients(bundle, thread, world.keyring(), world.me(), world.pins())


def test_an_answer_binding_the_hybrid_key_does_not_switch_an_x25519_report(world: World) -> None:
    """An answer (which anyone with the office's public key could forge) binding the X-Wing key
    of the same codename, with the row switched to it: the first message still binds X25519."""
    items = old_items(world)
    items.append(
        message_item(
            3,
            ItemKind.MESSAGE,
            "answer",
            [world.oio.public_key],
            source_key=world.source.public_key,
        )
    )
    for row_key in (world.source.public_key, world.classical_source.public_key):
        bundle = bundle_of(world, items, source_public_key=bytes(row_key))
        assert casefile.open_thread(bundle, world.keyring()).source_key == "differs"


def test_a_source_key_of_no_known_length_stops_the_reply(world: World) -> None:
    """A row holding neither 32 nor 1,216 bytes: refused as a differing key, nothing sealed."""
    bundle = bundle_of(world, standard_items(world))
    thread = casefile.open_thread(bundle, world.keyring())
    damaged = replace(bundle, source_public_key=bytes(world.source.public_key)[:-1])
    with pytest.raises(SourceKeyMismatch) as refused:
        casefile.reply_recipients(damaged, thread, world.keyring(), world.me(), world.pins())
    assert refused.value.detail == KEY_EVENTS["differs"]


def test_a_damaged_first_item_makes_the_source_key_unreadable_and_stops_the_reply(
    world: World,
) -> None:
    items = standard_items(world)
    assert items[0].body is not None
    items[0] = replace(items[0], body=flip(items[0].body, HEAD_BYTES + 3))
    bundle = bundle_of(world, items)
    thread = casefile.open_thread(bundle, world.keyring())
    assert thread.source_key == "unreadable"
    assert thread.damaged == [items[0].id]
    with pytest.raises(SourceKeyMismatch) as refused:
        casefile.reply_recipients(bundle, thread, world.keyring(), world.me(), world.pins())
    assert refused.value.detail == KEY_EVENTS["unreadable"]
    assert refused.value.message == KEY_REFUSALS["unreadable"]


def test_a_missing_first_item_makes_the_source_key_unreadable(world: World) -> None:
    # The server drops the first message: the first item is no longer the source's message.
    items = standard_items(world)[1:]
    assert casefile.open_thread(bundle_of(world, items), world.keyring()).source_key == (
        "unreadable"
    )


def test_a_first_message_moved_behind_an_answer_is_unreadable(world: World) -> None:
    items = standard_items(world)
    items[0] = replace(items[0], seq=9)
    assert casefile.open_thread(bundle_of(world, items), world.keyring()).source_key == (
        "unreadable"
    )


def test_a_report_from_before_binding_may_be_answered(world: World) -> None:
    items = standard_items(world)
    items[0] = message_item(1, ItemKind.MESSAGE, "old report", [world.oio.public_key])
    bundle = bundle_of(world, items)
    thread = casefile.open_thread(bundle, world.keyring())
    assert thread.source_key == "not bound"
    assert len(casefile.reply_recipients(bundle, thread, world.keyring(), world.me(), {})) == 2


def test_a_kept_copy_cannot_reply(world: World) -> None:
    bundle, _ = kept_copy_world(world)
    thread = casefile.open_thread(bundle, world.keyring("ECO"))
    with pytest.raises(KeyMismatch):
        casefile.reply_recipients(bundle, thread, world.keyring("ECO"), world.me("ECO"), {})


# --- office keys (point 5: held key, pin) --------------------------------------------------------


def test_own_office_key_swapped_on_the_server_is_refused(world: World) -> None:
    me = world.me()
    swapped = replace(
        me,
        offices=[
            OfficeInfo(
                code="OIO", name="Integrity office", public_key=bytes(generate_keypair().public_key)
            ),
            me.offices[1],
        ],
    )
    with pytest.raises(KeyMismatch) as refused:
        casefile.trusted_office_key("OIO", swapped, world.keyring(), {})
    assert refused.value.detail == "office key: OIO differs from the office key you hold"
    # So is every sealing that needs it: replies, notes, referral.
    bundle = bundle_of(world, standard_items(world))
    thread = casefile.open_thread(bundle, world.keyring())
    with pytest.raises(KeyMismatch):
        casefile.reply_recipients(bundle, thread, world.keyring(), swapped, {})
    with pytest.raises(KeyMismatch):
        casefile.office_recipients(bundle, world.keyring(), swapped, {})
    with pytest.raises(KeyMismatch):
        casefile.referral_key_blocks(
            bundle, world.keyring(), world.eco.public_key, False, swapped, world.pins()
        )


def test_own_office_key_swapped_with_a_matching_grant_is_caught_by_the_pin(world: World) -> None:
    # The server seals a key of its own to the officer and lists its public half.
    fake = generate_keypair()
    me = replace(
        world.me(),
        offices=[
            OfficeInfo(code="OIO", name="Integrity office", public_key=bytes(fake.public_key))
        ],
        grants=[
            Grant(
                office="OIO", sealed_office_key=seal_secret_key(fake, world.officer_key.public_key)
            )
        ],
    )
    _, wrapping_key = casefile.derive_auth(PASSPHRASE, header_of(me), CHEAP_COST)
    keyring = casefile.open_keyring(me, wrapping_key)
    with pytest.raises(KeyMismatch) as refused:
        casefile.trusted_office_key("OIO", me, keyring, world.pins())
    assert "pinned" in refused.value.detail


def test_other_office_key_not_matching_its_pin_is_refused(world: World) -> None:
    me = world.me()
    swapped = replace(
        me,
        offices=[
            me.offices[0],
            OfficeInfo(code="ECO", name="Ethics", public_key=bytes(generate_keypair().public_key)),
        ],
    )
    with pytest.raises(KeyMismatch) as refused:
        casefile.trusted_office_key("ECO", swapped, world.keyring(), world.pins())
    assert refused.value.detail == (
        "office key: ECO differs from the fingerprint pinned in the reviewer app's settings"
    )


def test_other_office_key_without_a_pin_is_refused(world: World) -> None:
    with pytest.raises(KeyMismatch) as refused:
        casefile.trusted_office_key("ECO", world.me(), world.keyring(), {"OIO": "x"})
    assert "no pinned fingerprint for office ECO" in refused.value.message
    assert "settings" in refused.value.message


def test_a_pin_matches_whatever_its_spacing_and_case(world: World) -> None:
    pin = fingerprint(world.eco.public_key).replace(" ", "").lower()
    key = casefile.trusted_office_key("ECO", world.me(), world.keyring(), {"ECO": pin})
    assert bytes(key) == bytes(world.eco.public_key)


def test_an_office_the_server_does_not_list_is_refused(world: World) -> None:
    with pytest.raises(KeyMismatch):
        casefile.trusted_office_key("XYZ", world.me(), world.keyring(), {"XYZ": "AAAA"})


def test_notes_from_a_kept_copy_go_to_both_offices_checked(world: World) -> None:
    bundle, _ = kept_copy_world(world)
    me, keyring = world.me("ECO"), world.keyring("ECO")
    keys = casefile.office_recipients(bundle, keyring, me, world.pins())
    assert [bytes(k) for k in keys] == [bytes(world.oio.public_key), bytes(world.eco.public_key)]
    with pytest.raises(KeyMismatch):  # the handling office has no pin: nothing vouches for it
        casefile.office_recipients(bundle, keyring, me, {"ECO": world.pins()["ECO"]})
    swapped = with_office_key(me, "ECO", generate_keypair())
    with pytest.raises(KeyMismatch):  # the copy's own office key, against the key held
        casefile.office_recipients(bundle, keyring, swapped, world.pins())


def test_note_from_the_handling_office_goes_to_it_alone(world: World) -> None:
    bundle = bundle_of(world, standard_items(world))
    keys = casefile.office_recipients(bundle, world.keyring(), world.me(), {})
    assert [bytes(k) for k in keys] == [bytes(world.oio.public_key)]
    item = casefile.seal_text(REPORT, "check the ledger", "note", keys)
    with pytest.raises(DecryptionError):
        decrypt_bytes(item.key_block, item.body, world.source, item_context(REPORT, item.item_id))


def test_seal_text_refuses_kinds_an_officer_does_not_write(world: World) -> None:
    with pytest.raises(ValueError):
        casefile.seal_text(REPORT, "x", "message", [world.oio.public_key])
    with pytest.raises(ValueError):
        casefile.seal_text(REPORT, "x", "note", [])


# --- identity ------------------------------------------------------------------------------------


def revealed(world: World, details: dict[str, str]) -> SealedItem:
    return message_item(2, ItemKind.IDENTITY, "", [world.oio.public_key], details=details)


def test_identity_opens_after_reveal(world: World) -> None:
    bundle = bundle_of(world, standard_items(world))
    details, damaged = casefile.open_identity(
        [revealed(world, {"name": "Jo Source"})], bundle, world.keyring()
    )
    assert (details, damaged) == ({"name": "Jo Source"}, [])


def test_damaged_identity_or_a_message_passed_off_as_identity_is_damaged(world: World) -> None:
    bundle = bundle_of(world, standard_items(world))
    bad = revealed(world, {"name": "Jo"})
    assert bad.body is not None
    bad = replace(bad, body=flip(bad.body, len(bad.body) - 1))
    note = replace(
        message_item(5, ItemKind.NOTE, "", [world.oio.public_key], details={"name": "Fake"}),
        kind=ItemKind.IDENTITY,
    )
    details, damaged = casefile.open_identity([bad, note], bundle, world.keyring())
    assert details == {}
    assert damaged == [bad.id, note.id]


# --- referral ------------------------------------------------------------------------------------


def opens(item: SealedItem, key_block: bytes, key: PrivateKey) -> bool:
    try:
        envelope.read_head(
            key_block,
            item.head or item.body or b"",
            item.body_length,
            key,
            item_context(REPORT, item.id),
        )
    except DecryptionError:
        return False
    return True


@pytest.mark.parametrize("keep_copy", [False, True])
def test_referral_key_blocks_open_with_the_new_office_key(world: World, keep_copy: bool) -> None:
    items = standard_items(world)
    bundle = bundle_of(world, items)
    blocks, damaged = casefile.referral_key_blocks(
        bundle, world.keyring(), world.eco.public_key, keep_copy, world.me(), world.pins()
    )
    assert damaged == []
    assert set(blocks) == {i.id for i in items}
    for item in items:
        assert opens(item, blocks[item.id], world.eco)
        assert opens(item, blocks[item.id], world.oio) is keep_copy
    # The source keeps its entry in what was sent to it.
    assert opens(items[3], blocks[items[3].id], world.source)
    # ECO reads the referred report through the new key blocks, nothing damaged.
    moved = [replace(i, key_block=blocks[i.id]) for i in items]
    thread = casefile.open_thread(
        replace(bundle, items=moved, office="ECO", reading_office="ECO"), world.keyring("ECO")
    )
    assert thread.damaged == [] and thread.source_key == "matches"


def test_an_upgraded_office_reads_and_refers_its_old_items_leaving_no_old_entry(
    world: World,
) -> None:
    """OIO upgraded from X25519 to X-Wing, its old items not yet re-sealed (docs/security.md 6a)."""
    items = standard_items(world)  # sealed to OIO's X25519 key
    old = world.oio
    world.oio = KeyChain((XWingSecretKey.generate(), old))  # type: ignore[assignment]
    bundle = bundle_of(world, items)
    # The chain, as the grant carries it to the officer's keyring, opens every old item.
    me = world.me()
    _, keyring = casefile.unlock(me, PASSPHRASE, header_of(me), CHEAP_COST)
    assert len(keyring.office_keys["OIO"].keys) == 2
    thread = casefile.open_thread(bundle, keyring)
    assert thread.damaged == [] and thread.source_key == "matches"
    blocks, damaged = casefile.referral_key_blocks(
        bundle, world.keyring(), world.eco.public_key, False, world.me(), world.pins()
    )
    assert damaged == []
    for item in items:
        assert opens(item, blocks[item.id], world.eco)
        # Without a copy kept, neither the old X25519 entry nor any entry of OIO remains.
        assert not opens(item, blocks[item.id], old)
        assert envelope.recipient_id(old.public_key) not in envelope.recipient_ids(blocks[item.id])
    assert opens(items[3], blocks[items[3].id], world.source)


def test_referral_lists_damaged_items_and_keeps_their_key_block(world: World) -> None:
    items = standard_items(world)
    items[1] = replace(items[1], key_block=flip(items[1].key_block, 20))
    blocks, damaged = casefile.referral_key_blocks(
        bundle_of(world, items),
        world.keyring(),
        world.eco.public_key,
        False,
        world.me(),
        world.pins(),
    )
    assert damaged == [items[1].id]
    assert blocks[items[1].id] == items[1].key_block
    assert len(blocks) == len(items)


def test_referral_to_an_unpinned_or_unlisted_key_is_refused(world: World) -> None:
    bundle = bundle_of(world, standard_items(world))
    with pytest.raises(KeyMismatch):  # ECO's real key, but no pin vouches for it
        casefile.referral_key_blocks(
            bundle, world.keyring(), world.eco.public_key, False, world.me(), {}
        )
    with pytest.raises(KeyMismatch):  # a key no office has
        casefile.referral_key_blocks(
            bundle, world.keyring(), generate_keypair().public_key, False, world.me(), world.pins()
        )
    with pytest.raises(KeyMismatch):  # the handling office's own key
        casefile.referral_key_blocks(
            bundle, world.keyring(), world.oio.public_key, False, world.me(), world.pins()
        )


# --- files ---------------------------------------------------------------------------------------


FILE_CONTENT = bytes(range(256)) * 700  # three chunks


def test_decrypt_file_yields_the_file(world: World) -> None:
    item, body = file_item(3, FILE_CONTENT, [world.oio.public_key])
    contents, chunks = casefile.decrypt_file(
        item.key_block, io.BytesIO(body), world.oio, REPORT, item.id
    )
    assert (contents.name, contents.size) == ("ledger.pdf", len(FILE_CONTENT))
    assert b"".join(chunks) == FILE_CONTENT


@pytest.mark.parametrize("where", ["truncated", "padded", "last chunk", "first chunk"])
def test_a_damaged_file_is_refused_before_the_first_chunk(world: World, where: str) -> None:
    item, body = file_item(3, FILE_CONTENT, [world.oio.public_key])
    if where == "truncated":
        body = body[:-100]
    elif where == "padded":
        body += b"\0" * 17
    else:
        body = flip(body, len(body) - 5 if where == "last chunk" else HEAD_BYTES + 10)
    with pytest.raises(DecryptionError):
        casefile.decrypt_file(item.key_block, io.BytesIO(body), world.oio, REPORT, item.id)


def test_a_message_is_not_downloaded_as_a_file(world: World) -> None:
    item = message_item(1, ItemKind.MESSAGE, "text", [world.oio.public_key])
    assert item.body is not None
    with pytest.raises(DecryptionError):
        casefile.decrypt_file(item.key_block, io.BytesIO(item.body), world.oio, REPORT, item.id)


def test_a_file_of_another_item_is_refused(world: World) -> None:
    item, body = file_item(3, FILE_CONTENT, [world.oio.public_key])
    with pytest.raises(DecryptionError):
        casefile.decrypt_file(item.key_block, io.BytesIO(body), world.oio, REPORT, new_id())


# --- grants (point 5: the new officer's key) -----------------------------------------------------


def summary(public_key: bytes | None) -> OfficerSummary:
    return OfficerSummary(
        id=2,
        username="bob",
        display_name="Bob",
        is_admin=False,
        active=True,
        enrolled=True,
        public_key=public_key,
        offices=[],
    )


def test_grant_is_sealed_to_the_key_read_out(world: World) -> None:
    bob = casefile.new_credentials("bob's passphrase", CHEAP_COST)
    read_out = bob.fingerprint.lower().replace(" ", "")
    sealed = casefile.seal_grant(world.oio, summary(bob.public_key), read_out)
    assert bytes(open_sealed_secret_key(sealed, bob.secret_key)) == bytes(world.oio)


def test_a_new_officer_key_not_matching_the_read_out_is_refused(world: World) -> None:
    bob = casefile.new_credentials("bob's passphrase", CHEAP_COST)
    server_key = bytes(generate_keypair().public_key)  # the server lists a key of its own
    with pytest.raises(KeyMismatch) as refused:
        casefile.seal_grant(world.oio, summary(server_key), bob.fingerprint)
    assert "bob" in refused.value.detail and "read out" in refused.value.detail
    with pytest.raises(KeyMismatch):
        casefile.seal_grant(world.oio, summary(None), bob.fingerprint)


def test_text_that_is_no_fingerprint_is_told_apart(world: World) -> None:
    bob = casefile.new_credentials("bob's passphrase", CHEAP_COST)
    with pytest.raises(NotAFingerprint):
        casefile.seal_grant(world.oio, summary(bob.public_key), "ABCD 1234")


# --- sign-in, keyring, credentials ---------------------------------------------------------------


def header_of(me: Me) -> bytes:
    return me.wrapped_secret_key[:WRAP_HEADER_BYTES]


def test_unlock_opens_the_keyring(world: World) -> None:
    me = world.me("OIO", "ECO")
    auth_key, keyring = casefile.unlock(me, PASSPHRASE, header_of(me), CHEAP_COST)
    assert auth_key == world.credentials.auth_key
    assert bytes(keyring.officer_key) == bytes(world.officer_key)
    assert {c: bytes(k) for c, k in keyring.office_keys.items()} == {
        "OIO": bytes(world.oio),
        "ECO": bytes(world.eco),
    }


def test_a_cost_below_the_floor_is_refused_before_deriving(world: World) -> None:
    with pytest.raises(UnsafeHeader):
        casefile.derive_auth(PASSPHRASE, header_of(world.me()), PRODUCTION_COST)
    with pytest.raises(UnsafeHeader):
        casefile.derive_auth(PASSPHRASE, b"\x02short", CHEAP_COST)


def test_a_wrong_public_key_for_the_officer_is_refused(world: World) -> None:
    me = replace(world.me(), public_key=bytes(generate_keypair().public_key))
    with pytest.raises(KeyMismatch) as refused:
        casefile.unlock(me, PASSPHRASE, header_of(me), CHEAP_COST)
    assert "alice" in refused.value.detail


def test_a_wrong_passphrase_or_another_wrap_is_refused(world: World) -> None:
    me = world.me()
    with pytest.raises(KeyMismatch):
        casefile.unlock(me, "not the passphrase", header_of(me), CHEAP_COST)
    other = casefile.new_credentials(PASSPHRASE, CHEAP_COST)
    swapped = replace(me, wrapped_secret_key=other.wrapped_secret_key)
    with pytest.raises(KeyMismatch):  # opens, but is not the key of me.public_key
        casefile.unlock(swapped, PASSPHRASE, header_of(swapped), CHEAP_COST)


def test_an_office_key_granted_that_is_not_the_listed_key_is_refused(world: World) -> None:
    me = world.me()
    fake = generate_keypair()
    swapped = replace(
        me,
        grants=[
            Grant(
                office="OIO", sealed_office_key=seal_secret_key(fake, world.officer_key.public_key)
            )
        ],
    )
    with pytest.raises(KeyMismatch):
        casefile.unlock(swapped, PASSPHRASE, header_of(me), CHEAP_COST)


def test_a_grant_that_does_not_open_is_left_out(world: World) -> None:
    me = world.me("OIO", "ECO")
    broken = replace(
        me, grants=[me.grants[0], Grant(office="ECO", sealed_office_key=b"garbage" * 10)]
    )
    _, keyring = casefile.unlock(broken, PASSPHRASE, header_of(me), CHEAP_COST)
    assert list(keyring.office_keys) == ["OIO"]
    assert keyring.unopened == ["ECO"]


def test_rewrap_changes_the_passphrase(world: World) -> None:
    new_auth, new_wrapped = casefile.rewrap(world.officer_key, "a new passphrase", CHEAP_COST)
    assert new_auth != world.credentials.auth_key
    assert (
        new_wrapped[:WRAP_HEADER_BYTES] != world.credentials.wrapped_secret_key[:WRAP_HEADER_BYTES]
    )
    me = replace(world.me(), wrapped_secret_key=new_wrapped)
    auth, keyring = casefile.unlock(me, "a new passphrase", header_of(me), CHEAP_COST)
    assert auth == new_auth and bytes(keyring.officer_key) == bytes(world.officer_key)
    with pytest.raises(KeyMismatch):
        casefile.unlock(me, PASSPHRASE, header_of(me), CHEAP_COST)


def test_no_key_shows_in_repr(world: World) -> None:
    keyring = world.keyring("OIO", "ECO")
    shown = repr(keyring) + repr(world.credentials) + str(keyring)
    for secret in (
        bytes(world.officer_key),
        bytes(world.oio),
        bytes(world.eco),
        world.credentials.auth_key,
        world.credentials.wrapped_secret_key,
    ):
        assert secret.hex() not in shown
        assert repr(secret)[2:-1] not in shown
    assert "OIO" in repr(keyring)


# --- recovery file -------------------------------------------------------------------------------


RECOVERY_PASSPHRASE = "one two three four five six seven eight nine ten"


def test_recovery_file_opens_when_server_and_pin_agree(world: World) -> None:
    data = recovery.dump("ECO", world.eco, RECOVERY_PASSPHRASE, CHEAP_COST)
    key = casefile.open_recovery(data, RECOVERY_PASSPHRASE, "ECO", world.me(), world.pins())
    assert bytes(key) == bytes(world.eco)
    assert bytes(casefile.open_recovery(data, RECOVERY_PASSPHRASE, "ECO", world.me(), {})) == (
        bytes(world.eco)
    )


def test_recovery_file_refusals(world: World) -> None:
    data = recovery.dump("ECO", world.eco, RECOVERY_PASSPHRASE, CHEAP_COST)
    me = world.me()
    with pytest.raises(RecoveryError):
        casefile.open_recovery(data, "wrong", "ECO", me, world.pins())
    with pytest.raises(RecoveryError):
        casefile.open_recovery(data, RECOVERY_PASSPHRASE, "OIO", me, world.pins())
    with pytest.raises(RecoveryError):
        casefile.open_recovery(b"not json", RECOVERY_PASSPHRASE, "ECO", me, world.pins())
    swapped = with_office_key(me, "ECO", generate_keypair())
    with pytest.raises(KeyMismatch):
        casefile.open_recovery(data, RECOVERY_PASSPHRASE, "ECO", swapped, world.pins())
    wrong_pin = {"ECO": fingerprint(generate_keypair().public_key)}
    with pytest.raises(KeyMismatch):
        casefile.open_recovery(data, RECOVERY_PASSPHRASE, "ECO", me, wrong_pin)
