"""Bounds on costly work: at most N memory-hard derivations at once in a process.

Behind Tor every source comes from 127.0.0.1, so per-address limits mean
nothing. Rate limits are per session (flask-limiter); this gate bounds the
memory that a flood of codename attempts can make Argon2id use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Busy(Exception):
    """Too much costly work is already running; the client should retry shortly."""


class DerivationGate:
    """A counting gate around Argon2id derivations."""

    def __init__(self, slots: int, wait_seconds: float = 10.0) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._wait = wait_seconds

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the duration of a derivation, or raise Busy."""
        if not self._slots.acquire(timeout=self._wait):
            raise Busy()
        try:
            yield
        finally:
            self._slots.release()
