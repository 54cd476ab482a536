"""Key block version 2 (crypto/envelope.py): X-Wing recipients beside X25519 ones.

A key block with an X-Wing recipient is version 2; one with X25519 recipients
only stays version 1, byte for byte as before. Readers open both. Every
change to a version 2 entry is refused with the one DecryptionError, before
any plaintext: a changed ML-KEM ciphertext (implicit rejection gives another
shared secret, so the wrapped file key does not open), a truncated one, an
entry swapped in from another envelope, a wrong recipient.
"""

from __future__ import annotations

import pytest

from crypto import envelope
from crypto.errors import DecryptionError
from crypto.keys import generate_keypair
from crypto.xwing import XWingSecretKey

CTX = envelope.context("dropbox-item", "r" * 32, "i" * 32)
PLAINTEXT = b"what the officer must read" * 100
XWING_ENTRY = 1 + 8 + 1120 + 40 + 16
X25519_ENTRY_V2 = 1 + 8 + 88


@pytest.fixture(scope="module")
def office() -> XWingSecretKey:
    return XWingSecretKey(bytes(range(32)))


def test_a_hybrid_envelope_opens_with_the_hybrid_key_and_is_version_2(
    office: XWingSecretKey,
) -> None:
    key_block, body = envelope.encrypt_bytes(PLAINTEXT, [office.public_key], CTX, name="a.txt")
    assert key_block[0] == envelope.KEY_BLOCK_V2 == envelope.key_block_version(key_block)
    assert len(key_block) == 2 + XWING_ENTRY
    contents, plaintext = envelope.decrypt_bytes(key_block, body, office, CTX)
    assert plaintext == PLAINTEXT and contents.name == "a.txt"
    assert envelope.recipient_ids(key_block) == [envelope.recipient_id(office.public_key)]


def test_a_classical_only_envelope_stays_version_1() -> None:
    alice = generate_keypair()
    key_block, _ = envelope.encrypt_bytes(PLAINTEXT, [alice.public_key], CTX)
    assert key_block[0] == envelope.VERSION == 1 and len(key_block) == 2 + 96


def test_a_mixed_block_opens_for_each_recipient(office: XWingSecretKey) -> None:
    source, second = generate_keypair(), XWingSecretKey.generate()
    recipients: list[envelope.Recipient] = [source.public_key, office.public_key, second.public_key]
    key_block, body = envelope.encrypt_bytes(PLAINTEXT, recipients, CTX)
    assert len(key_block) == 2 + X25519_ENTRY_V2 + 2 * XWING_ENTRY
    for key in (source, office, second):
        assert envelope.decrypt_bytes(key_block, body, key, CTX)[1] == PLAINTEXT
    for stranger in (generate_keypair(), XWingSecretKey.generate()):
        with pytest.raises(DecryptionError):
            envelope.decrypt_bytes(key_block, body, stranger, CTX)


def test_adding_a_hybrid_recipient_turns_a_version_1_block_into_version_2(
    office: XWingSecretKey,
) -> None:
    request = generate_keypair()
    key_block, body = envelope.encrypt_bytes(PLAINTEXT, [request.public_key], CTX)
    assert key_block[0] == 1
    both = envelope.add_recipient(key_block, request, office.public_key)
    assert both[0] == 2 and envelope.add_recipient(both, office, office.public_key) == both
    only_office = envelope.remove_recipient(both, request.public_key)
    assert len(only_office) == 2 + XWING_ENTRY
    assert envelope.decrypt_bytes(only_office, body, office, CTX)[1] == PLAINTEXT
    with pytest.raises(DecryptionError):
        envelope.decrypt_bytes(only_office, body, request, CTX)
    # and back: a classical recipient added by the hybrid office, to a version 2 block
    again = envelope.add_recipient(only_office, office, request.public_key)
    assert envelope.decrypt_bytes(again, body, request, CTX)[1] == PLAINTEXT


def _hybrid(office: XWingSecretKey) -> tuple[bytes, bytes]:
    return envelope.encrypt_bytes(PLAINTEXT, [office.public_key], CTX)


@pytest.mark.parametrize(
    "position",
    [0, 1, 2, 5, 11, 11 + 500, 11 + 1087, 11 + 1088, 11 + 1119, 11 + 1120, 11 + 1175],
    ids=lambda p: f"byte-{p}",
)
def test_any_changed_byte_of_a_hybrid_key_block_is_refused(
    office: XWingSecretKey, position: int
) -> None:
    key_block, body = _hybrid(office)
    changed = bytearray(key_block)
    changed[position] ^= 0x01
    with pytest.raises(DecryptionError) as refused:
        envelope.decrypt_bytes(bytes(changed), body, office, CTX)
    assert str(refused.value) == str(DecryptionError())


def test_a_truncated_ml_kem_ciphertext_is_refused(office: XWingSecretKey) -> None:
    key_block, body = _hybrid(office)
    at = 2 + 9 + 1087  # the ML-KEM ciphertext's last byte
    for cut in (key_block[:at] + key_block[at + 1 :], key_block[:-1], key_block[: 2 + 9 + 1088]):
        with pytest.raises(DecryptionError):
            envelope.decrypt_bytes(cut, body, office, CTX)
        with pytest.raises(DecryptionError):
            envelope.recipient_ids(cut)


def test_an_entry_swapped_in_from_another_envelope_is_refused(office: XWingSecretKey) -> None:
    key_block, body = _hybrid(office)
    other_block, _ = _hybrid(office)
    with pytest.raises(DecryptionError):  # a whole entry: another file key, the body fails
        envelope.decrypt_bytes(other_block, body, office, CTX)
    ct_at, wrapped_at = 2 + 9, 2 + 9 + 1120
    for mixed in (
        key_block[:ct_at] + other_block[ct_at:wrapped_at] + key_block[wrapped_at:],
        other_block[:wrapped_at] + key_block[wrapped_at:],
    ):
        with pytest.raises(DecryptionError):
            envelope.decrypt_bytes(mixed, body, office, CTX)


def test_an_entry_moved_to_another_recipients_id_is_refused(office: XWingSecretKey) -> None:
    """An entry is bound to its recipient: under another's id it does not open."""
    second = XWingSecretKey.generate()
    key_block, body = envelope.encrypt_bytes(PLAINTEXT, [office.public_key, second.public_key], CTX)
    first = key_block[2 : 2 + XWING_ENTRY]
    other = key_block[2 + XWING_ENTRY :]
    # the second recipient's id on the first recipient's sealed part
    moved = bytes([2, 1]) + other[:9] + first[9:]
    with pytest.raises(DecryptionError):
        envelope.decrypt_bytes(moved, body, second, CTX)


def test_a_wrong_recipient_finds_no_entry(office: XWingSecretKey) -> None:
    key_block, body = _hybrid(office)
    with pytest.raises(DecryptionError):
        envelope.decrypt_bytes(key_block, body, XWingSecretKey.generate(), CTX)
    with pytest.raises(DecryptionError):
        envelope.read_head(key_block, body, len(body), generate_keypair(), CTX)


def test_an_x25519_key_whose_id_matches_no_entry_kind_is_refused(office: XWingSecretKey) -> None:
    """An X-Wing entry carrying an X25519 key's id is not opened with that key as a sealed box."""
    alice = generate_keypair()
    key_block, body = _hybrid(office)
    forged = key_block[:3] + envelope.recipient_id(alice.public_key) + key_block[11:]
    with pytest.raises(DecryptionError):
        envelope.decrypt_bytes(forged, body, alice, CTX)
