"""The reviewer app reaches the case server through a SOCKS proxy, as through tor's port.

A small SOCKS5 server in the test stands where tor's SOCKS port would be: it
records what it is asked to connect to and forwards to the real case server,
served over HTTP on loopback. The case server's address is an .onion name that
nothing here can resolve, so the sign-in can only work if the app hands the
name to the proxy unresolved (as tor needs: a local DNS lookup of an onion
name would leak it, and fail).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from journalist_interface.app import create_reviewer_app
from tests.conftest import reviewer_settings
from tests.reviewer_helpers import World, fresh_code
from tests.source_helpers import csrf_token

ONION = "reviewerxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion"


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@dataclass
class Socks5:
    """A SOCKS5 server (no authentication, CONNECT only) that sends every connection to `target`."""

    target: tuple[str, int]
    asked: list[tuple[int, bytes, int]] = field(default_factory=list)  # (address type, host, port)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                threading.Thread(target=self._one, args=(client,), daemon=True).start()

    def _one(self, client: socket.socket) -> None:
        with client:
            version, methods = _read(client, 2)
            _read(client, methods)
            client.sendall(b"\x05\x00")
            version, command, _, kind = _read(client, 4)
            if kind == 3:  # a name, to be resolved by the proxy
                host = _read(client, _read(client, 1)[0])
            else:
                host = _read(client, 4 if kind == 1 else 16)
            (port,) = struct.unpack(">H", _read(client, 2))
            self.asked.append((kind, host, port))
            if version != 5 or command != 1:
                return
            with socket.create_connection(self.target) as upstream:
                client.sendall(b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00")
                back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                back.start()
                _pipe(client, upstream)
                back.join(timeout=10)

    def close(self) -> None:
        self.listener.close()


def _sign_in(browser: FlaskClient, world: World) -> TestResponse:
    """The ECO officer signs in through the real /login form."""
    person = world.people["eco"]
    page = browser.get("/login").get_data(as_text=True)
    return browser.post(
        "/login",
        data={
            "csrf_token": csrf_token(page),
            "username": person.username,
            "passphrase": person.passphrase,
            "code": fresh_code(world.instance, person),
        },
    )


@pytest.fixture
def served_case_server(case_app: Flask) -> Iterator[tuple[str, int]]:
    """The case server over HTTP on a loopback port, in a thread."""
    server = make_server("127.0.0.1", 0, case_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.server_port)
    finally:
        server.shutdown()


def test_the_case_server_is_reached_through_socks_by_its_onion_name(
    world: World, served_case_server: tuple[str, int]
) -> None:
    proxy = Socks5(served_case_server)
    try:
        settings = reviewer_settings(
            world.instance.config, server_url=f"http://{ONION}", socks=f"127.0.0.1:{proxy.port}"
        )
        app = create_reviewer_app(settings)  # no test transport: real sockets only
        app.config["TESTING"] = True
        browser = app.test_client()
        signed_in = _sign_in(browser, world)
        assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
        inbox = browser.get("/")
        assert inbox.status_code == 200
        assert "Inbox" in inbox.get_data(as_text=True)
    finally:
        proxy.close()
    # Every connection went through the proxy, asking for the onion name itself (address
    # type 3, a domain name): nothing resolved it on this machine.
    assert proxy.asked
    assert set(proxy.asked) == {(3, ONION.encode(), 80)}


def test_without_the_proxy_the_app_says_the_server_cannot_be_reached(world: World) -> None:
    """A SOCKS port nobody listens on (tor not running): a clear page, no trace."""
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    settings = reviewer_settings(
        world.instance.config, server_url=f"http://{ONION}", socks=f"127.0.0.1:{port}"
    )
    app = create_reviewer_app(settings)
    app.config["TESTING"] = True
    refused = _sign_in(app.test_client(), world)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 502
    assert "cannot be reached" in text and "Traceback" not in text


def test_tors_extended_socks_reply_is_a_server_that_cannot_be_reached(world: World) -> None:
    """A SocksPort with ExtendedErrors (Tor Browser's) refuses with tor's own codes.

    Here 0xF4, "onion service missing client authorization", what a tor
    without the officer's client key answers: the same calm page as any
    other failure to connect, never "Something went wrong".
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def refuse() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                with client:
                    _, methods = _read(client, 2)
                    _read(client, methods)
                    client.sendall(b"\x05\x00")
                    _, _, _, kind = _read(client, 4)
                    _read(client, _read(client, 1)[0] if kind == 3 else 4)
                    _read(client, 2)
                    client.sendall(b"\x05\xf4\x00\x01" + bytes(6))

    threading.Thread(target=refuse, daemon=True).start()
    try:
        settings = reviewer_settings(
            world.instance.config, server_url=f"http://{ONION}", socks=f"127.0.0.1:{port}"
        )
        app = create_reviewer_app(settings)
        app.config["TESTING"] = True
        refused = _sign_in(app.test_client(), world)
    finally:
        listener.close()
    text = refused.get_data(as_text=True)
    assert refused.status_code == 502, text
    assert "cannot be reached" in text and "Traceback" not in text
