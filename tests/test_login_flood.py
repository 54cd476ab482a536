"""Sign-in floods: the source interface's memory cap, and the case server's officers.

Part one (the source interface, unchanged by issue 12): a login flood of
concurrent wrong codenames stays within the memory cap.

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

Part two (the case server, issue 12): officers' sign-ins. The case server
runs no Argon2id at sign-in any more: the reviewer app, on the officer's
machine, derives the auth key from the passphrase and the case server only
compares a BLAKE2b verifier. So the old proof that the reviewer server's
derivation gate caps a flood's memory has nothing left to measure there,
and is gone. What still matters is measured against the real case server
(`dropbox run reviewer`, gunicorn, 2 workers): 24 threads flood it with
wrong sign-ins (and header requests) for the officer's username for a few
seconds, while the officer's reviewer app, which signed in before and holds
a device token, keeps working and signs in again; see the test's comments.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from flask import Flask
from nacl.public import PrivateKey

from crypto import codenames
from crypto.kdf import KdfCost
from crypto.keys import derive_officer_keys, wrap_parameters
from dropbox import officers
from dropbox.config import load
from dropbox.instance import Instance
from dropbox.web.limits import DerivationGate
from journalist_interface.client import ApiError, CaseServerClient, b64
from source_interface import create_app
from tests.conftest import CHEAP_COST, FIGURES, free_port, new_database_url
from tests.served import Served, case_serving, prepare_instance
from tests.source_helpers import csrf_token

pytestmark = pytest.mark.database_engine

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


# --- the case server: officers' sign-ins (issue 12) ---------------------------------------

CASE_WORKERS = 2
FLOOD_SECONDS = 6.0
OFFICER = "flooded-officer"
OFFICER_PASSPHRASE = "a long passphrase for the flood test"
# The officer's own Argon2id cost: large, so that a case server deriving at sign-in would
# show in its workers' memory. Only the test (as the officer's reviewer app) derives, once.
OFFICER_COST = KdfCost(iterations=1, memory_bytes=128 * 1024 * 1024)


def vm_hwm_mib(pid: int) -> float:
    """Process `pid`'s peak resident set size (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def step_code(secret: str, offset: int) -> str:
    """The officer's TOTP code `offset` steps from now (the server accepts -1, 0 and +1)."""
    return pyotp.TOTP(secret).generate_otp(int(time.time()) // officers.TOTP_STEP + offset)


def test_a_sign_in_flood_keeps_no_known_device_out_and_the_case_server_answering(
    tmp_path: Path,
) -> None:
    case_port = free_port()
    prepared = prepare_instance(
        tmp_path, 1, f"[reviewer]\nport = {case_port}\nworkers = {CASE_WORKERS}\n"
    )
    instance = Instance.open(load(prepared.config))
    try:
        with instance.sessions.begin() as db:
            _, totp_secret = officers.add(db, OFFICER, OFFICER_PASSPHRASE, OFFICER_COST, "test")
    finally:
        instance.close()

    with case_serving(prepared.config, case_port, prepared.data_dir, CASE_WORKERS) as case:
        base = f"http://127.0.0.1:{case_port}"
        # The officer's usual reviewer app signs in once: derived there, a device token kept.
        usual = CaseServerClient(base)
        try:
            cost, salt = wrap_parameters(usual.signin_parameters(OFFICER), minimum=CHEAP_COST)
            assert cost == OFFICER_COST  # what a server deriving at sign-in would have to spend
            auth_key = derive_officer_keys(OFFICER_PASSPHRASE, salt, cost).auth_key
            device = usual.sign_in(OFFICER, auth_key, step_code(totp_secret, 0)).device
            seen_during_flood: dict[str, object] = {}

            def midway() -> None:
                seen_during_flood.update(sign_in_again(base, auth_key, totp_secret, device))

            flood, answers = run_flood(case, base, usual, midway)
        finally:
            usual.close()
        log = case.log.read_text(errors="replace")

    statuses = flood["statuses"]
    latencies = flood["latencies"]
    FIGURES.add(
        f"case server sign-in flood ({CASE_WORKERS} workers, {FLOOD_THREADS} threads, "
        f"{FLOOD_SECONDS:.0f} s): {sum(statuses.values())} attempts "
        f"({', '.join(f'{n} x {code}' for code, n in sorted(statuses.items()))}); the signed-in "
        f"officer's {len(latencies)} requests meanwhile: p50 "
        f"{statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
        f"workers' peak memory grew by {flood['growth']:.1f} MiB"
    )
    # Every flooding attempt was refused as a failure or as locked out; nothing broke.
    assert set(statuses) <= {401, 429}, statuses
    assert statuses[429] > statuses.get(401, 0), statuses  # the lock, not the check, answered
    assert "Traceback" not in log, log
    # Locked out: the right key and a fresh code, without the device token, are refused...
    assert seen_during_flood["without device"] == 429, seen_during_flood
    # ...while the officer's own reviewer app, with its device token, gets its header and in.
    assert seen_during_flood["with device"] == OFFICER, seen_during_flood
    # The signed-in officer's requests were answered all along, and quickly.
    assert answers == [200] * len(answers) and len(answers) >= 10, answers
    assert statistics.median(latencies) < 0.5 and max(latencies) < 3, latencies
    # No derivation at sign-in: 24 at once at 128 MiB each would add far more than this.
    assert flood["growth"] < OFFICER_COST.memory_bytes / 2**20 / 4, flood


FLOOD_THREADS = 24


def run_flood(
    case: Served, base: str, usual: CaseServerClient, midway: Callable[[], None]
) -> tuple[dict[str, Any], list[int]]:
    """Flood the case server for FLOOD_SECONDS; meanwhile the signed-in officer keeps reading.

    `midway` runs in its own thread from the middle of the flood, which goes
    on until it has finished. Returns the figures (flooding statuses, the
    officer's latencies, memory growth) and the statuses of the officer's
    own requests.
    """
    workers = case.refresh_workers()
    baseline = {pid: vm_hwm_mib(pid) for pid in workers}
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    start = threading.Barrier(FLOOD_THREADS + 1)
    during = threading.Thread(target=midway)

    def attacker(n: int) -> None:
        with httpx.Client(base_url=base + "/api/v2", timeout=30) as http:
            start.wait(timeout=30)
            while not stop.is_set():
                body = {"username": OFFICER, "auth_key": b64(os.urandom(32)), "code": "000000"}
                # Every fourth request asks for the wrap header, as a flood of apps would.
                if n % 4 == 0:
                    http.post("/signin/params", json={"username": OFFICER})
                answered = http.post("/signin", json=body).status_code
                with lock:
                    statuses[answered] = statuses.get(answered, 0) + 1

    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(FLOOD_THREADS)]
    for thread in threads:
        thread.start()
    start.wait(timeout=30)
    began = time.monotonic()
    latencies: list[float] = []
    answers: list[int] = []
    try:
        while time.monotonic() - began < FLOOD_SECONDS:
            asked = time.monotonic()
            try:
                answers.append(200 if usual.me().username == OFFICER else 0)
            except ApiError as refused:
                answers.append(refused.status)
            latencies.append(time.monotonic() - asked)
            if during.ident is None and time.monotonic() - began > FLOOD_SECONDS / 2:
                during.start()
            time.sleep(0.1)
        during.join(timeout=60)  # the flood goes on until it is done
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert during.ident is not None and not during.is_alive(), "the sign-in midway did not run"
    assert not any(thread.is_alive() for thread in threads), "a flooding thread hung"
    assert set(case.refresh_workers()) == set(workers), "a case server worker died"
    growth = max(vm_hwm_mib(pid) - baseline[pid] for pid in workers)
    return {"statuses": statuses, "latencies": latencies, "growth": growth}, answers


def sign_in_again(base: str, auth_key: bytes, totp_secret: str, device: str) -> dict[str, object]:
    """Sign in with the right key and a fresh code: without, then with, the device token."""
    seen: dict[str, object] = {}
    code = step_code(totp_secret, 1)
    stranger = CaseServerClient(base)
    try:
        stranger.sign_in(OFFICER, auth_key, code)
        seen["without device"] = 200
    except ApiError as refused:
        seen["without device"] = refused.status
    finally:
        stranger.close()
    app = CaseServerClient(base)
    try:
        app.signin_parameters(OFFICER, device)
        seen["with device"] = app.sign_in(OFFICER, auth_key, code, device).me.username
    except ApiError as refused:
        seen["with device"] = f"{refused.status} {refused.message}"
    finally:
        app.close()
    return seen
