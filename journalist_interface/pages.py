"""What the report pages online (`reports.py`) and offline (`offline.py`) share.

Both blueprints are named "reports", so that the templates and these helpers
serve either: an error page, a result flashed back on the report page, and a
file sent to the browser, always as a download (never shown inline, never
stored), or its cleaned copy. Where the file's ciphertext comes from (the
case server, or an export bundle) is the caller's: it hands over a function
that opens the file, authenticated whole, as (contents, plaintext chunks,
ciphertext to close), or raises Unopened with the page to show instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any, BinaryIO
from urllib.parse import quote

from flask import Response, flash, redirect, render_template, stream_with_context, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from crypto.envelope import Contents
from journalist_interface import cleaning

OpenedFile = tuple[Contents, Iterator[bytes], BinaryIO]


class Unopened(Exception):
    """A file that cannot be opened: `page` says why (an error page and its status)."""

    def __init__(self, page: tuple[str, int]) -> None:
        super().__init__(page[1])
        self.page = page


def today() -> date:
    return datetime.now(UTC).date()


def error_page(title: str, message: str, status: int) -> tuple[str, int]:
    return render_template("error.html", title=title, message=message, status=status), status


def damaged() -> Unopened:
    """A file whose ciphertext does not decrypt, or is missing."""
    return Unopened(
        error_page(_("Damaged file"), _("This file is damaged and cannot be decrypted."), 422)
    )


def done(report_id: str, message: str, error: bool = False) -> WerkzeugResponse:
    """Back to the report page, saying how an action went."""
    flash(message, "error" if error else "info")
    return redirect(url_for("reports.report", report_id=report_id))


def disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def attachment(body: Any, name: str, size: int | None = None) -> Response:
    sent = Response(body, mimetype="application/octet-stream")
    sent.headers["Content-Disposition"] = disposition(name)
    if size is not None:
        sent.headers["Content-Length"] = str(size)
    sent.headers["Cache-Control"] = "no-store"
    return sent


def download(open_file: Callable[[], OpenedFile]) -> Response | tuple[str, int]:
    """The file, decrypted as it streams; its ciphertext closed once it is sent."""
    try:
        contents, chunks, ciphertext = open_file()
    except Unopened as unopened:
        return unopened.page

    def body() -> Iterator[bytes]:
        try:
            yield from chunks
        finally:
            ciphertext.close()

    return attachment(stream_with_context(body()), contents.name, contents.size)


def cleaned_copy(
    report_id: str, item_id: str, open_file: Callable[[], OpenedFile]
) -> Response | tuple[str, int] | WerkzeugResponse:
    """A copy of the file with its metadata removed by mat2, in memory; the original unchanged.

    If it cannot be cleaned, back to the report page, which says why and still
    offers the original.
    """
    try:
        contents, chunks, ciphertext = open_file()
    except Unopened as unopened:
        return unopened.page
    try:
        data = cleaning.clean(chunks, contents.content_type, contents.name)
    except cleaning.CleaningFailed as failed:
        flash(f"{contents.name}: {failed.message}", "error")
        return redirect(url_for("reports.report", report_id=report_id, _anchor=f"entry-{item_id}"))
    finally:
        ciphertext.close()
    return attachment(
        [data], cleaning.cleaned_name(contents.name, contents.content_type), len(data)
    )


__all__ = [
    "OpenedFile",
    "Unopened",
    "attachment",
    "cleaned_copy",
    "damaged",
    "disposition",
    "done",
    "download",
    "error_page",
    "today",
]
