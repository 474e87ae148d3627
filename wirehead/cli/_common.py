"""Helpers shared by the commands: errors, config loading, signals, worker processes."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Optional

from ..config import WireheadConfig
from ..errors import WireheadError

log = logging.getLogger("wirehead.cli")


class UsageError(WireheadError, ValueError):
    """The command line asks for something impossible (exit code 2)."""


class FactoryError(WireheadError, ValueError):
    """``--factory module:function`` names nothing importable or callable (exit code 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so ``finally`` blocks run (exit code 143)."""


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="path of the YAML config of the cache")


def load_config(path: str) -> WireheadConfig:
    """Load CONFIG; raises ConfigError naming the file and key."""
    return WireheadConfig.load(path)


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[threading.Event]:
    """Call ``stop`` on SIGINT/SIGTERM (once each) instead of raising; yields an event set by the signal.

    Only from the main thread; elsewhere (e.g. a test thread) it does nothing.
    """
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, frame: Any) -> None:
        event.set()
        stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise :class:`Terminated` on SIGTERM so cleanup runs as for Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# -- factories ------------------------------------------------------------------------------
def resolve_factory(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the current directory is importable, as with ``python -m``).

    Raises:
        FactoryError: a malformed spec, a module that cannot be imported, or a missing or
            non-callable attribute.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise FactoryError(f"--factory should look like module:function (e.g. wirehead.synth:synth_generator), "
                           f"got {spec!r}")
    module_name, attr = spec.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise FactoryError(f"--factory {spec}: no module named {e.name!r} (is it on PYTHONPATH, or in the "
                           f"current directory?)") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed to import
        raise FactoryError(f"--factory {spec}: importing {module_name!r} raised {type(e).__name__}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FactoryError(f"--factory {spec}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FactoryError(f"--factory {spec}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def call_factory(factory: Callable[..., Any], rank: int, kwargs: Optional[dict[str, Any]] = None) -> Any:
    """Call a factory; pass ``rank=`` when it accepts it (to seed processes differently)."""
    kwargs = dict(kwargs or {})
    try:
        params = inspect.signature(factory).parameters
        if "rank" in params and "rank" not in kwargs:
            kwargs["rank"] = rank
    except (TypeError, ValueError):
        pass
    return factory(**kwargs)


# -- worker processes -----------------------------------------------------------------------
def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    """Stop this child when its parent is gone (it was SIGKILLed)."""
    def loop() -> None:
        while True:
            if os.getppid() != parent:
                log.warning("parent process %d is gone; stopping", parent)
                stop()
                return
            threading.Event().wait(1.0)
    threading.Thread(target=loop, name="wirehead-parent-watch", daemon=True).start()


def generator_child(config: dict[str, Any], uri: Optional[str], factory_spec: str, rank: int,
                    n_samples: Optional[int], factory_kwargs: Optional[dict[str, Any]], parent: int,
                    log_level: int) -> None:
    """Body of one generator process (spawned): run a WireheadGenerator until done or signalled."""
    from ..generator import WireheadGenerator

    logging.basicConfig(level=log_level, format=f"%(asctime)s generator-{rank} %(levelname)s: %(message)s")
    factory = resolve_factory(factory_spec)
    gen = WireheadGenerator(None, config=config, n_samples=n_samples, uri=uri,
                            name=f"{os.uname().nodename}:{os.getpid()}:{rank}")
    signal.signal(signal.SIGINT, lambda *_: gen.stop())
    signal.signal(signal.SIGTERM, lambda *_: gen.stop())
    _watch_parent(parent, gen.stop)
    gen.generator = call_factory(factory, rank, factory_kwargs)
    gen.run()


def manager_child(config: dict[str, Any], uri: Optional[str], parent: int, log_level: int) -> None:
    """Body of a manager process (spawned)."""
    from ..manager import WireheadManager

    logging.basicConfig(level=log_level, format="%(asctime)s manager %(levelname)s: %(message)s")
    mgr = WireheadManager(config=config, uri=uri)
    signal.signal(signal.SIGINT, lambda *_: mgr.stop())
    signal.signal(signal.SIGTERM, lambda *_: mgr.stop())
    _watch_parent(parent, mgr.stop)
    mgr.run()


def spawn(target: Callable[..., None], args: tuple, name: str) -> multiprocessing.process.BaseProcess:
    """Start ``target(*args)`` in a spawned process (no fork: safe with threads and pymongo)."""
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=target, args=args, name=name, daemon=False)
    proc.start()
    return proc


def stop_processes(procs: list[Any], timeout: float = 10.0) -> None:
    """SIGTERM every live process, wait up to ``timeout`` s in all, SIGKILL the rest, reap all."""
    import time

    for p in procs:
        if p.is_alive():
            with contextlib.suppress(Exception):
                p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            log.warning("process %s (pid %s) did not stop within %.0f s; killing it", p.name, p.pid, timeout)
            with contextlib.suppress(Exception):
                p.kill()
            p.join(5)
