"""`dropbox reviewer`: serve the reviewer app on 127.0.0.1 of the officer's own machine.

It opens nothing to the network: it listens on a loopback address only, and
reaches the case server directly (demo, tests) or through tor's SOCKS port
(`--socks 127.0.0.1:9050`, production). Keys are forgotten when it stops.
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import click
from werkzeug.serving import WSGIRequestHandler, make_server

from crypto.kdf import KdfCost
from dropbox.config import ConfigError
from journalist_interface.settings import (
    DEFAULT_PORT,
    ReviewerSettings,
    check_loopback,
    load_settings,
    parse_pins,
)
from journalist_interface.vault import Vault

SWEEP_SECONDS = 30


def build_settings(
    server: str | None,
    socks: str | None,
    port: int | None,
    host: str,
    pins: tuple[str, ...],
    settings_path: Path | None,
    minimum_cost: KdfCost | None = None,
) -> ReviewerSettings:
    """The settings from the file (if any) and the options over them; ConfigError if unusable."""
    check_loopback(host)
    pinned = parse_pins(pins)
    if settings_path is not None:
        settings = load_settings(
            settings_path, server_url=server, socks=socks, port=port, host=host, pins=pinned
        )
    elif not server:
        raise ConfigError("give the case server's address with --server (or a --settings file)")
    else:
        settings = ReviewerSettings(
            server_url=server,
            socks=socks,
            host=host,
            port=port if port is not None else DEFAULT_PORT,
            pins=pinned,
        )
    if minimum_cost is not None:
        settings = replace(settings, minimum_cost=minimum_cost, officer_cost=minimum_cost)
    return settings


def parse_cost(text: str | None) -> KdfCost | None:
    """ITERATIONS:MEMORY_KIB as a KdfCost (None if not given); ConfigError if unusable."""
    if text is None:
        return None
    iterations, _, memory = text.partition(":")
    try:
        return KdfCost(int(iterations), int(memory) * 1024)
    except ValueError as exc:
        raise ConfigError(f"--minimum-cost must be ITERATIONS:MEMORY_KIB ({exc})") from None


class _PrivateHandler(WSGIRequestHandler):
    """Werkzeug's handler without an access log line and without a `Server` header.

    Nothing about a request is logged (no address, no path), and no response
    says which server or Python version made it, as on the server side.
    """

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "server":
            super().send_header(keyword, value)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log."""


def _sweeper(vault: Vault, stop: threading.Event) -> None:
    """Forget idle sessions' keys even when no request comes."""
    while not stop.wait(SWEEP_SECONDS):
        vault.sweep()


@click.command("reviewer")
@click.option("--server", metavar="URL", help="The case server's address (http:// or https://).")
@click.option("--socks", metavar="HOST:PORT", help="Reach it through tor's SOCKS port.")
@click.option("--port", type=int, default=None, help=f"Local port (default {DEFAULT_PORT}).")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Loopback address to listen on."
)
@click.option(
    "--pin",
    "pins",
    multiple=True,
    metavar="CODE=FINGERPRINT",
    help="Pin another office's key fingerprint (repeat for each office).",
)
@click.option(
    "--minimum-cost",
    metavar="ITERATIONS:MEMORY_KIB",
    default=None,
    hidden=True,
    help=(
        "For tests only: accept (and enrol with) this Argon2id cost instead of the production"
        " floor. A server that hands out a lower cost could guess passphrases cheaply."
    ),
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A TOML settings file ([reviewer] and [pins]).",
)
def reviewer(
    server: str | None,
    socks: str | None,
    port: int | None,
    host: str,
    pins: tuple[str, ...],
    minimum_cost: str | None,
    settings_path: Path | None,
) -> None:
    """Serve the reviewer app on this machine's loopback address."""
    try:
        settings = build_settings(
            server, socks, port, host, pins, settings_path, parse_cost(minimum_cost)
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from journalist_interface.app import create_reviewer_app

    app = create_reviewer_app(settings)
    vault: Vault = app.extensions["reviewer.vault"]
    atexit.register(vault.forget_all)

    def _stop(signum: int, _frame: FrameType | None) -> Any:
        vault.forget_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop = threading.Event()
    threading.Thread(target=_sweeper, args=(vault, stop), daemon=True).start()
    try:
        served = make_server(
            settings.host, settings.port, app, threaded=True, request_handler=_PrivateHandler
        )
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings.host}:{settings.port}: {exc}"
        ) from None
    click.echo(f"Reviewer app: open {settings.address} in your browser (Ctrl-C stops it).")
    try:
        served.serve_forever()
    finally:
        stop.set()
        served.server_close()
        vault.forget_all()
