"""The child process of tests/test_login_flood.py: a flood of wrong codenames, measured.

Run as ``python -m tests.flood_child WORK_DIR SLOTS [MEMORY_MIB [PASSES [DATABASE_URL]]]``
from the repository root (or ``python -m tests.flood_child fair WORK_DIR SLOTS MEMORY_MIB
PASSES ATTACKERS [DATABASE_URL]`` for `fair`, below: a real source signing in through a
flood). It builds a real source interface (no mocks) over a
new instance in WORK_DIR whose codename derivation is Argon2id with
MEMORY_MIB of memory (default 32) and PASSES passes over it (default 1), with
at most SLOTS derivations at once. After one warm-up login
it records its peak RSS, fires FLOOD concurrent POST /login with distinct
valid-looking but wrong codenames from as many threads (each with its own
test client and CSRF token), waits for them all, records its peak RSS again,
and prints one JSON line:

    {"baseline_mib": ..., "peak_mib": ..., "maxrss_baseline_mib": ...,
     "maxrss_peak_mib": ..., "statuses": [...], "seconds": ...}

``baseline_mib`` and ``peak_mib`` are VmHWM from /proc/self/status: the
high-water mark of this process's own address space. ``maxrss_*`` are
``ru_maxrss``, printed for comparison only: Linux carries the parent's peak
over into the child's ru_maxrss at exec, so when the parent (pytest) is the
larger of the two, ru_maxrss shows the parent, not the flood.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

from flask.testing import FlaskClient

from crypto import codenames
from crypto.kdf import KdfCost
from dropbox import offices
from dropbox.config import Config, CryptoSettings, LimitSettings
from dropbox.instance import Instance
from source_interface import create_app
from tests.source_helpers import csrf_token, new_codename, submit_report

FLOOD = 24
CHEAP_COST = KdfCost(iterations=1, memory_bytes=8 * 1024)  # office recovery files only


def vm_hwm_mib() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def maxrss_mib() -> float:
    """ru_maxrss (KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(
    work: Path, slots: int, memory_mib: int, passes: int, database_url: str = ""
) -> dict[str, object]:
    """Set up, warm up, flood, and return the figures."""
    config = Config(
        data_dir=work / "data",
        database_url=database_url,
        crypto=CryptoSettings(kdf_iterations=passes, kdf_memory_kib=memory_mib * 1024),
        limits=LimitSettings(concurrent_derivations=slots, codename_attempts_per_minute=1000),
    )
    instance = Instance.initialise(config)
    with instance.sessions.begin() as session:
        for office in config.offices:
            offices.create(session, config, office.code, CHEAP_COST, "test")
    app = create_app(config, instance)
    app.config["TESTING"] = True

    def wrong_login(client: FlaskClient, token: str) -> int:
        codename = codenames.generate("en")  # valid-looking, and no report has it
        response = client.post("/login", data={"csrf_token": token, "codename": codename})
        return response.status_code

    # Warm-up: every import, template and lazy table is loaded, and one
    # derivation has run, before the baseline is taken.
    warm = app.test_client()
    warm_status = wrong_login(warm, csrf_token(warm.get("/login").get_data(as_text=True)))
    if warm_status != 400:
        raise SystemExit(f"the warm-up login answered {warm_status}, not 400")

    # Each attacker has its own client and session; the tokens are fetched first,
    # one by one, so that only the POSTs run at once.
    attackers: list[tuple[FlaskClient, str]] = []
    for _ in range(FLOOD):
        client = app.test_client()
        attackers.append((client, csrf_token(client.get("/login").get_data(as_text=True))))

    baseline, maxrss_baseline = vm_hwm_mib(), maxrss_mib()
    statuses: list[int] = [0] * FLOOD
    start = threading.Barrier(FLOOD)

    def attack(index: int) -> None:
        client, token = attackers[index]
        start.wait()
        statuses[index] = wrong_login(client, token)

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(FLOOD)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - began
    result = {
        "baseline_mib": baseline,
        "peak_mib": vm_hwm_mib(),
        "maxrss_baseline_mib": maxrss_baseline,
        "maxrss_peak_mib": maxrss_mib(),
        "statuses": statuses,
        "seconds": seconds,
    }
    instance.close()
    return result


def fair(
    work: Path, slots: int, memory_mib: int, passes: int, attackers: int, database_url: str = ""
) -> dict[str, object]:
    """A flood of well-formed wrong codenames, and a real source signing in through it.

    `attackers` threads each send wrong but well-formed codenames, one after
    the other, every one from a fresh cookie (a new client: GET /login for a
    token, then POST), until told to stop. Once they have made more attempts
    than the old shared limit allowed a minute (60 per slot), a real source
    signs in with its real codename three times, one after the other, each
    from a fresh cookie too, and each wait (the POST) is timed. The figures:
    how long a derivation takes alone, the flood's throughput, each wait, and
    every status the attackers and the source got.
    """
    config = Config(
        data_dir=work / "data",
        database_url=database_url,
        crypto=CryptoSettings(kdf_iterations=passes, kdf_memory_kib=memory_mib * 1024),
        limits=LimitSettings(concurrent_derivations=slots),
    )
    instance = Instance.initialise(config)
    with instance.sessions.begin() as session:
        for office in config.offices:
            offices.create(session, config, office.code, CHEAP_COST, "test")
    app = create_app(config, instance)
    app.config["TESTING"] = True

    source = app.test_client()
    codename, form = new_codename(source)
    message = "The stock counts were changed after every audit this spring."
    sent = submit_report(source, form, {"category": "fraud", "message": message})
    if sent.status_code != 302:
        raise SystemExit(f"the real source's report answered {sent.status_code}")

    def attempt(words: str) -> tuple[int, float]:
        client = app.test_client()
        token = csrf_token(client.get("/login").get_data(as_text=True))
        began = time.monotonic()
        response = client.post("/login", data={"csrf_token": token, "codename": words})
        return response.status_code, time.monotonic() - began

    alone = sorted(attempt(codenames.generate("en"))[1] for _ in range(5))[2]
    stop = threading.Event()
    lock = threading.Lock()
    done: list[tuple[float, int]] = []  # (when, status) of each attacker's attempt

    def attack() -> None:
        while not stop.is_set():
            status, _ = attempt(codenames.generate("en"))
            with lock:
                done.append((time.monotonic(), status))

    threads = [threading.Thread(target=attack, daemon=True) for _ in range(attackers)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    # More attempts than the old limit shared by everyone let through in a minute.
    deadline = began + 60
    while len(done) <= 60 * slots + 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    flood_before = (len(done), time.monotonic() - began)
    waits: list[float] = []
    statuses: list[int] = []
    for _ in range(3):
        status, waited = attempt(codename)
        statuses.append(status)
        waits.append(waited)
    window_start = time.monotonic()
    time.sleep(1.0)
    with lock:
        recent = sum(1 for when, _ in done if when >= window_start)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    flood_seconds = time.monotonic() - began
    attacker_statuses = sorted({status for _, status in done})
    per_second = len(done) / flood_seconds
    instance.close()
    return {
        "slots": slots,
        "queue": getattr(app.extensions["dropbox.gate"], "queue", None),  # None before the line
        "attackers": attackers,
        "derivation_alone_s": alone,
        "attempts_before_source": flood_before[0],
        "seconds_before_source": flood_before[1],
        "attempts": len(done),
        "attempts_per_second": per_second,
        "attempts_in_last_second": recent,
        "source_statuses": statuses,
        "source_waits_s": waits,
        "attacker_statuses": attacker_statuses,
        "busy": sum(1 for _, status in done if status == 503),
        "limited": sum(1 for _, status in done if status == 429),
    }


if __name__ == "__main__":
    if sys.argv[1] == "fair":
        arguments = [int(value) for value in sys.argv[3:7]]
        url = sys.argv[7] if len(sys.argv) > 7 else ""
        print(json.dumps(fair(Path(sys.argv[2]), *arguments, database_url=url)))
        sys.exit(0)
    memory = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    passes = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    database_url = sys.argv[5] if len(sys.argv) > 5 else ""
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), memory, passes, database_url)))
