"""Offline review: the reviewer app on a machine with no network, over an export bundle.

`dropbox reviewer --bundle FILE` serves these pages on 127.0.0.1, as the
online app does, with the same Host, Origin and CSRF checks
(`app.configure_shell`), but with no case server: the reports come from an
export bundle the case server wrote (`dropbox/bundles.py`). The officer
unlocks it with the office's recovery file and its passphrase (a copy made by
`dropbox office recover --new-recovery-file` is the usual key file of the
offline machine); the office key is then held in this process's memory
only, and forgotten at "Lock", after the idle or absolute timeout, and when
the app stops.

Reports are read and files downloaded as online: each item opened in
memory (`casefile`), a file authenticated whole before it streams to the
browser, straight from the bundle (ciphertext on disk, never plaintext).
Replies and notes are sealed as online, to keys checked first (the source's
key against the copy bound in the source's messages, the office's against
the recovery file's and any pin), and added to the **return bundle**, a file
of ciphertext and ids the case server imports (`dropbox bundle import`).
Nothing is ever sent from here. What needs the case server (status,
assignment, referral, deletion, revealing identity details) is shown as not
available offline.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from crypto.errors import DecryptionError
from crypto.keys import KeyChain
from dropbox.api_schema import Me, ReportBundle, SealedItem
from dropbox.bundles import (
    RETURN_FORMAT,
    VERSION,
    BundleRefused,
    ExportBundle,
    ReturnItem,
    ReturnManifest,
    read_return_if_any,
    write_return,
)
from dropbox.items import new_id
from dropbox.store import size_text
from journalist_interface import casefile, cleaning, pages
from journalist_interface.app import configure_shell, register_error_handlers
from journalist_interface.reports import due_words
from journalist_interface.settings import ServedSettings

SESSION_KEY = "offline"
MAX_RECOVERY_BYTES = 64 * 1024


@dataclass(frozen=True)
class OfflineSettings(ServedSettings):
    """Which bundle to open, where replies and notes go, and where the pages are served."""

    bundle: Path
    outgoing: Path


def _now() -> datetime:
    return datetime.now(UTC)


def default_outgoing(bundle: Path) -> Path:
    """Where the return bundle goes unless told: beside the export, named after it."""
    return bundle.with_name(f"{bundle.stem}-replies{bundle.suffix or '.zip'}")


class Desk:
    """The opened export bundle, the office key once unlocked, and the return bundle's items."""

    def __init__(self, settings: OfflineSettings, export: ExportBundle) -> None:
        self.settings = settings
        self.export = export
        self.idle = timedelta(minutes=settings.idle_minutes)
        self.absolute = timedelta(hours=settings.absolute_hours)
        # What time it is: replaceable, so that a test can let an hour pass.
        self.clock: Callable[[], datetime] = _now
        self._lock = threading.Lock()
        self._token: str | None = None
        self._key: KeyChain | None = None
        self._started = self._seen = self.clock()
        office = export.manifest.office.code
        returned = read_return_if_any(settings.outgoing)
        if returned is not None and (
            returned.answers != export.manifest.bundle_id or returned.office != office
        ):
            raise BundleRefused(
                f"{settings.outgoing} holds replies and notes for another export bundle;"
                " choose another file for them with --out"
            )
        self.returned = returned or ReturnManifest(
            format=RETURN_FORMAT,
            version=VERSION,
            bundle_id=new_id(),
            answers=export.manifest.bundle_id,
            office=office,
            created_at=datetime.now(UTC).replace(microsecond=0),
            items=[],
        )

    @property
    def office(self) -> str:
        """The office whose bundle this is."""
        return self.export.manifest.office.code

    def me(self) -> Me:
        """Who the pages act as: the office, as the export describes it (no officer account)."""
        manifest = self.export.manifest
        return Me(
            id=0,
            username="offline",
            display_name=_("Offline review"),
            is_admin=False,
            public_key=b"",
            wrapped_secret_key=b"",
            grants=[],
            offices=[manifest.office],
            categories=manifest.categories,
            statuses=manifest.statuses,
            outcomes=manifest.outcomes,
        )

    # -- the key

    def unlock(self, key: KeyChain) -> str:
        """Hold the office key; a new random token for the session cookie."""
        with self._lock:
            self._key = key
            self._token = secrets.token_urlsafe(32)
            self._started = self._seen = self.clock()
            return self._token

    def keyring(self, token: Any) -> casefile.Keyring | None:
        """The office key as a keyring if `token` is the live session's (idle clock restarted)."""
        now = self.clock()
        with self._lock:
            if self._key is None or self._token is None or not isinstance(token, str):
                return None
            if not hmac.compare_digest(token, self._token):
                return None
            if now - self._seen > self.idle or now - self._started > self.absolute:
                self._forget()
                return None
            self._seen = now
            # No officer account offline: the office key stands in for the officer's key,
            # which nothing here uses (casefile reads `office_keys` only).
            return casefile.Keyring(self._key, {self.office: self._key})

    def sweep(self) -> None:
        """Forget the key once the session is idle or too old, even with no request."""
        now = self.clock()
        with self._lock:
            if now - self._seen > self.idle or now - self._started > self.absolute:
                self._forget()

    def lock(self) -> None:
        """Forget the office key now."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        self._key = None
        self._token = None

    # -- the return bundle

    def add(self, item: ReturnItem) -> None:
        """Append a sealed item to the return bundle and rewrite it whole (ciphertext only)."""
        with self._lock:
            updated = replace(self.returned, items=[*self.returned.items, item])
            write_return(self.settings.outgoing, updated)
            self.returned = updated

    def pending(self, report_id: str) -> list[ReturnItem]:
        """The items written here for a report, waiting in the return bundle."""
        return [i for i in self.returned.items if i.report_id == report_id]


# --- the app ---------------------------------------------------------------------------


def create_offline_app(settings: OfflineSettings) -> Flask:
    """Build the offline reviewer app over the export bundle `settings.bundle`.

    BundleRefused if the bundle cannot be read, or the return bundle already
    at `settings.outgoing` answers another export.
    """
    export = ExportBundle(settings.bundle)
    try:
        desk = Desk(settings, export)
    except BaseException:
        export.close()
        raise
    app = Flask("journalist_interface")
    app.extensions["reviewer.desk"] = desk
    configure_shell(app, settings.origins)
    app.before_request(_load_keyring)
    app.register_blueprint(reports)
    app.register_blueprint(desk_pages)
    register_error_handlers(app)
    app.context_processor(_globals)
    app.add_template_global(due_words, "due_words")
    return app


def desk() -> Desk:
    """This app's desk."""
    found: Desk = current_app.extensions["reviewer.desk"]
    return found


def _load_keyring() -> None:
    g.keyring = desk().keyring(session.get(SESSION_KEY))
    if g.keyring is None and SESSION_KEY in session:
        session.pop(SESSION_KEY, None)
        g.session_ended = True


def _keyring() -> casefile.Keyring:
    keyring: casefile.Keyring | None = g.get("keyring")
    if keyring is None:  # pragma: no cover - `_unlocked` sends to the unlock page first
        abort(403)
    return keyring


def _globals() -> dict[str, Any]:
    opened = desk()
    manifest = opened.export.manifest
    return {
        "offline": True,
        "unlocked": g.get("keyring") is not None,
        "officer": None,
        "officer_offices": [],
        "status_labels": {s: s.capitalize() for s in manifest.statuses},
        "outcome_labels": {o: o.capitalize() for o in manifest.outcomes},
        "category_labels": dict(manifest.categories),
        "office_names": {manifest.office.code: manifest.office.name},
        "bundle_path": opened.settings.bundle,
        "outgoing_path": opened.settings.outgoing,
        "bundle_made": manifest.created_at,
        "waiting": len(opened.returned.items),
    }


def _unlocked(view: Any) -> Any:
    """Only once the office key is unlocked; others are sent to the unlock page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("keyring") is None:
            if g.get("session_ended"):
                flash(_("The bundle was locked. Unlock it again to go on."), "info")
            return redirect(url_for("desk.unlock"))
        return view(*args, **kwargs)

    return wrapper


# --- unlocking ---------------------------------------------------------------------------

desk_pages = Blueprint("desk", __name__)


@desk_pages.get("/unlock")
def unlock_page() -> Any:
    """The unlock form (or the reports, once unlocked)."""
    if g.get("keyring") is not None:
        return redirect(url_for("reports.inbox"))
    return render_template("offline_unlock.html", error=None)


@desk_pages.post("/unlock", endpoint="unlock")
def unlock() -> Any:
    """Open the office key from its recovery file and passphrase, checked against the bundle."""
    opened = desk()
    upload = request.files.get("recovery_file")
    data = upload.read(MAX_RECOVERY_BYTES + 1) if upload is not None else b""
    error: str | None = None
    if not data:
        error = _("Choose the office's recovery file.")
    elif len(data) > MAX_RECOVERY_BYTES:
        error = _("That is not a recovery file: it is far too large.")
    else:
        try:
            key = casefile.open_recovery(
                data,
                request.form.get("recovery_passphrase", ""),
                opened.office,
                opened.me(),
                opened.settings.pins,
            )
        except (casefile.KeyMismatch, casefile.RecoveryError) as refused:
            error = _key_words(refused)
        else:
            session.clear()
            session[SESSION_KEY] = opened.unlock(key)
            return redirect(url_for("reports.inbox"))
    return render_template("offline_unlock.html", error=error), 400


def _key_words(refused: casefile.KeyMismatch | casefile.RecoveryError) -> str:
    """A refusal at unlock, in the words of this page (there is no server here to check)."""
    if isinstance(refused, casefile.RecoveryError):
        return refused.message[:1].upper() + refused.message[1:] + "."
    return str(
        _(
            "This recovery file does not hold the key the bundle's reports are sealed to"
            " (or the one pinned in this app's settings). Check that the file and the bundle"
            " are the same office's."
        )
    )


@desk_pages.post("/lock")
def lock() -> WerkzeugResponse:
    """Forget the office key now."""
    desk().lock()
    session.clear()
    flash(_("The bundle is locked: the office key is forgotten."), "info")
    return redirect(url_for("desk.unlock_page"))


# --- reports -----------------------------------------------------------------------------

reports = Blueprint("reports", __name__)


def _report(report_id: str) -> ReportBundle:
    found = desk().export.report(report_id)
    if found is None:
        abort(404)
    return found


def _with_pending(report: ReportBundle) -> ReportBundle:
    """The report with the items written here, which wait in the return bundle, at its end."""
    last = max((i.seq for i in report.items), default=0)
    waiting = [
        SealedItem(
            id=item.item_id,
            seq=last + number,
            kind=item.kind,
            author=None,
            created_at=None,
            size=item.size,
            deleted_by_source=False,
            unread=False,
            key_block=item.key_block,
            body_length=len(item.body),
            body=item.body,
            head=None,
        )
        for number, item in enumerate(desk().pending(report.id), start=1)
    ]
    return replace(report, items=[*report.items, *waiting])


@reports.get("/", endpoint="inbox")
@_unlocked
def inbox() -> str:
    """Every report in the bundle, with its deadlines."""
    opened = desk()
    rows = [
        (report, sum(1 for i in report.items if i.unread), len(opened.pending(report.id)))
        for report in opened.export.manifest.reports
    ]
    return render_template("offline_inbox.html", rows=rows, today=pages.today())


@reports.get("/reports/<report_id>")
@_unlocked
def report(report_id: str) -> str:
    """The whole thread, decrypted for this request, with what waits in the return bundle."""
    opened = desk()
    bundle = _with_pending(_report(report_id))
    thread = casefile.open_thread(bundle, _keyring())
    return render_template(
        "report.html",
        report=bundle,
        entries=thread.entries,
        status_changes=bundle.status_changes,
        assignable=[],
        refer_to=[],
        next_statuses=[],
        outcomes=[],
        has_identity=any(e.kind == "identity" for e in thread.entries),
        identity=None,
        is_handling=True,
        source_key=thread.source_key,
        format_size=size_text,
        clean_offer=cleaning.offer,
        me_id=0,
        today=pages.today(),
        pending_ids={i.item_id for i in opened.pending(report_id)},
        missing_files={
            i.id for i in bundle.items if i.kind == "file" and not opened.export.has_body(i.id)
        },
    )


def _open_file(report_id: str, item_id: str) -> pages.OpenedFile:
    """A file of the bundle, authenticated whole, to decrypt as it streams (or pages.Unopened)."""
    bundle = _report(report_id)
    item = next((i for i in bundle.items if i.id == item_id and i.kind == "file"), None)
    if item is None:
        abort(404)
    opened = desk()
    if not opened.export.has_body(item_id):
        raise pages.Unopened(
            pages.error_page(
                _("File not in this bundle"),
                _(
                    "This file came in an earlier bundle, so this one holds only its name. Open"
                    " the earlier bundle, or ask for a bundle made with --all."
                ),
                404,
            )
        )
    body: BinaryIO = opened.export.open_body(item_id)
    try:
        contents, chunks = casefile.decrypt_file(
            item.key_block, body, _keyring().office_keys[opened.office], report_id, item_id
        )
    except (DecryptionError, zipfile.BadZipFile):
        body.close()
        raise pages.damaged() from None
    return contents, chunks, body


@reports.get("/reports/<report_id>/files/<item_id>")
@_unlocked
def download(report_id: str, item_id: str) -> Response | tuple[str, int]:
    """A file, authenticated whole, then decrypted as it streams from the bundle."""
    return pages.download(lambda: _open_file(report_id, item_id))


@reports.get("/reports/<report_id>/files/<item_id>/cleaned")
@_unlocked
def cleaned(report_id: str, item_id: str) -> Response | tuple[str, int] | WerkzeugResponse:
    """A copy with its metadata removed by mat2 on this machine, in memory, as online."""
    return pages.cleaned_copy(report_id, item_id, lambda: _open_file(report_id, item_id))


def _seal(report_id: str, text: str, kind: str) -> str | None:
    """Seal `text` as a reply or a note and add it to the return bundle; a refusal's words."""
    opened = desk()
    bundle = _with_pending(_report(report_id))
    keyring = _keyring()
    me = opened.me()
    pins = opened.settings.pins
    try:
        if kind == "reply":
            thread = casefile.open_thread(bundle, keyring)
            recipients = casefile.reply_recipients(bundle, thread, keyring, me, pins)
        else:
            recipients = casefile.office_recipients(bundle, keyring, me, pins)
    except casefile.KeyMismatch as refused:
        return refused.message.replace("was not sent", "was not written")
    sealed = casefile.seal_text(report_id, text, kind, recipients)
    try:
        opened.add(
            ReturnItem(
                report_id=report_id,
                kind=kind,
                item_id=sealed.item_id,
                size=sealed.size,
                key_block=sealed.key_block,
                body=sealed.body,
            )
        )
    except OSError as exc:
        return str(
            _(
                "It could not be saved to %(path)s (%(why)s). Nothing was written; try again.",
                path=str(opened.settings.outgoing),
                why=exc.strerror or type(exc).__name__,
            )
        )
    return None


def _save(report_id: str, kind: str, text: str, empty: str, saved: str) -> WerkzeugResponse:
    """Seal `text` as a reply or a note into the return bundle; the report page says how it went."""
    _report(report_id)
    if not text:
        return pages.done(report_id, empty, error=True)
    refused = _seal(report_id, text, kind)
    return pages.done(report_id, refused or saved, error=refused is not None)


@reports.post("/reports/<report_id>/reply")
@_unlocked
def reply(report_id: str) -> WerkzeugResponse:
    """Seal a reply to the source and the office, into the return bundle."""
    return _save(
        report_id,
        "reply",
        request.form.get("message", "").strip(),
        _("write a message before saving it"),
        _(
            "Your reply is saved, encrypted, in %(path)s. The source can read it once the"
            " case server has imported that file.",
            path=str(desk().settings.outgoing),
        ),
    )


@reports.post("/reports/<report_id>/notes")
@_unlocked
def note(report_id: str) -> WerkzeugResponse:
    """Seal an internal note to the office, into the return bundle."""
    return _save(
        report_id,
        "note",
        request.form.get("text", "").strip(),
        _("write the note before saving"),
        _(
            "The note is saved, encrypted, in %(path)s, for the case server to import.",
            path=str(desk().settings.outgoing),
        ),
    )


__all__ = ["Desk", "OfflineSettings", "create_offline_app", "default_outgoing"]
