"""Notification e-mails over TLS: STARTTLS and implicit TLS to a real aiosmtpd server.

The certificates are made by the `openssl` program for each run: a test
certificate authority, a certificate for "localhost" and 127.0.0.1 that it
signed, one it signed for another host, and one for "localhost" signed by an
authority nobody trusts. The sender trusts the test authority the way an
operator would, through `mail.ca_file`. aiosmtpd offers STARTTLS
(`tls_context`, `require_starttls`) or speaks TLS from the first byte (a
Controller with `ssl_context`), and takes the password only over TLS
(`auth_require_tls`).

The mails are queued by a report through the source interface and sent by
`dropbox.notify.run_once` (what `dropbox notify --once` runs), whose failures
land in the queued row and the audit log: those are read back here.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from flask import Flask
from nacl.public import PrivateKey

from dropbox import notify
from dropbox.config import MailSettings
from dropbox.instance import Instance
from tests.conftest import CHEAP_CRYPTO_TOML, free_port, invoke
from tests.reviewer_helpers import World, audit_details, make_world, source_report
from tests.test_notify import FROM, LINK, MESSAGE, address, choose, queued

USERNAME = "dropbox-relay"
PASSWORD = "tls-only correct horse battery staple"  # the test server's own


# --- certificates made by the openssl program -------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of one test run: the trusted authority and the servers' certificates."""

    ca: Path  # the authority mail.ca_file names
    localhost: tuple[Path, Path]  # certificate and key for localhost and 127.0.0.1
    other_host: tuple[Path, Path]  # signed by the same authority, for mail.example.net
    untrusted: tuple[Path, Path]  # for localhost and 127.0.0.1, by an authority not trusted


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()


def _authority(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key.name, "-out", cert.name, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return cert, key


def _server(folder: Path, name: str, authority: tuple[Path, Path], names: str) -> tuple[Path, Path]:
    cert, key, request = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr"))
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key.name, "-out", request.name, "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", request.name, "-CA", str(authority[0]), "-CAkey", str(authority[1]),
        "-set_serial", str(secrets.randbits(63)), "-days", "2", "-extfile", extensions.name,
        "-out", cert.name,
        cwd=folder,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    trusted = _authority(folder, "Dropbox test CA")
    rogue = _authority(folder, "Nobody trusts this CA")
    return Pki(
        ca=trusted[0],
        localhost=_server(folder, "localhost", trusted, "DNS:localhost,IP:127.0.0.1"),
        other_host=_server(folder, "mail.example.net", trusted, "DNS:mail.example.net"),
        untrusted=_server(folder, "impostor", rogue, "DNS:localhost,IP:127.0.0.1"),
    )


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


# --- a real SMTP server that notes how each mail and password came ------------------------


def _tls(server: Any) -> bool:
    """True if the aiosmtpd session is talking TLS (after STARTTLS, or from the first byte)."""
    return server.transport.get_extra_info("ssl_object") is not None


@dataclass
class Relay:
    """An aiosmtpd handler and authenticator: keeps mails, and whether TLS carried them."""

    mails: list[tuple[list[str], bytes, bool]] = field(default_factory=list)
    logins: list[tuple[str, str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), bytes(envelope.content), _tls(server)))
        return "250 OK"

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password, _tls(server)))
        return AuthResult(success=(login, password) == (USERNAME, PASSWORD))


@contextlib.contextmanager
def relay_server(relay: Relay, **options: Any) -> Iterator[int]:
    """aiosmtpd on 127.0.0.1 for the block, with aiosmtpd's own options; yields its port."""
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port, authenticator=relay, **options)
    controller.start()
    try:
        yield port
    finally:
        with contextlib.suppress(Exception):
            controller.stop()


def starttls_server(relay: Relay, certificate: tuple[Path, Path]) -> Any:
    """A relay that offers STARTTLS and takes nothing (no password, no mail) before it."""
    return relay_server(relay, tls_context=server_context(certificate), require_starttls=True)


def tls_server(relay: Relay, certificate: tuple[Path, Path]) -> Any:
    """A relay that speaks TLS from the first byte (port 465 style).

    aiosmtpd 1.4 counts only STARTTLS as TLS for `auth_require_tls`: here the
    whole connection is TLS, so AUTH is offered from the start.
    """
    return relay_server(relay, ssl_context=server_context(certificate), auth_require_tls=False)


def send_to(world: World, source: Flask, port: int, **mail: Any) -> notify.RunSummary:
    """Queue a mail to the OIO officer with a report, and run `dropbox notify --once` once."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "from_address": FROM,
        "reviewer_link": LINK,
        "timeout_seconds": 10,
        "username": USERNAME,
        "password": PASSWORD,
        **mail,
    }
    world.instance.config = replace(world.instance.config, mail=MailSettings(**values))
    choose(world, "oio")
    source_report(source, "fraud", MESSAGE)
    return notify.run_once(world.instance)


def failure(world: World) -> str:
    """The one queued mail's error, checked to be what the audit log says and password-free."""
    (row,) = queued(world.instance)
    assert row.attempts == 1
    (audited,) = audit_details(world.instance, "notify.failed")
    assert row.last_error in audited
    for text in (row.last_error, audited):
        assert PASSWORD not in text and "horse" not in text
    return row.last_error


# --- mail arrives over TLS -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_mail_arrives_over_starttls_and_the_password_goes_only_inside_tls(
    world: World, source: Flask, pki: Pki, host: str
) -> None:
    relay = Relay()
    with starttls_server(relay, pki.localhost) as port:
        summary = send_to(world, source, port, security="starttls", ca_file=str(pki.ca), host=host)
    assert (summary.sent, summary.failed, summary.errors) == (1, 0, [])
    assert relay.logins == [(USERNAME, PASSWORD, True)]
    ((rcpt, raw, encrypted),) = relay.mails
    assert rcpt == [address("oio")] and encrypted
    assert b"1 new report is waiting" in raw
    assert queued(world.instance) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_mail_arrives_over_implicit_tls(world: World, source: Flask, pki: Pki, host: str) -> None:
    relay = Relay()
    with tls_server(relay, pki.localhost) as port:
        summary = send_to(world, source, port, security="tls", ca_file=str(pki.ca), host=host)
    assert (summary.sent, summary.failed, summary.errors) == (1, 0, [])
    assert relay.logins == [(USERNAME, PASSWORD, True)]
    ((rcpt, _, encrypted),) = relay.mails
    assert rcpt == [address("oio")] and encrypted


# --- a server that cannot be trusted gets nothing -------------------------------------------


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize(
    ("certificate", "why"),
    [
        ("untrusted", "unable to get local issuer certificate"),
        ("other_host", "IP address mismatch, certificate is not valid for '127.0.0.1'"),
    ],
    ids=["another-authority", "another-host"],
)
def test_a_server_with_an_untrusted_or_wrong_certificate_gets_no_mail_and_no_password(
    world: World, source: Flask, pki: Pki, security: str, certificate: str, why: str
) -> None:
    relay = Relay()
    serve = starttls_server if security == "starttls" else tls_server
    with serve(relay, getattr(pki, certificate)) as port:
        summary = send_to(world, source, port, security=security, ca_file=str(pki.ca))
    assert (summary.sent, summary.failed) == (0, 1)
    assert relay.mails == [] and relay.logins == []
    assert failure(world) == f"the mail server's TLS certificate was not accepted ({why})"


def test_a_private_authority_is_not_trusted_unless_mail_ca_file_names_it(
    world: World, source: Flask, pki: Pki
) -> None:
    relay = Relay()
    with tls_server(relay, pki.localhost) as port:
        summary = send_to(world, source, port, security="tls")  # the system's authorities only
    assert (summary.sent, summary.failed) == (0, 1)
    assert relay.mails == [] and relay.logins == []
    assert "certificate was not accepted" in failure(world)


@pytest.mark.parametrize("credentials", [True, False], ids=["with-password", "without-password"])
def test_a_server_that_does_not_offer_starttls_is_left_never_spoken_to_in_plain_text(
    world: World, source: Flask, pki: Pki, credentials: bool
) -> None:
    relay = Relay()
    # A plain SMTP server that would take the password and the mail without TLS.
    with relay_server(relay, auth_require_tls=False) as port:
        login = {} if credentials else {"username": "", "password": ""}
        summary = send_to(world, source, port, security="starttls", ca_file=str(pki.ca), **login)
    assert (summary.sent, summary.failed) == (0, 1)
    assert relay.mails == [] and relay.logins == []
    assert failure(world) == (
        'the mail server does not offer STARTTLS: set mail.security to "tls" or fix the server'
    )


# --- the command, configured as an operator would -----------------------------------------


def test_dropbox_notify_once_trusts_the_authority_in_mail_ca_file(
    tmp_path: Path,
    pki: Pki,
    source_app: Flask,
    instance: Instance,
    office_keys: dict[str, PrivateKey],
) -> None:
    relay = Relay()
    world = make_world(instance, office_keys)
    choose(world, "oio")
    source_report(source_app, "fraud", MESSAGE)
    with starttls_server(relay, pki.localhost) as port:
        config_file = tmp_path / "config.toml"
        config_file.write_text(
            f'data_dir = "{instance.config.data_dir}"\n'
            f'database_url = "{instance.config.database_url}"\n'
            + CHEAP_CRYPTO_TOML
            + f'[mail]\nhost = "localhost"\nport = {port}\nsecurity = "starttls"\n'
            f'from_address = "{FROM}"\nusername = "{USERNAME}"\npassword = "{PASSWORD}"\n'
            f'ca_file = "{pki.ca}"\n'
        )
        done = invoke("--config", str(config_file), "notify", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "Notifications: sent 1 mail."
    assert [encrypted for _, _, encrypted in relay.mails] == [True]
    assert relay.logins == [(USERNAME, PASSWORD, True)]


def test_a_server_that_does_not_offer_to_sign_in_is_named_as_such(
    world: World, source: Flask, pki: Pki
) -> None:
    relay = Relay()
    # aiosmtpd 1.4 with auth_require_tls (its default) offers AUTH only after
    # STARTTLS: over implicit TLS it offers none.
    with relay_server(relay, ssl_context=server_context(pki.localhost)) as port:
        summary = send_to(world, source, port, security="tls", ca_file=str(pki.ca))
    assert (summary.sent, summary.failed) == (0, 1)
    assert relay.mails == [] and relay.logins == []
    assert failure(world) == (
        "the mail server does not offer to sign in (AUTH): "
        "remove mail.username and mail.password, or fix the server"
    )


def test_a_mail_ca_file_gone_since_start_up_is_named_and_nothing_is_sent(
    world: World, source: Flask, pki: Pki, tmp_path: Path
) -> None:
    relay = Relay()
    gone = tmp_path / "mail-ca.pem"  # checked when the configuration was read, removed since
    with tls_server(relay, pki.localhost) as port:
        summary = send_to(world, source, port, security="tls", ca_file=str(gone))
    assert (summary.sent, summary.failed) == (0, 1)
    assert relay.mails == [] and relay.logins == []
    assert failure(world) == f"mail.ca_file cannot be read ({gone}: No such file or directory)"
