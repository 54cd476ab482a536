"""Benchmark: 10,000 queued notification e-mails sent to a local SMTP server.

Run from the repository root:

    .venv/bin/python bench/notify.py [--mails 10000] [--encrypted 0]

What it does:

1. Builds a throw-away instance in a temporary directory (SQLite, the
   application's own engine and pragmas; a cheap Argon2id cost, since no
   key is derived here) with ``--mails`` officers, each of whom chose a mail
   as soon as something arrives, and one queued notification for each
   (a row of `notifications` saying "1 new report", as
   `dropbox.notify.report_arrived` leaves it). ``--encrypted`` of them also
   registered an OpenPGP key (made with the `gpg` program in a private
   GNUPGHOME of the bench), so their mails are encrypted, one gpg call each.
2. Starts an aiosmtpd server on 127.0.0.1 in this process, which counts the
   mails it receives.
3. Runs `dropbox notify --once` in a child process, as a timer would on the
   case server's host: the case server's code and configuration, the
   process that sends. (The case server's web workers send nothing: a
   report or an answer only adds a row.)
4. Prints the mails sent per second (wall time of the child, start-up
   included) and the child's peak RSS (its VmHWM, read from /proc while it
   runs: `ru_maxrss` would also count this process's own memory, which the
   child shares between fork and exec), and exits 1 if a target is missed,
   a mail was not delivered, or a row is left in the queue:

   * at least 200 mails a second (without encryption);
   * peak RSS at most 128 MiB: the run works in batches of officers, so its
     memory does not grow with the queue.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dropbox import config as config_module  # noqa: E402
from dropbox import offices, openpgp  # noqa: E402
from dropbox.instance import Instance  # noqa: E402
from dropbox.models import Notification, NotificationPreference, Officer  # noqa: E402
from tests.conftest import CHEAP_COST, CHEAP_CRYPTO_TOML, free_port  # noqa: E402

TARGET_RATE = 200.0  # mails a second, unencrypted
TARGET_RSS_MIB = 128.0


class Counter:
    """An aiosmtpd handler that only counts what arrives."""

    def __init__(self) -> None:
        self.received = 0
        self.encrypted = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received += 1
            if b"multipart/encrypted" in envelope.content[:400]:
                self.encrypted += 1
        return "250 OK"


def officer_key(home: Path) -> str:
    """An armoured public key with an encryption subkey, made by gpg in `home`."""
    base = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    uid = "Bench officer <bench@example.org>"
    subprocess.run(
        [*base, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "cert", "1y"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [*base, "--with-colons", "--list-keys", uid], check=True, capture_output=True, text=True
    ).stdout
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    subprocess.run(
        [*base, "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", "1y"],
        check=True,
        capture_output=True,
    )
    return subprocess.run(
        [*base, "--armor", "--export", uid], check=True, capture_output=True, text=True
    ).stdout


def seed(instance: Instance, mails: int, encrypted: int, key: openpgp.PublicKey | None) -> None:
    """The officers, their choices and one queued notification each, by bulk inserts."""
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with instance.sessions.begin() as db:
        offices.create(db, instance.config, "OIO", CHEAP_COST, "bench")
        db.execute(
            insert(Officer),
            [
                {
                    "username": f"officer{i:05d}",
                    "display_name": f"Officer {i}",
                    "is_admin": False,
                    "active": True,
                    "totp_last_counter": 0,
                    "created_at": now,
                }
                for i in range(mails)
            ],
        )
        ids = list(db.execute(select(Officer.id).order_by(Officer.id)).scalars())
        db.execute(
            insert(NotificationPreference),
            [
                {
                    "officer_id": officer_id,
                    "email": f"officer{n:05d}@example.org",
                    "mode": "immediate",
                    "openpgp_key": key.armored if key and n < encrypted else None,
                    "openpgp_fingerprint": key.fingerprint if key and n < encrypted else None,
                    # Today's daily mail is done: the run sends the queue, not reminders.
                    "last_daily_on": now.date(),
                }
                for n, officer_id in enumerate(ids)
            ],
        )
        db.execute(
            insert(Notification),
            [
                {
                    "officer_id": officer_id,
                    "new_reports": 1,
                    "new_answers": 0,
                    "acknowledge_soon": 0,
                    "feedback_soon": 0,
                    "overdue": 0,
                    "created_on": now.date(),
                    "attempts": 0,
                    "last_error": "",
                }
                for officer_id in ids
            ],
        )


def watch_peak(child: subprocess.Popen[str], peak_kib: list[int]) -> None:
    """Keep the child's high-water RSS (VmHWM, kB) in peak_kib[0] until it ends."""
    status = Path(f"/proc/{child.pid}/status")
    while child.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib[0] = max(peak_kib[0], int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            pass  # ended (or became a zombie) between the poll and the read
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=10_000, help="queued mails (default 10000)")
    parser.add_argument(
        "--encrypted", type=int, default=0, help="how many of them go OpenPGP-encrypted"
    )
    args = parser.parse_args()
    if shutil.which("gpg") is None and args.encrypted:
        print("bench/notify.py: --encrypted needs the gpg program (apt-get install gpg)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="dropbox-bench-notify-"))
    handler = Counter()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config_file = work / "config.toml"
        config_file.write_text(
            f'data_dir = "{work / "data"}"\n'
            + CHEAP_CRYPTO_TOML
            + f'[mail]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
            'from_address = "dropbox@example.org"\n'
        )
        config = config_module.load(config_file)
        instance = Instance.initialise(config)
        key = None
        if args.encrypted:
            home = work / "gnupg"
            home.mkdir(mode=0o700)
            key = openpgp.check_public_key(officer_key(home))
        started = time.perf_counter()
        seed(instance, args.mails, args.encrypted, key)
        seeded = time.perf_counter() - started
        print(f"seeded {args.mails} officers and queued mails in {seeded:.1f} s")

        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--config", str(config_file), "notify", "--once"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        peak_kib = [0]
        watcher = threading.Thread(target=watch_peak, args=(child, peak_kib), daemon=True)
        watcher.start()
        stdout, stderr = child.communicate()
        elapsed = time.perf_counter() - started
        watcher.join()
        peak_mib = peak_kib[0] / 1024
        print(stdout.strip() or stderr.strip())
        with instance.sessions() as db:
            left = db.execute(select(func.count()).select_from(Notification)).scalar_one()
        instance.close()
        time.sleep(0.5)  # the server's last mail may still be in its handler
        rate = handler.received / elapsed
        plain = args.mails - args.encrypted
        print(
            f"mails: {args.mails} queued ({args.encrypted} encrypted), {handler.received} received"
            f" ({handler.encrypted} encrypted), {left} left in the queue"
        )
        print(f"time: {elapsed:.1f} s for the whole `dropbox notify --once`, {rate:.0f} mails/s")
        print(f"peak RSS of the sending process (VmHWM): {peak_mib:.1f} MiB")
        failures = []
        if child.returncode != 0:
            failures.append(f"dropbox notify exited {child.returncode}")
        if handler.received != args.mails or handler.encrypted != args.encrypted or left:
            failures.append("not every queued mail was delivered once")
        if plain == args.mails and rate < TARGET_RATE:
            failures.append(f"{rate:.0f} mails/s is below the target of {TARGET_RATE:.0f}")
        if peak_mib > TARGET_RSS_MIB:
            failures.append(f"peak RSS {peak_mib:.1f} MiB is above {TARGET_RSS_MIB:.0f} MiB")
        for failure in failures:
            print(f"MISSED: {failure}")
        if not failures:
            print(
                f"OK: targets met (>= {TARGET_RATE:.0f} mails/s unencrypted,"
                f" <= {TARGET_RSS_MIB:.0f} MiB)"
            )
        return 1 if failures else 0
    finally:
        controller.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
