"""Cleaned copies of a report's files: metadata removed with mat2, the original unchanged.

End to end through the source interface and the reviewer app, with the real
mat2 (Debian's package, /usr/bin/mat2): a JPEG carrying EXIF (an artist's
name), a PDF carrying its author, a Word document (.docx) carrying its
creator and a FLAC recording carrying its artist: one of each kind the page
offers to clean (images, PDF, office documents, audio). The cleaned copy
lacks the metadata (`mat2 --show` says so); the original is byte for byte
what the source sent. A file mat2 cannot clean gets no cleaned link and the page says why;
a file mat2 fails on is said to have failed, and its original is still
offered.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from markupsafe import escape
from nacl.public import PrivateKey

from crypto.keys import fingerprint
from dropbox.instance import Instance
from journalist_interface import cleaning
from tests.case_helpers import make_case_world
from tests.test_reviewer_app_reports import Desk, followed, make_report, page_text

MAT2 = shutil.which("mat2") or "/usr/bin/mat2"
MESSAGE = "The photo and the minutes show who was at the meeting where it was decided."
ARTIST = "Jamie Whistle, Audit Unit"
AUTHOR = "Jamie Whistle"

# An 8x8 blue JPEG (made with GdkPixbuf), no metadata of its own.
PLAIN_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4"
    "UG1RV19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcI"
    "CQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRol"
    "JicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ip"
    "qrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAA"
    "AAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLR"
    "ChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaX"
    "mJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEA"
    "PwChRRRXuHnn/9k="
)


def jpeg_with_exif(artist: str) -> bytes:
    """The plain JPEG with an EXIF segment (APP1) naming the artist, right after SOI."""
    text = artist.encode() + b"\0"
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x013B, 2, len(text), 8 + 18)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0) + text
    payload = b"Exif\x00\x00" + tiff
    return (
        PLAIN_JPEG[:2]
        + b"\xff\xe1"
        + struct.pack(">H", len(payload) + 2)
        + payload
        + PLAIN_JPEG[2:]
    )


def pdf_with_author(author: str) -> bytes:
    """A one-page PDF whose document information names its author."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Author (%s) /Title (Minutes of the budget meeting) >>" % author.encode(),
    ]
    body = b"%PDF-1.4\n"
    offsets = []
    for number, content in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\n" % (len(objects) + 1)
    body += b"startxref\n%d\n%%%%EOF\n" % xref
    return body


def docx_with_creator(creator: str) -> bytes:
    """A one-paragraph Word document whose core properties name its creator and last editor."""
    package = "http://schemas.openxmlformats.org/package/2006"
    office = "http://schemas.openxmlformats.org/officeDocument/2006"
    word = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    head = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    parts = {
        "[Content_Types].xml": f'<Types xmlns="{package}/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.wordprocessingml.document.main+xml"/><Override PartName="/docProps/'
        'core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        "</Types>",
        "_rels/.rels": f'<Relationships xmlns="{package}/relationships">'
        f'<Relationship Id="rId1" Type="{office}/relationships/officeDocument" '
        'Target="word/document.xml"/><Relationship Id="rId2" '
        f'Type="{package}/relationships/metadata/core-properties" Target="docProps/core.xml"/>'
        "</Relationships>",
        "word/document.xml": f'<w:document xmlns:w="{word}"><w:body><w:p><w:r>'
        "<w:t>Minutes of the budget meeting</w:t></w:r></w:p></w:body></w:document>",
        "docProps/core.xml": f'<cp:coreProperties xmlns:cp="{package}/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:creator>{creator}</dc:creator><cp:lastModifiedBy>{creator}</cp:lastModifiedBy>"
        "</cp:coreProperties>",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, head + text)
    return buffer.getvalue()


def flac_with_artist(artist: str) -> bytes:
    """A FLAC stream (no samples) whose Vorbis comment names the artist."""

    def block(kind: int, data: bytes, last: bool) -> bytes:
        return bytes([(0x80 if last else 0) | kind]) + len(data).to_bytes(3, "big") + data

    # STREAMINFO: blocks of 4096 samples, 44.1 kHz, one channel, 16 bits, no samples.
    fields = (44100 << 44) | (0 << 41) | (15 << 36)
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + fields.to_bytes(8, "big") + bytes(16)
    comments = [f"ARTIST={artist}".encode(), b"TITLE=Budget meeting"]
    vorbis = struct.pack("<I", 4) + b"test" + struct.pack("<I", len(comments))
    vorbis += b"".join(struct.pack("<I", len(c)) + c for c in comments)
    return b"fLaC" + block(0, info, False) + block(4, vorbis, True)


def shown_metadata(data: bytes, name: str, where: Path) -> str:
    """What `mat2 --show` finds in a file (the tests' own files, in their own directory)."""
    path = where / name
    path.write_bytes(data)
    done = subprocess.run([MAT2, "--show", str(path)], capture_output=True, timeout=60, check=False)
    return done.stdout.decode("utf-8", "replace")


@pytest.fixture
def desk(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[Desk]:
    world = make_case_world(instance, office_keys)
    pins = {code: fingerprint(key.public_key) for code, key in office_keys.items()}
    yield Desk(world, pins)
    world.close()


def file_links(page: str, rid: str) -> dict[str, str]:
    """Each file's name on the report page -> its item id (from its original's download link)."""
    found = re.findall(
        rf'href="/reports/{rid}/files/([\w-]+)" download[^>]*>[^<]*'
        r'<span class="visually-hidden"> ([^<]*)</span>',
        page,
    )
    return {name: item_id for item_id, name in found}


def shm_leftovers() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(f"dropbox-clean-{os.getpid()}-*")}


@pytest.mark.skipif(not Path(MAT2).exists(), reason="needs mat2 (scripts/install-test-deps)")
def test_cleaned_copies_lack_the_metadata_and_the_originals_are_unchanged(
    desk: Desk, tmp_path: Path
) -> None:
    photo, minutes = jpeg_with_exif(ARTIST), pdf_with_author(AUTHOR)
    document, recording = docx_with_creator(AUTHOR), flac_with_artist(AUTHOR)
    notes = b"Plain notes: nothing mat2 cleans.\n"
    rid, _, _ = make_report(
        desk,
        "fraud",
        MESSAGE,
        [
            ("meeting.jpg", photo),
            ("minutes.pdf", minutes),
            ("minutes.docx", document),
            ("meeting.flac", recording),
            ("notes.dat", notes),
        ],
    )
    oio = desk.signed_in("oio")
    page = page_text(oio, f"/reports/{rid}")
    ids = file_links(page, rid)
    assert set(ids) == {"meeting.jpg", "minutes.pdf", "minutes.docx", "meeting.flac", "notes.dat"}
    # The page says which is which, and what cleaning cannot remove.
    assert "Download the original" in page and "Download a cleaned copy" in page
    assert "Exactly as the source sent it, with any metadata it carries" in page
    assert "watermarks" in page and "faces" in page
    # No cleaned link for a file mat2 cannot clean, and the page says so.
    assert f"/files/{ids['notes.dat']}/cleaned" not in page
    assert cleaning.NOT_CLEANABLE in page
    before = shm_leftovers()

    for name, original, metadata in (
        ("meeting.jpg", photo, f"Artist: {ARTIST}"),
        ("minutes.pdf", minutes, f"author: {AUTHOR}"),
        ("minutes.docx", document, f"dc:creator: {AUTHOR}"),
        ("meeting.flac", recording, f"artist: {AUTHOR}"),
    ):
        assert f"/files/{ids[name]}/cleaned" in page
        kept = oio.get(f"/reports/{rid}/files/{ids[name]}")
        assert kept.status_code == 200 and kept.data == original  # byte-identical
        assert metadata in shown_metadata(kept.data, f"original-{name}", tmp_path)

        copy = oio.get(f"/reports/{rid}/files/{ids[name]}/cleaned")
        assert copy.status_code == 200, copy.get_data(as_text=True)
        stem, ext = name.rsplit(".", 1)
        assert f'filename="{stem}.cleaned.{ext}"' in copy.headers["Content-Disposition"]
        assert copy.headers["Content-Type"] == "application/octet-stream"
        assert copy.headers["Cache-Control"] == "no-store"
        assert copy.data != original
        assert AUTHOR.encode() not in copy.data
        assert metadata not in shown_metadata(copy.data, f"cleaned-{name}", tmp_path)
        assert AUTHOR not in shown_metadata(copy.data, f"cleaned-{name}", tmp_path)
        # Still the same kind of file (a JPEG's first marker, a PDF's header).
        assert copy.data[:3] == original[:3]
    # The original is unchanged after its copy was cleaned, and the work directories are gone.
    assert oio.get(f"/reports/{rid}/files/{ids['meeting.jpg']}").data == photo
    assert shm_leftovers() <= before

    # Asking for a cleaned copy of a file mat2 cannot clean: back to the page, which says so.
    refused = oio.get(f"/reports/{rid}/files/{ids['notes.dat']}/cleaned")
    shown = followed(oio, refused)
    assert cleaning.NOT_CLEANABLE in shown and f"/files/{ids['notes.dat']}" in shown


@pytest.mark.skipif(not Path(MAT2).exists(), reason="needs mat2 (scripts/install-test-deps)")
def test_a_file_mat2_fails_on_is_said_plainly_and_its_original_still_offered(
    desk: Desk,
) -> None:
    broken = b"\xff\xd8\xff not really a JPEG: mat2 cannot read it"
    rid, _, _ = make_report(desk, "fraud", MESSAGE, [("broken.jpg", broken)])
    oio = desk.signed_in("oio")
    page = page_text(oio, f"/reports/{rid}")
    (item_id,) = file_links(page, rid).values()
    assert f"/files/{item_id}/cleaned" in page  # by its type, mat2 should clean it
    before = shm_leftovers()
    answer = oio.get(f"/reports/{rid}/files/{item_id}/cleaned")
    shown = followed(oio, answer)
    assert "broken.jpg: This file could not be cleaned: mat2 could not read it" in shown
    assert "The original is still offered." in shown
    assert "Traceback" not in shown
    assert f'href="/reports/{rid}/files/{item_id}" download' in shown
    assert oio.get(f"/reports/{rid}/files/{item_id}").data == broken
    assert shm_leftovers() <= before


def test_without_mat2_the_page_says_so_and_offers_the_original(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cleaning, "MAT2_PROGRAM", "mat2-is-not-installed-here")
    rid, _, _ = make_report(desk, "fraud", MESSAGE, [("meeting.jpg", PLAIN_JPEG)])
    oio = desk.signed_in("oio")
    page = page_text(oio, f"/reports/{rid}")
    (item_id,) = file_links(page, rid).values()
    said = str(escape(cleaning.NO_MAT2))
    assert said in page and f"/files/{item_id}/cleaned" not in page
    shown = followed(oio, oio.get(f"/reports/{rid}/files/{item_id}/cleaned"))
    assert said in shown


def test_the_type_decides_and_the_extension_only_when_the_type_says_nothing() -> None:
    assert cleaning.file_type("image/jpeg", "x.bin") == "image/jpeg"
    assert cleaning.file_type("IMAGE/JPG; q=1", "x") == "image/jpeg"
    assert cleaning.file_type("application/octet-stream", "Minutes.PDF") == "application/pdf"
    assert cleaning.file_type("", "song.mp3") == "audio/mpeg"
    assert cleaning.file_type("text/plain", "notes.txt") is None
    assert cleaning.file_type("application/octet-stream", "archive.zip") is None
    assert cleaning.file_type("video/mp4", "clip.mp4") is None  # not images, PDF, office, audio
    assert cleaning.cleaned_name("photo.JPG", "image/jpeg") == "photo.cleaned.JPG"
    assert cleaning.cleaned_name("scan", "application/pdf") == "scan.cleaned.pdf"


def test_mat2_keeps_its_home_and_temporary_files_in_the_private_directory(
    tmp_path: Path,
) -> None:
    """mat2 renders PDF pages through temporary files: they must stay in memory too."""
    env = cleaning._environment(tmp_path)
    for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        assert env[name] == str(tmp_path)
    assert set(env) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "LANG",
        "LC_ALL",
    }


@pytest.mark.skipif(not Path(MAT2).exists(), reason="needs mat2 (scripts/install-test-deps)")
def test_the_private_directory_is_in_memory_and_only_for_this_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[Path, int]] = []
    real = cleaning.private_directory

    @contextmanager
    def watched(prefix: str) -> Iterator[Path]:
        with real(prefix) as path:
            seen.append((path, path.stat().st_mode & 0o777))
            yield path

    monkeypatch.setattr(cleaning, "private_directory", watched)
    cleaned = cleaning.clean([jpeg_with_exif(ARTIST)], "image/jpeg", "p.jpg")
    assert ARTIST.encode() not in cleaned and cleaned[:2] == b"\xff\xd8"
    ((path, mode),) = seen
    assert path.parent == Path("/dev/shm") and mode == 0o700
    assert not path.exists()
