"""The `dropbox` command: set up an instance, manage offices and officers, run the servers.

Every failure is one line on standard error and exit code 2; a traceback is
never shown. `audit verify` exits 1 when the chain is broken, `fsck` when
problems remain.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, NoReturn

import click
from sqlalchemy.orm import Session

from crypto.kdf import KdfCost
from crypto.keys import KeyChain, fingerprint, public_key_from_bytes
from dropbox import audit, officers, offices
from dropbox.admin import fsck, reseal
from dropbox.admin.tor import tor_config
from dropbox.config import Config, ConfigError, fingerprint_digest, load
from dropbox.errors import DropboxError
from dropbox.instance import Instance, InstanceError
from dropbox.models import Officer
from dropbox.store import UMASK, write_private_file

ACTOR = "command line"


class CommandError(click.ClickException):
    """A failure to report as one line with exit code 2."""

    exit_code = 2


class _State:
    """What the group's options give every command."""

    def __init__(self, config_path: str) -> None:
        self.config_path = Path(config_path)

    def config(self) -> Config:
        return load(self.config_path)

    @contextmanager
    def instance(self) -> Iterator[Instance]:
        """Open the instance for the block; a database failure is one line; closed after."""
        with _database_errors():
            instance = Instance.open(self.config())
            try:
                yield instance
            finally:
                instance.close()

    @contextmanager
    def session(self) -> Iterator[tuple[Instance, Session]]:
        """Open the instance and a session; commit on success, roll back on failure."""
        instance = Instance.open(self.config())
        try:
            with instance.sessions.begin() as session:
                yield instance, session
        finally:
            instance.close()


pass_state = click.make_pass_decorator(_State)


def _ask_secret(prompt: str, *, confirm: bool = False) -> str:
    """Prompt for a secret without echo; from a pipe, read it (and its confirmation) as lines."""
    if sys.stdin.isatty():
        answer: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
        return answer
    first = sys.stdin.readline().rstrip("\n")
    if confirm and sys.stdin.readline().rstrip("\n") != first:
        raise CommandError("the two passphrases differ")
    if not first:
        raise CommandError(f"no {prompt.lower()} was given on standard input")
    return first


class _Commands(click.Group):
    """The commands, with the reviewer app's loaded only when it is asked for.

    The reviewer app brings Flask, httpx and its pages: about a third of the
    program's start-up, which `dropbox notify --once` (every minute, from a
    timer) and every other command would otherwise pay for nothing.
    """

    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "reviewer": ("journalist_interface.run", "reviewer")
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            import importlib

            module, name = self.LAZY[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="DROPBOX_CONFIG",
    default="config.toml",
    show_default=True,
    metavar="PATH",
    help="The configuration file (or set DROPBOX_CONFIG).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str) -> None:
    """Anonymous misconduct-reporting dropbox for OIO and ECO."""
    ctx.obj = _State(config_path)


@cli.command()
@pass_state
def init(state: _State) -> None:
    """Create the data directory, the instance secrets and the database."""
    config = state.config()
    instance = Instance.initialise(config)
    instance.close()
    click.echo(f"Initialised an instance in {config.data_dir}.")
    click.echo("Next, create each office's keys:")
    for office in config.offices:
        click.echo(f"  dropbox office create {office.code}")


# --- offices -----------------------------------------------------------------


@cli.group()
def office() -> None:
    """Office key pairs and their recovery files."""


def _write_private_file(path: Path, data: bytes) -> None:
    try:
        write_private_file(path, data)
    except FileExistsError:
        raise CommandError(f"{path} already exists; choose another file name") from None
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from None


def _show_recovery(code: str, path: Path, passphrase: str) -> None:
    click.echo(f"Recovery file for {code}: {path}")
    click.echo("Recovery passphrase (shown once; write it down and keep it apart from the file):")
    click.echo(f"  {passphrase}")
    click.echo("Keep both offline. Together they recover every report if all officers are lost.")


@office.command("create")
@click.argument("code")
@click.option(
    "--recovery-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the recovery file [default: CODE-recovery.json].",
)
@pass_state
def office_create(state: _State, code: str, recovery_file: Path | None) -> None:
    """Generate the key pair of office CODE and its offline recovery file."""
    path = recovery_file or Path(f"{code}-recovery.json")
    if path.exists():
        raise CommandError(f"{path} already exists; choose another file name")
    with state.session() as (instance, session):
        created, _, data, passphrase = offices.create(
            session, instance.config, code, instance.config.crypto.kdf_cost, ACTOR
        )
        _write_private_file(path, data)
        click.echo(f"Created the key of {created.name} ({code}).")
        click.echo(f"Fingerprint: {fingerprint(public_key_from_bytes(created.public_key))}")
        click.echo(
            f"Pin it: add this line to the [[offices]] table of {code} in the configuration"
            " (nothing is then sealed to another key put in the database), and restart:"
        )
        click.echo(f"  {offices.config_line(public_key_from_bytes(created.public_key))}")
        _show_recovery(code, path, passphrase)


@office.command("list")
@pass_state
def office_list(state: _State) -> None:
    """List the offices, their key fingerprints, and whether the configuration pins them."""
    with state.session() as (instance, session):
        found = offices.pin_status(session, instance.config)
    for status in found:
        click.echo(f"{status.code:<12} {status.fingerprint or '-':<46} {status.state}")
    for status in found:
        if status.state == "not pinned":
            click.echo(
                f"Office {status.code}'s key is not pinned: add the line 'dropbox office create'"
                f' printed (fingerprint = "...", its fingerprint above) to its [[offices]] table.'
            )
        elif status.state == "differs":
            click.echo(
                f"Office {status.code}'s key in the database does not match the fingerprint"
                " pinned in the configuration: nothing is sealed to it. Check the server."
            )
    if any(s.state == "differs" for s in found):
        sys.exit(1)


@office.command("recover")
@click.argument("code")
@click.option(
    "--recovery-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The office's recovery file.",
)
@click.option(
    "--new-recovery-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a new recovery file under a new passphrase.",
)
@pass_state
def office_recover(
    state: _State, code: str, recovery_file: Path, new_recovery_file: Path | None
) -> None:
    """Check that a recovery file opens office CODE's key (a recovery drill).

    To give an officer access from the recovery file, use 'dropbox officer grant'.
    """
    passphrase = _ask_secret("Recovery passphrase")
    with state.session() as (instance, session):
        secret_key = offices.open_recovery_file(
            session, code, recovery_file.read_bytes(), passphrase
        )
        click.echo(f"The recovery file opens {code}'s key ({fingerprint(secret_key.public_key)}).")
        if new_recovery_file is not None:
            from crypto import recovery

            new_passphrase = recovery.generate_passphrase()
            data = recovery.dump(code, secret_key, new_passphrase, instance.config.crypto.kdf_cost)
            _write_private_file(new_recovery_file, data)
            _show_recovery(code, new_recovery_file, new_passphrase)
        audit.record(session, ACTOR, "office.recover", detail=code)


def _read_outs(grants: tuple[str, ...]) -> list[tuple[str, str]]:
    """Each --grant USERNAME=FINGERPRINT as (username, fingerprint); a malformed one refused."""
    read_outs: list[tuple[str, str]] = []
    for given in grants:
        username, _, read_out = given.partition("=")
        if not username or fingerprint_digest(read_out) is None:
            raise CommandError(
                f"--grant {given!r}: give USERNAME=FINGERPRINT. {offices.MALFORMED_FINGERPRINT}"
            )
        read_outs.append((username.strip(), read_out))
    return read_outs


def _grant_read_outs(
    session: Session, code: str, targets: list[tuple[Officer, str]], chain: KeyChain
) -> tuple[list[str], list[str]]:
    """Grant `chain` of office `code` to each officer whose key matches their read-out.

    The usernames granted, and a message for each refused: nothing is sealed to
    a key that does not match, and its "key.mismatch" event commits with the
    command's change.
    """
    granted: list[str] = []
    refused: list[str] = []
    for target, read_out in targets:
        try:
            offices.grant(session, code, target, chain, ACTOR, read_out=read_out)
        except offices.KeyMismatch as mismatch:
            refused.append(str(mismatch))
        else:
            granted.append(target.username)
    return granted, refused


def _new_chain_options(
    recovery_help: str, new_file_help: str, grant_help: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The options of a command that gives an office a new key chain (and recovery file)."""
    options = (
        click.option(
            "--recovery-file",
            required=True,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help=recovery_help,
        ),
        click.option(
            "--new-recovery-file",
            required=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help=new_file_help,
        ),
        click.option(
            "--grant", "grants", multiple=True, metavar="USERNAME=FINGERPRINT", help=grant_help
        ),
    )

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# What an office's new chain comes from: (session, the chain the recovery file opens,
# the KDF cost) -> (the new chain, the new recovery file, its passphrase).
ChainChange = Callable[[Session, KeyChain, KdfCost], tuple[KeyChain, bytes, str]]


def _new_office_chain(
    state: _State,
    code: str,
    recovery_file: Path,
    new_recovery_file: Path,
    grants: tuple[str, ...],
    change: ChainChange,
) -> tuple[KeyChain, str, list[str], list[str]]:
    """Open the recovery file, change the office's chain, write the new file, grant again.

    In one transaction: the new chain, its passphrase, the officers granted
    it and a message for each read-out that did not match.
    """
    if new_recovery_file.exists():
        raise CommandError(f"{new_recovery_file} already exists; choose another file name")
    read_outs = _read_outs(grants)
    passphrase = _ask_secret("Recovery passphrase")
    with state.session() as (instance, session):
        targets = [(officers.get(session, name), read_out) for name, read_out in read_outs]
        chain = offices.open_recovery_file(session, code, recovery_file.read_bytes(), passphrase)
        new_chain, data, new_passphrase = change(session, chain, instance.config.crypto.kdf_cost)
        granted, refused = _grant_read_outs(session, code, targets, new_chain)
        _write_private_file(new_recovery_file, data)
    return new_chain, new_passphrase, granted, refused


def _say_grants(
    code: str, what: str, granted: list[str], refused: list[str], new_recovery_file: Path
) -> str:
    """Print who was granted `what` and who not; the sentence saying how to grant the others."""
    if granted:
        click.echo(f"Granted {what} to: {', '.join(granted)}.")
    for message in refused:
        click.echo(message)
    return (
        f"Every other grant of {code} was removed: grant each officer again with 'dropbox"
        f" officer grant USERNAME {code} --recovery-file {new_recovery_file}'"
    )


@office.command("upgrade")
@click.argument("code")
@_new_chain_options(
    "The office's recovery file (its passphrase is prompted).",
    "Where to write the recovery file of the upgraded key (it replaces the old file).",
    "Grant the new key at once to USERNAME, whose key must match the fingerprint they"
    " read out (repeatable).",
)
@pass_state
def office_upgrade(
    state: _State, code: str, recovery_file: Path, new_recovery_file: Path, grants: tuple[str, ...]
) -> None:
    """Give office CODE, whose key is X25519, a new X-Wing (post-quantum) key.

    The old key stays in the new recovery file behind the new one, so every
    item sealed to it still opens; 'dropbox office reseal' then re-seals them.
    The office's grants held the old key alone: they are removed. Each officer
    is granted again, here with --grant or later with 'dropbox officer grant'
    and the new file; nothing is granted to a key that does not match the
    fingerprint its officer reads out.
    """

    def upgrade(session: Session, chain: KeyChain, cost: KdfCost) -> tuple[KeyChain, bytes, str]:
        _, upgraded, data, new_passphrase = offices.upgrade(session, code, chain, cost, ACTOR)
        return upgraded, data, new_passphrase

    upgraded, new_passphrase, granted, refused = _new_office_chain(
        state, code, recovery_file, new_recovery_file, grants, upgrade
    )
    click.echo(f"Office {code} has a new X-Wing key: {fingerprint(upgraded.public_key)}")
    click.echo(
        "Pin it: replace the fingerprint line of its [[offices]] table in the configuration"
        " with this one, and restart (until then nothing is sealed to the office):"
    )
    click.echo(f"  {offices.config_line(upgraded.public_key)}")
    _show_recovery(code, new_recovery_file, new_passphrase)
    others = _say_grants(code, "the new key", granted, refused, new_recovery_file)
    click.echo(
        f"{others}, then re-seal the old items with"
        f" 'dropbox office reseal {code} --recovery-file {new_recovery_file}'."
    )


@office.command("reseal")
@click.argument("code")
@click.option(
    "--recovery-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The office's recovery file since its upgrade (its passphrase is prompted).",
)
@click.option(
    "--batch-size",
    default=reseal.DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(min=1, max=10_000),
    help="Items re-sealed in each transaction.",
)
@pass_state
def office_reseal(state: _State, code: str, recovery_file: Path, batch_size: int) -> None:
    """Re-seal office CODE's old items to its X-Wing key, in batches; safe to run again.

    Only each item's key block changes, never its body. A run that is
    stopped keeps the batches it finished; run it again to carry on.
    """
    passphrase = _ask_secret("Recovery passphrase")
    with state.session() as (_, session):
        chain = offices.open_recovery_file(session, code, recovery_file.read_bytes(), passphrase)

    def progress(run: reseal.ResealRun) -> None:
        click.echo(f"  {run.checked} items checked, {run.resealed} re-sealed")

    with state.instance() as instance:
        run = reseal.reseal(
            instance, code, chain, ACTOR, batch_size=batch_size, after_batch=progress
        )
    click.echo(
        f"Re-sealed {run.resealed} of {run.checked} items to {code}'s X-Wing key"
        f" in {run.batches} batches."
    )
    if run.damaged:
        click.echo(
            f"{len(run.damaged)} items have a key block that does not open with the office key"
            " and were left as they are: " + ", ".join(run.damaged[:20])
        )
    if chain.previous:
        click.echo(
            f"Next, take the old key out of {code}'s key chain with 'dropbox office"
            f" retire-old-keys {code} --recovery-file {recovery_file} --new-recovery-file NEW'."
        )


@office.command("retire-old-keys")
@click.argument("code")
@_new_chain_options(
    "The office's recovery file since its upgrade (its passphrase is prompted).",
    "Where to write the recovery file of the X-Wing key alone (it replaces the old file).",
    "Grant the new key chain at once to USERNAME, whose key must match the fingerprint"
    " they read out (repeatable).",
)
@pass_state
def office_retire_old_keys(
    state: _State, code: str, recovery_file: Path, new_recovery_file: Path, grants: tuple[str, ...]
) -> None:
    """Take office CODE's old X25519 key out of its key chain, once every item is re-sealed.

    Refused while an item still has an entry only the old key opens: run
    'dropbox office reseal' first. The office keeps its X-Wing key, so its
    fingerprint and the configuration's pin stay the same. The office's
    grants held the old key too: they are removed, and each officer is
    granted again, here with --grant or later with 'dropbox officer grant'
    and the new file.
    """
    damaged = 0

    def retire(session: Session, chain: KeyChain, cost: KdfCost) -> tuple[KeyChain, bytes, str]:
        nonlocal damaged
        _, retired, data, new_passphrase, left = reseal.retire_old_keys(
            session, code, chain, cost, ACTOR
        )
        damaged = left.damaged
        return retired, data, new_passphrase

    retired, new_passphrase, granted, refused = _new_office_chain(
        state, code, recovery_file, new_recovery_file, grants, retire
    )
    click.echo(
        f"Office {code}'s old key is retired: its key chain is its X-Wing key alone,"
        f" {fingerprint(retired.public_key)} (the configuration's pin stays as it is)."
    )
    if damaged:
        click.echo(
            f"{damaged} key-block entries under the old key did not open with it (damaged:"
            " nothing opens them); 'dropbox office reseal' listed their items."
        )
    _show_recovery(code, new_recovery_file, new_passphrase)
    click.echo(
        f"The old recovery file {recovery_file} still holds the old key: destroy it once the"
        " new one is stored safely, and grant from the new one only."
    )
    click.echo(_say_grants(code, "the new key chain", granted, refused, new_recovery_file) + ".")


# --- officers ----------------------------------------------------------------


@cli.group()
def officer() -> None:
    """Officer accounts and their access to offices."""


def _show_totp(username: str, secret: str, uri: str) -> None:
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(uri)
    buffer = io.StringIO()
    qr.print_ascii(out=buffer, invert=True)
    click.echo(f"Scan this with an authenticator app for {username}:")
    click.echo(buffer.getvalue())
    click.echo(f"Or enter the secret by hand: {secret}")
    click.echo(f"otpauth URI: {uri}")


@officer.command("add")
@click.argument("username")
@click.option("--name", "display_name", default="", help="The name other officers see.")
@click.option("--admin", is_flag=True, help="Make the officer an office administrator.")
@pass_state
def officer_add(state: _State, username: str, display_name: str, admin: bool) -> None:
    """Create officer USERNAME with a passphrase (prompted) and a TOTP secret.

    The keys are derived here, where the passphrase is typed, as the reviewer
    app derives them; the database gets only what the case server would.
    Officers normally enrol themselves in their reviewer app: 'officer invite'.
    """
    officers.check_username(username)
    passphrase = _ask_secret("Passphrase for the new officer", confirm=True)
    with state.session() as (instance, session):
        created, secret = officers.add(
            session,
            username,
            passphrase,
            instance.config.crypto.kdf_cost,
            ACTOR,
            display_name=display_name,
            is_admin=admin,
        )
        click.echo(f"Created officer {created.username}.")
        _show_totp(created.username, secret, officers.provisioning_uri(created, secret))
        # Made in this process just now: what their account page will show them too.
        assert created.public_key is not None  # noqa: S101 - officers.add sets it
        shown = fingerprint(public_key_from_bytes(created.public_key))
        click.echo(f"Key fingerprint: {shown}")
        click.echo("Next, give access to an office:")
        click.echo(f'  dropbox officer grant {username} OFFICE --fingerprint "{shown}"')


def _show_invitation(username: str, code: str, expires_at: datetime | None) -> None:
    until = f" until {expires_at.strftime('%Y-%m-%d %H:%M')} UTC" if expires_at else ""
    click.echo(f"Enrolment code for {username} (works once{until}): {code}")
    click.echo(
        "They enrol in their reviewer app (Enrol, with this username and code), then read out"
        " their key fingerprint for 'dropbox officer grant'."
    )


@officer.command("invite")
@click.argument("username")
@click.option("--name", "display_name", default="", help="The name other officers see.")
@click.option("--admin", is_flag=True, help="Make the officer an office administrator.")
@click.option(
    "--again",
    is_flag=True,
    help="USERNAME exists: a new code to re-enrol (their key, grants and sessions go).",
)
@pass_state
def officer_invite(
    state: _State, username: str, display_name: str, admin: bool, again: bool
) -> None:
    """Invite officer USERNAME to enrol in their reviewer app with a one-time code.

    With --again, an existing officer (a forgotten passphrase, a lost device,
    or an officer made before the reviewer app) gets a new code; their old
    credentials and office grants are removed, and they are granted again
    after enrolling.
    """
    with state.session() as (_, session):
        if again:
            if display_name or admin:
                raise CommandError("--name and --admin are for a new officer, not with --again")
            target = officers.get(session, officers.normalise_username(username))
            code = officers.reinvite(session, target, ACTOR)
        else:
            target, code = officers.create_enrolment(session, username, display_name, admin, ACTOR)
        _show_invitation(target.username, code, target.enrolment_expires_at)


@officer.command("grant")
@click.argument("username")
@click.argument("code", metavar="OFFICE")
@click.option(
    "--recovery-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The office's recovery file (its passphrase is prompted).",
)
@click.option(
    "--fingerprint",
    "read_out",
    metavar="TEXT",
    help="The key fingerprint USERNAME reads out from their account page [prompted if missing].",
)
@pass_state
def officer_grant(
    state: _State, username: str, code: str, recovery_file: Path, read_out: str | None
) -> None:
    """Give officer USERNAME access to OFFICE's reports, using the office's recovery file.

    The officer reads out their key's fingerprint from their account page
    (in person or by phone); nothing is granted if the key on the server
    does not match it.
    """
    if read_out is None:
        if not sys.stdin.isatty():
            raise CommandError(
                f"give the fingerprint {username} reads out from their account page"
                " with --fingerprint"
            )
        read_out = str(click.prompt(f"Key fingerprint {username} reads out"))
    # A slip in typing it is told before the recovery passphrase is asked for.
    if fingerprint_digest(read_out) is None:
        raise CommandError(offices.MALFORMED_FINGERPRINT)
    passphrase = _ask_secret("Recovery passphrase")
    refused: offices.KeyMismatch | None = None
    with state.session() as (_, session):
        target = officers.get(session, username)
        secret_key = offices.open_recovery_file(
            session, code, recovery_file.read_bytes(), passphrase
        )
        try:
            offices.grant(session, code, target, secret_key, ACTOR, read_out=read_out)
        except offices.KeyMismatch as mismatch:
            # Nothing was sealed; leaving the block commits its "key.mismatch" event.
            refused = mismatch
    if refused is not None:
        raise CommandError(str(refused))
    click.echo(f"{username} now has access to {code}.")


@officer.command("list")
@pass_state
def officer_list(state: _State) -> None:
    """List officers, their offices and state."""
    with state.session() as (_, session):
        rows = officers.list_all(session)
        if not rows:
            click.echo("No officers yet. Add one with: dropbox officer add USERNAME")
            return
        click.echo(f"{'username':<24} {'offices':<12} {'role':<14} state")
        for row in rows:
            codes = ",".join(offices.granted_codes(session, row)) or "-"
            role = "administrator" if row.is_admin else "officer"
            status = "active" if row.active else "deactivated"
            if not officers.enrolled(row):
                status += ", not enrolled"
            click.echo(f"{row.username:<24} {codes:<12} {role:<14} {status}")


# --- audit -------------------------------------------------------------------


@cli.group("audit")
def audit_group() -> None:
    """The audit log: keyed hash chain, anchor file and signed checkpoints."""


def _read_checkpoints(paths: tuple[Path, ...], keys: audit.AuditKeys) -> list[audit.Checkpoint]:
    """Read and check the signature of each checkpoint file; refuse any that does not hold."""
    checkpoints = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read the checkpoint {path}: {exc.strerror}") from None
        try:
            checkpoints.append(audit.load_checkpoint(data, str(path), keys))
        except audit.CheckpointError as exc:
            raise CommandError(str(exc)) from None
    return checkpoints


@audit_group.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A checkpoint kept off the server; the log up to its event must be unchanged. Repeatable.",
)
@pass_state
def audit_verify(state: _State, checkpoint_files: tuple[Path, ...]) -> None:
    """Check the audit log; exit 1 and name the first broken event if it fails.

    Exit 2 if a checkpoint file is refused (forged, altered, or not this instance's).
    """
    with state.session() as (instance, session):
        checkpoints = _read_checkpoints(checkpoint_files, instance.audit_keys)
        result = audit.verify(session, checkpoints)
        anchor_path = instance.config.data_dir / audit.ANCHOR_FILE
    if not result.ok:
        click.echo(
            f"Audit log BROKEN at event {result.first_broken}: {result.problem} "
            f"({result.events} events verified before it).",
            err=True,
        )
        sys.exit(1)
    click.echo(f"Audit log intact: {result.events} events, chain verified.")
    if result.legacy:
        click.echo(
            f"{_count(result.legacy, 'event was', 'events were')} made before this instance "
            "had an audit key: checked by hash only, and fixed as they were when the key was made."
        )
    if result.anchored is None:
        click.echo(
            f"No anchor file ({anchor_path}): events cut from the end would not be seen; "
            "the next event recorded writes it."
        )
    else:
        click.echo(f"The anchor kept outside the database (event {result.anchored}) matches.")
    for checkpoint in result.checkpoints:
        click.echo(
            f"Checkpoint {checkpoint.source} of {checkpoint.day.isoformat()} "
            f"(event {checkpoint.event_id}) matches: the log up to it was not rewritten."
        )


@audit_group.command("checkpoint")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write the signed checkpoint (a new file), or - for standard output.",
)
@pass_state
def audit_checkpoint(state: _State, out: Path) -> None:
    """Sign the log's newest event and its hash, for an officer or offline machine to keep."""
    to_stdout = str(out) == "-"
    if not to_stdout and out.exists():
        raise CommandError(f"{out} already exists; choose another file name")
    with state.session() as (instance, session):
        result = audit.verify(session)
        if not result.ok:
            click.echo(
                f"Audit log BROKEN at event {result.first_broken}: {result.problem}; "
                "no checkpoint was written.",
                err=True,
            )
            sys.exit(1)
        today = datetime.now(UTC).date()
        checkpoint = audit.sign_checkpoint(
            instance.audit_keys, result.events, result.last_hash, today
        )
        if to_stdout:
            click.echo(checkpoint.to_bytes().decode(), nl=False)
        else:
            try:
                write_private_file(out, checkpoint.to_bytes())
            except OSError as exc:
                raise CommandError(f"cannot write {out}: {exc.strerror}") from None
        audit.record(session, ACTOR, "audit.checkpoint", detail=f"event {result.events}")
    if not to_stdout:
        click.echo(
            f"Wrote {out}: event {checkpoint.event_id}, {today.isoformat()}. Keep it off this "
            "server; 'dropbox audit verify --checkpoint FILE' then shows whether the log up to "
            "that event was rewritten."
        )


# --- database, backups and retention -------------------------------------------


@contextmanager
def _database_errors() -> Iterator[None]:
    """Turn a database failure (server down, wrong password) into one line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise CommandError(f"database error: {cause[0] if cause else type(exc).__name__}") from None


@cli.group("db")
def db_group() -> None:
    """The database schema (Alembic migrations)."""


@db_group.command("upgrade")
@pass_state
def db_upgrade(state: _State) -> None:
    """Bring the database schema to the newest revision and print it."""
    from dropbox.database import create_schema, current_revision, make_engine

    config = state.config()
    if not config.database_url and not config.data_dir.is_dir():
        raise CommandError(f"{config.data_dir} does not exist; run 'dropbox init' first")
    with _database_errors():
        engine = make_engine(config.db_url)
        try:
            with engine.connect() as connection:
                before = current_revision(connection)
            create_schema(engine)
            with engine.connect() as connection:
                after = current_revision(connection)
        finally:
            engine.dispose()
    if before == after:
        click.echo(f"The database schema is at revision {after}, the newest; nothing to do.")
    else:
        click.echo(f"Upgraded the database schema from {before or 'nothing'} to revision {after}.")


@cli.command("backup")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
def backup_command(state: _State, archive: Path) -> None:
    """Write ARCHIVE: the database and the encrypted blobs, consistent while the servers run."""
    from dropbox.admin import operations

    with state.instance() as instance:
        summary = operations.backup(instance, archive)
    click.echo(
        f"Wrote {summary.path} ({summary.size / 2**20:.1f} MiB): {summary.reports} reports, "
        f"{summary.items} items, {summary.blobs} blobs; schema revision {summary.revision}."
    )
    click.echo(
        "It holds no plaintext and no key that opens a report, but it holds the instance "
        "secrets (codename salt, audit keys): keep it where only operators can read it."
    )


@cli.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
def restore_command(state: _State, archive: Path) -> None:
    """Restore ARCHIVE into the configured data directory, which must be empty or absent."""
    from dropbox.admin import operations

    with _database_errors():
        summary = operations.restore(state.config(), archive)
    click.echo(
        f"Restored {summary.reports} reports and {summary.items} items into {summary.data_dir} "
        f"(schema revision {summary.revision})."
    )
    click.echo(f"Audit log intact: {summary.audit_events} events, chain verified.")
    click.echo("Sessions are not kept in backups: officers and sources sign in again.")


@cli.command("purge")
@click.option("--dry-run", is_flag=True, help="Only list the reports that would be removed.")
@pass_state
def purge_command(state: _State, dry_run: bool) -> None:
    """Crypto-shred closed reports older than retention.closed_report_days."""
    from dropbox.admin import operations

    with state.instance() as instance:
        days = instance.config.retention.closed_report_days
        removed = operations.purge(instance, dry_run=dry_run)
    if not removed:
        click.echo(f"No report was closed more than {days} days ago; nothing to purge.")
        return
    verb = "Would purge" if dry_run else "Purged"
    click.echo(f"{verb} {len(removed)} reports closed more than {days} days ago:")
    for entry in removed:
        click.echo(f"  {entry.designation} ({entry.office_code}, closed {entry.closed_on})")
    if dry_run:
        click.echo("Nothing was changed (dry run).")


# --- offline review --------------------------------------------------------------


@cli.group("bundle")
def bundle_group() -> None:
    """Offline review: an office's ciphertext to an offline machine, its replies and notes back.

    For an office that keeps its key off every networked machine. 'export'
    writes a bundle file to carry to the offline machine, where
    'dropbox reviewer --bundle FILE' opens it; 'import' stores the replies and
    notes written there. The server decrypts nothing either way.
    """


@bundle_group.command("export")
@click.option("--office", "code", required=True, metavar="CODE", help="The office, e.g. OIO.")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the bundle (a new file).",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Every report of the office and every file, not only what is new since the last export.",
)
@pass_state
def bundle_export(state: _State, code: str, out: Path, everything: bool) -> None:
    """Write OFFICE's new reports and items, still encrypted, to a bundle for offline review.

    A report goes in, with its metadata and its whole sealed thread, when it
    has anything not yet exported. A file exported before goes in as its name
    only (--all carries it again). Identity details stay on the server: they
    are revealed online, with a recorded reason. Each exported report is
    recorded in the audit log. Nothing is decrypted: carry the file to the
    offline machine and open it there with 'dropbox reviewer --bundle FILE'.
    """
    from dropbox.admin import bundles as offline

    with state.instance() as instance:
        summary = offline.export(instance, code, out, everything=everything)
    if summary is None:
        click.echo(
            f"Nothing new for {code} since its last export; no bundle was written"
            " (--all exports every report)."
        )
        return
    reports = _count(summary.reports, "report", "reports")
    new_items = _count(summary.new_items, "new item", "new items")
    files = _count(summary.files, "file", "files")
    click.echo(
        f"Wrote {summary.path} ({summary.size / 2**20:.1f} MiB): {reports} with {new_items},"
        f" {files} carried whole; bundle {summary.bundle_id}."
    )
    click.echo(
        "It holds ciphertext and metadata only. Open it on the offline machine with"
        f" 'dropbox reviewer --bundle {summary.path.name}', then bring back the bundle of"
        " replies and notes it writes for 'dropbox bundle import'."
    )


@bundle_group.command("import")
@click.argument("bundle_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--officer",
    "officer_name",
    metavar="USERNAME",
    help="The officer who did the offline review: the author of every reply and note.",
)
@pass_state
def bundle_import(state: _State, bundle_file: Path, officer_name: str | None) -> None:
    """Store the replies and notes of FILE, a bundle written by an offline reviewer app.

    The whole bundle is checked first: its format and version, that it
    answers an export of this server, that every report exists and is still
    the office's, and that every item is a whole envelope sealed exactly to
    the office (a note) or to the office and the report's source (a reply).
    Anything else refuses it whole: nothing is stored. Items stored by an
    earlier import of the same bundle are skipped, so importing twice adds
    nothing. Each item and the import are recorded in the audit log.
    """
    from dropbox.admin import bundles as offline
    from dropbox.bundles import BundleRefused

    with state.instance() as instance:
        try:
            summary = offline.import_return(instance, bundle_file, officer_name)
        except BundleRefused as refused:
            raise CommandError(f"{refused}; nothing was imported") from None
    added = summary.replies + summary.notes
    before = f" ({_count(summary.already, 'item was', 'items were')} imported before)"
    if not added:
        click.echo(f"Nothing new in {bundle_file}: every item was imported before.")
        return
    click.echo(
        f"Imported {bundle_file}: {_count(summary.replies, 'reply', 'replies')} and"
        f" {_count(summary.notes, 'note', 'notes')} added to"
        f" {_count(summary.reports, 'report', 'reports')}"
        + (before if summary.already else "")
        + "."
    )


# --- notification e-mails -------------------------------------------------------


@cli.command("notify")
@click.option("--once", is_flag=True, help="Send what is due now, then exit (for a timer or cron).")
@click.option(
    "--retry",
    is_flag=True,
    help="With --once: send the given-up mails again too (once the mail server works again).",
)
@click.option(
    "--test",
    "test_username",
    metavar="USERNAME",
    help="Send one test mail to this officer now, to check the [mail] settings and their key.",
)
@pass_state
def notify_command(state: _State, once: bool, retry: bool, test_username: str | None) -> None:
    """Send officers' notification e-mails that are due: counts only, never report content.

    Run it every minute from a timer (docs/deploy.md). Mails that fail are
    retried by later runs, after 1, 5 and 30 minutes and 2 hours, then
    given up; administrators see them in the reviewer app. Exit 1 if a mail
    failed in this run.

    With --test USERNAME it sends one test mail to that officer at once, as
    their notifications go (encrypted if they registered an OpenPGP key), and
    says whether the mail server took it. With --once --retry it also sends
    the mails given up on, for when the mail server works again.
    """
    from dropbox import notify

    if once and test_username:
        raise CommandError("give --once or --test, not both")
    if retry and not once:
        raise CommandError("--retry goes with --once: 'dropbox notify --once --retry'")
    if test_username:
        with state.instance() as instance:
            sent = notify.send_test_mail(instance, test_username, ACTOR)
        encrypted = (
            f", encrypted to OpenPGP key {sent.openpgp_fingerprint}"
            if sent.openpgp_fingerprint
            else ", not encrypted (they registered no OpenPGP key)"
        )
        click.echo(
            f"The mail server took a test mail to {test_username} at {sent.address}{encrypted}."
        )
        click.echo("Ask them whether it arrived (and opens): a mail server may still drop it.")
        return
    if not once:
        raise CommandError(
            "give --once: run 'dropbox notify --once' from a timer every minute "
            "(or --test USERNAME to send one test mail)"
        )
    with state.instance() as instance:
        summary = notify.run_once(instance, retry=retry, actor=ACTOR)
    if retry:
        click.echo(f"Given-up mails made due again: {summary.retried}.")
    parts = [f"sent {_count(summary.sent, 'mail', 'mails')}"]
    if summary.failed:
        parts.append(f"{summary.failed} failed")
    if summary.gave_up:
        parts.append(f"{summary.gave_up} of them given up after {notify.MAX_ATTEMPTS} attempts")
    if summary.waiting:
        parts.append(f"{_count(summary.waiting, 'officer waits', 'officers wait')} for a retry")
    click.echo(f"Notifications: {', '.join(parts)}.")
    for error in summary.errors:
        click.echo(f"  failed: {error}")
    if summary.failed:
        sys.exit(1)


# --- consistency ---------------------------------------------------------------


def _count(number: int, singular: str, plural: str) -> str:
    """'1 event was', '2 events were'."""
    return f"{number} {singular if number == 1 else plural}"


@cli.command("fsck")
@click.option(
    "--repair", is_flag=True, help="Remove the leftovers found (never a blob an item refers to)."
)
@click.option(
    "--forget-missing",
    is_flag=True,
    help="With --repair, also remove items whose blob is missing (each recorded in the audit log).",
)
@click.option(
    "--grace-minutes",
    type=click.IntRange(min=0),
    default=int(fsck.DEFAULT_GRACE.total_seconds() // 60),
    show_default=True,
    help="Leave stray files younger than this alone (uploads in progress); 0 with servers stopped.",
)
@pass_state
def fsck_command(state: _State, repair: bool, forget_missing: bool, grace_minutes: int) -> None:
    """Check that the encrypted blobs and the database agree; exit 1 if problems remain.

    Finds blobs without an item, partial writes and leftover backup folders
    (what a crash or an interrupted upload leaves), and items whose blob is
    missing or damaged. Items are never removed unless --forget-missing is given:
    the database holds their only key, so a blob put back from a backup makes
    them whole again.
    """
    if forget_missing and not repair:
        raise CommandError("--forget-missing only works together with --repair")
    grace = timedelta(minutes=grace_minutes)
    with state.instance() as instance:
        findings = fsck.check(instance, grace)
        repairs = fsck.repair(instance, findings, forget_missing=forget_missing) if repair else None
        after = fsck.check(instance, grace) if repair else findings
    for line in fsck.report_lines(
        findings, repairs, after, grace_minutes=grace_minutes, repaired=repair
    ):
        click.echo(line)
    if after.problems:
        sys.exit(1)


# --- serving -----------------------------------------------------------------


@cli.command()
@click.argument("interface", type=click.Choice(["source", "reviewer"]))
@pass_state
def run(state: _State, interface: str) -> None:
    """Serve the source interface, or the case server ("reviewer"), with gunicorn.

    The reviewer app, which decrypts, is not served here: officers run
    `dropbox reviewer` on their own machines.
    """
    from launcher.serve import serve

    serve(state.config(), interface)


# --- demo --------------------------------------------------------------------

DEMO_LOGINS = "DEMO-LOGINS.json"


DEMO_REVIEWER_SETTINGS = "reviewer.toml"


def _demo_config_text(source_port: int, case_port: int) -> str:
    return (
        "# Configuration of the local demo instance made by 'dropbox demo'.\n"
        "# See config.example.toml for every setting. [reviewer] is the case server.\n"
        'data_dir = "."\n\n'
        f"[source]\nport = {source_port}\nworkers = 1\n\n"
        f"[reviewer]\nport = {case_port}\nworkers = 1\n"
    )


def _demo_reviewer_text(case_port: int, reviewer_port: int, pins: dict[str, str]) -> str:
    """The reviewer app's settings, as an officer's machine would hold them."""
    lines = [
        "# Settings of the demo's reviewer app (the officer's side): 'dropbox reviewer'.",
        "[reviewer]",
        f'server = "http://127.0.0.1:{case_port}"',
        f"port = {reviewer_port}",
        "",
        "# Each office's key fingerprint, as 'dropbox office create' printed it.",
        "[pins]",
    ]
    lines += [f"{code} = {json.dumps(value)}" for code, value in pins.items()]
    return "\n".join(lines) + "\n"


def _demo_offices_text(config: Config, pins: dict[str, str]) -> str:
    """The configuration's [[offices]] tables, each pinned to its new key's fingerprint."""
    lines = []
    for settings in config.offices:
        # A JSON string is a TOML basic string (the same escapes).
        lines += [
            "",
            "[[offices]]",
            f"code = {json.dumps(settings.code)}",
            f"name = {json.dumps(settings.name)}",
            f"description = {json.dumps(settings.description)}",
            f"fingerprint = {json.dumps(pins[settings.code])}",
        ]
        for language, text in settings.translations.items():
            lines.append(f"translations.{language}.name = {json.dumps(text.name)}")
            lines.append(f"translations.{language}.description = {json.dumps(text.description)}")
    return "\n".join(lines) + "\n"


def _create_demo(data_dir: Path, source_port: int, case_port: int, reviewer_port: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "config.toml").write_text(_demo_config_text(source_port, case_port))
    config = load(data_dir / "config.toml")
    instance = Instance.initialise(config)
    logins = []
    pins = {}
    office_keys = {}
    try:
        with instance.sessions.begin() as session:
            recovery_dir = data_dir / "recovery"
            recovery_dir.mkdir(exist_ok=True, mode=0o700)
            for settings in config.offices:
                _, secret_key, data, passphrase = offices.create(
                    session, config, settings.code, config.crypto.kdf_cost, ACTOR
                )
                pins[settings.code] = fingerprint(secret_key.public_key)
                office_keys[settings.code] = secret_key
                _write_private_file(recovery_dir / f"{settings.code}-recovery.json", data)
                (recovery_dir / f"{settings.code}-passphrase.txt").write_text(passphrase + "\n")
                username = f"{settings.code.lower()}-officer"
                password = _demo_passphrase()
                created, totp_secret = officers.add(
                    session,
                    username,
                    password,
                    config.crypto.kdf_cost,
                    ACTOR,
                    display_name=f"Demo {settings.code} officer",
                    is_admin=True,
                )
                # The demo made this officer's key pair itself, just now: its own
                # fingerprint of it is what the officer would read out.
                assert created.public_key is not None  # noqa: S101 - officers.add sets it
                offices.grant(
                    session,
                    settings.code,
                    created,
                    secret_key,
                    ACTOR,
                    read_out=fingerprint(public_key_from_bytes(created.public_key)),
                )
                logins.append(
                    {
                        "office": settings.code,
                        "username": username,
                        "passphrase": password,
                        "totp_secret": totp_secret,
                    }
                )
    finally:
        instance.close()
    # The demo runs pinned, as a real instance should: its offices' keys exist only now.
    with (data_dir / "config.toml").open("a") as handle:
        handle.write(_demo_offices_text(config, pins))
    (data_dir / DEMO_REVIEWER_SETTINGS).write_text(
        _demo_reviewer_text(case_port, reviewer_port, pins)
    )
    _seed_demo_reports(load(data_dir / "config.toml"), office_keys, logins)
    _write_private_file(data_dir / DEMO_LOGINS, json.dumps(logins, indent=2).encode())


def _seed_demo_reports(
    config: Config, office_keys: dict[str, KeyChain], logins: list[dict[str, str]]
) -> None:
    """Sample reports in every state, sealed to the pinned office keys (see dropbox.admin.demo)."""
    from dropbox.admin import demo

    instance = Instance.open(config)
    try:
        with instance.sessions.begin() as session:
            acting = {login["office"]: officers.get(session, login["username"]) for login in logins}
            demo.seed(instance, session, office_keys, acting)
    finally:
        instance.close()


def _demo_passphrase() -> str:
    from crypto.recovery import generate_passphrase

    return " ".join(generate_passphrase().split()[:5])


def _print_demo(data_dir: Path, config: Config) -> None:
    import pyotp

    from journalist_interface.settings import load_settings

    logins = json.loads((data_dir / DEMO_LOGINS).read_text())
    reviewer = load_settings(data_dir / DEMO_REVIEWER_SETTINGS)
    click.echo("")
    click.echo("Dropbox demo instance (demo data only: never use these keys for real reports)")
    click.echo(f"  data:             {data_dir.resolve()}")
    click.echo(f"  source interface: http://{config.source.host}:{config.source.port}/")
    click.echo(f"  reviewer app:     http://{reviewer.host}:{reviewer.port}/  (open this one)")
    click.echo(
        f"  case server:      http://{config.reviewer.host}:{config.reviewer.port}/api/v2/"
        "  (the reviewer app's server: JSON only, never decrypts)"
    )
    click.echo("")
    for login in logins:
        code = pyotp.TOTP(login["totp_secret"]).now()
        click.echo(f"  {login['office']} officer: {login['username']}")
        click.echo(f"    passphrase:  {login['passphrase']}")
        click.echo(f"    TOTP secret: {login['totp_secret']} (current code {code})")
    click.echo("")
    command = Path(sys.executable).parent / "dropbox"
    shown = os.path.relpath(command) if command.exists() else "dropbox"
    click.echo(f"  Current TOTP codes at any time: {shown} demo --codes --data-dir {data_dir}")
    click.echo("  Each demo officer is also an administrator (officers, grants, audit log).")
    click.echo(
        "  The inbox holds sample reports (demo data) in each state: new, acknowledged,"
        " overdue, urgent, referred and closed."
    )
    click.echo("  Stop with Ctrl-C.")


@cli.command()
@click.option(
    "--data-dir",
    default="./demo-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo instance lives (made on first run, reused after).",
)
@click.option("--source-port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--reviewer-port",
    default=8081,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The reviewer app, which officers open.",
)
@click.option("--case-port", default=8082, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-serve", is_flag=True, help="Set up and print the logins, but start nothing.")
@click.option("--codes", is_flag=True, help="Only print the demo officers' current TOTP codes.")
def demo(
    data_dir: Path,
    source_port: int,
    reviewer_port: int,
    case_port: int,
    no_serve: bool,
    codes: bool,
) -> None:
    """Create (or reuse) a local demo: source interface, case server and reviewer app."""
    if codes:
        import pyotp

        if not (data_dir / DEMO_LOGINS).exists():
            raise CommandError(f"no demo instance in {data_dir}; run 'dropbox demo' first")
        for login in json.loads((data_dir / DEMO_LOGINS).read_text()):
            click.echo(f"{login['username']}: {pyotp.TOTP(login['totp_secret']).now()}")
        return
    if not (data_dir / DEMO_LOGINS).exists():
        if data_dir.exists() and any(data_dir.iterdir()):
            raise CommandError(f"{data_dir} exists but holds no demo; remove it or pick another")
        click.echo(f"Creating a demo instance in {data_dir} ...")
        _create_demo(data_dir, source_port, case_port, reviewer_port)
    config_path = data_dir / "config.toml"
    config = load(config_path)
    _print_demo(data_dir, config)
    if no_serve:
        return
    from dropbox.admin import demo as demo_data

    try:
        demo_data.serve_demo(
            [sys.executable, "-m", "launcher", "--config", str(config_path)],
            data_dir / DEMO_REVIEWER_SETTINGS,
        )
    except demo_data.DemoStopped as stopped:
        raise CommandError(str(stopped)) from None


cli.add_command(tor_config)


# --- entry point -------------------------------------------------------------


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command line; turn every failure into one line and exit code 2."""
    # Whatever umask the shell or service manager gave: what this program creates
    # (the database and its journals, blobs, backups) is readable by its owner only.
    os.umask(UMASK)
    try:
        result = cli.main(args=argv, prog_name="dropbox", standalone_mode=False)
    except click.exceptions.Abort as exc:
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        if interrupted:  # a second Ctrl-C from here on ends the program at once
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        click.echo("dropbox: cancelled", err=True)
        if interrupted:
            # End as a program ended by Ctrl-C does, so that a shell or the demo's
            # supervisor sees the signal, not a failure.
            os.kill(os.getpid(), signal.SIGINT)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"dropbox: {exc.format_message()}", err=True)
        sys.exit(2)
    except (ConfigError, InstanceError, DropboxError) as exc:
        click.echo(f"dropbox: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        click.echo(f"dropbox: unexpected error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
    sys.exit(result if isinstance(result, int) else 0)
