"""French and Spanish in the source interface: complete catalogues, current .mo files, and
every page a source sees in the language the source chose."""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey

from crypto.codenames import _words
from dropbox import config as config_module
from dropbox.config import DEFAULT_CATEGORIES, DEFAULT_OFFICES, ConfigError, SourceSettings
from dropbox.instance import Instance
from source_interface import create_app
from tests.source_helpers import csrf_token, login, logout, new_codename, post_multipart

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "source_interface" / "translations"
LANGUAGES = ("fr", "es")
# The same options as the extract command in README.md ("Translations").
EXTRACT = ["-F", str(ROOT / "babel.cfg"), "-k", "_l", "-k", "lazy_gettext"]
PLACEHOLDER = re.compile(r"%(?:\([A-Za-z_]\w*\))?[-#0 +]*\d*(?:\.\d+)?[sdifr%]")
MESSAGE = "Mon responsable a déplacé des fonds du projet vers un compte privé l'an dernier."


def _po(language: str) -> Catalog:
    with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=language)


def _key(message: Message) -> str:
    return message.id if isinstance(message.id, str) else "\x00".join(message.id)


def _forms(message: Message) -> tuple[str, ...]:
    string = message.string
    return (string,) if isinstance(string, str) else tuple(string)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The messages of the code and templates as they are now, extracted outside the repository."""
    pot = tmp_path_factory.mktemp("extract") / "messages.pot"
    CommandLineInterface().run(["pybabel", "-q", "extract", *EXTRACT, "-o", str(pot), str(ROOT)])
    with pot.open("rb") as handle:
        return read_po(handle)


# --- the catalogues ------------------------------------------------------------------


def test_extraction_finds_the_source_interfaces_messages(fresh: Catalog) -> None:
    ids = {_key(m) for m in fresh if m.id}
    assert len(ids) > 150
    assert "Make a report" in ids  # a template
    assert "This page does not exist" in ids  # lazy_gettext in views.py
    assert "Sign in with your codename" in ids  # gettext in views.py


def test_the_committed_template_matches_a_fresh_extraction(fresh: Catalog) -> None:
    with (TRANSLATIONS / "messages.pot").open("rb") as handle:
        committed = {_key(m) for m in read_po(handle) if m.id}
    assert committed == {_key(m) for m in fresh if m.id}, "run the extract command in README.md"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated_and_nothing_is_fuzzy_or_stale(
    fresh: Catalog, language: str
) -> None:
    catalogue = _po(language)
    assert not catalogue.fuzzy, "the catalogue's header is marked fuzzy"
    wanted = {_key(m): m for m in fresh if m.id}
    have = {_key(m): m for m in catalogue if m.id}
    problems = [f"missing: {key!r}" for key in wanted.keys() - have.keys()]
    problems += [f"stale (run pybabel update): {key!r}" for key in have.keys() - wanted.keys()]
    problems += [f"obsolete entry: {key!r}" for key in catalogue.obsolete]
    for key, message in have.items():
        if message.fuzzy:
            problems.append(f"fuzzy: {key!r}")
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.pluralizable and len(forms) != catalogue.num_plurals:
            problems.append(f"{len(forms)} plural forms, {catalogue.num_plurals} needed: {key!r}")
        if not all(form and form.strip() for form in forms):
            problems.append(f"empty translation: {key!r}")
    assert problems == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_placeholders_are_kept_exactly(language: str) -> None:
    problems = []
    for message in _po(language):
        if not message.id:
            continue
        if isinstance(message.id, str):
            expected = [sorted(PLACEHOLDER.findall(message.id))]
            found = [sorted(PLACEHOLDER.findall(str(message.string)))]
            if found != expected:
                problems.append((message.id, expected, found))
            continue
        # Plural forms: each form may drop the number ("Votre fichier..."), but may not add
        # one; the last form (used for many) keeps exactly the plural's placeholders.
        singular, plural = message.id
        allowed = set(PLACEHOLDER.findall(singular)) | set(PLACEHOLDER.findall(plural))
        forms = list(message.string)
        for form in forms:
            if not set(PLACEHOLDER.findall(form)) <= allowed:
                problems.append((plural, sorted(allowed), form))
        if sorted(PLACEHOLDER.findall(forms[-1])) != sorted(PLACEHOLDER.findall(plural)):
            problems.append((plural, PLACEHOLDER.findall(plural), forms[-1]))
    assert problems == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_format_with_the_values_the_code_passes(language: str) -> None:
    """%-formatting every translation with a value for each placeholder raises nothing."""
    for message in _po(language):
        if not message.id:
            continue
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        names = {name for text in ids for name in re.findall(r"%\((\w+)\)", text)}
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        for form in forms:
            if names or "python-format" in message.flags:
                assert isinstance(form % {name: 3 for name in names}, str), message.id


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compiled_catalogue_is_current_with_its_po_file(language: str) -> None:
    catalogue = _po(language)
    mo_path = TRANSLATIONS / language / "LC_MESSAGES" / "messages.mo"
    assert mo_path.is_file(), "run: .venv/bin/pybabel compile -d source_interface/translations"
    with mo_path.open("rb") as handle:
        compiled = read_mo(handle)
    expected = {_key(m): _forms(m) for m in catalogue if m.id and not m.fuzzy}
    found = {_key(m): _forms(m) for m in compiled if m.id}
    assert found == expected, "the .mo is stale: run pybabel compile (see README.md)"
    assert compiled.plural_forms == catalogue.plural_forms


# --- the pages ------------------------------------------------------------------------

# What a source must read on each page, in each language (office names and category
# labels come from the configuration's translations, the rest from the catalogues).
EXPECTED = {
    "fr": {
        "index": [
            "Signaler un comportement répréhensible en toute sécurité",
            "Le Bureau du contrôle interne reçoit les signalements",
            "Le Bureau de la déontologie et de la conduite reçoit les signalements de représailles",
            "Si vous ne savez pas, choisissez « Je ne sais pas ».",
            "Harcèlement sexuel",
            "Un comportement qui rabaisse, menace, isole ou humilie quelqu'un au travail.",
        ],
        "codename": ["Voici votre nom de code.", "J'ai noté mon nom de code"],
        "refused": ["Veuillez choisir de quoi il s'agit.", "Votre signalement n'a pas encore"],
        "report": [
            "De quoi s'agit-il ?",
            "Fraude, corruption ou mauvais usage des ressources",
            "Représailles pour avoir signalé",
            "Je ne sais pas",
            "Envoyer le signalement",
        ],
        "receipt": [
            "Votre signalement a été reçu",
            "pour que seul le Bureau du contrôle interne puisse le lire",
            "dans un délai de 7 jours",
            "dans un délai de 3 mois",
        ],
        "login": ["Revenir avec votre nom de code", "Saisissez le nom de code"],
        "thread": [
            "Traité par le Bureau du contrôle interne.",
            "Reçu",
            "Accusé de réception automatique",
            "Merci. Le Bureau du contrôle interne a reçu votre signalement.",
        ],
        "answered": ["Envoyé. Votre message est chiffré pour le bureau."],
        "logged_out": ["Déconnexion effectuée", "fermez Tor Browser maintenant"],
        "not_found": ["Cette page n'existe pas", "Code d'erreur : 404"],
    },
    "es": {
        "index": [
            "Denunciar faltas de conducta de forma segura",
            "La Oficina de Supervisión Interna recibe las denuncias",
            "La Oficina de Ética y Conducta recibe las denuncias de represalias",
            "Si no lo sabe, elija «No lo sé».",
            "Acoso sexual",
            "Conductas que menosprecian, amenazan, aíslan o humillan a alguien en el trabajo.",
        ],
        "codename": ["Este es su nombre en clave.", "He anotado mi nombre en clave"],
        "refused": ["Elija de qué se trata.", "Su denuncia todavía no se ha enviado"],
        "report": [
            "¿De qué se trata?",
            "Fraude, corrupción o uso indebido de recursos",
            "Represalias por denunciar",
            "No lo sé",
            "Enviar la denuncia",
        ],
        "receipt": [
            "Su denuncia se ha recibido",
            "para que solo la Oficina de Supervisión Interna pueda leerla",
            "en un plazo de 7 días",
            "en un plazo de 3 meses",
        ],
        "login": ["Volver con su nombre en clave", "Escriba el nombre en clave"],
        "thread": [
            "A cargo de la Oficina de Supervisión Interna.",
            "Recibida",
            "Acuse de recibo automático",
            "Gracias. La Oficina de Supervisión Interna ha recibido su denuncia.",
        ],
        "answered": ["Enviado. Su mensaje está cifrado para la oficina."],
        "logged_out": ["Ha cerrado la sesión", "cierre Tor Browser ahora"],
        "not_found": ["Esta página no existe", "Código de error: 404"],
    },
}


def _english_sentences() -> list[str]:
    """Long English fragments that must not show through on a translated page."""
    with (TRANSLATIONS / "messages.pot").open("rb") as handle:
        ids = [text for m in read_po(handle) if m.id for text in (_key(m).split("\x00"))]
    ids += [text for c in DEFAULT_CATEGORIES for text in (c.label, c.description)]
    ids += [text for o in DEFAULT_OFFICES for text in (o.name, o.description)]
    fragments = [part.strip() for text in ids for part in PLACEHOLDER.split(text)]
    return sorted({f for f in fragments if len(f.split()) >= 4})


ENGLISH = _english_sentences()


def _text(page: str) -> str:
    """The page as a reader sees it: entities decoded, no-break spaces as spaces."""
    return html.unescape(page).replace("\u00a0", " ").replace("\u202f", " ")


def _check(page: str, language: str, name: str) -> None:
    assert f'<html lang="{language}">' in page, name
    text = _text(page)
    for phrase in EXPECTED[language][name]:
        assert phrase in text, (name, phrase)
    leaked = [sentence for sentence in ENGLISH if sentence in text]
    assert leaked == [], (name, leaked)


@pytest.fixture
def client(source_app: Flask) -> FlaskClient:
    return source_app.test_client()


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_source_reads_every_page_in_the_chosen_language(
    client: FlaskClient, language: str
) -> None:
    chosen = client.get(f"/language/{language}")
    assert chosen.status_code == 302
    _check(client.get("/").get_data(as_text=True), language, "index")

    codename_page = client.get("/codename").get_data(as_text=True)
    _check(codename_page, language, "codename")
    assert f'class="codename-words" lang="{language}"' in codename_page
    codename, form = new_codename(client)
    assert all(word in _words(language) for word in codename.split())

    _check(form, language, "report")
    refused = post_multipart(client, "/report", {"csrf_token": csrf_token(form), "message": "?"})
    assert refused.status_code == 400
    _check(refused.get_data(as_text=True), language, "refused")

    sent = post_multipart(
        client,
        "/report",
        {"csrf_token": csrf_token(form), "category": "unsure", "message": MESSAGE},
    )
    assert sent.status_code == 302 and sent.location.endswith("/receipt")
    _check(client.get("/receipt").get_data(as_text=True), language, "receipt")

    logged_out = logout(client)
    _check(logged_out.get_data(as_text=True), language, "logged_out")

    # Logging out forgets everything, the language too: choose it again, then sign in.
    client.get(f"/language/{language}")
    _check(client.get("/login").get_data(as_text=True), language, "login")
    assert login(client, codename).status_code == 302
    thread = client.get("/thread").get_data(as_text=True)
    _check(thread, language, "thread")

    answered = post_multipart(
        client, "/thread/answer", {"csrf_token": csrf_token(thread), "message": "Encore un point."}
    )
    assert answered.status_code == 302
    _check(client.get("/thread").get_data(as_text=True), language, "answered")

    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    _check(missing.get_data(as_text=True), language, "not_found")


def test_english_is_the_default_and_each_language_sets_the_html_lang(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert '<html lang="en">' in page and "Report misconduct safely" in page
    for language in ("fr", "es", "en"):
        client.get(f"/language/{language}")
        assert f'<html lang="{language}">' in client.get("/").get_data(as_text=True)


def test_an_unknown_language_is_refused_and_the_current_one_kept(client: FlaskClient) -> None:
    client.get("/language/fr")
    for code in ("de", "FR", "fr-CA", "xx", "fr;", "english"):
        refused = client.get(f"/language/{code}")
        assert refused.status_code == 302, code
        assert refused.location.endswith("/"), code
        page = client.get("/").get_data(as_text=True)
        assert '<html lang="fr">' in page, code
        assert "Signaler un comportement répréhensible" in _text(page), code


def test_a_language_the_instance_does_not_offer_is_refused(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    only = dataclasses.replace(instance.config, source=SourceSettings(languages=("en", "fr")))
    app = create_app(only, instance)
    app.config["TESTING"] = True
    client = app.test_client()
    assert client.get("/language/es").status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert '<html lang="en">' in page
    assert 'hreflang="es"' not in page and 'hreflang="fr"' in page


def test_the_reviewer_side_keeps_the_configured_names() -> None:
    """Officers read `name` and `label`; the translations only change what a source sees."""
    oio = DEFAULT_OFFICES[0]
    assert oio.name == "Office of Internal Oversight"
    assert oio.localized("fr").name == "Bureau du contrôle interne"
    assert oio.localized("en") is oio
    unsure = next(c for c in DEFAULT_CATEGORIES if c.code == "unsure")
    assert unsure.localized("es").label == "No lo sé"
    assert unsure.localized("es").office == unsure.office == "OIO"


# --- translations in the configuration -------------------------------------------------

_CATEGORY = (
    '[[categories]]\ncode = "fraud"\nlabel = "Fraud"\ndescription = "Fraud."\noffice = "OIO"\n'
)
_OFFICE = '[[offices]]\ncode = "OIO"\nname = "Office of Internal Oversight"\n'


def _load(tmp_path: Path, text: str) -> config_module.Config:
    path = tmp_path / "config.toml"
    path.write_text('data_dir = "data"\n' + text, encoding="utf-8")
    return config_module.load(path)


def test_configured_translations_are_what_a_source_of_that_language_sees(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        _OFFICE
        + 'translations.fr.name = "Bureau du contrôle interne"\n'
        + _CATEGORY
        + "[categories.translations.es]\n"
        + 'label = "Fraude"\ndescription = "Fraude."\n',
    )
    office, category = loaded.offices[0], loaded.categories[0]
    assert office.localized("fr").name == "Bureau du contrôle interne"
    assert office.localized("es").name == "Office of Internal Oversight"
    assert category.localized("es").label == "Fraude"
    assert category.localized("fr").label == "Fraud"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            _CATEGORY + 'translations.de.label = "Betrug"\ntranslations.de.description = "B."\n',
            "categories[0].translations.de: unknown language 'de'",
            id="unknown-language",
        ),
        pytest.param(
            _CATEGORY + 'translations.fr.label = " "\ntranslations.fr.description = "F."\n',
            "categories[0].translations.fr.label: must not be empty",
            id="empty-label",
        ),
        pytest.param(
            _CATEGORY + 'translations.fr.label = "Fraude"\n',
            "categories[0].translations.fr.description: missing",
            id="missing-description",
        ),
        pytest.param(
            _CATEGORY + 'translations.fr.label = "F"\ntranslations.fr.descripton = "F."\n',
            "categories[0].translations.fr.descripton: unknown key",
            id="misspelt-key",
        ),
        pytest.param(
            _CATEGORY + 'translations.fr = "Fraude"\n',
            "categories[0].translations.fr: expected a table",
            id="string-for-table",
        ),
        pytest.param(
            _OFFICE + 'translations.es.description = "Oficina"\n',
            "offices[0].translations.es.name: missing",
            id="office-without-name",
        ),
    ],
)
def test_a_bad_translation_is_refused_naming_its_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, text)
    assert str(raised.value).startswith(message), str(raised.value)
