"""The configuration: the shipped example, the packaged defaults, and errors that name the key."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropbox import config
from dropbox.config import (
    DEFAULT_CATEGORIES,
    DEFAULT_OFFICES,
    Category,
    Config,
    ConfigError,
    CryptoSettings,
    LimitSettings,
    MailSettings,
    Office,
    RetentionSettings,
    ReviewerSettings,
    SourceSettings,
    StatisticsSettings,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"

SECTIONS: dict[str, type] = {
    "source": SourceSettings,
    "reviewer": ReviewerSettings,
    "limits": LimitSettings,
    "crypto": CryptoSettings,
    "retention": RetentionSettings,
    "mail": MailSettings,
    "statistics": StatisticsSettings,
}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- The example file -------------------------------------------------------


def test_example_file_loads() -> None:
    assert isinstance(config.load(EXAMPLE), Config)


def test_example_offices_equal_the_built_in_defaults() -> None:
    assert config.load(EXAMPLE).offices == DEFAULT_OFFICES


def test_example_categories_equal_the_built_in_defaults() -> None:
    assert config.load(EXAMPLE).categories == DEFAULT_CATEGORIES


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_example_section_equals_the_dataclass_defaults(section: str) -> None:
    assert getattr(config.load(EXAMPLE), section) == SECTIONS[section]()


def test_example_equals_the_defaults_except_data_dir() -> None:
    example = config.load(EXAMPLE)
    assert example.data_dir == Path("/var/lib/dropbox").resolve()
    assert example.database_url == ""
    assert example == Config(data_dir=example.data_dir)


def test_example_spells_out_every_key_of_every_table() -> None:
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(document) == _field_names(Config)
    for section, cls in SECTIONS.items():
        assert set(document[section]) == _field_names(cls), section
    for office in document["offices"]:
        assert set(office) == _field_names(Office), office["code"]
    for category in document["categories"]:
        assert set(category) == _field_names(Category), category["code"]


def test_every_setting_in_the_example_has_a_comment_above_it() -> None:
    """Top-level keys and keys of the settings tables are each explained right above."""
    undocumented = []
    previous = ""
    in_array_table = False
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_array_table = stripped.startswith("[[")
        elif (
            re.match(r"^[a-z_]+ = ", stripped)
            and not in_array_table
            and not previous.startswith("#")
        ):
            undocumented.append(stripped.split(" ")[0])
        if stripped:
            previous = stripped
    assert undocumented == []


# --- The built-in offices and categories -----------------------------------


def _tables(path: Path) -> dict[str, Any]:
    """The [[offices]] and [[categories]] tables of a TOML file, as parsed."""
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    return {key: document.get(key) for key in ("offices", "categories")}


def test_built_in_offices_and_categories_are_read_from_the_packaged_file() -> None:
    offices, categories = config.load_defaults(config.DEFAULTS_FILE)
    built_in = Config(data_dir=Path("/var/lib/dropbox"))
    assert built_in.offices == DEFAULT_OFFICES == offices
    assert built_in.categories == DEFAULT_CATEGORIES == categories
    assert [o.code for o in offices] == ["OIO", "ECO"]
    assert categories[-1].code == "unsure"
    assert offices[0].localized("es").name == "Oficina de Supervisión Interna"


def test_the_packaged_defaults_file_is_part_of_the_dropbox_package() -> None:
    """It sits beside config.py and pyproject.toml ships it, so an installed copy has it."""
    path = config.DEFAULTS_FILE
    assert path.is_file()
    assert path.parent == ROOT / "dropbox"
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    assert any(fnmatch.fnmatch("dropbox", p) for p in setuptools["packages"]["find"]["include"])
    patterns = setuptools["package-data"].get("*", []) + setuptools["package-data"].get(
        "dropbox", []
    )
    assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns), patterns


def test_the_example_shows_exactly_the_packaged_offices_and_categories() -> None:
    """The example's tables are a copy for operators to edit: a change goes into both files."""
    example, packaged = _tables(EXAMPLE), _tables(config.DEFAULTS_FILE)
    assert example["offices"] == packaged["offices"]
    assert example["categories"] == packaged["categories"]


def test_a_changed_defaults_file_changes_the_built_in_categories(tmp_path: Path) -> None:
    path = tmp_path / "defaults.toml"
    text = config.DEFAULTS_FILE.read_text(encoding="utf-8")
    path.write_text(text.replace('label = "Harassment"', 'label = "Bullying"'), encoding="utf-8")
    _, categories = config.load_defaults(path)
    assert next(c for c in categories if c.code == "harassment").label == "Bullying"


def test_a_missing_defaults_file_says_to_reinstall(tmp_path: Path) -> None:
    missing = tmp_path / "defaults.toml"
    with pytest.raises(ConfigError) as excinfo:
        config.load_defaults(missing)
    message = str(excinfo.value)
    assert message.startswith("the built-in offices and categories are missing")
    assert str(missing) in message and "reinstall" in message


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda text: text.replace('office = "ECO"', 'office = "HR"'), "categories[7].office"),
        (lambda text: text.replace('code = "ECO"', 'code = "OIO"'), "offices[1].code"),
        (lambda text: text + 'colour = "blue"\n', "categories[8].colour"),
        (lambda text: "colour = 1\n" + text, "colour"),
        (lambda text: text.split("\n[[categories]]\n")[0], "categories: missing"),
        (lambda text: text + "[[offices\n", "cannot be read"),
    ],
    ids=[
        "unknown-office",
        "duplicate-office",
        "unknown-key",
        "unknown-top-key",
        "no-categories",
        "not-toml",
    ],
)
def test_a_fault_in_the_defaults_file_names_the_file_and_the_key(
    tmp_path: Path, change: Any, key: str
) -> None:
    path = tmp_path / "defaults.toml"
    path.write_text(change(config.DEFAULTS_FILE.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        config.load_defaults(path)
    message = str(excinfo.value)
    assert message.startswith("the built-in offices and categories")
    assert str(path) in message and key in message


def test_offices_and_categories_in_the_file_replace_the_built_in_ones(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'data_dir = "data"\n' + _office("HR", "Human Resources") + _category("pay", office="HR"),
    )
    loaded = config.load(path)
    assert [(o.code, o.name) for o in loaded.offices] == [("HR", "Human Resources")]
    assert [(c.code, c.office) for c in loaded.categories] == [("pay", "HR")]


def test_a_file_with_only_offices_keeps_the_built_in_categories(tmp_path: Path) -> None:
    path = _write(tmp_path, 'data_dir = "data"\n' + _office("OIO") + _office("ECO"))
    loaded = config.load(path)
    assert [o.name for o in loaded.offices] == ["An office", "An office"]
    assert loaded.categories == DEFAULT_CATEGORIES


# --- Paths ------------------------------------------------------------------


def test_relative_data_dir_is_resolved_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "dropbox"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (folder / "config.toml").write_text('data_dir = "../state/data"\n')
    loaded = config.load(folder / "config.toml")
    assert loaded.data_dir == (tmp_path / "etc" / "state" / "data").resolve()
    assert loaded.data_dir.is_absolute()


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    target = (tmp_path / "somewhere" / "data").resolve()
    loaded = config.load(_write(tmp_path, f'data_dir = "{target}"\n'))
    assert loaded.data_dir == target


def test_db_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    loaded = config.load(_write(tmp_path, 'data_dir = "data"\n'))
    assert loaded.db_url == f"sqlite:///{(tmp_path / 'data').resolve() / 'dropbox.sqlite3'}"


# --- Errors -----------------------------------------------------------------


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as excinfo:
        config.load(missing)
    assert str(excinfo.value).startswith("configuration file not found")
    assert str(missing) in str(excinfo.value)


def test_invalid_toml_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = _write(tmp_path, 'data_dir = "data"\n[source\nport = 8080\n')
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    assert str(excinfo.value).startswith(f"{path} is not valid TOML")


def _category(code: str = "fraud", office: str = "OIO", **extra: str) -> str:
    lines = [
        "[[categories]]",
        f'code = "{code}"',
        'label = "A label"',
        'description = "A description."',
        f'office = "{office}"',
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def _office(code: str, name: str = "An office") -> str:
    return f'[[offices]]\ncode = "{code}"\nname = "{name}"\n'


# (TOML text after `data_dir = "data"`, the key the message must start with, and
# a word of the problem it must state). Each is one way an operator can go wrong.
ERRORS = [
    pytest.param('colour = "blue"\n', "colour", "unknown key", id="unknown-top-level-key"),
    pytest.param("[source]\nprot = 8080\n", "source.prot", "unknown key", id="unknown-nested-key"),
    pytest.param("[sources]\nport = 8080\n", "sources", "unknown key", id="unknown-section"),
    pytest.param(
        _office("OIO") + 'phone = "123"\n',
        "offices[0].phone",
        "unknown key",
        id="unknown-office-key",
    ),
    pytest.param('[source]\nport = "8080"\n', "source.port", "integer", id="string-for-int"),
    pytest.param("[source]\nport = 8080.0\n", "source.port", "integer", id="float-for-int"),
    pytest.param("[reviewer]\nworkers = true\n", "reviewer.workers", "integer", id="bool-for-int"),
    pytest.param(
        "[limits]\nstorage_uri = 6379\n", "limits.storage_uri", "string", id="int-for-str"
    ),
    pytest.param('[source]\nlanguages = "en"\n', "source.languages", "list", id="str-for-list"),
    pytest.param(
        '[source]\nlanguages = ["en", 2]\n', "source.languages[1]", "string", id="int-in-list"
    ),
    pytest.param('source = "public"\n', "source", "table", id="string-for-table"),
    pytest.param(
        _category(retaliation='"yes"'),
        "categories[0].retaliation",
        "true or false",
        id="string-for-bool",
    ),
    pytest.param("[source]\nport = 0\n", "source.port", "between", id="port-zero"),
    pytest.param("[source]\nport = 70000\n", "source.port", "between", id="port-too-high"),
    pytest.param("[reviewer]\nport = 8080\n", "reviewer.port", "differ", id="same-ports"),
    pytest.param("[source]\nworkers = 0\n", "source.workers", "between", id="no-workers"),
    pytest.param(
        '[source]\nonion_address = "example.org"\n',
        "source.onion_address",
        ".onion",
        id="onion-address-not-onion",
    ),
    pytest.param(
        "[source]\nsession_minutes = 1\n", "source.session_minutes", "at least", id="short-session"
    ),
    pytest.param(
        '[source]\nlanguages = ["en", "de"]\n',
        "source.languages[1]",
        "unknown language",
        id="unknown-language",
    ),
    pytest.param("[source]\nlanguages = []\n", "source.languages", "at least", id="no-languages"),
    pytest.param(
        "[reviewer]\nidle_minutes = 60\nabsolute_hours = 0\n",
        "reviewer.absolute_hours",
        "idle_minutes",
        id="absolute-shorter-than-idle",
    ),
    pytest.param(
        '[limits]\nstorage_uri = "postgresql://db/limits"\n',
        "limits.storage_uri",
        "memory://",
        id="storage-uri-not-memory-or-redis",
    ),
    pytest.param(
        "[limits]\nconcurrent_derivations = 0\n",
        "limits.concurrent_derivations",
        "at least",
        id="no-derivations",
    ),
    pytest.param(
        "[crypto]\nkdf_memory_kib = 7\n",
        "crypto.kdf_memory_kib",
        "memory",
        id="kdf-memory-below-libsodium-minimum",
    ),
    pytest.param(
        "[crypto]\nkdf_iterations = 0\n", "crypto.kdf_iterations", "iteration", id="kdf-no-passes"
    ),
    pytest.param(
        "[retention]\nclosed_report_days = 0\n",
        "retention.closed_report_days",
        "at least",
        id="no-retention",
    ),
    pytest.param(
        "[statistics]\nsuppress_below = 1\n",
        "statistics.suppress_below",
        "at least 2",
        id="suppression-threshold-below-two",
    ),
    pytest.param(
        _category(office="HR"), "categories[0].office", "unknown office", id="unknown-office"
    ),
    pytest.param(
        _office("OIO") + _office("OIO") + _office("ECO"),
        "offices[1].code",
        "twice",
        id="duplicate-office-code",
    ),
    pytest.param(
        _category("fraud") + _category("fraud"),
        "categories[1].code",
        "twice",
        id="duplicate-category-code",
    ),
    pytest.param(
        _office("OIO\\n") + _office("ECO"), "offices[0].code", "letters", id="office-code-newline"
    ),
    pytest.param(
        _category("fraud and abuse"), "categories[0].code", "letters", id="category-code-spaces"
    ),
    pytest.param("offices = []\n", "offices", "at least one", id="no-offices"),
    pytest.param(
        '[[categories]]\ncode = "fraud"\ndescription = "Fraud."\noffice = "OIO"\n',
        "categories[0].label",
        "missing",
        id="missing-category-label",
    ),
    pytest.param('[[offices]]\ncode = "OIO"\n', "offices[0].name", "missing", id="missing-name"),
    # Plain HTTP only on loopback (behind an onion service); any other address needs TLS.
    pytest.param(
        '[reviewer]\nhost = "10.0.0.5"\n', "reviewer.host", "tls-proxy", id="reviewer-on-network"
    ),
    pytest.param(
        '[reviewer]\nhost = "reviewer.internal"\n',
        "reviewer.host",
        "not a loopback address",
        id="reviewer-on-a-host-name",
    ),
    pytest.param(
        '[reviewer]\nhost = "0.0.0.0"\n', "reviewer.host", "loopback", id="reviewer-on-all"
    ),
    pytest.param('[source]\nhost = "::"\n', "source.host", "loopback", id="source-on-all-ipv6"),
    pytest.param(
        '[source]\nhost = "192.0.2.7"\n', "source.host", "tls-proxy", id="source-on-network"
    ),
    pytest.param(
        '[reviewer]\ntransport = "http"\n', "reviewer.transport", "tls-proxy", id="transport-http"
    ),
    pytest.param(
        '[reviewer]\nhost = "10.0.0.5"\ntransport = "tls-proxy"\n',
        "reviewer.trusted_proxies",
        "TLS proxy",
        id="tls-proxy-without-proxy",
    ),
    pytest.param(
        '[reviewer]\ntransport = "tls-proxy"\ntrusted_proxies = ["proxy.internal"]\n',
        "reviewer.trusted_proxies[0]",
        "not an IP address",
        id="proxy-by-name",
    ),
    pytest.param(
        '[source]\ntransport = "tls-proxy"\ntrusted_proxies = ["10.0.0.5/24"]\n',
        "source.trusted_proxies[0]",
        "host bits",
        id="proxy-network-with-host-bits",
    ),
    pytest.param(
        '[reviewer]\ntransport = "tls-proxy"\ntrusted_proxies = ["10.0.0.2", "0.0.0.0/0"]\n',
        "reviewer.trusted_proxies[1]",
        "every address",
        id="proxy-trusting-everyone",
    ),
    pytest.param(
        '[reviewer]\ntransport = "tls-proxy"\ntrusted_proxies = ["::/0"]\n',
        "reviewer.trusted_proxies[0]",
        "every address",
        id="proxy-trusting-every-ipv6-address",
    ),
    pytest.param(
        '[reviewer]\ntrusted_proxies = ["127.0.0.1"]\n',
        "reviewer.trusted_proxies",
        "only used with",
        id="proxies-without-tls-proxy",
    ),
    pytest.param(
        '[reviewer]\nproxy_headers = ["X-Forwarded-Proto", "X-Forwarded-For"]\n',
        "reviewer.proxy_headers[1]",
        "client's address",
        id="trusting-x-forwarded-for",
    ),
    pytest.param(
        '[source]\nproxy_headers = ["X-Real-IP"]\n',
        "source.proxy_headers[0]",
        "never trusted",
        id="trusting-x-real-ip",
    ),
    pytest.param(
        '[source]\nproxy_headers = ["X-Forwarded-Host"]\n',
        "source.proxy_headers[0]",
        "unknown header",
        id="unknown-proxy-header",
    ),
    pytest.param(
        '[reviewer]\ntransport = "tls-proxy"\ntrusted_proxies = ["10.0.0.2"]\nproxy_headers = []\n',
        "reviewer.proxy_headers",
        "X-Forwarded-Proto",
        id="tls-proxy-without-its-header",
    ),
    pytest.param("[mail]\nport = 0\n", "mail.port", "between 1 and 65535", id="mail-port"),
    pytest.param(
        '[mail]\nsecurity = "ssl"\n', "mail.security", "'starttls'", id="mail-unknown-security"
    ),
    pytest.param(
        '[mail]\nhost = "smtp.example.org"\nsecurity = "none"\nfrom_address = "d@example.org"\n',
        "mail.security",
        "only a relay on this host",
        id="mail-plain-smtp-across-a-network",
    ),
    pytest.param(
        '[mail]\nhost = "smtp.example.org"\n',
        "mail.from_address",
        "must be a mail address",
        id="mail-host-without-a-from-address",
    ),
    pytest.param(
        '[mail]\nfrom_address = "dropbox at example.org"\n',
        "mail.from_address",
        "is not a mail address",
        id="mail-from-address-malformed",
    ),
    pytest.param(
        '[mail]\nusername = "dropbox"\n', "mail.password", "both", id="mail-user-without-password"
    ),
    pytest.param(
        '[mail]\npassword = "secret"\n', "mail.username", "both", id="mail-password-without-user"
    ),
    pytest.param(
        '[mail]\nhost = "smtp://smtp.example.org"\n',
        "mail.host",
        "not a host name",
        id="mail-host-as-a-url",
    ),
    pytest.param(
        '[mail]\nreviewer_link = "127.0.0.1:8081"\n',
        "mail.reviewer_link",
        "http://",
        id="mail-link-without-scheme",
    ),
    pytest.param("[mail]\ndigest_hour = 24\n", "mail.digest_hour", "between 0 and 23", id="hour"),
    pytest.param(
        "[mail]\ntimeout_seconds = 0\n", "mail.timeout_seconds", "between 1", id="mail-timeout"
    ),
    pytest.param('[mail]\nport = "587"\n', "mail.port", "integer", id="mail-port-as-text"),
]


def test_the_mail_password_is_never_in_the_configurations_repr(tmp_path: Path) -> None:
    text = (
        'data_dir = "data"\n[mail]\nhost = "smtp.example.org"\nfrom_address = "d@example.org"\n'
        'username = "dropbox"\npassword = "correct horse battery staple"\n'
    )
    loaded = config.load(_write(tmp_path, text))
    assert loaded.mail.password == "correct horse battery staple"
    assert "correct horse" not in repr(loaded)
    assert "correct horse" not in repr(loaded.mail)


def _ca_file(tmp_path: Path, which: str) -> str:
    """A mail.ca_file value of the kind the test names."""
    if which == "relative":
        return "mail-ca.pem"
    if which == "missing":
        return str(tmp_path / "absent.pem")
    if which == "directory":
        return str(tmp_path)
    not_pem = tmp_path / "mail-ca.pem"
    not_pem.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI not a certificate\n")
    return str(not_pem)


@pytest.mark.parametrize(
    ("which", "security", "problem"),
    [
        ("relative", "starttls", "must be an absolute path"),
        ("missing", "starttls", "does not exist"),
        ("directory", "tls", "is a directory, not a file"),
        ("not-pem", "tls", "holds no certificate in PEM form"),
        ("not-pem", "none", 'only used with mail.security "starttls" or "tls"'),
    ],
)
def test_a_mail_ca_file_that_cannot_be_used_is_refused(
    tmp_path: Path, which: str, security: str, problem: str
) -> None:
    ca_file = _ca_file(tmp_path, which)
    text = f'data_dir = "data"\n[mail]\nsecurity = "{security}"\nca_file = "{ca_file}"\n'
    with pytest.raises(ConfigError) as excinfo:
        config.load(_write(tmp_path, text))
    message = str(excinfo.value)
    assert message.startswith("mail.ca_file: "), message
    assert problem in message


def test_a_mail_ca_file_of_pem_certificates_is_taken(tmp_path: Path) -> None:
    # A certificate authority's certificate, as `openssl req -x509` writes it.
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=Mail CA"],
        cwd=tmp_path, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    text = f'data_dir = "data"\n[mail]\nca_file = "{tmp_path / "ca.pem"}"\n'
    assert config.load(_write(tmp_path, text)).mail.ca_file == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(("text", "key", "problem"), ERRORS)
def test_bad_setting_is_refused_naming_its_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = _write(tmp_path, 'data_dir = "data"\n' + text)
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    message = str(excinfo.value)
    assert message.startswith(f"{key}: "), message
    assert problem in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("[source]\nport = 8080\n", "missing", id="missing"),
        pytest.param('data_dir = ""\n', "path", id="empty"),
        pytest.param("data_dir = 5\n", "path", id="integer"),
        pytest.param('data_dir = "da\\u0000ta"\n', "path", id="nul-byte"),
    ],
)
def test_bad_data_dir_is_refused_naming_data_dir(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        config.load(_write(tmp_path, text))
    message = str(excinfo.value)
    assert message.startswith("data_dir: "), message
    assert problem in message


def test_unknown_nested_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, 'data_dir = "data"\n[source]\nprot = 8080\n')
    with pytest.raises(ConfigError, match=r"^source\.prot: unknown key$"):
        config.load(path)


# --- Any document: a Config or a ConfigError, nothing else ---------------------

_ALL_KEYS = sorted(
    set().union(*(_field_names(cls) for cls in (Config, Office, Category, *SECTIONS.values())))
)
_keys = st.one_of(st.sampled_from(_ALL_KEYS), st.text(max_size=8))
_scalars = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "OIO", "ECO", "fraud", "en", "de", "memory://", "redis://x", "x.onion"]),
    st.integers(),
    st.integers(min_value=-2, max_value=70_000),
    st.booleans(),
    st.floats(),
    st.datetimes(),
    st.dates(),
    st.times(),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=5)
    ),
    max_leaves=20,
)


def _table(fields: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A table with mostly the right keys, so that the checks after parsing are reached."""
    return st.dictionaries(
        st.one_of(st.sampled_from(sorted(fields)), _keys), _values | _scalars, max_size=6
    )


_nearly_valid = st.fixed_dictionaries(
    {"data_dir": st.one_of(st.just("data"), _values)},
    optional={
        "database_url": _values,
        **{name: _table(_field_names(cls)) for name, cls in SECTIONS.items()},
        "offices": st.lists(_table(_field_names(Office)), max_size=3),
        "categories": st.lists(_table(_field_names(Category)), max_size=3),
    },
)
_documents = st.one_of(st.dictionaries(_keys, _values, max_size=8), _nearly_valid)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_any_document_gives_a_config_or_a_config_error(document: dict[str, Any]) -> None:
    try:
        result = config.from_dict(document)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(result, Config)
        assert isinstance(result.data_dir, Path)
        assert result.source.port != result.reviewer.port


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[source]\nlanguages = ["en", "en"]\n', "source.languages[1]"),
        ("[crypto]\nkdf_iterations = 1000000\n", "crypto.kdf_iterations"),
        ("[crypto]\nkdf_memory_kib = 99999999\n", "crypto.kdf_memory_kib"),
    ],
)
def test_repeated_language_and_runaway_kdf_cost_are_named(
    tmp_path: Path, body: str, key: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'data_dir = "data"\n{body}')
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    assert str(raised.value).startswith(f"{key}: ")


# --- Any file: a Config or a ConfigError, nothing else -------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(b'data_dir = "\xff"\n', "is not UTF-8", id="not-utf8"),
        pytest.param(b"\xef\xbb\xbf\xfe\xff", "", id="bom-then-junk"),
        pytest.param(b"a = " + b"[" * 100_000 + b"]" * 100_000, "too deeply", id="deep-arrays"),
        pytest.param(
            b"a = " + b"{b = " * 5_000 + b"1" + b"}" * 5_000, "too deeply", id="deep-tables"
        ),
    ],
)
def test_a_file_that_is_not_toml_text_is_a_config_error(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    assert str(raised.value).startswith(str(path)) and problem in str(raised.value)


# TOML-ish text: lines made of the real keys and tables, values of every kind, and junk.
_toml_keys = st.one_of(st.sampled_from(_ALL_KEYS), st.text(max_size=6))
_toml_values = st.one_of(
    st.sampled_from(
        ['"data"', '""', "8080", "0", "-1", "1e400", "inf", "nan", "true", '["en", "fr"]', "[]"]
    ),
    st.sampled_from(['"\\u0000"', "'x'", '"""a\nb"""', "1979-05-27T07:32:00Z", "{ a = 1 }"]),
    st.text(max_size=20),
)
_toml_lines = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", _toml_keys, _toml_values),
    st.sampled_from([f"[{name}]" for name in SECTIONS] + ["[[offices]]", "[[categories]]"]),
    st.text(max_size=30),
)
_toml_files = st.one_of(
    st.lists(_toml_lines, max_size=12).map(lambda lines: "\n".join(lines).encode("utf-8")),
    st.lists(_toml_lines, max_size=8).map(lambda lines: 'data_dir = "d"\n' + "\n".join(lines)),
    st.binary(max_size=200),
).map(lambda content: content if isinstance(content, bytes) else content.encode("utf-8"))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(content=_toml_files)
def test_any_file_gives_a_config_or_a_config_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_bytes(content)
        try:
            loaded = config.load(path)
        except ConfigError as exc:
            assert str(exc)
        else:
            assert loaded.data_dir.is_absolute()
