"""Streaming uploads: each file part is encrypted while the request body arrives.

Werkzeug would spool any upload over 500 KB to a temporary file, in
plaintext. Here every file part goes straight into an envelope writer
instead, so no part of an upload ever touches the disk unencrypted.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

from flask import Request, current_app, g, request, session
from flask.typing import ResponseReturnValue
from nacl.public import PrivateKey
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.formparser import FormDataParser, MultiPartParser

from crypto import envelope
from dropbox.instance import Instance
from dropbox.items import StoredEnvelope, item_context, new_id
from dropbox.models import Report
from dropbox.store import Store
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


# The longest file name kept, in bytes of UTF-8 (a common file system limit).
MAX_NAME_BYTES = 255


def clean_file_name(name: str | None) -> str:
    """A safe display name: no path, no control characters, at most 255 bytes of UTF-8."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip().lstrip(".")
    encoded = base.encode("utf-8")[:MAX_NAME_BYTES]
    return encoded.decode("utf-8", "ignore") or "file"


def clean_content_type(value: str | None) -> str:
    """The declared content type if it looks like one; octet-stream otherwise."""
    value = (value or "").split(";", 1)[0].strip().lower()
    if 0 < len(value) <= 127 and value.count("/") == 1 and value.isascii() and " " not in value:
        return value
    return "application/octet-stream"


class UploadedFile:
    """One file of an upload: a writable that encrypts as the request streams in.

    Werkzeug's multipart parser writes to it and calls ``seek(0)`` when the
    part is complete; that is when the envelope is closed.
    """

    def __init__(self, upload: Upload, name: str, content_type: str) -> None:
        self.item_id = new_id()
        self.name = name
        self.blob = upload.store.begin()
        self._writer = envelope.EnvelopeWriter(
            self.blob,
            [upload.request_key.public_key],
            item_context(upload.report_id, self.item_id),
            name=name,
            content_type=content_type,
        )
        self.key_block: bytes | None = None

    def write(self, data: bytes) -> int:
        """Encrypt a piece of the file."""
        return self._writer.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Called by the parser at the end of the part: finish the envelope."""
        if self.key_block is None:
            self.key_block = self._writer.close()
        return 0

    def read(self, size: int = -1) -> bytes:
        """Plaintext is never kept, so there is nothing to read back."""
        return b""

    @property
    def size(self) -> int:
        """Bytes of content received."""
        return self._writer.size

    def discard(self) -> None:
        """Drop the partial or unwanted blob."""
        self.blob.discard()


@dataclass
class Upload:
    """The files of one request, encrypted to a request key until the office is known."""

    store: Store
    report_id: str
    request_key: PrivateKey = field(default_factory=PrivateKey.generate)
    files: list[UploadedFile] = field(default_factory=list)

    def open_file(self, filename: str | None, content_type: str | None) -> UploadedFile:
        """Start receiving one file part."""
        uploaded = UploadedFile(self, clean_file_name(filename), clean_content_type(content_type))
        self.files.append(uploaded)
        return uploaded

    def complete_files(self) -> list[UploadedFile]:
        """Files fully received and not empty (a browser sends an empty part for no file)."""
        return [f for f in self.files if f.key_block is not None and (f.size or f.name != "file")]

    def sealed_to(self, recipients: Sequence[envelope.Recipient]) -> list[StoredEnvelope]:
        """Every complete file, re-sealed to the recipients (`dropbox.reports.Attachments`)."""
        return [self.reseal(uploaded, recipients) for uploaded in self.complete_files()]

    def discard(self) -> None:
        """Remove every blob not yet committed (a failed or refused request)."""
        for uploaded in self.files:
            if not uploaded.blob.committed:
                uploaded.discard()

    def reseal(
        self, uploaded: UploadedFile, recipients: Sequence[envelope.Recipient]
    ) -> StoredEnvelope:
        """Give the recipients the file's key and forget the request key's entry."""
        assert uploaded.key_block is not None  # noqa: S101 - complete_files guarantees it
        key_block = uploaded.key_block
        for recipient in recipients:
            key_block = envelope.add_recipient(key_block, self.request_key, recipient)
        key_block = envelope.remove_recipient(key_block, self.request_key.public_key)
        return StoredEnvelope(uploaded.item_id, uploaded.blob, key_block, uploaded.size)


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
