"""Key blocks taken apart as someone with the database could: their entries, one taken out.

Version 1 entries are all alike; a version 2 entry starts with its kind, which
gives its length (docs/format.md, "The key block, version 2").
"""

from __future__ import annotations

from crypto import envelope

V1_ENTRY = 8 + 32 + 8 + 48  # recipient id, then a sealed box of file key and size
V2_ENTRY = {1: 1 + V1_ENTRY, 2: 1 + 8 + 1120 + 32 + 8 + 16}  # by kind: X25519, X-Wing


def entries(key_block: bytes) -> list[bytes]:
    """The entries of a version 1 or version 2 key block, as they are in it."""
    if key_block[0] == envelope.VERSION:
        return [key_block[2 + i * V1_ENTRY : 2 + (i + 1) * V1_ENTRY] for i in range(key_block[1])]
    found, offset = [], 2
    for _ in range(key_block[1]):
        size = V2_ENTRY[key_block[offset]]
        found.append(key_block[offset : offset + size])
        offset += size
    return found


def recipient_of(entry: bytes, version: int) -> bytes:
    """An entry's 8-byte recipient id (after the kind byte in version 2)."""
    return entry[:8] if version == envelope.VERSION else entry[1:9]


def sealed_part(entry: bytes, version: int) -> bytes:
    """What follows an entry's recipient id: the sealed box, or X-Wing ciphertext and payload."""
    return entry[8:] if version == envelope.VERSION else entry[9:]


def without(key_block: bytes, recipient: bytes) -> bytes:
    """The key block without the entries of `recipient` (perhaps with no entry left)."""
    version = key_block[0]
    kept = [e for e in entries(key_block) if recipient_of(e, version) != recipient]
    return bytes([version, len(kept)]) + b"".join(kept)
