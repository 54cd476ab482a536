"""What the fuzz tests share: hostile text, raw request bodies, and the check that nothing leaks.

A handled request is one that answers below 500 and whose body shows no
trace of the code behind it: no "Traceback", no `File "..."` line, no
exception name. Input that a page echoes back (a username, a bad status
name) may contain such words; `sent` lists what was sent, so that an echo
is not mistaken for a leak.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from tests.conftest import FIGURES

if TYPE_CHECKING:
    from flask import Flask

    from dropbox.instance import Instance
    from journalist_interface.casefile import Thread

# deadline=None: a request may take a while on a busy machine; derandomize and no
# example database: every run sends the same requests and writes nothing to disk.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


# DROPBOX_FUZZ_SCALE=20 runs twenty times as many examples: for a deeper search by hand.
SCALE = int(os.environ.get("DROPBOX_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    """The fuzz settings with this many examples (times DROPBOX_FUZZ_SCALE)."""
    return settings(FUZZ, max_examples=examples * SCALE)


def fuzz_each(
    endpoints: Iterable[str], examples: int, one: Callable[[str, st.DataObject], None]
) -> set[str]:
    """Run `one` on each endpoint in turn, with its own examples; return the endpoints run."""
    done: set[str] = set()
    for endpoint in endpoints:
        fuzz_one(endpoint, examples, one)
        done.add(endpoint)
    return done


def fuzz_one(endpoint: str, examples: int, one: Callable[[str, st.DataObject], None]) -> None:
    @fuzz(examples)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        one(endpoint, data)

    run()


TRACE = re.compile(r'Traceback|File "|\b[A-Z][A-Za-z0-9_]*(?:Error|Exception|Warning)\b')

# Text that has broken web applications before: control characters, NUL,
# direction marks, markup, template syntax, percent signs, digits that are not
# ASCII (int() and str.isdigit() disagree on some), and very large numbers.
NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n\r\n",
    "\t\x0b\x0c\x1b[31m",
    "\ufeff",
    "\u202eevil",
    "\u0000\u0001\u0002\u001f\u007f\u0085\u2028\u2029",
    "<script>alert(1)</script>",
    "{{ 7 * 7 }}",
    "%(x)s %s {0}",
    "' OR 1=1 --",
    "../../../etc/passwd",
    "%00",
    "%",
    "😀" * 20,
    "²",
    "١٢٣",
    "0",
    "-1",
    "99999999999999999999999999999",
    "9223372036854775808",
    "1e309",
    "NaN",
    "true",
    "null",
    "[]",
]

nasty_text = st.sampled_from(NASTY)
control_text = st.text(
    alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Co"]), max_size=40
)
huge_text = st.sampled_from([50_000, 200_000, 600_000]).map(lambda n: "x" * n)

# Arbitrary Unicode (st.text never makes lone surrogates: those come as bytes below).
hostile_text = st.one_of(
    st.text(max_size=200),
    nasty_text,
    nasty_text,
    control_text,
    huge_text,
    st.integers().map(str),
)

# Byte strings a form value may hold once percent-decoded: text as UTF-8, and
# what is not UTF-8 at all (surrogates encoded as bytes, overlong forms, junk).
NASTY_BYTES = [
    b"\xed\xa0\x80",  # a lone surrogate, UTF-8 encoded
    b"\xed\xb2\x80\xed\xa0\x80",
    b"\xc0\x80",  # an overlong NUL
    b"\xff\xfe\xfd",
    b"\x80",
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
]
hostile_bytes = st.one_of(
    hostile_text.map(lambda t: t.encode("utf-8")),
    st.binary(max_size=64),
    st.sampled_from(NASTY_BYTES),
)

# Broken percent-encoding and raw separators, as pieces of a urlencoded body.
BROKEN_ENCODING = [b"%", b"%G", b"%zz", b"%%", b"%u0041", b"%ED%A0%80", b"+%2", b"&&", b"==", b";"]


def percent(data: bytes) -> bytes:
    """Percent-encode every byte that is not unreserved."""
    return quote_from_bytes(data, safe="").encode("ascii")


# How one name or value appears in a urlencoded body.
encoded_piece = st.one_of(
    hostile_bytes.map(percent),
    hostile_bytes,  # raw, unencoded: may hold '&', '=', '%' and any byte
    st.sampled_from(BROKEN_ENCODING),
)


def urlencoded(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A urlencoded body from already encoded names and values."""
    return b"&".join(name + b"=" + value for name, value in pairs)


def assert_no_trace(body: str, sent: str = "") -> None:
    """The body names no exception and shows no stack frame (unless it only echoes `sent`)."""
    for match in TRACE.finditer(body):
        found = match.group(0)
        assert found in sent, f"{found!r} in a response body:\n{body[:3000]}"


def assert_handled(response: TestResponse, sent: str = "", what: str = "") -> str:
    """Below 500 and without a trace; return the body as text."""
    body = response.get_data(as_text=True)
    assert response.status_code < 500, f"{what}: {response.status_code}\n{body[-1500:]}"
    assert_no_trace(body, sent)
    FIGURES.count("fuzzed requests answered below 500 and without a trace")
    return body


# --- what an office reads: the reviewer app's own code, against the real case server ---------


def office_reads(
    instance: Instance,
    case_app: Flask,
    username: str,
    passphrase: str,
    totp_secret: str,
    report_ids: Iterable[str],
) -> dict[str, Thread]:
    """Each report as the officer's reviewer app opens it: sign in, open the keys, decrypt.

    The officer signs in to the case server as the reviewer app does (auth key
    derived here, a TOTP code), opens their keyring with `casefile`, fetches
    each report's sealed thread and opens it with `casefile.open_thread`.
    """
    import httpx
    import pyotp
    from sqlalchemy import update

    from crypto.keys import derive_officer_keys, wrap_parameters
    from dropbox.models import Officer
    from journalist_interface.casefile import open_keyring, open_thread
    from journalist_interface.client import CaseServerClient
    from tests.conftest import CHEAP_COST

    with instance.sessions.begin() as db:  # as if 30 seconds had passed since the last code
        db.execute(update(Officer).where(Officer.username == username).values(totp_last_counter=0))
    client = CaseServerClient(
        "http://case-server.test", transport=httpx.WSGITransport(app=case_app)
    )
    try:
        cost, salt = wrap_parameters(client.signin_parameters(username), minimum=CHEAP_COST)
        secrets = derive_officer_keys(passphrase, salt, cost)
        signed = client.sign_in(username, secrets.auth_key, pyotp.TOTP(totp_secret).now())
        keyring = open_keyring(signed.me, secrets.wrapping_key)
        return {rid: open_thread(client.report(rid), keyring) for rid in report_ids}
    finally:
        client.close()
