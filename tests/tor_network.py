"""A private Tor network on loopback, for tests: authorities, relays, clients, an onion service tor.

Every node is Debian's tor (/usr/sbin/tor) in `TestingTorNetwork` mode, the
way Chutney (the Tor Project's test-network tool) sets one up: three
directory authorities whose keys tor-gencert makes, that vote every few
seconds and assume every relay reachable; two relays that accept exits to
loopback only; client tors with a SOCKS port and a control port. Every tor
is a child process of the test, with `__OwningControllerProcess` set to it
(tor exits by itself should the test die), its files in one temporary
directory, and `stop` ends them all (SIGTERM, then SIGKILL after 10 s) and
removes the directory.

`start_service` runs the project's own onion-service torrc (`dropbox
tor-config`'s file, unchanged) with the testing options in a second file
given to tor as `--defaults-torrc`: tor reads that one first, and the
project's file adds its own lines over it.

`Control` speaks tor's control protocol over a socket (cookie
authentication). `OnionDescriptor` decrypts a v3 onion service descriptor
(rend-spec-v3, "Hidden service descriptors: encryption format"), both
layers, with the client authorisation key where the service asks for one,
so a test can read what a client actually fetched, proof-of-work
parameters included.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nacl.bindings import crypto_scalarmult

from tests.conftest import free_port

TOR = Path("/usr/sbin/tor")
TOR_GENCERT = Path("/usr/bin/tor-gencert")

# Options every node shares (Chutney's common.i, for a fast bootstrap).
_COMMON = """\
TestingTorNetwork 1
PathsNeededToBuildCircuits 0.67
TestingDirAuthVoteExit *
TestingDirAuthVoteHSDir *
TestingDirAuthVoteGuard *
TestingMinExitFlagThreshold 0
V3AuthNIntervalsValid 2
ShutdownWaitLength 0
SafeLogging 0
LogTimeGranularity 1
Sandbox 0
"""
# A directory authority (Chutney's authority.i): a consensus every 10 s, the first after 5 s.
_AUTHORITY = """\
SocksPort 0
Address 127.0.0.1
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
AssumeReachable 1
TestingV3AuthInitialVotingInterval 5
TestingV3AuthInitialVoteDelay 2
TestingV3AuthInitialDistDelay 2
V3AuthVotingInterval 10
V3AuthVoteDelay 2
V3AuthDistDelay 2
ExitRelay 0
"""
# A relay that may exit to loopback and nowhere else (Chutney's exit-v4.i, loopback only).
_RELAY = """\
SocksPort 0
Address 127.0.0.1
AssumeReachable 1
ExitRelay 1
ExitPolicyRejectPrivate 0
ExitPolicy accept 127.0.0.0/8:*
ExitPolicy reject *:*
"""

# SOCKS5 replies with tor's ExtendedErrors (tor's manual, SocksPort).
SOCKS_SUCCEEDED = 0x00
SOCKS_ONION_MISSING_CLIENT_AUTH = 0xF4
SOCKS_ONION_BAD_CLIENT_AUTH = 0xF5


class TorNetworkError(RuntimeError):
    """The network did not come up; the message says where it stopped and ends with the logs."""


class NotBootstrapped(TorNetworkError):
    """A client found no usable consensus in time (the network never formed)."""


@dataclass
class Node:
    """One tor process of the network."""

    name: str
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    socks_port: int = 0
    control_port: int = 0
    or_port: int = 0  # a relay's (and an authority's) ORPort
    dir_port: int = 0  # an authority's DirPort

    @property
    def log(self) -> Path:
        return self.directory / "notice.log"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"


@dataclass
class TorNetwork:
    """A private Tor network in a temporary directory; `start` it, `wait_until_ready`, `stop`."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dropbox-tornet-")))
    nodes: list[Node] = field(default_factory=list)
    authority_lines: str = ""
    key_seconds: float = 0.0  # how long tor-gencert and tor took to make the authorities' keys

    def start(self, relays: int = 2) -> None:
        """Make the authorities' keys, then start the authorities and relays (without waiting)."""
        authorities = [self._node(f"auth{i}") for i in range(3)]
        started = time.monotonic()
        self.authority_lines = "".join(self._authority_keys(authorities))
        self.key_seconds = time.monotonic() - started
        for node in authorities:
            self._run(node, _AUTHORITY + f"ContactInfo {node.name}@test.invalid\n")
        for i in range(relays):
            relay = self._node(f"relay{i}")
            relay.or_port = free_port()
            self._run(relay, _RELAY)

    def start_client(
        self, name: str, auth_dir: Path | None = None, *, extended_errors: bool = False
    ) -> Node:
        """A client tor with a SOCKS port and a control port; with `auth_dir`, its client keys.

        With `extended_errors`, its SOCKS replies say why an onion service
        could not be reached (tor's ExtendedErrors; httpx's SOCKS code cannot
        read those codes, so a client for the apps goes without).
        """
        node = self._node(name)
        node.socks_port, node.control_port = free_port(), free_port()
        flags = " ExtendedErrors" if extended_errors else ""
        text = f"SocksPort 127.0.0.1:{node.socks_port}{flags}\n" + self._control(node)
        if auth_dir is not None:
            text += f"ClientOnionAuthDir {auth_dir}\n"
        self._run(node, text)
        return node

    def start_service(self, torrc: Path) -> Node:
        """The project's onion-service tor: its torrc as written, the testing options around it."""
        node = self._node("service")
        node.control_port = free_port()
        defaults = node.directory / "testing-defaults"
        defaults.write_text(self._options(node, self._control(node)))
        self._launch(node, ["--defaults-torrc", str(defaults), "-f", str(torrc)])
        return node

    def wait_until_ready(self, client: Node, seconds: float) -> None:
        """Until `client` has a consensus and can build circuits (bootstrapped to 100 %)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_running()
            with contextlib.suppress(OSError, TorNetworkError):
                phase = Control(client).getinfo("status/bootstrap-phase")
                if "PROGRESS=100" in phase:
                    return
            time.sleep(0.3)
        raise NotBootstrapped(f"{client.name} did not bootstrap in {seconds:.0f} s" + self.logs())

    def check_running(self) -> None:
        """Every tor still runs (one that exited would leave a test waiting in vain)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is not None:
                raise TorNetworkError(
                    f"tor {node.name} exited with {node.process.returncode}" + self.logs()
                )

    def logs(self) -> str:
        """The end of every node's log, for a failure message."""
        parts = []
        for node in self.nodes:
            tail = "\n".join(node.log_text().splitlines()[-12:])
            parts.append(f"\n--- {node.name} ({node.log})\n{tail}")
        return "".join(parts)

    def stop(self) -> None:
        """End every tor (SIGTERM, then SIGKILL), wait for each, and remove the directory."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)

    # -- plumbing

    def _node(self, name: str) -> Node:
        node = Node(name, self.base / name)
        node.directory.mkdir(mode=0o700, parents=True)
        self.nodes.append(node)
        return node

    def _control(self, node: Node) -> str:
        return (
            f"ControlPort 127.0.0.1:{node.control_port}\n"
            "CookieAuthentication 1\n"
            f"CookieAuthFile {node.directory / 'control_auth_cookie'}\n"
        )

    def _options(self, node: Node, text: str) -> str:
        return (
            _COMMON
            + self.authority_lines
            + f"Nickname {node.name}\n"
            + f"Log notice file {node.log}\n"
            + f"__OwningControllerProcess {os.getpid()}\n"
            + text
        )

    def _run(self, node: Node, text: str) -> None:
        """Start a node whose whole torrc is the testing one (authorities, relays, clients)."""
        if node.or_port:
            text = f"OrPort 127.0.0.1:{node.or_port}\n" + text
        if node.dir_port:
            text = f"DirPort 127.0.0.1:{node.dir_port}\n" + text
        torrc = node.directory / "torrc"
        torrc.write_text(self._options(node, text) + f"DataDirectory {node.directory}\n")
        self._launch(node, ["-f", str(torrc)])

    def _launch(self, node: Node, arguments: list[str]) -> None:
        with open(node.directory / "stdout.log", "wb") as out:
            node.process = subprocess.Popen(
                [str(TOR), *arguments], stdout=out, stderr=subprocess.STDOUT
            )

    def _authority_keys(self, authorities: list[Node]) -> list[str]:
        """Each authority's keys (tor-gencert, in parallel) and its `DirAuthority` line."""
        for node in authorities:
            node.or_port, node.dir_port = free_port(), free_port()
            (node.directory / "keys").mkdir(mode=0o700)
        making = []
        for node in authorities:
            keys = node.directory / "keys"
            making.append(
                subprocess.Popen(
                    [
                        str(TOR_GENCERT),
                        "--create-identity-key",
                        "--passphrase-fd",
                        "0",
                        "-i",
                        str(keys / "authority_identity_key"),
                        "-s",
                        str(keys / "authority_signing_key"),
                        "-c",
                        str(keys / "authority_certificate"),
                        "-m",
                        "12",
                        "-a",
                        f"127.0.0.1:{node.dir_port}",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        for process in making:
            _, errors = process.communicate(b"\n", timeout=120)
            if process.returncode != 0:
                raise TorNetworkError(f"tor-gencert failed: {errors.decode(errors='replace')}")
        lines = []
        for node in authorities:
            certificate = (node.directory / "keys" / "authority_certificate").read_text()
            v3ident = re.search(r"^fingerprint ([0-9A-F]{40})$", certificate, re.M)
            listed = subprocess.run(
                [
                    str(TOR),
                    "--ignore-missing-torrc",
                    "-f",
                    str(node.directory / "no-torrc"),
                    "--orport",
                    "1",
                    "--datadirectory",
                    str(node.directory),
                    "--list-fingerprint",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            fingerprint = re.search(r"^\S+ ((?:[0-9A-F]{4} ?){10})$", listed.stdout, re.M)
            if v3ident is None or fingerprint is None:
                raise TorNetworkError(f"no fingerprint for {node.name}: {listed.stdout}")
            lines.append(
                f"DirAuthority {node.name} orport={node.or_port} no-v2 "
                f"v3ident={v3ident.group(1)} 127.0.0.1:{node.dir_port} "
                f"{fingerprint.group(1).replace(' ', '')}\n"
            )
        return lines


# --- the control port ----------------------------------------------------------


class Control:
    """One command at a time on a tor's control port, authenticated with its cookie."""

    def __init__(self, node: Node, timeout: float = 10) -> None:
        self.node = node
        self.timeout = timeout

    def command(self, line: str) -> list[str]:
        """AUTHENTICATE, then `line`, on a new connection: the reply's lines."""
        cookie = (self.node.directory / "control_auth_cookie").read_bytes()
        address = ("127.0.0.1", self.node.control_port)
        with (
            socket.create_connection(address, self.timeout) as conn,
            conn.makefile("rb") as reader,
        ):
            conn.sendall(f"AUTHENTICATE {cookie.hex()}\r\n".encode())
            first = self._reply(reader)
            if not first[-1].startswith("250"):
                raise TorNetworkError(f"{self.node.name} refused authentication: {first}")
            conn.sendall(line.encode() + b"\r\n")
            return self._reply(reader)

    def getinfo(self, key: str) -> str:
        """The value of GETINFO `key` (several lines for a multi-line value)."""
        lines = self.command(f"GETINFO {key}")
        if not lines[-1].startswith("250"):
            raise TorNetworkError(f"GETINFO {key} on {self.node.name}: {' '.join(lines)}")
        first = lines[0][4:]
        if lines[0].startswith("250+"):
            end = lines.index(".")
            return "\n".join(lines[1:end])
        return first.split("=", 1)[1]

    @staticmethod
    def _reply(reader: BinaryIO) -> list[str]:
        """One reply: its lines up to the final "NNN " line, data blocks included."""
        lines: list[str] = []
        in_data = False
        while True:
            raw = reader.readline()
            if not raw:
                raise TorNetworkError("the control connection closed")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if in_data:
                in_data = line != "."
                continue
            if len(line) >= 4 and line[3] == "+":
                in_data = True
            elif len(line) >= 4 and line[3] == " ":
                return lines


# --- SOCKS ---------------------------------------------------------------------


def socks_connect(port: int, host: str, target_port: int, timeout: float = 60) -> int:
    """Ask tor's SOCKS port to connect to `host` (a name tor resolves); tor's reply code."""
    with socket.create_connection(("127.0.0.1", port), timeout) as conn:
        conn.sendall(b"\x05\x01\x00")
        if conn.recv(2) != b"\x05\x00":
            raise TorNetworkError("the SOCKS port refused the greeting")
        name = host.encode("ascii")
        conn.sendall(
            b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", target_port)
        )
        reply = conn.recv(10)
        if len(reply) < 2:
            raise TorNetworkError("the SOCKS port closed without a reply")
        return reply[1]


# --- v3 onion service descriptors ----------------------------------------------


def _sha3(*parts: bytes) -> bytes:
    return hashlib.sha3_256(b"".join(parts)).digest()


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _armored(text: str, keyword: str, kind: str) -> bytes:
    """The bytes of the `-----BEGIN <kind>-----` block after the line `keyword`."""
    match = re.search(
        rf"^{keyword}\n-----BEGIN {kind}-----\n(.*?)\n-----END {kind}-----$", text, re.M | re.S
    )
    if match is None:
        raise ValueError(f"the descriptor has no {keyword}")
    return base64.b64decode("".join(match.group(1).split()))


@dataclass
class OnionDescriptor:
    """A v3 descriptor as fetched, and the onion address it belongs to."""

    address: str
    text: str

    @property
    def identity_key(self) -> bytes:
        raw = base64.b32decode(self.address.removesuffix(".onion").upper())
        return raw[:32]

    @property
    def blinded_key(self) -> bytes:
        """From the signing-key certificate's extension 04 (signed-with-ed25519-key)."""
        cert = _armored(self.text, "descriptor-signing-key-cert", "ED25519 CERT")
        offset = 1 + 1 + 4 + 1 + 32
        count = cert[offset]
        offset += 1
        for _ in range(count):
            length, kind = struct.unpack(">HB", cert[offset : offset + 3])
            data = cert[offset + 4 : offset + 4 + length]
            if kind == 4:
                return data
            offset += 4 + length
        raise ValueError("the signing-key certificate names no blinded key")

    @property
    def subcredential(self) -> bytes:
        credential = _sha3(b"credential", self.identity_key)
        return _sha3(b"subcredential", credential, self.blinded_key)

    @property
    def revision_counter(self) -> int:
        match = re.search(r"^revision-counter (\d+)$", self.text, re.M)
        if match is None:
            raise ValueError("the descriptor has no revision-counter")
        return int(match.group(1))

    def _decrypt(self, blob: bytes, secret: bytes, constant: bytes) -> str:
        salt, encrypted, mac = blob[:16], blob[16:-32], blob[-32:]
        secret_input = secret + self.subcredential + struct.pack(">Q", self.revision_counter)
        keys = hashlib.shake_256(secret_input + salt + constant).digest(32 + 16 + 32)
        key, iv, mac_key = keys[:32], keys[32:48], keys[48:]
        expected = _sha3(struct.pack(">Q", 32), mac_key, struct.pack(">Q", 16), salt, encrypted)
        if expected != mac:
            raise ValueError("the descriptor layer does not decrypt with this key (MAC mismatch)")
        decryptor = Cipher(algorithms.AES256(key), modes.CTR(iv)).decryptor()
        plain = decryptor.update(encrypted) + decryptor.finalize()
        return plain.rstrip(b"\0").decode("utf-8")

    def outer_layer(self) -> str:
        """The first (superencrypted) layer, which any client that knows the address can read."""
        blob = _armored(self.text, "superencrypted", "MESSAGE")
        return self._decrypt(blob, self.blinded_key, b"hsdir-superencrypted-data")

    def inner_layer(self, client_key: bytes | None = None) -> str:
        """The second layer: introduction points, proof-of-work parameters.

        A service with client authorisation encrypts it under a descriptor
        cookie that only a listed client's x25519 key recovers; ValueError
        without that key.
        """
        outer = self.outer_layer()
        cookie = b""
        if client_key is not None:
            cookie = self._cookie(outer, client_key)
        blob = _armored(outer, "encrypted", "MESSAGE")
        return self._decrypt(blob, self.blinded_key + cookie, b"hsdir-encrypted-data")

    def _cookie(self, outer: str, client_key: bytes) -> bytes:
        ephemeral = re.search(r"^desc-auth-ephemeral-key (\S+)$", outer, re.M)
        if ephemeral is None:
            raise ValueError("the descriptor has no desc-auth-ephemeral-key")
        seed = crypto_scalarmult(client_key, _b64(ephemeral.group(1)))
        keys = hashlib.shake_256(self.subcredential + seed).digest(8 + 32)
        client_id, cookie_key = keys[:8], keys[8:]
        for match in re.finditer(r"^auth-client (\S+) (\S+) (\S+)$", outer, re.M):
            if _b64(match.group(1)) == client_id:
                decryptor = Cipher(
                    algorithms.AES256(cookie_key), modes.CTR(_b64(match.group(2)))
                ).decryptor()
                return decryptor.update(_b64(match.group(3))) + decryptor.finalize()
        raise ValueError("no auth-client line of the descriptor is for this key")
