"""Benchmark: one large report upload through the real source interface, against raw secretstream.

Run from the repository root:

    .venv/bin/python bench/upload.py [--size-mib 1024] [--dir /tmp]

It sets up a throw-away instance (``dropbox init``, ``dropbox office create``
for OIO and ECO, production KDF cost), starts ``dropbox run source`` (gunicorn,
one worker) on a free port, and walks the source flow as a browser would,
with ``http.client`` and the ``dropbox_source`` cookie kept by hand:
GET /codename, POST /codename, GET /report, then POST /report as
multipart/form-data with one file part of ``--size-mib`` MiB. The body is
generated on the fly (one 1 MiB block of ``os.urandom``, repeated) and
streamed with a precomputed Content-Length: the client never holds it whole.
The upload is timed from the first body byte to the response (302 to
/receipt), and the blob it left in the data directory is checked.

In the same run, the same bytes from the same generator go through raw
libsodium secretstream (XChaCha20-Poly1305, 64 KiB chunks, the last tagged
FINAL) into a file on the same disk, fsynced at the end, in this process.

Memory: the peak RSS (``VmHWM``) of the gunicorn worker (found under the
master through /proc/<pid>/task/*/children), read right after the response,
before the server is stopped. The worker's high-water mark is reset
(``/proc/<pid>/clear_refs``, "5") just before the upload, so the figure held
to the target is the upload's own; the worker's peak since start-up, which
also holds the Argon2id derivation of the codename at POST /codename (64 MiB
at the production cost), is printed beside it. The worker's CPU time and
minor page faults during the upload are printed too.

Throughput is MB (10^6 bytes) of file content per second. Exit status 1 if
the ratio upload/raw is below 0.5, if the worker's peak RSS during the upload
is above 100 MiB, or if the upload did not land; the server is always stopped
and the temporary directory always removed. The machine's other load moves
both figures: run it on a quiet machine, and more than once.
"""

from __future__ import annotations

import argparse
import html
import http.client
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
MB = 1_000_000
CHUNK = 64 * 1024
COOKIE = "dropbox_source"

TARGET_RATIO = 0.5
TARGET_RSS_MIB = 100.0

MESSAGE = "Invoices for the warehouse contract were paid twice; the files show every transfer."
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')
CODENAME = re.compile(r'name="codename"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="codename"')


# --- the payload --------------------------------------------------------------------------------


class Payload:
    """`size` bytes made of one random 1 MiB block repeated, produced 1 MiB at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.block = os.urandom(MIB)

    def blocks(self) -> Iterator[bytes]:
        """The content, in pieces of at most 1 MiB."""
        left = self.size
        while left:
            piece = self.block if left >= MIB else self.block[:left]
            left -= len(piece)
            yield piece


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(work: Path, size_mib: int) -> Path:
    """A configuration for a throw-away instance under `work` (production KDF cost)."""
    source_port = free_port()
    reviewer_port = free_port()
    while reviewer_port == source_port:
        reviewer_port = free_port()
    path = work / "config.toml"
    path.write_text(
        'data_dir = "data"\n\n'
        "[source]\n"
        f"port = {source_port}\n"
        "workers = 1\n"
        # Room for the form fields and the multipart framing around the file.
        f"max_upload_mib = {size_mib + 16}\n\n"
        "[reviewer]\n"
        f"port = {reviewer_port}\n"
    )
    return path


def dropbox_command(config_path: Path, *args: str) -> list[str]:
    """The `dropbox` command line, run with this interpreter."""
    return [sys.executable, "-m", "launcher", "--config", str(config_path), *args]


def set_up_instance(work: Path, config_path: Path) -> None:
    """`dropbox init`, then both offices' keys (recovery files into `work`)."""
    steps = [
        ["init"],
        ["office", "create", "OIO", "--recovery-file", str(work / "OIO-recovery.json")],
        ["office", "create", "ECO", "--recovery-file", str(work / "ECO-recovery.json")],
    ]
    for step in steps:
        result = subprocess.run(
            dropbox_command(config_path, *step),
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise SystemExit(f"dropbox {' '.join(step)} failed:\n{result.stderr}")


def source_port(config_path: Path) -> int:
    """The source port written into the configuration."""
    match = re.search(r"^\[source\]\nport = (\d+)$", config_path.read_text(), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def wait_until_up(server: subprocess.Popen[bytes], port: int, log: Path, limit: float) -> None:
    """Poll GET / until the server answers 200."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped at start-up:\n{log.read_text()[-4000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/")
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {limit:.0f} s:\n{log.read_text()[-4000:]}")


def children(pid: int) -> list[int]:
    """The child processes of `pid` (gunicorn's workers when `pid` is the master)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def status_kib(pid: int, field: str) -> int:
    """A `Vm*` figure of /proc/<pid>/status, in KiB (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_figures(pid: int) -> tuple[float, float, int]:
    """(user CPU seconds, system CPU seconds, minor page faults) of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0, 0
    # stat(5) fields 10, 14 and 15 (minflt, utime, stime), counted from after the name.
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick, int(fields[7])


def cpu_total(pids: list[int]) -> tuple[float, float, int]:
    """cpu_figures summed over processes."""
    figures = [cpu_figures(pid) for pid in pids]
    return (
        sum(f[0] for f in figures),
        sum(f[1] for f in figures),
        sum(f[2] for f in figures),
    )


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); True if it worked."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait; SIGKILL if it does not stop in time."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


# --- the browser --------------------------------------------------------------------------------


class Browser:
    """HTTP/1.1 with the session cookie kept by hand, one connection per request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: str | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        return headers

    def _keep_cookie(self, response: http.client.HTTPResponse) -> None:
        for header in response.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            if COOKIE in jar:
                morsel = jar[COOKIE]
                self.cookie = morsel.value or None
                if morsel["expires"] and "1970" in morsel["expires"]:
                    self.cookie = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, str]:
        """(status, Location, body text)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=self._headers(headers))
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            self._keep_cookie(response)
            return response.status, response.getheader("Location") or "", text
        finally:
            connection.close()

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, str, str]:
        """POST an urlencoded form."""
        body = urlencode(fields).encode("ascii")
        return self.request(
            "POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"}
        )

    def post_multipart_streamed(
        self, path: str, fields: dict[str, str], file_name: str, payload: Payload
    ) -> tuple[int, str, float]:
        """POST fields and one file part, the file streamed from `payload`; (status, Location, s).

        The time runs from the first body byte sent to the response's status line.
        """
        boundary = "----bench" + secrets.token_hex(16)
        marker = f"--{boundary}".encode("ascii")
        # The repeated block, and the seam between two copies, must not contain the boundary.
        assert marker not in payload.block + payload.block
        head = bytearray()
        for name, value in fields.items():
            head += marker + b"\r\n"
            head += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            head += value.encode("utf-8") + b"\r\n"
        head += marker + b"\r\n"
        head += (
            f'Content-Disposition: form-data; name="files"; filename="{file_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = b"\r\n" + marker + b"--\r\n"
        length = len(head) + payload.size + len(tail)

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            connection.putrequest("POST", path)
            headers = self._headers(
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(length),
                }
            )
            for key, value in headers.items():
                connection.putheader(key, value)
            connection.endheaders()
            start = time.perf_counter()
            try:
                connection.send(bytes(head))
                for piece in payload.blocks():
                    connection.send(piece)
                connection.send(tail)
            except OSError as exc:  # the server answered early and closed: read what it said
                print(f"(sending stopped: {exc})", flush=True)
            response = connection.getresponse()
            seconds = time.perf_counter() - start
            response.read()
            self._keep_cookie(response)
            return response.status, response.getheader("Location") or "", seconds
        finally:
            connection.close()


def hidden_value(pattern: re.Pattern[str], page: str, what: str) -> str:
    """The value of a hidden input on a page."""
    match = pattern.search(page)
    if match is None:
        raise SystemExit(f"no {what} on the page:\n{page[:2000]}")
    return html.unescape(match.group(1) or match.group(2))


def open_report_form(browser: Browser) -> str:
    """GET and POST /codename, GET /report; return the report form's CSRF token."""
    status, _, page = browser.request("GET", "/codename")
    if status != 200:
        raise SystemExit(f"GET /codename: {status}")
    fields = {
        "csrf_token": hidden_value(CSRF, page, "CSRF token"),
        "codename": hidden_value(CODENAME, page, "codename"),
        "written_down": "yes",
    }
    status, location, page = browser.post_form("/codename", fields)
    if status != 302 or urlsplit(location).path != "/report":
        raise SystemExit(f"POST /codename: {status} {location}\n{page[:2000]}")
    status, _, page = browser.request("GET", "/report")
    if status != 200:
        raise SystemExit(f"GET /report: {status}\n{page[:2000]}")
    return hidden_value(CSRF, page, "CSRF token")


# --- raw secretstream ---------------------------------------------------------------------------


def chunks(payload: Payload) -> Iterator[bytes]:
    """The payload in 64 KiB chunks (the last one may be shorter)."""
    carry = b""
    for block in payload.blocks():
        if carry:  # only after a block that is not a whole number of chunks: the last one
            block = carry + block
        whole = len(block) - len(block) % CHUNK
        for offset in range(0, whole, CHUNK):
            yield block[offset : offset + CHUNK]
        carry = block[whole:]
    if carry:
        yield carry


def raw_secretstream(payload: Payload, target: Path) -> float:
    """Encrypt the payload with raw secretstream into `target`, fsync; return the seconds."""
    from nacl.bindings import (
        crypto_secretstream_xchacha20poly1305_init_push,
        crypto_secretstream_xchacha20poly1305_KEYBYTES,
        crypto_secretstream_xchacha20poly1305_push,
        crypto_secretstream_xchacha20poly1305_state,
        crypto_secretstream_xchacha20poly1305_TAG_FINAL,
        crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
    )

    key = os.urandom(crypto_secretstream_xchacha20poly1305_KEYBYTES)
    state = crypto_secretstream_xchacha20poly1305_state()
    start = time.perf_counter()
    with target.open("xb") as sink:
        sink.write(crypto_secretstream_xchacha20poly1305_init_push(state, key))
        held: bytes | None = None  # one chunk is held back: only the end knows which is last
        for chunk in chunks(payload):
            if held is not None:
                sink.write(
                    crypto_secretstream_xchacha20poly1305_push(
                        state, held, None, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
                    )
                )
            held = chunk
        sink.write(
            crypto_secretstream_xchacha20poly1305_push(
                state, held or b"", None, crypto_secretstream_xchacha20poly1305_TAG_FINAL
            )
        )
        sink.flush()
        os.fsync(sink.fileno())
    return time.perf_counter() - start


# --- the run ------------------------------------------------------------------------------------


def largest_blob(data_dir: Path) -> int:
    """The size of the largest committed blob in the data directory."""
    sizes = [p.stat().st_size for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    return max(sizes, default=0)


def run(size_mib: int, directory: str | None) -> int:
    size = size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="upload-bench-", dir=directory))
    server: subprocess.Popen[bytes] | None = None
    log_file = None
    try:
        config_path = write_config(work, size_mib)
        set_up_instance(work, config_path)
        port = source_port(config_path)
        log = work / "server.log"
        log_file = log.open("wb")
        server = subprocess.Popen(
            dropbox_command(config_path, "run", "source"),
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        wait_until_up(server, port, log, limit=60)
        print(f"source interface on port {port} (master pid {server.pid}), data in {work}")

        browser = Browser(port)
        token = open_report_form(browser)
        payload = Payload(size)
        workers = children(server.pid)
        if not workers:
            raise SystemExit("no gunicorn worker found under the master")
        before = {pid: status_kib(pid, "VmHWM") for pid in workers}
        rss_before = max(status_kib(pid, "VmRSS") for pid in workers)
        reset = all(reset_peak(pid) for pid in workers)
        os.sync()
        cpu_before = cpu_total(workers)
        client_before = time.process_time()

        print(f"uploading {size_mib} MiB ...", flush=True)
        status, location, upload_seconds = browser.post_multipart_streamed(
            "/report",
            {"csrf_token": token, "category": "fraud", "message": MESSAGE},
            "bench.bin",
            payload,
        )
        # Read the peaks before anything else can happen in the server.
        workers_after = children(server.pid)
        worker_hwm = {pid: status_kib(pid, "VmHWM") for pid in workers_after}
        worker_rss = {pid: status_kib(pid, "VmRSS") for pid in workers_after}
        master_hwm = status_kib(server.pid, "VmHWM")
        cpu_after = cpu_total(workers_after)
        server_user, server_sys, server_faults = (
            now - then for now, then in zip(cpu_after, cpu_before, strict=True)
        )
        client_cpu = time.process_time() - client_before

        ok = True
        if status != 302 or urlsplit(location).path != "/receipt":
            print(f"FAIL: POST /report answered {status} {location}")
            ok = False
        blob = largest_blob(work / "data")
        if blob < size:
            print(f"FAIL: no blob of at least {size} bytes in the data directory (largest {blob})")
            ok = False
        leftovers = list((work / "data" / "tmp").glob("*"))
        if leftovers:
            print(f"FAIL: {len(leftovers)} partial file(s) left in data/tmp")
            ok = False
        receipt, _, _ = browser.request("GET", "/receipt")
        if receipt != 200:
            print(f"FAIL: GET /receipt answered {receipt}")
            ok = False
        if set(workers_after) != set(workers):
            print(f"FAIL: the worker changed during the upload ({workers} -> {workers_after})")
            ok = False

        stop(server)
        os.sync()
        raw_seconds = raw_secretstream(payload, work / "raw.body")
        raw_size = (work / "raw.body").stat().st_size
        (work / "raw.body").unlink()

        upload_speed = size / MB / upload_seconds
        raw_speed = size / MB / raw_seconds
        ratio = upload_speed / raw_speed
        peak_mib = max(worker_hwm.values(), default=0) / 1024
        lifetime_mib = (
            max([*worker_hwm.values(), *(before.get(pid, 0) for pid in worker_hwm)], default=0)
            / 1024
        )
        client_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        def verdict(passed: bool) -> str:
            return "ok" if passed else "MISSED"

        print()
        print(f"size {size_mib} MiB of file content, MB = 10^6 bytes, one gunicorn worker")
        print(
            f"  upload   POST /report  {upload_speed:8.1f} MB/s  ({upload_seconds:.2f} s, "
            f"blob {blob / MIB:.1f} MiB, answer {status} {urlsplit(location).path})"
        )
        print(
            f"           during the upload: server worker CPU {server_user:.2f} s user + "
            f"{server_sys:.2f} s system, {server_faults} minor page faults; "
            f"client CPU {client_cpu:.2f} s"
        )
        print(
            f"  raw      secretstream  {raw_speed:8.1f} MB/s  ({raw_seconds:.2f} s, "
            f"{raw_size / MIB:.1f} MiB written, fsynced)"
        )
        if ok:
            print(
                f"  ratio upload/raw {ratio:.3f}  (target >= {TARGET_RATIO})  "
                f"{verdict(ratio >= TARGET_RATIO)}"
            )
        else:
            print("  ratio upload/raw not measured: the upload failed")
        what = (
            "worker VmHWM, reset just before the upload"
            if reset
            else "worker VmHWM since start: clear_refs unavailable"
        )
        print(
            f"  server peak RSS during the upload {peak_mib:.1f} MiB ({what})  "
            f"(target <= {TARGET_RSS_MIB:.0f} MiB)  {verdict(peak_mib <= TARGET_RSS_MIB)}"
        )
        print(
            f"  worker VmHWM since start {lifetime_mib:.1f} MiB (includes the Argon2id derivation "
            f"at POST /codename); worker VmRSS just before the upload "
            f"{rss_before / 1024:.1f} MiB, now "
            f"{max(worker_rss.values(), default=0) / 1024:.1f} MiB; "
            f"master VmHWM {master_hwm / 1024:.1f} MiB; this client's peak RSS {client_mib:.1f} MiB"
        )
        ok = ok and ratio >= TARGET_RATIO and peak_mib <= TARGET_RSS_MIB
        return 0 if ok else 1
    finally:
        if server is not None:
            stop(server)
        if log_file is not None:
            log_file.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--dir", default=None, help="where to put the temporary instance")
    args = parser.parse_args()
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    return run(args.size_mib, args.dir)


if __name__ == "__main__":
    sys.exit(main())
