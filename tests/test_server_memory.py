"""No server process holds an officer's passphrase, a secret key or a report's plaintext.

Issue 12, "Proof": the source interface and the case server run under
gunicorn (real processes: masters and workers), the reviewer app runs as
its own process (`dropbox reviewer`), and an officer does everything
through it (tests/journey.py: sign in, read, download, reply, note, reveal
the identity, refer keeping a copy, download again). Then every readable
mapping of every server process is read through /proc/PID/maps and
/proc/PID/mem and searched for the passphrase, the officer's secret key,
each office's secret key and every plaintext canary: none may be there.
Keys are searched as their 32 bytes; text as UTF-8 and also as UTF-16 and
UTF-32, the forms CPython stores a string in when it holds a wider
character (encoded forms on the wire are the wire test's business). On
PostgreSQL (DROPBOX_TEST_DATABASE=postgresql) the database server's
processes are searched too.

Controls, so that a pass means something: the same search over the
reviewer app's process must find the officer's key, the office key it
opened and every canary (the search looks in the right place), and every
worker of both interfaces must hold the instance's codename salt, which
each loads at start (the search reads the server processes).

The report is sent to a source interface that is stopped before the
officer starts, and a fresh one serves meanwhile. A source interface
encrypts on arrival but receives the plaintext: whoever controls the
server at that moment can read it (docs/security.md, as in SecureDrop);
the figures print how many copies the receiving process still held. What
this test proves is the other half: what is stored, and everything
officers do with it, never reaches a server process.

The passphrase is not asserted present in the reviewer app: it is only in
the sign-in request, which is parsed and dropped; whether a freed buffer
still holds it is up to the allocator (its count is printed in the
figures, and has been 0).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dropbox.config import load
from dropbox.instance import load_secrets
from tests.conftest import FIGURES, PostgresServer, free_port
from tests.journey import (
    MARKER,
    Canaries,
    add_officer,
    all_forms,
    journey,
    log_tail,
    pins,
    stored,
    submit,
)
from tests.served import (
    Served,
    case_serving,
    children,
    descendants,
    prepare_instance,
    reviewing,
    serving,
)

SOURCE_WORKERS = 1
CASE_WORKERS = 2
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)")
CHUNK = 8 * 1024 * 1024


@dataclass
class Scan:
    """What reading one or more processes' memory found: counts by needle, and how much was read."""

    counts: Counter[str] = field(default_factory=Counter)
    by_process: dict[int, Counter[str]] = field(default_factory=dict)
    bytes_read: int = 0
    regions: int = 0
    unreadable: int = 0
    # Shared mappings (PostgreSQL's buffers in every backend) are read once: same pages.
    shared_seen: set[tuple[str, str, str, int]] = field(default_factory=set)

    def found(self, name: str) -> int:
        return self.counts[name]

    def where(self, name: str) -> dict[int, int]:
        return {pid: counts[name] for pid, counts in self.by_process.items() if counts[name]}


# A form to look for, and a shorter piece of it (or None) that every chunk is first searched
# for: all text secrets share the marker "CANARY", so one search rules most chunks out.
Form = tuple[bytes | None, bytes]
Needles = dict[str, list[Form]]


def scan_process(pid: int, needles: Needles, scan: Scan) -> None:
    """Count each needle (in any of its forms) in every readable mapping of process `pid`."""
    longest = max(len(form) for forms in needles.values() for _, form in forms)
    anchors = {anchor for forms in needles.values() for anchor, _ in forms if anchor}
    counts: Counter[str] = Counter()
    with open(f"/proc/{pid}/maps") as maps:
        mappings = maps.readlines()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for line in mappings:
            match = _MAPPING.match(line)
            if match is None or match.group(3)[0] != "r":
                continue
            start, end = int(match.group(1), 16), int(match.group(2), 16)
            if match.group(3)[3] == "s" and match.group(6) != "0":
                shared = (match.group(5), match.group(6), match.group(4), end - start)
                if shared in scan.shared_seen:
                    continue
                scan.shared_seen.add(shared)
            scan.regions += 1
            tail = b""
            position = start
            while position < end:
                try:
                    memory.seek(position)
                    data = memory.read(min(CHUNK, end - position))
                except OSError:  # [vvar] and the like: not memory the process wrote
                    scan.unreadable += 1
                    break
                if not data:
                    break
                window = tail + data
                present = {anchor for anchor in anchors if anchor in window}
                for name, forms in needles.items():
                    for anchor, form in forms:
                        if anchor is None or anchor in present:
                            # Matches lying wholly in the carried-over tail were counted already.
                            counts[name] += window.count(form) - tail.count(form)
                tail = window[-(longest - 1) :]
                position += len(data)
                scan.bytes_read += len(data)
    scan.by_process[pid] = counts
    scan.counts.update(counts)


def scan_processes(pids: list[int], needles: Needles) -> Scan:
    scan = Scan()
    for pid in pids:
        scan_process(pid, needles, scan)
    return scan


def memory_forms(needles: dict[str, bytes]) -> Needles:
    """How a secret may sit in a Python process: keys as their bytes (an X25519 key, an
    X-Wing seed and what it expands to); text as 1, 2 or 4 bytes a character (CPython
    stores a string in the narrowest that fits all of it)."""
    out: Needles = {}
    for name, value in needles.items():
        if "secret key" in name:
            out[name] = [(None, value)]
        else:
            text = value.decode()
            assert MARKER in text, name
            out[name] = [
                (MARKER.encode(encoding), text.encode(encoding))
                for encoding in ("utf-8", "utf-16-le", "utf-32-le")
            ]
    return out


def workers(served: Served) -> list[int]:
    return children(served.process.pid)


def database_processes(postgres: PostgresServer | None) -> list[int]:
    """The PostgreSQL server's processes (postmaster and backends); none on SQLite."""
    if postgres is None:
        return []
    postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
    return descendants(postmaster)


def test_no_server_process_holds_the_passphrase_a_secret_key_or_plaintext(
    tmp_path: Path, postgres_server: PostgresServer | None
) -> None:
    case_port = free_port()
    prepared = prepare_instance(
        tmp_path, SOURCE_WORKERS, f"[reviewer]\nport = {case_port}\nworkers = {CASE_WORKERS}\n"
    )
    canaries = Canaries()
    secret = add_officer(prepared, canaries)
    salt = load_secrets(load(prepared.config).data_dir).codename_salt
    source_sent = {name: text.encode() for name, text in canaries.from_source().items()}

    # The report goes to a source interface that is stopped afterwards (see the docstring).
    with serving(prepared.config, prepared.port, prepared.data_dir, SOURCE_WORKERS) as first:
        submit(first, canaries)
        at_arrival = scan_processes(
            descendants(first.process.pid), {k: [(None, v)] for k, v in source_sent.items()}
        )
    ids = stored(prepared)

    with (
        serving(prepared.config, prepared.port, prepared.data_dir, SOURCE_WORKERS) as source,
        case_serving(prepared.config, case_port, prepared.data_dir, CASE_WORKERS) as case,
        reviewing(tmp_path, f"http://127.0.0.1:{case_port}", pins(prepared)) as app,
    ):
        try:
            client = journey(app.url, secret, ids)
        except AssertionError as failed:
            raise AssertionError(
                f"{failed}\n--- reviewer app log:\n{log_tail(app.log)}\n"
                f"--- case server log:\n{log_tail(case.log)}"
            ) from None
        try:
            gunicorn = descendants(source.process.pid) + descendants(case.process.pid)
            servers = gunicorn + database_processes(postgres_server)
            server_workers = workers(source) + workers(case)
            needles = memory_forms(secret.needles())
            needles["codename salt (control)"] = [(None, salt)]
            began = time.monotonic()
            on_servers = scan_processes(servers, needles)
            in_app = scan_processes(app.processes(), needles)
            seconds = time.monotonic() - began
        finally:
            client.close()

    FIGURES.add(
        f"server memory: {len(servers)} server processes, "
        f"{on_servers.bytes_read / 2**20:.0f} MiB in {on_servers.regions} mappings read "
        f"({on_servers.unreadable} unreadable); reviewer app "
        f"{in_app.bytes_read / 2**20:.0f} MiB, searched in {seconds:.1f} s; in the reviewer app: "
        + ", ".join(f"{name} {count}" for name, count in sorted(in_app.counts.items()))
        + "; in the source interface that received the report: "
        + ", ".join(f"{name} {count}" for name, count in sorted(at_arrival.counts.items()))
    )
    FIGURES.count("server memory: bytes searched", on_servers.bytes_read + in_app.bytes_read)

    # No log of any of the processes (on disk, in the test's directory) holds any of it either.
    logs = b"".join(path.read_bytes() for path in (first.log, source.log, case.log, app.log))
    every_form = all_forms(secret.needles())
    logged = [name for name, found in every_form.items() if any(f in logs for f in found)]
    assert logged == [], f"written to a log: {logged}"

    # No server process holds anything that would let it read.
    leaked = {
        name: on_servers.where(name)
        for name in needles
        if name != "codename salt (control)" and on_servers.found(name)
    }
    assert leaked == {}, f"found in server processes (pid: count): {leaked}"

    # The search reads the servers: every worker of both interfaces holds the instance's salt.
    assert len(gunicorn) == 2 + SOURCE_WORKERS + CASE_WORKERS, gunicorn
    assert on_servers.bytes_read > len(servers) * 10 * 2**20
    holding_salt = set(on_servers.where("codename salt (control)"))
    assert set(server_workers) <= holding_salt, (server_workers, holding_salt)

    # ... and it looks in the right place: the reviewer app holds the keys and the plaintext.
    assert in_app.found("officer secret key") > 0
    assert in_app.found("OIO office secret key") > 0
    # The identity details are opened only for the reveal page (the journey checks they
    # were shown there) and the app keeps no copy after it: whether the freed bytes are
    # still in memory when the search runs depends on the allocator. Every other
    # canary the app holds while the report is open must be found.
    found = {name: in_app.found(f"canary: {name}") > 0 for name in canaries.all()}
    missing = {name for name, seen in found.items() if not seen}
    assert missing <= {"identity name", "identity contact"}, f"not in the reviewer app: {missing}"
