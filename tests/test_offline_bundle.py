"""Offline review: export bundle → offline reviewer app → return bundle → import, and refusals.

A source reports through the real source interface; `dropbox bundle export`
(the real command, in this process) writes the office's bundle; the offline
reviewer app (`dropbox reviewer --bundle`, here through Flask's test client)
unlocks it with the office's recovery file, reads the report and its file,
and writes a reply and a note into a return bundle; `dropbox bundle import`
stores them; the source reads the reply, and the office reads the note in
the next bundle. Every refusal refuses the whole bundle and stores nothing.
"""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey, PublicKey
from sqlalchemy import func, select

from crypto import envelope
from crypto.keys import public_key_from_bytes
from dropbox import bundles, offices
from dropbox.api_schema import dump
from dropbox.bundles import BundleRefused, ReturnItem
from dropbox.instance import Instance
from dropbox.items import new_id
from dropbox.models import AuditEvent, Item, ItemKind, Office, Report
from journalist_interface import casefile
from journalist_interface.offline import OfflineSettings, create_offline_app
from tests.conftest import CHEAP_COST, CHEAP_CRYPTO_TOML, invoke, pinned_config
from tests.source_helpers import csrf_token, login, new_codename, submit_report

pytestmark = pytest.mark.database_engine

MESSAGE = "Offline canary message: the storeroom keys went missing twice."
FILE = b"%PDF-1.4 offline canary file " + bytes(range(256)) * 300
REPLY = "Offline canary reply: thank you, we are looking into it."
NOTE = "Offline canary note: check the storeroom log."
CANARIES = (MESSAGE.encode(), FILE[:40], REPLY.encode(), NOTE.encode(), b"A. Person")


@dataclass
class Site:
    """An instance with both offices, a source interface, and the command's configuration."""

    instance: Instance
    config_path: Path
    work: Path
    recovery: dict[str, tuple[bytes, str]]  # office -> (recovery file, passphrase)
    source: Flask

    def cli(self, *args: str) -> tuple[int, str, str]:
        result = invoke("--config", str(self.config_path), *args)
        return result.returncode, result.stdout, result.stderr

    def export(self, name: str, *extra: str) -> Path:
        out = self.work / name
        code, stdout, stderr = self.cli(
            "bundle", "export", "--office", "OIO", "--out", str(out), *extra
        )
        assert code == 0, stderr
        assert "Wrote" in stdout
        return out

    def offline(self, bundle: Path, outgoing: Path | None = None) -> Flask:
        pin = {"OIO": self.instance.config.office("OIO").fingerprint}
        settings = OfflineSettings(
            bundle=bundle, outgoing=outgoing or self.work / "replies.zip", pins=pin
        )
        app = create_offline_app(settings)
        app.config["TESTING"] = True
        return app

    def counts(self) -> tuple[int, int]:
        """Items in the database, and blobs in the store."""
        with self.instance.sessions() as db:
            items = db.execute(select(func.count()).select_from(Item)).scalar_one()
        blobs = sum(1 for p in (self.instance.config.data_dir / "blobs").rglob("*") if p.is_file())
        return items, blobs


@pytest.fixture
def site(tmp_path: Path, instance: Instance) -> Iterator[Site]:
    recovery = {}
    keys = {}
    with instance.sessions.begin() as session:
        for office in instance.config.offices:
            _, secret, data, passphrase = offices.create(
                session, instance.config, office.code, CHEAP_COST, "test"
            )
            recovery[office.code] = (data, passphrase)
            keys[office.code] = secret
    instance.config = pinned_config(instance.config, keys)
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        f'data_dir = "{instance.config.data_dir}"\n'
        f'database_url = "{instance.config.database_url}"\n{CHEAP_CRYPTO_TOML}'
    )
    from source_interface import create_app

    source = create_app(instance.config, instance)
    source.config["TESTING"] = True
    yield Site(instance, config_path, tmp_path, recovery, source)


IDENTITY = "Offline canary identity: A. Person"


def report_to_oio(site: Site) -> tuple[str, FlaskClient]:
    """A report with a file and identity details through the source interface;
    (codename, the source's client)."""
    category = next(c.code for c in site.instance.config.categories if c.office == "OIO")
    client = site.source.test_client()
    codename, form = new_codename(client)
    fields = {"category": category, "message": MESSAGE, "identity_name": IDENTITY}
    sent = submit_report(client, form, fields, [("evidence.pdf", FILE)])
    assert sent.status_code == 302, sent.get_data(as_text=True)
    return codename, client


def unlock(app: Flask, recovery: tuple[bytes, str]) -> FlaskClient:
    client = app.test_client()
    page = client.get("/unlock").get_data(as_text=True)
    data, passphrase = recovery
    unlocked = client.post(
        "/unlock",
        data={
            "csrf_token": csrf_token(page),
            "recovery_file": (io.BytesIO(data), "OIO-recovery.json"),
            "recovery_passphrase": passphrase,
        },
        content_type="multipart/form-data",
    )
    assert unlocked.status_code == 302, unlocked.get_data(as_text=True)
    return client


def report_id(site: Site) -> str:
    with site.instance.sessions() as db:
        return db.execute(select(Report.id)).scalar_one()


def post(client: FlaskClient, page: str, path: str, data: dict[str, str]) -> str:
    token = csrf_token(client.get(page).get_data(as_text=True))
    sent = client.post(path, data={"csrf_token": token, **data})
    assert sent.status_code == 302, sent.get_data(as_text=True)
    return client.get(page).get_data(as_text=True)


def write_offline(site: Site) -> tuple[Path, str]:
    """Export, then a reply and a note written offline: (the return bundle, the report's id)."""
    report_to_oio(site)
    bundle = site.export("export.zip")
    client = unlock(site.offline(bundle), site.recovery["OIO"])
    rid = report_id(site)
    page = f"/reports/{rid}"
    post(client, page, f"{page}/reply", {"message": REPLY})
    post(client, page, f"{page}/notes", {"text": NOTE})
    return site.work / "replies.zip", rid


# --- both ways ------------------------------------------------------------------------


def test_a_reply_and_a_note_written_offline_reach_the_source_and_the_office(site: Site) -> None:
    codename, source = report_to_oio(site)
    bundle = site.export("export.zip")
    raw = bundle.read_bytes()
    assert not any(canary in raw for canary in CANARIES)

    app = site.offline(bundle)
    client = app.test_client()
    assert client.get("/").headers["Location"].endswith("/unlock")
    client = unlock(app, site.recovery["OIO"])
    rid = report_id(site)
    with site.instance.sessions() as db:
        designation = db.get(Report, rid).designation  # type: ignore[union-attr]
    assert designation in client.get("/").get_data(as_text=True)
    page = client.get(f"/reports/{rid}").get_data(as_text=True)
    assert MESSAGE in page
    assert "Not available offline" in page
    assert f"/reports/{rid}/status" not in page and "/identity" not in page
    file_id = next(
        i.id for i in bundles.ExportBundle(bundle).manifest.reports[0].items if i.kind == "file"
    )
    downloaded = client.get(f"/reports/{rid}/files/{file_id}")
    assert downloaded.status_code == 200
    assert downloaded.get_data() == FILE

    page = post(client, f"/reports/{rid}", f"/reports/{rid}/reply", {"message": REPLY})
    page = post(client, f"/reports/{rid}", f"/reports/{rid}/notes", {"text": NOTE})
    assert REPLY in page and NOTE in page
    assert page.count("Waiting in the outgoing bundle") == 2
    outgoing = site.work / "replies.zip"
    assert not any(canary in outgoing.read_bytes() for canary in CANARIES)

    code, stdout, stderr = site.cli("bundle", "import", str(outgoing))
    assert code == 0, stderr
    assert "1 reply and 1 note added to 1 report" in stdout
    after_first = site.counts()
    code, stdout, _ = site.cli("bundle", "import", str(outgoing))
    assert code == 0 and "every item was imported before" in stdout
    assert site.counts() == after_first

    # No plaintext anywhere on disk: the data directory, both bundles, the return bundle.
    for path in site.work.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(canary in content for canary in CANARIES), path

    # The source's key is hybrid: the reply sealed offline has an X-Wing entry for it.
    with site.instance.sessions() as db:
        row = db.get(Report, rid)
        assert row is not None and len(row.source_public_key) == 1216
        reply = db.execute(
            select(Item).where(Item.report_id == rid, Item.kind == ItemKind.REPLY)
        ).scalar_one()
        source_id = envelope.recipient_id(public_key_from_bytes(row.source_public_key))
        assert (source_id, True) in envelope.recipient_entries(reply.key_block)

    login(source, codename)
    thread = source.get("/thread").get_data(as_text=True)
    assert REPLY in thread
    assert NOTE not in thread

    # The office reads the note (and its reply) in the next bundle, on the offline machine.
    second = site.export("second.zip")
    client = unlock(site.offline(second, site.work / "replies-2.zip"), site.recovery["OIO"])
    page = client.get(f"/reports/{rid}").get_data(as_text=True)
    assert NOTE in page and REPLY in page and MESSAGE in page
    assert "came in an earlier bundle" in page
    assert client.get(f"/reports/{rid}/files/{file_id}").status_code == 404

    with site.instance.sessions() as db:
        actions = list(db.execute(select(AuditEvent.action)).scalars())
    assert actions.count("bundle.export") == 2
    assert {"bundle.import", "report.reply", "report.note"} <= set(actions)


def test_offline_a_cleaned_copy_lacks_the_metadata_and_the_original_keeps_it(
    site: Site, tmp_path: Path
) -> None:
    from tests.test_reviewer_cleaning import ARTIST, MAT2, jpeg_with_exif, shown_metadata

    photo = jpeg_with_exif(ARTIST)
    category = next(c.code for c in site.instance.config.categories if c.office == "OIO")
    source = site.source.test_client()
    _, form = new_codename(source)
    sent = submit_report(
        source, form, {"category": category, "message": MESSAGE}, [("a.jpg", photo)]
    )
    assert sent.status_code == 302, sent.get_data(as_text=True)
    client = unlock(site.offline(site.export("export.zip")), site.recovery["OIO"])
    rid = report_id(site)
    page = client.get(f"/reports/{rid}").get_data(as_text=True)
    file_id = next(iter(re.findall(rf"/reports/{rid}/files/([\w-]+)/cleaned", page)))
    assert client.get(f"/reports/{rid}/files/{file_id}").get_data() == photo
    cleaned = client.get(f"/reports/{rid}/files/{file_id}/cleaned")
    assert cleaned.status_code == 200, cleaned.get_data(as_text=True)
    assert "attachment" in cleaned.headers["Content-Disposition"]
    assert ARTIST in shown_metadata(photo, "original.jpg", tmp_path)
    assert ARTIST not in shown_metadata(cleaned.get_data(), "cleaned.jpg", tmp_path)
    assert Path(MAT2).exists()


def test_an_export_with_nothing_new_writes_no_file(site: Site) -> None:
    report_to_oio(site)
    site.export("export.zip")
    out = site.work / "again.zip"
    code, stdout, _ = site.cli("bundle", "export", "--office", "OIO", "--out", str(out))
    assert code == 0 and "Nothing new for OIO" in stdout
    assert not out.exists()
    site.export("all.zip", "--all")


def test_the_wrong_recovery_file_does_not_unlock(site: Site) -> None:
    report_to_oio(site)
    app = site.offline(site.export("export.zip"))
    client = app.test_client()
    page = client.get("/unlock").get_data(as_text=True)
    data, passphrase = site.recovery["ECO"]
    refused = client.post(
        "/unlock",
        data={
            "csrf_token": csrf_token(page),
            "recovery_file": (io.BytesIO(data), "ECO-recovery.json"),
            "recovery_passphrase": passphrase,
        },
        content_type="multipart/form-data",
    )
    assert refused.status_code == 400
    assert "office ECO's, not OIO's" in html.unescape(refused.get_data(as_text=True))
    assert client.get("/").status_code == 302


def test_identity_details_never_travel_in_a_bundle(site: Site) -> None:
    report_to_oio(site)
    bundle = site.export("export.zip")
    (report,) = bundles.ExportBundle(bundle).manifest.reports
    identity = [i for i in report.items if i.kind == "identity"]
    assert len(identity) == 1
    assert (
        identity[0].body is None
        and identity[0].id not in bundles.ExportBundle(bundle).manifest.files
    )
    client = unlock(site.offline(bundle), site.recovery["OIO"])
    page = html.unescape(client.get(f"/reports/{report.id}").get_data(as_text=True))
    assert "They are not in the bundle: reveal them in the reviewer app connected" in page
    assert IDENTITY not in page


def test_the_offline_app_checks_host_and_csrf_and_forgets_the_key_at_lock(site: Site) -> None:
    report_to_oio(site)
    app = site.offline(site.export("export.zip"))
    client = unlock(app, site.recovery["OIO"])
    rid = report_id(site)
    assert client.get("/", headers={"Host": "attacker.example:8081"}).status_code == 400
    forged = client.post(f"/reports/{rid}/notes", data={"text": NOTE})
    assert forged.status_code == 400
    assert not (site.work / "replies.zip").exists()
    token = csrf_token(client.get("/").get_data(as_text=True))
    assert client.post("/lock", data={"csrf_token": token}).status_code == 302
    assert client.get(f"/reports/{rid}").headers["Location"].endswith("/unlock")


def test_an_idle_offline_session_forgets_the_key(site: Site) -> None:
    from datetime import timedelta

    report_to_oio(site)
    app = site.offline(site.export("export.zip"))
    client = unlock(app, site.recovery["OIO"])
    desk = app.extensions["reviewer.desk"]
    later = desk.clock() + timedelta(minutes=16)
    desk.clock = lambda: later
    desk.sweep()
    assert client.get("/").headers["Location"].endswith("/unlock")


# --- refusals on import: whole, with nothing stored -------------------------------------


def refused_import(site: Site, path: Path, *fragments: str) -> None:
    before = site.counts()
    code, _, stderr = site.cli("bundle", "import", str(path))
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr
    assert "nothing was imported" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert site.counts() == before


def rewrite(path: Path, change: dict[str, object]) -> Path:
    manifest = bundles.read_return(path)
    document = dump(manifest)
    document.update(change)
    out = path.with_name("changed.zip")
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(bundles.MANIFEST, json.dumps(document))
    return out


def with_items(path: Path, items: list[ReturnItem]) -> Path:
    manifest = replace(bundles.read_return(path), items=items)
    out = path.with_name("changed.zip")
    bundles.write_return(out, manifest)
    return out


def sealed(rid: str, kind: str, recipients: list[PublicKey]) -> ReturnItem:
    new = casefile.seal_text(rid, "a forged or misdirected text", kind, recipients)
    return ReturnItem(
        report_id=rid,
        kind=kind,
        item_id=new.item_id,
        size=new.size,
        key_block=new.key_block,
        body=new.body,
    )


def test_a_tampered_bundle_is_refused(site: Site) -> None:
    path, _ = write_offline(site)
    data = bytearray(path.read_bytes())
    data[200] ^= 0x01  # inside the manifest: its checksum no longer matches
    path.write_bytes(bytes(data))
    refused_import(site, path, "damaged")


def test_a_truncated_bundle_is_refused(site: Site) -> None:
    path, _ = write_offline(site)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused_import(site, path, "cut short")


def test_a_bundle_of_a_newer_version_is_refused_as_such(site: Site) -> None:
    path, _ = write_offline(site)
    refused_import(site, rewrite(path, {"version": 2}), "newer version", "format 1 only")


def test_an_item_sealed_to_the_wrong_keys_is_refused(site: Site) -> None:
    path, rid = write_offline(site)
    stranger = PrivateKey.generate().public_key
    with site.instance.sessions() as db:
        report = db.get(Report, rid)
        assert report is not None
        source_key = public_key_from_bytes(report.source_public_key)
    with site.instance.sessions() as db:
        office = db.get(Office, "OIO")
        assert office is not None
        oio = public_key_from_bytes(office.public_key)
    good = bundles.read_return(path).items
    for wrong in (
        sealed(rid, "note", [stranger]),
        sealed(rid, "note", [oio, stranger]),
        sealed(rid, "reply", [oio]),
        sealed(rid, "reply", [stranger, source_key]),
        sealed(rid, "note", [oio, source_key]),
    ):
        refused_import(site, with_items(path, [*good, wrong]), "is not sealed to exactly")


def test_an_unknown_report_is_refused(site: Site) -> None:
    path, _ = write_offline(site)
    (first, *rest) = bundles.read_return(path).items
    moved = replace(first, report_id=new_id())
    refused_import(site, with_items(path, [moved, *rest]), "a report this server does not have")


def test_a_report_now_of_another_office_is_refused(site: Site) -> None:
    path, rid = write_offline(site)
    with site.instance.sessions.begin() as db:
        report = db.get(Report, rid)
        assert report is not None
        report.office_code = "ECO"
    refused_import(site, path, "which ECO handles now, not OIO")


def test_a_bundle_for_another_office_is_refused(site: Site) -> None:
    path, _ = write_offline(site)
    refused_import(site, rewrite(path, {"office": "ECO"}), "answers no export of ECO")


def test_a_bundle_answering_no_export_is_refused(site: Site) -> None:
    path, _ = write_offline(site)
    refused_import(site, rewrite(path, {"answers": new_id()}), "answers no export of OIO")


# --- refusals on the offline machine ------------------------------------------------------


def test_the_offline_app_refuses_a_damaged_or_newer_export(site: Site) -> None:
    report_to_oio(site)
    bundle = site.export("export.zip")
    cut = site.work / "cut.zip"
    cut.write_bytes(bundle.read_bytes()[:-100])
    with pytest.raises(BundleRefused, match="cut short"):
        site.offline(cut)
    newer = site.work / "newer.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(newer, "w") as target:
        document = json.loads(source.read(bundles.MANIFEST))
        document["version"] = 2
        target.writestr(bundles.MANIFEST, json.dumps(document))
    with pytest.raises(BundleRefused, match="newer version"):
        site.offline(newer)


def test_reviewer_with_a_bundle_takes_no_case_server(site: Site) -> None:
    report_to_oio(site)
    bundle = site.export("export.zip")
    result = invoke("reviewer", "--bundle", str(bundle), "--server", "http://x.onion")
    assert result.returncode == 2
    assert "leave out --server" in result.stderr
