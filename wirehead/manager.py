"""WireheadManager: watches the write generation, swaps, and collects garbage.

The manager is optional: generators swap themselves when no manager holds the
swap lease.  Several managers may run; one holds the lease and the others stand by
and take over within LEASE_SECONDS when it dies.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
import weakref
from typing import Any, Optional, Union

from .config import ConfigSource
from .connect import open_store
from .errors import RetryAbandoned, StoreUnavailable
from .isolation import finalize
from .store import Store
from .supervise import StopEvent
from .swapper import CLEANUP_SECONDS, StepResult, Swapper

__all__ = ["WireheadManager"]

log = logging.getLogger(__name__)


def _release(store: Store, holder: str, worker_id: str, name: str, swaps: int, status: str,
             deadline: Optional[float] = None) -> None:
    """Give a manager's lease back, record its final status, close its client (best effort, short deadline).

    Also the finalizer of a manager dropped without close(): it references no manager.
    """
    short = min(CLEANUP_SECONDS, store.config.retry_deadline) if deadline is None else deadline
    fields: dict[str, Any] = {"kind": "manager", "name": name, "has_lease": False, "status": status}
    if swaps:
        fields["swaps"] = swaps
    store.sign_off(holder, worker_id, fields, short)


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
        self.store = open_store(config, uri, config_path=config_path)
        self.config = self.store.config
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.worker_id = f"mgr:{self.name}:{uuid.uuid4().hex[:8]}"
        self.swapper = Swapper(self.store, role="manager")
        self.swaps = 0
        self._stop = StopEvent()  # stop() is safe from a signal handler
        self.store.connection.interrupt = self._stop  # a stop ends a call that retries a server that is away
        self._last_beat = 0.0
        self._finalizer: Optional[weakref.finalize] = None

    def __enter__(self) -> "WireheadManager":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def close(self, status: str = "stopped", deadline: Optional[float] = None) -> None:
        """Give the swap lease back, record the final status and close the client (idempotent; also done
        by :meth:`run` on return, by leaving a ``with`` block, by garbage collection and at exit).

        ``deadline``: seconds the final writes may retry (default: a short clean-up deadline).
        """
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
            _release(self.store, self.swapper.holder, self.worker_id, self.name, self.swaps, status, deadline)

    def stop(self) -> None:
        """Ask :meth:`run_manager` to return (safe from any thread)."""
        self._stop.set()

    def step(self) -> StepResult:
        """One round: take or renew the lease, swap if due, delete what expired.

        Raises StoreUnavailable / StoreError when the server cannot be used within the deadline.
        """
        self.store.ensure_schema()
        if self._finalizer is None:  # released on close(), garbage collection or exit, never left "running"
            self._finalizer = finalize(self, _release, self.store, self.swapper.holder, self.worker_id,
                                      self.name, 0, "stopped")
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
        cleanup: Optional[float] = None
        try:
            while not self._stop.is_set():
                result = self.step()
                if end is not None and time.monotonic() >= end:
                    break
                if not result.swapped:  # right after a swap, look again at once
                    self._stop.wait(self.config.poll_seconds)
            return self.swaps
        except RetryAbandoned:  # stop() while a call retried a server that is away: stopped, not failed
            cleanup = 0.0
            return self.swaps
        except StoreUnavailable:
            status = "errored"
            cleanup = 0.0  # the server is gone: one quick try, so the error comes within its deadline
            raise
        except KeyboardInterrupt:
            return self.swaps
        except BaseException:
            status = "errored"
            raise
        finally:
            self.close(status, deadline=cleanup)
            log.info("manager %s stopped after %d swaps", self.name, self.swaps)
            self._stop.clear()  # the manager may be run again

    def run_manager(self) -> int:
        """The seed's name for :meth:`run`."""
        return self.run()

    def __repr__(self) -> str:
        return f"WireheadManager(name={self.name!r}, swaps={self.swaps}, config={self.config!r})"
