"""`dropbox tor-config`: the torrc for the two onion services, and the officer's client key.

The source interface is a public v3 onion service with Tor's proof-of-work
defenses on. The reviewer interface is a separate v3 onion service with client
authorisation: only a Tor Browser that holds an officer's x25519 private key
can even fetch its descriptor.

Everything tor needs lives under one directory (`--tor-dir`, by default
`<data_dir>/tor`), owned by the user tor runs as, every directory mode 0700:

    <tor-dir>/data/                      tor's DataDirectory
    <tor-dir>/source/                    the source interface's onion service keys
    <tor-dir>/reviewer/                  the reviewer interface's onion service keys
    <tor-dir>/reviewer/authorized_clients/officer.auth
                                         the public half of the officer's client key
    <tor-dir>/officer-client.key         the private half (mode 0600): hand it to the
                                         officer, then delete it from the server

The onion addresses exist only after tor has first started with the torrc, so
`--show-addresses` and `--show-client-auth` read them afterwards.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
from nacl.public import PrivateKey

from dropbox.config import Config
from dropbox.store import write_private_file

CLIENT = "officer"
CLIENT_KEY_FILE = f"{CLIENT}-client.key"
TOR_CANDIDATES = ("tor", "/usr/sbin/tor", "/usr/bin/tor", "/usr/local/bin/tor")

_ONION = re.compile(r"^[a-z2-7]{56}\.onion$")
_KEY = re.compile(r"^[A-Z2-7]{52}$")
_AUTH_LINE = re.compile(r"^descriptor:x25519:([A-Z2-7]{52})$")
# Characters that would need quoting in a torrc value; refused rather than quoted.
_UNSAFE_PATH = re.compile(r"[\s\"'\\#]")
# An interface may be configured to listen on every IPv4 address; tor still reaches it on loopback.
_ANY_IPV4 = "0.0.0.0"  # noqa: S104 - compared, never bound  # nosec B104


class TorConfigError(click.ClickException):
    """A failure to report as one line with exit code 2."""

    exit_code = 2


# --- keys and files ------------------------------------------------------------


def encode_key(raw: bytes) -> str:
    """Tor's text form of an x25519 key: base32 of the 32 raw bytes, upper case, no padding."""
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def decode_key(text: str) -> bytes:
    """The 32 raw bytes of a key in Tor's base32 form; ValueError if it is not one."""
    text = text.strip()
    if not _KEY.fullmatch(text):
        raise ValueError("not a base32 x25519 key")
    try:
        raw = base64.b32decode(text + "====")
    except binascii.Error:
        raise ValueError("not a base32 x25519 key") from None
    if len(raw) != 32:
        raise ValueError("not a base32 x25519 key")
    return raw


def auth_line(public_key: bytes) -> str:
    """The content of an `authorized_clients/*.auth` file."""
    return f"descriptor:x25519:{encode_key(public_key)}"


def client_auth_line(onion_address: str, private_key: bytes) -> str:
    """The line an officer's Tor gets: `<address without .onion>:descriptor:x25519:<private>`."""
    return f"{onion_address.removesuffix('.onion')}:descriptor:x25519:{encode_key(private_key)}"


@dataclass(frozen=True)
class Layout:
    """Where tor's files for this instance live."""

    root: Path
    command: str = "dropbox tor-config"  # how to run this command again, for instructions

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def reviewer(self) -> Path:
        return self.root / "reviewer"

    @property
    def authorized_clients(self) -> Path:
        return self.reviewer / "authorized_clients"

    @property
    def client_auth(self) -> Path:
        return self.authorized_clients / f"{CLIENT}.auth"

    @property
    def client_key(self) -> Path:
        return self.root / CLIENT_KEY_FILE


def _private_dir(path: Path) -> None:
    """Make a directory that tor accepts as its own: mode 0700."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise TorConfigError(f"cannot create {path}: {exc.strerror}") from None


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write a file that must not exist yet, with `mode` from the start."""
    try:
        write_private_file(path, text.encode("utf-8"), mode)
    except FileExistsError:
        raise TorConfigError(f"{path} already exists") from None
    except OSError as exc:
        raise TorConfigError(f"cannot write {path}: {exc.strerror}") from None


def _read(path: Path, missing: str) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise TorConfigError(missing) from None
    except OSError as exc:
        raise TorConfigError(f"cannot read {path}: {exc.strerror}") from None


def read_onion_address(service_dir: Path) -> str:
    """The address tor wrote to `<service_dir>/hostname`, checked."""
    path = service_dir / "hostname"
    address = _read(
        path,
        f"no onion address yet: {path} is missing; start tor with the torrc first",
    )
    if not _ONION.fullmatch(address):
        raise TorConfigError(f"{path} does not hold a v3 onion address")
    return address


def new_client_key(layout: Layout) -> PrivateKey:
    """Generate the officer's key pair; tor gets the public half, a 0600 file the private one."""
    key = PrivateKey.generate()
    _write_new(layout.client_key, encode_key(bytes(key)) + "\n", 0o600)
    try:
        _write_new(layout.client_auth, auth_line(bytes(key.public_key)) + "\n", 0o600)
    except TorConfigError:
        layout.client_key.unlink()
        raise
    return key


# --- the torrc -----------------------------------------------------------------


def service_target(host: str, port: int) -> str:
    """Where tor forwards an onion service's port 80: the interface's address, on loopback."""
    if host in (_ANY_IPV4, "localhost", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def torrc_text(config: Config, layout: Layout) -> str:
    """The torrc for both onion services."""
    source = service_target(config.source.host, config.source.port)
    reviewer = service_target(config.reviewer.host, config.reviewer.port)
    return (
        "# torrc for the dropbox onion services, written by 'dropbox tor-config'.\n"
        "# Start tor as the user that owns the directories below: tor -f <this file>\n"
        "\n"
        "# A server only offers onion services: no SOCKS port for local clients.\n"
        "SocksPort 0\n"
        f"DataDirectory {layout.data}\n"
        "\n"
        "# The source interface: a public onion service. Proof-of-work defenses make\n"
        "# a flood of introduction requests expensive (tor 0.4.8 or later, built with PoW).\n"
        f"HiddenServiceDir {layout.source}\n"
        "HiddenServiceVersion 3\n"
        f"HiddenServicePort 80 {source}\n"
        "HiddenServicePoWDefensesEnabled 1\n"
        "\n"
        "# The reviewer interface: only clients listed in authorized_clients/ can reach it.\n"
        f"HiddenServiceDir {layout.reviewer}\n"
        "HiddenServiceVersion 3\n"
        f"HiddenServicePort 80 {reviewer}\n"
    )


def find_tor() -> str | None:
    """The tor binary, if one is installed."""
    for candidate in TOR_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def verify(tor: str, torrc: Path) -> str:
    """Check a torrc with `tor --verify-config`; return tor's version, or raise with the reason."""
    try:
        version = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [tor, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.splitlines()
        result = subprocess.run(  # noqa: S603
            [tor, "--verify-config", "-f", str(torrc)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TorConfigError(f"cannot run {tor} --verify-config: {exc}") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        reasons = [
            line.split("] ", 1)[-1] for line in output if "[warn]" in line or "[err]" in line
        ]
        reasons = [r for r in reasons if "running Tor as root" not in r] or ["(no reason given)"]
        raise TorConfigError(f"{tor} refuses the torrc: {reasons[0]}")
    first = version[0] if version else ""
    return first.removeprefix("Tor version ").rstrip(".") or "unknown version"


# --- the command ---------------------------------------------------------------


def _show_addresses(layout: Layout) -> None:
    source = read_onion_address(layout.source)
    reviewer = read_onion_address(layout.reviewer)
    click.echo(f"Source interface:   http://{source}/")
    click.echo(f"Reviewer interface: http://{reviewer}/ (client authorisation required)")
    click.echo("")
    click.echo("Put these lines into the configuration file (in its [source] and [reviewer]")
    click.echo("tables, if it has them), then restart both interfaces; the source interface")
    click.echo("then sends Onion-Location:")
    click.echo("")
    click.echo("[source]")
    click.echo(f'onion_address = "{source}"')
    click.echo("")
    click.echo("[reviewer]")
    click.echo(f'onion_address = "{reviewer}"')


def _show_client_auth(layout: Layout) -> None:
    address = read_onion_address(layout.reviewer)
    text = _read(
        layout.client_key,
        f"{layout.client_key} is missing (already handed over and deleted?); "
        f"make a new key with: {layout.command} --new-client-key",
    )
    try:
        private = PrivateKey(decode_key(text))
    except ValueError:
        raise TorConfigError(f"{layout.client_key} does not hold an x25519 private key") from None
    expected = _read(layout.client_auth, f"{layout.client_auth} is missing")
    if expected != auth_line(bytes(private.public_key)):
        raise TorConfigError(
            f"{layout.client_key} does not match {layout.client_auth}; "
            f"make a new key with: {layout.command} --new-client-key"
        )
    private_text = encode_key(bytes(private))
    click.echo("Client authorisation for the reviewer interface (give it to the officer):")
    click.echo("")
    click.echo(f"  {client_auth_line(address, bytes(private))}")
    click.echo("")
    click.echo(f"Tor Browser: open http://{address}/ and, when asked for a key, enter")
    click.echo(f"  {private_text}")
    click.echo("and tick 'Remember this key' (or add it under Settings > Privacy & Security >")
    click.echo("Onion Services Authentication). With tor itself, save the line above as")
    click.echo("<ClientOnionAuthDir>/dropbox.auth_private.")
    click.echo("")
    click.echo("Hand it over on a safe channel, then delete the key from this server:")
    click.echo(f"  rm {layout.client_key}")


def _replace_client_key(layout: Layout) -> None:
    if not layout.reviewer.is_dir():
        raise TorConfigError(f"no reviewer onion service in {layout.root}; run {layout.command}")
    _private_dir(layout.authorized_clients)
    for path in (layout.client_key, layout.client_auth):
        path.unlink(missing_ok=True)
    new_client_key(layout)
    click.echo("Replaced the officer's client key: the old one no longer opens the reviewer")
    click.echo("interface once tor reloads (systemctl reload tor, or send it SIGHUP).")
    click.echo(f"Private half: {layout.client_key}")
    click.echo(f"Show the officer's line with: {layout.command} --show-client-auth")


def _write(config: Config, layout: Layout, output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise TorConfigError(f"{output} already exists; use --force to overwrite it")
    if output.is_dir():
        raise TorConfigError(f"{output} is a directory")
    for directory in (layout.root, layout.data, layout.source, layout.reviewer):
        _private_dir(directory)
    _private_dir(layout.authorized_clients)
    generated = not layout.client_auth.exists()
    if generated:
        new_client_key(layout)

    text = torrc_text(config, layout)
    output = output.absolute()
    try:
        fd, temporary = tempfile.mkstemp(prefix=".torrc-", dir=output.parent)
    except OSError as exc:
        raise TorConfigError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        tor = find_tor()
        checked = f"checked with tor {verify(tor, Path(temporary))}" if tor else ""
        os.replace(temporary, output)
    finally:
        Path(temporary).unlink(missing_ok=True)

    click.echo(f"Wrote {output}" + (f" ({checked})." if checked else "."))
    if not tor:
        click.echo("tor is not installed here, so the torrc was not checked.")
    click.echo(
        f"  source interface:   {layout.source} -> "
        f"{service_target(config.source.host, config.source.port)}, public, proof-of-work defenses"
    )
    click.echo(
        f"  reviewer interface: {layout.reviewer} -> "
        f"{service_target(config.reviewer.host, config.reviewer.port)}, client authorisation"
    )
    if generated:
        click.echo("Generated the officer's client key for the reviewer interface:")
        click.echo(f"  public half (tor reads it):  {layout.client_auth}")
        click.echo(f"  private half (mode 0600):    {layout.client_key}")
        click.echo(
            "  The private half must be handed to the officer, then deleted from this server."
        )
    else:
        click.echo(f"Kept the existing client key in {layout.client_auth}.")
    click.echo("")
    click.echo("Next:")
    click.echo(f"  1. Start tor as the user that owns {layout.root}:")
    click.echo(f"       tor -f {output}")
    click.echo("     Debian's tor service runs as debian-tor and may only use /var/lib/tor: there,")
    click.echo("     use --tor-dir /var/lib/tor/dropbox, chown -R debian-tor: that directory, and")
    click.echo(f"     add '%include {output}' to /etc/tor/torrc.")
    click.echo("  2. Once tor has created the onion addresses, print them and the lines")
    click.echo("     for the configuration file:")
    click.echo(f"       {layout.command} --show-addresses")
    click.echo("  3. Print the officer's line for Tor Browser, hand it over, then delete")
    click.echo(f"     {layout.client_key}:")
    click.echo(f"       {layout.command} --show-client-auth")


@click.command("tor-config")
@click.option(
    "--output",
    default="torrc",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where to write the torrc.",
)
@click.option(
    "--tor-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where tor keeps its data and onion service keys [default: DATA_DIR/tor].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing torrc (keys are kept).")
@click.option(
    "--show-addresses",
    is_flag=True,
    help="Print both onion addresses and the configuration lines (after tor has started).",
)
@click.option(
    "--show-client-auth",
    is_flag=True,
    help="Print the officer's line for Tor Browser (after tor has started).",
)
@click.option(
    "--new-client-key",
    is_flag=True,
    help="Replace the officer's client key (the old one stops working).",
)
@click.pass_context
def tor_config(
    ctx: click.Context,
    output: Path,
    tor_dir: Path | None,
    force: bool,
    show_addresses: bool,
    show_client_auth: bool,
    new_client_key: bool,
) -> None:
    """Write the torrc for the source and reviewer onion services.

    The source interface gets a public onion service with proof-of-work
    defenses; the reviewer interface one with client authorisation, whose key
    pair this generates.
    """
    if sum((show_addresses, show_client_auth, new_client_key)) > 1:
        raise TorConfigError(
            "use only one of --show-addresses, --show-client-auth and --new-client-key"
        )
    config: Config = ctx.obj.config()
    root = (tor_dir if tor_dir is not None else config.data_dir / "tor").absolute()
    if _UNSAFE_PATH.search(str(root)):
        raise TorConfigError(f"{root}: the tor directory must not contain spaces, quotes, \\ or #")
    command = f"dropbox --config {shlex.quote(str(ctx.obj.config_path))} tor-config"
    if tor_dir is not None:
        command += f" --tor-dir {shlex.quote(str(root))}"
    layout = Layout(root, command)
    if show_addresses:
        _show_addresses(layout)
    elif show_client_auth:
        _show_client_auth(layout)
    elif new_client_key:
        _replace_client_key(layout)
    else:
        _write(config, layout, output, force)
