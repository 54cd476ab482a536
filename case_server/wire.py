"""What travels: reading JSON requests, and writing times, days and bytes into answers.

Binary values travel as standard base64, times as RFC 3339 (UTC), days as
ISO dates, as journalist_interface/client.py reads them.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, date, datetime
from typing import Any

from flask import request

from case_server.errors import ApiError

TRUE_VALUES = frozenset({"1", "true", "yes"})
FALSE_VALUES = frozenset({"", "0", "false", "no"})


def time(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as RFC 3339."""
    return value.replace(tzinfo=UTC).isoformat() if value is not None else None


def day(value: date | datetime) -> str:
    """A day as an ISO date."""
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def b64(data: bytes) -> str:
    """Bytes as standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is expected."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser can follow: not a request we take
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "send a JSON object, with Content-Type: application/json")
    return data


def text(data: dict[str, Any], name: str, *, required: bool = True) -> str:
    """A string field ("" if absent and not required)."""
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON can spell lone surrogates ("\ud800"); no text holds them
        raise ApiError(400, f"'{name}' must be text without lone surrogates") from None
    return value


def boolean(data: dict[str, Any], name: str, *, default: bool | None = None) -> bool:
    """A true/false field."""
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false")
    return value


def integer(data: dict[str, Any], name: str, *, nullable: bool = False) -> int | None:
    """A whole-number field (None allowed if `nullable`)."""
    value = data.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be a whole number")
    return value


def binary(data: dict[str, Any], name: str) -> bytes:
    """A base64 field as bytes."""
    return unb64(data.get(name), name)


def unb64(value: Any, name: str) -> bytes:
    """Base64 text as bytes, or a 400 naming the field."""
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"'{name}' must be base64 text") from None


def flag(name: str) -> bool:
    """A true/false query parameter (absent: false)."""
    value = request.args.get(name, "").strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ApiError(400, f"'{name}' must be true or false")
