"""An opened instance: configuration, database, store, and the secrets kept outside the database.

The instance salt (for codename derivation) and the codename KDF cost are
fixed at `init` and live in `instance.json` in the data directory, not in the
database: a database dump alone is not enough to test codename guesses, and
changing the configured cost later cannot lock sources out of their threads.
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
from dropbox.config import Config
from dropbox.database import create_schema, make_engine, make_reader, make_sessionmaker
from dropbox.store import Store, write_private_file

SECRETS_FILE = "instance.json"


class InstanceError(Exception):
    """The data directory is not an initialised instance, or is damaged."""


@dataclass(frozen=True)
class InstanceSecrets:
    """Secrets generated at `init` that never enter the database."""

    codename_salt: bytes
    codename_cost: KdfCost
    # Signs CSRF tokens; sessions themselves are server-side.
    app_secret: bytes


def create_secrets(data_dir: Path, codename_cost: KdfCost) -> InstanceSecrets:
    """Generate and write the instance secrets; refuse to overwrite existing ones."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    instance_secrets = InstanceSecrets(
        codename_salt=secrets.token_bytes(SALT_BYTES),
        codename_cost=codename_cost,
        app_secret=secrets.token_bytes(32),
    )
    document = {
        "codename_salt": base64.b64encode(instance_secrets.codename_salt).decode(),
        "codename_kdf_iterations": codename_cost.iterations,
        "codename_kdf_memory_bytes": codename_cost.memory_bytes,
        "app_secret": base64.b64encode(instance_secrets.app_secret).decode(),
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
        )
    except FileNotFoundError:
        raise InstanceError(
            f"{data_dir} is not an initialised instance (no {SECRETS_FILE}); run 'dropbox init'"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InstanceError(f"{path} is damaged: {exc}") from None


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

    @classmethod
    def open(cls, config: Config) -> Instance:
        """Open an initialised instance, bringing its schema to the newest revision."""
        instance_secrets = load_secrets(config.data_dir)
        engine = make_engine(config.db_url)
        create_schema(engine)
        return cls(config, instance_secrets, engine)

    @classmethod
    def initialise(cls, config: Config) -> Instance:
        """Create the data directory, the instance secrets and the schema (through Alembic)."""
        instance_secrets = create_secrets(config.data_dir, config.crypto.kdf_cost)
        engine = make_engine(config.db_url)
        create_schema(engine)
        return cls(config, instance_secrets, engine)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()
