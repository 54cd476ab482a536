"""dropbox/openpgp.py: the one check of an OpenPGP public key, and encryption to it.

The case server (an officer's key for notification mails) and the reviewer
app (an investigator's key for an export) both use it; each says the
refusals in its own words, chosen by `KeyRefused.kind`, and is tested end to
end in tests/test_notify.py and tests/test_reviewer_export.py. Here every
kind of refusal is met through the shared functions, with keys made by the
real `gpg` program, and what is encrypted is opened with `gpg`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from dropbox import openpgp
from tests.gpg_helpers import Keys, made_keys

OWNER = "Owner <owner@example.org>"


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    with made_keys(OWNER) as made:
        yield made


def homes(parent: Path) -> set[str]:
    return {p.name for p in parent.glob(f"{openpgp.HOME_PREFIX}{os.getpid()}-*")}


def test_a_good_key_is_read_whole_and_exported_minimal(keys: Keys, tmp_path: Path) -> None:
    key = openpgp.check_key(keys.good.encode(), parent=tmp_path)
    assert key.fingerprint == keys.good_fpr
    assert key.user_ids == (OWNER,)
    assert key.created is not None and key.created <= datetime.now()
    assert key.expires is not None and key.expires > datetime.now()
    assert "BEGIN PGP PUBLIC KEY BLOCK" in key.armored
    assert key.grouped.replace(" ", "") == keys.good_fpr and len(key.grouped.split()) == 10
    # A binary key file reads the same; the private home was made in `parent`, and is gone.
    assert openpgp.check_key(keys.binary(keys.good_fpr), parent=tmp_path) == key
    assert homes(tmp_path) == set()


@pytest.mark.parametrize(
    ("which", "kind"),
    [
        ("empty", openpgp.EMPTY),
        ("huge", openpgp.TOO_LARGE),
        ("private", openpgp.PRIVATE),
        ("garbage", openpgp.NOT_A_KEY),
        ("two", openpgp.SEVERAL),
        ("revoked", openpgp.REVOKED),
        ("expired", openpgp.EXPIRED),
        ("sign_only", openpgp.CANNOT_ENCRYPT),
    ],
)
def test_every_kind_of_unusable_key_is_refused_and_said_why(
    keys: Keys, tmp_path: Path, which: str, kind: str
) -> None:
    with pytest.raises(openpgp.KeyRefused) as refused:
        openpgp.check_key(keys.pasted(which).encode(), parent=tmp_path)
    assert refused.value.kind == kind
    assert str(refused.value) and "Traceback" not in str(refused.value)
    if kind == openpgp.SEVERAL:
        assert refused.value.count == 2
    if kind == openpgp.EXPIRED:
        assert refused.value.expires == datetime(2020, 1, 2)
    # The encryption checks the key again: an unusable key is never encrypted to.
    with pytest.raises(openpgp.KeyRefused) as again:
        openpgp.encrypt(keys.pasted(which), keys.good_fpr, b"x", parent=tmp_path)
    assert again.value.kind == kind
    assert homes(tmp_path) == set()


def test_a_private_key_is_refused_armoured_or_binary_before_gpg_sees_it(keys: Keys) -> None:
    assert openpgp.looks_private(keys.private.encode())
    binary = keys.gpg("--export-secret-keys", keys.good_fpr)
    assert openpgp.looks_private(binary)
    assert not openpgp.looks_private(keys.binary(keys.good_fpr))
    assert not openpgp.looks_private(keys.good.encode())
    with pytest.raises(openpgp.KeyRefused) as refused:
        openpgp.check_key(binary)
    assert refused.value.kind == openpgp.PRIVATE


def test_the_case_server_takes_armoured_text_only(keys: Keys) -> None:
    assert openpgp.check_public_key(keys.good).fingerprint == keys.good_fpr
    with pytest.raises(openpgp.KeyRefused) as refused:
        openpgp.check_public_key(keys.good + "\x00")
    assert refused.value.kind == openpgp.NOT_A_KEY
    with pytest.raises(openpgp.KeyRefused) as refused:
        openpgp.check_public_key("x" * (openpgp.MAX_KEY_BYTES + 1))
    assert refused.value.kind == openpgp.TOO_LARGE and "64 KiB" in str(refused.value)


@pytest.mark.parametrize("armor", [True, False])
def test_what_is_encrypted_opens_with_the_owners_gpg(
    keys: Keys, tmp_path: Path, armor: bool
) -> None:
    secret = os.urandom(5000) + b"the depot manager"
    grouped = openpgp.check_key(keys.good.encode()).grouped.lower()
    sealed = openpgp.encrypt(keys.good, grouped, secret, armor=armor, parent=tmp_path)
    assert sealed.startswith(b"-----BEGIN PGP MESSAGE-----") == armor
    assert b"the depot manager" not in sealed
    assert keys.decrypt(sealed) == secret
    assert homes(tmp_path) == set()


def test_encryption_needs_the_key_with_the_fingerprint_given(keys: Keys) -> None:
    with pytest.raises(openpgp.KeyRefused) as refused:
        openpgp.encrypt(keys.other, keys.good_fpr, b"x")
    assert refused.value.kind == openpgp.MISMATCH


def test_a_missing_gpg_program_is_said_plainly(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openpgp, "GPG_PROGRAM", "no-such-gpg-program")
    with pytest.raises(openpgp.GpgMissing, match="apt-get install gpg"):
        openpgp.check_key(keys.good.encode())
