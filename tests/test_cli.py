"""The `dropbox` command, end to end in a temporary directory, as an operator runs it."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pyotp
import pytest

from crypto.errors import DecryptionError
from crypto.keys import (
    KeyChain,
    XWingSecretKey,
    derive_officer_keys,
    public_key_from_bytes,
    wrap_with_wrapping_key,
)
from dropbox import audit, officers, offices
from dropbox.config import load
from dropbox.instance import Instance
from launcher.serve import FIRST_BYTES_WAIT_SECONDS, QuitSafeThreadWorker, gunicorn_options
from tests.conftest import (
    CHEAP_COST,
    CHEAP_CRYPTO_TOML,
    free_port,
    invoke,
    new_database_url,
    run_cli,
)
from tests.served import REPO, Browser, report_form, serving, start_source, with_umask

pytestmark = pytest.mark.database_engine

PASSPHRASE = "correct horse battery staple"


def write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'data_dir = "data"\ndatabase_url = "{new_database_url()}"\n{extra}\n{CHEAP_CRYPTO_TOML}'
    )
    return path


def recovery_passphrase(output: str) -> str:
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("Recovery passphrase"))
    return lines[index + 1].strip()


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dropbox: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """An initialised instance with both offices; returns (workdir, recovery passphrases)."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path)
    assert invoke("--config", str(config), "init").returncode == 0
    passphrases = {}
    for code in ("OIO", "ECO"):
        result = invoke("--config", str(config), "office", "create", code)
        assert result.returncode == 0, result.stderr
        passphrases[code] = recovery_passphrase(result.stdout)
    return tmp_path, passphrases


def test_full_setup_gives_an_officer_who_can_open_the_office_key(
    setup: tuple[Path, dict[str, str]],
) -> None:
    workdir, passphrases = setup
    config = workdir / "config.toml"
    recovery_file = workdir / "ECO-recovery.json"
    assert stat.S_IMODE(recovery_file.stat().st_mode) == 0o600
    assert len(passphrases["ECO"].split()) == 10

    added = run_cli(
        "--config",
        str(config),
        "officer",
        "add",
        "amina",
        "--name",
        "Amina K.",
        input=f"{PASSPHRASE}\n{PASSPHRASE}\n",
    )
    assert added.returncode == 0, added.stderr
    uri = re.search(r"otpauth://\S+", added.stdout)
    assert uri is not None and "amina" in uri.group(0)
    totp_secret = re.search(r"secret=([A-Z2-7]+)", uri.group(0))
    assert totp_secret is not None
    # The key pair was made by `officer add`: it prints the fingerprint the grant needs.
    shown = re.search(r"Key fingerprint: ((?:XWING )?(?:[A-Z2-7]{4} ){7}[A-Z2-7]{4})", added.stdout)
    assert shown is not None, added.stdout

    granted = run_cli(
        "--config",
        str(config),
        "officer",
        "grant",
        "amina",
        "ECO",
        "--recovery-file",
        str(recovery_file),
        "--fingerprint",
        shown.group(1),
        input=passphrases["ECO"] + "\n",
    )
    assert granted.returncode == 0, granted.stderr
    assert "amina now has access to ECO" in granted.stdout

    listed = run_cli("--config", str(config), "officer", "list")
    assert re.search(r"amina\s+ECO\s+officer\s+active", listed.stdout), listed.stdout

    instance = Instance.open(load(config))
    try:
        with instance.sessions.begin() as session:
            amina = officers.get(session, "amina")
            # Derived as her reviewer app derives: the server stored no passphrase hash.
            secret_key = officers.open_secret_key(amina, PASSPHRASE, CHEAP_COST)
            with pytest.raises(DecryptionError):
                officers.open_secret_key(amina, "not the passphrase", CHEAP_COST)
            office_key = offices.office_key(session, amina, secret_key, "ECO")
            assert bytes(office_key.public_key) == offices.get(session, "ECO").public_key
            with pytest.raises(offices.AccessDenied):
                offices.office_key(session, amina, secret_key, "OIO")
            actions = [e.action for e in session.query(audit.AuditEvent).order_by("id")]
            assert actions == ["office.create", "office.create", "officer.add", "office.grant"]
        with instance.sessions() as session:  # not committed: the sign-in leaves no trace
            amina = officers.get(session, "amina")
            auth_key, _ = officers.derive_auth_key(amina, PASSPHRASE, CHEAP_COST)
            code = pyotp.TOTP(totp_secret.group(1)).now()
            assert officers.sign_in(session, "amina", auth_key, code).ok
    finally:
        instance.close()

    verified = run_cli("--config", str(config), "audit", "verify")
    assert verified.returncode == 0
    assert "4 events" in verified.stdout


def test_office_recover_checks_the_file_and_can_issue_a_new_passphrase(
    setup: tuple[Path, dict[str, str]],
) -> None:
    workdir, passphrases = setup
    config = str(workdir / "config.toml")
    new_file = workdir / "OIO-new.json"
    result = invoke(
        "--config",
        config,
        "office",
        "recover",
        "OIO",
        "--recovery-file",
        str(workdir / "OIO-recovery.json"),
        "--new-recovery-file",
        str(new_file),
        input=passphrases["OIO"] + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert "opens OIO's key" in result.stdout
    new_passphrase = recovery_passphrase(result.stdout)
    assert new_passphrase != passphrases["OIO"]

    again = invoke(
        "--config",
        config,
        "office",
        "recover",
        "OIO",
        "--recovery-file",
        str(new_file),
        input=new_passphrase + "\n",
    )
    assert again.returncode == 0, again.stderr

    wrong = invoke(
        "--config",
        config,
        "office",
        "recover",
        "OIO",
        "--recovery-file",
        str(workdir / "OIO-recovery.json"),
        input="wrong words\n",
    )
    assert_one_line_error(wrong, "recovery passphrase is not right")

    other = invoke(
        "--config",
        config,
        "office",
        "recover",
        "ECO",
        "--recovery-file",
        str(workdir / "OIO-recovery.json"),
        input=passphrases["OIO"] + "\n",
    )
    assert_one_line_error(other, "belongs to another office")


def test_officer_passphrase_change_rewraps_the_same_key(
    setup: tuple[Path, dict[str, str]],
) -> None:
    workdir, _ = setup
    config = workdir / "config.toml"
    added = invoke(
        "--config", str(config), "officer", "add", "jon", input=f"{PASSPHRASE}\n{PASSPHRASE}\n"
    )
    assert added.returncode == 0
    found = re.search(r"secret=([A-Z2-7]+)", added.stdout)
    assert found is not None
    totp = pyotp.TOTP(found.group(1))
    instance = Instance.open(load(config))
    try:
        with instance.sessions.begin() as session:
            jon = officers.get(session, "jon")
            key = officers.open_secret_key(jon, PASSPHRASE, CHEAP_COST)
            auth_key, _ = officers.derive_auth_key(jon, PASSPHRASE, CHEAP_COST)
            # Re-wrapped where the passphrase is typed, as the reviewer app does.
            salt = os.urandom(16)
            new = derive_officer_keys("a brand new passphrase", salt, CHEAP_COST)
            officers.change_passphrase(
                session,
                jon,
                auth_key,
                totp.now(),
                new.auth_key,
                wrap_with_wrapping_key(key, new.wrapping_key, salt, CHEAP_COST),
                minimum=CHEAP_COST,
            )
        with instance.sessions.begin() as session:
            jon = officers.get(session, "jon")
            with pytest.raises(DecryptionError):
                officers.open_secret_key(jon, PASSPHRASE, CHEAP_COST)
            rewrapped = officers.open_secret_key(jon, "a brand new passphrase", CHEAP_COST)
            assert bytes(rewrapped) == bytes(key)
    finally:
        instance.close()


def test_officer_invite_prints_a_one_time_code_and_again_re_enrols(
    setup: tuple[Path, dict[str, str]],
) -> None:
    workdir, _ = setup
    config = str(workdir / "config.toml")
    invited = invoke("--config", config, "officer", "invite", "nadia", "--name", "Nadia")
    assert invited.returncode == 0, invited.stderr
    code = re.search(r"Enrolment code for nadia \(works once until [^)]*\): (\S+)", invited.stdout)
    assert code is not None, invited.stdout
    listed = invoke("--config", config, "officer", "list")
    assert re.search(r"nadia\s+-\s+officer\s+active, not enrolled", listed.stdout), listed.stdout
    instance = Instance.open(load(workdir / "config.toml"))
    try:
        with instance.sessions() as session:
            assert officers.check_enrolment(session, "nadia", code.group(1)).username == "nadia"
    finally:
        instance.close()

    added = invoke(
        "--config", config, "officer", "add", "jon", input=f"{PASSPHRASE}\n{PASSPHRASE}\n"
    )
    assert added.returncode == 0
    again = invoke("--config", config, "officer", "invite", "jon", "--again")
    assert again.returncode == 0, again.stderr
    assert "Enrolment code for jon" in again.stdout
    listed = invoke("--config", config, "officer", "list")
    assert re.search(r"jon\s+-\s+officer\s+active, not enrolled", listed.stdout), listed.stdout
    taken = invoke("--config", config, "officer", "invite", "jon")
    assert_one_line_error(taken, "already exists")


@pytest.mark.parametrize(
    ("args", "stdin", "fragments"),
    [
        (["office", "create", "XYZ"], None, ["unknown office 'XYZ'"]),
        (["office", "create", "OIO"], None, ["already exists"]),
        (["officer", "add", "Bad Name"], None, ["a username is"]),
        (["officer", "add", "shorty"], "short\nshort\n", ["at least 12 characters"]),
        (
            [
                "officer",
                "grant",
                "nobody",
                "OIO",
                "--recovery-file",
                "OIO-recovery.json",
                "--fingerprint",
                "AAAA " * 7 + "AAAA",
            ],
            "x\n",
            ["no officer is called 'nobody'"],
        ),
        (
            ["officer", "grant", "x", "OIO", "--recovery-file", "missing.json"],
            None,
            ["missing.json", "does not exist"],
        ),
        (["officer", "frobnicate"], None, ["No such command"]),
        (["run", "elsewhere"], None, ["Invalid value"]),
        (["init"], None, ["already initialised"]),
    ],
)
def test_command_errors_are_one_line_and_exit_2(
    setup: tuple[Path, dict[str, str]], args: list[str], stdin: str | None, fragments: list[str]
) -> None:
    workdir, _ = setup
    result = invoke("--config", str(workdir / "config.toml"), *args, input=stdin)
    assert_one_line_error(result, *fragments)


def test_duplicate_officer_is_refused(setup: tuple[Path, dict[str, str]]) -> None:
    workdir, _ = setup
    config = str(workdir / "config.toml")
    first = invoke("--config", config, "officer", "add", "sam", input=f"{PASSPHRASE}\n" * 2)
    assert first.returncode == 0
    second = invoke("--config", config, "officer", "add", "sam", input=f"{PASSPHRASE}\n" * 2)
    assert_one_line_error(second, "already exists")


@pytest.mark.parametrize("username", ["sam\n", "Sam", "s", "sam smith", "sam\u0000"])
def test_a_username_outside_the_allowed_form_is_refused(
    setup: tuple[Path, dict[str, str]], username: str
) -> None:
    workdir, _ = setup
    config = str(workdir / "config.toml")
    added = invoke("--config", config, "officer", "add", username, input=f"{PASSPHRASE}\n" * 2)
    assert_one_line_error(added, "a username is 2 to 64 characters")


def test_configuration_problems_are_named(tmp_path: Path) -> None:
    missing = invoke("--config", str(tmp_path / "nope.toml"), "init")
    assert_one_line_error(missing, "configuration file not found")

    bad = write_config(tmp_path, "[source]\nport = 'eighty'\n")
    assert_one_line_error(invoke("--config", str(bad), "init"), "source.port", "integer")

    via_env = invoke("officer", "list", env={"DROPBOX_CONFIG": str(bad)})
    assert_one_line_error(via_env, "source.port")


def test_commands_on_an_uninitialised_instance_say_so(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = invoke("--config", str(config), "officer", "list")
    assert_one_line_error(result, "not an initialised instance", "dropbox init")


def test_audit_verify_names_the_first_altered_event(setup: tuple[Path, dict[str, str]]) -> None:
    workdir, _ = setup
    config = workdir / "config.toml"
    instance = Instance.open(load(config))
    try:
        with instance.sessions.begin() as session:
            first = session.get(audit.AuditEvent, 1)
            assert first is not None
            first.detail = "OIO something else"
    finally:
        instance.close()
    result = invoke("--config", str(config), "audit", "verify")
    assert result.returncode == 1
    assert "BROKEN at event 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["init"],
        ["office"],
        ["office", "create"],
        ["office", "recover"],
        ["officer"],
        ["officer", "add"],
        ["officer", "grant"],
        ["officer", "list"],
        ["audit", "verify"],
        ["audit", "checkpoint"],
        ["demo"],
        ["run"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.returncode == 0
    assert "Usage: dropbox" in result.stdout


def _get(url: str) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - localhost only
        return response.status, dict(response.headers), response.read().decode()


def _wait_for(url: str, process: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited early: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds} s")


def test_demo_sets_up_serves_both_interfaces_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    source_port, reviewer_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher",
            "demo",
            "--data-dir",
            str(data_dir),
            "--source-port",
            str(source_port),
            "--reviewer-port",
            str(reviewer_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{source_port}/", process)
        _wait_for(f"http://127.0.0.1:{reviewer_port}/", process)
        status, headers, body = _get(f"http://127.0.0.1:{source_port}/")
        assert status == 200
        assert "Office of Internal Oversight" in body
        assert "Server" not in headers
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr
    assert f"http://127.0.0.1:{source_port}/" in stdout
    assert f"http://127.0.0.1:{reviewer_port}/" in stdout
    assert "oio-officer" in stdout and "eco-officer" in stdout

    logins = json.loads((data_dir / "DEMO-LOGINS.json").read_text())
    instance = Instance.open(load(data_dir / "config.toml"))
    try:
        with instance.sessions.begin() as session:
            for login in logins:
                officer = officers.get(session, login["username"])
                cost = instance.config.crypto.kdf_cost
                key = officers.open_secret_key(officer, login["passphrase"], cost)
                office_key = offices.office_key(session, officer, key, login["office"])
                assert isinstance(office_key.current, XWingSecretKey)
                assert public_key_from_bytes(offices.get(session, login["office"]).public_key) == (
                    office_key.public_key
                )
                auth_key, _ = officers.derive_auth_key(officer, login["passphrase"], cost)
                code = pyotp.TOTP(login["totp_secret"]).now()
                assert officers.sign_in(session, officer.username, auth_key, code).ok
            # The demo runs pinned: its configuration holds each office key's fingerprint.
            states = [s.state for s in offices.pin_status(session, instance.config)]
            assert states == ["pinned", "pinned"]
    finally:
        instance.close()

    codes = invoke("demo", "--codes", "--data-dir", str(data_dir))
    assert codes.returncode == 0
    for login in logins:
        code = pyotp.TOTP(login["totp_secret"]).now()
        assert re.search(rf"{login['username']}: \d{{6}}", codes.stdout)
        assert code.isdigit()

    reused = invoke("demo", "--no-serve", "--data-dir", str(data_dir))
    assert reused.returncode == 0, reused.stderr
    assert logins[0]["passphrase"] in reused.stdout


# --- what the program creates is its owner's alone ----------------------------------------


def _run_with_umask_022(*args: str, cwd: Path, input: str | None = None) -> None:
    """Run the real `dropbox` in a child process started with umask 0022, as a shell gives it."""
    command = [sys.executable, "-m", "launcher", *args]
    result = subprocess.run(
        with_umask(command, 0o022),
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, (args, result.stderr)


def _not_private(data_dir: Path) -> list[str]:
    """Every file or directory under `data_dir` (itself too) that anyone but its owner may use."""
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(data_dir.parent)} {mode:04o}")
    return found


def test_every_file_the_program_makes_is_private_even_under_umask_0022(tmp_path: Path) -> None:
    """init, office create, officer add, a served upload and a backup, each started with umask
    0022: every file under the data directory is 0600 and every directory 0700 (or stricter)."""
    port = free_port()
    config = write_config(tmp_path, f"[source]\nport = {port}\nworkers = 1\n")
    data_dir = tmp_path / "data"
    given = ("--config", str(config))
    _run_with_umask_022(*given, "init", cwd=tmp_path)
    for code in ("OIO", "ECO"):
        recovery = str(tmp_path / f"{code}-recovery.json")
        _run_with_umask_022(
            *given, "office", "create", code, "--recovery-file", recovery, cwd=tmp_path
        )
    _run_with_umask_022(
        *given, "officer", "add", "amina", input=f"{PASSPHRASE}\n{PASSPHRASE}\n", cwd=tmp_path
    )
    with serving(config, port, data_dir, 1, umask=0o022) as served:
        browser = Browser(served)
        _, page = browser.new_codename()
        fields = {"category": "fraud", "message": "The ledger shows payments to a shell company."}
        body, content_type = report_form(page, fields, [("ledger.csv", os.urandom(300_000))])
        sent = browser.request("POST", "/report", None, body, content_type)
        assert sent.status == 302, (sent.status, sent.body[:300])
        assert any((data_dir / "blobs").rglob("*"))
        # While it serves: the database's journals (SQLite's -wal and -shm) exist now.
        assert _not_private(data_dir) == []
    _run_with_umask_022(*given, "backup", str(tmp_path / "backup.tar"), cwd=tmp_path)
    assert _not_private(data_dir) == []
    assert stat.S_IMODE((tmp_path / "backup.tar").stat().st_mode) == 0o600


# --- the demo's sample reports and its stop (issue 13) ------------------------------------


def test_the_demo_holds_sample_reports_in_every_state(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from dropbox.models import Item, ItemKind, Report

    data_dir = tmp_path / "demo"
    made = invoke("demo", "--no-serve", "--data-dir", str(data_dir))
    assert made.returncode == 0, made.stderr
    assert "sample reports (demo data)" in made.stdout

    logins = {
        login["office"]: login for login in json.loads((data_dir / "DEMO-LOGINS.json").read_text())
    }
    instance = Instance.open(load(data_dir / "config.toml"))
    today = datetime.now(UTC).date()
    try:
        with instance.sessions() as session:
            reports = list(session.execute(select(Report)).scalars())
            statuses = sorted(r.status for r in reports)
            assert statuses == sorted(
                ["received", "acknowledged", "received", "received", "referred", "closed"]
            )
            assert sum(r.urgent for r in reports) == 1
            overdue = [
                r for r in reports if r.acknowledged_at is None and r.acknowledge_due < today
            ]
            assert len(overdue) == 1 and not overdue[0].urgent
            new = [r for r in reports if r.status == "received" and r.acknowledge_due >= today]
            assert len(new) == 2  # one of them urgent
            closed = next(r for r in reports if r.status == "closed")
            assert closed.outcome and closed.acknowledged_at is not None
            referred = next(r for r in reports if r.status == "referred")
            assert referred.office_code != instance.config.category(referred.category).office
            # Each source key is X-Wing (1,216 bytes), as the source interface now makes it.
            assert {len(r.source_public_key) for r in reports} == {1216}
            # Each was made through the source path and says it is demo data.
            keys = {
                code: _demo_office_key(instance, session, login) for code, login in logins.items()
            }
            for report in reports:
                kinds = [
                    i.kind
                    for i in session.execute(
                        select(Item).where(Item.report_id == report.id).order_by(Item.seq)
                    ).scalars()
                ]
                assert kinds[:2] == [ItemKind.MESSAGE, ItemKind.ACKNOWLEDGEMENT], kinds
                message = session.execute(
                    select(Item).where(Item.report_id == report.id, Item.seq == 1)
                ).scalar_one()
                text = _open_text(instance, report.id, message, keys[report.office_code])
                assert text.startswith("DEMO DATA: a sample report made by 'dropbox demo'")
    finally:
        instance.close()


def _demo_office_key(instance: Instance, session: object, login: dict[str, str]) -> KeyChain:
    officer = officers.get(session, login["username"])  # type: ignore[arg-type]
    cost = instance.config.crypto.kdf_cost
    key = officers.open_secret_key(officer, login["passphrase"], cost)
    office_key = offices.office_key(session, officer, key, login["office"])  # type: ignore[arg-type]
    # The demo's office keys are X-Wing, as every new office's is.
    assert isinstance(office_key.current, XWingSecretKey)
    return office_key


def _open_text(instance: Instance, report_id: str, item: object, key: KeyChain) -> str:
    from crypto import envelope
    from dropbox.items import item_context, read_message_document

    with instance.store.open(item.blob) as blob:  # type: ignore[attr-defined]
        body = blob.read()
    _, data = envelope.decrypt_bytes(
        item.key_block,  # type: ignore[attr-defined]
        body,
        key,
        item_context(report_id, item.id),  # type: ignore[attr-defined]
    )
    return read_message_document(data)[0]


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has ended; its parent just has not reaped it)."""
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


def test_ctrl_c_stops_the_whole_demo_within_five_seconds_without_alarm(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    ports = {name: free_port() for name in ("source", "reviewer", "case")}
    # Its own process group, as a shell runs a foreground job: Ctrl-C reaches every process.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher",
            "demo",
            "--data-dir",
            str(data_dir),
            *(item for name, port in ports.items() for item in (f"--{name}-port", str(port))),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    everything: set[int] = set()
    try:
        _wait_for(f"http://127.0.0.1:{ports['source']}/", process, seconds=120)
        _wait_for(f"http://127.0.0.1:{ports['reviewer']}/login", process)
        _wait_for(f"http://127.0.0.1:{ports['case']}/robots.txt", process)
        # An open keep-alive connection, as a browser leaves one, must not hold the stop up.
        keep = http.client.HTTPConnection("127.0.0.1", ports["source"], timeout=5)
        keep.request("GET", "/")
        keep.getresponse().read()
        everything = _descendants(process.pid) | {process.pid}
        assert len(everything) >= 6  # the demo, two gunicorn masters and workers, the app
        # Ctrl-C: the terminal sends SIGINT to the foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        started = time.monotonic()
        while time.monotonic() < started + 5 and _running(everything):
            process.poll()
            time.sleep(0.1)
        stopped_in = time.monotonic() - started
        still = _running(everything)
        keep.close()
    finally:
        for pid in _running(everything | _descendants(process.pid)):
            os.kill(pid, signal.SIGKILL)
        output = process.communicate(timeout=30)[0]
    assert not still, f"processes of the demo still ran after 5 s ({still}):\n{output}"
    assert stopped_in < 5
    assert process.returncode == 0, output
    for alarming in ("SIGKILL", "out of memory", "Traceback", "[ERROR]", "slow to stop"):
        assert alarming not in output, output


def _ignores_sigint(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.MULTILINE)
    assert found is not None, status
    return bool(int(found.group(1), 16) & (1 << (signal.SIGINT - 1)))


def test_ctrl_c_on_dropbox_run_reaches_the_gunicorn_master_only(tmp_path: Path) -> None:
    """Each worker ignores SIGINT: the master alone stops it, once (no double quit, no hang)."""
    port = free_port()
    config = write_config(tmp_path, f"[source]\nport = {port}\nworkers = 2\n")
    assert invoke("--config", str(config), "init").returncode == 0
    served = start_source(config, port, tmp_path / "data", 2)
    try:
        master = served.process.pid
        # Each worker sets it up once its app is loaded: wait for that (10 s at most).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(map(_ignores_sigint, served.workers)):
            time.sleep(0.1)
        for worker in served.workers:
            assert _ignores_sigint(worker), f"worker {worker} takes SIGINT"
        everything = {master, *served.workers}
        os.killpg(master, signal.SIGINT)  # Ctrl-C in the terminal: the whole job
        started = time.monotonic()
        while time.monotonic() < started + 5 and _running(everything):
            served.process.poll()
            time.sleep(0.1)
        assert not _running(everything)
    finally:
        served.stop()
    log = served.log.read_text()
    assert "SIGKILL" not in log and "Traceback" not in log, log


def test_a_worker_told_to_stop_while_it_hands_a_connection_to_its_threads_exits(
    tmp_path: Path,
) -> None:
    """SIGQUIT can come while the worker is inside ThreadPoolExecutor.submit.

    That holds the pool's lock, and gunicorn 27's own handler takes the same
    lock (a worker was left running, stuck there, after a test run). The
    worker `dropbox run` uses must exit all the same.
    """
    from concurrent.futures import ThreadPoolExecutor

    import gunicorn.config

    options = gunicorn_options(load(write_config(tmp_path, "")), "source")
    assert options["worker_class"] is QuitSafeThreadWorker
    worker = QuitSafeThreadWorker.__new__(QuitSafeThreadWorker)  # no sockets or app needed
    worker.cfg = gunicorn.config.Config()
    worker.alive = True
    worker.tpool = ThreadPoolExecutor(max_workers=1)
    exit_codes: list[object] = []

    def quit_inside_submit() -> None:
        with worker.tpool._shutdown_lock:  # held, as by submit when the signal comes
            try:
                worker.handle_quit(signal.SIGQUIT, None)
            except SystemExit as exc:
                exit_codes.append(exc.code)

    handler = threading.Thread(target=quit_inside_submit, daemon=True)
    handler.start()
    handler.join(timeout=5)
    assert not handler.is_alive(), "the quit handler waited on the lock its own thread holds"
    assert exit_codes == [0]
    assert worker.alive is False
    worker.tpool.shutdown(wait=True)


def test_a_connection_that_sends_nothing_holds_up_neither_ctrl_c_nor_a_later_request(
    tmp_path: Path,
) -> None:
    """A worker's thread waits only briefly for a new connection's first bytes.

    gunicorn 27's threads wait 5 s for them; a stopping worker waited for that
    thread, so one connection that sent nothing (a slow or hostile client)
    made Ctrl-C take over 5 s (launcher/serve.py, FIRST_BYTES_WAIT_SECONDS).
    """
    port = free_port()
    config = write_config(tmp_path, f"[source]\nport = {port}\nworkers = 1\n")
    assert invoke("--config", str(config), "init").returncode == 0
    served = start_source(config, port, tmp_path / "data", 1)
    idle = None
    try:
        # A client whose request comes well after it connected is still served.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as late:
            time.sleep(FIRST_BYTES_WAIT_SECONDS * 3)
            late.sendall(
                f"GET /robots.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := late.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]

        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        (worker,) = served.workers
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _ignores_sigint(worker):
            time.sleep(0.1)
        time.sleep(0.2)  # the connection accepted, and a thread waiting on it
        everything = {served.process.pid, worker}
        os.killpg(served.process.pid, signal.SIGINT)
        started = time.monotonic()
        while time.monotonic() < started + 10 and _running(everything):
            served.process.poll()
            time.sleep(0.05)
        stopped_in = time.monotonic() - started
        assert not _running(everything)
        assert stopped_in < 3, f"Ctrl-C took {stopped_in:.1f} s with an idle connection open"
    finally:
        if idle is not None:
            idle.close()
        served.stop()


def test_a_command_loads_no_web_server_no_reviewer_app_and_no_redis_client() -> None:
    """`dropbox notify --once` runs every minute: it loads only what it needs.

    The reviewer app (Flask, httpx, its pages), gunicorn and the Redis client
    were a third of every command's start-up; they load with `dropbox reviewer`
    and `dropbox run` only, and the Redis client with a Redis URL.
    """
    heavy = ("flask", "gunicorn", "httpx", "journalist_interface", "redis", "werkzeug")
    script = (
        "import sys\n"
        "from launcher.cli import main\n"
        "try:\n"
        "    main(['--config', '/nonexistent/config.toml', 'notify', '--once'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert "config.toml" in ran.stderr  # the command ran, and said what was wrong
    assert ran.stdout.strip() == "[]", ran.stdout
    # The reviewer app's command is still there, loaded when asked for.
    assert "Serve the reviewer app" in run_cli("reviewer", "--help").stdout
    assert "reviewer" in run_cli("--help").stdout


def test_ctrl_c_while_the_program_starts_ends_it_quietly_as_ctrl_c_does() -> None:
    """What the demo's servers get if it is stopped while one is still starting."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher",
            "--config",
            "/nonexistent/config.toml",
            "office",
            "list",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Inside the program's imports: once a compiled module of the venv is loaded
    # (SQLAlchemy's, a third of the way in), Python's own start (site) is over. A
    # SIGINT before that is CPython's "Fatal Python error", not the program's: a
    # fixed 0.15 s was not enough in make test's bulk lane, at a small CPU share.
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        if re.search(r"/site-packages/\S+\.so$", maps, re.MULTILINE):
            break
        time.sleep(0.002)
    assert process.poll() is None, "the program ended before it loaded a compiled module"
    while process.poll() is None:
        process.send_signal(signal.SIGINT)
        time.sleep(0.01)
    _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert process.returncode == -signal.SIGINT, (process.returncode, stderr)
