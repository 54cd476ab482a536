"""Sending mail: one SMTP session per run of `dropbox notify`, and the messages it carries.

The connection is TLS from the first byte (`mail.security = "tls"`), or
upgraded with STARTTLS before anything else is said ("starttls"); both check
the server's certificate and name with `ssl.create_default_context()`,
against the system's certificate authorities or, when `mail.ca_file` is set,
only the ones in that file. A server that does not offer STARTTLS is left
before the password or any mail is sent: there is no fall-back to plain text.
Plain SMTP ("none") is for a relay on the same host only (the configuration
refuses anything else). The password goes to the server after TLS and
nowhere else: no message here, and no error, ever holds it.

A message to an officer who registered an OpenPGP key is PGP/MIME
(RFC 3156): the whole body, its own MIME headers included, is encrypted
with `dropbox.openpgp`; only From, To, Date, Message-ID and a fixed Subject
travel in the clear. Headers name no host of the server: the EHLO greeting
and the Message-ID use the domain of `mail.from_address`.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.encoders import encode_7or8bit
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid
from types import TracebackType

from dropbox import openpgp
from dropbox.config import MailSettings


class MailError(Exception):
    """A mail was not sent; the message says why in plain words (never a password)."""


class ConnectionLost(MailError):
    """The session with the mail server failed: later mails of the run need a new one."""


@dataclass(frozen=True)
class Recipient:
    """Where a mail goes, and the OpenPGP key it must be encrypted to (if any)."""

    address: str
    openpgp_key: str | None = None
    openpgp_fingerprint: str | None = None


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def _encrypted(recipient: Recipient, data: bytes) -> str:
    """`data` encrypted to the registered key; KeyRefused in words for administrators."""
    try:
        ciphertext = openpgp.encrypt(
            recipient.openpgp_key or "", recipient.openpgp_fingerprint or "", data
        )
    except openpgp.KeyRefused as refused:
        if refused.kind in openpgp.NO_LONGER_USABLE:
            raise openpgp.KeyRefused(
                refused.kind,
                "the registered OpenPGP key can no longer encrypt (expired or revoked): "
                "register a current key on the account page",
            ) from None
        if refused.kind == openpgp.MISMATCH:
            raise openpgp.KeyRefused(
                refused.kind, "the stored key does not match its fingerprint"
            ) from None
        raise
    return ciphertext.decode("ascii")


def build(settings: MailSettings, recipient: Recipient, subject: str, text: str) -> Message:
    """The message as it goes out: plain text, or PGP/MIME when the recipient has a key.

    Raises openpgp.KeyRefused when the key cannot be used: never a clear-text fallback.
    """
    plain = EmailMessage()
    plain.set_content(text)  # 7bit for ASCII text, readable as it is
    body: Message = plain
    if recipient.openpgp_key:
        ciphertext = _encrypted(recipient, plain.as_bytes())
        control = MIMEApplication("Version: 1\n", "pgp-encrypted", encode_7or8bit)
        control["Content-Description"] = "PGP/MIME version identification"
        encrypted = MIMEApplication(
            ciphertext, "octet-stream", encode_7or8bit, name="encrypted.asc"
        )
        encrypted["Content-Description"] = "OpenPGP encrypted message"
        encrypted.add_header("Content-Disposition", "inline", filename="encrypted.asc")
        body = MIMEMultipart(
            "encrypted", _subparts=[control, encrypted], protocol="application/pgp-encrypted"
        )
        body.preamble = "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)."
    body["From"] = settings.from_address
    body["To"] = recipient.address
    body["Subject"] = subject
    body["Date"] = formatdate(usegmt=True)
    body["Message-ID"] = make_msgid(domain=_domain(settings.from_address))
    return body


def _reason(exc: BaseException) -> str:
    """Plain words for why talking to the mail server failed (never the password)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"the mail server did not accept mail.username and mail.password ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return f"the mail server refused the address ({', '.join(str(c) for c in codes)})"
    if isinstance(exc, smtplib.SMTPResponseException):
        said = (
            exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
        )
        said = "".join(c if c.isprintable() else " " for c in said)[:120].strip()
        return f"the mail server refused the mail ({exc.smtp_code} {said})".strip()
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the mail server closed the connection"
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = (exc.verify_message or "no reason given").rstrip(".")
        return f"the mail server's TLS certificate was not accepted ({why})"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS connection to the mail server failed ({exc.reason or 'no reason given'})"
    if isinstance(exc, socket.gaierror):
        return "the mail server's name could not be found (mail.host)"
    if isinstance(exc, ConnectionRefusedError):
        return "the mail server refused the connection (is it running, and is mail.port right?)"
    if isinstance(exc, TimeoutError):
        return "the mail server did not answer in time"
    if isinstance(exc, OSError):
        return f"the mail server cannot be reached ({exc.strerror or type(exc).__name__})"
    return f"the mail could not be sent ({type(exc).__name__})"


def tls_context(settings: MailSettings) -> ssl.SSLContext:
    """What checks the server's certificate and name; MailError if mail.ca_file cannot be read."""
    if not settings.ca_file:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except ssl.SSLError:
        raise MailError(
            f"mail.ca_file holds no certificate in PEM form ({settings.ca_file})"
        ) from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise MailError(f"mail.ca_file cannot be read ({settings.ca_file}: {why})") from None


class Delivery:
    """One SMTP session, opened at the first mail and reopened once after it is lost."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        # Once connecting has failed, the rest of the run fails at once with the
        # same reason: a server that is down must not cost a timeout per mail.
        self._down: str | None = None

    def __enter__(self) -> Delivery:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        context = tls_context(settings)
        helo = _domain(settings.from_address)
        smtp: smtplib.SMTP
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                local_hostname=helo,
                timeout=settings.timeout_seconds,
                context=context,
            )
        else:
            smtp = smtplib.SMTP(
                settings.host, settings.port, local_hostname=helo, timeout=settings.timeout_seconds
            )
        try:
            if settings.security == "starttls":
                try:
                    smtp.starttls(context=context)
                except smtplib.SMTPNotSupportedError:
                    # Never carry on in plain text: not the password, not a mail.
                    raise MailError(
                        "the mail server does not offer STARTTLS: "
                        'set mail.security to "tls" or fix the server'
                    ) from None
            if settings.username:
                try:
                    smtp.login(settings.username, settings.password)
                except smtplib.SMTPNotSupportedError:
                    raise MailError(
                        "the mail server does not offer to sign in (AUTH): "
                        "remove mail.username and mail.password, or fix the server"
                    ) from None
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: Message, to: str) -> None:
        """Send one message; MailError (ConnectionLost if the session failed) says why not."""
        if self._down is not None:
            raise ConnectionLost(self._down)
        if self._smtp is None:
            try:
                self._smtp = self._connect()
            except MailError as exc:
                self._down = str(exc)
                raise ConnectionLost(self._down) from None
            except (smtplib.SMTPException, OSError) as exc:
                self._down = _reason(exc)
                raise ConnectionLost(self._down) from None
        try:
            # CRLF line ends, as SMTP requires: bytes are sent as they are.
            data = message.as_bytes(policy=SMTP_POLICY)
            self._smtp.sendmail(self.settings.from_address, [to], data)
        except (
            smtplib.SMTPRecipientsRefused,
            smtplib.SMTPSenderRefused,
            smtplib.SMTPDataError,
        ) as exc:
            # This mail was refused; the session is still good for the next one.
            try:
                self._smtp.rset()
            except (smtplib.SMTPException, OSError):
                self.close()
            raise MailError(_reason(exc)) from None
        except (smtplib.SMTPException, OSError) as exc:
            # The session is gone (the server disappeared, or timed out): the next
            # mail opens a new one.
            self.close()
            raise ConnectionLost(_reason(exc)) from None

    def close(self) -> None:
        """End the session politely, if there is one."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
