"""Streaming uploads: each file part is encrypted while the request body arrives.

Werkzeug would spool any upload over 500 KB to a temporary file, in
plaintext. Here every file part goes straight into an envelope writer
instead, so no part of an upload ever touches the disk unencrypted.
"""

from __future__ import annotations

import secrets
from typing import IO, Any

from flask import Request, current_app, g, request, session

from dropbox.instance import Instance
from dropbox.reports import Upload

UPLOAD_ENDPOINTS = frozenset({"submit_report", "answer"})


class _Discard:
    """Where a file part sent to a page that takes no files goes: nowhere."""

    def write(self, data: bytes) -> int:
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""


class StreamingRequest(Request):
    """A request whose file parts stream into the current `Upload`, encrypted."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        upload: Upload | None = g.get("upload")
        if upload is None:
            return _Discard()  # type: ignore[return-value]
        return upload.open_file(filename, content_type)  # type: ignore[return-value]


def prepare_upload() -> None:
    """Before the form is read: give upload pages an `Upload` for the files to stream into."""
    g.upload = None
    if request.method == "POST" and request.endpoint in UPLOAD_ENDPOINTS:
        instance: Instance = current_app.extensions["dropbox"]
        report_id = session.get("report_id") or session.get("new_report_id")
        g.upload = Upload(instance.store, report_id or secrets.token_hex(16))


def discard_upload(_: Any = None) -> None:
    """After the request: whatever was not committed (refused, failed, cut off) is removed."""
    upload: Upload | None = g.get("upload")
    if upload is not None:
        upload.discard()
