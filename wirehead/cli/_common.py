"""Helpers shared by the commands: errors, config loading, signals, worker processes."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Optional

from ..config import WireheadConfig
from ..errors import WireheadError
from ..generator import WireheadGenerator
from ..manager import WireheadManager
from ..supervise import (Interrupted, call_factory, run_generator, spawn, stop_on_signals,  # noqa: F401
                         stop_processes, watch_parent)

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


# -- worker processes -----------------------------------------------------------------------
def generator_child(config: dict[str, Any], uri: Optional[str], factory_spec: str, rank: int,
                    n_samples: Optional[int], factory_kwargs: Optional[dict[str, Any]], parent: int,
                    log_level: int) -> None:
    """Body of one generator process (spawned): run a WireheadGenerator until done or signalled."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s generator-{rank} %(levelname)s: %(message)s")
    factory = resolve_factory(factory_spec)
    gen = WireheadGenerator(None, config=config, n_samples=n_samples, uri=uri,
                            name=f"{os.uname().nodename}:{os.getpid()}:{rank}")
    watch_parent(parent=parent)  # SIGTERMs us when the parent is gone: stops like a supervisor's stop
    run_generator(gen, call_factory(factory, rank, factory_kwargs))


def exit_code(signum: Optional[int]) -> int:
    """The exit code of a command stopped by ``signum``: 130 for Ctrl-C, 0 for SIGTERM (a clean stop) or none."""
    return 128 + signal.SIGINT if signum == signal.SIGINT else 0


def manager_child(config: dict[str, Any], uri: Optional[str], parent: int, log_level: int) -> None:
    """Body of a manager process (spawned)."""
    logging.basicConfig(level=log_level, format="%(asctime)s manager %(levelname)s: %(message)s")
    mgr = WireheadManager(config=config, uri=uri)
    watch_parent(parent=parent)
    with stop_on_signals(mgr.stop):
        with contextlib.suppress(Interrupted):
            mgr.run()
