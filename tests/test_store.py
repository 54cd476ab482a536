"""The encrypted store: blobs appear whole or not at all, under random names."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from dropbox.store import BlobNotFound, Store

REPO = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "data")


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _put(store: Store, data: bytes) -> str:
    with store.writer() as blob:
        blob.write(data)
        blob.commit()
    return blob.name


# --- Writing and reading ------------------------------------------------------


def test_committed_blob_reads_back_byte_for_byte(store: Store) -> None:
    chunks = [os.urandom(1), os.urandom(65_536), os.urandom(1_000_003), b""]
    with store.writer() as blob:
        for chunk in chunks:
            blob.write(chunk)
        blob.commit()
    assert store.exists(blob.name)
    assert list(store.names()) == [blob.name]
    with store.open(blob.name) as handle:
        assert handle.read() == b"".join(chunks)


def test_commit_leaves_no_partial_file(store: Store) -> None:
    _put(store, b"ciphertext")
    assert list(store.temp_dir.iterdir()) == []


def test_writer_with_an_explicit_name_commits_under_that_name(store: Store) -> None:
    name = Store.new_name()
    with store.writer(name) as blob:
        blob.write(b"abc")
        blob.commit()
    with store.open(name) as handle:
        assert handle.read() == b"abc"


def test_blobs_are_fanned_out_by_the_first_two_characters(store: Store) -> None:
    name = _put(store, b"x")
    assert store.path(name) == store.blob_dir / name[:2] / name
    assert store.path(name).is_file()


# --- Names --------------------------------------------------------------------


def test_blob_names_are_random_32_hex_and_not_derived_from_content(store: Store) -> None:
    content = b"the same ciphertext twice"
    first, second = _put(store, content), _put(store, content)
    assert NAME.match(first)
    assert NAME.match(second)
    assert first != second
    derived = {
        hashlib.md5(content).hexdigest(),  # noqa: S324 - compared against, not used
        hashlib.sha256(content).hexdigest()[:32],
        hashlib.blake2b(content, digest_size=16).hexdigest(),
    }
    assert derived.isdisjoint({first, second})


def test_new_names_do_not_repeat() -> None:
    names = {Store.new_name() for _ in range(1000)}
    assert len(names) == 1000
    assert all(NAME.match(name) for name in names)


# --- Failed and abandoned writes ----------------------------------------------


def test_write_that_raises_leaves_no_blob_and_no_part_file(store: Store) -> None:
    with pytest.raises(RuntimeError, match="upload interrupted"), store.writer() as blob:
        blob.write(os.urandom(200_000))
        raise RuntimeError("upload interrupted")
    assert not store.exists(blob.name)
    assert list(store.names()) == []
    assert _files_under(store.root) == []


def test_write_without_commit_leaves_nothing(store: Store) -> None:
    with store.writer() as blob:
        blob.write(os.urandom(200_000))
    assert not blob.committed
    assert not store.exists(blob.name)
    assert list(store.names()) == []
    assert _files_under(store.root) == []


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from dropbox.store import Store

    store = Store(Path(sys.argv[1]))
    with store.writer() as blob:
        for _ in range(4):
            blob.write(os.urandom(1024 * 1024))
        print("written", blob.name, flush=True)
        time.sleep(120)
        blob.commit()
    """
)


def test_crash_before_rename_leaves_no_visible_blob(tmp_path: Path) -> None:
    """A process killed mid-write (after writing, before commit) leaves only a .part file."""
    root = tmp_path / "data"
    python_path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    watchdog = threading.Timer(60, child.kill)
    watchdog.start()
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line[:1] == ["written"], child.stderr.read() if child.stderr else ""
        name = line[1]
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        child.kill()
        child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()

    store = Store(root)
    assert NAME.match(name)
    assert list(store.names()) == []
    assert not store.exists(name)
    with pytest.raises(BlobNotFound):
        store.open(name)
    leftover = store.temp_dir / f"{name}.part"
    assert leftover.stat().st_size > 0  # the child really was killed mid-write
    assert store.clear_partials() == 1
    assert not leftover.exists()
    assert _files_under(root) == []
    assert store.clear_partials() == 0


# --- Names that are not blob names --------------------------------------------

BAD_NAMES = [
    "../../etc/passwd",
    "",
    "0" * 31,
    "0" * 33,
    "A" * 32,
    "g" * 32,
    "../" + "0" * 29,
    "0" * 31 + "/",
    "0" * 30 + "..",
    "/" + "0" * 31,
    "0" * 31 + "\n",
    "\u0660" * 32,  # Arabic-Indic digit zero: a digit, but not a hex one
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_path_refuses_names_that_are_not_32_lowercase_hex(store: Store, name: str) -> None:
    with pytest.raises(BlobNotFound):
        store.path(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_cannot_be_opened_tested_or_deleted(store: Store, name: str) -> None:
    with pytest.raises(BlobNotFound):
        store.open(name)
    assert store.exists(name) is False
    with pytest.raises(BlobNotFound):
        store.delete(name)


def test_writer_refuses_a_bad_name_before_touching_the_disk(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    with pytest.raises(BlobNotFound), store.writer("../../escaped"):
        pytest.fail("a writer with a bad name must not open")
    assert _files_under(tmp_path) == []


# --- Deleting -----------------------------------------------------------------


def test_delete_of_a_missing_blob_is_fine(store: Store) -> None:
    store.delete(Store.new_name())
    assert list(store.names()) == []


def test_delete_removes_the_file(store: Store) -> None:
    keep = _put(store, b"keep")
    gone = _put(store, b"gone")
    path = store.path(gone)
    store.delete(gone)
    assert not path.exists()
    assert not store.exists(gone)
    with pytest.raises(BlobNotFound):
        store.open(gone)
    assert list(store.names()) == [keep]
    store.delete(gone)  # a second delete is fine too
