"""Reading requests: a JSON body as its definition in dropbox/api_schema.py, and query flags.

A body that is not a JSON object, or a field of the wrong type, is a 400
whose message names the field; answers are written with `schema.dump`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request

from case_server.errors import ApiError
from dropbox import api_schema as schema

T = TypeVar("T")

# Bodies travel as base64 in JSON: a reply or note envelope fits well within this.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# A referral carries every item's key block, re-sealed: its body may grow by this much per
# item of the report. An item's id and a key block with three X-Wing entries, in base64,
# come to under 5 KiB; without this a report of about 1,200 items could not be referred.
REFERRAL_BYTES_PER_ITEM = 8 * 1024
TRUE_VALUES = frozenset({"1", "true", "yes"})
FALSE_VALUES = frozenset({"", "0", "false", "no"})


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is expected."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser can follow: not a request we take
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "send a JSON object, with Content-Type: application/json")
    return data


def read(definition: type[T]) -> T:
    """The request's JSON body as `definition`, or a 400 naming the first field that is wrong."""
    data = json_body()
    try:
        return schema.load(definition, data)
    except schema.Malformed as wrong:
        raise ApiError(400, str(wrong)) from None


def flag(name: str) -> bool:
    """A true/false query parameter (absent: false)."""
    value = request.args.get(name, "").strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ApiError(400, f"'{name}' must be true or false")
