"""Codenames: generation from diceware word lists, normalisation, and derivation.

A codename is the only key to a source's thread and is never stored. What is
stored is derived from it: Argon2id(codename, instance salt) gives a master
secret, and two domain-separated BLAKE2b derivations of that give the lookup id
(kept in the database) and the seed of the source's X25519 key pair (whose
public half is kept, whose secret half never is).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from functools import cache

from diceware.wordlist import WordList, get_wordlist_path
from nacl.public import PrivateKey

from crypto.kdf import KdfCost, derive_key

__all__ = [
    "LANGUAGES",
    "WORD_COUNT",
    "SourceSecrets",
    "derive",
    "generate",
    "looks_like_codename",
    "normalise",
]

WORD_COUNT = 7
# Language code -> word list shipped by the `diceware` package (7,776 to 8,192 words).
LANGUAGES: dict[str, str] = {"en": "en_eff", "fr": "fr", "es": "es"}
_SEPARATORS = re.compile(r"[\s\-_.,;:/]+")


def _fold(text: str) -> str:
    """Lower-case and strip accents, so 'Éléphant' and 'elephant' are the same word."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@cache
def _words(language: str) -> tuple[str, ...]:
    """The words a codename in `language` is drawn from.

    Words with a hyphen (four in the English list) are left out: a person
    copying by hand could write them either way, and the list stays above
    7,000 words. Words that fold to the same form as another are dropped too.
    """
    seen: dict[str, str] = {}
    for word in WordList(get_wordlist_path(LANGUAGES[language])):
        if word.isalpha():
            seen.setdefault(_fold(word), word)
    return tuple(seen.values())


@cache
def _all_folded_words() -> frozenset[str]:
    return frozenset(_fold(w) for language in LANGUAGES for w in _words(language))


def generate(language: str = "en") -> str:
    """A fresh codename of seven words, drawn with `secrets` (about 90 bits)."""
    words = _words(language)
    return " ".join(secrets.choice(words) for _ in range(WORD_COUNT))


def normalise(codename: str) -> str:
    """The canonical form: folded case and accents, single spaces, no stray punctuation."""
    folded = _fold(unicodedata.normalize("NFKC", codename))
    return " ".join(w for w in _SEPARATORS.split(folded) if w)


def looks_like_codename(codename: str) -> bool:
    """True if the text is seven known words: a cheap check before any costly derivation."""
    words = normalise(codename).split(" ")
    return len(words) == WORD_COUNT and all(w in _all_folded_words() for w in words)


@dataclass(frozen=True)
class SourceSecrets:
    """What a codename yields: the stored lookup id and the source's key pair."""

    lookup_id: bytes
    secret_key: PrivateKey


def derive(codename: str, instance_salt: bytes, cost: KdfCost) -> SourceSecrets:
    """Derive the lookup id and key pair from a codename (normalised first)."""
    master = derive_key(normalise(codename).encode("utf-8"), instance_salt, cost)
    lookup_id = hashlib.blake2b(master, digest_size=32, person=b"dropbox-lookup").digest()
    seed = hashlib.blake2b(master, digest_size=32, person=b"dropbox-srckey").digest()
    return SourceSecrets(lookup_id=lookup_id, secret_key=PrivateKey.from_seed(seed))
