"""The operator's tools: backup, restore and retention, the store check, the torrc, the demo.

They use the framework-free core and no web framework; the `dropbox`
command (launcher/cli.py) runs them.
"""
