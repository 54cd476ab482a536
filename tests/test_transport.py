"""How requests reach each server interface: only through an onion service (plain HTTP on
loopback) or a TLS proxy, so that no session or token travels in clear text.

The two served interfaces are the source interface and the case server (the
`[reviewer]` section of the configuration: what the reviewer onion service
reaches; `dropbox run reviewer` serves it). The reviewer app is not served
from the server at all: it runs on the officer's own machine, on loopback
only, and answers only requests addressed to its own address and port.

- Behind a TLS proxy, a request from a trusted proxy address whose
  X-Forwarded-Proto says https gets HSTS (and the source, Secure cookies);
  any other request (an untrusted address claiming https, the proxy saying
  http, no header) is refused before the app sees it, and gets neither. An
  officer signs in to the case server through the proxy; the same bearer
  token sent straight to the case server opens nothing.
- On an onion service (loopback, plain HTTP) cookies are not Secure, no HSTS
  is sent, and a claim of https is not believed, through the app and through
  gunicorn (`dropbox run`).
- `dropbox run` refuses an interface on a non-loopback address unless it is
  behind a TLS proxy, before anything binds; so does `launcher.serve.serve`.
- The reviewer app: its settings and `dropbox reviewer` refuse any address
  but loopback; it refuses a Host that is not its own (DNS rebinding); it
  believes no X-Forwarded-Proto (never HSTS, never a Secure cookie).
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import time
from http.client import HTTPConnection, HTTPException, HTTPResponse
from pathlib import Path

import pytest
from flask import Flask
from nacl.public import PrivateKey
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from case_server import create_app as create_case_server
from dropbox import config as config_module
from dropbox.config import Config, ConfigError, ReviewerSettings, SourceSettings
from dropbox.instance import Instance
from dropbox.models import OfficerSession, SourceSession
from journalist_interface.app import create_reviewer_app
from journalist_interface.settings import ReviewerSettings as ReviewerAppSettings
from launcher.serve import serve
from source_interface import create_app as create_source
from tests.conftest import CHEAP_COST, CHEAP_CRYPTO_TOML, free_port, new_database_url
from tests.reviewer_helpers import World, fresh_code

REPO = Path(__file__).resolve().parent.parent
PROXY = "192.0.2.10"  # the TLS proxy the configuration trusts (a documentation address)
STRANGER = "192.0.2.99"  # any other machine on the network
YEAR = 365 * 24 * 3600
COOKIES = {"source": "dropbox_source"}  # the case server sets none: bearer tokens only
# A page each interface answers without a session: the source's sign-in form (which starts
# a session) and the case server's OpenAPI document.
FIRST_PAGE = {"source": "/login", "reviewer": "/api/v2/openapi.json"}


def behind_proxy(config: Config, *trusted: str) -> Config:
    """The configuration with both interfaces on an internal address behind a TLS proxy."""
    proxied = {"host": "10.0.0.5", "transport": "tls-proxy", "trusted_proxies": trusted}
    return dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, **proxied),  # type: ignore[arg-type]
        reviewer=dataclasses.replace(config.reviewer, **proxied),  # type: ignore[arg-type]
    )


def both_apps(config: Config, instance: Instance) -> dict[str, Flask]:
    """The two served apps for `config` over the instance, by configuration section."""
    return {
        "source": create_source(config, instance),
        "reviewer": create_case_server(config, instance),
    }


def session_cookies(response: TestResponse, name: str) -> list[str]:
    """The Set-Cookie lines for the session cookie `name`."""
    return [line for line in response.headers.getlist("Set-Cookie") if line.startswith(f"{name}=")]


def is_secure(cookie_line: str) -> bool:
    """True if a Set-Cookie line carries the Secure attribute."""
    return any(part.strip().lower() == "secure" for part in cookie_line.split(";")[1:])


def hsts_max_age(value: str | None) -> int:
    """The max-age of a Strict-Transport-Security value (0 if there is none)."""
    match = re.search(r"max-age=(\d+)", value or "")
    return int(match.group(1)) if match else 0


def stored_sessions(instance: Instance) -> int:
    """How many sessions of either kind are stored."""
    with instance.sessions() as db:
        count = 0
        for model in (SourceSession, OfficerSession):
            count += db.execute(select(func.count()).select_from(model)).scalar_one()
        return count


def get_login(app: Flask, peer: str, proto: str | None) -> TestResponse:
    """The first page (the source's starts a session) from `peer`, as a proxy would pass it on."""
    headers = {} if proto is None else {"X-Forwarded-Proto": proto}
    page = FIRST_PAGE["source" if app.name == "source_interface" else "reviewer"]
    return app.test_client().get(page, headers=headers, environ_base={"REMOTE_ADDR": peer})


def check_cookies(name: str, response: TestResponse, secure: bool) -> None:
    """The source's session cookie is set, Secure or not; the case server sets no cookie."""
    if name not in COOKIES:
        assert "Set-Cookie" not in response.headers, name
        return
    cookies = session_cookies(response, COOKIES[name])
    assert cookies, name
    assert all(is_secure(line) == secure for line in cookies), (name, cookies)


# --- the configuration ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["source", "reviewer"])
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_an_onion_interface_on_a_loopback_address_is_accepted(name: str, host: str) -> None:
    loaded = config_module.from_dict({"data_dir": "data", name: {"host": host}})
    assert getattr(loaded, name).host == host


@pytest.mark.parametrize("name", ["source", "reviewer"])
def test_an_interface_on_a_network_address_behind_a_tls_proxy_is_accepted(name: str) -> None:
    table = {
        "host": "0.0.0.0",  # noqa: S104 - a configuration value, never bound here
        "transport": "tls-proxy",
        "trusted_proxies": ["10.0.0.2", "fd00::/64"],
        "proxy_headers": ["x-forwarded-proto"],
    }
    loaded = config_module.from_dict({"data_dir": "data", name: table})
    assert getattr(loaded, name).transport == "tls-proxy"


def test_the_default_configuration_is_onion_on_loopback() -> None:
    for settings in (SourceSettings(), ReviewerSettings()):
        assert settings.transport == "onion"
        assert settings.host == "127.0.0.1"
        assert settings.trusted_proxies == ()


# --- through the real apps ------------------------------------------------------------------


def test_a_trusted_proxy_saying_https_gets_secure_cookies_and_hsts(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    for name, app in both_apps(behind_proxy(instance.config, PROXY), instance).items():
        response = get_login(app, PROXY, "https")
        assert response.status_code == 200, (name, response.status_code)
        check_cookies(name, response, secure=True)
        assert hsts_max_age(response.headers.get("Strict-Transport-Security")) >= YEAR, name


def test_the_last_value_of_x_forwarded_proto_is_the_trusted_proxys_own(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    """A client's own X-Forwarded-Proto comes first; the proxy appends what it saw."""
    apps = both_apps(behind_proxy(instance.config, "192.0.2.0/28"), instance)
    for name, app in apps.items():
        appended = get_login(app, PROXY, "http, https")
        assert appended.status_code == 200, name
        check_cookies(name, appended, secure=True)
        forged = get_login(app, PROXY, "https, http")
        assert forged.status_code == 403, name
        assert "Set-Cookie" not in forged.headers, name


@pytest.mark.parametrize(
    ("peer", "proto"),
    [
        pytest.param(STRANGER, "https", id="untrusted-address-claiming-https"),
        pytest.param("127.0.0.1", "https", id="loopback-not-trusted-claiming-https"),
        pytest.param(PROXY, "http", id="trusted-proxy-saying-http"),
        pytest.param(PROXY, None, id="trusted-proxy-without-the-header"),
        pytest.param(STRANGER, None, id="untrusted-address-plain"),
    ],
)
def test_behind_a_tls_proxy_any_other_request_is_refused_without_cookie_or_hsts(
    instance: Instance, office_keys: dict[str, PrivateKey], peer: str, proto: str | None
) -> None:
    before = stored_sessions(instance)
    for name, app in both_apps(behind_proxy(instance.config, PROXY), instance).items():
        response = get_login(app, peer, proto)
        assert response.status_code == 403, (name, response.status_code)
        assert "only over HTTPS" in response.get_data(as_text=True)
        assert "Set-Cookie" not in response.headers, name
        assert "Strict-Transport-Security" not in response.headers, name
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert response.headers["Cache-Control"] == "no-store"
    # Refused before the app: no session was even started.
    assert stored_sessions(instance) == before


def test_an_officer_signs_in_to_the_case_server_through_the_proxy(world: World) -> None:
    """The reviewer app signs in over the TLS proxy (as a proxy passes it on); the token it
    gets works through the proxy only: sent straight to the case server, it opens nothing."""
    import httpx

    from journalist_interface.client import ApiError, CaseServerClient, InboxQuery
    from tests.signin_helpers import derive

    app = create_case_server(behind_proxy(world.instance.config, PROXY), world.instance)

    def through(peer: str, proto: str | None) -> httpx.WSGITransport:
        class Hop(httpx.WSGITransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if proto is not None:
                    request.headers["X-Forwarded-Proto"] = proto
                return super().handle_request(request)

        return Hop(app=app, remote_addr=peer)

    person = world.people["eco"]
    proxied = CaseServerClient("http://case-server.test", transport=through(PROXY, "https"))
    try:
        secrets = derive(proxied, person.username, person.passphrase)
        code = fresh_code(world.instance, person)
        signed = proxied.sign_in(person.username, secrets.auth_key, code)
        assert signed.me.username == person.username
        assert proxied.inbox(InboxQuery()).total >= 0
        hsts = httpx.Client(transport=through(PROXY, "https"), base_url="http://case-server.test")
        answer = hsts.get("/api/v2/me", headers={"Authorization": f"Bearer {signed.token}"})
        assert answer.status_code == 200
        assert hsts_max_age(answer.headers.get("Strict-Transport-Security")) >= YEAR
        hsts.close()
        for peer, proto in ((STRANGER, "https"), (PROXY, "http"), (PROXY, None)):
            direct = CaseServerClient(
                "http://case-server.test", transport=through(peer, proto), token=signed.token
            )
            with pytest.raises(ApiError) as refused:
                direct.me()
            direct.close()
            assert refused.value.status == 403, (peer, proto)
    finally:
        proxied.close()


def test_the_reviewer_app_serves_loopback_only_and_its_own_address(world: World) -> None:
    """Not behind a proxy, not on the network: the officer's own machine, its own Host."""
    for host in ("0.0.0.0", "192.0.2.1", "10.0.0.5", "::", "example.org"):  # noqa: S104
        with pytest.raises(ConfigError, match="loopback"):
            ReviewerAppSettings(server_url="http://case-server.test", host=host)
    settings = ReviewerAppSettings(
        server_url="http://case-server.test", port=8191, minimum_cost=CHEAP_COST
    )
    app = create_reviewer_app(settings)
    client = app.test_client()
    for own in ("127.0.0.1:8191", "localhost:8191"):
        answer = client.get("/login", headers={"Host": own})
        assert answer.status_code == 200, own
    for other in ("127.0.0.1:8192", "localhost", "evil.example:8191", "127.0.0.1.nip.io:8191"):
        refused = client.get("/login", headers={"Host": other})
        assert refused.status_code == 400, other
        assert "Set-Cookie" not in refused.headers, other
    # A claim of https (from anything: it is not behind a proxy) is not believed.
    for headers in ({"X-Forwarded-Proto": "https"}, {"X-Forwarded-Ssl": "on"}):
        fresh = app.test_client()  # a new visitor: the login form starts a session
        page = fresh.get("/login", headers={"Host": "127.0.0.1:8191", **headers})
        assert page.status_code == 200
        assert "Strict-Transport-Security" not in page.headers
        cookies = session_cookies(page, "dropbox_reviewer")
        assert cookies and not any(is_secure(line) for line in cookies), cookies


def test_dropbox_reviewer_refuses_a_network_address_before_it_binds(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.0.2.1"):  # noqa: S104
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from journalist_interface.run import reviewer; reviewer.main()",
                "--server",
                "http://127.0.0.1:9",
                "--host",
                host,
                "--port",
                str(free_port()),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result
        assert "loopback" in result.stderr, result.stderr


def test_on_an_onion_service_cookies_are_not_secure_and_no_hsts_is_sent(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    """Plain HTTP on loopback (what tor forwards): a claim of https is not believed."""
    for name, app in both_apps(instance.config, instance).items():
        for proto in (None, "https"):
            response = get_login(app, "127.0.0.1", proto)
            assert response.status_code == 200, (name, proto)
            check_cookies(name, response, secure=False)
            assert "Strict-Transport-Security" not in response.headers, (name, proto)


# --- through gunicorn: `dropbox run` -------------------------------------------------------


def write_served_config(directory: Path, name: str, port: int, extra: str = "") -> Path:
    """A configuration whose interface `name` listens on 127.0.0.1:`port`."""
    other = "reviewer" if name == "source" else "source"
    path = directory / "config.toml"
    path.write_text(
        f'data_dir = "data"\ndatabase_url = "{new_database_url()}"\n{CHEAP_CRYPTO_TOML}'
        f'[{name}]\nhost = "127.0.0.1"\nport = {port}\nworkers = 1\n{extra}'
        f"[{other}]\nport = {free_port()}\n"
    )
    return path


def run_interface(config: Path, name: str) -> subprocess.Popen[bytes]:
    """`dropbox run NAME` in a child process, its output in a file next to the configuration."""
    with (config.parent / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "launcher", "--config", str(config), "run", name],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """gunicorn's quick shutdown, then wait (killed if it takes too long)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def fetch(
    port: int, path: str, headers: dict[str, str], source: str = "127.0.0.1"
) -> tuple[HTTPResponse, str]:
    """One request to 127.0.0.1:`port`, sent from the local address `source`."""
    connection = HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        connection.request("GET", path, headers={"Connection": "close", **headers})
        response = connection.getresponse()
        return response, response.read().decode()
    finally:
        connection.close()


def wait_until_up(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until gunicorn accepts connections (any HTTP answer will do).

    Before gunicorn listens, a connection to its port can be the kernel's TCP
    self-connect (the client's ephemeral port drawn equal to the target): the
    request then comes back as the "status line" (BadStatusLine). That, like
    a refused connection, only means "not up yet".
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            fetch(port, "/static/style.css", {})
            return
        except (OSError, HTTPException):
            time.sleep(0.1)
    raise AssertionError("the interface did not start")


@pytest.mark.parametrize("name", ["source", "reviewer"])
def test_served_behind_a_tls_proxy_only_the_trusted_address_gets_https(
    tmp_path: Path, name: str
) -> None:
    """Real peers: 127.0.0.2 is the trusted proxy; 127.0.0.1 claiming https is not believed."""
    port = free_port()
    extra = 'transport = "tls-proxy"\ntrusted_proxies = ["127.0.0.2"]\n'
    config = write_served_config(tmp_path, name, port, extra)
    Instance.initialise(config_module.load(config)).close()
    process = run_interface(config, name)
    try:
        wait_until_up(process, port, tmp_path / f"{name}.log")
        https = {"X-Forwarded-Proto": "https"}
        proxied, _ = fetch(port, FIRST_PAGE[name], https, source="127.0.0.2")
        assert proxied.status == 200
        cookies = [c for c in proxied.headers.get_all("Set-Cookie") or [] if "dropbox_" in c]
        if name in COOKIES:
            assert cookies and all(is_secure(line) for line in cookies), cookies
        else:
            assert not cookies, cookies
        assert hsts_max_age(proxied.headers.get("Strict-Transport-Security")) >= YEAR
        claimed, body = fetch(port, FIRST_PAGE[name], https, source="127.0.0.1")
        assert claimed.status == 403, body
        assert claimed.headers.get("Set-Cookie") is None
        assert claimed.headers.get("Strict-Transport-Security") is None
    finally:
        stop(process)


@pytest.mark.parametrize("name", ["source", "reviewer"])
def test_served_on_loopback_a_claim_of_https_gets_neither_secure_cookie_nor_hsts(
    tmp_path: Path, name: str
) -> None:
    """gunicorn itself believes no X-Forwarded-Proto (its default trusts 127.0.0.1)."""
    port = free_port()
    config = write_served_config(tmp_path, name, port)
    Instance.initialise(config_module.load(config)).close()
    process = run_interface(config, name)
    try:
        wait_until_up(process, port, tmp_path / f"{name}.log")
        for headers in ({}, {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on"}):
            response, _ = fetch(port, FIRST_PAGE[name], headers)
            assert response.status == 200
            cookies = [c for c in response.headers.get_all("Set-Cookie") or [] if "dropbox_" in c]
            assert bool(cookies) == (name in COOKIES), cookies
            assert not any(is_secure(line) for line in cookies), cookies
            assert response.headers.get("Strict-Transport-Security") is None
    finally:
        stop(process)


@pytest.mark.parametrize("name", ["source", "reviewer"])
# An address this machine does not have: with the check gone, gunicorn fails to bind it
# instead of exposing anything (0.0.0.0 is refused by the configuration tests).
@pytest.mark.parametrize("host", ["192.0.2.1", "10.255.255.1"])
def test_dropbox_run_refuses_plain_http_on_a_network_address_naming_the_key(
    tmp_path: Path, name: str, host: str
) -> None:
    port = free_port()
    config = write_served_config(tmp_path, name, port)
    config.write_text(config.read_text().replace('host = "127.0.0.1"', f'host = "{host}"'))
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "--config", str(config), "run", name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dropbox: {name}.host: "), lines[0]
    assert "tls-proxy" in lines[0]


def test_serve_refuses_a_configuration_built_without_the_checks(tmp_path: Path) -> None:
    """A Config made in code skips `load`; serving it still checks the transport first."""
    built = Config(data_dir=tmp_path / "data", reviewer=ReviewerSettings(host="192.0.2.1"))
    with pytest.raises(ConfigError, match=r"^reviewer\.host: "):
        serve(built, "reviewer")
    with pytest.raises(ConfigError, match=r"^source\.trusted_proxies: "):
        serve(
            Config(
                data_dir=tmp_path / "data",
                source=SourceSettings(transport="tls-proxy"),
            ),
            "source",
        )


def test_the_reviewer_app_lets_an_idle_connection_go_before_the_case_server_closes_it(
    config: Config,
) -> None:
    """Else a request can leave on a connection the server is closing at that instant:
    no answer, and the officer reads that the case server cannot be reached."""
    from journalist_interface.client import KEEPALIVE_EXPIRY, CaseServerClient
    from launcher.serve import KEEPALIVE_SECONDS, gunicorn_options

    assert gunicorn_options(config, "reviewer")["keepalive"] == KEEPALIVE_SECONDS
    assert KEEPALIVE_EXPIRY < KEEPALIVE_SECONDS
    client = CaseServerClient("http://case-server.test")
    try:
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry == KEEPALIVE_EXPIRY
    finally:
        client.close()
