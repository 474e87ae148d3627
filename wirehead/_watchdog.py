"""Runs a server command and stops it when the process that started it is gone.

``python -m wirehead._watchdog PARENT_PID -- COMMAND...``: LocalMongo starts servers through this
small supervisor so that a server never outlives its owner, even when the owner is killed with
SIGKILL (a private server's lifetime is bounded by its owner's).  SIGTERM or SIGINT to the
supervisor stops the server too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m wirehead._watchdog PARENT_PID -- COMMAND...\n")
        return 2
    parent = int(argv[0])
    proc = subprocess.Popen(argv[2:])

    def stop(*_: object) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while proc.poll() is None:
        if not _alive(parent) or os.getppid() == 1 and parent != 1:
            stop()
        time.sleep(0.5)
    return proc.returncode or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
