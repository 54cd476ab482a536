"""Allow `python -m dropbox`."""

from dropbox.cli import main

main()
