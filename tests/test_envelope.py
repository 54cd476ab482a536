"""Specification of the envelope (crypto/envelope.py): the one format for every stored item.

Every test here must fail if the property it names stops holding: round trips
for every interesting size, refusal (DecryptionError, and no plaintext) of any
alteration, recipients added and removed without touching the body, push-style
writing, and constant memory.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from crypto import envelope
from crypto.envelope import (
    CHUNK_SIZE,
    Contents,
    EnvelopeReader,
    EnvelopeWriter,
    add_recipient,
    body_size,
    context,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    encrypt_stream,
    recipient_id,
    recipient_ids,
    remove_recipient,
)
from crypto.errors import DecryptionError
from crypto.keys import PrivateKey, generate_keypair

KIB = 1024
MIB = 1024 * KIB
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * MIB]
SIZE_IDS = ["empty", "one-byte", "chunk-minus-1", "one-chunk", "chunk-plus-1", "5MiB"]

CTX = context("report-7f3a", "item-0001")
NAME = "Relevé de comptes — Q3 (copie).pdf"
CONTENT_TYPE = "application/pdf"

# Layout of a body, as documented in crypto/envelope.py: version byte,
# secretstream header, one metadata message, then the content messages.
HEADER_END = 1 + 24
CONTENT_START = HEADER_END + envelope.METADATA_SIZE + 17
SEALED_CHUNK = CHUNK_SIZE + 17

# For Hypothesis tests, which cannot take function-scoped fixtures.
_MODULE_KEY = generate_keypair()
_SMALL_ENVELOPE = encrypt_bytes(b"0123456789", [_MODULE_KEY.public_key], CTX)


def content_of(size: int, seed: int = 0) -> bytes:
    """Reproducible, incompressible content of `size` bytes."""
    return hashlib.shake_256(f"content {seed} {size}".encode()).digest(size)


def chunk_offsets(body: bytes) -> list[int]:
    """Offsets in `body` at which a content message starts, plus the end of the body."""
    return [*range(CONTENT_START, len(body), SEALED_CHUNK), len(body)]


class OneWayStream:
    """A readable stream that cannot seek, like a socket or a pipe (over bytes or a file)."""

    def __init__(self, source: bytes | BinaryIO) -> None:
        self._inner = io.BytesIO(source) if isinstance(source, bytes) else source

    def read(self, size: int = -1, /) -> bytes:
        return self._inner.read(size)

    def seekable(self) -> bool:
        return False


class CountingSink:
    """A write-only sink that keeps nothing, like /dev/null, but hashes what it gets."""

    def __init__(self) -> None:
        self.count = 0
        self._hash = hashlib.blake2b()

    def write(self, data: bytes, /) -> int:
        self.count += len(data)
        self._hash.update(data)
        return len(data)

    def digest(self) -> bytes:
        return self._hash.digest()


class GeneratedSource:
    """A readable stream of `total` bytes produced on demand from one 64 KiB pattern."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._pattern = content_of(CHUNK_SIZE, seed=99)

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            raise AssertionError("a streaming consumer must not ask for everything at once")
        n = min(size, self._left, len(self._pattern))
        self._left -= n
        return self._pattern[:n]


@pytest.fixture(scope="module")
def alice() -> PrivateKey:
    return generate_keypair()


@pytest.fixture(scope="module")
def bob() -> PrivateKey:
    return generate_keypair()


@pytest.fixture(scope="module")
def carol() -> PrivateKey:
    return generate_keypair()


@pytest.fixture(scope="module")
def stranger() -> PrivateKey:
    return generate_keypair()


def read_all(key_block: bytes, body: object, key: PrivateKey, ctx: bytes) -> list[bytes]:
    """Open with EnvelopeReader and collect every chunk it releases (raises on failure)."""
    reader = EnvelopeReader(key_block, body, key, ctx)  # type: ignore[arg-type]
    return list(reader.chunks())


def refused_without_plaintext(key_block: bytes, body: bytes, key: PrivateKey, ctx: bytes) -> bool:
    """True if both APIs raise DecryptionError and the chunk API released nothing first.

    Any other exception propagates: it would break the one-error-type promise.
    """
    try:
        decrypt_bytes(key_block, body, key, ctx)
    except DecryptionError:
        pass
    else:
        return False
    for stream in (io.BytesIO(body), OneWayStream(body)):
        released: list[bytes] = []
        try:
            for chunk in EnvelopeReader(key_block, stream, key, ctx).chunks():
                released.append(chunk)
        except DecryptionError:
            if released:
                return False
        else:
            return False
    return True


def released_before_refusal(
    key_block: bytes, body: bytes, key: PrivateKey, ctx: bytes
) -> list[bytes]:
    """Read a one-way stream chunk by chunk; it must be refused; return what came out first."""
    released: list[bytes] = []
    with pytest.raises(DecryptionError):
        for chunk in EnvelopeReader(key_block, OneWayStream(body), key, ctx).chunks():
            released.append(chunk)
    return released


def first_chunks(data: bytes, count: int) -> list[bytes]:
    """The first `count` chunks of plaintext, as an honest reader would release them."""
    return [data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE] for i in range(count)]


def assert_refused_without_plaintext(
    key_block: bytes, body: bytes, key: PrivateKey, ctx: bytes
) -> None:
    assert refused_without_plaintext(key_block, body, key, ctx)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_bytes_round_trip_returns_content_name_type_and_size(size: int, alice: PrivateKey) -> None:
    data = content_of(size)
    key_block, body = encrypt_bytes(
        data, [alice.public_key], CTX, name=NAME, content_type=CONTENT_TYPE
    )
    contents, plaintext = decrypt_bytes(key_block, body, alice, CTX)
    assert plaintext == data
    assert contents == Contents(name=NAME, content_type=CONTENT_TYPE, size=size)
    assert len(body) == body_size(size)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_stream_round_trip_over_real_files(size: int, alice: PrivateKey, tmp_path: Path) -> None:
    data = content_of(size, seed=1)
    source, blob, output = tmp_path / "upload", tmp_path / "blob", tmp_path / "download"
    source.write_bytes(data)
    with source.open("rb") as src, blob.open("wb") as dst:
        key_block = encrypt_stream(
            src, dst, [alice.public_key], CTX, name=NAME, content_type=CONTENT_TYPE
        )
    assert blob.stat().st_size == body_size(size)
    with blob.open("rb") as body, output.open("w+b") as sink:
        contents = decrypt_stream(key_block, body, sink, alice, CTX)
    assert output.read_bytes() == data
    assert contents == Contents(name=NAME, content_type=CONTENT_TYPE, size=size)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_stream_and_bytes_formats_are_interchangeable(size: int, alice: PrivateKey) -> None:
    data = content_of(size, seed=2)
    sink = io.BytesIO()
    key_block = encrypt_stream(io.BytesIO(data), sink, [alice.public_key], CTX, name=NAME)
    assert decrypt_bytes(key_block, sink.getvalue(), alice, CTX)[1] == data
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX, name=NAME)
    assert b"".join(read_all(key_block, io.BytesIO(body), alice, CTX)) == data


def test_every_recipient_can_decrypt_independently(
    alice: PrivateKey, bob: PrivateKey, carol: PrivateKey
) -> None:
    data = content_of(CHUNK_SIZE * 2 + 5, seed=3)
    recipients = [alice, bob, carol]
    key_block, body = encrypt_bytes(
        data, [k.public_key for k in recipients], CTX, name=NAME, content_type=CONTENT_TYPE
    )
    assert recipient_ids(key_block) == [recipient_id(k.public_key) for k in recipients]
    for key in recipients:
        contents, plaintext = decrypt_bytes(key_block, body, key, CTX)
        assert plaintext == data
        assert (contents.name, contents.content_type) == (NAME, CONTENT_TYPE)


def test_a_recipient_listed_twice_gets_one_entry(alice: PrivateKey) -> None:
    key_block, body = encrypt_bytes(b"x", [alice.public_key, alice.public_key], CTX)
    assert recipient_ids(key_block) == [recipient_id(alice.public_key)]
    assert decrypt_bytes(key_block, body, alice, CTX)[1] == b"x"


def test_an_envelope_needs_a_recipient() -> None:
    with pytest.raises(ValueError):
        encrypt_bytes(b"x", [], CTX)
    with pytest.raises(ValueError):
        EnvelopeWriter(io.BytesIO(), [], CTX)


def test_name_and_content_type_never_appear_outside_the_encryption(alice: PrivateKey) -> None:
    name, content_type = "whistle-evidence-UNIQUE.xlsx", "application/x-UNIQUE-type"
    key_block, body = encrypt_bytes(
        b"content", [alice.public_key], CTX, name=name, content_type=content_type
    )
    for marker in (b"UNIQUE", b"whistle", b"xlsx", b"content"):
        assert marker not in body
        assert marker not in key_block


def test_name_length_does_not_change_the_body_size(alice: PrivateKey) -> None:
    short = encrypt_bytes(b"abc", [alice.public_key], CTX, name="a", content_type="")[1]
    long = encrypt_bytes(b"abc", [alice.public_key], CTX, name="n" * 500, content_type="t" * 200)[1]
    assert len(short) == len(long) == body_size(3)


def test_a_name_too_long_for_the_metadata_block_is_refused(alice: PrivateKey) -> None:
    with pytest.raises(ValueError):
        encrypt_bytes(b"", [alice.public_key], CTX, name="n" * 2000)


def test_two_encryptions_of_the_same_content_differ(alice: PrivateKey) -> None:
    first = encrypt_bytes(b"same", [alice.public_key], CTX)
    second = encrypt_bytes(b"same", [alice.public_key], CTX)
    assert first[0] != second[0]
    assert first[1] != second[1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 3))
def test_body_size_is_exact_for_any_content_size(size: int) -> None:
    key = _MODULE_KEY
    data = content_of(size, seed=4)
    key_block, body = encrypt_bytes(data, [key.public_key], CTX)
    assert len(body) == body_size(size)
    assert decrypt_bytes(key_block, body, key, CTX)[1] == data


# --- refusals -----------------------------------------------------------------------------


def test_a_key_that_is_not_a_recipient_is_refused(
    alice: PrivateKey, stranger: PrivateKey, tmp_path: Path
) -> None:
    data = content_of(CHUNK_SIZE + 1, seed=5)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    assert_refused_without_plaintext(key_block, body, stranger, CTX)
    out = tmp_path / "out"
    with out.open("w+b") as sink, pytest.raises(DecryptionError):
        decrypt_stream(key_block, io.BytesIO(body), sink, stranger, CTX)
    assert out.read_bytes() == b""


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_flipping_any_single_byte_of_a_small_body_is_refused(mask: int, alice: PrivateKey) -> None:
    key_block, body = encrypt_bytes(b"meet me at the usual place", [alice.public_key], CTX)
    assert len(body) == body_size(26)
    accepted = []
    for position in range(len(body)):
        tampered = bytearray(body)
        tampered[position] ^= mask
        if not refused_without_plaintext(key_block, bytes(tampered), alice, CTX):
            accepted.append(position)
    assert accepted == [], f"body bytes whose flip was not refused: {accepted}"


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_flipping_any_single_byte_of_the_key_block_is_refused(mask: int, alice: PrivateKey) -> None:
    key_block, body = encrypt_bytes(b"meet me at the usual place", [alice.public_key], CTX)
    accepted = []
    for position in range(len(key_block)):
        tampered = bytearray(key_block)
        tampered[position] ^= mask
        if not refused_without_plaintext(bytes(tampered), body, alice, CTX):
            accepted.append(position)
    assert accepted == [], f"key-block bytes whose flip was not refused: {accepted}"


def test_flipping_a_byte_in_any_chunk_of_a_large_body_releases_only_earlier_chunks(
    alice: PrivateKey,
) -> None:
    data = content_of(4 * CHUNK_SIZE + 100, seed=6)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    starts = chunk_offsets(body)[:-1]
    assert len(starts) == 5
    for index, start in enumerate(starts):
        end = min(start + SEALED_CHUNK, len(body))
        for position in (start, (start + end) // 2, end - 1):
            tampered = bytearray(body)
            tampered[position] ^= 0x20
            with pytest.raises(DecryptionError):
                decrypt_bytes(key_block, bytes(tampered), alice, CTX)
            # Only the chunks before the damaged one, each authentic, came out.
            released = released_before_refusal(key_block, bytes(tampered), alice, CTX)
            assert released == first_chunks(data, index)


def truncation_points(body: bytes) -> list[int]:
    """Every chunk boundary of `body`, and a few offsets in between."""
    boundaries = [0, 1, HEADER_END, CONTENT_START, *chunk_offsets(body)[:-1]]
    in_between = [
        HEADER_END - 1,
        HEADER_END + 1,
        CONTENT_START - 1,
        CONTENT_START + 1,
        CONTENT_START + SEALED_CHUNK // 2,
        CONTENT_START + 2 * SEALED_CHUNK + 12345,
        len(body) - 17,  # the final message without its tag
        len(body) - 1,
    ]
    return sorted(set(boundaries + in_between))


@pytest.fixture(scope="module")
def multi_chunk(alice: PrivateKey) -> tuple[bytes, bytes, bytes]:
    data = content_of(4 * CHUNK_SIZE + 777, seed=7)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    assert len(chunk_offsets(body)) == 6  # five content messages, then the end
    return data, key_block, body


def test_truncation_at_every_chunk_boundary_is_refused_by_decrypt_bytes(
    multi_chunk: tuple[bytes, bytes, bytes], alice: PrivateKey
) -> None:
    _, key_block, body = multi_chunk
    for cut in truncation_points(body):
        with pytest.raises(DecryptionError):
            decrypt_bytes(key_block, body[:cut], alice, CTX)


def test_a_seekable_body_of_the_wrong_length_is_refused_before_anything_is_revealed(
    multi_chunk: tuple[bytes, bytes, bytes], alice: PrivateKey
) -> None:
    _, key_block, body = multi_chunk
    for forged in [body[:cut] for cut in truncation_points(body)] + [body + b"\0"]:
        # Refused when opened: not even the name, let alone a chunk, comes out.
        with pytest.raises(DecryptionError):
            EnvelopeReader(key_block, io.BytesIO(forged), alice, CTX)


def test_a_key_block_whose_sealed_size_disagrees_with_the_body_is_refused(
    alice: PrivateKey,
) -> None:
    # A holder of the file key (any recipient) could seal a wrong size for someone else.
    data = content_of(3 * CHUNK_SIZE + 5, seed=18)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    file_key, size = envelope._open_key_block(key_block, alice)
    assert size == len(data)
    for wrong in (0, CHUNK_SIZE, len(data) - 1, len(data) + 1, 10 * len(data)):
        forged = envelope._build_key_block(file_key, wrong, [alice.public_key])
        with pytest.raises(DecryptionError):
            decrypt_bytes(forged, body, alice, CTX)
        released = released_before_refusal(forged, body, alice, CTX)
        assert sum(map(len, released)) <= min(wrong, len(data))
        assert released == first_chunks(data, len(released))


def test_truncation_at_every_chunk_boundary_leaves_a_real_sink_file_empty(
    multi_chunk: tuple[bytes, bytes, bytes], alice: PrivateKey, tmp_path: Path
) -> None:
    _, key_block, body = multi_chunk
    blob, out = tmp_path / "blob", tmp_path / "out"
    for cut in truncation_points(body):
        blob.write_bytes(body[:cut])
        # Seekable body (refused up front) and one-way body (refused after chunks went out).
        with (
            blob.open("rb") as seekable_body,
            out.open("w+b") as sink,
            pytest.raises(DecryptionError),
        ):
            decrypt_stream(key_block, seekable_body, sink, alice, CTX)
        assert out.stat().st_size == 0, f"plaintext left behind after cut at {cut}"
        with (
            blob.open("rb") as raw,
            out.open("w+b") as sink,
            pytest.raises(DecryptionError),
        ):
            decrypt_stream(key_block, OneWayStream(raw), sink, alice, CTX)
        assert out.stat().st_size == 0, f"plaintext left behind after cut at {cut} (one-way)"


def test_decrypt_stream_truncates_back_to_where_it_started(
    multi_chunk: tuple[bytes, bytes, bytes], alice: PrivateKey, tmp_path: Path
) -> None:
    _, key_block, body = multi_chunk
    out = tmp_path / "out"
    with out.open("w+b") as sink:
        sink.write(b"already here")
        with pytest.raises(DecryptionError):
            decrypt_stream(key_block, OneWayStream(body[:-1]), sink, alice, CTX)
    assert out.read_bytes() == b"already here"


def test_decrypt_stream_refuses_a_sink_it_could_not_truncate(alice: PrivateKey) -> None:
    key_block, body = encrypt_bytes(b"x", [alice.public_key], CTX)

    class Unseekable(io.BytesIO):
        def seekable(self) -> bool:
            return False

    with pytest.raises(ValueError):
        decrypt_stream(key_block, io.BytesIO(body), Unseekable(), alice, CTX)


@pytest.mark.parametrize("content_chunks", [3, 4], ids=["partial-last", "full-last"])
def test_one_way_stream_missing_its_last_chunk_fails_before_the_final_chunk(
    content_chunks: int, alice: PrivateKey
) -> None:
    size = 3 * CHUNK_SIZE + (CHUNK_SIZE if content_chunks == 4 else 10)
    data = content_of(size, seed=8)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    last_chunk_start = chunk_offsets(body)[-2]
    released: list[bytes] = []
    reader = EnvelopeReader(key_block, OneWayStream(body[:last_chunk_start]), alice, CTX)
    with pytest.raises(DecryptionError):
        for chunk in reader.chunks():
            released.append(chunk)
    # Every released chunk is the authentic chunk at its place; the last never came out.
    assert released == first_chunks(data, 3)
    assert sum(map(len, released)) < size


def test_one_way_stream_whose_final_chunk_is_altered_never_releases_it(alice: PrivateKey) -> None:
    data = content_of(2 * CHUNK_SIZE + 10, seed=9)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    tampered = bytearray(body)
    tampered[-5] ^= 0x01
    assert released_before_refusal(key_block, bytes(tampered), alice, CTX) == first_chunks(data, 2)


@pytest.mark.parametrize(
    "other_ctx",
    [
        context("report-other", "item-0001"),
        context("report-7f3a", "item-0002"),
        context("item-0001", "report-7f3a"),
        context("report-7f3a"),
        context("report-7f3a", "item-0001", ""),
        context(),
        b"",
    ],
    ids=["other-report", "other-item", "swapped", "report-only", "extra-part", "empty", "raw"],
)
def test_an_envelope_is_refused_in_any_other_context(other_ctx: bytes, alice: PrivateKey) -> None:
    key_block, body = encrypt_bytes(content_of(CHUNK_SIZE + 3), [alice.public_key], CTX)
    assert_refused_without_plaintext(key_block, body, alice, other_ctx)


def test_context_encoding_is_unambiguous() -> None:
    assert context("ab", "c") != context("a", "bc")
    assert context("a", "") != context("a")
    assert context("", "a") != context("a")


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=400))
def test_a_garbage_key_block_is_refused(garbage: bytes) -> None:
    _, body = _SMALL_ENVELOPE
    assert_refused_without_plaintext(garbage, body, _MODULE_KEY, CTX)


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=2 * body_size(10)))
def test_a_garbage_body_is_refused(garbage: bytes) -> None:
    key_block, _ = _SMALL_ENVELOPE
    assert_refused_without_plaintext(key_block, garbage, _MODULE_KEY, CTX)


@pytest.mark.parametrize(
    "make_key_block",
    [
        lambda kb: b"",
        lambda kb: bytes([kb[0]]),
        lambda kb: bytes([kb[0] + 1]) + kb[1:],
        lambda kb: kb[:1] + bytes([kb[1] + 1]) + kb[2:],
        lambda kb: kb[:1] + b"\x00",
        lambda kb: kb[:-1],
        lambda kb: kb + b"\x00",
        lambda kb: kb[:2] + os.urandom(len(kb) - 2),
    ],
    ids=["empty", "version-only", "version", "count", "no-entries", "short", "long", "random"],
)
def test_malformed_key_blocks_are_refused(
    make_key_block: Callable[[bytes], bytes], alice: PrivateKey
) -> None:
    key_block, body = encrypt_bytes(b"secret", [alice.public_key], CTX)
    assert_refused_without_plaintext(make_key_block(key_block), body, alice, CTX)


def test_a_random_body_of_the_right_length_is_refused(alice: PrivateKey) -> None:
    key_block, body = encrypt_bytes(content_of(CHUNK_SIZE + 1), [alice.public_key], CTX)
    assert_refused_without_plaintext(key_block, os.urandom(len(body)), alice, CTX)
    assert_refused_without_plaintext(key_block, body[:1] + os.urandom(len(body) - 1), alice, CTX)


def test_a_body_swapped_between_two_envelopes_to_the_same_key_is_refused(
    alice: PrivateKey,
) -> None:
    first_key_block, first_body = encrypt_bytes(content_of(100, seed=1), [alice.public_key], CTX)
    second_key_block, second_body = encrypt_bytes(content_of(100, seed=2), [alice.public_key], CTX)
    assert len(first_body) == len(second_body)
    assert_refused_without_plaintext(first_key_block, second_body, alice, CTX)
    assert_refused_without_plaintext(second_key_block, first_body, alice, CTX)


def test_chunks_reordered_or_replayed_are_refused(alice: PrivateKey) -> None:
    data = content_of(3 * CHUNK_SIZE + 1, seed=10)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    a, b, c, *_ = chunk_offsets(body)
    first, second = body[a:b], body[b:c]
    swapped = body[:a] + second + first + body[c:]
    assert_refused_without_plaintext(key_block, swapped, alice, CTX)
    replayed = body[:a] + first + first + body[c:]
    with pytest.raises(DecryptionError):
        decrypt_bytes(key_block, replayed, alice, CTX)
    assert released_before_refusal(key_block, replayed, alice, CTX) == first_chunks(data, 1)


def test_the_final_chunk_of_another_envelope_is_refused(alice: PrivateKey) -> None:
    data = content_of(CHUNK_SIZE + 10, seed=11)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    _, other = encrypt_bytes(content_of(CHUNK_SIZE + 10, seed=12), [alice.public_key], CTX)
    last = chunk_offsets(body)[-2]
    forged = body[:last] + other[last:]
    with pytest.raises(DecryptionError):
        decrypt_bytes(key_block, forged, alice, CTX)


@pytest.mark.parametrize(
    "trailer", [b"\x00", b"x" * 17, os.urandom(SEALED_CHUNK)], ids=["1", "17", "chunk"]
)
@pytest.mark.parametrize(
    "size", [2 * CHUNK_SIZE + 1, 3 * CHUNK_SIZE], ids=["short-final", "full-final"]
)
def test_trailing_bytes_after_the_final_chunk_are_refused(
    size: int, trailer: bytes, alice: PrivateKey, tmp_path: Path
) -> None:
    data = content_of(size, seed=13)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX)
    forged = body + trailer
    with pytest.raises(DecryptionError):
        decrypt_bytes(key_block, forged, alice, CTX)
    # The full chunks before the final one are authentic; the final one is held back.
    before_final = (size - 1) // CHUNK_SIZE
    assert released_before_refusal(key_block, forged, alice, CTX) == first_chunks(
        data, before_final
    )
    out = tmp_path / "out"
    with out.open("w+b") as sink, pytest.raises(DecryptionError):
        decrypt_stream(key_block, OneWayStream(forged), sink, alice, CTX)
    assert out.read_bytes() == b""


def test_a_body_can_be_read_only_once(alice: PrivateKey) -> None:
    key_block, body = encrypt_bytes(b"once", [alice.public_key], CTX)
    reader = EnvelopeReader(key_block, io.BytesIO(body), alice, CTX)
    assert b"".join(reader.chunks()) == b"once"
    with pytest.raises(ValueError):
        list(reader.chunks())


def test_contents_are_known_before_any_chunk_is_read(alice: PrivateKey) -> None:
    key_block, body = encrypt_bytes(b"abc", [alice.public_key], CTX, name="n.txt", content_type="t")
    reader = EnvelopeReader(key_block, io.BytesIO(body), alice, CTX)
    assert reader.contents == Contents(name="n.txt", content_type="t", size=3)


# --- recipients ---------------------------------------------------------------------------


def test_an_added_recipient_decrypts_the_unchanged_body(alice: PrivateKey, bob: PrivateKey) -> None:
    data = content_of(CHUNK_SIZE + 1, seed=14)
    key_block, body = encrypt_bytes(data, [alice.public_key], CTX, name=NAME)
    with pytest.raises(DecryptionError):
        decrypt_bytes(key_block, body, bob, CTX)
    body_before = bytes(body)
    widened = add_recipient(key_block, alice, bob.public_key)
    assert body == body_before
    assert recipient_ids(widened) == [recipient_id(alice.public_key), recipient_id(bob.public_key)]
    for key in (alice, bob):
        contents, plaintext = decrypt_bytes(widened, body, key, CTX)
        assert plaintext == data
        assert contents.name == NAME
        assert contents.size == len(data)


def test_a_recipient_added_by_a_later_recipient_can_decrypt(
    alice: PrivateKey, bob: PrivateKey, carol: PrivateKey
) -> None:
    key_block, body = encrypt_bytes(b"chain", [alice.public_key], CTX)
    key_block = add_recipient(key_block, alice, bob.public_key)
    key_block = add_recipient(key_block, bob, carol.public_key)
    assert decrypt_bytes(key_block, body, carol, CTX)[1] == b"chain"


def test_adding_a_recipient_needs_a_key_that_opens_the_envelope(
    alice: PrivateKey, bob: PrivateKey, stranger: PrivateKey
) -> None:
    key_block, _ = encrypt_bytes(b"x", [alice.public_key], CTX)
    with pytest.raises(DecryptionError):
        add_recipient(key_block, stranger, bob.public_key)
    with pytest.raises(DecryptionError):
        add_recipient(key_block, stranger, stranger.public_key)
    with pytest.raises(DecryptionError):
        add_recipient(b"garbage", alice, bob.public_key)


def test_adding_an_existing_recipient_changes_nothing(alice: PrivateKey, bob: PrivateKey) -> None:
    key_block, _ = encrypt_bytes(b"x", [alice.public_key, bob.public_key], CTX)
    assert add_recipient(key_block, alice, bob.public_key) == key_block


def test_a_removed_recipient_can_no_longer_decrypt_but_the_other_can(
    alice: PrivateKey, bob: PrivateKey
) -> None:
    data = content_of(300, seed=15)
    key_block, body = encrypt_bytes(data, [alice.public_key, bob.public_key], CTX)
    narrowed = remove_recipient(key_block, bob.public_key)
    assert recipient_ids(narrowed) == [recipient_id(alice.public_key)]
    with pytest.raises(DecryptionError):
        decrypt_bytes(narrowed, body, bob, CTX)
    with pytest.raises(DecryptionError):
        add_recipient(narrowed, bob, bob.public_key)
    assert decrypt_bytes(narrowed, body, alice, CTX)[1] == data


def test_removing_the_last_recipient_is_refused(alice: PrivateKey, bob: PrivateKey) -> None:
    key_block, body = encrypt_bytes(b"x", [alice.public_key, bob.public_key], CTX)
    only_alice = remove_recipient(key_block, bob.public_key)
    with pytest.raises(ValueError):
        remove_recipient(only_alice, alice.public_key)
    single, _ = encrypt_bytes(b"x", [alice.public_key], CTX)
    with pytest.raises(ValueError):
        remove_recipient(single, alice.public_key)
    assert decrypt_bytes(only_alice, body, alice, CTX)[1] == b"x"


# --- push-style writing and memory --------------------------------------------------------


@pytest.mark.parametrize(
    "write_sizes",
    [
        [1] * 10 + [100 * KIB, 1, CHUNK_SIZE, CHUNK_SIZE - 1, 0, 7, 200 * KIB + 5, 3],
        [CHUNK_SIZE] * 4,
        [CHUNK_SIZE + 1, CHUNK_SIZE - 1, 2 * CHUNK_SIZE],
        [3 * CHUNK_SIZE + 17],
        [0],
        [],
    ],
    ids=["odd", "whole-chunks", "straddling", "one-big", "empty-write", "no-write"],
)
def test_push_style_writes_of_any_size_give_the_same_content(
    write_sizes: list[int], alice: PrivateKey
) -> None:
    data = content_of(sum(write_sizes), seed=16)
    sink = io.BytesIO()
    writer = EnvelopeWriter(sink, [alice.public_key], CTX, name=NAME, content_type=CONTENT_TYPE)
    offset = 0
    for n in write_sizes:
        assert writer.write(memoryview(data)[offset : offset + n]) == n
        offset += n
        assert writer.size == offset
    key_block = writer.close()
    assert writer.close() == key_block  # close is idempotent
    with pytest.raises(ValueError):
        writer.write(b"late")
    body = sink.getvalue()
    assert len(body) == body_size(len(data))
    contents, plaintext = decrypt_bytes(key_block, body, alice, CTX)
    assert plaintext == data
    assert contents == Contents(name=NAME, content_type=CONTENT_TYPE, size=len(data))


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 9), max_size=8))
def test_push_style_writes_split_anywhere_give_the_same_content(cuts: list[int]) -> None:
    data = content_of(3 * CHUNK_SIZE + 9, seed=17)
    sink = io.BytesIO()
    writer = EnvelopeWriter(sink, [_MODULE_KEY.public_key], CTX)
    bounds = [0, *sorted(cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        writer.write(data[start:end])
    key_block = writer.close()
    assert decrypt_bytes(key_block, sink.getvalue(), _MODULE_KEY, CTX)[1] == data


def test_encrypting_and_decrypting_64_mib_uses_constant_memory(
    alice: PrivateKey, tmp_path: Path
) -> None:
    total = 64 * MIB
    blob = tmp_path / "blob"
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        with blob.open("wb") as sink:
            key_block = encrypt_stream(GeneratedSource(total), sink, [alice.public_key], CTX)
        encrypt_peak = tracemalloc.get_traced_memory()[1] - baseline

        tracemalloc.reset_peak()
        out = CountingSink()
        with blob.open("rb") as body:
            reader = EnvelopeReader(key_block, body, alice, CTX)
            for chunk in reader.chunks():
                out.write(chunk)
        decrypt_peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert blob.stat().st_size == body_size(total)
    assert out.count == total
    expected = hashlib.blake2b()
    source = GeneratedSource(total)
    while block := source.read(CHUNK_SIZE):
        expected.update(block)
    assert out.digest() == expected.digest()
    assert encrypt_peak < MIB, f"encryption peaked {encrypt_peak / MIB:.2f} MiB above baseline"
    assert decrypt_peak < MIB, f"decryption peaked {decrypt_peak / MIB:.2f} MiB above baseline"


def test_encrypt_stream_to_a_write_only_sink_keeps_nothing(alice: PrivateKey) -> None:
    sink = CountingSink()
    key_block = encrypt_stream(GeneratedSource(3 * CHUNK_SIZE), sink, [alice.public_key], CTX)
    assert sink.count == body_size(3 * CHUNK_SIZE)
    assert len(recipient_ids(key_block)) == 1


# --- fuzzing: any alteration of a real envelope, any bytes as a key block ----------------

_FUZZ_DATA = content_of(2 * CHUNK_SIZE + 5, seed=18)
_FUZZ_ENVELOPE = encrypt_bytes(_FUZZ_DATA, [_MODULE_KEY.public_key], CTX, name=NAME)


# One to three edits: a flipped byte, an insertion, a deletion, a cut, an extension; each at a
# position given as a fraction of the length (so one strategy fits data of any length).
_edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "cut", "extend"]),
        st.floats(min_value=0, max_value=1, exclude_max=True),
        st.binary(min_size=1, max_size=40),
    ),
    min_size=1,
    max_size=3,
)


def mutate(data: bytes, edits: list[tuple[str, float, bytes]]) -> bytes:
    """`data` with the edits applied (the result may happen to equal `data`)."""
    mutated = bytearray(data)
    for edit, where, extra in edits:
        at = int(where * len(mutated))
        if edit == "flip" and mutated:
            mutated[at] ^= extra[0] or 1
        elif edit == "insert":
            mutated[at:at] = extra
        elif edit == "delete":
            del mutated[at : at + len(extra)]
        elif edit == "cut":
            del mutated[at:]
        else:
            mutated += extra
    return bytes(mutated)


def assert_refused_releasing_only_authentic_chunks(key_block: bytes, body: bytes) -> None:
    """DecryptionError (no other exception) from both APIs; before it, only authentic chunks."""
    with pytest.raises(DecryptionError):
        decrypt_bytes(key_block, body, _MODULE_KEY, CTX)
    for stream in (io.BytesIO(body), OneWayStream(body)):
        released: list[bytes] = []
        with pytest.raises(DecryptionError):
            for chunk in EnvelopeReader(key_block, stream, _MODULE_KEY, CTX).chunks():
                released.append(chunk)
        assert released == first_chunks(_FUZZ_DATA, len(released))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(edits=_edits)
def test_any_alteration_of_a_body_is_refused(edits: list[tuple[str, float, bytes]]) -> None:
    body = mutate(_FUZZ_ENVELOPE[1], edits)
    assume(body != _FUZZ_ENVELOPE[1])
    assert_refused_releasing_only_authentic_chunks(_FUZZ_ENVELOPE[0], body)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(edits=_edits)
def test_any_alteration_of_a_key_block_is_refused_without_plaintext(
    edits: list[tuple[str, float, bytes]],
) -> None:
    key_block = mutate(_FUZZ_ENVELOPE[0], edits)
    assume(key_block != _FUZZ_ENVELOPE[0])
    assert refused_without_plaintext(key_block, _FUZZ_ENVELOPE[1], _MODULE_KEY, CTX)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    key_block=st.one_of(
        st.binary(max_size=300),
        _edits.map(lambda edits: mutate(_FUZZ_ENVELOPE[0], edits)),
        st.integers(min_value=0, max_value=4).map(lambda n: bytes([1, n]) + bytes(n * 120)),
    )
)
def test_key_block_functions_raise_only_decryption_error_on_any_bytes(key_block: bytes) -> None:
    """Parsing a key block never fails any other way (the one-error-type promise)."""
    try:
        ids = recipient_ids(key_block)
    except DecryptionError:
        ids = None
    if ids is not None:
        assert all(isinstance(rid, bytes) for rid in ids)
    newcomer = generate_keypair().public_key
    try:
        extended = add_recipient(key_block, _MODULE_KEY, newcomer)
    except DecryptionError:
        return
    # It opened (an edit elsewhere left this key's entry whole): the result must hold.
    assert ids is not None and recipient_id(newcomer) in recipient_ids(extended)
