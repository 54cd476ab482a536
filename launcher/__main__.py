"""Allow `python -m launcher`."""

import signal

# Ctrl-C (or the demo stopping its servers) while the program is still starting ends
# it at once, as Ctrl-C ends a program, instead of raising KeyboardInterrupt in the
# middle of an import and printing its traceback. Once started, Ctrl-C is Python's
# again: commands and servers handle it themselves.
signal.signal(signal.SIGINT, signal.SIG_DFL)

from launcher.cli import main  # noqa: E402 - after the line above, on purpose

signal.signal(signal.SIGINT, signal.default_int_handler)
main()
