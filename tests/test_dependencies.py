"""What pyproject.toml declares, requirements.lock pins and the code imports agree.

`make install` installs requirements.lock (written by `make lock`) with
`pip install --require-hashes`, then the project with `--no-deps`: a package
that pyproject.toml declares but the lock misses is never installed, and an
import of a package that only arrives as another's dependency breaks the day
that package drops it. Import names are mapped to distributions by
importlib.metadata.packages_distributions(), from what this venv has installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from itertools import takewhile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
PACKAGES = (
    "dropbox",
    "crypto",
    "source_interface",
    "case_server",
    "journalist_interface",
    "launcher",
)
# Imported by the tests and benchmarks, never installed: from the dev extra or the runtime.
SUPPORT = ("tests", "bench")
# Declared at runtime though no package imports it, each with the reason.
LOADED_BY_NAME = {"psycopg": "SQLAlchemy loads it for a postgresql+psycopg:// database_url"}
# Modules that only type checkers see (typeshed's); no distribution provides them.
TYPE_CHECKER_ONLY = frozenset({"_typeshed"})
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def normalise(name: str) -> str:
    """A distribution's name as PyPI compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(pyproject: dict[str, object]) -> dict[str, list[Requirement]]:
    """pyproject.toml's requirements by group: runtime, each extra, and build."""
    project = pyproject["project"]
    build = pyproject["build-system"]
    assert isinstance(project, dict) and isinstance(build, dict)
    groups = {"runtime": [Requirement(text) for text in project["dependencies"]]}
    for extra, texts in project.get("optional-dependencies", {}).items():
        groups[extra] = [Requirement(text) for text in texts]
    groups["build"] = [Requirement(text) for text in build["requires"]]
    return groups


def lock_entries(text: str) -> dict[str, tuple[str, list[str]]]:
    """Each entry of a pip-compile lock: name -> (what pins it, its hash options).

    Continuation lines are joined first. What pins an entry is the requirement
    as written (``name==1.2``, or ``name>=1`` for a broken lock); anything after
    it that is not a sha256 hash is kept with the hashes, so that it fails the check.
    """
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
        entries[normalise(name)] = (requirement, options)
    return entries


def pinned_version(requirement: str) -> Version | None:
    """The one version a lock entry installs, or None if it does not pin one."""
    parsed = Requirement(requirement)
    specifiers = list(parsed.specifier)
    if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
        return None
    return Version(specifiers[0].version)


def unhashed(entries: dict[str, tuple[str, list[str]]]) -> list[str]:
    """Entries that pin no single version, carry no hash, or carry anything but hashes."""
    return sorted(
        name
        for name, (requirement, options) in entries.items()
        if pinned_version(requirement) is None
        or not options
        or not all(HASH.fullmatch(option) for option in options)
    )


def missing_from_lock(
    requirements: list[Requirement], entries: dict[str, tuple[str, list[str]]]
) -> list[str]:
    """Declared requirements the lock does not pin to a version they accept."""
    missing = []
    for requirement in requirements:
        entry = entries.get(normalise(requirement.name))
        version = pinned_version(entry[0]) if entry else None
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{requirement} (lock: {entry[0] if entry else 'nothing'})")
    return missing


def top_level_imports(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level module name -> the files that import it, anywhere in the file.

    Relative imports, the standard library and the project's own packages are left out.
    """
    found: dict[str, set[str]] = {}
    first_party = set(PACKAGES) | set(SUPPORT)
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in first_party:
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def undeclared_imports(imports: dict[str, set[str]], allowed: set[str]) -> list[str]:
    """Imports that no allowed (declared) distribution provides."""
    providers = importlib.metadata.packages_distributions()
    wrong = []
    for module, files in sorted(imports.items()):
        if module in TYPE_CHECKER_ONLY:
            continue
        distributions = {normalise(name) for name in providers.get(module, [])}
        if not distributions & allowed:
            by = ", ".join(sorted(distributions)) or "no installed distribution"
            wrong.append(f"{module} (from {by}) in {', '.join(sorted(files))}")
    return wrong


def imported_distributions(imports: dict[str, set[str]]) -> set[str]:
    """The installed distributions that provide the imported modules."""
    providers = importlib.metadata.packages_distributions()
    return {normalise(name) for module in imports for name in providers.get(module, [])}


@pytest.fixture(scope="module")
def groups() -> dict[str, list[Requirement]]:
    """pyproject.toml's requirements, by group."""
    return declared(tomllib.loads(PYPROJECT.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock's entries."""
    return lock_entries(LOCK.read_text(encoding="utf-8"))


def names(requirements: list[Requirement]) -> set[str]:
    """The normalised names of requirements."""
    return {normalise(requirement.name) for requirement in requirements}


def test_the_lock_says_which_python_and_platform_it_is_for() -> None:
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    header = " ".join(line.lstrip("# ") for line in takewhile(lambda line: line[:1] == "#", lines))
    assert "CPython 3.11 on Linux x86-64" in header
    assert "make lock" in header


def test_the_lock_pins_every_package_pyproject_declares_to_a_version_it_accepts(
    groups: dict[str, list[Requirement]], lock: dict[str, tuple[str, list[str]]]
) -> None:
    everything = [requirement for group in groups.values() for requirement in group]
    assert missing_from_lock(everything, lock) == [], "run `make lock`"


def test_every_lock_entry_pins_one_version_with_its_hashes(
    lock: dict[str, tuple[str, list[str]]],
) -> None:
    assert len(lock) > 20
    assert unhashed(lock) == []


def test_every_third_party_import_of_the_packages_is_a_declared_runtime_dependency(
    groups: dict[str, list[Requirement]],
) -> None:
    assert undeclared_imports(top_level_imports(PACKAGES), names(groups["runtime"])) == []


def test_every_declared_runtime_dependency_is_imported_by_the_packages(
    groups: dict[str, list[Requirement]],
) -> None:
    runtime = names(groups["runtime"])
    assert set(LOADED_BY_NAME) <= runtime, "a reason kept for a dependency no longer declared"
    unused = runtime - imported_distributions(top_level_imports(PACKAGES)) - set(LOADED_BY_NAME)
    assert unused == set()


def test_every_third_party_import_of_the_tests_and_benchmarks_is_declared(
    groups: dict[str, list[Requirement]],
) -> None:
    allowed = names(groups["runtime"]) | names(groups["dev"])
    assert undeclared_imports(top_level_imports(SUPPORT), allowed) == []


# --- the checks themselves catch what they are for ---------------------------------------


def test_an_entry_without_a_hash_or_an_exact_pin_is_reported() -> None:
    entries = lock_entries(
        "# header\n"
        f"good==1.0 \\\n    --hash=sha256:{'a' * 64}\n    # via x\n"
        "nohash==1.0\n"
        f"loose>=1.0 \\\n    --hash=sha256:{'b' * 64}\n"
        f"short==1.0 \\\n    --hash=sha256:{'c' * 10}\n"
    )
    assert sorted(entries) == ["good", "loose", "nohash", "short"]
    assert unhashed(entries) == ["loose", "nohash", "short"]


def test_a_declared_package_missing_or_pinned_outside_its_bounds_is_reported() -> None:
    entries = lock_entries(f"Flask_Babel==4.0.0 \\\n    --hash=sha256:{'a' * 64}\n")
    assert missing_from_lock([Requirement("flask-babel>=4,<5")], entries) == []
    assert len(missing_from_lock([Requirement("flask.babel>=5")], entries)) == 1
    assert len(missing_from_lock([Requirement("redis>=5")], entries)) == 1


def test_an_import_of_a_package_only_another_one_brings_is_reported() -> None:
    imports = {"werkzeug": {"dropbox/web/__init__.py"}, "flask": {"dropbox/web/__init__.py"}}
    assert undeclared_imports(imports, {"flask", "werkzeug"}) == []
    [wrong] = undeclared_imports(imports, {"flask"})
    assert wrong.startswith("werkzeug (from werkzeug)")
    [unknown] = undeclared_imports({"no_such_module_here": {"x.py"}}, {"flask"})
    assert "no installed distribution" in unknown
