"""Signals stop wirehead's processes whatever the main thread is doing when they land.

A Python signal handler runs in the main thread between two bytecodes, so a handler that takes a lock
deadlocks when the main thread holds that lock at that moment.  ``threading.Event.set()`` takes the event's
lock, which a main thread waiting in ``Event.wait()`` holds for a few bytecodes each time round its loop:
rarely, and more often on a loaded machine, a SIGTERM hung a process for good (in CI, a server's watchdog
outlived its SLURM job).  These tests make that moment happen on purpose: the main thread holds the locks
when the signal lands.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD_TIMEOUT = 30  # a deadlocked child is ended here, and the test fails


def _run(code: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the process hung after its signal (deadlocked in the handler?): {e.stderr!r}")


def test_a_signal_landing_while_the_main_thread_holds_the_events_locks_still_stops() -> None:
    proc = _run("""
        import os, signal, threading
        from wirehead.supervise import stop_on_signals
        from wirehead.supervise import StopEvent
        worker_stop = StopEvent()   # what stop() sets: a generator's or manager's stop event
        with stop_on_signals(worker_stop.set) as stopped:
            # the main thread inside Event.wait()'s locked moment, of both events (stdlib internals: the
            # only way to make that moment certain rather than rare)
            with stopped._cond, worker_stop._cond:
                os.kill(os.getpid(), signal.SIGTERM)
                sum(range(100_000))  # the handler runs here, between bytecodes
            assert stopped.wait(10) and worker_stop.wait(10)
        print("stopped by", stopped.signum)
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "stopped by 15", proc.stderr


def test_a_second_signal_still_ends_the_main_thread_wherever_it_is() -> None:
    proc = _run("""
        import os, signal, time
        from wirehead.supervise import Interrupted, stop_on_signals
        with stop_on_signals(lambda: None) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stopped.wait(10)
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(10)
            except Interrupted as e:
                print("interrupted by", e.signum, "after", stopped.signum)
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "interrupted by 2 after 15", proc.stderr


def test_a_signal_while_the_factory_computes_ends_it_at_once() -> None:
    proc = _run("""
        import os, signal, threading, time
        from wirehead.supervise import Interrupted, interruptible, stop_on_signals
        def factory():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # a stuck factory
            yield 1
        samples = interruptible(factory())
        stops = threading.Event()
        t0 = time.monotonic()
        with stop_on_signals(stops.set, samples) as stopped:
            try:
                next(samples)
            except Interrupted as e:
                print("interrupted", e.signum, stopped.signum, stops.wait(10), time.monotonic() - t0 < 5)
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "interrupted 15 15 True True", proc.stderr


def test_a_users_handler_that_stops_a_manager_ends_run_manager(mongo_uri: str, dbname: str) -> None:
    """The seed's pattern (examples/unit): ``signal.signal(SIGTERM, lambda *_: manager.stop())`` while
    ``run_manager()`` waits between its rounds, the signal landing while the wait holds its lock."""
    proc = _run(f"""
        import os, signal, time
        from wirehead import WireheadManager
        mgr = WireheadManager(config={{"MONGO_URI": {mongo_uri!r}, "DBNAME": {dbname!r}, "SWAP_CAP": 4,
                                       "POLL_SECONDS": 30}})
        signal.signal(signal.SIGTERM, lambda *_: mgr.stop())
        with mgr._stop._cond:  # the main thread in the locked moment of run_manager()'s wait
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(100_000))
        t0 = time.monotonic()
        mgr.run_manager()  # stopped already: returns at once
        print("stopped", time.monotonic() - t0 < 20)
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "stopped True", proc.stderr


def test_the_watchdog_stops_its_server_when_signalled() -> None:
    """The server's watchdog (wirehead._watchdog) sets its flag the same way."""
    proc = _run("""
        import os, signal, sys
        from wirehead.supervise import StopEvent
        asked = StopEvent()
        signal.signal(signal.SIGTERM, lambda *_: asked.set())
        with asked._cond:
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(100_000))
        assert asked.wait(10)
        print("asked")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "asked", proc.stderr
