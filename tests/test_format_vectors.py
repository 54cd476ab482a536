"""Specification of the envelope format (docs/format.md), checked against its test vectors.

Three parts:

(a) The project's code (crypto/envelope.py, and check_kind for the item profile)
    opens every good vector in tests/vectors/envelope/ to its plaintext and
    refuses every damaged one with DecryptionError, at the stage the vector names.
(b) `spec_open`, a reader written from docs/format.md with libsodium's
    primitives alone (nacl.bindings; nothing from crypto/), does the same and
    opens envelopes the code makes now; and the code opens what `spec_seal`, a
    writer written from the same page, makes. So the page says all a reader needs.
    Version 2 key blocks (X-Wing entries) are read the same way: X-Wing is
    written here from its draft with pyca/cryptography's ML-KEM-768 and
    libsodium's X25519, HKDF from Python's hmac.
(c) The generator (tests/vectors/make_envelope_vectors.py) still makes the same
    cases with the same structure and verdicts. The code draws its file key,
    stream header and ephemeral keys from the system's random source and takes
    no seed, so new bytes cannot equal the stored ones; everything else must.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import importlib.util
import io
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import nacl.exceptions
import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import (
    MLKEM768PrivateKey,
    MLKEM768PublicKey,
)
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_box_seal,
    crypto_box_seal_open,
    crypto_generichash_blake2b_salt_personal,
    crypto_scalarmult,
    crypto_scalarmult_base,
    crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_init_push,
    crypto_secretstream_xchacha20poly1305_pull,
    crypto_secretstream_xchacha20poly1305_push,
    crypto_secretstream_xchacha20poly1305_state,
    randombytes,
)

from crypto import envelope
from crypto.errors import DecryptionError
from crypto.keys import PrivateKey, PublicKey, generate_keypair
from crypto.xwing import XWingPublicKey, XWingSecretKey
from dropbox.items import check_kind, item_context, read_message_document

ROOT = Path(__file__).parent.parent
VECTORS = Path(__file__).parent / "vectors"
VECTOR_DIR = VECTORS / "envelope"
SPEC = ROOT / "docs" / "format.md"
Vector = dict[str, Any]

NAMES = sorted(path.stem for path in VECTOR_DIR.glob("*.json"))
GOOD = [name for name in NAMES if name.startswith("good-")]
BAD = [name for name in NAMES if name.startswith("bad-")]
STAGES = {"no match", "key block failure", "head failure", "content failure", "item failure"}


def load(name: str) -> Vector:
    """One vector file."""
    vector: Vector = json.loads((VECTOR_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return vector


def raw(vector: Vector, field: str) -> bytes:
    """A base64 field of a vector."""
    return base64.b64decode(vector[field], validate=True)


# --- (b) a reader and a writer written from docs/format.md alone ----------------------------

# Every constant as the page gives it, written out rather than imported from crypto/.
S_VERSION = 0x01
S_V2 = 0x02
S_KIND_X25519, S_KIND_XWING = 0x01, 0x02
S_XWING_CT_BYTES = 1088 + 32
S_XWING_ENTRY_BYTES = 1 + 8 + S_XWING_CT_BYTES + 40 + 16
S_XWING_INFO = b"dropbox-envelope key block 2 X-Wing entry"
S_XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")
S_ID_BYTES = 8
S_ID_PERSON = b"dropbox-rcpt"
S_PAYLOAD_BYTES = 32 + 8
S_ENTRY_BYTES = S_ID_BYTES + 32 + S_PAYLOAD_BYTES + 16
S_HEADER_BYTES = 24
S_ABYTES = 17
S_METADATA_BYTES = 1024
S_CHUNK = 65536
S_HEAD_BYTES = 1 + S_HEADER_BYTES + S_METADATA_BYTES + S_ABYTES
S_AD_PREFIX = b"dropbox-envelope"
S_TAG_MESSAGE = 0
S_TAG_FINAL = 3
S_MESSAGE_TYPE = "application/vnd.dropbox.message+json"


class SpecFailure(Exception):
    """A refusal by the spec reader; `stage` is the vector's `expect` value."""

    stage = ""


class NoMatch(SpecFailure):
    stage = "no match"


class KeyBlockFailure(SpecFailure):
    stage = "key block failure"


class HeadFailure(SpecFailure):
    stage = "head failure"


class ContentFailure(SpecFailure):
    stage = "content failure"


class ItemFailure(SpecFailure):
    stage = "item failure"


def spec_context(*parts: str) -> bytes:
    """Each part as a 2-byte big-endian length and its UTF-8 bytes."""
    out = b""
    for part in parts:
        data = part.encode("utf-8")
        out += len(data).to_bytes(2, "big") + data
    return out


def spec_recipient_id(public_key: bytes) -> bytes:
    """BLAKE2b-64 of the public key, personalised with "dropbox-rcpt"."""
    return crypto_generichash_blake2b_salt_personal(
        public_key, digest_size=S_ID_BYTES, person=S_ID_PERSON
    )


def spec_body_size(size: int) -> int:
    """The one body length a content size allows."""
    chunks = max(1, -(-size // S_CHUNK))
    return S_HEAD_BYTES + size + chunks * S_ABYTES


def spec_entries(key_block: bytes) -> list[tuple[bytes, int, bytes, bytes]]:
    """(recipient id, kind, sealed part, whole entry) per entry; KeyBlockFailure if malformed."""
    if len(key_block) < 2 or key_block[0] not in (S_VERSION, S_V2):
        raise KeyBlockFailure()
    count = key_block[1]
    entries = []
    if key_block[0] == S_VERSION:
        if len(key_block) != 2 + count * S_ENTRY_BYTES:
            raise KeyBlockFailure()
        for i in range(count):
            entry = key_block[2 + i * S_ENTRY_BYTES : 2 + (i + 1) * S_ENTRY_BYTES]
            entries.append((entry[:S_ID_BYTES], S_KIND_X25519, entry[S_ID_BYTES:], entry))
        return entries
    sizes = {S_KIND_X25519: 1 + S_ENTRY_BYTES, S_KIND_XWING: S_XWING_ENTRY_BYTES}
    offset = 2
    for _ in range(count):
        if offset >= len(key_block) or key_block[offset] not in sizes:
            raise KeyBlockFailure()
        entry = key_block[offset : offset + sizes[key_block[offset]]]
        if len(entry) != sizes[key_block[offset]]:
            raise KeyBlockFailure()
        entries.append((entry[1 : 1 + S_ID_BYTES], entry[0], entry[1 + S_ID_BYTES :], entry))
        offset += len(entry)
    if offset != len(key_block):
        raise KeyBlockFailure()
    return entries


def spec_xwing_keys(seed: bytes) -> tuple[MLKEM768PrivateKey, bytes, bytes]:
    """The draft's expandDecapsulationKey: (ML-KEM key, X25519 secret, X-Wing public key)."""
    expanded = hashlib.shake_256(seed).digest(96)
    mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    sk_x = expanded[64:]
    return mlkem, sk_x, mlkem.public_key().public_bytes_raw() + crypto_scalarmult_base(sk_x)


def spec_combiner(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + S_XWING_LABEL).digest()


def spec_hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 with SHA-256, 32 bytes of output (one block)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def spec_xwing_entry(payload: bytes, public_key: bytes) -> bytes:
    """A version 2 X-Wing entry, as the page says a writer makes it."""
    pk_m, pk_x = public_key[:1184], public_key[1184:]
    ek_x = randombytes(32)
    ct_x = crypto_scalarmult_base(ek_x)
    ss_m, ct_m = MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
    ct = ct_m + ct_x
    shared = spec_combiner(ss_m, crypto_scalarmult(ek_x, pk_x), ct_x, pk_x)
    key = spec_hkdf_sha256(shared, ct + public_key, S_XWING_INFO)
    head = bytes([S_KIND_XWING]) + spec_recipient_id(public_key)
    return head + ct + crypto_aead_chacha20poly1305_ietf_encrypt(payload, head, bytes(12), key)


def spec_open_key_block(
    key_block: bytes, secret_key: bytes, kind: str = "x25519"
) -> tuple[bytes, int]:
    """The file key and content size sealed to `secret_key`: the first entry with its id."""
    if kind == "xwing":
        mlkem, sk_x, public_key = spec_xwing_keys(secret_key)
    else:
        public_key = crypto_scalarmult_base(secret_key)
    own = spec_recipient_id(public_key)
    for rid, entry_kind, sealed, entry in spec_entries(key_block):
        if rid != own:
            continue
        try:
            if kind == "xwing" and entry_kind == S_KIND_XWING:
                ct, wrapped = sealed[:S_XWING_CT_BYTES], sealed[S_XWING_CT_BYTES:]
                ss_m = mlkem.decapsulate(ct[:1088])
                ss_x = crypto_scalarmult(sk_x, ct[1088:])
                shared = spec_combiner(ss_m, ss_x, ct[1088:], public_key[1184:])
                key = spec_hkdf_sha256(shared, ct + public_key, S_XWING_INFO)
                payload = crypto_aead_chacha20poly1305_ietf_decrypt(
                    wrapped, entry[:9], bytes(12), key
                )
            elif kind == "x25519" and entry_kind == S_KIND_X25519:
                payload = crypto_box_seal_open(sealed, public_key, secret_key)
            else:
                raise KeyBlockFailure()
        except (nacl.exceptions.CryptoError, RuntimeError) as exc:
            raise KeyBlockFailure() from exc
        return payload[:32], int.from_bytes(payload[32:40], "big")
    raise NoMatch()


def spec_metadata(block: bytes) -> tuple[str, str]:
    """Name and content type from the 1024-byte metadata block."""
    length = int.from_bytes(block[:2], "big")
    if length > S_METADATA_BYTES - 2:
        raise HeadFailure()
    try:
        fields = json.loads(block[2 : 2 + length].decode("utf-8"))
    except ValueError as exc:
        raise HeadFailure() from exc
    if not isinstance(fields, dict):
        raise HeadFailure()
    name, content_type = fields.get("name"), fields.get("type")
    if not isinstance(name, str) or not isinstance(content_type, str):
        raise HeadFailure()
    return name, content_type


def spec_open(
    key_block: bytes, body: bytes, secret_key: bytes, ctx: bytes, kind: str = "x25519"
) -> tuple[dict[str, Any], bytes]:
    """Open an envelope reading its body front to back, as a stream; (contents, plaintext)."""
    file_key, size = spec_open_key_block(key_block, secret_key, kind)
    stream = io.BytesIO(body)
    head = stream.read(S_HEAD_BYTES)
    if len(head) != S_HEAD_BYTES or head[0] != S_VERSION:
        raise HeadFailure()
    state = crypto_secretstream_xchacha20poly1305_state()
    try:
        crypto_secretstream_xchacha20poly1305_init_pull(
            state, head[1 : 1 + S_HEADER_BYTES], file_key
        )
        metadata, tag = crypto_secretstream_xchacha20poly1305_pull(
            state, head[1 + S_HEADER_BYTES :], S_AD_PREFIX + bytes([S_VERSION]) + ctx
        )
    except nacl.exceptions.CryptoError as exc:
        raise HeadFailure() from exc
    if tag != S_TAG_MESSAGE or len(metadata) != S_METADATA_BYTES:
        raise HeadFailure()
    name, content_type = spec_metadata(metadata)
    contents = {"name": name, "content_type": content_type, "size": size}
    plaintext = b""
    index = 0
    while True:
        ciphertext = stream.read(S_CHUNK + S_ABYTES)
        if len(ciphertext) < S_ABYTES:
            raise ContentFailure()  # the stream ends before its final chunk
        try:
            chunk, tag = crypto_secretstream_xchacha20poly1305_pull(state, ciphertext)
        except nacl.exceptions.CryptoError as exc:
            raise ContentFailure() from exc
        plaintext += chunk
        if len(plaintext) > size:
            raise ContentFailure()
        if tag == S_TAG_FINAL:
            if len(plaintext) != size or stream.read(1) or (index > 0 and not chunk):
                raise ContentFailure()
            return contents, plaintext
        if tag != S_TAG_MESSAGE or len(chunk) != S_CHUNK:
            raise ContentFailure()
        index += 1


def spec_check_item(contents: dict[str, Any], kind: str) -> None:
    """The item profile: a file has a name; any other item is a message document of its kind."""
    if kind == "file":
        fits = contents["name"] != ""
    else:
        expected = f"{S_MESSAGE_TYPE}; kind={kind}"
        fits = contents["name"] == "" and contents["content_type"] == expected
    if not fits:
        raise ItemFailure()


def spec_seal(
    plaintext: bytes,
    recipients: list[bytes],
    ctx: bytes,
    name: str = "",
    content_type: str = "application/octet-stream",
) -> tuple[bytes, bytes]:
    """Write an envelope as the page says a writer must; (key block, body)."""
    file_key = randombytes(32)
    payload = file_key + len(plaintext).to_bytes(8, "big")
    if all(len(pk) == 32 for pk in recipients):
        key_block = bytes([S_VERSION, len(recipients)]) + b"".join(
            spec_recipient_id(pk) + crypto_box_seal(payload, pk) for pk in recipients
        )
    else:  # version 2: an X-Wing recipient (a 1216-byte public key)
        key_block = bytes([S_V2, len(recipients)]) + b"".join(
            spec_xwing_entry(payload, pk)
            if len(pk) != 32
            else bytes([S_KIND_X25519]) + spec_recipient_id(pk) + crypto_box_seal(payload, pk)
            for pk in recipients
        )
    text = json.dumps({"name": name, "type": content_type}, ensure_ascii=False).encode()
    metadata = len(text).to_bytes(2, "big") + text + bytes(S_METADATA_BYTES - 2 - len(text))
    state = crypto_secretstream_xchacha20poly1305_state()
    header = crypto_secretstream_xchacha20poly1305_init_push(state, file_key)
    body = bytes([S_VERSION]) + header
    body += crypto_secretstream_xchacha20poly1305_push(
        state, metadata, S_AD_PREFIX + bytes([S_VERSION]) + ctx, S_TAG_MESSAGE
    )
    chunks = [plaintext[i : i + S_CHUNK] for i in range(0, len(plaintext), S_CHUNK)] or [b""]
    for i, chunk in enumerate(chunks):
        tag = S_TAG_FINAL if i == len(chunks) - 1 else S_TAG_MESSAGE
        body += crypto_secretstream_xchacha20poly1305_push(state, chunk, None, tag)
    return key_block, body


Identity = tuple[str, bytes]  # ("x25519" or "xwing", secret key)


def identities(vector: Vector) -> list[Identity]:
    """The keys a vector must be read with: X25519 secret keys, then X-Wing ones."""
    return [("x25519", bytes.fromhex(k)) for k in vector["identities"]] + [
        ("xwing", bytes.fromhex(k)) for k in vector.get("xwing_identities", [])
    ]


def code_key(identity: Identity) -> PrivateKey | XWingSecretKey:
    kind, secret = identity
    return XWingSecretKey(secret) if kind == "xwing" else PrivateKey(secret)


def code_public(public_key: str) -> PublicKey | XWingPublicKey:
    raw_key = bytes.fromhex(public_key)
    return PublicKey(raw_key) if len(raw_key) == 32 else XWingPublicKey(raw_key)


def spec_verdict(vector: Vector, identity: Identity) -> str:
    """What the spec reader makes of a vector: "success" or the stage of its refusal."""
    kind, secret_key = identity
    try:
        contents, plaintext = spec_open(
            raw(vector, "key_block"),
            raw(vector, "body"),
            secret_key,
            spec_context_of(vector),
            kind,
        )
        if "item_kind" in vector:
            spec_check_item(contents, vector["item_kind"])
    except SpecFailure as failure:
        return failure.stage
    assert contents == vector["contents"]
    assert hashlib.sha256(plaintext).hexdigest() == vector["plaintext_sha256"]
    return "success"


def spec_context_of(vector: Vector) -> bytes:
    """The context bytes, from the parts as the page encodes them (and checked against hex)."""
    ctx = spec_context(*vector["context_parts"])
    assert ctx.hex() == vector["context"]
    return ctx


# --- (a) what the project's code makes of a vector ------------------------------------------


class OneWay:
    """A body that can only be read forward, as from a socket: no seek, no length."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._stream.read(size)


GENERIC = DecryptionError().args[0]


def refused(exc: DecryptionError) -> str:
    """A refusal, checked to say nothing of its cause."""
    assert str(exc) == GENERIC
    return "refused"


def code_verdict(vector: Vector, identity: Identity) -> dict[str, str]:
    """What crypto/envelope.py makes of a vector, by each way the project reads an envelope."""
    key_block, body = raw(vector, "key_block"), raw(vector, "body")
    key, ctx = code_key(identity), bytes.fromhex(vector["context"])
    wanted = vector.get("contents")
    verdict: dict[str, str] = {}
    opened: envelope.Contents | None = None
    try:
        opened, plaintext = envelope.decrypt_bytes(key_block, body, key, ctx)
        if "plaintext_sha256" in vector:
            assert hashlib.sha256(plaintext).hexdigest() == vector["plaintext_sha256"]
        if "plaintext" in vector:
            assert plaintext.hex() == vector["plaintext"]
        verdict["decrypt_bytes"] = "opened"
    except DecryptionError as exc:
        verdict["decrypt_bytes"] = refused(exc)
    try:
        reader = envelope.EnvelopeReader(key_block, OneWay(body), key, ctx)
    except DecryptionError as exc:
        verdict["one_way"] = refused(exc) + " on opening"
    else:
        if wanted is not None:
            assert dataclasses.asdict(reader.contents) == wanted
        try:
            streamed = b"".join(reader.chunks())
            if "plaintext_sha256" in vector:
                assert hashlib.sha256(streamed).hexdigest() == vector["plaintext_sha256"]
            verdict["one_way"] = "opened"
        except DecryptionError as exc:
            verdict["one_way"] = refused(exc) + " in the content"
    try:
        head = envelope.read_head(key_block, body[: envelope.HEAD_BYTES], len(body), key, ctx)
        if wanted is not None:
            assert dataclasses.asdict(head) == wanted
        verdict["read_head"] = "opened"
    except DecryptionError as exc:
        verdict["read_head"] = refused(exc)
    if "item_kind" in vector and opened is not None:
        try:
            check_kind(opened, vector["item_kind"])
            verdict["item"] = "fits"
        except DecryptionError as exc:
            verdict["item"] = refused(exc)
    return verdict


def expected_code_verdict(vector: Vector) -> dict[str, str]:
    """The verdict docs/format.md asks of a reader, by each way of reading."""
    expect = vector["expect"]
    if expect in ("success", "item failure"):
        verdict = {"decrypt_bytes": "opened", "one_way": "opened", "read_head": "opened"}
        if "item_kind" in vector:
            verdict["item"] = "fits" if expect == "success" else "refused"
    elif expect == "content failure":
        length_known = "refused" if vector["length_check"] == "fails" else "opened"
        verdict = {
            "decrypt_bytes": "refused",
            "one_way": "refused in the content",
            "read_head": length_known,
        }
    else:
        verdict = {
            "decrypt_bytes": "refused",
            "one_way": "refused on opening",
            "read_head": "refused",
        }
    return verdict


# --- (a) tests ------------------------------------------------------------------------------


def test_the_vectors_are_there_good_and_bad() -> None:
    assert len(GOOD) >= 10 and len(BAD) >= 32
    assert set(GOOD) | set(BAD) == set(NAMES)
    for name in NAMES:
        vector = load(name)
        assert (vector["expect"] == "success") == name.startswith("good-")
        assert vector["expect"] in STAGES | {"success"}
        assert identities(vector)


@pytest.mark.parametrize("name", GOOD)
def test_the_code_opens_every_good_vector_to_its_plaintext(name: str) -> None:
    vector = load(name)
    for identity in identities(vector):
        assert code_verdict(vector, identity) == expected_code_verdict(vector)
    key_block = raw(vector, "key_block")
    ids = [rid.hex() for rid in envelope.recipient_ids(key_block)]
    assert ids == vector["recipient_ids"]
    assert ids == [envelope.recipient_id(code_public(pk)).hex() for pk in vector["recipients"]]
    assert len(raw(vector, "body")) == envelope.body_size(vector["contents"]["size"])


@pytest.mark.parametrize("name", BAD)
def test_the_code_refuses_every_damaged_vector_at_its_stage(name: str) -> None:
    vector = load(name)
    expected = expected_code_verdict(vector)
    for identity in identities(vector):
        assert code_verdict(vector, identity) == expected


@pytest.mark.parametrize("name", [n for n in BAD if load(n)["expect"] == "no match"])
def test_a_vector_with_no_match_has_no_entry_for_the_reader(name: str) -> None:
    vector = load(name)
    ids = envelope.recipient_ids(raw(vector, "key_block"))
    for identity in identities(vector):
        assert envelope.recipient_id(code_key(identity).public_key) not in ids


@pytest.mark.parametrize("name", [n for n in BAD if load(n)["expect"] == "key block failure"])
def test_a_key_block_failure_is_a_malformed_block_or_an_entry_that_does_not_open(
    name: str,
) -> None:
    vector = load(name)
    key_block = raw(vector, "key_block")
    for identity in identities(vector):
        own = envelope.recipient_id(code_key(identity).public_key)
        try:
            ids = envelope.recipient_ids(key_block)
        except DecryptionError:
            continue  # malformed
        assert own in ids  # an entry names the reader, but it does not open


def test_the_message_vector_holds_a_message_document() -> None:
    vector = load("good-message")
    text, details = read_message_document(bytes.fromhex(vector["plaintext"]))
    assert text.startswith("Bonjour") and details == {}


# --- (b) tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_the_spec_reader_gives_every_vector_its_expected_verdict(name: str) -> None:
    vector = load(name)
    for identity in identities(vector):
        assert spec_verdict(vector, identity) == vector["expect"]
    if vector["expect"] == "success":
        ids = [rid.hex() for rid, *_ in spec_entries(raw(vector, "key_block"))]
        assert ids == vector["recipient_ids"]
        assert ids == [spec_recipient_id(bytes.fromhex(pk)).hex() for pk in vector["recipients"]]


@pytest.mark.parametrize("name", [n for n in BAD if load(n)["expect"] == "content failure"])
def test_the_length_check_field_is_what_the_spec_body_size_gives(name: str) -> None:
    vector = load(name)
    matches = len(raw(vector, "body")) == spec_body_size(vector["contents"]["size"])
    assert vector["length_check"] == ("passes" if matches else "fails")


SIZES = [0, 1, 100, S_CHUNK - 1, S_CHUNK, S_CHUNK + 1, 2 * S_CHUNK, 3 * S_CHUNK + 5]
NAME = "Procès-verbal n° 7 — copie.pdf"


def fresh_context() -> bytes:
    return item_context(
        hashlib.sha256(b"r").hexdigest()[:32], hashlib.sha256(b"i").hexdigest()[:32]
    )


@pytest.mark.parametrize("size", SIZES)
def test_the_spec_reader_opens_envelopes_the_code_makes_now(size: int) -> None:
    alice, bob = generate_keypair(), generate_keypair()
    plaintext = hashlib.shake_256(f"fresh {size}".encode()).digest(size)
    ctx = fresh_context()
    key_block, body = envelope.encrypt_bytes(
        plaintext, [alice.public_key, bob.public_key], ctx, name=NAME, content_type="text/plain"
    )
    assert len(body) == spec_body_size(size) == envelope.body_size(size)
    for key in (alice, bob):
        contents, opened = spec_open(key_block, body, bytes(key), ctx)
        assert opened == plaintext
        assert contents == {"name": NAME, "content_type": "text/plain", "size": size}


def test_the_spec_reader_opens_a_streamed_and_resealed_envelope() -> None:
    request, office = generate_keypair(), generate_keypair()
    ctx = fresh_context()
    plaintext = hashlib.shake_256(b"streamed").digest(2 * S_CHUNK + 300)
    sink = io.BytesIO()
    writer = envelope.EnvelopeWriter(sink, [request.public_key], ctx, name="a.bin")
    for start in range(0, len(plaintext), 7000):  # pieces that straddle chunk edges
        writer.write(plaintext[start : start + 7000])
    key_block = envelope.add_recipient(writer.close(), request, office.public_key)
    key_block = envelope.remove_recipient(key_block, request.public_key)
    _, opened = spec_open(key_block, sink.getvalue(), bytes(office), ctx)
    assert opened == plaintext
    with pytest.raises(NoMatch):
        spec_open(key_block, sink.getvalue(), bytes(request), ctx)


@pytest.mark.parametrize("size", SIZES)
def test_the_code_opens_envelopes_the_spec_writer_makes(size: int) -> None:
    alice, bob = generate_keypair(), generate_keypair()
    plaintext = hashlib.shake_256(f"spec {size}".encode()).digest(size)
    ctx = fresh_context()
    key_block, body = spec_seal(
        plaintext, [bytes(alice.public_key), bytes(bob.public_key)], ctx, NAME, "text/plain"
    )
    for key in (alice, bob):
        contents, opened = envelope.decrypt_bytes(key_block, body, key, ctx)
        assert opened == plaintext
        assert contents == envelope.Contents(NAME, "text/plain", size)
        with pytest.raises(DecryptionError):
            envelope.decrypt_bytes(key_block, body, key, ctx + b"\x00")


def test_the_spec_reader_opens_mixed_version_2_envelopes_the_code_makes_now() -> None:
    source, office = generate_keypair(), XWingSecretKey.generate()
    ctx = fresh_context()
    plaintext = hashlib.shake_256(b"mixed").digest(S_CHUNK + 9)
    key_block, body = envelope.encrypt_bytes(
        plaintext, [source.public_key, office.public_key], ctx, name=NAME
    )
    assert key_block[0] == S_V2
    assert spec_open(key_block, body, bytes(source), ctx)[1] == plaintext
    assert spec_open(key_block, body, bytes(office), ctx, "xwing")[1] == plaintext
    with pytest.raises(NoMatch):
        spec_open(key_block, body, bytes(XWingSecretKey.generate()), ctx, "xwing")


def test_the_code_opens_mixed_version_2_envelopes_the_spec_writer_makes() -> None:
    source, office = generate_keypair(), XWingSecretKey.generate()
    ctx = fresh_context()
    plaintext = hashlib.shake_256(b"spec mixed").digest(300)
    key_block, body = spec_seal(
        plaintext, [bytes(office.public_key), bytes(source.public_key)], ctx, NAME, "text/plain"
    )
    for key in (source, office):
        contents, opened = envelope.decrypt_bytes(key_block, body, key, ctx)
        assert opened == plaintext
        assert contents == envelope.Contents(NAME, "text/plain", 300)


# --- (c) the generator ----------------------------------------------------------------------

# Fields whose value is fixed by the generator's inputs; the rest come from random bytes.
FIXED_FIELDS = [
    "comment",
    "expect",
    "length_check",
    "identities",
    "xwing_identities",
    "recipients",
    "recipient_ids",
    "context_parts",
    "context",
    "item_kind",
    "contents",
    "plaintext_sha256",
    "plaintext",
]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_envelope_vectors", VECTORS / "make_envelope_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh() -> dict[str, Vector]:
    """The generator's cases, made again now (new random bytes, same everything else)."""
    return {name: case.data for name, case in load_generator().build_cases().items()}


def test_the_generator_makes_the_same_cases_with_the_same_structure(
    fresh: dict[str, Vector],
) -> None:
    assert sorted(fresh) == NAMES
    for name in NAMES:
        stored, again = load(name), fresh[name]
        assert list(again) == list(stored), name
        for field in FIXED_FIELDS:
            assert again.get(field) == stored.get(field), (name, field)
        for field in ("key_block", "body"):
            assert len(raw(again, field)) == len(raw(stored, field)), (name, field)
        assert len(bytes.fromhex(again["file_key"])) == 32


def test_the_generator_makes_new_bytes_each_run(fresh: dict[str, Vector]) -> None:
    # What (c) cannot check: the code takes no seed, so no run repeats the stored bytes.
    assert fresh["good-one-byte"]["body"] != load("good-one-byte")["body"]


def test_fresh_cases_get_the_same_verdicts_from_the_code_and_the_spec_reader(
    fresh: dict[str, Vector],
) -> None:
    # The damage recipes do not depend on the stored bytes: made again, each case fails
    # (or opens) the same way.
    for name, vector in fresh.items():
        for identity in identities(vector):
            assert spec_verdict(vector, identity) == vector["expect"], name
            expected = expected_code_verdict(vector)
            assert code_verdict(vector, identity) == expected, name


# --- the page and the vectors name each other -----------------------------------------------


def spec_text() -> str:
    return SPEC.read_text(encoding="utf-8")


def test_every_vector_is_named_in_the_format_spec() -> None:
    text = spec_text()
    missing = [name for name in NAMES if f"`{name}`" not in text]
    assert not missing


def test_every_vector_and_test_the_spec_names_exists() -> None:
    text = spec_text()
    for name in set(re.findall(r"`((?:good|bad)-[a-z0-9-]+)`", text)):
        assert name in NAMES, name
    for test in set(re.findall(r"`(test_[a-z0-9_]+)`", text)):
        assert callable(globals().get(test)), test


def test_the_spec_constants_are_the_codes() -> None:
    # The page's numbers, as the spec reader writes them, against the module's own.
    assert S_CHUNK == envelope.CHUNK_SIZE and S_HEAD_BYTES == envelope.HEAD_BYTES
    assert S_VERSION == envelope.VERSION
    assert spec_body_size(12345) == envelope.body_size(12345)
    assert spec_context("a", "bc") == envelope.context("a", "bc")


def test_the_worked_examples_in_the_spec_are_right() -> None:
    text = spec_text()
    office = load("good-one-byte")["recipients"][0]
    assert f"`{office}`" in text
    assert f"`{spec_recipient_id(bytes.fromhex(office)).hex()}`" in text
    for part in (
        "dropbox-item",
        "5f1e0c3a9b7d4e26a18c0f4d2b6e9a71",
        "c04b7e19d2a8f3650e1d9c7b4a2f8e03",
    ):
        assert f"\n{spec_context(part).hex()}\n" in text
    assert f"report `{load('good-one-byte')['context_parts'][1]}`" in text
