"""Codenames: generation from curated word lists, normalisation, and derivation.

A codename is the only key to a source's thread and is never stored. What is
stored is derived from it: Argon2id(codename, instance salt) gives a master
secret, and three domain-separated BLAKE2b derivations of that give the lookup
id (kept in the database), the seed of the source's X-Wing key pair (the
hybrid post-quantum key of every report made since) and the seed of the
source's X25519 key pair (the key of reports made before). Of the key pair
a report uses, the public half is kept; no secret half ever is. Both pairs
come from the one Argon2id output on every derivation, so signing in costs
the same whichever a report uses (docs/security.md, 6a).

Words are drawn from the `diceware` package's lists, less the words a
frightened person should not be handed or could easily write wrong: those that
break a spelling rule (`spelling_rule`), those that sound like another word of
the same list (`sound_key`), and a reviewed list per language kept in
`crypto/wordlists/excluded-<language>.txt` (violence, crime, death, sex,
religion, insults, surveillance, drugs, illness, fear, brand names...).
Only generation uses the curated list: a codename is recognised if its words are
in any full list, so a codename handed out before the curation still signs in,
and the derivation is the same for any sequence of words.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from diceware.wordlist import WordList, get_wordlist_path
from nacl.public import PrivateKey

from crypto.kdf import KdfCost, derive_key
from crypto.keys import KeyChain, SecretKey
from crypto.xwing import XWingSecretKey

__all__ = [
    "LANGUAGES",
    "LEGACY_WORD_COUNT",
    "MIN_BITS",
    "WORD_COUNT",
    "SourceSecrets",
    "bits",
    "derive",
    "excluded_words",
    "generate",
    "is_known_word",
    "looks_like_codename",
    "normalise",
    "report_keys",
    "sound_key",
    "spelling_rule",
]

# Language code -> word list shipped by the `diceware` package (7,776 to 8,192 words).
LANGUAGES: dict[str, str] = {"en": "en_eff", "fr": "fr", "es": "es"}
# Words in a new codename. Seven would need a curated list of at least 6,654 words
# for MIN_BITS; every curated list is shorter (docs/security.md, section 4), so eight.
WORD_COUNT = 8
# Codenames handed out before the lists were curated have seven words: still recognised.
LEGACY_WORD_COUNT = 7
MIN_BITS = 89
_SEPARATORS = re.compile(r"[\s\-_.,;:/]+")
_WORDLISTS = Path(__file__).with_name("wordlists")

# Spellings that are easy to get wrong when writing down or typing back a word
# heard or read once, per language: (rule name, pattern on the folded word).
_COMMON_RULES: tuple[tuple[str, str], ...] = (
    ("longer than nine letters", r"^.{10,}$"),
    ("the same letter three times in a row", r"(.)\1\1"),
    ("two doubled letters", r"(.)\1.*(.)\2"),
)
_SPELLING_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (
        ("silent first letter", r"^(kn|gn|wr|ps|pn|rh|mn)"),
        ("silent b or n at the end", r"(mb|mn)$"),
        ("silent b", r"bt"),
        ("silent gh", r"(ough|augh|eigh)"),
        ("silent c", r"sc[eiy]"),
        ("silent t", r"stle"),
        ("ei, easily written ie", r"ei"),
        ("doubled letter before a suffix", r"([bdfgklmnprtz])\1(ing|ed|er|ery|est|y|ie|ies|ier)$"),
        ("y before a suffix", r"[^aeiou]y(ing|ed)$"),
    ),
    "fr": (
        ("silent h", r"^h|[^cs]h"),
        ("y inside a word", r".y."),
        ("silent letters at the end", r"(ct|gt|ps|pt|ds|ts|ls|ix|aon|aen)$"),
        ("doubled consonant", r"([bcdfglmnprt])\1"),
        ("w or k", r"[wk]"),
    ),
    "es": (
        ("silent h", r"^h|[^c]h"),
        ("w or k", r"[wk]"),
        ("doubled letter other than ll, rr and cc", r"([^lrc])\1"),
        ("an ending Spanish words do not have", r"([bcfgkmpqtvw]|[^aeiou]{2})$"),
        ("s and a consonant at the start", r"^s[^aeiou]"),
    ),
}


def _fold(text: str) -> str:
    """Lower-case and strip accents, so 'Éléphant' and 'elephant' are the same word."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def spelling_rule(language: str, word: str) -> str | None:
    """The name of the first spelling rule the word breaks in `language`, or None."""
    folded = _fold(word)
    for name, pattern in (*_COMMON_RULES, *_SPELLING_RULES[language]):
        if re.search(pattern, folded):
            return name
    return None


# How a word sounds, roughly, per language: ordered rewrites of the folded word.
_SOUNDS: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (
        (r"ph", "f"),
        (r"ck", "k"),
        (r"c(?=[eiy])", "s"),
        (r"[cq]", "k"),
        (r"x", "ks"),
        (r"z", "s"),
        (r"wh", "w"),
        (r"^(k|g)n", "n"),
        (r"^wr", "r"),
        (r"gh", ""),
        (r"(?<=.)y", "i"),
        (r"ie$", "i"),
        (r"(.)\1+", r"\1"),
        (r"(?<=..)e$", ""),
        (r"(?<=.)(ee|ea)", "i"),
    ),
    "fr": (
        (r"ph", "f"),
        (r"eaux?$", "o"),
        (r"eau|au", "o"),
        (r"qu", "k"),
        (r"gu(?=[eiy])", "g"),
        (r"g(?=[eiy])", "j"),
        (r"c(?=[eiy])", "s"),
        (r"ch", "x"),
        (r"c", "k"),
        (r"h", ""),
        (r"y", "i"),
        (r"(ai|ei)(?=[^nm]|$)", "e"),
        (r"[sx]$", ""),
        (r"(?<=[aeiou])[tdp]$", ""),
        (r"(er|ez|et)$", "e"),
        (r"(?<=[^aeiou])e$", ""),
        (r"(.)\1+", r"\1"),
    ),
    "es": (
        (r"ch", "x"),
        (r"h", ""),
        (r"v", "b"),
        (r"ll", "y"),
        (r"y$", "i"),
        (r"z", "s"),
        (r"c(?=[ei])", "s"),
        (r"qu", "k"),
        (r"gu(?=[ei])", "g"),
        (r"g(?=[ei])", "j"),
        (r"c", "k"),
        (r"(.)\1+", r"\1"),
    ),
}


def sound_key(language: str, word: str) -> str:
    """A rough form of how the word sounds: two words with the same key are near-homophones."""
    key = _fold(word)
    for pattern, replacement in _SOUNDS[language]:
        key = re.sub(pattern, replacement, key)
    return key


@cache
def _known_words(language: str) -> tuple[str, ...]:
    """Every word of the language's full list: what a codename, old or new, may hold.

    Words with a hyphen (four in the English list) are left out: a person
    copying by hand could write them either way. Words that fold to the same
    form as another are dropped too.
    """
    seen: dict[str, str] = {}
    for word in WordList(get_wordlist_path(LANGUAGES[language])):
        if word.isalpha():
            seen.setdefault(_fold(word), word)
    return tuple(seen.values())


@cache
def excluded_words(language: str) -> frozenset[str]:
    """The reviewed list of words a codename in `language` never gets (folded)."""
    path = _WORDLISTS / f"excluded-{language}.txt"
    words: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            words.add(_fold(entry))
    return frozenset(words)


@cache
def _near_homophones(language: str) -> frozenset[str]:
    """Folded words of the full list that sound like another word of it."""
    by_key: dict[str, list[str]] = {}
    for word in _known_words(language):
        by_key.setdefault(sound_key(language, word), []).append(_fold(word))
    return frozenset(w for group in by_key.values() if len(group) > 1 for w in group)


@cache
def _words(language: str) -> tuple[str, ...]:
    """The words a new codename in `language` is drawn from: the curated list."""
    known = _known_words(language)  # KeyError for a language there is no list for
    excluded = excluded_words(language) | _near_homophones(language)
    return tuple(
        word
        for word in known
        if _fold(word) not in excluded and spelling_rule(language, word) is None
    )


@cache
def _all_folded_words() -> frozenset[str]:
    return frozenset(_fold(w) for language in LANGUAGES for w in _known_words(language))


def bits(language: str) -> float:
    """Entropy of a new codename in `language`: word count times log2(curated list size)."""
    return WORD_COUNT * math.log2(len(_words(language)))


def generate(language: str = "en") -> str:
    """A fresh codename drawn with `secrets` from the curated list (at least 89 bits)."""
    words = _words(language)
    return " ".join(secrets.choice(words) for _ in range(WORD_COUNT))


def random_words(count: int, language: str = "en") -> list[str]:
    """`count` words drawn with `secrets` from the curated list of `language`.

    For every other phrase the project shows a person (office recovery
    passphrases, officers' enrolment codes): the same words as codenames,
    so none of them is about violence, crime, insults or the like.
    """
    words = _words(language)
    return [secrets.choice(words) for _ in range(count)]


def normalise(codename: str) -> str:
    """The canonical form: folded case and accents, single spaces, no stray punctuation."""
    folded = _fold(unicodedata.normalize("NFKC", codename))
    return " ".join(w for w in _SEPARATORS.split(folded) if w)


def is_known_word(word: str) -> bool:
    """True if the word (however typed) is in any language's full list."""
    return normalise(word) in _all_folded_words()


def looks_like_codename(codename: str) -> bool:
    """True if the text is eight (or, made before the curation, seven) known words.

    A cheap check before any costly derivation. Known words are those of the
    full lists, so a codename made before the lists were curated still passes.
    """
    words = normalise(codename).split(" ")
    return len(words) in (WORD_COUNT, LEGACY_WORD_COUNT) and all(
        w in _all_folded_words() for w in words
    )


# BLAKE2b personalisations (at most 16 bytes), one per value derived from the master
# secret, so that no two coincide (docs/format.md, "Codenames and source keys").
_LOOKUP_PERSON = b"dropbox-lookup"
_X25519_PERSON = b"dropbox-srckey"
_XWING_PERSON = b"dropbox-srcxwing"


@dataclass(frozen=True)
class SourceSecrets:
    """What a codename yields: the stored lookup id and the source's two key pairs.

    `hybrid_key` (X-Wing) is the key of every report made since sources got
    hybrid keys; `secret_key` (X25519) the key of reports made before, which
    keep it (`report_keys` tells which a report uses).
    """

    lookup_id: bytes
    secret_key: PrivateKey
    hybrid_key: XWingSecretKey

    @property
    def keys(self) -> KeyChain:
        """Both key pairs, the hybrid one first: what a new report is made with."""
        return KeyChain((self.hybrid_key, self.secret_key))


def derive(codename: str, instance_salt: bytes, cost: KdfCost) -> SourceSecrets:
    """Derive the lookup id and both key pairs from a codename (normalised first).

    One Argon2id run, then three BLAKE2b derivations of its output; the
    X-Wing key pair is the draft's key generation from its 32-byte seed.
    """
    master = derive_key(normalise(codename).encode("utf-8"), instance_salt, cost)
    lookup_id = hashlib.blake2b(master, digest_size=32, person=_LOOKUP_PERSON).digest()
    seed = hashlib.blake2b(master, digest_size=32, person=_X25519_PERSON).digest()
    hybrid_seed = hashlib.blake2b(master, digest_size=32, person=_XWING_PERSON).digest()
    return SourceSecrets(
        lookup_id=lookup_id,
        secret_key=PrivateKey.from_seed(seed),
        hybrid_key=XWingSecretKey(hybrid_seed),
    )


def report_keys(keys: KeyChain, stored_public_key: bytes) -> KeyChain:
    """The source's keys for a report whose row holds `stored_public_key`, its own key first.

    `keys` are what the codename derives (`SourceSecrets.keys`). A report
    uses the X25519 key only if its row holds exactly that key's public
    half: a report made before sources got hybrid keys. Any other row, a
    hybrid report's or one swapped by whoever writes the database, gives the
    X-Wing key. For a hybrid report the X25519 public key is never stored,
    sent nor sealed to, so nobody but the codename's holder can put it in
    the row to make the source fall back to it (docs/security.md, 6a).
    The other key follows, so that what was sealed to it still opens.
    """
    classical = [k for k in keys.keys if isinstance(k, PrivateKey)]
    hybrid = [k for k in keys.keys if isinstance(k, XWingSecretKey)]
    stored = bytes(stored_public_key)
    chosen: SecretKey = hybrid[0] if hybrid else classical[0]
    for key in classical:
        if hmac.compare_digest(bytes(key.public_key), stored):
            chosen = key
    return KeyChain((chosen, *(k for k in keys.keys if k is not chosen)))
