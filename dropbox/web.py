"""What both Flask apps share: security headers on every response."""

from __future__ import annotations

from flask import Flask, Response, request


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
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Cross-Origin-Resource-Policy"] = "same-origin"
        headers["Permissions-Policy"] = "interest-cohort=()"
        if onion_address:
            path = request.full_path.rstrip("?")
            headers["Onion-Location"] = f"http://{onion_address}{path}"
        headers.pop("Server", None)
        return response


def size_text(size: int) -> str:
    """A file size for people: bytes, KB, MB or GB (powers of 1000)."""
    value = float(size)
    for unit in ("bytes", "KB", "MB"):
        if value < 1000:
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
