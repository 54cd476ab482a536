"""Specification of the offline recovery file of an office key (crypto/recovery.py)."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from diceware.wordlist import WordList, get_wordlist_path
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import DecryptionError
from crypto.kdf import KdfCost
from crypto.keys import PrivateKey, fingerprint, generate_keypair
from crypto.recovery import (
    FORMAT,
    RecoveryFile,
    RecoveryFileError,
    dump,
    generate_passphrase,
    load,
    open_secret_key,
)

# The cheapest cost Argon2id accepts: these tests are about the file, not the cost.
CHEAP = KdfCost(iterations=1, memory_bytes=8 * 1024)
PASSPHRASE = "abacus bamboo candle dolphin eagle falcon garnet harbor igloo jigsaw"
_OFFICE_KEY = generate_keypair()


@functools.cache
def recovery_file() -> bytes:
    """One recovery file for the whole module (made on first use, not at collection)."""
    return dump("Ethics and Conduct Office", _OFFICE_KEY, PASSPHRASE, CHEAP)


def document() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(recovery_file())
    return parsed


def encoded(doc: object) -> bytes:
    return json.dumps(doc).encode("utf-8")


def test_dump_load_open_gives_back_the_office_key() -> None:
    recovery = load(recovery_file())
    assert recovery.office == "Ethics and Conduct Office"
    assert bytes(recovery.public_key) == bytes(_OFFICE_KEY.public_key)
    opened = open_secret_key(recovery, PASSPHRASE)
    assert bytes(opened) == bytes(_OFFICE_KEY)


def test_a_generated_passphrase_round_trips() -> None:
    key, passphrase = generate_keypair(), generate_passphrase()
    recovery = load(dump("Office of Internal Oversight", key, passphrase, CHEAP))
    assert bytes(open_secret_key(recovery, passphrase)) == bytes(key)


def test_the_file_is_readable_json_with_a_fingerprint_and_no_secret() -> None:
    doc = document()
    assert doc["format"] == FORMAT
    assert doc["fingerprint"] == fingerprint(_OFFICE_KEY.public_key)
    assert base64.b64decode(doc["public_key"]) == bytes(_OFFICE_KEY.public_key)
    secret = bytes(_OFFICE_KEY)
    assert secret not in recovery_file()
    assert base64.b64encode(secret) not in recovery_file()
    assert secret not in base64.b64decode(doc["wrapped_secret_key"])
    assert PASSPHRASE.encode() not in recovery_file()


@pytest.mark.parametrize("wrong", ["", PASSPHRASE.upper(), PASSPHRASE[:-1], PASSPHRASE + " "])
def test_a_wrong_passphrase_is_refused(wrong: str) -> None:
    with pytest.raises(DecryptionError):
        open_secret_key(load(recovery_file()), wrong)


def test_a_file_whose_public_key_does_not_match_the_wrapped_key_is_refused() -> None:
    doc = document()
    doc["public_key"] = base64.b64encode(bytes(generate_keypair().public_key)).decode()
    recovery = load(encoded(doc))
    with pytest.raises(DecryptionError):
        open_secret_key(recovery, PASSPHRASE)


def test_a_wrapped_key_from_another_office_file_is_refused() -> None:
    other = json.loads(dump("Other", generate_keypair(), PASSPHRASE, CHEAP))
    doc = document()
    doc["wrapped_secret_key"] = other["wrapped_secret_key"]
    with pytest.raises(DecryptionError):
        open_secret_key(load(encoded(doc)), PASSPHRASE)


def test_a_tampered_wrapped_key_is_refused() -> None:
    doc = document()
    wrapped = bytearray(base64.b64decode(doc["wrapped_secret_key"]))
    wrapped[-1] ^= 0x01
    doc["wrapped_secret_key"] = base64.b64encode(bytes(wrapped)).decode()
    with pytest.raises(DecryptionError):
        open_secret_key(load(encoded(doc)), PASSPHRASE)


def test_a_recovery_file_built_in_memory_with_a_mismatched_key_is_refused() -> None:
    recovery = load(recovery_file())
    forged = RecoveryFile(
        office=recovery.office,
        public_key=generate_keypair().public_key,
        wrapped_secret_key=recovery.wrapped_secret_key,
    )
    with pytest.raises(DecryptionError):
        open_secret_key(forged, PASSPHRASE)


def _without(key: str) -> bytes:
    doc = document()
    del doc[key]
    return encoded(doc)


def _with(key: str, value: object) -> bytes:
    doc = document()
    doc[key] = value
    return encoded(doc)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: b"", id="empty"),
        pytest.param(lambda: b"not json at all", id="text"),
        pytest.param(lambda: b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(lambda: b"[]", id="list"),
        pytest.param(lambda: b"null", id="null"),
        pytest.param(lambda: b"42", id="number"),
        pytest.param(lambda: b'"dropbox-office-recovery-v1"', id="string"),
        pytest.param(lambda: b"{}", id="empty-object"),
        pytest.param(lambda: b'{"format": "something-else"}', id="other-format"),
        pytest.param(lambda: encoded({"hello": "world", "public_key": "AAAA"}), id="other-json"),
        pytest.param(lambda: _with("format", "dropbox-office-recovery-v3"), id="newer-version"),
        pytest.param(lambda: _without("public_key"), id="no-public-key"),
        pytest.param(lambda: _without("wrapped_secret_key"), id="no-wrapped-key"),
        pytest.param(lambda: _without("office"), id="no-office"),
        pytest.param(lambda: _with("public_key", "not base64!"), id="public-key-not-base64"),
        pytest.param(lambda: _with("public_key", "AAAA"), id="public-key-too-short"),
        pytest.param(lambda: _with("public_key", 12345), id="public-key-a-number"),
        pytest.param(lambda: _with("wrapped_secret_key", "%%%"), id="wrapped-not-base64"),
        pytest.param(lambda: _with("wrapped_secret_key", None), id="wrapped-null"),
        pytest.param(lambda: recovery_file()[: len(recovery_file()) // 2], id="truncated"),
    ],
)
def test_anything_but_a_recovery_file_is_refused_with_a_clear_message(
    make: Callable[[], bytes],
) -> None:
    with pytest.raises(RecoveryFileError) as caught:
        load(make())
    message = str(caught.value)
    assert "recovery file" in message
    assert message.startswith("not a dropbox recovery file")
    assert not isinstance(caught.value, DecryptionError)


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_load_raises_only_recovery_file_error_on_arbitrary_input(data: bytes) -> None:
    try:
        recovery = load(data)
    except RecoveryFileError:
        return
    # Whatever was accepted is a complete recovery file.
    assert isinstance(recovery, RecoveryFile)
    assert len(bytes(recovery.public_key)) == 32


@settings(max_examples=100, deadline=None)
@given(
    doc=st.dictionaries(
        st.sampled_from(["format", "office", "public_key", "wrapped_secret_key", "other"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=60), st.lists(st.integers())),
    )
)
def test_load_raises_only_recovery_file_error_on_arbitrary_json(doc: dict[str, object]) -> None:
    try:
        recovery = load(encoded(doc))
    except RecoveryFileError:
        return
    # Whatever was accepted is a complete recovery file.
    assert isinstance(recovery, RecoveryFile)
    assert len(bytes(recovery.public_key)) == 32


def test_generate_passphrase_gives_ten_words_from_the_english_list() -> None:
    english = set(WordList(get_wordlist_path("en_eff")))
    passphrase = generate_passphrase()
    words = passphrase.split(" ")
    assert len(words) == 10
    assert all(word in english and word.isalpha() for word in words), passphrase


def test_generated_passphrases_differ() -> None:
    passphrases = {generate_passphrase() for _ in range(20)}
    assert len(passphrases) == 20


def test_the_recovery_key_is_usable_as_an_office_key() -> None:
    opened: PrivateKey = open_secret_key(load(recovery_file()), PASSPHRASE)
    assert bytes(opened.public_key) == bytes(load(recovery_file()).public_key)
