"""The envelope: the one format for every stored item (message, file, reply, note).

An envelope has two parts, kept apart on purpose:

* the **key block** (small, stored in the database row): a version byte, then
  for each recipient an 8-byte recipient id and the item's random file key
  and plaintext size sealed to that recipient: with ``crypto_box_seal`` to an
  X25519 key (versions 1 and 2), or under an X-Wing shared secret to a hybrid
  post-quantum key (version 2, docs/format.md). A block whose recipients are
  all X25519 keys is written as version 1, one with an X-Wing recipient as
  version 2; readers open both.
  Because it is apart from the body, a referral adds a recipient without
  touching the body, and deleting an item destroys its keys first
  (crypto-shredding) even if the blob lingers on disk.
* the **body** (the blob on disk): a version byte, the secretstream header,
  a fixed-size encrypted metadata message (file name and content type, padded
  so their length does not leak), then the content in XChaCha20-Poly1305
  secretstream messages of 64 KiB; the last one is tagged final, so a
  truncated body is detected.

The caller's ``context`` (report id and item id, see :func:`context`) is
authenticated with the metadata message, so a body cannot be moved to another
item. Every failure raises :class:`DecryptionError`; plaintext leaves this
module only in chunks that have been authenticated, and the size sealed in the
key block is checked against the body before the first chunk is released.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import nacl.exceptions
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_init_push,
    crypto_secretstream_xchacha20poly1305_pull,
    crypto_secretstream_xchacha20poly1305_push,
    crypto_secretstream_xchacha20poly1305_state,
)
from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_ABYTES as _ABYTES,
)
from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_HEADERBYTES as _HEADERBYTES,
)
from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_TAG_FINAL as _TAG_FINAL,
)
from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_TAG_MESSAGE as _TAG_MESSAGE,
)
from nacl.public import PrivateKey, PublicKey, SealedBox

from crypto import xwing
from crypto.errors import DecryptionError
from crypto.keys import KeyChain
from crypto.xwing import XWingPublicKey, XWingSecretKey

__all__ = [
    "CHUNK_SIZE",
    "HEAD_BYTES",
    "KEY_BLOCK_V2",
    "VERSION",
    "Contents",
    "EnvelopeReader",
    "EnvelopeWriter",
    "Recipient",
    "SecretKey",
    "add_recipient",
    "body_size",
    "context",
    "decrypt_bytes",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_stream",
    "key_block_version",
    "read_head",
    "recipient_entries",
    "recipient_id",
    "recipient_ids",
    "remove_recipient",
]

VERSION = 1  # the body's version, and the key block's when every recipient is X25519
KEY_BLOCK_V2 = 2  # a key block with an X-Wing recipient
CHUNK_SIZE = 64 * 1024
METADATA_SIZE = 1024
_FILE_KEY_BYTES = 32
_RECIPIENT_ID_BYTES = 8
_SEALED_PAYLOAD = struct.Struct(f">{_FILE_KEY_BYTES}sQ")  # file key, plaintext size
_SEALED_BYTES = _SEALED_PAYLOAD.size + 48  # crypto_box_seal adds an ephemeral key and a MAC
_ENTRY_BYTES = _RECIPIENT_ID_BYTES + _SEALED_BYTES
# Version 2 entries start with their kind: 0x01 a sealed box to an X25519 key
# (then exactly a version 1 entry), 0x02 X-Wing: ciphertext, then the payload
# under ChaCha20-Poly1305 with a key derived from the X-Wing shared secret.
_KIND_X25519 = 1
_KIND_XWING = 2
_WRAPPED_BYTES = _SEALED_PAYLOAD.size + 16  # ChaCha20-Poly1305 adds a 16-byte tag
_V2_ENTRY_BYTES = {
    _KIND_X25519: 1 + _ENTRY_BYTES,
    _KIND_XWING: 1 + _RECIPIENT_ID_BYTES + xwing.CIPHERTEXT_BYTES + _WRAPPED_BYTES,
}
_XWING_WRAP_INFO = b"dropbox-envelope key block 2 X-Wing entry"
_ZERO_NONCE = bytes(12)  # each wrapping key seals one payload, once: see _xwing_wrapping_key
_MAX_RECIPIENTS = 255
_AD_PREFIX = b"dropbox-envelope"
# The start of every body: version byte, secretstream header, sealed metadata message.
# Enough to check the key, the size and the sealed name and type without the content.
HEAD_BYTES = 1 + _HEADERBYTES + METADATA_SIZE + _ABYTES


Recipient = PublicKey | XWingPublicKey
# A key chain (crypto/keys.py) opens an entry for any of its keys: an office's current
# X-Wing key and the X25519 key it had before.
SecretKey = PrivateKey | XWingSecretKey | KeyChain


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class Contents:
    """What the encrypted metadata says about the content, plus its authenticated size."""

    name: str
    content_type: str
    size: int


def context(*parts: str) -> bytes:
    """Encode the ids an envelope is bound to (e.g. report id, item id) without ambiguity."""
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8")
        out += struct.pack(">H", len(raw)) + raw
    return bytes(out)


def recipient_id(public_key: Recipient) -> bytes:
    """The short id that marks which key-block entry belongs to which recipient."""
    return hashlib.blake2b(
        bytes(public_key), digest_size=_RECIPIENT_ID_BYTES, person=b"dropbox-rcpt"
    ).digest()


def body_size(plaintext_size: int) -> int:
    """The exact size of the body that holds `plaintext_size` bytes of content."""
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return 1 + _HEADERBYTES + METADATA_SIZE + _ABYTES + plaintext_size + chunks * _ABYTES


def _associated_data(ctx: bytes) -> bytes:
    return _AD_PREFIX + bytes([VERSION]) + ctx


def _encode_metadata(name: str, content_type: str) -> bytes:
    raw = json.dumps({"name": name, "type": content_type}, ensure_ascii=False).encode("utf-8")
    if len(raw) > METADATA_SIZE - 2:
        raise ValueError("file name and content type are too long for an envelope")
    return struct.pack(">H", len(raw)) + raw + bytes(METADATA_SIZE - 2 - len(raw))


def _decode_metadata(block: bytes) -> tuple[str, str]:
    (length,) = struct.unpack(">H", block[:2])
    if length > len(block) - 2:
        raise DecryptionError()  # a length the block cannot hold: never written, refused
    try:
        fields = json.loads(block[2 : 2 + length].decode("utf-8"))
        name, content_type = fields["name"], fields["type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DecryptionError() from exc
    if not isinstance(name, str) or not isinstance(content_type, str):
        raise DecryptionError()
    return name, content_type


def _xwing_wrapping_key(shared_secret: bytes, ciphertext: bytes, public_key: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the X-Wing shared secret, bound to its entry.

    The salt is the entry's X-Wing ciphertext and the recipient's whole
    public key, as a version 1 sealed box binds its nonce to its ephemeral
    key and its recipient's key; the info names the format, the version and
    the kind of entry. Every encapsulation is fresh, so every key wraps one
    payload once and a fixed nonce is safe (as age does for its stanzas).
    """
    return HKDF(
        algorithm=SHA256(), length=32, salt=ciphertext + public_key, info=_XWING_WRAP_INFO
    ).derive(shared_secret)


def _entry(payload: bytes, recipient: Recipient, version: int) -> bytes:
    """One key-block entry sealing `payload` to `recipient`, in the layout of `version`."""
    rid = recipient_id(recipient)
    if isinstance(recipient, XWingPublicKey):
        shared, ciphertext = recipient.encapsulate()
        key = _xwing_wrapping_key(shared, ciphertext, bytes(recipient))
        head = bytes([_KIND_XWING]) + rid
        wrapped = crypto_aead_chacha20poly1305_ietf_encrypt(payload, head, _ZERO_NONCE, key)
        return head + ciphertext + wrapped
    sealed = rid + bytes(SealedBox(recipient).encrypt(payload))
    return sealed if version == VERSION else bytes([_KIND_X25519]) + sealed


def _version_for(recipients: Sequence[Recipient]) -> int:
    return KEY_BLOCK_V2 if any(isinstance(r, XWingPublicKey) for r in recipients) else VERSION


def _build_key_block(file_key: bytes, size: int, recipients: Sequence[Recipient]) -> bytes:
    if not recipients:
        raise ValueError("an envelope needs at least one recipient")
    unique = {recipient_id(pk): pk for pk in recipients}
    if len(unique) > _MAX_RECIPIENTS:
        raise ValueError("too many recipients")
    version = _version_for(list(unique.values()))
    payload = _SEALED_PAYLOAD.pack(file_key, size)
    entries = [_entry(payload, pk, version) for pk in unique.values()]
    return bytes([version, len(entries)]) + b"".join(entries)


@dataclass(frozen=True)
class _Entry:
    kind: int  # _KIND_X25519 or _KIND_XWING
    rid: bytes
    sealed: bytes  # after the recipient id: a sealed box, or X-Wing ciphertext and wrapped payload
    raw: bytes  # the whole entry as it is in its key block


def _parse_key_block(key_block: bytes) -> tuple[int, list[_Entry]]:
    """The version and the entries; DecryptionError for any block that is not well formed."""
    if len(key_block) < 2 or key_block[0] not in (VERSION, KEY_BLOCK_V2):
        raise DecryptionError()
    version, count = key_block[0], key_block[1]
    entries = []
    if version == VERSION:
        if len(key_block) != 2 + count * _ENTRY_BYTES:
            raise DecryptionError()
        for i in range(count):
            raw = key_block[2 + i * _ENTRY_BYTES : 2 + (i + 1) * _ENTRY_BYTES]
            entries.append(
                _Entry(_KIND_X25519, raw[:_RECIPIENT_ID_BYTES], raw[_RECIPIENT_ID_BYTES:], raw)
            )
        return version, entries
    offset = 2
    for _ in range(count):
        size = _V2_ENTRY_BYTES.get(key_block[offset]) if offset < len(key_block) else None
        if size is None or offset + size > len(key_block):
            raise DecryptionError()  # an unknown kind of entry, or a block cut short
        raw = key_block[offset : offset + size]
        entries.append(_Entry(raw[0], raw[1 : 1 + _RECIPIENT_ID_BYTES], raw[9:], raw))
        offset += size
    if offset != len(key_block):
        raise DecryptionError()
    return version, entries


def _open_entry(entry: _Entry, secret_key: PrivateKey | XWingSecretKey) -> bytes:
    if isinstance(secret_key, XWingSecretKey):
        if entry.kind != _KIND_XWING:
            raise DecryptionError()
        ciphertext = entry.sealed[: xwing.CIPHERTEXT_BYTES]
        shared = secret_key.decapsulate(ciphertext)
        key = _xwing_wrapping_key(shared, ciphertext, bytes(secret_key.public_key))
        return crypto_aead_chacha20poly1305_ietf_decrypt(
            entry.sealed[xwing.CIPHERTEXT_BYTES :], entry.raw[:9], _ZERO_NONCE, key
        )
    if entry.kind != _KIND_X25519:
        raise DecryptionError()
    return SealedBox(secret_key).decrypt(entry.sealed)


def _open_key_block(key_block: bytes, secret_key: SecretKey) -> tuple[bytes, int]:
    """The file key and size from the first entry for a key of `secret_key` (a chain's in order)."""
    entries = _parse_key_block(key_block)[1]
    for key in KeyChain.of(secret_key).keys:
        own_id = recipient_id(key.public_key)
        for entry in entries:
            if entry.rid != own_id:
                continue
            try:
                file_key, size = _SEALED_PAYLOAD.unpack(_open_entry(entry, key))
            except (nacl.exceptions.CryptoError, struct.error) as exc:
                raise DecryptionError() from exc
            return file_key, size
    raise DecryptionError()


def recipient_ids(key_block: bytes) -> list[bytes]:
    """The recipient ids a key block holds an entry for."""
    return [entry.rid for entry in _parse_key_block(key_block)[1]]


def recipient_entries(key_block: bytes) -> list[tuple[bytes, bool]]:
    """(recipient id, True for an X-Wing entry) for each entry of a key block, in order."""
    return [(entry.rid, entry.kind == _KIND_XWING) for entry in _parse_key_block(key_block)[1]]


def key_block_version(key_block: bytes) -> int:
    """1 or 2; DecryptionError for a block that is not well formed."""
    return _parse_key_block(key_block)[0]


def _v2_raw(entry: _Entry, version: int) -> bytes:
    """An entry as a version 2 block holds it: a version 1 entry gains its kind byte."""
    return entry.raw if version == KEY_BLOCK_V2 else bytes([entry.kind]) + entry.raw


def add_recipient(key_block: bytes, secret_key: SecretKey, new_recipient: Recipient) -> bytes:
    """Give `new_recipient` access to an envelope, proving access with `secret_key`.

    The body is untouched: only the small key block changes. A version 1
    block given an X-Wing recipient becomes a version 2 block.
    """
    file_key, size = _open_key_block(key_block, secret_key)
    version, entries = _parse_key_block(key_block)
    if recipient_id(new_recipient) in {e.rid for e in entries}:
        return key_block
    if len(entries) >= _MAX_RECIPIENTS:
        raise ValueError("too many recipients")
    new_version = max(version, _version_for([new_recipient]))
    raws = [e.raw if new_version == VERSION else _v2_raw(e, version) for e in entries]
    raws.append(_entry(_SEALED_PAYLOAD.pack(file_key, size), new_recipient, new_version))
    return bytes([new_version, len(raws)]) + b"".join(raws)


def remove_recipient(key_block: bytes, recipient: Recipient) -> bytes:
    """Take a recipient's entry out of a key block; the last entry cannot be removed."""
    rid = recipient_id(recipient)
    version, entries = _parse_key_block(key_block)
    kept = [e for e in entries if e.rid != rid]
    if not kept:
        raise ValueError("an envelope must keep at least one recipient")
    return bytes([version, len(kept)]) + b"".join(e.raw for e in kept)


class EnvelopeWriter:
    """Encrypts content pushed to it with `write` into `sink`; `close` returns the key block.

    Push-style so that a multipart parser can write an upload into it while the
    request streams in. Memory use is bounded by one chunk plus one write.
    """

    def __init__(
        self,
        sink: _Writable,
        recipients: Sequence[Recipient],
        ctx: bytes,
        *,
        name: str = "",
        content_type: str = "application/octet-stream",
    ) -> None:
        if not recipients:
            raise ValueError("an envelope needs at least one recipient")
        self._recipients = list(recipients)
        self._sink = sink
        self._file_key = secrets.token_bytes(_FILE_KEY_BYTES)
        self._state = crypto_secretstream_xchacha20poly1305_state()
        header = crypto_secretstream_xchacha20poly1305_init_push(self._state, self._file_key)
        metadata = _encode_metadata(name, content_type)
        first = crypto_secretstream_xchacha20poly1305_push(
            self._state, metadata, _associated_data(ctx), _TAG_MESSAGE
        )
        sink.write(bytes([VERSION]) + header + first)
        self._partial = bytearray()  # less than a chunk, not yet encrypted
        self._held: bytes | None = None  # a full chunk that may turn out to be the last
        self._size = 0
        self._key_block: bytes | None = None

    @property
    def size(self) -> int:
        """How many bytes of content have been written so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt `data`; the last full chunk is held back until more comes or `close`.

        The last chunk must carry the final tag, and only `close` knows which
        chunk is last. A chunk-sized `bytes` write is held as it is, without a
        copy: that is the common case and keeps encryption near raw speed.
        """
        if self._key_block is not None:
            raise ValueError("write to a closed envelope")
        length = len(data)
        if not length:
            return 0
        self._size += length
        if self._held is not None:
            self._push(self._held)  # more content follows it, so it was not the last
            self._held = None
        if not self._partial and length == CHUNK_SIZE and isinstance(data, bytes):
            self._held = data
            return length
        self._partial += data
        if len(self._partial) > CHUNK_SIZE:
            view = memoryview(self._partial)
            offset = 0
            while len(self._partial) - offset > CHUNK_SIZE:
                self._push(bytes(view[offset : offset + CHUNK_SIZE]))
                offset += CHUNK_SIZE
            view.release()
            del self._partial[:offset]
        if len(self._partial) == CHUNK_SIZE:
            self._held = bytes(self._partial)
            self._partial.clear()
        return length

    def _push(self, chunk: bytes, tag: int = _TAG_MESSAGE) -> None:
        self._sink.write(crypto_secretstream_xchacha20poly1305_push(self._state, chunk, None, tag))

    def close(self) -> bytes:
        """Write the final chunk and return the key block (idempotent)."""
        if self._key_block is None:
            last = self._held if self._held is not None else bytes(self._partial)
            self._push(last, _TAG_FINAL)
            self._held = None
            self._partial.clear()
            self._key_block = _build_key_block(self._file_key, self._size, self._recipients)
            self._file_key = b""
        return self._key_block


def _open_head(
    head: bytes, file_key: bytes, ctx: bytes
) -> tuple[crypto_secretstream_xchacha20poly1305_state, str, str]:
    """Check a body's first `HEAD_BYTES`; return the stream state, the name and the type."""
    if len(head) != HEAD_BYTES or head[0] != VERSION:
        raise DecryptionError()
    state = crypto_secretstream_xchacha20poly1305_state()
    try:
        crypto_secretstream_xchacha20poly1305_init_pull(state, head[1 : 1 + _HEADERBYTES], file_key)
        metadata, tag = crypto_secretstream_xchacha20poly1305_pull(
            state, head[1 + _HEADERBYTES :], _associated_data(ctx)
        )
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptionError() from exc
    if tag != _TAG_MESSAGE or len(metadata) != METADATA_SIZE:
        raise DecryptionError()
    name, content_type = _decode_metadata(metadata)
    return state, name, content_type


def read_head(
    key_block: bytes, head: bytes, body_length: int, secret_key: SecretKey, ctx: bytes
) -> Contents:
    """What an envelope holds (name, type, size), from its key block and its body's head.

    `head` is the body's first `HEAD_BYTES` (more is accepted; only those are
    read) and `body_length` the whole body's length. The key block is opened,
    the length is checked against the sealed size and the metadata message is
    authenticated, bound to `ctx`: so a file's name, type and size can be shown
    without fetching its content. The content itself is not checked here; a
    reader of the whole body (`EnvelopeReader`) does that. DecryptionError on
    any fault.
    """
    file_key, size = _open_key_block(key_block, secret_key)
    if body_length != body_size(size):
        raise DecryptionError()
    _, name, content_type = _open_head(bytes(head[:HEAD_BYTES]), file_key, ctx)
    return Contents(name=name, content_type=content_type, size=size)


class EnvelopeReader:
    """Opens an envelope's body; `contents` is known before any content is released."""

    def __init__(
        self, key_block: bytes, body: _Readable, secret_key: SecretKey, ctx: bytes
    ) -> None:
        file_key, size = _open_key_block(key_block, secret_key)
        self._body = body
        self._check_length(body, size)
        self._state, name, content_type = _open_head(body.read(HEAD_BYTES), file_key, ctx)
        self.contents = Contents(name=name, content_type=content_type, size=size)
        self._consumed = False

    @staticmethod
    def _check_length(body: _Readable, size: int) -> None:
        """Refuse a body whose length does not match the sealed size, before any output."""
        seekable = getattr(body, "seekable", None)
        if seekable is None or not seekable():
            return
        position = body.tell()  # type: ignore[attr-defined]
        length = body.seek(0, io.SEEK_END) - position  # type: ignore[attr-defined]
        body.seek(position)  # type: ignore[attr-defined]
        if length != body_size(size):
            raise DecryptionError()

    def chunks(self) -> Iterator[bytes]:
        """Yield the content in authenticated chunks; raise DecryptionError on any fault.

        A consumer that cannot take back what it has already been given (an
        HTTP response) must abort on the error, so the partial output is
        never taken for the whole.
        """
        if self._consumed:
            raise ValueError("an envelope body can be read once")
        self._consumed = True
        total = 0
        while True:
            ciphertext = self._body.read(CHUNK_SIZE + _ABYTES)
            if len(ciphertext) < _ABYTES:
                raise DecryptionError()
            try:
                chunk, tag = crypto_secretstream_xchacha20poly1305_pull(self._state, ciphertext)
            except (nacl.exceptions.CryptoError, ValueError) as exc:
                raise DecryptionError() from exc
            total += len(chunk)
            if total > self.contents.size:
                raise DecryptionError()
            if tag == _TAG_FINAL:
                if total != self.contents.size or self._body.read(1):
                    raise DecryptionError()
                if not chunk and total:
                    # The writer never ends with an empty chunk after a full one. (A
                    # seekable body is already refused by its length; this is for
                    # the others.)
                    raise DecryptionError()
                if chunk:
                    yield chunk
                return
            if tag != _TAG_MESSAGE or len(chunk) != CHUNK_SIZE:
                raise DecryptionError()
            yield chunk


def encrypt_stream(
    source: _Readable,
    sink: _Writable,
    recipients: Sequence[Recipient],
    ctx: bytes,
    *,
    name: str = "",
    content_type: str = "application/octet-stream",
) -> bytes:
    """Encrypt everything `source` yields into `sink`; return the key block."""
    writer = EnvelopeWriter(sink, recipients, ctx, name=name, content_type=content_type)
    while block := source.read(CHUNK_SIZE):
        writer.write(block)
    return writer.close()


def decrypt_stream(
    key_block: bytes, body: _Readable, sink: BinaryIO, secret_key: SecretKey, ctx: bytes
) -> Contents:
    """Decrypt `body` into the seekable `sink`; on failure the sink is truncated back."""
    if not sink.seekable():
        raise ValueError("decrypt_stream needs a seekable sink; use EnvelopeReader.chunks")
    start = sink.tell()
    try:
        reader = EnvelopeReader(key_block, body, secret_key, ctx)
        for chunk in reader.chunks():
            sink.write(chunk)
    except BaseException:
        # Whatever stopped it (tampering, a full disk), no partial plaintext stays.
        sink.seek(start)
        sink.truncate()
        raise
    return reader.contents


def encrypt_bytes(
    data: bytes,
    recipients: Sequence[Recipient],
    ctx: bytes,
    *,
    name: str = "",
    content_type: str = "application/octet-stream",
) -> tuple[bytes, bytes]:
    """Encrypt a small plaintext held in memory; return (key block, body)."""
    sink = io.BytesIO()
    writer = EnvelopeWriter(sink, recipients, ctx, name=name, content_type=content_type)
    writer.write(data)
    return writer.close(), sink.getvalue()


def decrypt_bytes(
    key_block: bytes, body: bytes, secret_key: SecretKey, ctx: bytes
) -> tuple[Contents, bytes]:
    """Decrypt an envelope held in memory; return (contents, plaintext)."""
    reader = EnvelopeReader(key_block, io.BytesIO(body), secret_key, ctx)
    return reader.contents, b"".join(reader.chunks())
