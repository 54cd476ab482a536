"""Argon2id cost settings and the memory-hard derivations built on them."""

from __future__ import annotations

from dataclasses import dataclass

import nacl.pwhash.argon2id as argon2id

SALT_BYTES = argon2id.SALTBYTES
MAX_ITERATIONS = 20
MAX_MEMORY_BYTES = 4 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class KdfCost:
    """How much work one Argon2id derivation costs: passes over memory, and memory in bytes."""

    iterations: int
    memory_bytes: int

    def __post_init__(self) -> None:
        if self.iterations < argon2id.OPSLIMIT_MIN:
            raise ValueError(f"Argon2id needs at least {argon2id.OPSLIMIT_MIN} iteration(s)")
        if self.memory_bytes < argon2id.MEMLIMIT_MIN:
            raise ValueError(f"Argon2id needs at least {argon2id.MEMLIMIT_MIN} bytes of memory")
        # Upper bounds too: a cost read from a stored wrap must not be able to
        # make one sign-in take minutes or exhaust the server's memory.
        if self.iterations > MAX_ITERATIONS:
            raise ValueError(f"Argon2id iterations must be at most {MAX_ITERATIONS}")
        if self.memory_bytes > MAX_MEMORY_BYTES:
            raise ValueError("Argon2id memory must be at most 4 GiB")


# 64 MiB and 3 passes: about 0.15 s on a 2-core server, so a login is quick
# for a person but a stolen database costs an attacker dearly per guess.
PRODUCTION_COST = KdfCost(iterations=3, memory_bytes=64 * 1024 * 1024)


def derive_key(secret: bytes, salt: bytes, cost: KdfCost) -> bytes:
    """Derive a 32-byte key from a low-entropy secret with Argon2id."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    return argon2id.kdf(32, secret, salt, opslimit=cost.iterations, memlimit=cost.memory_bytes)
