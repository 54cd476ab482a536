"""Cleaned copies of a report's files: metadata removed with mat2, on the officer's machine.

A photo can carry the camera and where it was taken; a document its author
and editing history; a recording the device that made it. An officer who
hands a file on may want a copy without them: mat2 (Debian's package `mat2`)
writes one. The original is never changed, and both are offered.

Which files: those whose type is an image, a PDF, an office document or an
audio file that mat2 can clean (`mat2 --list`, asked once per process). The
type is the one the source's browser declared; when that says nothing
(`application/octet-stream`), the file name's extension decides. Other
files get no cleaned copy, and the page says so.

mat2 works on files, so the decrypted file is written to a private directory
(0700) under /dev/shm, in memory, never to the disk; mat2 runs there with a
time limit, its temporary files and home inside that directory too, and the
directory is removed in a `finally`. The cleaned copy is read back into
memory and sent.

Cleaning cannot remove what the content itself shows or says: text, faces,
voices, handwriting, watermarks, printer tracking dots.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path, PurePath

from journalist_interface.export import ExportRefused, private_directory

MAT2_PROGRAM = "mat2"
# mat2 renders each page of a PDF: a long document takes a while, but never minutes.
TIME_LIMIT_SECONDS = 120
# The decrypted file and its cleaned copy are both held in memory (/dev/shm).
MAX_CLEAN_BYTES = 256 * 1024 * 1024

_ODF = "application/vnd.oasis.opendocument."
_OOXML = "application/vnd.openxmlformats-officedocument."
# The types a cleaned copy is offered for (images, PDF, office documents, audio), each
# with the extension mat2 reads it by. mat2 must also list the type as supported.
CLEANABLE: dict[str, str] = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/tiff": ".tiff",
    "image/heic": ".heic",
    "image/x-portable-pixmap": ".ppm",
    "application/pdf": ".pdf",
    f"{_ODF}text": ".odt",
    f"{_ODF}spreadsheet": ".ods",
    f"{_ODF}presentation": ".odp",
    f"{_ODF}graphics": ".odg",
    f"{_ODF}chart": ".odc",
    f"{_ODF}formula": ".odf",
    f"{_ODF}image": ".odi",
    f"{_OOXML}wordprocessingml.document": ".docx",
    f"{_OOXML}spreadsheetml.sheet": ".xlsx",
    f"{_OOXML}presentationml.presentation": ".pptx",
    "application/epub+zip": ".epub",
    "audio/flac": ".flac",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "audio/x-aiff": ".aiff",
    "audio/x-wav": ".wav",
}
# Other names browsers give the same types.
ALIASES: dict[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/wav": "audio/x-wav",
    "audio/wave": "audio/x-wav",
    "audio/x-flac": "audio/flac",
    "audio/mp3": "audio/mpeg",
    "audio/aiff": "audio/x-aiff",
}
EXTENSIONS: dict[str, str] = {ext: kind for kind, ext in CLEANABLE.items()} | {
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".tif": "image/tiff",
    ".mp2": "audio/mpeg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".aif": "audio/x-aiff",
    ".aifc": "audio/x-aiff",
}

# What the page says about a file that gets no cleaned copy, by why.
NOT_CLEANABLE = (
    "No cleaned copy: mat2 cannot remove metadata from this type of file. Only the original"
    " is offered."
)
NO_MAT2 = (
    "No cleaned copy: mat2 is not installed on this machine (Debian's package mat2). Only"
    " the original is offered."
)
TOO_LARGE = (
    "No cleaned copy: this file is too large to clean in memory. Only the original is offered."
)


class CleaningFailed(Exception):
    """mat2 could not clean a file; `message` is for the officer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _program() -> str | None:
    return shutil.which(MAT2_PROGRAM)


def _environment(work: Path) -> dict[str, str]:
    """mat2's environment: its home and temporary files inside the private directory."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "TMPDIR": str(work),
        "XDG_CACHE_HOME": str(work),
        "XDG_CONFIG_HOME": str(work),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


@functools.cache
def _supported(program: str) -> frozenset[str]:
    """The types `mat2 --list` says it can clean (an empty set if it cannot say)."""
    try:
        listed = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [program, "--list"],
            capture_output=True,
            timeout=30,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        )
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    kinds = set()
    for line in listed.stdout.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("- "):
            kinds.add(line[2:].split(" ", 1)[0].lower())
    return frozenset(kinds)


def file_type(content_type: str | None, name: str | None) -> str | None:
    """The cleanable type of a file, from its declared type or else its extension; None if none."""
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    declared = ALIASES.get(declared, declared)
    if declared in CLEANABLE:
        return declared
    extension = PurePath(name or "").suffix.lower()
    return EXTENSIONS.get(extension)


def offer(content_type: str | None, name: str | None, size: int) -> str | None:
    """None if a cleaned copy is offered for this file; else why not, in a sentence for the page."""
    program = _program()
    if program is None:
        return NO_MAT2
    kind = file_type(content_type, name)
    if kind is None or kind not in _supported(program):
        return NOT_CLEANABLE
    if size > MAX_CLEAN_BYTES:
        return TOO_LARGE
    return None


def cleaned_name(name: str, content_type: str | None) -> str:
    """The cleaned copy's name: the original's, marked, with the extension of its type."""
    path = PurePath(name or "file")
    kind = file_type(content_type, name)
    extension = path.suffix if path.suffix.lower() in EXTENSIONS else CLEANABLE.get(kind or "", "")
    return f"{path.stem if path.suffix else path.name}.cleaned{extension}"


def clean(chunks: Iterable[bytes], content_type: str | None, name: str | None) -> bytes:
    """A copy of the file with its metadata removed by mat2; the plaintext only ever in memory.

    CleaningFailed if mat2 is missing, does not clean this type, fails, or
    takes longer than the time limit.
    """
    program = _program()
    if program is None:
        raise CleaningFailed(NO_MAT2)
    kind = file_type(content_type, name)
    if kind is None or kind not in _supported(program):
        raise CleaningFailed(NOT_CLEANABLE)
    extension = CLEANABLE[kind]
    try:
        with private_directory("dropbox-clean-") as work:
            source = work / f"file{extension}"
            descriptor = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as plain:
                for chunk in chunks:
                    plain.write(chunk)
            try:
                done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                    [program, "--", source.name],
                    cwd=work,
                    env=_environment(work),
                    capture_output=True,
                    timeout=TIME_LIMIT_SECONDS,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise CleaningFailed(
                    f"This file could not be cleaned: mat2 took longer than {TIME_LIMIT_SECONDS}"
                    " seconds. The original is still offered."
                ) from None
            result = work / f"file.cleaned{extension}"
            if done.returncode != 0 or not result.is_file():
                raise CleaningFailed(
                    "This file could not be cleaned: mat2 could not read it (it may be damaged,"
                    " or not the type it claims to be). The original is still offered."
                )
            return result.read_bytes()
    except ExportRefused as refused:
        raise CleaningFailed(refused.message) from None


__all__ = [
    "CLEANABLE",
    "NOT_CLEANABLE",
    "NO_MAT2",
    "CleaningFailed",
    "clean",
    "cleaned_name",
    "file_type",
    "offer",
]
