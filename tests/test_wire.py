"""Nothing the reviewer app sends to the case server would let the server read.

Issue 12, "Proof": a recording TCP forwarder sits between the reviewer app
(its own process) and the case server (gunicorn), so every byte the app
sends is captured, whatever the HTTP client does (headers, bodies, keep-
alive, retries). An officer does everything through the app
(tests/journey.py). The capture must not contain the passphrase, the
officer's secret key, an office's secret key or any plaintext canary, raw
or as base64 (standard and URL-safe, at any alignment), hex, URL-encoded,
UTF-16 or UTF-32. It must contain the sign-in's auth key in base64 and the
journey's routes: the capture saw what was sent.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import FIGURES, free_port
from tests.journey import Canaries, add_officer, all_forms, journey, log_tail, pins, stored, submit
from tests.served import case_serving, prepare_instance, reviewing, serving


class Recorder:
    """A TCP forwarder on loopback that keeps every byte its clients send upstream."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.sent: list[bytearray] = []  # one per connection, in the order they came
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []

    def start(self) -> None:
        accepting = threading.Thread(target=self._accept, daemon=True)
        accepting.start()
        self.threads.append(accepting)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed: the test is over
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            record = bytearray()
            with self.lock:
                self.sent.append(record)
                self.sockets += [client, upstream]
            for source, target, keep in ((client, upstream, record), (upstream, client, None)):
                pump = threading.Thread(target=self._pump, args=(source, target, keep), daemon=True)
                pump.start()
                self.threads.append(pump)

    def _pump(self, source: socket.socket, target: socket.socket, keep: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if keep is not None:
                    with self.lock:
                        keep.extend(data)
                target.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def capture(self) -> bytes:
        """Everything sent so far, connection after connection."""
        with self.lock:
            return b"\n".join(bytes(record) for record in self.sent)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.close()


@contextmanager
def recording(upstream_port: int) -> Iterator[Recorder]:
    recorder = Recorder(upstream_port)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.close()


def test_the_reviewer_app_sends_no_passphrase_no_secret_key_and_no_plaintext(
    tmp_path: Path,
) -> None:
    case_port = free_port()
    prepared = prepare_instance(tmp_path, 1, f"[reviewer]\nport = {case_port}\nworkers = 1\n")
    canaries = Canaries()
    secret = add_officer(prepared, canaries)

    with (
        serving(prepared.config, prepared.port, prepared.data_dir, 1) as source,
        case_serving(prepared.config, case_port, prepared.data_dir, 1) as case,
        recording(case_port) as recorder,
        reviewing(tmp_path, f"http://127.0.0.1:{recorder.port}", pins(prepared)) as app,
    ):
        submit(source, canaries)
        ids = stored(prepared)
        try:
            client = journey(app.url, secret, ids)
        except AssertionError as failed:
            raise AssertionError(
                f"{failed}\n--- reviewer app log:\n{log_tail(app.log)}\n"
                f"--- case server log:\n{log_tail(case.log)}"
            ) from None
        client.close()
        captured = recorder.capture()
        connections = len(recorder.sent)

    needles = all_forms(secret.needles())
    FIGURES.add(
        f"wire: {len(captured)} bytes over {connections} connections from the reviewer app "
        f"to the case server searched for {sum(len(f) for f in needles.values())} forms "
        f"of {len(needles)} secrets"
    )

    # The capture is of the journey: the sign-in's auth key, and each action's request.
    assert captured, "nothing was captured"
    assert base64.b64encode(secret.auth_key) in captured
    for route in (
        b"POST /api/v2/signin ",
        f"GET /api/v2/reports/{ids.report_id} ".encode(),
        f"GET /api/v2/reports/{ids.report_id}/items/{ids.file_id}/body ".encode(),
        f"POST /api/v2/reports/{ids.report_id}/items ".encode(),
        f"POST /api/v2/reports/{ids.report_id}/reveal ".encode(),
        f"POST /api/v2/reports/{ids.report_id}/refer ".encode(),
    ):
        assert route in captured, f"{route!r} was not captured"

    sent = {name: [form for form in forms if form in captured] for name, forms in needles.items()}
    assert {name: found for name, found in sent.items() if found} == {}
