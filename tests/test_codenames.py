"""Specification of codenames (crypto/codenames.py): generation, normalisation, derivation."""

from __future__ import annotations

import math
import secrets

import pytest
from diceware.wordlist import WordList, get_wordlist_path
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from crypto import codenames
from crypto.codenames import (
    LANGUAGES,
    LEGACY_WORD_COUNT,
    WORD_COUNT,
    derive,
    generate,
    looks_like_codename,
    normalise,
)
from crypto.kdf import SALT_BYTES, KdfCost, derive_key

# The cheapest cost Argon2id accepts: these tests are about the derivation, not its cost.
CHEAP = KdfCost(iterations=1, memory_bytes=8 * 1024)
SALT = bytes(range(SALT_BYTES))
OTHER_SALT = bytes(reversed(range(SALT_BYTES)))
CODENAME = "abacus bamboo candle dolphin eagle falcon garnet"


def raw_list(language: str) -> set[str]:
    """The word list the `diceware` package ships for `language`, independent of the module."""
    return set(WordList(get_wordlist_path(LANGUAGES[language])))


# --- generation ---------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_a_codename_is_eight_words_from_its_curated_language_list(language: str) -> None:
    words = raw_list(language)
    curated = set(codenames._words(language))
    assert len(curated) < len(words)
    for _ in range(50):
        codename = generate(language)
        parts = codename.split(" ")
        assert len(parts) == WORD_COUNT == 8
        assert all(part in curated and part in words for part in parts), codename
        assert looks_like_codename(codename)


def test_each_language_draws_from_its_own_list() -> None:
    english = raw_list("en")
    for language in ("fr", "es"):
        drawn = {w for _ in range(100) for w in generate(language).split(" ")}
        # Some overlap between lists is natural; a different list would not be mostly foreign.
        assert len(drawn - english) > len(drawn) // 2, language


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_two_hundred_codenames_are_all_different(language: str) -> None:
    generated = [generate(language) for _ in range(200)]
    assert len(set(generated)) == 200
    assert len({normalise(c) for c in generated}) == 200


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_each_list_gives_at_least_89_bits(language: str) -> None:
    usable = codenames._words(language)
    assert len({normalise(w) for w in usable}) == len(usable), "two words normalise alike"
    assert WORD_COUNT * math.log2(len(usable)) >= 89  # the figures: tests/test_wordlists.py


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_every_word_of_every_list_survives_normalisation_as_one_known_word(language: str) -> None:
    rejected = [
        word
        for word in codenames._words(language)
        if " " in normalise(word)
        or not looks_like_codename(" ".join([word.upper()] * WORD_COUNT))
        or not codenames.is_known_word(word.title())
    ]
    assert rejected == []


def test_an_unknown_language_is_refused() -> None:
    with pytest.raises(KeyError):
        generate("xx")


# --- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("ABACUS Bamboo cAnDlE", "abacus bamboo candle"),
        ("Éléphant crème BRÛLÉE", "elephant creme brulee"),
        ("e\u0301le\u0301phant", "elephant"),  # decomposed accents
        ("abacus   bamboo\t\tcandle", "abacus bamboo candle"),
        ("  abacus bamboo  ", "abacus bamboo"),
        ("abacus-bamboo_candle", "abacus bamboo candle"),
        ("abacus - bamboo -- candle", "abacus bamboo candle"),
        ("abacus\nbamboo\r\ncandle\n", "abacus bamboo candle"),
        ("abacus\u00a0bamboo\u2003candle", "abacus bamboo candle"),  # no-break and em spaces
        (
            "".join(chr(ord(c) + 0xFEE0) for c in "ABACUS") + "\u3000" + "\uff42\uff41\uff4d",
            "abacus bam",
        ),  # full-width letters and ideographic space
        ("Straße", "strasse"),
        ("ÑANDÚ", "nandu"),
        ("", ""),
        (" \n\t-_ ", ""),
    ],
)
def test_normalise_folds_case_accents_and_separators(typed: str, canonical: str) -> None:
    assert normalise(typed) == canonical


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_normalise_is_idempotent_and_never_raises(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert once == once.strip()
    assert "  " not in once


_EN_WORDS = sorted(codenames._words("en"))
_SEPARATORS = [" ", "  ", "-", "_", "\n", "\t", " - ", "\r\n", "\u00a0"]


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(st.sampled_from(_EN_WORDS), min_size=7, max_size=8),
    separators=st.lists(st.sampled_from(_SEPARATORS), min_size=7, max_size=7),
    upper=st.lists(st.booleans(), min_size=8, max_size=8),
    padding=st.sampled_from(["", " ", "\n", "  \t"]),
)
def test_any_way_of_typing_a_codename_normalises_to_the_same_form(
    words: list[str], separators: list[str], upper: list[bool], padding: str
) -> None:
    cased = [word.upper() if up else word.title() for word, up in zip(words, upper, strict=False)]
    typed = padding + cased[0]
    for word, separator in zip(cased[1:], separators, strict=False):
        typed += separator + word
    typed += padding
    assert normalise(typed) == " ".join(words)
    assert looks_like_codename(typed)


# --- recognising a codename ---------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_looks_like_codename_accepts_a_generated_codename_however_typed(language: str) -> None:
    codename = generate(language)
    words = codename.split(" ")
    assert looks_like_codename(codename)
    assert looks_like_codename(codename.upper())
    assert looks_like_codename("  " + "   ".join(words) + "\n")
    assert looks_like_codename("-".join(words))
    assert looks_like_codename("\n".join(w.title() for w in words))


def test_looks_like_codename_rejects_the_wrong_number_of_words() -> None:
    words = generate("en").split(" ")
    assert not looks_like_codename(" ".join(words[:6]))
    assert not looks_like_codename(" ".join([*words, words[0]]))
    assert not looks_like_codename(words[0])
    assert not looks_like_codename("")
    assert not looks_like_codename("   ")


def test_looks_like_codename_accepts_seven_words_as_codenames_were_before_eight() -> None:
    assert looks_like_codename(CODENAME) and len(CODENAME.split(" ")) == LEGACY_WORD_COUNT == 7
    # Any known word counts, including those no new codename gets any more.
    assert looks_like_codename("snitch traitor strangle poison prison hate blaspheme")


def test_looks_like_codename_rejects_unknown_words() -> None:
    words = generate("en").split(" ")
    for position in range(WORD_COUNT):
        for intruder in ("xyzzyq", "qwertyuiop", "12345", "abacus1"):
            altered = [*words]
            altered[position] = intruder
            assert not looks_like_codename(" ".join(altered)), altered


# --- derivation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secrets_of_codename() -> codenames.SourceSecrets:
    return derive(CODENAME, SALT, CHEAP)


def test_derive_is_deterministic(secrets_of_codename: codenames.SourceSecrets) -> None:
    again = derive(CODENAME, SALT, CHEAP)
    assert again.lookup_id == secrets_of_codename.lookup_id
    assert bytes(again.secret_key) == bytes(secrets_of_codename.secret_key)
    assert len(again.lookup_id) == 32


@pytest.mark.parametrize(
    "typed",
    [
        "ABACUS  bamboo-candle dolphin_eagle\nfalcon garnet",
        "  Abacus Bamboo Candle Dolphin Eagle Falcon Garnet  ",
        "abacus-bamboo-candle-dolphin-eagle-falcon-garnet",
    ],
)
def test_derive_ignores_how_the_codename_was_typed(
    typed: str, secrets_of_codename: codenames.SourceSecrets
) -> None:
    derived = derive(typed, SALT, CHEAP)
    assert derived.lookup_id == secrets_of_codename.lookup_id
    assert bytes(derived.secret_key) == bytes(secrets_of_codename.secret_key)


def test_derive_ignores_spacing_and_case_in_a_short_example() -> None:
    typed, canonical = derive("ABC  def-ghi", SALT, CHEAP), derive("abc def ghi", SALT, CHEAP)
    assert typed.lookup_id == canonical.lookup_id
    assert bytes(typed.secret_key) == bytes(canonical.secret_key)
    assert derive("abc def ghj", SALT, CHEAP).lookup_id != canonical.lookup_id


def test_the_lookup_id_the_key_and_the_master_secret_are_separated(
    secrets_of_codename: codenames.SourceSecrets,
) -> None:
    lookup_id = secrets_of_codename.lookup_id
    secret_key = bytes(secrets_of_codename.secret_key)
    public_key = bytes(secrets_of_codename.secret_key.public_key)
    master = derive_key(normalise(CODENAME).encode("utf-8"), SALT, CHEAP)
    assert len({lookup_id, secret_key, public_key, master}) == 4
    # The stored lookup id must not be (or seed) the key; neither may the raw master secret.
    assert bytes(PrivateKey.from_seed(lookup_id)) != secret_key
    assert bytes(PrivateKey.from_seed(master)) != secret_key
    assert bytes(PrivateKey(master)) != secret_key
    assert bytes(PrivateKey(lookup_id)) != secret_key


def test_a_different_instance_salt_gives_different_secrets(
    secrets_of_codename: codenames.SourceSecrets,
) -> None:
    other = derive(CODENAME, OTHER_SALT, CHEAP)
    assert other.lookup_id != secrets_of_codename.lookup_id
    assert bytes(other.secret_key) != bytes(secrets_of_codename.secret_key)


def test_different_codenames_give_different_secrets(
    secrets_of_codename: codenames.SourceSecrets,
) -> None:
    neighbour = CODENAME.replace("garnet", "gazelle")
    for other_codename in (neighbour, generate("en"), CODENAME[:-1]):
        other = derive(other_codename, SALT, CHEAP)
        assert other.lookup_id != secrets_of_codename.lookup_id
        assert bytes(other.secret_key) != bytes(secrets_of_codename.secret_key)


def test_the_cost_is_part_of_the_derivation(secrets_of_codename: codenames.SourceSecrets) -> None:
    dearer = derive(CODENAME, SALT, KdfCost(iterations=2, memory_bytes=8 * 1024))
    assert dearer.lookup_id != secrets_of_codename.lookup_id


def test_derive_refuses_a_salt_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        derive(CODENAME, secrets.token_bytes(SALT_BYTES - 1), CHEAP)


# Any text a request can carry, and some it cannot: lone surrogates, controls, NUL.
_any_text = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=300),
    st.lists(st.sampled_from(_EN_WORDS), min_size=7, max_size=7).map(" ".join),
    st.lists(st.sampled_from(_EN_WORDS), min_size=6, max_size=8).map("\x00".join),
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(_any_text)
def test_recognising_any_text_never_raises_and_a_recognised_one_derives(text: str) -> None:
    recognised = looks_like_codename(text)
    assert isinstance(recognised, bool)
    if recognised:
        assert derive(text, SALT, CHEAP) == derive(normalise(text), SALT, CHEAP)
