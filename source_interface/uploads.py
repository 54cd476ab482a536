"""Streaming uploads: each file part is encrypted while the request body arrives.

Werkzeug would spool any upload over 500 KB to a temporary file, in
plaintext. Here every file part goes straight into an envelope writer
instead, so no part of an upload ever touches the disk unencrypted.
"""

from __future__ import annotations

import secrets
from typing import IO, Any, cast

from flask import Request, current_app, g, request, session
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.formparser import FormDataParser, MultiPartParser

from dropbox.instance import Instance
from dropbox.models import Report
from dropbox.reports import Upload
from source_interface.views import error_page

UPLOAD_ENDPOINTS = frozenset({"submit_report", "answer"})

# How much of the request body to ask the WSGI server for at once. gunicorn
# receives up to 1 MiB per recv() and, when the application asks for less,
# copies what is left over into a new buffer on every read: with Werkzeug's
# 64 KiB reads it copied each byte of a large upload many times over, and the
# server spent about 1.6 times the CPU per uploaded byte (bench/upload.py).
READ_BLOCK = 1024 * 1024

# How much the multipart parser takes at a time. Werkzeug's default, 64 KiB,
# costs a round of Python-level parsing per 64 KiB; 512 KiB took about 15%
# less worker CPU per uploaded byte (bench/upload.py). Werkzeug refuses a
# chunk that would grow its buffer past MAX_FORM_MEMORY_SIZE (1 MiB), so this
# stays well under it: the buffer holds one chunk plus a partial boundary.
PARSE_BLOCK = 512 * 1024


class _BlockReader:
    """Reads the request body 1 MiB at a time and hands it out in the sizes asked for.

    Holds at most one block (of the request body as it arrived, in memory
    only); the pieces are views of it, not copies.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._block = memoryview(b"")

    def read(self, size: int = -1) -> memoryview:
        if not self._block:
            self._block = memoryview(self._stream.read(READ_BLOCK))
        if size < 0 or size >= len(self._block):
            piece, self._block = self._block, memoryview(b"")
        else:
            piece, self._block = self._block[:size], self._block[size:]
        return piece


class _FormDataParser(FormDataParser):
    """Werkzeug's form parser, reading a multipart body through a `_BlockReader` in big chunks."""

    def _parse_multipart(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str],
    ) -> tuple[IO[bytes], MultiDict[str, str], MultiDict[str, FileStorage]]:
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        parser = MultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.cls,
            buffer_size=PARSE_BLOCK,
        )
        reader = cast(IO[bytes], _BlockReader(stream))
        form, files = parser.parse(reader, boundary, content_length)
        return stream, form, files


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

    form_data_parser_class = _FormDataParser

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


def refuse_upload_without_session() -> ResponseReturnValue | None:
    """Before anything reads the body: an upload nobody may send is refused unread.

    The CSRF check reads the form, and reading the form encrypts the files
    into the store: so this runs first, and answers from the session alone.
    A new report needs a confirmed codename (or a signed-in source, whom the
    report page sends on to their thread); an answer needs a signed-in source
    whose report still exists. The refusal is the page a form from an ended
    session gets.
    """
    if request.method != "POST" or request.endpoint not in UPLOAD_ENDPOINTS:
        return None
    report_id = session.get("report_id")
    if request.endpoint == "submit_report" and (report_id or session.get("pending_lookup_id")):
        return None
    if request.endpoint == "answer" and isinstance(report_id, str):
        instance: Instance = current_app.extensions["dropbox"]
        with instance.readers() as db:
            if db.get(Report, report_id) is not None:
                return None
        refused = error_page("form_expired", 400)  # in the session's language, before it goes
        session.clear()  # the report was deleted: nothing is left to sign in to
        return refused
    return error_page("form_expired", 400)


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
