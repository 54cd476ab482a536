"""What the Flask apps share: security headers on every response, and how requests arrive.

The package is the core's one part that uses Flask: `sessions.py` is Flask's
session interface over `dropbox.sessions`, `limits.py` the derivation gate and
the rate-limit storage. The core's other modules never import it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, abort, request
from werkzeug.wrappers import Response as WsgiResponse

from dropbox.config import PROTO_HEADER, ReviewerSettings, SourceSettings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Every response carries these, besides its Content-Security-Policy.
COMMON_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "interest-cohort=()",
}

# For a response that is plain text and allows nothing at all (the server's own errors).
LOCKED_POLICY = "default-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

# On every response to a request that came over TLS: a browser that saw it once uses
# only https for this host for a year. Never sent over plain HTTP (an onion service),
# where browsers ignore it anyway. No includeSubDomains: other hosts are not ours to bind.
HSTS = "max-age=31536000"


def register_security_headers(
    app: Flask, onion_address: str = "", *, allow_images: bool = False
) -> None:
    """Send the security headers (docs/security.md, section 9) on every response and error."""
    image_source = " img-src 'self' data:;" if allow_images else ""
    policy = (
        "default-src 'none'; style-src 'self'; form-action 'self'; "
        f"frame-ancestors 'none'; base-uri 'none';{image_source}"
    ).rstrip(";")

    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        headers["Content-Security-Policy"] = policy
        headers.update(COMMON_HEADERS)
        if onion_address:
            path = request.full_path.rstrip("?")
            headers["Onion-Location"] = f"http://{onion_address}{path}"
        if request.is_secure:
            headers["Strict-Transport-Security"] = HSTS
        headers.pop("Server", None)
        return response


# Nothing here is for search engines: every path is disallowed to every crawler.
ROBOTS_TXT = "User-agent: *\nDisallow: /\n"


def register_robots_and_icon(app: Flask) -> None:
    """Answer /robots.txt (disallow everything) and /favicon.ico (no icon: 204, not a 404).

    Browsers ask for /favicon.ico on every page; an empty answer keeps a 404
    out of the console without serving any icon, from here or elsewhere.
    """

    def robots() -> Response:
        return Response(ROBOTS_TXT, mimetype="text/plain")

    def favicon() -> Response:
        return Response(status=204)

    app.add_url_rule("/robots.txt", "robots_txt", robots, methods=["GET"])
    app.add_url_rule("/favicon.ico", "favicon_ico", favicon, methods=["GET"])


class BehindTlsProxy:
    """WSGI middleware for an interface behind a TLS proxy: only the proxy's https requests pass.

    A request counts as https only when it comes from a trusted proxy address
    and that proxy's X-Forwarded-Proto (the last value: the one it set itself)
    says https; then the request's scheme becomes https, so session cookies are
    Secure and responses carry HSTS. Every other request is refused before the
    app sees it, so no session is opened or set over plain HTTP. The peer's
    address is compared with the trusted list and nothing else: it is never
    stored or logged, and no header naming a client's address is ever read.
    """

    def __init__(self, app: WSGIApplication, trusted_proxies: Iterable[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(entry) for entry in trusted_proxies]
        self.environ_key = "HTTP_" + PROTO_HEADER.upper().replace("-", "_")

    def _trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Pass the request on as https, or refuse it."""
        claimed = str(environ.pop(self.environ_key, "")).rsplit(",", 1)[-1].strip().lower()
        if claimed == "https" and self._trusted(str(environ.get("REMOTE_ADDR", ""))):
            environ["wsgi.url_scheme"] = "https"
            return self.app(environ, start_response)
        refusal = WsgiResponse(
            "403 Forbidden: this interface answers only over HTTPS, through its TLS proxy.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
            headers={"Content-Security-Policy": LOCKED_POLICY, **COMMON_HEADERS},
        )
        return refusal(environ, start_response)


def register_transport(app: Flask, settings: SourceSettings | ReviewerSettings) -> None:
    """Apply how the interface is reached: behind a TLS proxy, only the proxy's https requests."""
    if settings.transport == "tls-proxy":
        app.wsgi_app = BehindTlsProxy(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]


# The largest value of an INTEGER column (PostgreSQL's are 32 bits): no row id is larger.
MAX_ROW_ID = 2**31 - 1


def form_row_id(raw: str) -> int | None:
    """The row id a form field names: ASCII digits an INTEGER column can hold; None otherwise.

    `str.isdigit` alone also accepts digits `int` refuses ("²"), and `int`
    accepts numbers the database refuses to compare with an INTEGER column.
    """
    if raw.isascii() and raw.isdigit() and len(raw) <= 10 and int(raw) <= MAX_ROW_ID:
        return int(raw)
    return None


def refuse_nameless_form_fields() -> None:
    """Before the CSRF check: a form part without a name makes the request a bad one (400).

    Werkzeug files such a part (a multipart part whose name is missing or cut
    off) under the key None, and Flask-WTF, when the token is not under its own
    name, looks for it under every key with `key.endswith`: an AttributeError,
    so a 500, for a request that is merely malformed.
    """
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and any(
        not isinstance(key, str) for key in request.form
    ):
        abort(400)
