"""`dropbox tor-config` against Debian's real tor (offline), and its refusals."""

from __future__ import annotations

import re
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from dropbox.admin.tor import decode_key, encode_key
from dropbox.config import load
from dropbox.instance import Instance
from source_interface import create_app
from tests.conftest import CHEAP_CRYPTO_TOML, invoke

TOR = Path("/usr/sbin/tor")
ONION = re.compile(r"^[a-z2-7]{56}\.onion$")
CLIENT_AUTH_LINE = re.compile(r"^\s*([a-z2-7]{56}):descriptor:x25519:([A-Z2-7]{52})$", re.M)
AUTH_FILE = re.compile(r"^descriptor:x25519:([A-Z2-7]{52})\n$")

needs_tor = pytest.mark.skipif(
    not TOR.exists(), reason="Debian's tor is missing: run scripts/install-test-deps"
)


def write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'data_dir = "data"\n[source]\nport = 18080\n[reviewer]\nport = 18081\n'
        f"{extra}\n{CHEAP_CRYPTO_TOML}"
    )
    return path


def tor_config(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return invoke("--config", str(config), "tor-config", *args)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dropbox: ")
    for fragment in fragments:
        assert fragment in lines[0]


def wait_for(paths: list[Path], tor: subprocess.Popen[str], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not all(path.exists() for path in paths):
        if tor.poll() is not None:
            pytest.fail(f"tor stopped with {tor.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"tor made no onion addresses in {seconds} s:\n{log.read_text()}")
        time.sleep(0.1)
    time.sleep(0.2)  # hostname is written last but not atomically: let it be complete


@needs_tor
def test_tor_creates_both_onion_services_and_the_source_sends_onion_location(
    tmp_path: Path, instance: Instance
) -> None:
    config_path = write_config(tmp_path)
    torrc = tmp_path / "torrc"
    tor_dir = tmp_path / "tor"
    written = tor_config(config_path, "--output", str(torrc), "--tor-dir", str(tor_dir))
    assert written.returncode == 0, written.stderr
    assert "checked with tor" in written.stdout
    assert "handed to the officer, then deleted from this server" in written.stdout
    text = torrc.read_text()
    for line in (
        "SocksPort 0",
        f"DataDirectory {tor_dir / 'data'}",
        f"HiddenServiceDir {tor_dir / 'source'}",
        "HiddenServicePort 80 127.0.0.1:18080",
        "HiddenServicePoWDefensesEnabled 1",
        f"HiddenServiceDir {tor_dir / 'reviewer'}",
        "HiddenServicePort 80 127.0.0.1:18081",
    ):
        assert line in text.splitlines(), line
    # The PoW line belongs to the source service, before the reviewer's HiddenServiceDir.
    assert text.index("HiddenServicePoWDefensesEnabled") < text.index(str(tor_dir / "reviewer"))
    for directory in ("", "data", "source", "reviewer", "reviewer/authorized_clients"):
        assert stat.S_IMODE((tor_dir / directory).stat().st_mode) == 0o700, directory
    key_file = tor_dir / "officer-client.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    auth = tor_dir / "reviewer" / "authorized_clients" / "officer.auth"
    match = AUTH_FILE.fullmatch(auth.read_text())
    assert match, auth.read_text()
    public_in_tor = match.group(1)

    # The test only: no network, and the client-key loading visible in an info log.
    info_log = tmp_path / "tor-info.log"
    with torrc.open("a") as handle:
        handle.write(f"DisableNetwork 1\nLog notice stdout\nLog info file {info_log}\n")
    out_log = tmp_path / "tor-out.log"
    with out_log.open("w") as out:
        tor = subprocess.Popen(
            [str(TOR), "-f", str(torrc)], stdout=out, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_for(
                [tor_dir / "source" / "hostname", tor_dir / "reviewer" / "hostname"],
                tor,
                out_log,
                30,
            )
            # Wait until tor has read the client key too (logged while it loads services).
            deadline = time.monotonic() + 10
            loaded = "Loaded a client authorization key file officer.auth."
            while loaded not in info_log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            info = info_log.read_text()
        finally:
            tor.terminate()
            tor.wait(timeout=15)
    assert loaded in info, info
    # tor accepted proof-of-work defenses for the source service (and only for it).
    assert info.count("Service PoW defenses are enabled") == 1, info
    assert "Client authorization" not in "".join(
        line for line in info.splitlines(keepends=True) if "[warn]" in line
    )

    source_address = (tor_dir / "source" / "hostname").read_text().strip()
    reviewer_address = (tor_dir / "reviewer" / "hostname").read_text().strip()
    assert ONION.fullmatch(source_address), source_address
    assert ONION.fullmatch(reviewer_address), reviewer_address
    assert source_address != reviewer_address

    # The officer's line: the reviewer address and the private half of tor's client key.
    shown = tor_config(config_path, "--tor-dir", str(tor_dir), "--show-client-auth")
    assert shown.returncode == 0, shown.stderr
    match = CLIENT_AUTH_LINE.search(shown.stdout)
    assert match, shown.stdout
    assert f"{match.group(1)}.onion" == reviewer_address
    private = PrivateKey(decode_key(match.group(2)))
    assert encode_key(bytes(private.public_key)) == public_in_tor
    assert f"rm {key_file}" in shown.stdout

    # The configuration lines it prints load, and make the source interface send Onion-Location.
    addresses = tor_config(config_path, "--tor-dir", str(tor_dir), "--show-addresses")
    assert addresses.returncode == 0, addresses.stderr
    assert f'onion_address = "{source_address}"' in addresses.stdout
    assert f'onion_address = "{reviewer_address}"' in addresses.stdout
    source_table = f'\n[source]\nonion_address = "{source_address}"\n'
    (tmp_path / "with-onion.toml").write_text(f'data_dir = "data"\n{source_table}')
    assert load(tmp_path / "with-onion.toml").source.onion_address == source_address

    config = replace(
        instance.config, source=replace(instance.config.source, onion_address=source_address)
    )
    response = create_app(config, instance).test_client().get("/login?lang=en")
    assert response.headers["Onion-Location"] == f"http://{source_address}/login?lang=en"


def test_an_existing_torrc_is_kept_unless_forced_and_keys_survive(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    torrc = tmp_path / "torrc"
    torrc.write_text("# the operator's own\n")
    tor_dir = tmp_path / "tor"
    refused = tor_config(config_path, "--output", str(torrc), "--tor-dir", str(tor_dir))
    assert_one_line_error(refused, "already exists", "--force")
    assert torrc.read_text() == "# the operator's own\n"

    first = tor_config(config_path, "--output", str(torrc), "--tor-dir", str(tor_dir), "--force")
    assert first.returncode == 0, first.stderr
    auth = tor_dir / "reviewer" / "authorized_clients" / "officer.auth"
    key = auth.read_text()
    again = tor_config(config_path, "--output", str(torrc), "--tor-dir", str(tor_dir), "--force")
    assert again.returncode == 0, again.stderr
    assert "Kept the existing client key" in again.stdout
    assert auth.read_text() == key

    replaced = tor_config(config_path, "--tor-dir", str(tor_dir), "--new-client-key")
    assert replaced.returncode == 0, replaced.stderr
    assert auth.read_text() != key
    private = PrivateKey(decode_key((tor_dir / "officer-client.key").read_text()))
    assert auth.read_text() == f"descriptor:x25519:{encode_key(bytes(private.public_key))}\n"


def test_the_default_tor_dir_is_in_the_data_dir_and_localhost_becomes_loopback(
    tmp_path: Path,
) -> None:
    # An onion interface listens on loopback only (dropbox.config refuses "0.0.0.0").
    config_path = write_config(tmp_path)
    config_path.write_text(
        config_path.read_text().replace("port = 18080", 'port = 18080\nhost = "localhost"')
    )
    result = tor_config(config_path, "--output", str(tmp_path / "torrc"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "torrc").read_text()
    assert f"HiddenServiceDir {tmp_path / 'data' / 'tor' / 'source'}" in text
    assert "HiddenServicePort 80 127.0.0.1:18080" in text


def test_addresses_and_client_auth_before_tor_ran_are_one_line_errors(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    tor_dir = tmp_path / "tor"
    assert_one_line_error(
        tor_config(config_path, "--tor-dir", str(tor_dir), "--show-addresses"),
        "start tor with the torrc first",
    )
    written = tor_config(
        config_path, "--output", str(tmp_path / "torrc"), "--tor-dir", str(tor_dir)
    )
    assert written.returncode == 0, written.stderr
    assert_one_line_error(
        tor_config(config_path, "--tor-dir", str(tor_dir), "--show-client-auth"),
        "start tor with the torrc first",
    )
    # Handed over and deleted: the command says how to make a new key.
    (tor_dir / "reviewer" / "hostname").write_text("a" * 56 + ".onion\n")
    (tor_dir / "officer-client.key").unlink()
    assert_one_line_error(
        tor_config(config_path, "--tor-dir", str(tor_dir), "--show-client-auth"),
        "--new-client-key",
    )
    assert_one_line_error(
        tor_config(config_path, "--show-addresses", "--show-client-auth"), "only one of"
    )
    assert_one_line_error(
        tor_config(config_path, "--tor-dir", str(tmp_path / "with space")), "must not contain"
    )
