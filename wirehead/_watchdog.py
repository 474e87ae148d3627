"""Runs a server command and stops it when the process that started it is gone.

``python -m wirehead._watchdog PARENT_PID [--rmdir DIR] -- COMMAND...``: LocalMongo starts
private servers through this small supervisor so that a server never outlives its owner, even
when the owner is killed with SIGKILL or SIGTERM (a Jupyter kernel shut down or restarted): the
server's lifetime is bounded by its owner's.  SIGTERM or SIGINT to the supervisor stops the
server too.  Once the server has exited, ``--rmdir DIR`` (its temporary data directory) is
removed, so no ``/tmp/wirehead-mongo-*`` folder is left behind whoever dies first.

The supervisor runs in its own session (LocalMongo starts it with ``start_new_session``), so a
Ctrl-C or a kernel interrupt aimed at the owner's process group does not reach it; the parent
is polled every :data:`POLL_SECONDS`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from .supervise import StopEvent, pid_alive

#: How often the parent is looked at.
POLL_SECONDS = 0.2
#: How long the server gets to exit after SIGTERM before it is killed.
STOP_SECONDS = 8.0


def _parent_gone(parent: int) -> bool:
    """The owner died (we were re-parented, or it no longer exists)."""
    return os.getppid() != parent or not pid_alive(parent)


def main(argv: list[str]) -> int:
    usage = "usage: python -m wirehead._watchdog PARENT_PID [--rmdir DIR] -- COMMAND...\n"
    if "--" not in argv or argv.index("--") < 1 or argv.index("--") == len(argv) - 1:
        sys.stderr.write(usage)
        return 2
    sep = argv.index("--")
    head, command = argv[:sep], argv[sep + 1:]
    rmdir = None
    if len(head) == 3 and head[1] == "--rmdir":
        rmdir = head[2]
    elif len(head) != 1:
        sys.stderr.write(usage)
        return 2
    parent = int(head[0])
    proc = subprocess.Popen(command)
    # the handler only sets a flag: stopping inside it could re-enter Popen.wait/poll (their lock is held by
    # the interrupted frame), spin until STOP_SECONDS and end with a SIGKILL; and a threading.Event's set()
    # takes a lock the interrupted Event.wait() may hold (a watchdog hung for good that way, in CI)
    asked = StopEvent()
    signal.signal(signal.SIGTERM, lambda *_: asked.set())
    signal.signal(signal.SIGINT, lambda *_: asked.set())
    while proc.poll() is None and not asked.is_set() and not _parent_gone(parent):
        asked.wait(POLL_SECONDS)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_SECONDS)
    code = proc.returncode or 0
    # once the server is gone: its temporary data directory, unless an owner that is still alive wants to
    # read the log of a server that exited by itself (it removes the directory afterwards)
    if rmdir is not None and (asked.is_set() or _parent_gone(parent)):
        shutil.rmtree(rmdir, ignore_errors=True)
    return 0 if asked.is_set() else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
