"""Instance configuration: a TOML file loaded into frozen, typed dataclasses.

Anything wrong in the file (missing file, unknown key, wrong type, bad value)
stops start-up with one `ConfigError` whose message names the key. The offices
and categories used when the file lists none come from the packaged defaults.toml.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import re
import ssl
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crypto.codenames import LANGUAGES
from crypto.kdf import PRODUCTION_COST, KdfCost
from dropbox.suppression import MIN_THRESHOLD as MIN_SUPPRESS_BELOW


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the fault."""


# A key fingerprint (`crypto.keys.fingerprint`) without its spaces: 20 bytes in base32,
# after the word XWING for an X-Wing key.
_FINGERPRINT = re.compile(r"^(XWING)?([A-Z2-7]{32})$")
# Put before an X-Wing key's 20 bytes, so that they never equal an X25519 key's.
_HYBRID_DIGEST_MARK = b"\x02"


def fingerprint_digest(text: str) -> bytes | None:
    """What a fingerprint's text stands for, or None if it is not one.

    An X25519 key's is its 20 bytes; an X-Wing key's (text starting with
    XWING) is a marker byte and its 20 bytes, so the fingerprint of one kind
    never matches a key of the other. Letter case and spacing are forgiven:
    people copy fingerprints by hand.
    """
    found = _FINGERPRINT.fullmatch("".join(text.split()).upper())
    if found is None:
        return None
    digest = base64.b32decode(found.group(2))
    return _HYBRID_DIGEST_MARK + digest if found.group(1) else digest


@dataclass(frozen=True)
class OfficeText:
    """An office's name and description in one language."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class CategoryText:
    """A category's label and description in one language."""

    label: str
    description: str


@dataclass(frozen=True)
class Office:
    """An intake office that receives reports and holds its own key pair."""

    code: str
    name: str
    description: str = ""
    # Language code -> the texts in that language; other languages get name and description.
    translations: dict[str, OfficeText] = field(default_factory=dict, hash=False)
    # The fingerprint of the office's public key as `dropbox office create` printed it:
    # nothing is sealed to a key in the database that does not match it. "" pins nothing.
    fingerprint: str = ""

    def localized(self, language: str) -> Office:
        """This office as a source reading `language` sees it (a missing description is kept)."""
        text = self.translations.get(language)
        if text is None:
            return self
        return dataclasses.replace(
            self, name=text.name, description=text.description or self.description
        )


@dataclass(frozen=True)
class Category:
    """A kind of misconduct a source can choose, and the office it goes to."""

    code: str
    label: str
    description: str
    office: str
    retaliation: bool = False
    # Language code -> the texts in that language; other languages get label and description.
    translations: dict[str, CategoryText] = field(default_factory=dict, hash=False)

    def localized(self, language: str) -> Category:
        """This category as a source reading `language` sees it."""
        text = self.translations.get(language)
        if text is None:
            return self
        return dataclasses.replace(self, label=text.label, description=text.description)


# How an interface is reached. "onion": through an onion service on this host, so
# plain HTTP on a loopback address (Tor encrypts the way). "tls-proxy": behind a
# reverse proxy that terminates TLS; only requests from the proxy that say https count.
TRANSPORTS = ("onion", "tls-proxy")
# The one header a TLS proxy may set that is believed: whether the client used https.
PROTO_HEADER = "X-Forwarded-Proto"
# Headers that carry a client's address: never trusted, never read (nothing uses an address).
ADDRESS_HEADERS = frozenset(
    {"x-forwarded-for", "x-real-ip", "forwarded", "true-client-ip", "cf-connecting-ip"}
)


@dataclass(frozen=True)
class SourceSettings:
    """The source interface (public onion service)."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    onion_address: str = ""
    session_minutes: int = 120
    max_upload_mib: int = 500
    min_message_chars: int = 20
    languages: tuple[str, ...] = ("en", "fr", "es")
    transport: str = "onion"
    trusted_proxies: tuple[str, ...] = ()
    proxy_headers: tuple[str, ...] = (PROTO_HEADER,)


@dataclass(frozen=True)
class ReviewerSettings:
    """The reviewer interface (officers only)."""

    host: str = "127.0.0.1"
    port: int = 8081
    workers: int = 2
    idle_minutes: int = 30
    absolute_hours: int = 8
    onion_address: str = ""
    transport: str = "onion"
    trusted_proxies: tuple[str, ...] = ()
    proxy_headers: tuple[str, ...] = (PROTO_HEADER,)


@dataclass(frozen=True)
class LimitSettings:
    """Abuse resistance: where rate-limit counters live and how much KDF work may run at once."""

    storage_uri: str = "memory://"
    concurrent_derivations: int = 4
    codename_attempts_per_minute: int = 10
    submissions_per_hour: int = 20


@dataclass(frozen=True)
class CryptoSettings:
    """Argon2id cost for new derivations (officer passphrases, and codenames at `init`)."""

    kdf_iterations: int = PRODUCTION_COST.iterations
    kdf_memory_kib: int = PRODUCTION_COST.memory_bytes // 1024

    @property
    def kdf_cost(self) -> KdfCost:
        """The settings as a KdfCost."""
        return KdfCost(self.kdf_iterations, self.kdf_memory_kib * 1024)


@dataclass(frozen=True)
class RetentionSettings:
    """How long closed reports are kept before they are crypto-shredded."""

    closed_report_days: int = 730


@dataclass(frozen=True)
class StatisticsSettings:
    """The statistics page: how small a count must be to be hidden."""

    # A count below this is shown as "fewer than N"; at least 2 (dropbox/suppression.py).
    suppress_below: int = 3


# How the case server's `dropbox notify` reaches the mail server (RFC 8314: implicit TLS on
# 465, STARTTLS on 587); "none" is plain SMTP, allowed only to a loopback relay.
MAIL_SECURITY = ("starttls", "tls", "none")
_MAIL_ADDRESS = re.compile(
    r"^[^@\s<>\"(),;:\\\[\]]+@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
MAX_MAIL_ADDRESS_CHARS = 254


def is_mail_address(text: str) -> bool:
    """True if `text` is a plain mail address (local@domain): no name, no spaces, no line breaks."""
    return len(text) <= MAX_MAIL_ADDRESS_CHARS and bool(_MAIL_ADDRESS.fullmatch(text))


@dataclass(frozen=True)
class MailSettings:
    """The mail server that carries officers' notifications (`dropbox notify --once`)."""

    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    # Never printed: kept out of the repr, and out of every message and log line.
    password: str = field(default="", repr=False)
    from_address: str = ""
    reviewer_link: str = "http://127.0.0.1:8081/"
    digest_hour: int = 7
    timeout_seconds: int = 30
    # A PEM file of the certificate authorities to trust for the mail server instead of
    # the system's (a relay with a private CA); empty: the system's trust store.
    ca_file: str = ""

    @property
    def enabled(self) -> bool:
        """True when a mail server is configured."""
        return bool(self.host)


# The offices and categories an instance has when its configuration lists none. They
# are written once, in this packaged file, in the form of a configuration file's
# [[offices]] and [[categories]] tables; they are read at the end of this module,
# with the checks an operator's tables get.
DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")
DEFAULT_OFFICES: tuple[Office, ...]
DEFAULT_CATEGORIES: tuple[Category, ...]


@dataclass(frozen=True)
class Config:
    """Everything an instance needs to know, fixed at start-up."""

    data_dir: Path
    database_url: str = ""
    source: SourceSettings = field(default_factory=SourceSettings)
    reviewer: ReviewerSettings = field(default_factory=ReviewerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    crypto: CryptoSettings = field(default_factory=CryptoSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)
    offices: tuple[Office, ...] = field(default_factory=lambda: DEFAULT_OFFICES)
    categories: tuple[Category, ...] = field(default_factory=lambda: DEFAULT_CATEGORIES)

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: the configured one, or SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'dropbox.sqlite3'}"

    def office(self, code: str) -> Office:
        """The office with this code."""
        for office in self.offices:
            if office.code == code:
                return office
        raise KeyError(code)

    def category(self, code: str) -> Category:
        """The category with this code."""
        for category in self.categories:
            if category.code == code:
                return category
        raise KeyError(code)


def load(path: Path | str) -> Config:
    """Read and check a configuration file; raise ConfigError naming the bad key."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start} is not)") from None
    except RecursionError:  # tomllib reads nested arrays and inline tables recursively
        raise ConfigError(f"{path} nests arrays or tables too deeply") from None
    config = from_dict(document)
    # A relative data directory is relative to the configuration file. Resolved
    # only after checking, so that an empty value is refused, not read as ".".
    try:
        data_dir = (path.parent / config.data_dir).resolve()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"data_dir: cannot resolve {str(config.data_dir)!r}: {exc}") from None
    return dataclasses.replace(config, data_dir=data_dir)


def from_dict(document: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, checking every key and value."""
    config: Config = _build(Config, document, "")
    _check(config)
    return config


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    if origin is dict or dataclasses.is_dataclass(kind):
        return "a table"
    return {str: "a string", int: "an integer", bool: "true or false", Path: "a path"}.get(
        kind, str(kind)
    )


def _convert(kind: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(kind)}, got {value!r}")
        return tuple(_convert(item_kind, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        item_kind = typing.get_args(kind)[1]
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return {name: _convert(item_kind, v, f"{key}.{name}") for name, v in value.items()}
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _build(kind, value, key)
    if kind is Path:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if kind in (str, bool) and not isinstance(value, kind):
        raise ConfigError(f"{key}: expected {_type_name(kind)}, got {value!r}")
    return value


def _build(cls: Any, table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigError(f"{full}: unknown key")
        kind = hints[key]
        if isinstance(kind, types.UnionType):
            kind = typing.get_args(kind)[0]
        values[key] = _convert(kind, value, full)
    for name, spec in fields.items():
        if (
            name not in values
            and spec.default is dataclasses.MISSING
            and spec.default_factory is dataclasses.MISSING
        ):
            full = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{full}: missing (required)")
    return cls(**values)


_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def _require(condition: bool, key: str, problem: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {problem}")


def _check(config: Config) -> None:
    for name, settings in (("source", config.source), ("reviewer", config.reviewer)):
        _require(1 <= settings.port <= 65535, f"{name}.port", "must be between 1 and 65535")
        _require(1 <= settings.workers <= 64, f"{name}.workers", "must be between 1 and 64")
        _require(bool(settings.host), f"{name}.host", "must not be empty")
        _require(
            not settings.onion_address or settings.onion_address.endswith(".onion"),
            f"{name}.onion_address",
            "must end in .onion (or be empty)",
        )
        check_transport(name, settings)
    _require(
        config.source.port != config.reviewer.port, "reviewer.port", "must differ from source.port"
    )
    _require(config.source.session_minutes >= 5, "source.session_minutes", "must be at least 5")
    _require(config.source.max_upload_mib >= 1, "source.max_upload_mib", "must be at least 1")
    _require(
        config.source.min_message_chars >= 0, "source.min_message_chars", "must not be negative"
    )
    _require(bool(config.source.languages), "source.languages", "must name at least one language")
    for i, language in enumerate(config.source.languages):
        _require(
            language not in config.source.languages[:i],
            f"source.languages[{i}]",
            f"{language!r} appears twice",
        )
        _require(
            language in LANGUAGES,
            f"source.languages[{i}]",
            f"unknown language {language!r} (choose from {', '.join(LANGUAGES)})",
        )
    _require(config.reviewer.idle_minutes >= 1, "reviewer.idle_minutes", "must be at least 1")
    _require(
        config.reviewer.absolute_hours * 60 >= config.reviewer.idle_minutes,
        "reviewer.absolute_hours",
        "must be at least as long as reviewer.idle_minutes",
    )
    _require(
        config.limits.storage_uri.startswith(("memory://", "redis://", "rediss://")),
        "limits.storage_uri",
        "must start with memory:// or redis://",
    )
    _require(
        config.limits.concurrent_derivations >= 1,
        "limits.concurrent_derivations",
        "must be at least 1",
    )
    _require(
        config.limits.codename_attempts_per_minute >= 1,
        "limits.codename_attempts_per_minute",
        "must be at least 1",
    )
    _require(
        config.limits.submissions_per_hour >= 1, "limits.submissions_per_hour", "must be at least 1"
    )
    # Check each Argon2id setting on its own, so that the error names its key.
    crypto = config.crypto
    for key, iterations, memory_bytes in (
        ("crypto.kdf_iterations", crypto.kdf_iterations, PRODUCTION_COST.memory_bytes),
        ("crypto.kdf_memory_kib", PRODUCTION_COST.iterations, crypto.kdf_memory_kib * 1024),
    ):
        try:
            KdfCost(iterations, memory_bytes)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    _require(
        config.retention.closed_report_days >= 1,
        "retention.closed_report_days",
        "must be at least 1",
    )
    _require(
        config.statistics.suppress_below >= MIN_SUPPRESS_BELOW,
        "statistics.suppress_below",
        f"must be at least {MIN_SUPPRESS_BELOW}: a lower value would hide no count at all",
    )

    _check_mail(config.mail)
    _check_offices_and_categories(config.offices, config.categories)


def _check_mail(mail: MailSettings) -> None:
    """The mail server's settings: checked even while host is empty, so a slip shows at once."""
    _require(1 <= mail.port <= 65535, "mail.port", "must be between 1 and 65535")
    _require(
        mail.security in MAIL_SECURITY,
        "mail.security",
        f"must be {', '.join(repr(s) for s in MAIL_SECURITY)}, not {mail.security!r}",
    )
    _require(
        not any(c in mail.host for c in " /\r\n\t@"),
        "mail.host",
        f"{mail.host!r} is not a host name or address (write only the name, e.g. smtp.example.org)",
    )
    _require(
        mail.security != "none" or not mail.host or is_loopback(mail.host),
        "mail.security",
        f'"none" sends the password and the mails unencrypted: only a relay on this host '
        f'(127.0.0.1) may use it; for {mail.host!r} use "starttls" or "tls"',
    )
    _require(
        bool(mail.username) == bool(mail.password),
        "mail.password" if mail.username else "mail.username",
        "give both mail.username and mail.password, or neither",
    )
    _require(
        not any(c in mail.username + mail.password for c in "\r\n\x00"),
        "mail.username",
        "the username and password must be on one line",
    )
    _require(
        not mail.host or is_mail_address(mail.from_address),
        "mail.from_address",
        f"must be a mail address such as dropbox@example.org when mail.host is set, "
        f"not {mail.from_address!r}",
    )
    _require(
        not mail.from_address or is_mail_address(mail.from_address),
        "mail.from_address",
        f"{mail.from_address!r} is not a mail address such as dropbox@example.org",
    )
    _require(
        mail.reviewer_link.startswith(("http://", "https://"))
        and not any(c.isspace() for c in mail.reviewer_link),
        "mail.reviewer_link",
        "must be the reviewer app's address, starting with http:// or https://",
    )
    _require(0 <= mail.digest_hour <= 23, "mail.digest_hour", "must be between 0 and 23")
    _require(1 <= mail.timeout_seconds <= 600, "mail.timeout_seconds", "must be between 1 and 600")
    if mail.ca_file:
        _check_ca_file(mail)


def _check_ca_file(mail: MailSettings) -> None:
    """mail.ca_file names a readable PEM file of certificates, used by a TLS connection."""
    path = Path(mail.ca_file)
    _require(
        mail.security != "none",
        "mail.ca_file",
        'is only used with mail.security "starttls" or "tls": remove it, or change mail.security',
    )
    _require(
        "\x00" not in mail.ca_file and path.is_absolute(),
        "mail.ca_file",
        f"{mail.ca_file!r} must be an absolute path, e.g. /etc/dropbox/mail-ca.pem",
    )
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ConfigError(f"mail.ca_file: {mail.ca_file!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"mail.ca_file: {mail.ca_file!r} is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(
            f"mail.ca_file: {mail.ca_file!r} cannot be read by this account "
            "(make it readable to the account that runs dropbox)"
        ) from None
    except ssl.SSLError:
        raise ConfigError(
            f"mail.ca_file: {mail.ca_file!r} holds no certificate in PEM form "
            '("-----BEGIN CERTIFICATE-----")'
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"mail.ca_file: cannot read {mail.ca_file!r} ({exc.strerror or type(exc).__name__})"
        ) from None


def _check_offices_and_categories(
    offices: tuple[Office, ...], categories: tuple[Category, ...]
) -> None:
    """Codes are well formed and unique, names are given, each category's office exists."""
    _require(bool(offices), "offices", "at least one office is needed")
    codes: set[str] = set()
    for i, office in enumerate(offices):
        _require(
            bool(_CODE.fullmatch(office.code)), f"offices[{i}].code", "use letters, digits, - or _"
        )
        _require(office.code not in codes, f"offices[{i}].code", f"{office.code!r} appears twice")
        _require(bool(office.name.strip()), f"offices[{i}].name", "must not be empty")
        _check_translations(f"offices[{i}]", office.translations, "name")
        _require(
            not office.fingerprint or fingerprint_digest(office.fingerprint) is not None,
            f"offices[{i}].fingerprint",
            "expected the fingerprint 'dropbox office create' printed"
            ' (8 groups of 4 letters and digits, e.g. "ABCD EFGH ...")',
        )
        codes.add(office.code)
    _require(bool(categories), "categories", "at least one category is needed")
    seen: set[str] = set()
    for i, category in enumerate(categories):
        key = f"categories[{i}]"
        _require(bool(_CODE.fullmatch(category.code)), f"{key}.code", "use letters, digits, - or _")
        _require(category.code not in seen, f"{key}.code", f"{category.code!r} appears twice")
        _require(bool(category.label.strip()), f"{key}.label", "must not be empty")
        _require(
            category.office in codes,
            f"{key}.office",
            f"unknown office {category.office!r} (offices: {', '.join(sorted(codes))})",
        )
        _check_translations(key, category.translations, "label")
        seen.add(category.code)


def is_loopback(host: str) -> bool:
    """True if `host` is a loopback address (or "localhost"): reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def check_transport(name: str, settings: SourceSettings | ReviewerSettings) -> None:
    """An interface is reached only through an onion service or TLS: never plain HTTP on a network.

    Raises ConfigError naming the key (`name` is "source" or "reviewer").
    """
    _require(
        settings.transport in TRANSPORTS,
        f"{name}.transport",
        f"must be {' or '.join(repr(t) for t in TRANSPORTS)}, not {settings.transport!r}",
    )
    for i, header in enumerate(settings.proxy_headers):
        _require(
            header.lower() not in ADDRESS_HEADERS,
            f"{name}.proxy_headers[{i}]",
            f"{header!r} carries a client's address, which is never trusted or used",
        )
        _require(
            header.lower() == PROTO_HEADER.lower(),
            f"{name}.proxy_headers[{i}]",
            f"unknown header {header!r} (only {PROTO_HEADER} is read)",
        )
    if settings.transport == "onion":
        # Served over plain HTTP: only tor on this host may reach it, or sessions
        # would cross a network in clear text.
        _require(
            is_loopback(settings.host),
            f"{name}.host",
            f"{settings.host!r} is not a loopback address: behind an onion service the "
            f"interface listens on 127.0.0.1 or ::1; on any other address it must be "
            f'behind a TLS proxy ({name}.transport = "tls-proxy")',
        )
        _require(
            not settings.trusted_proxies,
            f"{name}.trusted_proxies",
            f'only used with {name}.transport = "tls-proxy"; leave it empty',
        )
        return
    _require(
        bool(settings.trusted_proxies),
        f"{name}.trusted_proxies",
        f'name the TLS proxy\'s address (needed with {name}.transport = "tls-proxy")',
    )
    _require(
        any(h.lower() == PROTO_HEADER.lower() for h in settings.proxy_headers),
        f"{name}.proxy_headers",
        f'must name {PROTO_HEADER} with {name}.transport = "tls-proxy"',
    )
    for i, entry in enumerate(settings.trusted_proxies):
        key = f"{name}.trusted_proxies[{i}]"
        try:
            network = ipaddress.ip_network(entry)
        except ValueError as exc:
            raise ConfigError(
                f"{key}: not an IP address or network such as 10.0.0.2 or 10.0.0.0/24 ({exc})"
            ) from None
        _require(network.prefixlen > 0, key, f"{entry!r} would trust every address")


def _check_translations(key: str, translations: dict[str, Any], required: str) -> None:
    """Each translation is for a language the source interface knows, and names the thing."""
    for language, text in translations.items():
        _require(
            language in LANGUAGES,
            f"{key}.translations.{language}",
            f"unknown language {language!r} (choose from {', '.join(LANGUAGES)})",
        )
        _require(
            bool(getattr(text, required).strip()),
            f"{key}.translations.{language}.{required}",
            "must not be empty",
        )


def load_defaults(path: Path = DEFAULTS_FILE) -> tuple[tuple[Office, ...], tuple[Category, ...]]:
    """The default offices and categories: read from the packaged file and checked.

    A fault here is in the installed package, not in the operator's file, so the
    message says which file and that reinstalling mends it.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"the built-in offices and categories are missing ({path} not found): reinstall dropbox"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"the built-in offices and categories cannot be read from {path} ({exc}): "
            "reinstall dropbox"
        ) from None
    try:
        for key in document:
            _require(key in ("offices", "categories"), key, "unknown key")
        for key in ("offices", "categories"):
            _require(key in document, key, "missing (required)")
        offices = _convert(tuple[Office, ...], document["offices"], "offices")
        categories = _convert(tuple[Category, ...], document["categories"], "categories")
        _check_offices_and_categories(offices, categories)
    except ConfigError as exc:
        raise ConfigError(f"the built-in offices and categories in {path}: {exc}") from None
    return offices, categories


# Read last: reading them uses the checks defined above.
DEFAULT_OFFICES, DEFAULT_CATEGORIES = load_defaults()
