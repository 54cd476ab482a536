"""Write the envelope test vectors in tests/vectors/envelope/ (see docs/format.md).

Run by hand, from the repository root, only when the format changes:

    .venv/bin/python tests/vectors/make_envelope_vectors.py

Good envelopes are made by the project's own writer (crypto/envelope.py).
Damaged ones are made from them: bytes flipped, cut or moved, and, where a
test needs a stream that is authentic but wrongly built (a missing final tag,
an extra chunk after the final one), chunks pushed with the file key, which
the generator recovers by opening the key block with the recipient's key.

The writer draws its file key, its secretstream header and each sealed box's
ephemeral key from the system's random source, and offers no way to inject
them, so each run gives new bytes. Keys, contexts, plaintexts, names, sizes
and the kind of each damage are fixed: `build_cases` gives the same
structure every time, which tests/test_format_vectors.py checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_init_push,
    crypto_secretstream_xchacha20poly1305_pull,
    crypto_secretstream_xchacha20poly1305_push,
    crypto_secretstream_xchacha20poly1305_state,
)
from nacl.public import PrivateKey, PublicKey, SealedBox

from crypto import envelope
from crypto.xwing import XWingSecretKey

OUT = Path(__file__).parent / "envelope"
CHUNK = envelope.CHUNK_SIZE
HEAD = envelope.HEAD_BYTES
ABYTES = 17
HEADER_BYTES = 24
ENTRY_BYTES = 8 + 88
TAG_MESSAGE, TAG_PUSH, TAG_FINAL = 0, 1, 3
AD_PREFIX = b"dropbox-envelope"
MESSAGE_TYPE = "application/vnd.dropbox.message+json"
# Contents bigger than this are given by their SHA-256 only, to keep the files small.
INLINE_PLAINTEXT = 1024

REPORT_ID = "5f1e0c3a9b7d4e26a18c0f4d2b6e9a71"
ITEM_ID = "c04b7e19d2a8f3650e1d9c7b4a2f8e03"
OTHER_ITEM_ID = "c04b7e19d2a8f3650e1d9c7b4a2f8e04"


def key(label: str) -> PrivateKey:
    """A fixed X25519 key for the vectors, named by its role."""
    return PrivateKey(hashlib.sha256(b"dropbox envelope vector key: " + label.encode()).digest())


def xkey(label: str) -> XWingSecretKey:
    """A fixed X-Wing key for the vectors (its 32-byte decapsulation key), named by its role."""
    return XWingSecretKey(
        hashlib.sha256(b"dropbox envelope vector key: " + label.encode()).digest()
    )


Key = PrivateKey | XWingSecretKey

OFFICE = key("office")
SECOND = key("second office")
STRANGER = key("stranger")
REQUEST = key("request")
SOURCE = key("source")
HYBRID_OFFICE = xkey("hybrid office")
HYBRID_SECOND = xkey("hybrid second office")
HYBRID_STRANGER = xkey("hybrid stranger")
XWING_ENTRY_BYTES = 1 + 8 + 1120 + 40 + 16


def content(label: str, size: int) -> bytes:
    """A fixed plaintext of `size` bytes."""
    return hashlib.shake_256(f"dropbox envelope vector content: {label}".encode()).digest(size)


def item_context(item_id: str = ITEM_ID) -> tuple[list[str], bytes]:
    """The context an item of the vectors' report is bound to, as parts and as bytes."""
    parts = ["dropbox-item", REPORT_ID, item_id]
    return parts, envelope.context(*parts)


# --- helpers that work on the bytes (the generator knows the keys) ---------------------------


def open_entry(key_block: bytes, secret_key: Key) -> tuple[bytes, int]:
    """The (file key, size) sealed to `secret_key` in a key block."""
    if key_block[0] == envelope.KEY_BLOCK_V2 or isinstance(secret_key, XWingSecretKey):
        return envelope._open_key_block(key_block, secret_key)
    assert isinstance(secret_key, PrivateKey)
    rid = envelope.recipient_id(secret_key.public_key)
    for i in range(key_block[1]):
        entry = key_block[2 + i * ENTRY_BYTES : 2 + (i + 1) * ENTRY_BYTES]
        if entry[:8] == rid:
            file_key, size = struct.unpack(">32sQ", SealedBox(secret_key).decrypt(entry[8:]))
            return file_key, size
    raise LookupError("no entry for that key")


def entry_for(public_key: PublicKey, file_key: bytes, size: int) -> bytes:
    """A key-block entry sealing (file key, size) to `public_key`."""
    sealed = SealedBox(public_key).encrypt(struct.pack(">32sQ", file_key, size))
    return envelope.recipient_id(public_key) + bytes(sealed)


def pulled_state(
    body: bytes, file_key: bytes, ctx: bytes, chunks: int
) -> crypto_secretstream_xchacha20poly1305_state:
    """The stream state after the metadata message and `chunks` content messages.

    A pull state holds what the next push needs, so pushing with it continues
    the stream exactly as the writer would have.
    """
    state = crypto_secretstream_xchacha20poly1305_state()
    crypto_secretstream_xchacha20poly1305_init_pull(state, body[1 : 1 + HEADER_BYTES], file_key)
    crypto_secretstream_xchacha20poly1305_pull(
        state, body[1 + HEADER_BYTES : HEAD], AD_PREFIX + b"\x01" + ctx
    )
    for i in range(chunks):
        start = HEAD + i * (CHUNK + ABYTES)
        crypto_secretstream_xchacha20poly1305_pull(state, body[start : start + CHUNK + ABYTES])
    return state


def push(state: crypto_secretstream_xchacha20poly1305_state, data: bytes, tag: int) -> bytes:
    """One more authentic content message."""
    return crypto_secretstream_xchacha20poly1305_push(state, data, None, tag)


def crafted_body(
    file_key: bytes, ctx: bytes, metadata: bytes, metadata_tag: int, data: bytes
) -> bytes:
    """A body built from scratch with a given metadata block and tag (for head damage)."""
    state = crypto_secretstream_xchacha20poly1305_state()
    header = crypto_secretstream_xchacha20poly1305_init_push(state, file_key)
    first = crypto_secretstream_xchacha20poly1305_push(
        state, metadata, AD_PREFIX + b"\x01" + ctx, metadata_tag
    )
    return b"\x01" + header + first + push(state, data, TAG_FINAL)


def metadata_block(text: bytes, length: int | None = None) -> bytes:
    """A 1024-byte metadata block: a length field, the text, zero padding."""
    length = len(text) if length is None else length
    return struct.pack(">H", length) + text + bytes(1022 - len(text))


def flip(data: bytes, offset: int) -> bytes:
    """`data` with the lowest bit of one byte flipped."""
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


# --- the cases -------------------------------------------------------------------------------


class Case:
    """One vector: what the reader is given, and what it must make of it."""

    def __init__(
        self,
        comment: str,
        expect: str,
        *,
        key_block: bytes,
        body: bytes,
        ctx_parts: list[str],
        recipients: list[Key],
        identities: list[Key],
        file_key: bytes,
        plaintext: bytes | None = None,
        name: str = "",
        content_type: str = "application/octet-stream",
        size: int | None = None,
        length_check: str | None = None,
        item_kind: str | None = None,
    ) -> None:
        self.data: dict[str, Any] = {"comment": comment, "expect": expect}
        if length_check is not None:
            self.data["length_check"] = length_check
        self.data["identities"] = [bytes(k).hex() for k in identities if isinstance(k, PrivateKey)]
        hybrid = [bytes(k).hex() for k in identities if isinstance(k, XWingSecretKey)]
        if hybrid:
            self.data["xwing_identities"] = hybrid
        self.data["recipients"] = [bytes(k.public_key).hex() for k in recipients]
        self.data["recipient_ids"] = [envelope.recipient_id(k.public_key).hex() for k in recipients]
        self.data["context_parts"] = ctx_parts
        self.data["context"] = envelope.context(*ctx_parts).hex()
        if item_kind is not None:
            self.data["item_kind"] = item_kind
        self.data["file_key"] = file_key.hex()
        if size is not None:
            self.data["contents"] = {"name": name, "content_type": content_type, "size": size}
        if plaintext is not None:
            self.data["plaintext_sha256"] = hashlib.sha256(plaintext).hexdigest()
            if len(plaintext) <= INLINE_PLAINTEXT:
                self.data["plaintext"] = plaintext.hex()
        self.data["key_block"] = base64.b64encode(key_block).decode("ascii")
        self.data["body"] = base64.b64encode(body).decode("ascii")


class Good:
    """A good envelope made by the project's writer, kept for the damaged cases built on it."""

    def __init__(
        self,
        comment: str,
        plaintext: bytes,
        *,
        recipients: list[Key] | None = None,
        name: str = "",
        content_type: str = "application/octet-stream",
        item_kind: str | None = None,
    ) -> None:
        self.recipients = recipients or [OFFICE]
        self.ctx_parts, self.ctx = item_context()
        self.plaintext = plaintext
        self.name, self.content_type, self.item_kind = name, content_type, item_kind
        self.key_block, self.body = envelope.encrypt_bytes(
            plaintext,
            [k.public_key for k in self.recipients],
            self.ctx,
            name=name,
            content_type=content_type,
        )
        self.file_key, _ = open_entry(self.key_block, self.recipients[0])
        self.comment = comment

    def case(self) -> Case:
        """This envelope as a good vector, opened by each of its recipients."""
        return self.variant(self.comment, "success", plaintext=self.plaintext)

    def variant(
        self,
        comment: str,
        expect: str,
        *,
        key_block: bytes | None = None,
        body: bytes | None = None,
        ctx_parts: list[str] | None = None,
        identities: list[Key] | None = None,
        plaintext: bytes | None = None,
        sealed_size: int | None = None,
        length_check: str | None = None,
        item_kind: str | None = None,
    ) -> Case:
        """A case made from this envelope with some part replaced.

        The contents (name, type, sealed size) are given where a reader learns
        them: for a good envelope, and where the damage is only in the content.
        """
        known = expect in ("success", "content failure", "item failure")
        return Case(
            comment,
            expect,
            key_block=self.key_block if key_block is None else key_block,
            body=self.body if body is None else body,
            ctx_parts=self.ctx_parts if ctx_parts is None else ctx_parts,
            recipients=self.recipients,
            identities=self.recipients if identities is None else identities,
            file_key=self.file_key,
            plaintext=plaintext,
            name=self.name,
            content_type=self.content_type,
            size=(len(self.plaintext) if sealed_size is None else sealed_size) if known else None,
            length_check=length_check,
            item_kind=item_kind or self.item_kind,
        )


def _message(text: str, kind: str) -> tuple[bytes, str]:
    document = {"text": text, "details": {}}
    return json.dumps(document, ensure_ascii=False).encode(), f"{MESSAGE_TYPE}; kind={kind}"


def _resealed() -> Case:
    """Made as an upload is: sealed to a request key, then handed to the office."""
    ctx_parts, ctx = item_context()
    plaintext = content("resealed", 300)
    key_block, body = envelope.encrypt_bytes(
        plaintext, [REQUEST.public_key], ctx, name="scan.png", content_type="image/png"
    )
    key_block = envelope.add_recipient(key_block, REQUEST, OFFICE.public_key)
    key_block = envelope.remove_recipient(key_block, REQUEST.public_key)
    file_key, _ = open_entry(key_block, OFFICE)
    return Case(
        "Sealed to a request key, then re-sealed to the office and the request key's entry "
        "removed, as an upload is. Only the office opens it.",
        "success",
        key_block=key_block,
        body=body,
        ctx_parts=ctx_parts,
        recipients=[OFFICE],
        identities=[OFFICE],
        file_key=file_key,
        plaintext=plaintext,
        name="scan.png",
        content_type="image/png",
        size=len(plaintext),
        item_kind="file",
    )


def _long_metadata() -> Good:
    # The JSON text of the metadata is exactly 1022 bytes, the most the block holds.
    overhead = len(json.dumps({"name": "", "type": "text/plain"}).encode())
    name = "é" * ((1022 - overhead) // 2) + "x" * ((1022 - overhead) % 2)
    return Good(
        "The file name fills the metadata block: its JSON text is exactly 1022 bytes.",
        content("long name", 10),
        name=name,
        content_type="text/plain",
        item_kind="file",
    )


def build_cases() -> dict[str, Case]:
    """Every vector, by file name (without .json)."""
    text, message_type = _message("Bonjour. Voici ce que j'ai vu — le 3 mars.", "message")
    empty = Good("Empty content: one empty final chunk.", b"")
    one = Good("One byte of content.", b"\x2a")
    message = Good(
        "A message item as the dropbox seals it: no name, the message content type naming "
        "its kind, a JSON message document as content.",
        text,
        content_type=message_type,
        item_kind="message",
    )
    named = Good(
        "A file with a non-ASCII name and a content type.",
        content("named", 200),
        name="Relevé de comptes — Q3 (copie).pdf",
        content_type="application/pdf",
        item_kind="file",
    )
    one_chunk = Good("Exactly one chunk: 65536 bytes, one full final chunk.", content("c1", CHUNK))
    plus_one = Good(
        "One chunk and one byte: a full chunk, then a one-byte final chunk.",
        content("c1+1", CHUNK + 1),
    )
    two = Good(
        "Exactly two chunks: a full chunk, then a full final chunk.", content("c2", 2 * CHUNK)
    )
    both = Good(
        "Two recipients: each of them opens it.",
        content("two recipients", 40),
        recipients=[OFFICE, SECOND],
    )
    cases: dict[str, Case] = {
        "good-empty": empty.case(),
        "good-one-byte": one.case(),
        "good-message": message.case(),
        "good-file-name": named.case(),
        "good-long-metadata": _long_metadata().case(),
        "good-one-chunk": one_chunk.case(),
        "good-chunk-plus-one": plus_one.case(),
        "good-two-chunks": two.case(),
        "good-two-recipients": both.case(),
        "good-resealed": _resealed(),
    }
    cases.update(_key_block_damage(one, both))
    cases.update(_head_damage(one))
    cases.update(_content_damage(one, one_chunk, plus_one, two))
    cases.update(_item_damage(message, named))
    cases.update(_version_2())
    return cases


def _key_block_damage(one: Good, both: Good) -> dict[str, Case]:
    kb = one.key_block
    broken_first = flip(entry_for(OFFICE.public_key, both.file_key, 40), 8 + 40)
    duplicate = bytes([1, 2]) + broken_first + both.key_block[2 : 2 + ENTRY_BYTES]
    return {
        "bad-key-block-version": one.variant(
            "The key block's version byte is 3, a version this reader does not know.",
            "key block failure",
            key_block=b"\x03" + kb[1:],
        ),
        "bad-key-block-count": one.variant(
            "The entry count says 2, but the key block holds one entry.",
            "key block failure",
            key_block=kb[:1] + b"\x02" + kb[2:],
        ),
        "bad-key-block-truncated": one.variant(
            "The key block's last byte is missing.", "key block failure", key_block=kb[:-1]
        ),
        "bad-recipient-id-flipped": one.variant(
            "A bit of the entry's recipient id is flipped: no entry names the reader.",
            "no match",
            key_block=flip(kb, 2 + 3),
        ),
        "bad-recipient-entry-flipped": one.variant(
            "A bit of the sealed box in the reader's entry is flipped.",
            "key block failure",
            key_block=flip(kb, 2 + 8 + 50),
        ),
        "bad-recipient-ephemeral-key-flipped": one.variant(
            "A bit of the ephemeral public key in the reader's entry is flipped.",
            "key block failure",
            key_block=flip(kb, 2 + 8 + 5),
        ),
        "bad-duplicate-entry-first-damaged": both.variant(
            "Two entries carry the first recipient's id; the first of them is damaged. A "
            "reader uses the first matching entry and does not try the next.",
            "key block failure",
            key_block=duplicate,
            identities=[OFFICE],
        ),
        "bad-no-entries": one.variant(
            "A key block with no entry at all.", "no match", key_block=b"\x01\x00"
        ),
        "bad-wrong-recipient": one.variant(
            "Opened with a key that is not a recipient.", "no match", identities=[STRANGER]
        ),
    }


def _head_damage(one: Good) -> dict[str, Case]:
    body = one.body
    meta_ok = metadata_block(json.dumps({"name": "", "type": "application/octet-stream"}).encode())
    overhead = len(json.dumps({"name": "", "type": "text/plain"}))
    text_1022 = json.dumps({"name": "y" * (1022 - overhead), "type": "text/plain"}).encode()

    def crafted(metadata: bytes, tag: int = TAG_MESSAGE) -> bytes:
        return crafted_body(one.file_key, one.ctx, metadata, tag, one.plaintext)

    _, other_ctx = item_context(OTHER_ITEM_ID)
    return {
        "bad-body-version": one.variant(
            "The body's version byte is 2.", "head failure", body=b"\x02" + body[1:]
        ),
        "bad-header-flipped": one.variant(
            "A bit of the secretstream header is flipped.", "head failure", body=flip(body, 1 + 7)
        ),
        "bad-metadata-flipped": one.variant(
            "A bit of the metadata message is flipped.", "head failure", body=flip(body, 300)
        ),
        "bad-body-cut-in-head": one.variant(
            "The body ends inside the metadata message.", "head failure", body=body[: HEAD - 10]
        ),
        "bad-wrong-context": one.variant(
            "Opened with another item's context (the item id differs in its last digit).",
            "head failure",
            ctx_parts=item_context(OTHER_ITEM_ID)[0],
        ),
        "bad-context-encoding": one.variant(
            "Opened with the same ids joined without their length prefixes.",
            "head failure",
            ctx_parts=["dropbox-item" + REPORT_ID + ITEM_ID],
        ),
        "bad-metadata-final-tag": one.variant(
            "The metadata message is authentic but tagged final.",
            "head failure",
            body=crafted(meta_ok, TAG_FINAL),
        ),
        "bad-metadata-not-json": one.variant(
            "The metadata message is authentic but its text is not JSON.",
            "head failure",
            body=crafted(metadata_block(b"name=x")),
        ),
        "bad-metadata-name-not-string": one.variant(
            "The metadata's name is a number.",
            "head failure",
            body=crafted(metadata_block(b'{"name": 7, "type": "text/plain"}')),
        ),
        "bad-metadata-length-over": one.variant(
            "The metadata's length field says 1023, more than the block can hold, "
            "though the 1022 bytes that follow it are valid JSON.",
            "head failure",
            body=crafted(metadata_block(text_1022, 1023)),
        ),
        "bad-body-of-other-envelope": one.variant(
            "The body of another envelope (another item, another file key), given with this "
            "envelope's key block and context.",
            "head failure",
            body=envelope.encrypt_bytes(one.plaintext, [OFFICE.public_key], other_ctx)[1],
        ),
    }


def _content_damage(one: Good, one_chunk: Good, plus_one: Good, two: Good) -> dict[str, Case]:
    full = CHUNK + ABYTES

    def content_case(base: Good, comment: str, body: bytes, length_check: str) -> Case:
        return base.variant(comment, "content failure", body=body, length_check=length_check)

    def continued(base: Good, chunks: int, data: bytes, tag: int) -> bytes:
        return push(pulled_state(base.body, base.file_key, base.ctx, chunks), data, tag)

    swapped = two.body[:HEAD] + two.body[HEAD + full :] + two.body[HEAD : HEAD + full]
    resized = kb_with_size(one, len(one.plaintext) + 1)
    return {
        "bad-chunk-flipped": content_case(
            one, "A bit of the content chunk is flipped.", flip(one.body, HEAD + 5), "passes"
        ),
        "bad-final-chunk-truncated": content_case(
            one, "The final chunk's last byte is missing.", one.body[:-1], "fails"
        ),
        "bad-cut-at-chunk-boundary": content_case(
            plus_one,
            "The body ends after its first, full, chunk: the final chunk is missing.",
            plus_one.body[: HEAD + full],
            "fails",
        ),
        "bad-final-tag-missing": content_case(
            one_chunk,
            "The only chunk is authentic and full but tagged as a plain message, not final.",
            one_chunk.body[:HEAD] + continued(one_chunk, 0, one_chunk.plaintext, TAG_MESSAGE),
            "passes",
        ),
        "bad-chunks-swapped": content_case(
            two, "The two full chunks are swapped.", swapped, "passes"
        ),
        "bad-extra-chunk-after-final": content_case(
            one_chunk,
            "An authentic chunk (pushed with the file key) follows the full final chunk.",
            one_chunk.body + continued(one_chunk, 1, b"more", TAG_MESSAGE),
            "fails",
        ),
        "bad-push-tag": content_case(
            plus_one,
            "The first, full, chunk is authentic but tagged PUSH instead of MESSAGE.",
            plus_one.body[:HEAD]
            + b"".join(
                _pushed(
                    plus_one,
                    [
                        (plus_one.plaintext[:CHUNK], TAG_PUSH),
                        (plus_one.plaintext[CHUNK:], TAG_FINAL),
                    ],
                )
            ),
            "passes",
        ),
        "bad-trailing-byte": content_case(
            one, "A zero byte follows the final chunk.", one.body + b"\x00", "fails"
        ),
        "bad-empty-final-after-full-chunk": content_case(
            one_chunk,
            "The full chunk is an authentic plain message, then an empty final chunk: "
            "the sizes add up, but the body is longer than the size allows.",
            one_chunk.body[:HEAD]
            + b"".join(_pushed(one_chunk, [(one_chunk.plaintext, TAG_MESSAGE), (b"", TAG_FINAL)])),
            "fails",
        ),
        "bad-size-mismatch": one.variant(
            "The key block seals a size one byte larger than the content.",
            "content failure",
            key_block=resized,
            sealed_size=len(one.plaintext) + 1,
            length_check="fails",
        ),
    }


def _pushed(base: Good, messages: list[tuple[bytes, int]]) -> list[bytes]:
    state = pulled_state(base.body, base.file_key, base.ctx, 0)
    return [push(state, data, tag) for data, tag in messages]


def kb_with_size(base: Good, size: int) -> bytes:
    """The base envelope's key block, re-sealed with another size."""
    return bytes([1, 1]) + entry_for(OFFICE.public_key, base.file_key, size)


def _item_damage(message: Good, named: Good) -> dict[str, Case]:
    return {
        "bad-item-kind-mismatch": message.variant(
            "A sound envelope sealed as a message, presented as a reply.",
            "item failure",
            plaintext=message.plaintext,
            item_kind="reply",
        ),
        "bad-item-file-as-note": named.variant(
            "A sound envelope of a named file, presented as a note.",
            "item failure",
            plaintext=named.plaintext,
            item_kind="note",
        ),
    }


def _resealed_hybrid() -> Case:
    """An upload's re-sealing to a hybrid office: the version 1 block becomes version 2."""
    ctx_parts, ctx = item_context()
    plaintext = content("resealed hybrid", 300)
    key_block, body = envelope.encrypt_bytes(
        plaintext, [REQUEST.public_key], ctx, name="scan.png", content_type="image/png"
    )
    key_block = envelope.add_recipient(key_block, REQUEST, HYBRID_OFFICE.public_key)
    key_block = envelope.remove_recipient(key_block, REQUEST.public_key)
    file_key, _ = open_entry(key_block, HYBRID_OFFICE)
    return Case(
        "Version 2. Sealed to an X25519 request key (a version 1 block), then re-sealed to a "
        "hybrid office, which makes it version 2, and the request key's entry removed.",
        "success",
        key_block=key_block,
        body=body,
        ctx_parts=ctx_parts,
        recipients=[HYBRID_OFFICE],
        identities=[HYBRID_OFFICE],
        file_key=file_key,
        plaintext=plaintext,
        name="scan.png",
        content_type="image/png",
        size=len(plaintext),
        item_kind="file",
    )


def _version_2() -> dict[str, Case]:
    """Key blocks of version 2 (an X-Wing recipient), good and damaged."""
    hybrid = Good(
        "Version 2: one hybrid (X-Wing) recipient.",
        content("hybrid", 100),
        recipients=[HYBRID_OFFICE],
    )
    mixed = Good(
        "Version 2, mixed: a source's X25519 key and two hybrid offices; each opens it.",
        content("mixed", 100),
        recipients=[SOURCE, HYBRID_OFFICE, HYBRID_SECOND],
    )
    other = Good(
        "Another envelope to the same hybrid office.",
        content("hybrid", 100),
        recipients=[HYBRID_OFFICE],
    )
    kb = hybrid.key_block
    ct_at = 2 + 1 + 8  # the X-Wing ciphertext of the first entry
    wrapped_at = ct_at + 1120
    with_other_ct = kb[:ct_at] + other.key_block[ct_at:wrapped_at] + kb[wrapped_at:]
    return {
        "good-v2-xwing": hybrid.case(),
        "good-v2-mixed": mixed.case(),
        "good-v2-resealed": _resealed_hybrid(),
        "bad-v2-entry-from-other-envelope": hybrid.variant(
            "The hybrid office's entry is the whole entry of another envelope to the same "
            "office: it opens, to another file key, and the body does not authenticate.",
            "head failure",
            key_block=other.key_block,
        ),
        "bad-v2-ciphertext-swapped": hybrid.variant(
            "The entry's X-Wing ciphertext is taken from another envelope's entry for the same "
            "office: the wrapping key differs and the wrapped payload does not open.",
            "key block failure",
            key_block=with_other_ct,
        ),
        "bad-v2-mlkem-ciphertext-truncated": hybrid.variant(
            "The ML-KEM ciphertext's last byte is missing (the block is one byte short).",
            "key block failure",
            key_block=kb[: ct_at + 1087] + kb[ct_at + 1088 :],
        ),
        "bad-v2-mlkem-ciphertext-flipped": hybrid.variant(
            "A bit of the ML-KEM ciphertext is flipped: ML-KEM rejects it implicitly, the "
            "shared secret is another, and the wrapped payload does not open.",
            "key block failure",
            key_block=flip(kb, ct_at + 400),
        ),
        "bad-v2-x25519-share-flipped": hybrid.variant(
            "A bit of the X-Wing ciphertext's X25519 share is flipped.",
            "key block failure",
            key_block=flip(kb, ct_at + 1088 + 3),
        ),
        "bad-v2-wrapped-flipped": hybrid.variant(
            "A bit of the wrapped file key is flipped.",
            "key block failure",
            key_block=flip(kb, wrapped_at + 10),
        ),
        "bad-v2-recipient-id-flipped": hybrid.variant(
            "A bit of the hybrid entry's recipient id is flipped: no entry names the reader.",
            "no match",
            key_block=flip(kb, 2 + 1 + 2),
        ),
        "bad-v2-entry-kind-unknown": hybrid.variant(
            "The entry's kind byte is 3, a kind this reader does not know.",
            "key block failure",
            key_block=kb[:2] + b"\x03" + kb[3:],
        ),
        "bad-v2-entry-kind-changed": mixed.variant(
            "The first (X25519) entry's kind byte says X-Wing: the entries no longer fill "
            "the block.",
            "key block failure",
            key_block=mixed.key_block[:2] + b"\x02" + mixed.key_block[3:],
            identities=[HYBRID_OFFICE],
        ),
        "bad-v2-key-block-count": hybrid.variant(
            "The entry count says 2, but the key block holds one entry.",
            "key block failure",
            key_block=kb[:1] + b"\x02" + kb[2:],
        ),
        "bad-v2-wrong-recipient": hybrid.variant(
            "Opened with a hybrid key that is not a recipient.",
            "no match",
            identities=[HYBRID_STRANGER],
        ),
        "bad-v2-classical-key-of-no-entry": mixed.variant(
            "Opened with an X25519 key that is not a recipient of a mixed block.",
            "no match",
            identities=[STRANGER],
        ),
    }


def write(cases: dict[str, Case], directory: Path) -> None:
    """Write one JSON file per case; remove files of cases no longer made."""
    directory.mkdir(exist_ok=True)
    for stale in directory.glob("*.json"):
        if stale.stem not in cases:
            stale.unlink()
    for name, case in cases.items():
        text = json.dumps(case.data, indent=2, ensure_ascii=False) + "\n"
        (directory / f"{name}.json").write_text(text, encoding="utf-8")


def main(argv: list[str]) -> int:
    """Regenerate every vector file (into another directory if one is given)."""
    directory = Path(argv[1]) if len(argv) > 1 else OUT
    cases = build_cases()
    write(cases, directory)
    print(f"wrote {len(cases)} vectors to {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
