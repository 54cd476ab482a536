"""The reviewer app's settings: where the case server is, how to reach it, which keys to trust.

The reviewer app runs on the officer's own machine. It is given the case
server's address (an onion address over Tor's SOCKS port in production,
loopback in the demo and tests), the loopback port it serves its pages on,
the fingerprints of other offices' keys it may seal to (`pins`, as printed
by `office create` and kept in the recovery file), and how long a
sign-in lasts. They come from the command line or a small TOML file::

    [reviewer]
    server = "http://abcdef...onion"
    socks = "127.0.0.1:9050"
    port = 8081
    idle_minutes = 15
    absolute_hours = 8

    [pins]
    OIO = "ABCD EFGH ..."
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from crypto.kdf import PRODUCTION_COST, KdfCost
from dropbox.config import ConfigError, fingerprint_digest

DEFAULT_PORT = 8081
MAX_IDLE_MINUTES = 24 * 60
MAX_ABSOLUTE_HOURS = 7 * 24
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True, kw_only=True)
class ServedSettings:
    """Where the pages are served (a loopback address only), the pinned office keys, and how
    long a session lasts: what the online app and the offline one (`offline.py`) share."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    pins: dict[str, str] = field(default_factory=dict)
    idle_minutes: int = 15
    absolute_hours: int = 8

    def __post_init__(self) -> None:
        check_loopback(self.host)
        check_port(self.port, "port")
        for code, text in self.pins.items():
            check_pin(code, text)
        _check_range(self.idle_minutes, "idle_minutes", 1, MAX_IDLE_MINUTES)
        _check_range(self.absolute_hours, "absolute_hours", 1, MAX_ABSOLUTE_HOURS)

    @property
    def origins(self) -> tuple[str, ...]:
        """The addresses the pages may be opened at (their Host header values), first the usual."""
        return served_origins(self.host, self.port)

    @property
    def address(self) -> str:
        """The address to open in the browser."""
        return f"http://{self.origins[0]}"


@dataclass(frozen=True)
class ReviewerSettings(ServedSettings):
    """How this reviewer app reaches its case server and serves its pages.

    `minimum_cost` is the floor below which a KDF cost the server hands out
    at sign-in is refused (a server that asks for a trivial cost could guess
    the passphrase from the auth key cheaply); `officer_cost` is the cost new
    credentials are made with (enrolment, passphrase change). Both stay at
    the production cost outside tests.
    """

    server_url: str
    socks: str | None = None
    minimum_cost: KdfCost = PRODUCTION_COST
    officer_cost: KdfCost = PRODUCTION_COST

    def __post_init__(self) -> None:
        check_server_url(self.server_url)
        if self.socks is not None:
            check_socks(self.socks)
        super().__post_init__()


def served_origins(host: str, port: int) -> tuple[str, ...]:
    """The Host header values an app on `host`:`port` answers, the usual address first."""
    own = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    usual = (f"127.0.0.1:{port}", f"localhost:{port}")
    return usual if own in usual else (*usual, own)


def check_server_url(url: str) -> None:
    """The case server's address: http or https, with a host, and nothing after the path."""
    if not isinstance(url, str) or not url:
        raise ConfigError("server: give the case server's address, e.g. http://….onion")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"server: {url!r} is not an address") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"server: {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"server: {url!r} names no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"server: {url!r} must be a plain address (no ?, # or user name)")


def check_socks(value: str) -> None:
    """Tor's SOCKS port: HOST:PORT."""
    if not isinstance(value, str):
        raise ConfigError("socks: give HOST:PORT, e.g. 127.0.0.1:9050")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ConfigError(f"socks: {value!r} is not HOST:PORT, e.g. 127.0.0.1:9050")
    check_port(int(port), "socks port")


def check_loopback(host: str) -> None:
    """The pages are served on a loopback address only: nothing is opened to the network."""
    if host in _LOOPBACK_NAMES:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"host: {host!r} is not a loopback address; the reviewer app serves 127.0.0.1 only"
        )


def check_port(port: Any, name: str) -> None:
    """A TCP port number."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{name}: {port!r} is not a port number (1 to 65535)")


def check_pin(code: str, text: str) -> None:
    """An office code and its key's fingerprint (8 groups of 4 letters and digits)."""
    if not isinstance(code, str) or not code or not code.isascii() or not code.isalnum():
        raise ConfigError(f"pins: {code!r} is not an office code")
    if not isinstance(text, str) or fingerprint_digest(text) is None:
        raise ConfigError(
            f"pins: the fingerprint for {code} is not one (8 groups of 4 letters and digits,"
            " as `office create` prints it)"
        )


def _check_range(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}: {value!r} must be a whole number from {low} to {high}")


_REVIEWER_KEYS = {"server", "socks", "port", "idle_minutes", "absolute_hours"}


def load_settings(path: Path, **overrides: Any) -> ReviewerSettings:
    """Settings from a TOML file, then `overrides` (from the command line) over them.

    Raises ConfigError naming the key and the fault for anything unusable.
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"settings file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"settings file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"reviewer", "pins"}
    if unknown:
        raise ConfigError(f"settings file {path}: unknown section(s) {', '.join(sorted(unknown))}")
    reviewer = data.get("reviewer", {})
    pins = data.get("pins", {})
    if not isinstance(reviewer, dict) or not isinstance(pins, dict):
        raise ConfigError(f"settings file {path}: [reviewer] and [pins] must be tables")
    extra = set(reviewer) - _REVIEWER_KEYS
    if extra:
        raise ConfigError(f"[reviewer]: unknown key(s) {', '.join(sorted(extra))}")
    values: dict[str, Any] = {
        "server_url": reviewer.get("server", ""),
        "socks": reviewer.get("socks"),
        "port": reviewer.get("port", DEFAULT_PORT),
        "idle_minutes": reviewer.get("idle_minutes", 15),
        "absolute_hours": reviewer.get("absolute_hours", 8),
        "pins": {str(k): v for k, v in pins.items()},
    }
    for key, value in overrides.items():
        if key == "pins":
            values["pins"] = {**values["pins"], **value}
        elif value is not None:
            values[key] = value
    return ReviewerSettings(**values)


def parse_pins(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`CODE=FINGERPRINT` entries (from --pin) as a dict; ConfigError for a malformed one."""
    pins: dict[str, str] = {}
    for entry in entries:
        code, sep, text = entry.partition("=")
        if not sep:
            raise ConfigError(f"--pin: {entry!r} is not CODE=FINGERPRINT")
        code = code.strip()
        check_pin(code, text)
        pins[code] = text.strip()
    return pins
