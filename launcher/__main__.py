"""Allow `python -m launcher`."""

import os
import signal

try:
    from launcher.cli import main
except KeyboardInterrupt:
    # Ctrl-C (or the demo stopping its servers) while the program is still starting:
    # stop the way Ctrl-C stops a program, without a traceback.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    raise SystemExit(130) from None

main()
