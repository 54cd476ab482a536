"""The child process of tests/test_login_flood.py: a flood of wrong codenames, measured.

Run as ``python -m tests.flood_child WORK_DIR SLOTS [MEMORY_MIB [PASSES [DATABASE_URL]]]``
from the repository root. It builds a real source interface (no mocks) over a
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
from tests.source_helpers import csrf_token

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


if __name__ == "__main__":
    memory = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    passes = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    database_url = sys.argv[5] if len(sys.argv) > 5 else ""
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), memory, passes, database_url)))
