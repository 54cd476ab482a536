"""The reviewer app's reports area: inbox, report page and every action on a report.

Each page needs one call to the case server (`client.inbox`, `client.report`),
plus `client.record` only when this machine found damage or a key mismatch.
An action is one call, plus the report fetch it needs to seal something. The
case server never sees a plaintext: threads and files are opened here, in
memory; replies, notes and reveal reasons are sealed here; a referral's key
blocks are re-sealed here, to keys checked first (`casefile`).

A file is downloaded as ciphertext into an anonymous temporary file (deleted
when closed), authenticated whole, and only then decrypted as it streams to
the browser: no plaintext is ever written to this machine's disk.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, BinaryIO

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from werkzeug.wrappers import Response as WerkzeugResponse

from crypto.envelope import Contents
from crypto.errors import DecryptionError
from crypto.keys import KeyChain
from dropbox.api_schema import InboxQuery, ReportBundle, SealedItem
from dropbox.store import size_text
from dropbox.web import form_row_id
from journalist_interface import casefile, cleaning, export, pages, vault
from journalist_interface.app import api_error_page
from journalist_interface.client import ApiError, CaseServerClient

bp = Blueprint("reports", __name__)

SORTS = ("received", "activity", "acknowledge_due", "feedback_due")
MIN_REASON = 10

# A reply to a report whose first item binds no copy of the source's key.
UNCHECKED_SENT = _l(
    "Your message was sent to the source. The source's key could not be checked:"
    " this report was made before reports carried a sealed copy of it."
)


class Refused(Exception):
    """An action refused here, before anything was sent: the message is for the officer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def register_reports(app: Flask) -> None:
    """Attach the reports area (called by the app factory)."""
    app.register_blueprint(bp)


@bp.app_template_global("due_words")
def due_words(due: date | None, today: date | None) -> tuple[str, str]:
    """A due date in words, relative to today, and its tone: overdue, today, soon or later.

    The words carry the meaning; the tone only picks a colour, never alone.
    """
    if due is None or today is None:
        return "", ""
    days = (due - today).days
    if days < 0:
        return ngettext("%(num)s day overdue", "%(num)s days overdue", -days), "overdue"
    if days == 0:
        return _("due today"), "today"
    if days == 1:
        return _("due tomorrow"), "soon"
    return _("in %(num)s days", num=days), "soon" if days <= 3 else "later"


# --- plumbing ----------------------------------------------------------------------------


def _entry() -> vault.Entry:
    """The signed-in officer's entry (the `signed_in` decorator has made sure of one)."""
    entry = vault.current()
    if entry is None:  # pragma: no cover - `signed_in` redirects first
        abort(403)
    return entry


def _pins() -> dict[str, str]:
    return dict(current_app.extensions["reviewer.settings"].pins)


def _record(client: CaseServerClient, report_id: str, action: str, detail: str) -> None:
    """Tell the case server what this machine found; a failure to record must not hide it."""
    try:
        client.record(report_id, action, detail)
    except ApiError:
        current_app.logger.warning("could not record %s on the case server", action)


def _record_damaged(client: CaseServerClient, report_id: str, item_ids: list[str]) -> None:
    for item_id in item_ids:
        _record(client, report_id, "item.damaged", item_id)


def _mismatch(
    client: CaseServerClient, report_id: str, refused: casefile.KeyMismatch
) -> WerkzeugResponse:
    """Nothing was sealed or sent: record the mismatch and warn the officer."""
    _record(client, report_id, "key.mismatch", refused.detail)
    flash(refused.message, "error")
    return redirect(url_for("reports.report", report_id=report_id))


@bp.errorhandler(casefile.KeyMismatch)
def _key_mismatch(refused: casefile.KeyMismatch) -> Any:
    """A key this app cannot vouch for: nothing was sealed or sent; recorded, and said plainly."""
    entry = vault.current()
    report_id = (request.view_args or {}).get("report_id")
    if entry is None or not isinstance(report_id, str):  # pragma: no cover - signed-in views only
        abort(403)
    if request.method == "POST":
        return _mismatch(entry.client, report_id, refused)
    _record(entry.client, report_id, "key.mismatch", refused.detail)
    return pages.error_page(_("Keys do not match"), refused.message, 409)


def _refusable(exc: ApiError) -> bool:
    """A refusal the officer can act on from the report page (not access, sign-in, outage)."""
    return exc.status in (400, 409, 413, 422)


@bp.errorhandler(ApiError)
def _refused(exc: ApiError) -> Any:
    """An action the case server refused for a reason the officer can act on: back to the
    report page, saying why; anything else (access, sign-in, outage) as on every page."""
    report_id = (request.view_args or {}).get("report_id")
    if request.method == "POST" and isinstance(report_id, str) and _refusable(exc):
        return pages.done(report_id, exc.message, error=True)
    return api_error_page(exc)


def _handling(bundle: ReportBundle) -> None:
    """Only the handling office acts; a kept copy is read-only (403 as before)."""
    if not bundle.handling:
        abort(403)


# --- inbox -------------------------------------------------------------------------------


@bp.get("/", endpoint="inbox")
@vault.signed_in
def inbox() -> str:
    """The reports of the officer's offices, with their deadlines."""
    entry = _entry()
    args = {k: v for k, v in request.args.items() if v}
    try:
        page_number = max(1, int(args.get("page", "1")))
    except ValueError:
        page_number = 1
    sort = args.get("sort", "received")
    query = InboxQuery(
        status=args.get("status", "") if args.get("status") in entry.me.statuses else "",
        category=args.get("category", "") if args.get("category") in entry.me.categories else "",
        mine=args.get("mine") == "1",
        overdue=args.get("overdue") == "1",
        urgent=args.get("urgent") == "1",
        sort=sort if sort in SORTS else "received",
        page=min(page_number, 10**9),
    )
    page = entry.client.inbox(query)
    return render_template(
        "inbox.html",
        page=page,
        filters=query,
        args=args,
        categories=list(entry.me.categories.items()),
        statuses=[(s, s.capitalize()) for s in entry.me.statuses],
        today=pages.today(),
    )


# --- a report ----------------------------------------------------------------------------


def _render_report(
    entry: vault.Entry,
    bundle: ReportBundle,
    thread: casefile.Thread,
    identity: dict[str, str] | None = None,
) -> str:
    return render_template(
        "report.html",
        report=bundle,
        entries=thread.entries,
        status_changes=bundle.status_changes,
        assignable=[(p.id, p.display_name) for p in bundle.assignees],
        refer_to=[(o.code, o.name) for o in entry.me.offices if o.code != bundle.office],
        next_statuses=bundle.next_statuses,
        outcomes=[(o, o.capitalize()) for o in entry.me.outcomes],
        has_identity=any(e.kind == "identity" for e in thread.entries),
        identity=identity,
        is_handling=bundle.handling,
        source_key=thread.source_key if bundle.handling else None,
        format_size=size_text,
        clean_offer=cleaning.offer,
        me_id=entry.me.id,
        today=pages.today(),
    )


def _open(entry: vault.Entry, bundle: ReportBundle) -> casefile.Thread:
    """The thread opened in memory; damaged items recorded on the case server."""
    thread = casefile.open_thread(bundle, entry.keyring)
    _record_damaged(entry.client, bundle.id, thread.damaged)
    return thread


@bp.get("/reports/<report_id>")
@vault.signed_in
def report(report_id: str) -> str:
    """The whole thread, decrypted for this request."""
    entry = _entry()
    bundle = entry.client.report(report_id)
    return _render_report(entry, bundle, _open(entry, bundle))


def _reading_key(entry: vault.Entry, bundle: ReportBundle) -> KeyChain:
    """The key of the office the officer reads the report through."""
    key = entry.keyring.office_keys.get(bundle.reading_office)
    if key is None:
        raise casefile.KeyMismatch(
            _(
                "You hold no key for office %(office)s that opens:"
                " ask an administrator for a new grant.",
                office=bundle.reading_office,
            ),
            f"office key: no key held for {bundle.reading_office}",
        )
    return key


def _file(bundle: ReportBundle, item_id: str) -> SealedItem:
    for item in bundle.items:
        if item.id == item_id and item.kind == "file":
            return item
    abort(404)


def _open_file(
    entry: vault.Entry, bundle: ReportBundle, item: SealedItem
) -> tuple[Contents, Iterator[bytes], BinaryIO]:
    """(contents, plaintext chunks, the ciphertext spool to close): the file authenticated whole.

    pages.Unopened with the page to show for a file damaged on the server, one that
    does not decrypt (recorded), or one never shared with a kept copy.
    """
    report_id = bundle.id
    spool: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    try:
        # Ciphertext only: the case server never had anything else to send.
        try:
            with entry.client.item_body(report_id, item.id) as response:
                for chunk in response.iter_bytes():
                    spool.write(chunk)
        except ApiError as refused:
            if not refused.extra.get("damaged"):
                raise
            # Its content is missing on the server, which recorded the damage itself.
            raise pages.damaged() from None
        spool.seek(0)
        try:
            contents, chunks = casefile.decrypt_file(
                item.key_block, spool, _reading_key(entry, bundle), report_id, item.id
            )
        except DecryptionError:
            if bundle.shared_up_to is not None and item.seq > bundle.shared_up_to:
                raise pages.Unopened(
                    pages.error_page(
                        _("File not shared with your office"),
                        _(
                            "This file was added after your office referred the report,"
                            " and is not shared with your office."
                        ),
                        403,
                    )
                ) from None
            _record(entry.client, report_id, "item.damaged", item.id)
            raise pages.damaged() from None
    except BaseException:
        spool.close()
        raise
    return contents, chunks, spool


@bp.get("/reports/<report_id>/files/<item_id>")
@vault.signed_in
def download(report_id: str, item_id: str) -> Response | tuple[str, int]:
    """A file, decrypted as it streams; always a download, never shown inline."""
    entry = _entry()
    bundle = entry.client.report(report_id)
    return pages.download(lambda: _open_file(entry, bundle, _file(bundle, item_id)))


@bp.get("/reports/<report_id>/files/<item_id>/cleaned")
@vault.signed_in
def cleaned(report_id: str, item_id: str) -> Response | tuple[str, int] | WerkzeugResponse:
    """A copy of a file with its metadata removed by mat2, in memory; the original is unchanged."""
    entry = _entry()
    bundle = entry.client.report(report_id)
    return pages.cleaned_copy(
        report_id, item_id, lambda: _open_file(entry, bundle, _file(bundle, item_id))
    )


# --- actions -----------------------------------------------------------------------------


@bp.post("/reports/<report_id>/reply")
@vault.signed_in
def reply(report_id: str) -> WerkzeugResponse:
    """Send a message to the source, sealed here to the source and the handling office."""
    entry = _entry()
    text = request.form.get("message", "").strip()
    if not text:
        return pages.done(report_id, _("write a message before sending"), error=True)
    bundle = entry.client.report(report_id)
    _handling(bundle)
    # Only while the report is unacknowledged: a later reply never acknowledges again.
    acknowledge = request.form.get("acknowledge") == "yes" and bundle.acknowledged_at is None
    thread = _open(entry, bundle)
    try:
        recipients = casefile.reply_recipients(bundle, thread, entry.keyring, entry.me, _pins())
    except casefile.KeyMismatch as refused:
        return _mismatch(entry.client, report_id, refused)
    sealed = casefile.seal_text(report_id, text, "reply", recipients)
    entry.client.add_item(report_id, "reply", sealed, acknowledge=acknowledge)
    if thread.source_key != "matches":
        sent = str(UNCHECKED_SENT)
    else:
        sent = _("Your message was sent to the source.")
    if acknowledge:
        sent += " " + _("The report is marked acknowledged: the 7-day deadline is met.")
    return pages.done(report_id, sent)


def _office_message(
    entry: vault.Entry, report_id: str, text: str, kind: str, bundle: ReportBundle | None = None
) -> None:
    """Seal a note to the office(s) and store it; KeyMismatch before anything is sent."""
    bundle = bundle or entry.client.report(report_id)
    _handling(bundle)
    recipients = casefile.office_recipients(bundle, entry.keyring, entry.me, _pins())
    entry.client.add_item(report_id, kind, casefile.seal_text(report_id, text, kind, recipients))


@bp.post("/reports/<report_id>/notes")
@vault.signed_in
def note(report_id: str) -> WerkzeugResponse:
    """Add an internal note, sealed here to the handling office only."""
    entry = _entry()
    text = request.form.get("text", "").strip()
    if not text:
        return pages.done(report_id, _("write the note before saving"), error=True)
    try:
        _office_message(entry, report_id, text, "note")
    except casefile.KeyMismatch as refused:
        return _mismatch(entry.client, report_id, refused)
    return pages.done(report_id, _("The note was saved."))


@bp.post("/reports/<report_id>/assign")
@vault.signed_in
def assign(report_id: str) -> WerkzeugResponse:
    """Assign the report to an officer, or to nobody."""
    entry = _entry()
    raw = request.form.get("assignee_id", "")
    assignee = form_row_id(raw) if raw else None
    if raw and assignee is None:
        return pages.done(
            report_id, _("Choose an officer of the office handling the report."), error=True
        )
    entry.client.assign(report_id, assignee)
    return pages.done(report_id, _("The assignment was saved."))


@bp.post("/reports/<report_id>/status")
@vault.signed_in
def status(report_id: str) -> WerkzeugResponse:
    """Change the report's status; closing also writes the reason as a note, sealed here."""
    entry = _entry()
    to_status = request.form.get("status", "")
    outcome = request.form.get("outcome") or None
    reason = request.form.get("reason", "").strip()
    try:
        if to_status == "closed":
            if outcome not in entry.me.outcomes:
                raise Refused(_("choose the outcome before closing the report"))
            if not reason:
                raise Refused(_("write the reason for closing the report"))
            bundle = entry.client.report(report_id)
            _handling(bundle)
            if to_status not in bundle.next_statuses:
                raise Refused(
                    _(
                        "a report that is %(now)s cannot become %(next)s",
                        now=bundle.status,
                        next=to_status,
                    )
                )
            # The reason first: a report is never closed without it.
            _office_message(entry, report_id, f"Closed ({outcome}): {reason}", "note", bundle)
        else:
            outcome = None
        entry.client.change_status(report_id, to_status, outcome)
    except Refused as refused:
        return pages.done(report_id, refused.message, error=True)
    except casefile.KeyMismatch as refused:
        return _mismatch(entry.client, report_id, refused)
    return pages.done(report_id, _("The status was changed."))


@bp.post("/reports/<report_id>/refer")
@vault.signed_in
def refer(report_id: str) -> WerkzeugResponse:
    """Refer the report to the other office: every key block re-sealed here to its checked key."""
    entry = _entry()
    to_office = request.form.get("office", "")
    keep_copy = request.form.get("keep_copy") == "yes"
    names = {o.code: o.name for o in entry.me.offices}
    if to_office not in names:
        return pages.done(report_id, _("Choose an office to refer to."), error=True)
    bundle = entry.client.report(report_id)
    _handling(bundle)
    if to_office == bundle.office:
        return pages.done(report_id, _("the report is already with that office"), error=True)
    try:
        pins = _pins()
        to_key = casefile.trusted_office_key(to_office, entry.me, entry.keyring, pins)
        blocks, damaged = casefile.referral_key_blocks(
            bundle, entry.keyring, to_key, keep_copy, entry.me, pins
        )
    except casefile.KeyMismatch as refused:
        return _mismatch(entry.client, report_id, refused)
    _record_damaged(entry.client, report_id, damaged)
    entry.client.refer(report_id, to_office, keep_copy, blocks)
    flash(_("The report was referred to %(office)s.", office=names[to_office]), "info")
    if keep_copy:
        return redirect(url_for("reports.report", report_id=report_id))
    return redirect(url_for("reports.inbox"))


@bp.post("/reports/<report_id>/identity")
@vault.signed_in
def reveal(report_id: str) -> Any:
    """Reveal the source's identity details, with a written reason sealed to the office."""
    entry = _entry()
    reason = request.form.get("reason", "").strip()
    if len(reason) < MIN_REASON:
        return pages.done(
            report_id,
            _("write the reason for revealing the identity (at least 10 characters)"),
            error=True,
        )
    bundle = entry.client.report(report_id)
    thread = _open(entry, bundle)
    if not any(item.kind == "identity" for item in bundle.items):
        return pages.done(report_id, _("the source gave no identity details"), error=True)
    try:
        recipients = casefile.office_recipients(bundle, entry.keyring, entry.me, _pins())
    except casefile.KeyMismatch as refused:
        return _mismatch(entry.client, report_id, refused)
    sealed = casefile.seal_text(report_id, reason, "reveal", recipients)
    items = entry.client.reveal(report_id, sealed)
    details, damaged = casefile.open_identity(items, bundle, entry.keyring)
    _record_damaged(entry.client, report_id, damaged)
    if not details and damaged:
        return pages.done(report_id, _("The identity details are damaged."), error=True)
    # The reason just stored, shown in the thread as a reload would show it.
    shown = replace(
        thread,
        entries=[
            *thread.entries,
            casefile.ThreadEntry(
                id=sealed.item_id,
                seq=max((e.seq for e in thread.entries), default=0) + 1,
                kind="reveal",
                from_source=False,
                created_at=datetime.now(UTC).replace(tzinfo=None),
                size=sealed.size,
                author=entry.me.display_name,
                text=reason,
            ),
        ],
    )
    return _render_report(entry, bundle, shown, identity=details)


# --- export for an investigator ----------------------------------------------------------


def _export_page(
    bundle: ReportBundle,
    *,
    key: export.InvestigatorKey | None = None,
    error: str = "",
    pasted: str = "",
    status: int = 200,
) -> tuple[str, int]:
    page = render_template(
        "export.html", report=bundle, key=key, error=error, pasted=pasted, today=pages.today()
    )
    return page, status


def _pasted_key() -> tuple[bytes, str]:
    """The key the officer pasted or chose as a file: (its bytes, the pasted text to show again)."""
    pasted = request.form.get("key", "")
    upload = request.files.get("key_file")
    if upload is not None and upload.filename:
        data = upload.read(export.MAX_KEY_BYTES + 1)
        if data.strip():
            return data, pasted
    return pasted.encode("utf-8", "replace"), pasted


@bp.get("/reports/<report_id>/export")
@vault.signed_in
def export_form(report_id: str) -> tuple[str, int]:
    """Ask for the investigator's public key."""
    bundle = _entry().client.report(report_id)
    _handling(bundle)
    return _export_page(bundle)


@bp.post("/reports/<report_id>/export/key")
@vault.signed_in
def export_key(report_id: str) -> tuple[str, int]:
    """Check the key; show its fingerprint and user ids for the officer to confirm."""
    bundle = _entry().client.report(report_id)
    _handling(bundle)
    data, pasted = _pasted_key()
    try:
        key = export.check_key(data)
    except export.ExportRefused as refused:
        # A private key pasted by mistake is never shown back (nor kept anywhere).
        shown = "" if export.looks_private(pasted.encode("utf-8", "replace")) else pasted
        return _export_page(bundle, error=refused.message, pasted=shown, status=400)
    return _export_page(bundle, key=key)


def _export_files(
    entry: vault.Entry, bundle: ReportBundle, thread: casefile.Thread
) -> list[export.ExportedFile]:
    """Every file of the thread that opens, decrypted in memory (each download is recorded)."""
    files: list[export.ExportedFile] = []
    for shown in thread.entries:
        if shown.kind != "file" or shown.damaged or shown.not_shared:
            continue
        try:
            contents, chunks, spool = _open_file(entry, bundle, _file(bundle, shown.id))
        except pages.Unopened:
            continue  # the thread text says it is not included
        try:
            data = b"".join(chunks)
        except DecryptionError:
            continue
        finally:
            spool.close()
        files.append(export.ExportedFile(shown.id, contents.name, contents.content_type, data))
    return files


@bp.post("/reports/<report_id>/export")
@vault.signed_in
def export_report(report_id: str) -> Response | tuple[str, int]:
    """The report as one zip archive, encrypted to the confirmed key, sent as a download.

    Built and encrypted in memory; recorded on the case server (`report.export`,
    with the key's fingerprint) before anything is sent, and not sent if it
    cannot be recorded.
    """
    entry = _entry()
    key_text = request.form.get("key", "")
    confirmed = request.form.get("fingerprint", "")
    bundle = entry.client.report(report_id)
    _handling(bundle)
    try:
        key = export.check_key(key_text.encode("utf-8", "replace"))
        if key.fingerprint != "".join(confirmed.split()).upper():
            raise export.ExportRefused(
                _("The key is not the one whose fingerprint you confirmed. Check the key again.")
            )
        thread = _open(entry, bundle)
        total = sum(e.size for e in thread.entries if e.kind == "file")
        if total > export.MAX_EXPORT_BYTES:
            raise export.ExportRefused(
                _(
                    "This report's files are too large to export in one archive (more than"
                    " %(size)s). Nothing was exported.",
                    size=size_text(export.MAX_EXPORT_BYTES),
                )
            )
        files = _export_files(entry, bundle, thread)
        events = entry.client.report_events(report_id)
        offices = {o.code: o.name for o in entry.me.offices}
        made = export.Export(
            bundle=bundle,
            thread=thread,
            files=files,
            events=events,
            officer=f"{entry.me.display_name} ({entry.me.username})",
            office_name=offices.get(bundle.office, bundle.office),
            category_name=entry.me.categories.get(bundle.category, bundle.category),
            at=datetime.now(UTC),
            key=key,
        )
        sealed = export.encrypt(key.armored, key.fingerprint, export.build_archive(made))
    except export.ExportRefused as refused:
        shown = "" if export.looks_private(key_text.encode("utf-8", "replace")) else key_text
        return _export_page(bundle, error=refused.message, pasted=shown, status=400)
    # Recorded before it is sent: an export the audit log does not show is never handed over.
    entry.client.record(report_id, "report.export", key.fingerprint)
    return pages.attachment([sealed], made.download_name, len(sealed))


@bp.get("/reports/<report_id>/delete")
@vault.signed_in
def confirm_delete(report_id: str) -> str:
    """Ask before deleting."""
    bundle = _entry().client.report(report_id)
    _handling(bundle)
    return render_template("confirm_delete.html", report=bundle)


@bp.post("/reports/<report_id>/delete")
@vault.signed_in
def delete(report_id: str) -> WerkzeugResponse:
    """Crypto-shred the report, once its designation has been typed to confirm."""
    entry = _entry()
    confirmation = request.form.get("confirm", "").strip().lower()
    bundle = entry.client.report(report_id)
    _handling(bundle)
    if confirmation != bundle.designation.lower():
        flash(_("Type the designation exactly to confirm the deletion."), "error")
        return redirect(url_for("reports.confirm_delete", report_id=report_id))
    entry.client.delete_report(report_id)
    flash(_("The report was deleted."), "info")
    return redirect(url_for("reports.inbox"))
