"""The word lists: codenames a frightened source can write down, designations that judge no one.

Codename words (crypto/codenames.py) are the `diceware` lists less three kinds
of word: those that break a spelling rule applied mechanically
(`codenames.spelling_rule`), those that sound like another word of the same list
(`codenames.sound_key`), and a reviewed list per language,
crypto/wordlists/excluded-<language>.txt. Report designations
(dropbox/reports.py) are drawn from dropbox/wordlists/designation-first.txt and
designation-second.txt, with a reviewed list of words they must never hold.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from crypto import codenames
from crypto.codenames import LANGUAGES, LEGACY_WORD_COUNT, MIN_BITS, WORD_COUNT
from crypto.kdf import SALT_BYTES, KdfCost
from dropbox import reports
from dropbox.instance import Instance

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "security.md"
DESIGNATION_EXCLUDED = ROOT / "dropbox" / "wordlists" / "designation-excluded.txt"


def fold(word: str) -> str:
    return codenames.normalise(word)


# --- codename words ---------------------------------------------------------------------


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_no_codename_word_is_on_the_reviewed_exclusion_list(language: str) -> None:
    excluded = codenames.excluded_words(language)
    assert len(excluded) > 300, "the reviewed list did not load"
    drawn_from = {fold(w) for w in codenames._words(language)}
    assert sorted(drawn_from & excluded) == []


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_every_excluded_word_is_a_word_of_the_full_list(language: str) -> None:
    """A misspelt entry would exclude nothing: each one must name a real word of the list."""
    known = {fold(w) for w in codenames._known_words(language)}
    assert sorted(codenames.excluded_words(language) - known) == []


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_no_codename_word_breaks_a_spelling_rule(language: str) -> None:
    broken = {
        w: rule
        for w in codenames._words(language)
        if (rule := codenames.spelling_rule(language, w)) is not None
    }
    assert broken == {}


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_no_codename_word_sounds_like_another_word_of_its_list(language: str) -> None:
    """Not only among the words drawn: a source who misremembers one as the other is lost."""
    drawn = {fold(w) for w in codenames._words(language)}
    by_sound: dict[str, set[str]] = {}
    for word in codenames._known_words(language):
        by_sound.setdefault(codenames.sound_key(language, word), set()).add(fold(word))
    clashes = {
        key: sorted(words) for key, words in by_sound.items() if len(words) > 1 and words & drawn
    }
    assert clashes == {}


@pytest.mark.parametrize(
    ("language", "word", "rule"),
    [
        ("en", "knapsack", "silent first letter"),
        ("en", "wrist", "silent first letter"),
        ("en", "thumb", "silent b or n at the end"),
        ("en", "although", "silent gh"),
        ("en", "science", "silent c"),
        ("en", "bristle", "silent t"),
        ("en", "either", "ei, easily written ie"),
        ("en", "chatting", "doubled letter before a suffix"),
        ("en", "succeed", "two doubled letters"),
        ("fr", "homard", "silent h"),
        ("fr", "cycle", "y inside a word"),
        ("fr", "appeler", "doubled consonant"),
        ("fr", "respect", "silent letters at the end"),
        ("es", "ahora", "silent h"),
        ("es", "kiwi", "w or k"),
        ("es", "first", "an ending Spanish words do not have"),
        ("es", "stop", "an ending Spanish words do not have"),
        ("es", "sprint", "an ending Spanish words do not have"),
        ("es", "slogan", "s and a consonant at the start"),
        ("es", "fmln", "an ending Spanish words do not have"),
        ("en", "abcdefghij", "longer than nine letters"),
    ],
)
def test_the_spelling_rules_catch_what_they_name(language: str, word: str, rule: str) -> None:
    assert codenames.spelling_rule(language, word) == rule


@pytest.mark.parametrize(
    ("language", "first", "second"),
    [
        ("en", "chafing", "chaffing"),
        ("en", "flier", "flyer"),
        ("en", "whiny", "whinny"),
        ("en", "diner", "dinner"),
        ("fr", "gagne", "gagner"),
        ("fr", "public", "publique"),
        ("fr", "rouleau", "rouleaux"),
        ("es", "casa", "caza"),
        ("es", "bello", "vello"),
        ("es", "hondas", "ondas"),
    ],
)
def test_near_homophones_share_a_sound_key(language: str, first: str, second: str) -> None:
    assert codenames.sound_key(language, first) == codenames.sound_key(language, second)


def test_the_words_the_issue_found_are_never_drawn() -> None:
    """The run that drew 'blaspheme', 'supermom', 'chaffing', 'retying', and what the list held."""
    drawn_from = {fold(w) for w in codenames._words("en")}
    found = ["blaspheme", "supermom", "chaffing", "retying", "snitch", "traitor", "strangle"]
    found += ["poison", "prison", "hate"]
    assert sorted(set(found) & drawn_from) == []
    assert all(codenames.is_known_word(w) for w in found)  # they were in the full list


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_each_language_keeps_at_least_89_bits(language: str) -> None:
    size = len(codenames._words(language))
    assert codenames.bits(language) == WORD_COUNT * math.log2(size) >= MIN_BITS == 89
    # Seven words would not be enough for any curated list: that is why there are eight.
    assert LEGACY_WORD_COUNT * math.log2(size) < MIN_BITS
    assert size > 2 ** (MIN_BITS / WORD_COUNT) * 1.5  # well above the least for eight words


def test_docs_give_each_languages_list_size_and_bits() -> None:
    """docs/security.md, section 4, states the figures this test computes."""
    text = DOCS.read_text("utf-8")
    section = text[text.index("### 4. A codename is never stored") : text.index("### 5.")]
    for language in LANGUAGES:
        size = len(codenames._words(language))
        line = f"{language}: {size:,} words, {codenames.bits(language):.1f} bits"
        assert line in section, line
    assert "tests/test_wordlists.py" in section


# A codename made with the full English list, before any curation: seven words, all of
# them now excluded. Its lookup id and public key, derived by the code of that time.
OLD_CODENAME = "snitch traitor strangle poison prison hate blaspheme"
OLD_LOOKUP_ID = "ab7ce5acf1e367b1bc5fc3174c2d6502aedf9b0472df48a447b97cb0612062d1"
OLD_PUBLIC_KEY = "c792bbbe7710401cc669bd8dc1f8682e374beca70b3eeb5ea055f03253818324"


def test_a_codename_made_before_the_curation_is_recognised_and_derives_as_before() -> None:
    assert codenames.looks_like_codename(OLD_CODENAME)
    assert codenames.looks_like_codename(OLD_CODENAME.upper().replace(" ", "-"))
    derived = codenames.derive(
        OLD_CODENAME, bytes(range(SALT_BYTES)), KdfCost(iterations=1, memory_bytes=8 * 1024)
    )
    assert derived.lookup_id.hex() == OLD_LOOKUP_ID
    assert bytes(derived.secret_key.public_key).hex() == OLD_PUBLIC_KEY


# --- report designations ------------------------------------------------------------------


def reviewed_designation_exclusions() -> set[str]:
    return set(reports.read_word_list(DESIGNATION_EXCLUDED))


def test_no_designation_word_is_a_judgement_or_on_a_reviewed_list() -> None:
    first, second = reports.designation_words()
    excluded = reviewed_designation_exclusions()
    # The words officers saw, and those the issue found in the old lists, are all on it.
    issue = {"bogus", "bozo", "fake", "phony", "crazy", "whiny", "trivial", "liar", "hoax"}
    issue |= {"scam", "crybaby", "snitch"}
    assert issue <= excluded
    # Nor may a designation hold a word a codename may not (violence, crime, death...).
    excluded |= codenames.excluded_words("en")
    assert sorted(set(first) & excluded) == []
    assert sorted(set(second) & excluded) == []


def test_designation_lists_are_plain_distinct_words() -> None:
    first, second = reports.designation_words()
    for words in (first, second):
        assert len(set(words)) == len(words), "a word appears twice"
        assert all(re.fullmatch(r"[a-z]{2,14}", w) for w in words), "not a plain word"
    assert sorted(set(first) & set(second)) == []  # no "maple maple"


def test_designations_have_combinations_enough_never_to_run_out() -> None:
    """new_designation draws until it finds a free label, DESIGNATION_TRIES times at most.

    With N reports among C labels, every try collides with probability N/C,
    so all of them do with (N/C)^tries.
    """
    first, second = reports.designation_words()
    combinations = len(first) * len(second)
    assert combinations >= 500_000
    assert f"{combinations:,} labels" in DOCS.read_text("utf-8")  # docs/security.md, section 4
    assert (100_000 / combinations) ** reports.DESIGNATION_TRIES < 1e-60


def test_new_designations_come_from_the_neutral_lists(instance: Instance) -> None:
    first, second = reports.designation_words()
    with instance.readers() as db:
        drawn = [reports.new_designation(db) for _ in range(200)]
    for label in drawn:
        adjective, noun = label.split(" ")
        assert adjective in first and noun in second, label
    assert len(set(drawn)) > 190
