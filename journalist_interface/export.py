"""Handing a report on: one archive, encrypted to an investigator's OpenPGP key, in memory.

An investigation unit that uses GnuPG or Kleopatra opens the export with its
own tools: it is a zip archive (a manifest, readable text files for the
report, its thread, its status history and its audit events, and the files
under their own names, made safe), encrypted with `gpg` to the key the
officer pasted and confirmed by its fingerprint.

Nothing of the report touches the disk: the archive is built in memory, and
handed to `gpg` on its standard input; `gpg` writes the ciphertext to its
standard output. `gpg` needs a home directory for the one public key it
encrypts to: each call gets a fresh private one (0700) under /dev/shm,
removed when the call ends, and holds nothing but that public key. No secret
key is ever imported: a pasted private key is refused before `gpg` sees it.
The key is checked and encrypted to by `dropbox.openpgp`, which the case
server uses for officers' keys too; this module says its refusals in the
words of the export page.

The source's identity details are not part of an export: they stay sealed
until an officer reveals them with a reason, and an export never does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import unicodedata
import zipfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dropbox import openpgp
from dropbox.api_schema import AuditEntry, ReportBundle
from journalist_interface.casefile import Thread, ThreadEntry

# The memory-backed folder the private working directories are made in.
MEMORY_DIR = Path("/dev/shm")  # noqa: S108 - a private 0700 directory is made in it  # nosec B108
# A public key with all its signatures is rarely more than a few hundred KiB.
MAX_KEY_BYTES = 1024 * 1024
# The files' plaintext, all of it held in memory (and its ciphertext beside it).
MAX_EXPORT_BYTES = 512 * 1024 * 1024
# Characters Windows refuses in a file name, besides the control characters.
_UNSAFE = set('<>:"/\\|?*')
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)}
MAX_NAME_CHARS = 120

# The investigator's key is checked by dropbox.openpgp, as the case server checks an
# officer's; the officer reads why a key is refused in these words.
InvestigatorKey = openpgp.PublicKey
looks_private = openpgp.looks_private
_REFUSALS = {
    openpgp.EMPTY: "Paste the investigator's public key, or choose its file.",
    openpgp.TOO_LARGE: "This is too large to be one public key: check what you pasted.",
    openpgp.PRIVATE: (
        "This is a private key. Ask the investigator for their public key only, and"
        " tell them a private key must never be shared."
    ),
    openpgp.NOT_A_KEY: (
        "This is not an OpenPGP public key. Paste the whole block, from"
        " -----BEGIN PGP PUBLIC KEY BLOCK----- to the END line, or choose the key's file."
    ),
    openpgp.SEVERAL: (
        "This holds {count} keys. Paste only the key of the investigator who will open the export."
    ),
    openpgp.REVOKED: (
        "This key has been revoked by its owner. Ask the investigator for their current key."
    ),
    openpgp.EXPIRED: ("This key expired on {expires}. Ask the investigator for their current key."),
    openpgp.CANNOT_ENCRYPT: (
        "This key cannot be used to encrypt: it has no valid encryption subkey. Ask the"
        " investigator for a key that can receive encrypted files."
    ),
    openpgp.UNREADABLE: "This key could not be read back from GnuPG. Try again.",
    openpgp.MISMATCH: (
        "The key is not the one whose fingerprint you confirmed. Check the key again."
    ),
    openpgp.FAILED: "GnuPG could not encrypt the export to this key. Nothing was exported.",
}
_NO_GPG = (
    "GnuPG (the gpg program) is not installed on this machine, so nothing can be"
    " encrypted to an investigator's key."
)


class ExportRefused(Exception):
    """A key or an export refused; `message` is for the officer, one plain sentence or two."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- private working directories, in memory ------------------------------------------------


def memory_dir() -> Path:
    """Where private working directories go: memory, never the disk."""
    if not (MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK)):
        raise ExportRefused(
            "This machine has no memory-backed folder (/dev/shm) to work in, so nothing was"
            " exported: run the reviewer app on Linux."
        )
    return MEMORY_DIR


def private_directory(prefix: str) -> AbstractContextManager[Path]:
    """A fresh directory under /dev/shm that only this user can enter (0700), removed after.

    Its name starts with `prefix` and this process's id, so that what a
    process leaves behind can be told from what another one is working in.
    """
    return openpgp.private_directory(prefix, memory_dir())


# --- the investigator's key --------------------------------------------------------------------


@contextmanager
def _in_words() -> Iterator[None]:
    """dropbox.openpgp's refusals as ExportRefused, in the words of this app's pages."""
    try:
        yield
    except openpgp.KeyRefused as refused:
        expires = refused.expires.strftime("%Y-%m-%d") if refused.expires else "an earlier date"
        words = _REFUSALS.get(refused.kind, str(refused))
        raise ExportRefused(words.format(count=refused.count, expires=expires)) from None
    except openpgp.GpgMissing:
        raise ExportRefused(_NO_GPG) from None


def check_key(data: bytes) -> InvestigatorKey:
    """The investigator's key, checked: ExportRefused (a plain message) for anything else.

    Refused: no key, a private key, several keys, a key revoked, expired, or
    with no usable encryption subkey. gpg's home is made under /dev/shm.
    """
    with _in_words():
        return openpgp.check_key(data, max_bytes=MAX_KEY_BYTES, parent=memory_dir())


def encrypt(key_text: str, confirmed: str, data: bytes) -> bytes:
    """`data` encrypted to the key, which is checked again and must have the confirmed fingerprint.

    Binary OpenPGP (a .gpg file): GnuPG and Kleopatra open it as it is.
    """
    with _in_words():
        return openpgp.encrypt(
            key_text, confirmed, data, armor=False, max_bytes=MAX_KEY_BYTES, parent=memory_dir()
        )


# --- the archive ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedFile:
    """A file of the thread, decrypted in memory for the archive."""

    item_id: str
    name: str
    content_type: str
    data: bytes = field(repr=False)


def safe_name(name: str, fallback: str = "file") -> str:
    """A file name any system accepts: no folders, control or reserved characters, not too long."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(
        "_" if c in _UNSAFE else c for c in base if unicodedata.category(c)[0] != "C"
    ).strip()
    base = base.strip(". ") or fallback
    stem, dot, ext = base.rpartition(".")
    if dot and stem and len(ext) <= 10:
        stem, ext = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip(". "), "." + ext
    else:
        stem, ext = base[:MAX_NAME_CHARS], ""
    if stem.split(".")[0].upper() in _RESERVED:
        stem = "_" + stem
    return (stem or fallback) + ext


def _stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "unknown time"


_KIND_TITLES = {
    "message": "Message from the source",
    "file": "File from the source",
    "identity": "Identity details from the source",
    "acknowledgement": "Acknowledgement to the source",
    "reply": "Reply to the source",
    "note": "Internal note (never shown to the source)",
    "reveal": "Identity details revealed (reason; never shown to the source)",
}


def _entry_text(entry: ThreadEntry, paths: dict[str, str]) -> list[str]:
    title = _KIND_TITLES.get(entry.kind, "Item")
    who = f", by {entry.author}" if entry.author else ""
    lines = [f"--- No. {entry.seq}: {title}, {_stamp(entry.created_at)}{who}", ""]
    if entry.not_shared:
        lines.append("[Not shared with the exporting office: not included.]")
    elif entry.damaged:
        lines.append("[Damaged: it could not be decrypted, and is not included.]")
    elif entry.kind == "file":
        where = paths.get(entry.id)
        shown = f"{entry.file_name or '(no name)'} ({entry.content_type or 'unknown type'},"
        shown += f" {entry.size} bytes)"
        lines.append(f"File: {shown}")
        lines.append(f"In this archive: {where}" if where else "[Not included in this archive.]")
    elif entry.kind == "identity":
        lines.append("[Identity details are not part of an export; they stay sealed.]")
    else:
        if entry.text:
            lines.append(entry.text)
        for label, value in (entry.details or {}).items():
            lines.append(f"{label}: {value}")
    if entry.deleted_by_source:
        lines.append("[The source deleted this message after reading it.]")
    lines.append("")
    return lines


@dataclass(frozen=True)
class Export:
    """What goes into one export, all of it already decrypted in memory."""

    bundle: ReportBundle
    thread: Thread
    files: list[ExportedFile]
    events: list[AuditEntry]
    officer: str
    office_name: str
    category_name: str
    at: datetime
    key: InvestigatorKey

    @property
    def folder(self) -> str:
        return f"report-{safe_name(self.bundle.designation, 'report')}"

    @property
    def download_name(self) -> str:
        return f"{self.folder}-{self.at.strftime('%Y-%m-%d')}.zip.gpg"


def _report_text(export: Export) -> str:
    b = export.bundle
    rows = [
        ("Designation", b.designation),
        ("Office", f"{export.office_name} ({b.office})"),
        ("Category", export.category_name),
        ("Status", b.status + (f" ({b.outcome})" if b.outcome else "")),
        ("Urgent", "yes: the source said their safety was at immediate risk" if b.urgent else "no"),
        ("Received", b.received.isoformat()),
        ("Acknowledge by", b.acknowledge_due.isoformat()),
        ("Acknowledged", _stamp(b.acknowledged_at) if b.acknowledged_at else "not yet"),
        ("Feedback by", b.feedback_due.isoformat()),
        ("Closed", _stamp(b.closed_at) if b.closed_at else "not closed"),
        ("Assigned to", b.assignee or "nobody"),
    ]
    return "\n".join(f"{label}: {value}" for label, value in rows) + "\n"


def _history_text(export: Export) -> str:
    lines = ["Status history, oldest first. Times are UTC.", ""]
    for change in export.bundle.status_changes:
        move = (
            f"{change.from_status} -> {change.to_status}"
            if change.from_status
            else (change.to_status)
        )
        outcome = f" ({change.outcome})" if change.outcome else ""
        who = f"by {change.officer}" if change.officer else "by the system"
        lines.append(f"{_stamp(change.at)}  {move}{outcome}  {who}")
    if not export.bundle.status_changes:
        lines.append("No status change.")
    return "\n".join(lines) + "\n"


def _audit_text(export: Export) -> str:
    lines = [
        "The report's audit events on the case server, oldest first. Times are UTC.",
        "They hold no content: who did what, and when. This export is recorded after them.",
        "",
    ]
    for event in sorted(export.events, key=lambda e: e.id):
        detail = f"  {event.detail}" if event.detail else ""
        lines.append(f"{_stamp(event.at)}  #{event.id}  {event.actor}  {event.action}{detail}")
    return "\n".join(lines) + "\n"


def _thread_text(export: Export, paths: dict[str, str]) -> str:
    lines = [
        f"Thread of report {export.bundle.designation}, oldest first. Times are UTC; what the",
        "source sends is dated to the day only.",
        "",
    ]
    for entry in sorted(export.thread.entries, key=lambda e: e.seq):
        lines.extend(_entry_text(entry, paths))
    return "\n".join(lines)


def build_archive(export: Export) -> bytes:
    """The zip archive, built in memory: MANIFEST.txt and manifest.json list every other file."""
    folder = export.folder
    by_seq = {e.id: e.seq for e in export.thread.entries}
    paths: dict[str, str] = {}
    members: list[tuple[str, bytes]] = []
    taken: set[str] = set()
    for exported in sorted(export.files, key=lambda f: by_seq.get(f.item_id, 0)):
        name = f"{by_seq.get(exported.item_id, 0):03d}-{safe_name(exported.name)}"
        while name.lower() in taken:
            name = "_" + name
        taken.add(name.lower())
        paths[exported.item_id] = f"files/{name}"
        members.append((f"files/{name}", exported.data))
    texts = [
        ("report.txt", _report_text(export)),
        ("thread.txt", _thread_text(export, paths)),
        ("status-history.txt", _history_text(export)),
        ("audit-events.txt", _audit_text(export)),
    ]
    members = [(name, text.encode("utf-8")) for name, text in texts] + members
    listed = [
        {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in members
    ]
    about = {
        "report": export.bundle.designation,
        "report_id": export.bundle.id,
        "exported_at": export.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "exported_by": export.officer,
        "encrypted_to": export.key.fingerprint,
        "identity_details": "not included",
        "files": listed,
    }
    manifest = [
        f"Export of report {export.bundle.designation}",
        f"Made {_stamp(export.at)} by {export.officer}, encrypted to the OpenPGP key",
        f"{export.key.grouped}.",
        "",
        "The source's identity details are not included: they stay sealed in the reviewer app.",
        "Files are as the source sent them, with any metadata they carry.",
        "",
        "Every file of this archive, with its size and SHA-256:",
        "",
        *(f"{f['sha256']}  {f['bytes']:>12}  {f['path']}" for f in listed),
        "",
    ]
    moment = export.at.astimezone(UTC).timetuple()[:6]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in [
            ("MANIFEST.txt", "\n".join(manifest).encode("utf-8")),
            ("manifest.json", json.dumps(about, indent=2, ensure_ascii=False).encode("utf-8")),
            *members,
        ]:
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=moment)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            archive.writestr(info, data)
    return out.getvalue()


__all__ = [
    "MAX_EXPORT_BYTES",
    "Export",
    "ExportRefused",
    "ExportedFile",
    "InvestigatorKey",
    "build_archive",
    "check_key",
    "encrypt",
    "looks_private",
    "memory_dir",
    "private_directory",
    "safe_name",
]
