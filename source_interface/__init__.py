"""The source interface: where a source reports and follows up, with no JavaScript at all."""

from __future__ import annotations

from flask import Flask, render_template

from dropbox.config import Config
from dropbox.instance import Instance
from dropbox.web import register_security_headers


def create_app(config: Config, instance: Instance | None = None) -> Flask:
    """Build the source interface for an initialised instance."""
    app = Flask(__name__)
    instance = instance or Instance.open(config)
    app.config.update(SECRET_KEY=instance.secrets.app_secret, SESSION_COOKIE_NAME="dropbox_source")
    app.extensions["dropbox"] = instance
    register_security_headers(app, config.source.onion_address)

    @app.get("/")
    def index() -> str:
        """The landing page."""
        return render_template("index.html", offices=config.offices)

    return app
