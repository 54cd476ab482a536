"""Offline review bundles: an office's ciphertext carried to an offline machine, and back.

For an office that keeps its key off every networked machine. The case
server writes an **export bundle** (`dropbox bundle export`,
`dropbox/admin/bundles.py`): the metadata it holds about the office's
reports and their sealed items, exactly as stored. The reviewer app opens it
on the offline machine (`dropbox reviewer --bundle`,
`journalist_interface/offline.py`) and writes the replies and notes sealed
there into a **return bundle**, which the case server imports after
checking it. Both are zip files whose members are stored, not compressed
(ciphertext does not compress), with fixed member times; docs/format.md
("Offline bundles") specifies them.

This module reads and writes both files and checks everything that can be
checked without the database or a key. It imports no web framework and no
database, so the reviewer app may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar

from crypto import envelope
from crypto.errors import DecryptionError
from dropbox.api_schema import Malformed, OfficeInfo, ReportBundle, dump, load
from dropbox.errors import DropboxError
from dropbox.items import is_id
from dropbox.models import ItemKind

T = TypeVar("T")

EXPORT_FORMAT = "dropbox-offline-export"
RETURN_FORMAT = "dropbox-offline-return"
# The one version of both formats this program writes and reads (docs/format.md: Versions).
VERSION = 1
MANIFEST = "bundle.json"
BODIES = "bodies/"
# The manifest holds every message body of the bundle in base64; files are members of their own.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
# A reply or a note sealed offline: as large as the case server takes one (cases.MAX_OFFICER_ITEM).
MAX_RETURN_ITEM = 1024 * 1024
MAX_RETURN_ITEMS = 10_000
# What the offline machine may add to a thread.
RETURN_KINDS = frozenset({ItemKind.REPLY, ItemKind.NOTE})
# Every member's time: the bundle says nothing about when it was written beyond its manifest.
_MEMBER_TIME = (1980, 1, 1, 0, 0, 0)
_COPY_BYTES = 1024 * 1024


class BundleRefused(DropboxError):
    """A bundle that is not what it must be; the message says why, in one plain sentence."""


# --- the manifests --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExportManifest:
    """What an export bundle holds: the office, its labels, and each report's sealed thread.

    A file item's body is the member `bodies/<item id>` when `files` names
    it (with its length); otherwise only its head travels (it came in an
    earlier bundle). Identity items travel as a head only, always: the case
    server releases them after a recorded reason, which needs the server.
    """

    format: str
    version: int
    bundle_id: str
    created_at: datetime
    office: OfficeInfo
    categories: dict[str, str]
    statuses: list[str]
    outcomes: list[str]
    reports: list[ReportBundle]
    files: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class ReturnItem:
    """A reply or a note sealed on the offline machine, for the case server to store as it is."""

    report_id: str
    kind: str
    item_id: str
    size: int
    key_block: bytes
    body: bytes


@dataclass(frozen=True, kw_only=True)
class ReturnManifest:
    """What a return bundle holds: the export it answers, and the items sealed offline."""

    format: str
    version: int
    bundle_id: str
    answers: str
    office: str
    created_at: datetime
    items: list[ReturnItem]


# --- reading ---------------------------------------------------------------------------


def _zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BundleRefused(f"{path} does not exist") from None
    except IsADirectoryError:
        raise BundleRefused(f"{path} is a folder, not a bundle") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
        raise BundleRefused(
            f"{path} is not a bundle, or it is damaged or cut short; nothing was read from it"
        ) from None
    except OSError as exc:
        raise BundleRefused(f"cannot read {path}: {exc.strerror}") from None


def _check_members(archive: zipfile.ZipFile, path: Path, bodies: bool) -> dict[str, int]:
    """Every member a bundle may hold, stored and unique: {item id: length} of the bodies."""
    seen: set[str] = set()
    found: dict[str, int] = {}
    for info in archive.infolist():
        name = info.filename
        if name in seen:
            raise BundleRefused(f"{path} holds {name} twice; it was changed after it was written")
        seen.add(name)
        is_body = bodies and name.startswith(BODIES) and is_id(name[len(BODIES) :])
        if name != MANIFEST and not is_body:
            raise BundleRefused(f"{path} holds a member a bundle never holds ({name[:80]!r})")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise BundleRefused(f"{path} holds a compressed or encrypted member; bundles do not")
        if info.file_size != info.compress_size:
            raise BundleRefused(f"{path} is damaged: a member's sizes disagree")
        if is_body:
            found[name[len(BODIES) :]] = info.file_size
    if MANIFEST not in seen:
        raise BundleRefused(f"{path} has no {MANIFEST}: it is not a bundle, or it is damaged")
    return found


def _read_manifest(archive: zipfile.ZipFile, path: Path, expected: str, cls: type[T]) -> T:
    info = archive.getinfo(MANIFEST)
    if info.file_size > MAX_MANIFEST_BYTES:
        raise BundleRefused(f"{path} is too large to be a bundle's manifest")
    try:
        data = archive.read(MANIFEST)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):
        raise BundleRefused(
            f"{path} is damaged: its manifest does not match its checksum (changed or cut short)"
        ) from None
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BundleRefused(f"{path} is damaged: its manifest is not JSON") from None
    if not isinstance(document, dict):
        raise BundleRefused(f"{path} is damaged: its manifest is not a JSON object")
    _check_format(document, path, expected)
    try:
        return load(cls, document)
    except Malformed as exc:
        raise BundleRefused(f"{path} is damaged: in its manifest, {exc}") from None


def _check_format(document: dict[str, Any], path: Path, expected: str) -> None:
    """The format and version first: a newer bundle is named as such, not as damage."""
    found = document.get("format")
    if found != expected:
        if found == EXPORT_FORMAT:
            raise BundleRefused(f"{path} is an export bundle, not a bundle of replies and notes")
        if found == RETURN_FORMAT:
            raise BundleRefused(f"{path} is a bundle of replies and notes, not an export bundle")
        raise BundleRefused(f"{path} is not a dropbox bundle")
    version = document.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise BundleRefused(
            f"{path} was made by a newer version of the dropbox (bundle format {version});"
            f" this program reads format {VERSION} only. Update it, then try again"
        )
    if version != VERSION:
        raise BundleRefused(f"{path} has an unknown format version; nothing was read from it")


class ExportBundle:
    """An export bundle opened for reading: its checked manifest, and its file bodies on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        archive = _zip(path)
        try:
            bodies = _check_members(archive, path, bodies=True)
            manifest = _read_manifest(archive, path, EXPORT_FORMAT, ExportManifest)
            _check_export(manifest, bodies, path)
        except BaseException:
            archive.close()
            raise
        self._archive = archive
        self.manifest = manifest

    def close(self) -> None:
        """Close the file."""
        self._archive.close()

    def report(self, report_id: str) -> ReportBundle | None:
        """The report of that id in the bundle, or None."""
        return next((r for r in self.manifest.reports if r.id == report_id), None)

    def has_body(self, item_id: str) -> bool:
        """Whether a file's whole body travels in this bundle."""
        return item_id in self.manifest.files

    def open_body(self, item_id: str) -> BinaryIO:
        """A file item's whole body (ciphertext), seekable; the caller closes it."""
        if item_id not in self.manifest.files:
            raise KeyError(item_id)
        opened: BinaryIO = self._archive.open(BODIES + item_id)  # type: ignore[assignment]
        return opened


def _check_export(manifest: ExportManifest, bodies: dict[str, int], path: Path) -> None:
    """What the manifest says must agree with itself and with the members."""
    if not is_id(manifest.bundle_id):
        raise BundleRefused(f"{path} is damaged: its bundle id is not one")
    if set(bodies) != set(manifest.files):
        raise BundleRefused(f"{path} is damaged: its files do not match its manifest")
    file_items: set[str] = set()
    item_ids: set[str] = set()
    for report in manifest.reports:
        if not is_id(report.id) or report.office != manifest.office.code:
            raise BundleRefused(f"{path} is damaged: a report is not one of its office's")
        for item in report.items:
            if not is_id(item.id) or item.id in item_ids:
                raise BundleRefused(f"{path} is damaged: an item id is not one, or repeated")
            item_ids.add(item.id)
            if item.kind == ItemKind.FILE:
                file_items.add(item.id)
    for item_id, length in manifest.files.items():
        if item_id not in file_items or bodies[item_id] != length:
            raise BundleRefused(f"{path} is damaged: its files do not match its manifest")


def read_return(path: Path) -> ReturnManifest:
    """A return bundle, with every check that needs neither the database nor a key.

    BundleRefused for anything else: not a zip, a member it never holds, a
    newer or unknown version, a malformed manifest, an id that is not one,
    an item of another kind than a reply or a note, a size over the limit,
    a body whose length is not the one its size gives or whose version
    byte is unknown, a key block that does not parse, an item id twice.
    """
    archive = _zip(path)
    with archive:
        _check_members(archive, path, bodies=False)
        manifest = _read_manifest(archive, path, RETURN_FORMAT, ReturnManifest)
    if not (is_id(manifest.bundle_id) and is_id(manifest.answers)):
        raise BundleRefused(f"{path} is damaged: its bundle ids are not ids")
    if len(manifest.items) > MAX_RETURN_ITEMS:
        raise BundleRefused(f"{path} holds more than {MAX_RETURN_ITEMS} items")
    seen: set[str] = set()
    for number, item in enumerate(manifest.items, start=1):
        _check_return_item(item, number, path)
        if item.item_id in seen:
            raise BundleRefused(f"{path}: item {number} repeats the id of an earlier one")
        seen.add(item.item_id)
    return manifest


def _check_return_item(item: ReturnItem, number: int, path: Path) -> None:
    where = f"{path}: item {number}"
    if not (is_id(item.report_id) and is_id(item.item_id)):
        raise BundleRefused(f"{where} does not name a report and an item by their ids")
    if item.kind not in RETURN_KINDS:
        raise BundleRefused(f"{where} is a {item.kind[:40]!r}; only replies and notes come back")
    if not 0 <= item.size <= MAX_RETURN_ITEM:
        raise BundleRefused(f"{where} is larger than a reply or a note may be")
    whole = len(item.body) == envelope.body_size(item.size)
    if not whole or item.body[:1] != bytes([envelope.VERSION]):
        raise BundleRefused(f"{where} is not a whole envelope: its body is damaged or cut short")
    try:
        envelope.recipient_ids(item.key_block)
    except DecryptionError:
        raise BundleRefused(f"{where} has a malformed key block") from None


# --- writing ---------------------------------------------------------------------------


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_MEMBER_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o600 << 16
    return info


def _manifest_bytes(manifest: ExportManifest | ReturnManifest) -> bytes:
    return json.dumps(dump(manifest), separators=(",", ":"), sort_keys=True).encode("utf-8")


@contextlib.contextmanager
def _new_file(path: Path, *, replace: bool) -> Any:
    """A private temporary file beside `path`, moved into place (synced) when the block ends.

    Without `replace`, an existing `path` is never overwritten (FileExistsError).
    """
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "w+b") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if `path` exists: never overwrites
            os.unlink(temporary)
        fd_dir = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd_dir)
        finally:
            os.close(fd_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_export(
    path: Path,
    manifest: ExportManifest,
    open_body: Callable[[str], IO[bytes]],
) -> int:
    """Write an export bundle to `path` (a new file, never an existing one); its size in bytes.

    `open_body(item_id)` opens the stored body of each file `manifest.files`
    names; it is copied as it is, and must have the length the manifest gives.
    """
    with _new_file(path, replace=False) as handle:
        with zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
            archive.writestr(_member(MANIFEST), _manifest_bytes(manifest))
            for item_id, length in manifest.files.items():
                with (
                    open_body(item_id) as body,
                    archive.open(
                        _member(BODIES + item_id), "w", force_zip64=length > 2**31
                    ) as member,
                ):
                    copied = _copy(body, member)
                if copied != length:
                    raise BundleRefused(f"the stored body of item {item_id} changed while copied")
        size: int = handle.tell()
    return size


def _copy(source: IO[bytes], target: IO[bytes]) -> int:
    copied = 0
    while chunk := source.read(_COPY_BYTES):
        target.write(chunk)
        copied += len(chunk)
    return copied


def write_return(path: Path, manifest: ReturnManifest) -> None:
    """Write (or rewrite, whole and atomically) a return bundle: ciphertext and ids only."""
    with _new_file(path, replace=True) as handle, zipfile.ZipFile(handle, "w") as archive:
        archive.writestr(_member(MANIFEST), _manifest_bytes(manifest))


def read_return_if_any(path: Path) -> ReturnManifest | None:
    """The return bundle at `path`, or None if there is none yet."""
    if not path.exists():
        return None
    return read_return(path)


__all__ = [
    "BODIES",
    "EXPORT_FORMAT",
    "MANIFEST",
    "MAX_RETURN_ITEM",
    "RETURN_FORMAT",
    "RETURN_KINDS",
    "VERSION",
    "BundleRefused",
    "ExportBundle",
    "ExportManifest",
    "ReturnItem",
    "ReturnManifest",
    "read_return",
    "read_return_if_any",
    "write_export",
    "write_return",
]
