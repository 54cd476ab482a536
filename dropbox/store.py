"""The encrypted store: envelope bodies as files with random names under the data directory.

Only ciphertext is ever written here. A blob becomes visible under its final
name only after it is complete and fsynced (write to a temporary name in the
same directory, fsync, rename, fsync the directory), so a crash at any instant
leaves either the whole blob or none.

No time stamp here is finer than the day: a committed blob's modification
and access times, and the modification times of the folders a blob enters or
leaves, are set to midnight (UTC) of the day (`day_start`), and blobs are read
without updating their access time. What the file system keeps regardless is
each inode's change time (ctime), which no program can set (docs/security.md).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Every file and directory the program creates is its owner's alone (0600, 0700),
# whatever umask the service manager or the shell gave it (the `dropbox` command and
# the servers set it first).
UMASK = 0o077

_PART_SUFFIX = ".part"
_DAY_SECONDS = 86400
# Reading a blob must not record when it was read (Linux; elsewhere 0: no such flag).
_NOATIME: int = getattr(os, "O_NOATIME", 0)


class BlobNotFound(Exception):
    """No blob of that name exists."""


class BlobWriter:
    """A blob being written; `commit` makes it visible, leaving without commit discards it."""

    def __init__(self, store: Store, name: str) -> None:
        self.name = name
        # Check the name first: an invalid one must not reach the file system at all.
        self._final = store.path(name)
        self._temporary = store.temp_dir / f"{name}{_PART_SUFFIX}"
        self._file: BinaryIO = open(self._temporary, "xb")  # noqa: SIM115 - closed in commit/discard
        stamp_dir(store.temp_dir, day_start())
        self.committed = False

    def write(self, data: bytes) -> int:
        """Append ciphertext."""
        return self._file.write(data)

    def commit(self) -> None:
        """Flush to stable storage and move the blob to its final name."""
        self._file.flush()
        day = day_start()
        # Before the rename, so that the blob never shows the second it was written.
        os.utime(self._file.fileno(), (day, day))
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._final
        if not final.parent.is_dir():
            final.parent.mkdir(mode=0o700, exist_ok=True)
            # A new fan-out directory is itself an entry that must reach the disk.
            stamp_dir(final.parent.parent, day)
            fsync_dir(final.parent.parent)
        os.replace(self._temporary, final)
        stamp_dir(self._temporary.parent, day)
        stamp_dir(final.parent, day)
        fsync_dir(final.parent)
        self.committed = True

    def discard(self) -> None:
        """Remove the partial blob."""
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._temporary.unlink()
            stamp_dir(self._temporary.parent, day_start())


class Store:
    """Blobs under `root/blobs`, partial writes under `root/tmp` (same filesystem)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs"
        self.temp_dir = root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.temp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @staticmethod
    def new_name() -> str:
        """A random blob name that says nothing about its content or report."""
        return secrets.token_hex(16)

    def path(self, name: str) -> Path:
        """Where the blob called `name` lives (fanned out over 256 directories)."""
        if len(name) != 32 or not all(c in "0123456789abcdef" for c in name):
            raise BlobNotFound(name)
        return self.blob_dir / name[:2] / name

    def begin(self, name: str | None = None) -> BlobWriter:
        """Start a new blob; the caller must `commit()` or `discard()` it."""
        return BlobWriter(self, name or self.new_name())

    @contextlib.contextmanager
    def writer(self, name: str | None = None) -> Iterator[BlobWriter]:
        """Write a new blob; it is committed only by an explicit `commit()`.

        If the block raises, or ends without committing, the partial blob is removed.
        """
        blob = self.begin(name)
        try:
            yield blob
        finally:
            if not blob.committed:
                blob.discard()

    def open(self, name: str) -> BinaryIO:
        """Open a blob for reading, leaving its access time alone where the system allows."""
        try:
            return open_quietly(self.path(name))  # the caller closes it
        except FileNotFoundError:
            raise BlobNotFound(name) from None

    def exists(self, name: str) -> bool:
        """True if the blob exists."""
        try:
            return self.path(name).is_file()
        except BlobNotFound:
            return False

    def delete(self, name: str) -> None:
        """Remove a blob (its keys must already be shredded); missing blobs are fine."""
        path = self.path(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            stamp_dir(path.parent, day_start())
            fsync_dir(path.parent)

    def names(self) -> Iterator[str]:
        """Every committed blob's name."""
        for directory in sorted(self.blob_dir.iterdir()):
            if directory.is_dir():
                for entry in sorted(directory.iterdir()):
                    yield entry.name

    def clear_partials(self) -> int:
        """Remove leftovers of writes a crash interrupted; return how many."""
        count = 0
        for entry in self.temp_dir.glob(f"*{_PART_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                count += 1
        if count:
            stamp_dir(self.temp_dir, day_start())
        return count


def write_private_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create a file that must not exist yet, readable by its owner only, and sync it.

    Raises FileExistsError if it exists (it is never overwritten) and OSError
    for anything else; callers say what that means for them.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def day_start(now: float | None = None) -> int:
    """Midnight (UTC) of today, in seconds since the epoch: the finest time the store shows."""
    moment = int(time.time() if now is None else now)
    return moment - moment % _DAY_SECONDS


def stamp_dir(directory: Path, day: int) -> None:
    """Set a folder's modification time (an entry came or went) back to the day."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(directory, (day, day))


def open_quietly(path: Path) -> io.BufferedReader:
    """Open a file for reading without updating its access time, where the system allows."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOATIME)
    except PermissionError:
        # O_NOATIME is for the file's owner only: another user reads it plainly.
        fd = os.open(path, os.O_RDONLY)
    return os.fdopen(fd, "rb")


def size_text(size: int) -> str:
    """A blob's or a file's size for people: bytes, KB, MB or GB (powers of 1000)."""
    value = float(size)
    for unit in ("bytes", "KB", "MB"):
        if value < 1000:
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
