"""Signing in to the real case server as the reviewer app does: derive locally, send no passphrase.

Used by tests/test_case_server_signin.py and tests/test_case_server_admin.py,
on top of tests/case_helpers.py's world. TOTP codes come from the officers'
real secrets; a code works only once, and only three time steps are accepted
at a moment, so `Codes` hands out each usable code once and, when a test
needs more than the clock allows, moves the officer's last used step back
in the database: that stands in for waiting 30 seconds, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyotp
from nacl.public import PrivateKey

from crypto.keys import (
    OfficerSecrets,
    derive_officer_keys,
    open_sealed_secret_key,
    unwrap_with_wrapping_key,
    wrap_parameters,
)
from dropbox import officers
from dropbox.instance import Instance
from dropbox.models import Officer
from journalist_interface.client import CaseServerClient, SignIn
from tests.conftest import CHEAP_COST

STEP = officers.TOTP_STEP


def current_step() -> int:
    return int(datetime.now(UTC).timestamp()) // STEP


@dataclass
class Codes:
    """Fresh TOTP codes of one officer, each handed out once."""

    instance: Instance
    officer_id: int
    secret: str
    used: set[int] = field(default_factory=set)

    def next(self) -> str:
        """A code the server has not seen used (rewinding its record if the clock has none)."""
        now = current_step()
        # The current step first, the previous one last: a test crossing a step
        # boundary still sends a code the server accepts.
        for step in (now, now + 1):
            if step not in self.used and step > self._last():
                self.used.add(step)
                return pyotp.TOTP(self.secret).generate_otp(step)
        # Every step the server accepts now is used: as if 30 seconds had passed.
        self._rewind(now - 1)
        self.used = {now}
        return pyotp.TOTP(self.secret).generate_otp(now)

    def _last(self) -> int:
        with self.instance.sessions() as db:
            found = db.get(Officer, self.officer_id)
            assert found is not None
            return found.totp_last_counter

    def _rewind(self, step: int) -> None:
        with self.instance.sessions.begin() as db:
            found = db.get(Officer, self.officer_id)
            assert found is not None
            found.totp_last_counter = step


def derive(client: CaseServerClient, username: str, passphrase: str) -> OfficerSecrets:
    """What the reviewer app derives before signing in: from the header the server gives."""
    cost, salt = wrap_parameters(client.signin_parameters(username), minimum=CHEAP_COST)
    return derive_officer_keys(passphrase, salt, cost)


def sign_in(
    client: CaseServerClient, username: str, passphrase: str, code: str, device: str = ""
) -> SignIn:
    """Sign in as the reviewer app does (the client keeps the token)."""
    return client.sign_in(username, derive(client, username, passphrase).auth_key, code, device)


def open_keys(signed: SignIn, wrapping_key: bytes) -> tuple[PrivateKey, dict[str, PrivateKey]]:
    """The officer's secret key and office keys, opened as the reviewer app opens them."""
    secret_key = unwrap_with_wrapping_key(signed.me.wrapped_secret_key, wrapping_key)
    held = {
        g.office: open_sealed_secret_key(g.sealed_office_key, secret_key) for g in signed.me.grants
    }
    return secret_key, held
