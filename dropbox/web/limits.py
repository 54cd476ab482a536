"""Bounds on costly work: at most N memory-hard derivations at once in a process.

Behind Tor every source comes from 127.0.0.1, and a fresh cookie costs
nothing, so neither an address nor a session can tell an attacker from a
source. What bounds the memory and CPU a flood of codename attempts can take
is this gate: at most `slots` Argon2id derivations run at once. What keeps a
flood from locking real sources out is the order it lets them in: first
come, first served, with a bounded line. Every attempt, the attacker's and
the source's alike, waits behind at most `slots + queue` others, so a source
that joins the line signs in within about (queue / slots + 1) derivation
times, however long the flood lasts; only when the line is full is an
attempt turned away at once (Busy), and it costs nothing then.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from limits.storage import MemoryStorage

# How many attempts may wait for a slot, per slot. A waiting attempt holds a
# thread and its small request, not Argon2id's memory, so the line can be
# longer than the slots; its length bounds the wait of whoever joins it.
QUEUE_PER_SLOT = 8


class Busy(Exception):
    """Too much costly work is already running or waiting; the client should retry shortly."""


class DerivationGate:
    """A first-come, first-served gate around Argon2id derivations, with a bounded line."""

    def __init__(self, slots: int, wait_seconds: float = 60.0, queue: int | None = None) -> None:
        if slots < 1:
            raise ValueError("a gate needs at least one slot")
        self.slots = slots
        self.queue = QUEUE_PER_SLOT * slots if queue is None else queue
        self._wait = wait_seconds
        self._lock = threading.Lock()
        self._free = slots
        # One event per waiting attempt, oldest first: a freed slot is handed
        # to the oldest directly, so a newcomer can never take it first.
        self._line: deque[threading.Event] = deque()

    def _acquire(self) -> None:
        with self._lock:
            if self._free and not self._line:
                self._free -= 1
                return
            if len(self._line) >= self.queue:
                raise Busy()
            turn = threading.Event()
            self._line.append(turn)
        if turn.wait(self._wait):
            return
        with self._lock:
            if turn.is_set():  # handed a slot just as the wait ran out: keep it
                return
            self._line.remove(turn)
        raise Busy()

    def _release(self) -> None:
        with self._lock:
            if self._line:
                self._line.popleft().set()  # the slot passes on without being freed
            else:
                self._free += 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the duration of a derivation, in turn; or raise Busy."""
        self._acquire()
        try:
            yield
        finally:
            self._release()


# --- rate-limit counters kept in the process -----------------------------------------


class LockedMemoryStorage(MemoryStorage):
    """limits' in-process storage, with every operation and its expiry sweep under one lock.

    limits 5.8's MemoryStorage starts a new expiry timer whenever the last one
    has finished, without a lock: two request threads can both replace the
    timer and start the same one twice (RuntimeError, a 500 for about one
    codename confirmation in 2,000 under tests/test_load.py), and several
    sweeps then run at once and fail on keys another removed. Counting is a
    few dictionary operations, so one lock per storage costs nothing that
    shows.
    """

    STORAGE_SCHEME = ["dropbox-memory"]  # noqa: RUF012 - the registry reads it as limits declares it

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        # Before the parent starts its first timer, whose sweep takes this lock.
        self._lock = threading.RLock()
        super().__init__(uri, **options)


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(self: LockedMemoryStorage, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


# Every method MemoryStorage defines, its name-mangled timer helpers included
# (which is how its own calls reach them), except those that build or copy it.
for _name, _method in vars(MemoryStorage).items():
    if inspect.isfunction(_method) and _name not in {"__init__", "__getstate__", "__setstate__"}:
        setattr(LockedMemoryStorage, _name, _locked(_method))


def limiter_storage_uri(uri: str) -> str:
    """The flask-limiter storage for a `limits.storage_uri`: memory:// becomes the locked one."""
    if uri.startswith("memory://"):
        return "dropbox-memory://" + uri.removeprefix("memory://")
    return uri
