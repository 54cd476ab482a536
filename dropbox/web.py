"""What both Flask apps share: security headers on every response."""

from __future__ import annotations

from flask import Flask, Response, abort, request

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


def register_security_headers(
    app: Flask, onion_address: str = "", *, allow_images: bool = False
) -> None:
    """Send the headers DESIGN.md requires on every response, errors included."""
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
        headers.pop("Server", None)
        return response


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


def size_text(size: int) -> str:
    """A file size for people: bytes, KB, MB or GB (powers of 1000)."""
    value = float(size)
    for unit in ("bytes", "KB", "MB"):
        if value < 1000:
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
