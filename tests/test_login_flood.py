"""A login flood of concurrent wrong codenames stays within the memory cap.

Behind Tor every source is 127.0.0.1, so what bounds the memory a flood of
codename attempts can make Argon2id use is the derivation gate
(`limits.concurrent_derivations`). These tests measure it for real: a child
process (tests/flood_child.py) builds the source interface over a fresh
instance, warms up with one login, then sends 24 concurrent POST /login with
distinct valid-looking but wrong codenames, from 24 threads with a test
client each, and reports how far its peak RSS rose above the warmed-up peak.

* With 2 slots, the peak grows by less than (2 + 1) x 32 MiB (two derivations
  at once, plus slack for the 24 threads and their requests), and every
  answer is 400 (no such report) or 503 (busy).
* With 24 slots the same flood grows the peak by more than 4 x 32 MiB: the
  measurement sees unthrottled derivations, so the first check cannot pass
  merely because nothing was measured.

How it is measured, and why:

* A child process, so that the figures belong to the flood and not to
  whatever pytest did before. The peak is VmHWM from /proc/self/status
  (the high-water mark of the child's own address space), not ru_maxrss:
  Linux carries the parent's peak over into the child's ru_maxrss at exec,
  so in a pytest process larger than the child, ru_maxrss would show pytest
  and hide the flood. Both are reported on failure.
* Each derivation uses 32 MiB (libsodium mmaps Argon2id's memory with
  MAP_POPULATE for each call and munmaps it after, as strace shows, so it is
  resident for the whole derivation and no allocator keeps it for reuse),
  but makes 6 passes over it instead of 1. Memory per derivation,
  and with it the bound, is unchanged; the passes only make each derivation
  long compared with the Python work of a request before it (session, CSRF,
  form), which runs one thread at a time under the GIL. With a single pass,
  on a 2-core machine, the 24 unthrottled derivations were measured to
  overlap only about three at a time (peak +100 MiB), so the sensitivity
  check would fail for want of overlap rather than show the gate's effect;
  with 6 passes they overlap about eight at a time (+260 MiB).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flask import Flask
from nacl.public import PrivateKey

from crypto import codenames
from dropbox.instance import Instance
from dropbox.limits import DerivationGate
from source_interface import create_app
from tests.conftest import new_database_url
from tests.source_helpers import csrf_token

REPO = Path(__file__).resolve().parent.parent
MEMORY_MIB = 32
PASSES = 6
FLOOD = 24


def flood(tmp_path: Path, slots: int) -> dict[str, Any]:
    """Run the flood in a child process with `slots` derivation slots; its figures."""
    work = tmp_path / f"slots-{slots}"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.flood_child",
            str(work),
            str(slots),
            str(MEMORY_MIB),
            str(PASSES),
            new_database_url(),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(figures["statuses"]) == FLOOD
    return figures


def growth(figures: dict[str, Any]) -> float:
    """How far the flood raised the child's peak RSS above the warmed-up peak, in MiB."""
    return float(figures["peak_mib"] - figures["baseline_mib"])


def test_login_flood_stays_within_the_memory_cap(tmp_path: Path) -> None:
    capped = flood(tmp_path, slots=2)
    assert growth(capped) < (2 + 1) * MEMORY_MIB, capped
    assert set(capped["statuses"]) <= {400, 503}, capped

    # The same flood with a slot for every request: the measurement must see it.
    uncapped = flood(tmp_path, slots=FLOOD)
    assert growth(uncapped) > 4 * MEMORY_MIB, uncapped
    assert set(uncapped["statuses"]) <= {400, 503}, uncapped


def test_a_login_gets_the_busy_page_when_every_slot_is_taken(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    app: Flask = create_app(instance.config, instance)
    app.config["TESTING"] = True
    gate = DerivationGate(1, wait_seconds=0.2)
    app.extensions["dropbox.gate"] = gate
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    data = {"csrf_token": token, "codename": codenames.generate("en")}

    with gate.slot():
        started = time.monotonic()
        busy = client.post("/login", data=data)
        waited = time.monotonic() - started
    assert busy.status_code == 503
    assert "The site is busy" in busy.get_data(as_text=True)
    # It waited for the gate, then gave up instead of queueing without end.
    assert 0.15 <= waited < 5, waited

    # Once the slot is free again, the same attempt is derived and simply not found.
    token = csrf_token(client.get("/login").get_data(as_text=True))
    retried = client.post("/login", data={**data, "csrf_token": token})
    assert retried.status_code == 400
    assert "No report matches this codename" in retried.get_data(as_text=True)
