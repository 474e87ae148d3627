"""WireheadManager: watches the write generation, swaps, and collects garbage.

The manager is optional: generators swap themselves when no manager holds the
swap lease.  Several managers may run; one holds the lease and the others stand by
and take over within LEASE_SECONDS when it dies.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Optional, Union

from .config import ConfigSource, WireheadConfig
from .errors import StoreUnavailable
from .store import Store
from .swapper import StepResult, Swapper

__all__ = ["WireheadManager"]

log = logging.getLogger(__name__)


class WireheadManager:
    """Runs the swap loop of one cache.

    Args:
        config_path: path of the YAML config (the seed's argument).
        config: a :class:`WireheadConfig` or a mapping, instead of ``config_path``.
        uri: a server URI overriding the config's.

    :meth:`run_manager` blocks until :meth:`stop` is called from another thread (or
    Ctrl-C); :meth:`step` does one round and returns what it did.
    """

    def __init__(
        self,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        config: ConfigSource = None,
        *,
        uri: Optional[str] = None,
        name: Optional[str] = None,
    ) -> None:
        self.config = WireheadConfig.load(config, config_path)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.worker_id = f"mgr:{self.name}:{uuid.uuid4().hex[:8]}"
        self.store = Store(self.config, uri=uri)
        self.swapper = Swapper(self.store, role="manager")
        self.swaps = 0
        self._stop = threading.Event()
        self._last_beat = 0.0

    def stop(self) -> None:
        """Ask :meth:`run_manager` to return (safe from any thread)."""
        self._stop.set()

    def step(self) -> StepResult:
        """One round: take or renew the lease, swap if due, delete what expired.

        Raises StoreUnavailable / StoreError when the server cannot be used within the deadline.
        """
        self.store.ensure_schema()
        result = self.swapper.step()
        if result.swapped:
            self.swaps += 1
        now = time.time()
        if now - self._last_beat >= self.config.heartbeat_seconds:
            self._last_beat = now
            self.store.heartbeat(self.worker_id, {"kind": "manager", "name": self.name, "swaps": self.swaps,
                                                  "has_lease": result.has_lease, "status": "running"})
        return result

    def run(self, duration: Optional[float] = None) -> int:
        """Loop :meth:`step` every POLL_SECONDS until :meth:`stop` (or ``duration`` seconds); return swaps done.

        A :meth:`stop` that comes before :meth:`run` starts makes it return at once.

        A server outage shorter than RETRY_DEADLINE is ridden out; a longer one raises
        :class:`~wirehead.errors.StoreUnavailable`.
        """
        end = None if duration is None else time.monotonic() + duration
        log.info("manager %s started on %s, database %r", self.name, self.store.redacted_uri, self.config.dbname)
        status = "stopped"
        try:
            while not self._stop.is_set():
                result = self.step()
                if end is not None and time.monotonic() >= end:
                    break
                if not result.swapped:  # right after a swap, look again at once
                    self._stop.wait(self.config.poll_seconds)
            return self.swaps
        except StoreUnavailable:
            status = "errored"
            raise
        except KeyboardInterrupt:
            return self.swaps
        finally:
            try:
                self.swapper.release()
                self.store.heartbeat(self.worker_id, {"kind": "manager", "name": self.name, "swaps": self.swaps,
                                                      "has_lease": False, "status": status})
            except Exception as e:  # noqa: BLE001 - the server may be the reason we stop
                log.debug("manager %s could not release its lease: %s", self.name, e)
            log.info("manager %s stopped after %d swaps", self.name, self.swaps)
            self._stop.clear()  # the manager may be run again

    def run_manager(self) -> int:
        """The seed's name for :meth:`run`."""
        return self.run()

    def __repr__(self) -> str:
        return f"WireheadManager(name={self.name!r}, swaps={self.swaps}, config={self.config!r})"
