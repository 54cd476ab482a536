"""The documents stand on their own: every module is in the README's layout, every link resolves.

Someone who clones the repository must find each module of the six packages
in the README's layout table, and every link in the README and in docs/ must
lead to a file of the repository. No file may send the reader to a design
document kept next to the repository rather than in it: the project's own
design is docs/design.md (issue 14).
"""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PACKAGES = (
    "dropbox",
    "crypto",
    "source_interface",
    "case_server",
    "journalist_interface",
    "launcher",
)
# Folders the table may name as a whole instead of file by file: Alembic's
# environment and its revisions, each of which says what it does in its docstring.
WHOLE_FOLDERS = ("dropbox/migrations/",)
# A relative path in the project's prose: one or more "../" and what follows. ("..."
# as an ellipsis, as in ".../reviewer", is not one.)
RELATIVE_PATH = re.compile(r"(?<![\w.])(?:\.\./)+[\w.-][\w./-]*")
# Files whose comments are prose (a "#" starts a comment in each).
COMMENTED = (".py", ".toml", ".cfg", ".sh", "Makefile", ".importlinter")


@cache
def repository_files() -> frozenset[str]:
    """Every file a clone would have, or will once committed: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    return frozenset(name for name in listed.split("\0") if name and (ROOT / name).is_file())


def package_modules() -> list[str]:
    """Every Python module of the six packages, as a path from the repository root."""
    return sorted(
        name
        for name in repository_files()
        if name.endswith(".py") and name.split("/", 1)[0] in PACKAGES
    )


# --- the README's layout table -----------------------------------------------------------


def layout_rows(readme: str) -> list[tuple[list[str], list[str]]]:
    """The rows of the table under '## Layout': (code spans of the first cell, of the row)."""
    section = re.search(r"^## Layout[ \t]*\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert section is not None, "README.md has no '## Layout' section"
    rows = []
    for line in section.group(1).splitlines():
        cells = line.strip().strip("|").split("|")
        if not line.startswith("|") or all(set(cell.strip()) <= set("-: ") for cell in cells):
            continue  # not a table line, or the line under the header
        rows.append((re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", line)))
    assert len(rows) > 1, "the layout section has no table"
    return rows[1:]  # the header row names no file


def is_named(module: str, rows: list[tuple[list[str], list[str]]]) -> bool:
    """Whether the table names the module: by its path, or by its file name in its folder's row.

    A folder of WHOLE_FOLDERS named anywhere in the table covers everything in it.
    """
    folder, name = module.rsplit("/", 1)
    for first, spans in rows:
        if module in spans or (first == [f"{folder}/"] and name in spans):
            return True
        if any(module.startswith(whole) and whole in spans for whole in WHOLE_FOLDERS):
            return True
    return False


def looks_like_a_path(span: str) -> bool:
    """A code span that names a file or folder (not a command, an address or a name in code)."""
    if any(c in span for c in " :*<>") or span.startswith("/"):
        return False
    return "/" in span or re.search(r"\.[A-Za-z]{1,5}$", span) is not None


def missing_paths(rows: list[tuple[list[str], list[str]]]) -> list[str]:
    """Paths the table names that the repository does not have.

    A path is taken from the repository root, or from the folder its row is about.
    """
    files = repository_files()
    folders = {str(parent) + "/" for name in files for parent in PurePosixPath(name).parents}
    missing = []
    for first, spans in rows:
        bases = ["", first[0]] if len(first) == 1 and first[0].endswith("/") else [""]
        for span in filter(looks_like_a_path, spans):
            if not any(base + span in files or base + span in folders for base in bases):
                missing.append(span)
    return missing


def test_every_module_of_every_package_is_named_in_the_readmes_layout_table() -> None:
    modules = package_modules()
    assert len(modules) > 40, modules  # the listing found the packages
    rows = layout_rows(README.read_text(encoding="utf-8"))
    unnamed = [module for module in modules if not is_named(module, rows)]
    assert not unnamed, (
        "README.md's layout table does not name these modules (give the path, or the file name"
        " in its folder's row): " + ", ".join(unnamed)
    )


def test_every_file_the_layout_table_names_exists() -> None:
    missing = missing_paths(layout_rows(README.read_text(encoding="utf-8")))
    assert not missing, "README.md's layout table names files that do not exist: " + ", ".join(
        missing
    )


@pytest.mark.parametrize(
    ("module", "table", "named"),
    [
        ("crypto/kdf.py", "| `crypto/kdf.py`, `crypto/keys.py` | x |", True),
        ("case_server/wire.py", "| `case_server/` | bodies (`wire.py`) |", True),
        ("case_server/wire.py", "| `case_server/` | bodies |", False),
        # A file name counts only in its own folder's row.
        ("case_server/wire.py", "| `dropbox/` | (`wire.py`) |", False),
        ("dropbox/web/__init__.py", "| `dropbox/` | web glue (`dropbox/web/__init__.py`) |", True),
        ("dropbox/migrations/versions/0001_x.py", "| `dropbox/migrations/` | Alembic |", True),
        ("dropbox/migrations/env.py", "| `dropbox/` | (`migrations`) |", False),
    ],
)
def test_a_module_counts_as_named_by_its_path_or_in_its_folders_row(
    module: str, table: str, named: bool
) -> None:
    readme = f"## Layout\n\n| where | what |\n| --- | --- |\n{table}\n\n## Next\n| `{module}` | |\n"
    assert is_named(module, layout_rows(readme)) is named


# --- nothing points outside the repository ------------------------------------------------


def prose(name: str, text: str) -> list[tuple[int, str]]:
    """The lines of a file a reader follows: all of a Markdown file, the comments of code.

    Strings in code are left out: the fuzzers send paths such as "../../etc/passwd"
    on purpose.
    """
    if name.endswith(".md"):
        return list(enumerate(text.splitlines(), 1))
    if name.endswith(COMMENTED):
        return [
            (number, line.split("#", 1)[1])
            for number, line in enumerate(text.splitlines(), 1)
            if "#" in line
        ]
    return []


def leaves_the_repository(name: str, path: str) -> bool:
    """True if `path`, read from the folder of the file `name`, is outside the repository."""
    target = os.path.normpath(os.path.join(os.path.dirname(name), path))
    return target == ".." or target.startswith("../")


def test_no_file_sends_the_reader_outside_the_repository() -> None:
    """Whoever clones the project has only the repository: no prose may point past it."""
    found = []
    for name in sorted(repository_files()):
        data = (ROOT / name).read_bytes()
        if b"\0" in data:
            continue  # compiled translations, images: no text to follow
        for number, line in prose(name, data.decode("utf-8", "replace")):
            for path in RELATIVE_PATH.findall(line):
                if leaves_the_repository(name, path):
                    found.append(f"{name}:{number}: {path}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("name", "text", "outside"),
    [
        ("README.md", "see ../notes/plan.md", True),
        ("docs/design.md", "see ../../notes/plan.md", True),
        ("dropbox/cli.py", "\N{NUMBER SIGN} as ../../notes/plan.md says", True),
        ("dropbox/cli.py", "\N{NUMBER SIGN} as ../docs/design.md says", False),
        ("docs/design.md", "see ../README.md", False),
        ("docs/deploy.md", "the keys in `.../reviewer`", False),
        ("tests/test_store.py", 'BAD = "../../etc/passwd"', False),  # code, not prose
    ],
)
def test_the_check_finds_a_path_that_climbs_out_of_the_repository(
    name: str, text: str, outside: bool
) -> None:
    hits = [
        path
        for _, line in prose(name, text)
        for path in RELATIVE_PATH.findall(line)
        if leaves_the_repository(name, path)
    ]
    assert bool(hits) is outside, hits


# --- links in the README and docs/ ------------------------------------------------------------


def links(markdown: str) -> list[str]:
    """The targets of the links and images of a Markdown text, outside code."""
    text = re.sub(r"^(```|~~~).*?^\1[ \t]*$", "", markdown, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"(`+).+?\1", "", text, flags=re.DOTALL)
    inline = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)", text)
    defined = re.findall(r"^[ ]{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", text, flags=re.MULTILINE)
    html = re.findall(r"""<(?:a|img)\s[^>]*?(?:href|src)=["']([^"']+)["']""", text)
    return inline + defined + html


def broken_links(document: Path) -> list[str]:
    """The document's relative links that lead to no file or folder of the repository."""
    files = repository_files()
    folders = {str(parent) for name in files for parent in PurePosixPath(name).parents}
    broken = []
    for target in links(document.read_text(encoding="utf-8")):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//", target):
            continue  # another site, an e-mail address
        path = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if not path:
            continue  # a place in this document
        start = ROOT if path.startswith("/") else document.parent
        resolved = (start / path.lstrip("/")).resolve()
        relative = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else None
        if relative is None or (relative not in files and relative not in folders):
            broken.append(target)
    return list(dict.fromkeys(broken))


def documents() -> list[Path]:
    """README.md and every document in docs/."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_of_the_repository(document: Path) -> None:
    broken = broken_links(document)
    assert not broken, f"{document.relative_to(ROOT)} links to what the repository lacks: {broken}"


def test_the_readme_links_to_the_design_document() -> None:
    assert "docs/design.md" in links(README.read_text(encoding="utf-8"))
    assert (ROOT / "docs" / "design.md").is_file()


@pytest.mark.parametrize(
    ("markdown", "found"),
    [
        ("See [the design](docs/design.md).", ["docs/design.md"]),
        ('An ![image](a/b.png "title") and [x](<c.md>)', ["a/b.png", "c.md"]),
        ("[deploy][d]\n\n[d]: docs/deploy.md\n", ["docs/deploy.md"]),
        ('<a href="docs/x.md">x</a>', ["docs/x.md"]),
        ("Code: `[x](nowhere.md)`, and\n```\n[y](nowhere.md)\n```\n", []),
        ("[place](#section) [site](https://example.org)", ["#section", "https://example.org"]),
    ],
)
def test_links_are_found_in_text_and_never_in_code(markdown: str, found: list[str]) -> None:
    assert links(markdown) == found
