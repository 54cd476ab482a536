"""The reviewer app: the pages intake officers use, run on each officer's own machine.

It serves on 127.0.0.1 only (`dropbox reviewer`), talks to the case server
through its JSON API (`client.py`), and is where every key is derived and
every item decrypted or sealed (`casefile.py`). The case server
(`case_server/`) never decrypts. Pages by area: `signin.py`, `reports.py`
(inbox and reports), `account.py`, `admin.py`; the app itself and its checks
(Host, Origin, CSRF) in `app.py`; keys held in memory only in `vault.py`.
"""

from __future__ import annotations

from journalist_interface.app import create_reviewer_app

__all__ = ["create_reviewer_app"]
