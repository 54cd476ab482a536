"""Nothing is granted to an officer's key the database alone could have swapped in.

Granting an office seals the office's secret key to the officer's public key
as the case server lists it. Whoever can write the server's database could
put their own key in the officer's row before a grant and receive the
office key. The officer reads out the fingerprint of the key they hold
(their reviewer app's account page shows it, computed from the key it
unwrapped with their passphrase); the granting administrator types it into
their own reviewer app, which seals nothing to a key that does not match.
Here the row is changed in the database, as its owner would, and both
officers' reviewer apps are driven through their pages.
"""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from crypto.keys import fingerprint, public_key_from_bytes
from dropbox import officers
from dropbox.config import load
from dropbox.instance import Instance
from dropbox.models import OfficeGrant, Officer
from tests.conftest import CHEAP_COST, invoke
from tests.reviewer_helpers import (
    Person,
    World,
    add_officer,
    audit_actions,
    chain_intact,
    fresh_code,
    post_form,
    signed_in_client,
    source_report,
)
from tests.substitution_helpers import (
    events,
    login_page,
    signed_in,
    swap_officer_key,
    text_of,
)
from tests.test_cli import PASSPHRASE, assert_one_line_error, setup  # noqa: F401 - a fixture

WARNING = (
    "The key on the server for {username} does not match the fingerprint they read out:"
    " nothing was granted. Check it with them again; if it still differs, an administrator"
    " should check the server."
)
DETAIL = "officer key: {username} differs from the fingerprint they read out"
MALFORMED = "That is not a key fingerprint"
SHOWN = re.compile(r'<code id="key-fingerprint">([A-Z2-7 ]+)</code>')
RETALIATION = "After I reported the fuel sales, my contract was cut short without a reason."


# --- helpers ------------------------------------------------------------------------


def held_fingerprint(instance: Instance, person: Person) -> str:
    """The fingerprint of the key the officer's passphrase unwraps (what their app shows)."""
    with instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        key = officers.open_secret_key(officer, person.passphrase, CHEAP_COST)
    return fingerprint(key.public_key)


def stored_fingerprint(instance: Instance, officer_id: int) -> str:
    """The fingerprint of the public key the database holds for the officer."""
    with instance.sessions() as db:
        officer = db.get(Officer, officer_id)
        assert officer is not None and officer.public_key is not None
        return fingerprint(public_key_from_bytes(officer.public_key))


def shown_on_account_page(client: FlaskClient) -> str:
    """The fingerprint the officer's own account page shows them."""
    page = client.get("/account")
    assert page.status_code == 200
    found = SHOWN.search(page.get_data(as_text=True))
    assert found is not None, page.get_data(as_text=True)
    return found.group(1)


def grants_of(instance: Instance, officer_id: int) -> list[str]:
    """The offices the officer holds a grant for."""
    with instance.sessions() as db:
        rows = db.execute(
            select(OfficeGrant.office_code).where(OfficeGrant.officer_id == officer_id)
        )
        return list(rows.scalars())


def key_events(instance: Instance) -> list[tuple[str, str, str | None]]:
    """Every `key.mismatch` event: (actor, detail, report id)."""
    return events(instance, "key.mismatch")


def grant_on_page(
    admin: FlaskClient, world: World, newcomer: Person, read_out: str, code: str | None = None
) -> TestResponse:
    """The administrator grants ECO (from the key they hold) with the fingerprint read out."""
    form = {
        "officer_id": str(newcomer.id),
        "office": "ECO",
        "key_source": "held",
        "fingerprint": read_out,
        "code": code or fresh_code(world.instance, world.people["eco_admin"]),
    }
    return post_form(admin, "/admin/officers", "/admin/grants", form)


def landed(admin: FlaskClient, response: TestResponse) -> str:
    """The text of the page a grant redirected to (its flashed message included)."""
    assert response.status_code == 302, response.get_data(as_text=True)
    return html.unescape(admin.get(response.headers["Location"]).get_data(as_text=True))


# --- the officer's own fingerprint ---------------------------------------------------


def test_the_account_page_shows_the_fingerprint_of_the_key_the_app_holds(
    reviewer: Flask, world: World
) -> None:
    newcomer = add_officer(world, "newcomer", [])
    client = signed_in_client(reviewer, world, "newcomer")
    page = html.unescape(client.get("/account").get_data(as_text=True))
    assert "Your key's fingerprint" in page
    assert "Read it out to the administrator who grants you an office" in page
    shown = shown_on_account_page(client)
    assert shown == held_fingerprint(world.instance, newcomer)
    assert shown == stored_fingerprint(world.instance, newcomer.id)

    swap_officer_key(world.instance, newcomer.id)
    # Still the key the officer holds, not the one the database now names.
    assert shown_on_account_page(client) == shown
    assert stored_fingerprint(world.instance, newcomer.id) != shown


def test_an_officer_whose_key_was_swapped_is_not_signed_in_and_is_told_why(
    reviewer: Flask, world: World
) -> None:
    """At sign-in the key the server lists must be the one the passphrase unwraps."""
    newcomer = add_officer(world, "newcomer", [])
    swap_officer_key(world.instance, newcomer.id)
    client, answer = login_page(reviewer, world, "newcomer")
    assert answer.status_code == 409
    assert "The public key the case server holds for you is not your key." in text_of(answer)
    assert not signed_in(client)


# --- granting on the administrators' page ---------------------------------------------


def test_granting_with_the_fingerprint_the_officer_reads_out_opens_the_office_to_them(
    reviewer: Flask, source: Flask, world: World
) -> None:
    newcomer = add_officer(world, "newcomer", [])
    read_out = shown_on_account_page(signed_in_client(reviewer, world, "newcomer"))
    admin = signed_in_client(reviewer, world, "eco_admin")
    assert "Access was granted." in landed(admin, grant_on_page(admin, world, newcomer, read_out))
    assert grants_of(world.instance, newcomer.id) == ["ECO"]
    assert key_events(world.instance) == []
    # The newcomer's app opens the grant at the next sign-in, and reads ECO's reports with it.
    source_report(source, "retaliation", RETALIATION)
    newcomer_client = signed_in_client(reviewer, world, "newcomer")
    inbox = newcomer_client.get("/").get_data(as_text=True)
    (rid,) = set(re.findall(r'href="/reports/([0-9a-f]{32})"', inbox))
    page = html.unescape(newcomer_client.get(f"/reports/{rid}").get_data(as_text=True))
    assert RETALIATION in page and "This item is damaged" not in page


@pytest.mark.parametrize(
    "copy",
    [
        pytest.param(lambda f: f.lower().replace(" ", ""), id="lower case without spaces"),
        pytest.param(lambda f: f"  {f.lower()}\n", id="lower case with spaces around"),
        pytest.param(lambda f: f.replace(" ", "  "), id="double spaces"),
    ],
)
def test_a_copy_in_another_case_or_spacing_is_accepted(
    reviewer: Flask, world: World, copy: object
) -> None:
    newcomer = add_officer(world, "newcomer", [])
    read_out = copy(held_fingerprint(world.instance, newcomer))  # type: ignore[operator]
    admin = signed_in_client(reviewer, world, "eco_admin")
    assert "Access was granted." in landed(admin, grant_on_page(admin, world, newcomer, read_out))
    assert grants_of(world.instance, newcomer.id) == ["ECO"]


def test_a_key_swapped_in_the_database_is_refused_with_a_warning_and_nothing_is_sealed(
    reviewer: Flask, world: World
) -> None:
    newcomer = add_officer(world, "newcomer", [])
    # What the newcomer's account page shows: of the key their passphrase unwraps.
    read_out = held_fingerprint(world.instance, newcomer)
    admin = signed_in_client(reviewer, world, "eco_admin")
    swap_officer_key(world.instance, newcomer.id)
    granted_before = audit_actions(world.instance).count("office.grant")

    page = landed(admin, grant_on_page(admin, world, newcomer, read_out))
    assert WARNING.format(username="newcomer") in page
    assert "Access was granted." not in page
    assert grants_of(world.instance, newcomer.id) == []
    assert audit_actions(world.instance).count("office.grant") == granted_before
    assert chain_intact(world.instance)


def test_a_key_swapped_in_the_database_is_recorded_as_a_key_mismatch(
    reviewer: Flask, world: World
) -> None:
    """Issue 12 point 5: a mismatch stops the action with a warning *and an audit event*."""
    newcomer = add_officer(world, "newcomer", [])
    read_out = held_fingerprint(world.instance, newcomer)
    admin = signed_in_client(reviewer, world, "eco_admin")
    swap_officer_key(world.instance, newcomer.id)
    page = landed(admin, grant_on_page(admin, world, newcomer, read_out))
    assert WARNING.format(username="newcomer") in page
    assert key_events(world.instance) == [("eco-admin", DETAIL.format(username="newcomer"), None)]


@pytest.mark.parametrize(
    "read_out",
    [
        "",
        "ABCD EFGH",
        "ABCD EFGH IJKL MNOP QRST UVWX YZ23 4561",  # 1 is not in the alphabet
        "ABCD EFGH IJKL MNOP QRST UVWX YZ23 45672",  # one character too many
    ],
)
def test_a_malformed_fingerprint_is_a_form_error_and_records_nothing(
    reviewer: Flask, world: World, read_out: str
) -> None:
    newcomer = add_officer(world, "newcomer", [])
    admin = signed_in_client(reviewer, world, "eco_admin")
    before = audit_actions(world.instance)
    code = fresh_code(world.instance, world.people["eco_admin"])

    page = landed(admin, grant_on_page(admin, world, newcomer, read_out, code))
    assert MALFORMED in page
    assert grants_of(world.instance, newcomer.id) == []
    assert audit_actions(world.instance) == before
    assert chain_intact(world.instance)
    # The slip is told before the administrator's code is used: it still confirms the grant.
    right = held_fingerprint(world.instance, newcomer)
    assert "Access was granted." in landed(
        admin, grant_on_page(admin, world, newcomer, right, code)
    )


# --- granting from the command line -----------------------------------------------------


def add_on_command_line(config: str, username: str) -> str:
    """`officer add`; the key fingerprint it printed."""
    added = invoke("--config", config, "officer", "add", username, input=f"{PASSPHRASE}\n" * 2)
    assert added.returncode == 0, added.stderr
    shown = re.search(r"Key fingerprint: ((?:XWING )?(?:[A-Z2-7]{4} ){7}[A-Z2-7]{4})", added.stdout)
    assert shown is not None, added.stdout
    return shown.group(1)


def officer_id(config: str, username: str) -> int:
    """The id of the officer with this username."""
    instance = Instance.open(load(Path(config)))
    try:
        with instance.sessions() as db:
            return officers.get(db, username).id
    finally:
        instance.close()


def unlocked_fingerprint(config: str, username: str) -> str:
    """The fingerprint of the key the officer's passphrase unwraps (what their page shows)."""
    instance = Instance.open(load(Path(config)))
    try:
        with instance.sessions() as db:
            key = officers.open_secret_key(officers.get(db, username), PASSPHRASE, CHEAP_COST)
    finally:
        instance.close()
    return fingerprint(key.public_key)


def cli_state(config: str, officer: int) -> tuple[list[str], list[tuple[str, str]], bool]:
    """The officer's grants, the `key.mismatch` events, and whether the audit chain verifies."""
    instance = Instance.open(load(Path(config)))
    try:
        recorded = [(actor, detail) for actor, detail, _ in key_events(instance)]
        return grants_of(instance, officer), recorded, chain_intact(instance)
    finally:
        instance.close()


def grant_on_command_line(
    config: str, passphrase: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`officer grant amina ECO` from the recovery file, with these extra options."""
    return invoke(
        "--config",
        config,
        "officer",
        "grant",
        "amina",
        "ECO",
        "--recovery-file",
        "ECO-recovery.json",
        *extra,
        input=passphrase + "\n",
    )


def test_the_command_line_grants_with_a_lower_case_copy_of_the_fingerprint(
    setup: tuple[Path, dict[str, str]],  # noqa: F811 - the fixture
) -> None:
    workdir, passphrases = setup
    config = str(workdir / "config.toml")
    shown = add_on_command_line(config, "amina")
    copy = shown.lower().replace(" ", "")
    granted = grant_on_command_line(config, passphrases["ECO"], "--fingerprint", copy)
    assert granted.returncode == 0, granted
    assert cli_state(config, officer_id(config, "amina")) == (["ECO"], [], True)


def test_the_command_line_refuses_a_swapped_key_and_records_it(
    setup: tuple[Path, dict[str, str]],  # noqa: F811 - the fixture
) -> None:
    workdir, passphrases = setup
    config = str(workdir / "config.toml")
    invoke("--config", config, "officer", "add", "amina", input=f"{PASSPHRASE}\n" * 2)
    read_out = unlocked_fingerprint(config, "amina")
    amina = officer_id(config, "amina")
    instance = Instance.open(load(Path(config)))
    try:
        swap_officer_key(instance, amina)
    finally:
        instance.close()
    refused = grant_on_command_line(config, passphrases["ECO"], "--fingerprint", read_out)
    assert_one_line_error(refused, WARNING.format(username="amina"))
    assert cli_state(config, amina) == (
        [],
        [("command line", "officer key: amina differs from the fingerprint they read out")],
        True,
    )


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        pytest.param((), "with --fingerprint", id="no fingerprint and no terminal to ask on"),
        pytest.param(("--fingerprint", "ABCD EFGH"), MALFORMED, id="a malformed fingerprint"),
    ],
)
def test_the_command_line_wants_a_well_formed_fingerprint_and_records_nothing_without(
    setup: tuple[Path, dict[str, str]],  # noqa: F811 - the fixture
    extra: tuple[str, ...],
    said: str,
) -> None:
    workdir, passphrases = setup
    config = str(workdir / "config.toml")
    add_on_command_line(config, "amina")
    refused = grant_on_command_line(config, passphrases["ECO"], *extra)
    assert_one_line_error(refused, said)
    assert cli_state(config, officer_id(config, "amina")) == ([], [], True)
