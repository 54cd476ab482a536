"""Serving the two apps with gunicorn, without logging who connects.

Behind Tor every client is 127.0.0.1, but the case server may be on an
internal network, and an operator may put the source interface behind
something else one day: no address or User-Agent is ever logged.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
from collections.abc import Callable
from typing import Any

import gunicorn.config
import gunicorn.http.wsgi
import gunicorn.util
import gunicorn.workers.base
import gunicorn.workers.gthread
from flask import Flask
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from dropbox.config import Config, check_transport
from dropbox.store import UMASK
from dropbox.web import COMMON_HEADERS, LOCKED_POLICY

_ADDRESS = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\[?[0-9a-fA-F:]{3,}:[0-9a-fA-F:]+\]?")
_IP_FIELD = re.compile(r"ip=\S*")
_GUNICORN_SETTINGS = frozenset(setting.name for setting in gunicorn.config.KNOWN_SETTINGS)
# How long a worker keeps an idle connection open (gunicorn's default, stated: the
# reviewer app's client lets its pooled connections go sooner, client.KEEPALIVE_EXPIRY).
KEEPALIVE_SECONDS = 2
# How long one of a worker's threads waits for the first bytes of a new connection
# before it hands the connection back to the worker's poller (gunicorn 27's gthread
# worker: 5 s). A connection that sends nothing held a thread that long, and held a
# stopping worker too: Ctrl-C took over 5 s with one such connection open
# (tests/test_cli.py). A client whose request comes later is still served, from the poller.
FIRST_BYTES_WAIT_SECONDS = 0.5


def _scrub(message: object) -> str:
    return _ADDRESS.sub("[address]", _IP_FIELD.sub("ip=[hidden]", str(message)))


class PrivateLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger with the access log off and addresses scrubbed from every line."""

    def access(self, *args: Any, **kwargs: Any) -> None:
        """Never write an access log."""

    def _scrubbed(self, level: Callable[..., None], msg: object, *args: Any, **kwargs: Any) -> None:
        level(_scrub(str(msg) % args if args else msg), **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._scrubbed(super().warning, msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._scrubbed(super().info, msg, *args, **kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._scrubbed(super().error, msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._scrubbed(super().exception, msg, *args, **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._scrubbed(super().debug, msg, *args, **kwargs)


class _NoServerHeaderResponse(gunicorn.http.wsgi.Response):  # type: ignore[misc]
    def default_headers(self) -> list[str]:
        return [h for h in super().default_headers() if not h.startswith("Server:")]


def _write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse, with the headers every response gets.

    gunicorn writes these itself, before any Flask code runs; its own version is
    an HTML page without them that quotes the refused request back. This one is
    plain text and quotes nothing.
    """
    body = f"{status_int} {reason}\n".encode("latin-1", "replace")
    headers = {
        "Connection": "close",
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(body)),
        "Content-Security-Policy": LOCKED_POLICY,
        **COMMON_HEADERS,
    }
    head = f"HTTP/1.1 {status_int} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1", "replace") + b"\r\n" + body)


def _ignore_terminal_interrupt(worker: Any) -> None:
    """In each worker: let Ctrl-C reach the master only, which then stops the worker once.

    A terminal sends SIGINT to every process of its foreground job. A gthread
    worker that gets it and then its master's SIGQUIT runs its quit handler
    twice, and the second can wait forever on a lock the first holds, until
    the master kills it after graceful_timeout ("sent SIGKILL! Perhaps out of
    memory?"). SIGTERM and SIGQUIT still stop the worker as before.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class QuitSafeThreadWorker(gunicorn.workers.gthread.ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, whose quick stop (SIGQUIT) cannot hang.

    gunicorn 27's handler shuts the thread pool down, which takes the pool's
    lock. A signal handler runs in the main thread between two steps of
    whatever it was doing; when that was handing a new connection to the pool
    (ThreadPoolExecutor.submit holds the same lock), the worker waited on
    itself for ever. Its master killed it only after graceful_timeout, or
    never, when the master was killed first: seen in a test run, as a worker
    left running with no master. This handler leaves the pool alone and exits
    as gunicorn's other workers do. Nothing is lost: at exit Python stops the
    pool's threads as that shutdown did, each after the request it is serving.
    """

    def handle_quit(self, sig: int, frame: Any) -> None:
        gunicorn.workers.base.Worker.handle_quit(self, sig, frame)


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._factory()


def gunicorn_options(config: Config, interface: str) -> dict[str, Any]:
    """The gunicorn settings for one interface."""
    settings = config.source if interface == "source" else config.reviewer
    options: dict[str, Any] = {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        # Threads, so that a slow upload over Tor does not hold a whole worker.
        "worker_class": QuitSafeThreadWorker,
        "threads": 4,
        "keepalive": KEEPALIVE_SECONDS,
        "timeout": 120,
        "graceful_timeout": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "logger_class": PrivateLogger,
        # gunicorn believes no proxy header from anyone: whether a request came over
        # TLS is decided in the app (dropbox.web.BehindTlsProxy), from the configuration.
        "forwarded_allow_ips": "",
        "secure_scheme_headers": {},
        "proxy_allow_ips": "",
        "umask": UMASK,
        "proc_name": f"dropbox-{interface}",
        "post_worker_init": _ignore_terminal_interrupt,
    }
    if "control_socket_disable" in _GUNICORN_SETTINGS:
        # gunicorn 25.1 and later open a control socket (reload, add or kill workers)
        # at one path per user, which both interfaces would take: nothing here uses it.
        options["control_socket_disable"] = True
    return options


def app_factory(config: Config, interface: str) -> Callable[[], Flask]:
    """A callable that builds the Flask app of `interface` (in each worker)."""

    def build() -> Flask:
        if interface == "source":
            from source_interface import create_app
        else:
            # The [reviewer] section configures the case server: what the reviewer
            # onion service reaches. The reviewer app runs on officers' machines.
            from case_server import create_app
        return create_app(config)

    return build


def _tune_malloc() -> None:
    """Keep large request buffers in the heap instead of mapping and unmapping each one.

    Reading an upload allocates and frees 1 MiB buffers continuously; with
    glibc's defaults each is a fresh mmap, which measured about 480,000 page
    faults per GiB uploaded (bench/upload.py). Workers inherit this at fork.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 8 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 64 * 1024 * 1024)


def serve(config: Config, interface: str) -> None:
    """Run one interface until stopped."""
    # Checked again here, for a Config not built by dropbox.config.load.
    check_transport(interface, config.source if interface == "source" else config.reviewer)
    # Before anything is opened; the workers inherit it when gunicorn forks them.
    os.umask(UMASK)
    _tune_malloc()
    gunicorn.http.wsgi.Response = _NoServerHeaderResponse
    gunicorn.util.write_error = _write_error
    if hasattr(gunicorn.workers.gthread, "DEFAULT_WORKER_DATA_TIMEOUT"):
        gunicorn.workers.gthread.DEFAULT_WORKER_DATA_TIMEOUT = FIRST_BYTES_WAIT_SECONDS
    _Server(app_factory(config, interface), gunicorn_options(config, interface)).run()
