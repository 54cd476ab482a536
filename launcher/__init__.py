"""The programs' entry points, the one layer that imports the apps.

`cli.py` is the `dropbox` command (it starts the servers and the reviewer
app, `dropbox reviewer`); `serve.py` serves the source interface or the case
server with gunicorn. Nothing imports this package but its own `__main__.py`.
"""
