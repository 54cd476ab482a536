"""The case server: a JSON API under /api/v2 that stores metadata and ciphertext, never decrypts.

It runs on the server behind the reviewer onion service. The reviewer app
(journalist_interface/, on each officer's own machine) calls it through
journalist_interface/client.py. Every request and answer body is defined
once in dropbox/api_schema.py, which both ends read and write with, and the
OpenAPI document is generated from those definitions (case_server/openapi.py).
It never receives a passphrase, a secret key or the plaintext of an item: it
checks an auth-key verifier and a TOTP code at sign-in, serves sealed items
to the offices that may read them, records every reading in the audit log,
and stores what the reviewer app sealed.
"""

from __future__ import annotations

import logging

from flask import Flask
from flask_limiter import Limiter

from case_server import wire
from case_server.admin import register_admin
from case_server.errors import register_error_handlers
from case_server.openapi import register_openapi
from case_server.reports import register_reports
from case_server.signin import register_signin
from case_server.statistics import register_statistics
from dropbox.config import Config
from dropbox.instance import Instance
from dropbox.web import register_robots_and_icon, register_security_headers, register_transport
from dropbox.web.limits import DerivationGate, limiter_storage_uri


def create_app(config: Config, instance: Instance | None = None) -> Flask:
    """Build the case server for an initialised instance."""
    app = Flask(__name__)
    instance = instance or Instance.open(config)
    app.extensions["dropbox"] = instance
    app.extensions["dropbox.config"] = config
    app.extensions["dropbox.gate"] = DerivationGate(config.limits.concurrent_derivations)
    app.config.update(MAX_CONTENT_LENGTH=wire.MAX_REQUEST_BYTES)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["dropbox.limiter"] = Limiter(
        key_func=lambda: "everyone",
        app=app,
        storage_uri=limiter_storage_uri(config.limits.storage_uri),
        key_prefix="dropbox-case",
        headers_enabled=False,
        default_limits=[],
    )
    # No Onion-Location: this is an API for the reviewer app, not a page for a browser.
    register_security_headers(app)
    register_robots_and_icon(app)
    register_transport(app, config.reviewer)
    register_reports(app, config)
    register_signin(app, config)
    register_admin(app, config)
    register_statistics(app, config)
    register_openapi(app, config)
    register_error_handlers(app)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return app
