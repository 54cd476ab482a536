"""An office whose key was X25519 upgraded to X-Wing, and its old items re-sealed.

`offices.upgrade` gives an X25519 office a new X-Wing key and keeps the old
one behind it in a new recovery file; `dropbox office reseal`
(dropbox/admin/reseal.py) rewrites each old item's key block so its office
entry is X-Wing, in committed batches, resumable, audited; `dropbox fsck`
counts the classical-only office entries left. Reports are made the way the
source interface makes them (`reports.submit`), first to the X25519 key an
office made before X-Wing holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from sqlalchemy import select

from crypto import codenames, envelope, recovery
from crypto.errors import DecryptionError
from crypto.keys import (
    KeyChain,
    XWingSecretKey,
    fingerprint,
    generate_keypair,
    public_key_from_bytes,
    wrap_secret_key,
)
from dropbox import officers, offices, reports
from dropbox.admin import fsck, reseal
from dropbox.errors import DropboxError
from dropbox.instance import Instance
from dropbox.items import new_id, open_item_bytes
from dropbox.models import AuditEvent, Item, ItemKind, Office
from tests.conftest import CHEAP_COST, invoke
from tests.reviewer_helpers import audit_details

pytestmark = pytest.mark.database_engine

RECOVERY_PASSPHRASE = "abacus bamboo candle dolphin eagle falcon garnet harbor igloo jigsaw"
OFFICER_PASSPHRASE = "a long officer passphrase"
REPORTS = 5  # each: the source's message and the acknowledgement (office and source)
KILLED_REPORTS = 60  # enough batches of one item that a kill lands before the last


@dataclass
class Classical:
    """An instance whose OIO key was made before X-Wing, and the reports sealed to it."""

    instance: Instance
    old_key: PrivateKey
    old_recovery: bytes  # a version 1 recovery file, as `office create` wrote it then
    sources: dict[str, PrivateKey]  # report id -> the source's secret key


def version_1_recovery_file(code: str, key: PrivateKey) -> bytes:
    """A recovery file as it was written before X-Wing: format v1, the 32-byte key wrapped."""
    document = {
        "format": "dropbox-office-recovery-v1",
        "office": code,
        "public_key": base64.b64encode(bytes(key.public_key)).decode("ascii"),
        "fingerprint": fingerprint(key.public_key),
        # A single X25519 key is wrapped as its 32 bytes, exactly as before.
        "wrapped_secret_key": base64.b64encode(
            wrap_secret_key(key, RECOVERY_PASSPHRASE, CHEAP_COST)
        ).decode("ascii"),
    }
    return json.dumps(document).encode("utf-8")


def submit(instance: Instance, category: str = "fraud") -> tuple[str, PrivateKey]:
    """A report as the source interface makes it; (report id, the source's secret key)."""
    source = codenames.derive(
        codenames.generate("en"), instance.secrets.codename_salt, instance.secrets.codename_cost
    )
    report_id = new_id()
    new = reports.NewReport(
        lookup_id=source.lookup_id,
        source_public_key=source.secret_key.public_key,
        category=category,
        text="The depot manager sells the fuel stock every Friday night.",
        details={},
        identity={},
        urgent=False,
        acknowledgement="Thank you: your report was received.",
    )
    with instance.sessions.begin() as session:
        reports.submit(instance, session, report_id, new)
    return report_id, source.secret_key


@pytest.fixture
def classical(instance: Instance) -> Classical:
    old_key = generate_keypair()
    with instance.sessions.begin() as session:
        for office in instance.config.offices:
            key = old_key if office.code == "OIO" else generate_keypair()
            session.add(
                Office(
                    code=office.code,
                    name=office.name,
                    public_key=bytes(key.public_key),
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )
    made = Classical(instance, old_key, version_1_recovery_file("OIO", old_key), {})
    for _ in range(REPORTS):
        report_id, source_key = submit(instance)
        made.sources[report_id] = source_key
    return made


def items(instance: Instance) -> list[Item]:
    with instance.sessions() as session:
        return list(session.execute(select(Item).order_by(Item.id)).scalars())


def bodies(instance: Instance) -> dict[str, str]:
    """Each item's blob, hashed: what a re-seal must never change."""
    return {
        item.id: hashlib.sha256(instance.store.path(item.blob).read_bytes()).hexdigest()
        for item in items(instance)
    }


def upgraded_chain(made: Classical) -> KeyChain:
    """OIO upgraded: its old chain opened from the version 1 file, then `offices.upgrade`."""
    with made.instance.sessions.begin() as session:
        old_chain = offices.open_recovery_file(
            session, "OIO", made.old_recovery, RECOVERY_PASSPHRASE
        )
        _, chain, _, _ = offices.upgrade(session, "OIO", old_chain, CHEAP_COST, "test")
    return chain


class Stop(Exception):
    """Raised after a batch has committed: the run ends there, as a killed one does."""


def test_an_interrupted_reseal_carries_on_when_run_again_and_leaves_every_body_as_it_was(
    classical: Classical,
) -> None:
    instance = classical.instance
    assert fsck.check(instance).classical_entries == 2 * REPORTS
    before = bodies(instance)
    chain = upgraded_chain(classical)
    assert isinstance(chain.current, XWingSecretKey) and len(chain.keys) == 2

    def stop_after_the_first(run: reseal.ResealRun) -> None:
        raise Stop()

    with pytest.raises(Stop):
        reseal.reseal(
            instance, "OIO", chain, "test", batch_size=3, after_batch=stop_after_the_first
        )
    # The first batch is committed; the others were never reached.
    assert fsck.check(instance).classical_entries == 2 * REPORTS - 3
    assert audit_details(instance, "office.reseal") == []  # a run that does not end records nothing

    run = reseal.reseal(instance, "OIO", chain, "test", batch_size=3)
    assert (run.checked, run.resealed, run.damaged) == (2 * REPORTS, 2 * REPORTS - 3, [])
    assert fsck.check(instance).classical_entries == 0
    assert bodies(instance) == before
    assert audit_details(instance, "office.reseal") == [
        f"OIO: {2 * REPORTS - 3} re-sealed, 0 damaged, {2 * REPORTS} checked in 4 batches"
    ]

    # Run again: nothing left to do, and the run says so.
    again = reseal.reseal(instance, "OIO", chain, "test", batch_size=3)
    assert again.resealed == 0 and bodies(instance) == before
    assert (
        audit_details(instance, "office.reseal")[-1]
        == f"OIO: 0 re-sealed, 0 damaged, {2 * REPORTS} checked in 4 batches"
    )

    # Every item now opens with the X-Wing key alone, never with the old key; the
    # source still opens what was sealed to it.
    hybrid_only = KeyChain((chain.current,))
    acknowledgements = 0
    for item in items(instance):
        assert envelope.key_block_version(item.key_block) == envelope.KEY_BLOCK_V2
        assert open_item_bytes(instance, item, hybrid_only)
        with pytest.raises(DecryptionError):
            open_item_bytes(instance, item, classical.old_key)
        if item.kind == ItemKind.ACKNOWLEDGEMENT:
            assert open_item_bytes(instance, item, classical.sources[item.report_id])
            acknowledgements += 1
    assert acknowledgements == REPORTS


def damage_first_item(classical: Classical) -> tuple[Item, bytes]:
    """The first item, its office entry now sealed to a stranger's key under the office's id;
    and that damaged key block."""
    instance = classical.instance
    first = items(instance)[0]
    forged = envelope.encrypt_bytes(b"x", [generate_keypair().public_key], b"")[0]
    forged = forged[:2] + envelope.recipient_id(classical.old_key.public_key) + forged[10:]
    with instance.sessions.begin() as session:
        row = session.get(Item, first.id)
        assert row is not None
        row.key_block = forged
    return first, forged


def test_a_key_block_that_does_not_open_is_counted_as_damaged_and_left_alone(
    classical: Classical,
) -> None:
    instance = classical.instance
    chain = upgraded_chain(classical)
    first, forged = damage_first_item(classical)
    run = reseal.reseal(instance, "OIO", chain, "test")
    assert run.damaged == [first.id] and run.resealed == 2 * REPORTS - 1
    with instance.sessions() as session:
        assert session.get(Item, first.id).key_block == forged  # type: ignore[union-attr]
    assert fsck.check(instance).classical_entries == 1


def test_new_reports_to_an_upgraded_office_are_sealed_to_its_x_wing_key(
    classical: Classical,
) -> None:
    instance = classical.instance
    chain = upgraded_chain(classical)
    report_id, source_key = submit(instance)
    with instance.sessions() as session:
        new_items = list(session.execute(select(Item).where(Item.report_id == report_id)).scalars())
    for item in new_items:
        # Version 2: the office's entry X-Wing, the source's (acknowledgement) X25519.
        kinds = dict(envelope.recipient_entries(item.key_block))
        assert kinds[envelope.recipient_id(chain.public_key)] is True
        assert envelope.recipient_id(classical.old_key.public_key) not in kinds
        assert open_item_bytes(instance, item, KeyChain((chain.current,)))
        if item.kind == ItemKind.ACKNOWLEDGEMENT:
            assert open_item_bytes(instance, item, source_key)
    # The chain opens old and new items alike, before any re-seal.
    for item in items(instance):
        assert open_item_bytes(instance, item, chain)
    assert fsck.check(instance).classical_entries == 2 * REPORTS


def test_the_upgrade_keeps_the_old_key_in_a_version_2_recovery_file_and_removes_the_grants(
    classical: Classical,
) -> None:
    instance = classical.instance
    with instance.sessions.begin() as session:
        old_chain = offices.open_recovery_file(
            session, "OIO", classical.old_recovery, RECOVERY_PASSPHRASE
        )
        office, chain, data, passphrase = offices.upgrade(
            session, "OIO", old_chain, CHEAP_COST, "test"
        )
        assert office.public_key == bytes(chain.public_key)
        with pytest.raises(DropboxError, match="X-Wing already"):
            offices.upgrade(session, "OIO", chain, CHEAP_COST, "test")
    parsed = recovery.load(data)
    assert parsed.format == recovery.FORMAT
    reopened = recovery.open_secret_key(parsed, passphrase)
    assert [bytes(k) for k in reopened.keys] == [bytes(k) for k in chain.keys]
    assert bytes(reopened.previous[0]) == bytes(classical.old_key)
    assert json.loads(data)["previous_fingerprints"] == [fingerprint(classical.old_key.public_key)]
    (event,) = audit_details(instance, "office.upgrade")
    assert event.startswith(f"OIO {fingerprint(chain.public_key)} replaces ")


def test_reseal_refuses_an_office_still_on_x25519(classical: Classical) -> None:
    with pytest.raises(DropboxError, match="office upgrade OIO"):
        reseal.reseal(classical.instance, "OIO", KeyChain((classical.old_key,)), "test")


def test_the_commands_upgrade_reseal_and_fsck_counts_what_is_left(
    classical: Classical, tmp_path: Path
) -> None:
    instance = classical.instance
    config_file = tmp_path / "config.toml"
    config_file.write_text(  # the instance's own settings, as the operator's file holds them
        f'data_dir = "{instance.config.data_dir}"\n'
        f'database_url = "{instance.config.database_url}"\n'
        "[crypto]\nkdf_iterations = 1\nkdf_memory_kib = 8\n"
    )
    old_file = tmp_path / "OIO-old.json"
    old_file.write_bytes(classical.old_recovery)
    new_file = tmp_path / "OIO-new.json"
    config = str(config_file)

    checked = invoke("--config", config, "fsck")
    assert f"Classical-only office entries: {2 * REPORTS} key-block entries" in checked.stdout
    with instance.sessions.begin() as session:
        amina, _ = officers.add(session, "amina", OFFICER_PASSPHRASE, CHEAP_COST, "test")
        officers.add(session, "bruno", OFFICER_PASSPHRASE, CHEAP_COST, "test")
        assert amina.public_key is not None
        amina_reads = fingerprint(public_key_from_bytes(amina.public_key))

    upgraded = invoke(
        "--config", config, "office", "upgrade", "OIO",
        "--recovery-file", str(old_file), "--new-recovery-file", str(new_file),
        "--grant", f"amina={amina_reads}",
        "--grant", f"bruno={amina_reads}",  # not bruno's key: nothing is granted to him
        input=RECOVERY_PASSPHRASE + "\n",
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Office OIO has a new X-Wing key: XWING " in upgraded.stdout
    assert "Granted the new key to: amina." in upgraded.stdout
    assert "The key on the server for bruno does not match" in upgraded.stdout
    with instance.sessions() as session:
        held = offices.office_key(
            session,
            officers.get(session, "amina"),
            officers.open_secret_key(
                officers.get(session, "amina"), OFFICER_PASSPHRASE, CHEAP_COST
            ),
            "OIO",
        )
        assert isinstance(held.current, XWingSecretKey) and len(held.keys) == 2
        assert bytes(held.previous[0]) == bytes(classical.old_key)
        assert offices.granted_codes(session, officers.get(session, "bruno")) == []
        mismatches = session.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "key.mismatch")
        ).scalars()
        assert list(mismatches) == ["officer key: bruno differs from the fingerprint they read out"]
    new_passphrase = upgraded.stdout.split("keep it apart from the file):\n  ")[1].splitlines()[0]

    resealed = invoke(
        "--config", config, "office", "reseal", "OIO",
        "--recovery-file", str(new_file), "--batch-size", "4",
        input=new_passphrase + "\n",
    )  # fmt: skip
    assert resealed.returncode == 0, resealed.stderr
    assert f"Re-sealed {2 * REPORTS} of {2 * REPORTS} items" in resealed.stdout
    assert (
        "Next, take the old key out of OIO's key chain with 'dropbox office retire-old-keys"
        f" OIO --recovery-file {new_file} --new-recovery-file NEW'." in resealed.stdout
    )
    checked = invoke("--config", config, "fsck")
    assert "Classical-only office entries: 0 key-block entries" in checked.stdout

    wrong = invoke(
        "--config", config, "office", "reseal", "OIO", "--recovery-file", str(old_file),
        input=RECOVERY_PASSPHRASE + "\n",
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "belongs to another office key" in wrong.stderr + wrong.stdout
    assert len(audit_details(instance, "office.reseal")) == 1


def test_a_reseal_killed_with_sigkill_keeps_its_batches_and_the_next_run_finishes(
    classical: Classical, tmp_path: Path
) -> None:
    """The real command in a child process, killed after its first batches, then run again."""
    instance = classical.instance
    for _ in range(KILLED_REPORTS - REPORTS):
        submit(instance)
    total = 2 * KILLED_REPORTS
    before = bodies(instance)
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f'data_dir = "{instance.config.data_dir}"\n'
        f'database_url = "{instance.config.database_url}"\n'
        "[crypto]\nkdf_iterations = 1\nkdf_memory_kib = 8\n"
    )
    with instance.sessions.begin() as session:
        old_chain = offices.open_recovery_file(
            session, "OIO", classical.old_recovery, RECOVERY_PASSPHRASE
        )
        _, chain, data, passphrase = offices.upgrade(session, "OIO", old_chain, CHEAP_COST, "test")
    new_file = tmp_path / "OIO-new.json"
    new_file.write_bytes(data)
    command = [
        sys.executable, "-m", "launcher", "--config", str(config_file),
        "office", "reseal", "OIO", "--recovery-file", str(new_file), "--batch-size", "1",
    ]  # fmt: skip
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(passphrase + "\n")
        child.stdin.close()
        first = child.stdout.readline()  # printed once the first batch has committed
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "items checked" in first, first + (child.stderr.read() if child.stderr else "")
    assert child.returncode == -signal.SIGKILL
    left = fsck.check(instance).classical_entries
    assert 0 < left < total  # some batches committed, not all
    assert audit_details(instance, "office.reseal") == []

    run = reseal.reseal(instance, "OIO", chain, "test", batch_size=7)
    assert run.resealed == left and run.damaged == []
    assert fsck.check(instance).classical_entries == 0
    assert bodies(instance) == before
    for item in items(instance):
        assert open_item_bytes(instance, item, KeyChain((chain.current,)))


# --- retiring the old key ----------------------------------------------------------------


def retire(instance: Instance, chain: KeyChain) -> tuple[KeyChain, bytes, str, reseal.OldEntries]:
    with instance.sessions.begin() as session:
        office, retired, data, passphrase, left = reseal.retire_old_keys(
            session, "OIO", chain, CHEAP_COST, "test"
        )
        assert office.public_key == bytes(chain.public_key)
    return retired, data, passphrase, left


def test_the_old_key_is_retired_only_after_the_reseal_and_the_x_wing_key_alone_opens_all(
    classical: Classical,
) -> None:
    instance = classical.instance
    chain = upgraded_chain(classical)
    with instance.sessions.begin() as session:
        amina, _ = officers.add(session, "amina", OFFICER_PASSPHRASE, CHEAP_COST, "test")
        assert amina.public_key is not None
        read_out = fingerprint(public_key_from_bytes(amina.public_key))
        offices.grant(session, "OIO", amina, chain, "test", read_out=read_out)

    # Refused before the re-seal, and half-way through it: nothing changes.
    with pytest.raises(DropboxError) as refused:
        retire(instance, chain)
    assert str(refused.value) == (
        f"{2 * REPORTS} key-block entries of office OIO are still sealed to its old key alone:"
        " run 'dropbox office reseal OIO' with this recovery file first, then this command again"
    )

    def stop_after_the_first(run: reseal.ResealRun) -> None:
        raise Stop()

    with pytest.raises(Stop):
        reseal.reseal(
            instance, "OIO", chain, "test", batch_size=3, after_batch=stop_after_the_first
        )
    with pytest.raises(DropboxError, match=f"^{2 * REPORTS - 3} key-block entries"):
        retire(instance, chain)
    with instance.sessions() as session:
        assert offices.granted_codes(session, officers.get(session, "amina")) == ["OIO"]
    assert audit_details(instance, "office.retire") == []

    reseal.reseal(instance, "OIO", chain, "test")
    retired, data, passphrase, left = retire(instance, chain)
    assert (left.sealed, left.damaged) == (0, 0)
    assert len(retired.keys) == 1 and bytes(retired.current) == bytes(chain.current)

    # The new recovery file holds the X-Wing key alone, under the same fingerprint (the pin).
    document = json.loads(data)
    assert document["key_type"] == "X-Wing" and document["previous_fingerprints"] == []
    assert document["fingerprint"] == fingerprint(chain.public_key)
    reopened = recovery.open_secret_key(recovery.load(data), passphrase)
    assert len(reopened.keys) == 1 and bytes(reopened) == bytes(retired)
    with instance.sessions() as session:
        assert offices.open_recovery_file(session, "OIO", data, passphrase) is not None
        assert offices.granted_codes(session, officers.get(session, "amina")) == []
    assert audit_details(instance, "office.retire") == [
        f"OIO {fingerprint(chain.public_key)}: retired"
        f" {fingerprint(classical.old_key.public_key)}; 1 grants removed; 0 damaged entries left"
    ]

    # Every item, old and new, opens with the chain of the X-Wing key alone.
    report_id, source_key = submit(instance)
    for item in items(instance):
        assert open_item_bytes(instance, item, reopened)
        if item.kind == ItemKind.ACKNOWLEDGEMENT and item.report_id == report_id:
            assert open_item_bytes(instance, item, source_key)
    assert fsck.check(instance).classical_entries == 0

    # Nothing is left to retire.
    with pytest.raises(DropboxError, match="X-Wing key alone: there is nothing to retire"):
        retire(instance, reopened)


def test_a_damaged_entry_under_the_old_key_does_not_hold_the_retirement_back(
    classical: Classical,
) -> None:
    """An entry the old key does not open is lost with or without that key: it is counted."""
    instance = classical.instance
    chain = upgraded_chain(classical)
    first, _ = damage_first_item(classical)
    assert reseal.reseal(instance, "OIO", chain, "test").damaged == [first.id]
    _, _, _, left = retire(instance, chain)
    assert (left.sealed, left.damaged) == (0, 1)
    assert audit_details(instance, "office.retire")[0].endswith(
        "; 0 grants removed; 1 damaged entries left"
    )


def test_retiring_refuses_an_office_still_on_x25519_or_another_offices_key(
    classical: Classical,
) -> None:
    with pytest.raises(DropboxError, match="office upgrade OIO"):
        retire(classical.instance, KeyChain((classical.old_key,)))
    with pytest.raises(DropboxError, match="not OIO's office key"):
        retire(classical.instance, KeyChain((XWingSecretKey.generate(), classical.old_key)))


def test_the_command_retire_old_keys_waits_for_the_reseal_regrants_and_keeps_the_pin(
    classical: Classical, tmp_path: Path
) -> None:
    instance = classical.instance
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f'data_dir = "{instance.config.data_dir}"\n'
        f'database_url = "{instance.config.database_url}"\n'
        "[crypto]\nkdf_iterations = 1\nkdf_memory_kib = 8\n"
    )
    config = str(config_file)
    with instance.sessions.begin() as session:
        old_chain = offices.open_recovery_file(
            session, "OIO", classical.old_recovery, RECOVERY_PASSPHRASE
        )
        _, chain, data, passphrase = offices.upgrade(session, "OIO", old_chain, CHEAP_COST, "test")
        amina, _ = officers.add(session, "amina", OFFICER_PASSPHRASE, CHEAP_COST, "test")
        assert amina.public_key is not None
        amina_reads = fingerprint(public_key_from_bytes(amina.public_key))
    upgraded_file = tmp_path / "OIO-upgraded.json"
    upgraded_file.write_bytes(data)
    retired_file = tmp_path / "OIO-retired.json"
    listed = invoke("--config", config, "office", "list").stdout

    command = (
        "--config", config, "office", "retire-old-keys", "OIO",
        "--recovery-file", str(upgraded_file), "--new-recovery-file", str(retired_file),
        "--grant", f"amina={amina_reads}",
    )  # fmt: skip
    early = invoke(*command, input=passphrase + "\n")
    assert early.returncode == 2 and "Traceback" not in early.stderr
    assert early.stderr.strip() == (
        f"dropbox: {2 * REPORTS} key-block entries of office OIO are still sealed to its old"
        " key alone: run 'dropbox office reseal OIO' with this recovery file first, then this"
        " command again"
    )
    assert not retired_file.exists()

    reseal.reseal(instance, "OIO", chain, "test")
    done = invoke(*command, input=passphrase + "\n")
    assert done.returncode == 0, done.stderr
    assert (
        "Office OIO's old key is retired: its key chain is its X-Wing key alone,"
        f" {fingerprint(chain.public_key)} (the configuration's pin stays as it is)." in done.stdout
    )
    assert "Granted the new key chain to: amina." in done.stdout
    assert f"The old recovery file {upgraded_file} still holds the old key" in done.stdout
    new_passphrase = done.stdout.split("keep it apart from the file):\n  ")[1].splitlines()[0]
    with instance.sessions() as session:
        amina_row = officers.get(session, "amina")
        held = offices.office_key(
            session,
            amina_row,
            officers.open_secret_key(amina_row, OFFICER_PASSPHRASE, CHEAP_COST),
            "OIO",
        )
        assert len(held.keys) == 1 and bytes(held.current) == bytes(chain.current)
        reopened = offices.open_recovery_file(
            session, "OIO", retired_file.read_bytes(), new_passphrase
        )
        assert len(reopened.keys) == 1
    # The office's public key, so its fingerprint and pin, did not change.
    assert invoke("--config", config, "office", "list").stdout == listed
    for item in items(instance):
        assert open_item_bytes(instance, item, held)
    assert len(audit_details(instance, "office.retire")) == 1
