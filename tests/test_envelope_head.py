"""Specification of `envelope.read_head`: an envelope's name, type and size from its head alone.

The reviewer app shows files and identity items from the first `HEAD_BYTES`
of their body, without fetching the content. Every test here must fail if
the property it names stops holding: the head is authenticated (key, size,
context, metadata), and any alteration is refused with DecryptionError.
"""

from __future__ import annotations

import hashlib

import pytest

from crypto import envelope
from crypto.envelope import (
    CHUNK_SIZE,
    HEAD_BYTES,
    Contents,
    add_recipient,
    body_size,
    context,
    encrypt_bytes,
    read_head,
)
from crypto.errors import DecryptionError
from crypto.keys import PrivateKey, generate_keypair

CTX = context("report-7f3a", "item-0001")
NAME = "Relevé de comptes — Q3 (copie).pdf"
CONTENT_TYPE = "application/pdf"
SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5]


def content_of(size: int) -> bytes:
    return hashlib.shake_256(f"head {size}".encode()).digest(size)


@pytest.fixture(scope="module")
def alice() -> PrivateKey:
    return generate_keypair()


def sealed(alice: PrivateKey, size: int = 1000) -> tuple[bytes, bytes]:
    return encrypt_bytes(
        content_of(size), [alice.public_key], CTX, name=NAME, content_type=CONTENT_TYPE
    )


def test_head_bytes_is_the_documented_layout() -> None:
    # Version byte, 24-byte secretstream header, the metadata message and its 17-byte tag.
    assert HEAD_BYTES == 1 + 24 + envelope.METADATA_SIZE + 17
    assert "HEAD_BYTES" in envelope.__all__ and "read_head" in envelope.__all__
    # An empty envelope's body is the head plus one empty final message.
    assert body_size(0) == HEAD_BYTES + 17


@pytest.mark.parametrize("size", SIZES)
def test_head_gives_the_sealed_name_type_and_size(alice: PrivateKey, size: int) -> None:
    key_block, body = sealed(alice, size)
    contents = read_head(key_block, body[:HEAD_BYTES], len(body), alice, CTX)
    assert contents == Contents(NAME, CONTENT_TYPE, size)


def test_a_longer_head_or_the_whole_body_is_accepted(alice: PrivateKey) -> None:
    key_block, body = sealed(alice)
    expected = read_head(key_block, body[:HEAD_BYTES], len(body), alice, CTX)
    assert read_head(key_block, body, len(body), alice, CTX) == expected
    assert read_head(key_block, body[: HEAD_BYTES + 5], len(body), alice, CTX) == expected


def test_another_recipient_added_later_reads_the_head(alice: PrivateKey) -> None:
    bob = generate_keypair()
    key_block, body = sealed(alice)
    key_block = add_recipient(key_block, alice, bob.public_key)
    assert read_head(key_block, body[:HEAD_BYTES], len(body), bob, CTX).name == NAME


def test_a_short_head_is_refused(alice: PrivateKey) -> None:
    key_block, body = sealed(alice)
    with pytest.raises(DecryptionError):
        read_head(key_block, body[: HEAD_BYTES - 1], len(body), alice, CTX)
    with pytest.raises(DecryptionError):
        read_head(key_block, b"", len(body), alice, CTX)


@pytest.mark.parametrize("delta", [-1, 1, -17, CHUNK_SIZE])
def test_a_body_length_other_than_the_sealed_size_is_refused(alice: PrivateKey, delta: int) -> None:
    key_block, body = sealed(alice)
    with pytest.raises(DecryptionError):
        read_head(key_block, body[:HEAD_BYTES], len(body) + delta, alice, CTX)


def test_another_context_is_refused(alice: PrivateKey) -> None:
    key_block, body = sealed(alice)
    with pytest.raises(DecryptionError):
        read_head(key_block, body[:HEAD_BYTES], len(body), alice, context("report-7f3a", "x"))


def test_another_key_is_refused(alice: PrivateKey) -> None:
    key_block, body = sealed(alice)
    with pytest.raises(DecryptionError):
        read_head(key_block, body[:HEAD_BYTES], len(body), generate_keypair(), CTX)


@pytest.mark.parametrize("offset", [0, 1, 24, 25, 100, HEAD_BYTES - 17, HEAD_BYTES - 1])
def test_any_altered_byte_of_the_head_is_refused(alice: PrivateKey, offset: int) -> None:
    key_block, body = sealed(alice)
    head = bytearray(body[:HEAD_BYTES])
    head[offset] ^= 0x01
    with pytest.raises(DecryptionError):
        read_head(key_block, bytes(head), len(body), alice, CTX)


def test_an_altered_key_block_is_refused(alice: PrivateKey) -> None:
    key_block, body = sealed(alice)
    altered = bytearray(key_block)
    altered[-1] ^= 0x01
    with pytest.raises(DecryptionError):
        read_head(bytes(altered), body[:HEAD_BYTES], len(body), alice, CTX)


def test_the_head_of_another_envelope_is_refused(alice: PrivateKey) -> None:
    key_block, body = sealed(alice)
    _, other_body = sealed(alice)
    with pytest.raises(DecryptionError):
        read_head(key_block, other_body[:HEAD_BYTES], len(body), alice, CTX)


def test_the_reader_still_refuses_what_the_head_refuses(alice: PrivateKey) -> None:
    # EnvelopeReader shares the head check: an altered metadata message fails there too.
    key_block, body = sealed(alice)
    altered = bytearray(body)
    altered[HEAD_BYTES - 3] ^= 0x01
    with pytest.raises(DecryptionError):
        envelope.decrypt_bytes(key_block, bytes(altered), alice, CTX)
    assert envelope.decrypt_bytes(key_block, body, alice, CTX)[1] == content_of(1000)
