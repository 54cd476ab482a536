"""An opened instance: configuration, database, store, and the secrets kept outside the database.

The instance salt (for codename derivation) and the codename KDF cost are
fixed at `init` and live in `instance.json` in the data directory, not in the
database: a database dump alone is not enough to test codename guesses, and
changing the configured cost later cannot lock sources out of their threads.
The audit log's keys (dropbox/audit.py) live there too, for the same reason:
whoever can change the database must not be able to recompute the chain. So
does the key that encrypts officers' TOTP secrets (dropbox/officers.py): a
database dump alone does not reveal them.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from crypto.kdf import SALT_BYTES, KdfCost
from dropbox import audit
from dropbox.config import Config
from dropbox.database import create_schema, make_engine, make_reader, make_sessionmaker
from dropbox.models import AuditHead
from dropbox.store import Store, write_private_file

SECRETS_FILE = "instance.json"
# The Session.info entry holding the TOTP key, for dropbox/officers.py.
TOTP_KEY_INFO = "dropbox.totp_key"
TOTP_KEY_BYTES = 32


class InstanceError(Exception):
    """The data directory is not an initialised instance, or is damaged."""


@dataclass(frozen=True)
class InstanceSecrets:
    """Secrets generated at `init` that never enter the database."""

    codename_salt: bytes
    codename_cost: KdfCost
    # Signs CSRF tokens; sessions themselves are server-side.
    app_secret: bytes
    # None only in an instance made before audit keys, until it is next opened.
    audit_keys: audit.AuditKeys | None = None
    # Encrypts officers' TOTP secrets in the database; None only in an instance made
    # before it existed, until it is next opened.
    totp_key: bytes | None = None


def create_secrets(data_dir: Path, codename_cost: KdfCost) -> InstanceSecrets:
    """Generate and write the instance secrets; refuse to overwrite existing ones."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    instance_secrets = InstanceSecrets(
        codename_salt=secrets.token_bytes(SALT_BYTES),
        codename_cost=codename_cost,
        app_secret=secrets.token_bytes(32),
        totp_key=secrets.token_bytes(TOTP_KEY_BYTES),
    )
    assert instance_secrets.totp_key is not None  # noqa: S101 - made just above
    document = {
        "codename_salt": base64.b64encode(instance_secrets.codename_salt).decode(),
        "codename_kdf_iterations": codename_cost.iterations,
        "codename_kdf_memory_bytes": codename_cost.memory_bytes,
        "app_secret": base64.b64encode(instance_secrets.app_secret).decode(),
        "totp_key": base64.b64encode(instance_secrets.totp_key).decode(),
    }
    path = data_dir / SECRETS_FILE
    try:
        write_private_file(path, json.dumps(document, indent=2).encode("utf-8"))
    except FileExistsError:
        raise InstanceError(f"{path} exists: this instance is already initialised") from None
    return instance_secrets


def load_secrets(data_dir: Path) -> InstanceSecrets:
    """Read the instance secrets written at `init`."""
    path = data_dir / SECRETS_FILE
    try:
        document = json.loads(path.read_text())
        return InstanceSecrets(
            codename_salt=base64.b64decode(document["codename_salt"], validate=True),
            codename_cost=KdfCost(
                int(document["codename_kdf_iterations"]),
                int(document["codename_kdf_memory_bytes"]),
            ),
            app_secret=base64.b64decode(document["app_secret"], validate=True),
            audit_keys=audit.AuditKeys.from_document(document["audit"])
            if "audit" in document
            else None,
            totp_key=_totp_key(document),
        )
    except FileNotFoundError:
        raise InstanceError(
            f"{data_dir} is not an initialised instance (no {SECRETS_FILE}); run 'dropbox init'"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InstanceError(f"{path} is damaged: {exc}") from None


def _totp_key(document: dict[str, object]) -> bytes | None:
    """The TOTP key of instance.json, None if it has none yet; ValueError if damaged."""
    text = document.get("totp_key")
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("totp_key is not base64 text")
    key = base64.b64decode(text, validate=True)
    if len(key) != TOTP_KEY_BYTES:
        raise ValueError("totp_key has the wrong length")
    return key


def add_totp_key(data_dir: Path) -> InstanceSecrets:
    """Give an instance made before it its TOTP key, once; return its secrets.

    Such an instance has no TOTP secret encrypted under it yet: its officers
    re-enrol (migration 0002 cleared their credentials).
    """
    with audit.data_dir_lock(data_dir):
        current = load_secrets(data_dir)
        if current.totp_key is not None:
            return current
        path = data_dir / SECRETS_FILE
        document = json.loads(path.read_text())
        document["totp_key"] = base64.b64encode(secrets.token_bytes(TOTP_KEY_BYTES)).decode()
        audit.replace_private_file(path, json.dumps(document, indent=2).encode("utf-8"))
        return load_secrets(data_dir)


def add_audit_keys(data_dir: Path, engine: Engine) -> InstanceSecrets:
    """Give an instance its audit keys once, fixing the events it already has; return its secrets.

    The events recorded before (none for a new instance) keep their plain hash:
    their number and the last one's hash are written with the keys, so that
    they cannot later be moved, cut or joined by forged ones. Processes
    opening the instance together take turns (the data directory's lock);
    the first writes the keys, the others read them.
    """
    with audit.data_dir_lock(data_dir):
        current = load_secrets(data_dir)
        if current.audit_keys is not None:
            return current
        with Session(engine) as session:
            head = session.get(AuditHead, 1)
            legacy = (head.last_event_id, head.last_hash) if head else (0, audit.GENESIS)
        keys = audit.AuditKeys.generate(*legacy)
        path = data_dir / SECRETS_FILE
        document = json.loads(path.read_text())
        document["audit"] = keys.to_document()
        audit.replace_private_file(path, json.dumps(document, indent=2).encode("utf-8"))
        audit.advance_anchor(data_dir, *legacy, locked=True)
        return load_secrets(data_dir)


class Instance:
    """Everything the services need, opened once per process and passed explicitly."""

    def __init__(self, config: Config, instance_secrets: InstanceSecrets, engine: Engine) -> None:
        self.config = config
        self.secrets = instance_secrets
        self.engine = engine
        self.sessions: sessionmaker[Session] = make_sessionmaker(engine)
        # For transactions that only read: on SQLite they wait for no writer.
        self.readers: sessionmaker[Session] = make_reader(engine)
        self.store = Store(config.data_dir)
        if instance_secrets.audit_keys is None:
            raise InstanceError(f"{config.data_dir / SECRETS_FILE} has no audit keys")
        self.audit_keys: audit.AuditKeys = instance_secrets.audit_keys
        if instance_secrets.totp_key is None:
            raise InstanceError(f"{config.data_dir / SECRETS_FILE} has no TOTP key")
        context = audit.AuditContext(self.audit_keys, config.data_dir)
        for maker in (self.sessions, self.readers):
            audit.bind(maker, context)
            # After audit.bind, which sets the makers' info: keep its entry.
            maker.configure(
                info={**maker.kw.get("info", {}), TOTP_KEY_INFO: instance_secrets.totp_key}
            )

    @classmethod
    def open(cls, config: Config) -> Instance:
        """Open an initialised instance, bringing its schema to the newest revision."""
        instance_secrets = load_secrets(config.data_dir)
        engine = make_engine(config.db_url)
        create_schema(engine)
        if instance_secrets.audit_keys is None:
            instance_secrets = add_audit_keys(config.data_dir, engine)
        if instance_secrets.totp_key is None:
            instance_secrets = add_totp_key(config.data_dir)
        return cls(config, instance_secrets, engine)

    @classmethod
    def initialise(cls, config: Config) -> Instance:
        """Create the data directory, the instance secrets and the schema (through Alembic)."""
        create_secrets(config.data_dir, config.crypto.kdf_cost)
        engine = make_engine(config.db_url)
        create_schema(engine)
        return cls(config, add_audit_keys(config.data_dir, engine), engine)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()
