"""The in-process rate-limit storage stays whole when many request threads count at once."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from limits.storage import Storage, storage_from_string

from dropbox.web.limits import LockedMemoryStorage, limiter_storage_uri

THREADS = 16
SECONDS = 2.0


@pytest.fixture
def thread_failures() -> Iterator[list[str]]:
    """Every exception raised in any thread (the storage's own timer threads included)."""
    failures: list[str] = []
    previous = threading.excepthook

    def hook(args: Any) -> None:
        failures.append(f"{args.exc_type.__name__} in {args.thread.name if args.thread else '?'}")

    threading.excepthook = hook
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show at once
    try:
        yield failures
    finally:
        sys.setswitchinterval(switch)
        threading.excepthook = previous


def hammer(storage: Storage, failures: list[str]) -> dict[str, int]:
    """THREADS threads count short-lived keys for SECONDS; return how often each key was hit."""
    deadline = time.monotonic() + SECONDS
    sent: dict[str, int] = {}

    def run(number: int) -> None:
        count = 0
        try:
            while time.monotonic() < deadline:
                storage.incr(f"short-{number}-{count % 50}", 0.001)  # expires, sweeps run
                storage.incr(f"long-{number}", 3600)  # never expires in the test
                count += 1
        except Exception as exc:
            failures.append(f"{type(exc).__name__} in a request thread")
        sent[f"long-{number}"] = count

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 30)
    time.sleep(0.1)  # let the last expiry sweep finish
    return sent


def test_the_locked_storage_counts_every_hit_and_never_raises(thread_failures: list[str]) -> None:
    """limits' own MemoryStorage raised under this load (timers started twice, sweeps at once)."""
    storage = storage_from_string(limiter_storage_uri("memory://"))
    assert isinstance(storage, LockedMemoryStorage)
    sent = hammer(storage, thread_failures)
    assert thread_failures == []
    for key, count in sent.items():
        assert storage.get(key) == count


def test_only_memory_storage_is_replaced() -> None:
    assert limiter_storage_uri("memory://") == "dropbox-memory://"
    assert limiter_storage_uri("redis://localhost:6379/0") == "redis://localhost:6379/0"
