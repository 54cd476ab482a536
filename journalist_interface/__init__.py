"""The reviewer interface: where intake officers decrypt, follow up and manage reports."""

from __future__ import annotations

from flask import Flask, render_template

from dropbox.config import Config
from dropbox.instance import Instance
from dropbox.web import register_security_headers


def create_app(config: Config, instance: Instance | None = None) -> Flask:
    """Build the reviewer interface for an initialised instance."""
    app = Flask(__name__)
    instance = instance or Instance.open(config)
    app.config.update(
        SECRET_KEY=instance.secrets.app_secret, SESSION_COOKIE_NAME="dropbox_reviewer"
    )
    app.extensions["dropbox"] = instance
    register_security_headers(app, config.reviewer.onion_address, allow_images=True)

    @app.get("/")
    def index() -> str:
        """The sign-in page."""
        return render_template("index.html")

    return app
