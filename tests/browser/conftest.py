"""Browser tests: the real servers and the officers' reviewer app, driven by Debian's Chromium.

Once per test session this sets up a fresh instance exactly as an operator
would, through the `dropbox` command (init, both offices, an officer of each
office with a passphrase on standard input and a TOTP secret read from the
printed otpauth URI, the office grants from the recovery files), then starts
`dropbox run source` and `dropbox run reviewer` (the case server, a JSON API
that never decrypts) under gunicorn on free localhost ports, and the
reviewer app as the officers run it on their own machines (`dropbox reviewer
--server URL --port P --pin OFFICE=FINGERPRINT ...`, tests/served.py), on
another free port. Officers sign in, in the browser, at the reviewer app.

Chromium is /usr/bin/chromium, driven through the Python Playwright package;
no browser is ever downloaded. `scripts/install-test-deps` (run by
`make test`) installs Chromium and axe-core when they are missing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import CHEAP_CRYPTO_TOML, free_port, run_cli
from tests.served import ReviewerProcess, start_reviewer

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "tests" / "artifacts"

# The flags Chromium needs on these machines: root (no sandbox), no GPU, and no
# background connections, which the closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

TOTP_STEP = 30


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in this folder is a browser test (`pytest -m browser` runs only these).

    `make test` runs them in a phase of their own (scripts/run_tests.py). Under
    pytest-xdist with --dist loadgroup, they all go to one worker, one after
    the other: the session's servers and Chromium are then started once, and
    the other workers run the rest of the suite meanwhile (the scheduler in
    tests/conftest.py sees to it).
    """
    here = Path(__file__).parent
    grouped = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)
            if grouped:
                item.add_marker(pytest.mark.xdist_group("browser"))


@dataclass
class Officer:
    """An officer account made through the command line, and what signing in needs."""

    username: str
    passphrase: str
    office: str
    totp_secret: str


@dataclass
class TotpCodes:
    """Hands out TOTP codes the server accepts, each time step at most once per officer.

    The server accepts the previous, current and next step's code, but never a
    step at or before the last one used. Starting at the current step and
    counting up, two sign-ins of one officer in the same 30 s need no wait (the
    second uses the next step's code); a third waits for the step to pass.
    """

    last: dict[str, int] = field(default_factory=dict)

    def code(self, officer: Officer) -> str:
        now = int(time.time()) // TOTP_STEP
        step = max(now, self.last.get(officer.username, 0) + 1)
        if step > now + 1:
            # Wait until `step` is the server's next step (it then accepts it).
            time.sleep(max(0.0, (step - 1) * TOTP_STEP - time.time()) + 0.2)
        self.last[officer.username] = step
        code: str = pyotp.TOTP(officer.totp_secret).generate_otp(step)
        return code


@dataclass
class Servers:
    """A running instance: the source interface, the case server, the reviewer app, its officers."""

    workdir: Path
    source_url: str
    reviewer_url: str  # the officers' reviewer app (`dropbox reviewer`), where they sign in
    officers: dict[str, Officer]
    logs: dict[str, Path]
    case_url: str = ""  # the case server (`dropbox run reviewer`), which the reviewer app calls
    # Each office's recovery file and its passphrase, and its key's fingerprint as pinned.
    recovery: dict[str, tuple[Path, str]] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)


def _env() -> dict[str, str]:
    """The environment for `dropbox` child processes: this work tree's packages first."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }


def _cli(config: Path, *args: str, stdin: str | None = None) -> str:
    result = run_cli("--config", str(config), *args, input=stdin, cwd=config.parent, env=_env())
    assert result.returncode == 0, f"dropbox {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def _recovery_passphrase(output: str) -> str:
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("Recovery passphrase"))
    return lines[index + 1].strip()


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - localhost only
                return
        except urllib.error.HTTPError:
            return  # it answers, whatever it says
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within 60 s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """A fresh instance set up with the `dropbox` command, served on free ports, and its app."""
    workdir = tmp_path_factory.mktemp("browser-instance")
    source_port, case_port = free_port(), free_port()
    while case_port == source_port:
        case_port = free_port()
    config = workdir / "config.toml"
    config.write_text(
        'data_dir = "data"\n\n'
        f'[source]\nhost = "127.0.0.1"\nport = {source_port}\nworkers = 1\n\n'
        # [reviewer] is the case server's section: `dropbox run reviewer` serves it.
        f'[reviewer]\nhost = "127.0.0.1"\nport = {case_port}\nworkers = 1\n\n'
        # Cheap Argon2id: for tests only, never in production.
        f"{CHEAP_CRYPTO_TOML}"
    )
    _cli(config, "init")
    recovery = {}
    pins = {}  # as the officers' reviewer apps pin each office's key
    for code in ("OIO", "ECO"):
        path = workdir / f"{code}-recovery.json"
        out = _cli(config, "office", "create", code, "--recovery-file", str(path))
        recovery[code] = (path, _recovery_passphrase(out))
        printed = re.search(r"^Fingerprint: (.+)$", out, re.MULTILINE)
        assert printed is not None, out
        pins[code] = printed.group(1).strip()

    officers = {}
    for code in ("ECO", "OIO"):
        username = f"{code.lower()}-officer"
        passphrase = f"{code.lower()} officer passphrase for browser tests"
        out = _cli(
            config,
            "officer",
            "add",
            username,
            "--name",
            f"{code} Intake Officer",
            stdin=f"{passphrase}\n{passphrase}\n",
        )
        uri = re.search(r"otpauth://\S+", out)
        assert uri is not None, out
        secret = re.search(r"[?&]secret=([A-Z2-7]+)", uri.group(0))
        assert secret is not None, uri.group(0)
        # What the new officer would read out: `officer add` made the key pair here.
        fingerprint = re.search(r"^Key fingerprint: (.+)$", out, re.MULTILINE)
        assert fingerprint is not None, out
        path, recovery_passphrase = recovery[code]
        _cli(
            config,
            "officer",
            "grant",
            username,
            code,
            "--recovery-file",
            str(path),
            "--fingerprint",
            fingerprint.group(1).strip(),
            stdin=recovery_passphrase + "\n",
        )
        officers[code] = Officer(username, passphrase, code, secret.group(1))

    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    urls = {
        "source": f"http://127.0.0.1:{source_port}",
        "case server": f"http://127.0.0.1:{case_port}",
    }
    app: ReviewerProcess | None = None
    try:
        for name, interface in (("source", "source"), ("case server", "reviewer")):
            logs[name] = workdir / f"{interface}.log"
            with logs[name].open("wb") as log:
                processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "launcher", "--config", str(config), "run", interface],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env={**os.environ, **_env()},
                )
        for name, process in processes.items():
            _wait_until_answering(urls[name] + "/", process, logs[name])
        # The officers' reviewer app, talking to the case server over loopback.
        app = start_reviewer(workdir, urls["case server"], pins)
        logs["reviewer app"] = app.log
        yield Servers(
            workdir,
            urls["source"],
            app.url,
            officers,
            logs,
            case_url=urls["case server"],
            recovery=recovery,
            pins=pins,
        )
    finally:
        if app is not None:
            app.stop()
        for process in processes.values():
            _stop(process)
    # A server error would show as a traceback in the server's own log.
    for name, path in logs.items():
        text = path.read_text(errors="replace")
        assert "Traceback" not in text, f"the {name} server logged an error:\n{text}"


@pytest.fixture(scope="session")
def totp() -> TotpCodes:
    """TOTP codes for sign-ins, never reusing a time step for the same officer."""
    return TotpCodes()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-test-deps (make test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's script, from the npm package the test setup installs."""
    if not AXE_JS.exists():
        pytest.fail(f"{AXE_JS} is missing: run scripts/install-test-deps (make test does)")
    return AXE_JS.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots and reports go (ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Remember whether a test's body failed, for the screenshots below."""
    report = yield
    if call.when == "call":
        item.stash[_FAILED] = bool(getattr(report, "failed", False))
    return report


@pytest.fixture(autouse=True)
def _close_contexts(
    request: pytest.FixtureRequest, browser: Browser, artifacts: Path
) -> Iterator[None]:
    """Close each test's browser contexts; after a failure, screenshot their pages first."""
    yield
    failed = request.node.stash.get(_FAILED, False)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    for i, context in enumerate(browser.contexts):
        if failed:
            for j, page in enumerate(context.pages):
                path = artifacts / f"failure-{name}-{i}-{j}.png"
                try:
                    page.screenshot(path=path, full_page=True)
                    print(f"screenshot of {page.url} after the failure: {path}")
                except Exception as exc:  # the page may be what broke
                    print(f"no screenshot of {page.url}: {exc}")
        context.close()
