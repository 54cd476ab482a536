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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import click
from flask import Flask
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


def _sweeper(sweep: Callable[[], None], stop: threading.Event) -> None:
    """Forget idle sessions' keys even when no request comes."""
    while not stop.wait(SWEEP_SECONDS):
        sweep()


@click.command("reviewer")
@click.option("--server", metavar="URL", help="The case server's address (http:// or https://).")
@click.option(
    "--bundle",
    "bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=(
        "Offline review: open this export bundle ('dropbox bundle export') with no case server."
        " Unlock it with the office's recovery file."
    ),
)
@click.option(
    "--out",
    "outgoing",
    type=click.Path(dir_okay=False, path_type=Path),
    help=(
        "With --bundle: where replies and notes are saved, encrypted, for 'dropbox bundle"
        " import' [default: beside the bundle, named BUNDLE-replies]."
    ),
)
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
    bundle: Path | None,
    outgoing: Path | None,
    socks: str | None,
    port: int | None,
    host: str,
    pins: tuple[str, ...],
    minimum_cost: str | None,
    settings_path: Path | None,
) -> None:
    """Serve the reviewer app on this machine's loopback address.

    With --bundle, on an offline machine: open an export bundle read-only, with
    no case server, and save replies and notes in a bundle to bring back.
    """
    if bundle is not None:
        if server or socks or settings_path:
            raise click.UsageError(
                "--bundle reviews offline, with no case server: leave out --server, --socks"
                " and --settings"
            )
        _serve_offline(bundle, outgoing, port, host, pins)
        return
    if outgoing is not None:
        raise click.UsageError("--out goes with --bundle (offline review)")
    try:
        settings = build_settings(
            server, socks, port, host, pins, settings_path, parse_cost(minimum_cost)
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from journalist_interface.app import create_reviewer_app

    app = create_reviewer_app(settings)
    vault: Vault = app.extensions["reviewer.vault"]
    announce = [f"Reviewer app: open {settings.address} in your browser (Ctrl-C stops it)."]
    _serve(app, settings.host, settings.port, vault.forget_all, vault.sweep, announce)


def _serve_offline(
    bundle: Path, outgoing: Path | None, port: int | None, host: str, pins: tuple[str, ...]
) -> None:
    """Serve the offline reviewer app over an export bundle."""
    from dropbox.bundles import BundleRefused
    from journalist_interface.offline import (
        Desk,
        OfflineSettings,
        create_offline_app,
        default_outgoing,
    )

    try:
        settings = OfflineSettings(
            bundle=bundle,
            outgoing=outgoing or default_outgoing(bundle),
            host=host,
            port=port if port is not None else DEFAULT_PORT,
            pins=parse_pins(pins),
        )
        app = create_offline_app(settings)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except BundleRefused as exc:
        raise click.ClickException(str(exc)) from None
    desk: Desk = app.extensions["reviewer.desk"]
    announce = [
        f"Offline review of {bundle.name}: open {settings.address} in your browser"
        " (Ctrl-C stops it).",
        f"Replies and notes are saved, encrypted, in {settings.outgoing}.",
    ]
    _serve(app, settings.host, settings.port, desk.lock, desk.sweep, announce)


def _serve(
    app: Flask,
    host: str,
    port: int,
    forget: Callable[[], None],
    sweep: Callable[[], None],
    announce: list[str],
) -> None:
    """Serve `app` until stopped; `forget` drops every key at the end, whatever ends it."""
    atexit.register(forget)

    def _stop(signum: int, _frame: FrameType | None) -> Any:
        forget()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop = threading.Event()
    threading.Thread(target=_sweeper, args=(sweep, stop), daemon=True).start()
    try:
        served = make_server(host, port, app, threaded=True, request_handler=_PrivateHandler)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    for line in announce:
        click.echo(line)
    try:
        served.serve_forever()
    finally:
        stop.set()
        served.server_close()
        forget()
