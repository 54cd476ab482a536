"""Shared fixtures: a cheap KDF cost (tests only), configurations and initialised instances."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from crypto.kdf import KdfCost
from dropbox.config import Config, CryptoSettings
from dropbox.instance import Instance

# The smallest cost libsodium allows. Production keeps crypto.kdf.PRODUCTION_COST;
# only tests, through these fixtures, turn it down.
CHEAP_COST = KdfCost(iterations=1, memory_bytes=8 * 1024)
CHEAP_CRYPTO_TOML = "[crypto]\nkdf_iterations = 1\nkdf_memory_kib = 8\n"


@pytest.fixture
def cheap_cost() -> KdfCost:
    """An Argon2id cost low enough for a fast suite."""
    return CHEAP_COST


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A configuration with its own data directory and a cheap KDF."""
    return Config(
        data_dir=tmp_path / "data",
        crypto=CryptoSettings(kdf_iterations=1, kdf_memory_kib=8),
    )


@pytest.fixture
def instance(config: Config) -> Iterator[Instance]:
    """An initialised instance (no offices or officers yet)."""
    opened = Instance.initialise(config)
    yield opened
    opened.close()


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def invoke(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `dropbox` in this process (fast), through the same entry point and error handling."""
    from click.testing import CliRunner

    from dropbox.cli import main

    runner = CliRunner()
    with runner.isolation(input=input, env=env) as (stdout, stderr, _):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(
        list(args), code, stdout.getvalue().decode(), stderr.getvalue().decode()
    )


def run_cli(
    *args: str, input: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `dropbox` command in a child process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "dropbox", *args],
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture
def office_keys(instance: Instance) -> dict[str, PrivateKey]:
    """Both offices created; their secret keys, as a recovery would give them."""
    from dropbox import offices

    keys = {}
    with instance.sessions.begin() as session:
        for office in instance.config.offices:
            _, secret_key, _, _ = offices.create(
                session, instance.config, office.code, CHEAP_COST, "test"
            )
            keys[office.code] = secret_key
    return keys
