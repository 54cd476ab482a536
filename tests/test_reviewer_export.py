"""A report exported for an investigator: one archive, encrypted to their OpenPGP key.

End to end: the source sends a report with files through the source
interface; an officer of the handling office pastes the investigator's
public key in the reviewer app, confirms its fingerprint, and downloads the
export. The investigator's side is the real `gpg` program, with its own
home and a key pair made here: it decrypts the download, and every byte of
every file and the thread's text are compared with what was sent. Keys that
are expired, revoked, cannot encrypt, or are private are refused with a
plain message, and nothing is recorded or exported.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import select
from werkzeug.test import TestResponse

from crypto.keys import fingerprint
from dropbox.instance import Instance
from dropbox.models import AuditEvent
from journalist_interface import export
from tests.case_helpers import make_case_world
from tests.gpg_helpers import Keys, made_keys
from tests.source_helpers import csrf_token
from tests.test_reviewer_app_reports import Desk, designation, followed, make_report, page_text

MESSAGE = "The depot manager sells the fuel stock every Friday night; the logs are attached."
INVESTIGATOR = "Ines Investigator <ines@investigations.example>"


# --- the investigator's GnuPG --------------------------------------------------------------


@pytest.fixture(scope="module")
def unit() -> Iterator[Keys]:
    """The investigation unit's GnuPG home: its good key, and keys of every kind refused."""
    with made_keys(INVESTIGATOR) as keys:
        yield keys


@pytest.fixture
def desk(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[Desk]:
    world = make_case_world(instance, office_keys)
    pins = {code: fingerprint(key.public_key) for code, key in office_keys.items()}
    yield Desk(world, pins)
    world.close()


def events(instance: Instance, rid: str) -> list[tuple[str, str, str]]:
    with instance.sessions() as db:
        rows = db.execute(
            select(AuditEvent.actor, AuditEvent.action, AuditEvent.detail)
            .where(AuditEvent.report_id == rid)
            .order_by(AuditEvent.id)
        ).all()
    return [(a, b, c) for a, b, c in rows]


def check_key(client: FlaskClient, rid: str, key: str) -> TestResponse:
    """Paste `key` on the export page and send it to be checked."""
    page = client.get(f"/reports/{rid}/export").get_data(as_text=True)
    return client.post(
        f"/reports/{rid}/export/key", data={"csrf_token": csrf_token(page), "key": key}
    )


def shm_leftovers() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(f"dropbox-gpg-{os.getpid()}-*")}


# --- the export ------------------------------------------------------------------------------


def test_an_export_opens_with_gpg_and_holds_every_byte_sent(desk: Desk, unit: Keys) -> None:
    proof = os.urandom(200_000) + b"\x00\xff" * 10
    log = b"date;litres\n2024-05-03;1200\n"
    rid, _, _ = make_report(
        desk,
        "retaliation",
        MESSAGE,
        [("fuel logs: May?.csv", log), ("évidence — photo.bin", proof)],
        extra={"identity_name": "Jamie Doe", "protected_activity": "Spoke to the auditors"},
    )
    eco = desk.signed_in("eco")
    report_page = page_text(eco, f"/reports/{rid}")
    assert f"/reports/{rid}/export" in report_page
    token = csrf_token(report_page)
    eco.post(f"/reports/{rid}/reply", data={"csrf_token": token, "message": "Thank you, we act."})
    eco.post(f"/reports/{rid}/status", data={"csrf_token": token, "status": "under assessment"})
    before = shm_leftovers()

    checked = check_key(eco, rid, unit.good)
    shown = checked.get_data(as_text=True)
    assert checked.status_code == 200, shown
    grouped = " ".join(unit.good_fpr[i : i + 4] for i in range(0, 40, 4))
    assert grouped in shown
    assert "Ines Investigator &lt;ines@investigations.example&gt;" in shown
    assert not any(action == "report.export" for _, action, _ in events(desk.instance, rid))

    sent = eco.post(
        f"/reports/{rid}/export",
        data={"csrf_token": csrf_token(shown), "key": unit.good, "fingerprint": grouped},
    )
    assert sent.status_code == 200, sent.get_data(as_text=True)
    name = designation(desk.instance, rid)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert f"report-{name}-{today}.zip.gpg" in sent.headers["Content-Disposition"]
    assert sent.headers["Content-Type"] == "application/octet-stream"
    assert sent.headers["Cache-Control"] == "no-store"
    sealed = sent.data
    assert not sealed.startswith(b"PK") and MESSAGE.encode() not in sealed

    # The export is recorded, with the key's fingerprint, by the officer who made it.
    assert events(desk.instance, rid)[-1] == ("eco-officer", "report.export", unit.good_fpr)
    # The private GnuPG homes are gone.
    assert shm_leftovers() <= before

    # The investigator's side: gpg, with its own home, decrypts the download.
    plain = unit.decrypt(sealed)
    archive = zipfile.ZipFile(io.BytesIO(plain))
    folder = f"report-{name}"
    members = {info.filename: archive.read(info) for info in archive.infolist()}
    assert all(path.startswith(f"{folder}/") for path in members)
    files = {p.split("/", 2)[2]: d for p, d in members.items() if p.startswith(f"{folder}/files/")}
    assert sorted(files.values()) == sorted([log, proof])
    # Made safe: no ':' or '?' in a name, numbered by the item's place in the thread.
    assert any(n.endswith("-fuel logs_ May_.csv") and d == log for n, d in files.items())
    assert any(n.endswith("évidence — photo.bin") and d == proof for n, d in files.items())

    thread = members[f"{folder}/thread.txt"].decode()
    assert MESSAGE in thread and "Thank you, we act." in thread
    assert "Spoke to the auditors" in thread and "fuel logs: May?.csv" in thread
    assert "Identity details are not part of an export" in thread
    everything = b"".join(members.values())
    assert b"Jamie Doe" not in everything  # identity details stay sealed
    history = members[f"{folder}/status-history.txt"].decode()
    assert "-> under assessment" in history and "received" in history
    audit_text = members[f"{folder}/audit-events.txt"].decode()
    assert "report.read" in audit_text and "file.download" in audit_text
    assert "report.reply" in audit_text and "report.status" in audit_text
    # The manifest lists every other member with its size and SHA-256.
    manifest = json.loads(members[f"{folder}/manifest.json"])
    listed = {f"{folder}/{f['path']}": f for f in manifest["files"]}
    assert set(listed) == set(members) - {f"{folder}/manifest.json", f"{folder}/MANIFEST.txt"}
    for path, entry in listed.items():
        assert entry["bytes"] == len(members[path])
        assert entry["sha256"] == hashlib.sha256(members[path]).hexdigest()
    assert manifest["encrypted_to"] == unit.good_fpr
    assert manifest["report"] == name
    text_manifest = members[f"{folder}/MANIFEST.txt"].decode()
    assert hashlib.sha256(proof).hexdigest() in text_manifest


@pytest.mark.parametrize(
    ("which", "says"),
    [
        ("expired", "This key expired on 2020-01-02"),
        ("revoked", "This key has been revoked by its owner"),
        ("sign_only", "This key cannot be used to encrypt"),
        ("private", "This is a private key"),
        ("two", "This holds 2 keys"),
        ("garbage", "This is not an OpenPGP public key"),
        ("empty", "Paste the investigator&#39;s public key, or choose its file."),
    ],
)
def test_a_key_that_cannot_be_used_is_refused_plainly(
    desk: Desk, unit: Keys, which: str, says: str
) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    key = unit.pasted(which)
    answer = check_key(oio, rid, key)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400, page
    assert says in page
    assert 'aria-invalid="true"' in page and "Traceback" not in page
    if which != "private":
        assert key.strip()[:40].replace("<", "&lt;") in page  # what was pasted is kept
    else:
        assert "PRIVATE KEY BLOCK" not in page  # never shown back, never kept
    # Nothing exported: the export form is refused the same way, nothing recorded.
    sent = oio.post(
        f"/reports/{rid}/export",
        data={"csrf_token": csrf_token(page), "key": key, "fingerprint": "0" * 40},
    )
    assert sent.status_code == 400 and says in sent.get_data(as_text=True)
    assert not any(action == "report.export" for _, action, _ in events(desk.instance, rid))


def test_a_key_uploaded_as_a_binary_file_is_checked_the_same_way(desk: Desk, unit: Keys) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    binary = unit.binary(unit.good_fpr)
    page = page_text(oio, f"/reports/{rid}/export")
    answer = oio.post(
        f"/reports/{rid}/export/key",
        data={"csrf_token": csrf_token(page), "key": "", "key_file": (io.BytesIO(binary), "i.gpg")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 200
    assert unit.good_fpr[:4] in answer.get_data(as_text=True)


def test_a_key_file_too_large_to_be_one_key_is_refused(desk: Desk, unit: Keys) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    one = unit.binary(unit.good_fpr)
    huge = one * (export.MAX_KEY_BYTES // len(one) + 1)  # many keys, over the limit
    page = page_text(oio, f"/reports/{rid}/export")
    answer = oio.post(
        f"/reports/{rid}/export/key",
        data={"csrf_token": csrf_token(page), "key": "", "key_file": (io.BytesIO(huge), "i.gpg")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 400
    assert "This is too large to be one public key" in answer.get_data(as_text=True)


def test_an_export_needs_the_key_whose_fingerprint_was_confirmed(desk: Desk, unit: Keys) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    page = page_text(oio, f"/reports/{rid}/export")
    sent = oio.post(
        f"/reports/{rid}/export",
        data={
            "csrf_token": csrf_token(page),
            "key": unit.other,
            "fingerprint": unit.good_fpr,
        },
    )
    assert sent.status_code == 400
    assert "not the one whose fingerprint you confirmed" in sent.get_data(as_text=True)
    assert not any(action == "report.export" for _, action, _ in events(desk.instance, rid))


def test_an_export_is_not_sent_when_the_case_server_does_not_record_it(
    desk: Desk, unit: Keys
) -> None:
    """A kept copy may not export: the case server refuses to record it, and nothing is sent."""
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    token = csrf_token(page_text(oio, f"/reports/{rid}"))
    referred = oio.post(
        f"/reports/{rid}/refer", data={"csrf_token": token, "office": "ECO", "keep_copy": "yes"}
    )
    assert "referred" in followed(oio, referred)
    # The page offers no export to a kept copy, and the routes refuse it.
    assert f"/reports/{rid}/export" not in page_text(oio, f"/reports/{rid}")
    assert oio.get(f"/reports/{rid}/export").status_code == 403
    sent = oio.post(
        f"/reports/{rid}/export",
        data={"csrf_token": token, "key": unit.good, "fingerprint": unit.good_fpr},
    )
    assert sent.status_code == 403 and not sent.data.startswith(b"\x85")
    # The case server refuses to record an export by a kept copy, or with a detail that is
    # no fingerprint.
    with desk.world.http("oio") as http:
        answer = http.post(
            f"/reports/{rid}/events", json={"action": "report.export", "detail": unit.good_fpr}
        )
        assert answer.status_code == 403
        assert http.get(f"/reports/{rid}/events").status_code == 403
    with desk.world.http("eco") as http:
        answer = http.post(
            f"/reports/{rid}/events", json={"action": "report.export", "detail": "a secret text"}
        )
        assert answer.status_code == 400 and "fingerprint" in answer.json()["error"]
        listed = http.get(f"/reports/{rid}/events")
        assert listed.status_code == 200
        assert "report.refer" in [e["action"] for e in listed.json()["events"]]
    assert not any(action == "report.export" for _, action, _ in events(desk.instance, rid))


def test_safe_names_hold_no_folder_or_reserved_character() -> None:
    assert export.safe_name("../../etc/passwd") == "passwd"
    assert export.safe_name("a\\b\\c:d?.pdf") == "c_d_.pdf"
    assert export.safe_name("CON.txt") == "_CON.txt"
    assert export.safe_name("...") == "file"
    assert export.safe_name("x" * 300 + ".pdf").endswith(".pdf")
    assert len(export.safe_name("x" * 300 + ".pdf")) <= export.MAX_NAME_CHARS
    assert export.safe_name("line\nbreak\u202e.txt") == "linebreak.txt"
