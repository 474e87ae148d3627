"""Connection: a cache's way to its server, apart from what the protocol does with it.

It owns the client's lifecycle and the translation of every driver error:

* one pymongo client per process, made on first use and again after a fork; a :class:`Connection` can be
  pickled into DataLoader workers and spawned processes (the client is dropped and remade there);
* :meth:`Connection.call` runs one operation of the protocol with retries while the server is away, within
  a deadline that no attempt overruns, and re-raises every driver error once, as wirehead's own (the driver's
  error named in the message, password-free, and not chained on, as its text may hold credentials):
  :class:`~wirehead.errors.StoreUnavailable` (transient: the server, or a primary, could not be used in
  time) or :class:`~wirehead.errors.StoreError` (permanent: refused), each naming the cause and what to do;
* it follows the shared embedded server when that one is restarted on another port;
* it remembers, for a few seconds, a server found gone, so that the sign-offs and closes of a process that
  exits with many workers open wait once, not once a worker.

Transient (retried until the deadline): network errors and timeouts, no primary (an election, a
step-down), and the server codes :data:`TRANSIENT_CODES` or the ``RetryableWriteError`` label, also as
write-concern errors.  Everything else is permanent and raised at once (authentication, a bad command,
validation, a malformed document).

Client settings, chosen so a cache recovers within about a second after a failover: the server is
checked every :data:`HEARTBEAT_MS` ms (pymongo's default, 10 s, made every step-down cost 10 s per
process); each attempt waits at most the time left of its deadline (``CONNECT_TIMEOUT`` to find a server
never reached, ``RETRY_DEADLINE`` once reached); pymongo's own read retry is off (these retries keep the
deadline), its write retry on.  An option given in ``MONGO_URI`` wins over these.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Any, Callable, NoReturn, Optional, TypeVar

import pymongo
from bson.errors import BSONError
from pymongo.errors import (AutoReconnect, BulkWriteError, ConfigurationError, ConnectionFailure,
                            NotPrimaryError, OperationFailure, PyMongoError, ServerSelectionTimeoutError)

from .config import WireheadConfig, redact_uri
from .errors import RetryAbandoned, StoreError, StoreUnavailable

__all__ = ["Connection", "TRANSIENT_CODES", "HEARTBEAT_MS", "is_transient", "short_error", "drop_tracebacks"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Server error codes that say "try again": the server or its primary is briefly unusable.
#: HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress, PrimarySteppedDown, ExceededTimeLimit,
#: SocketException, NotWritablePrimary, InterruptedAtShutdown, InterruptedDueToReplStateChange,
#: NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary.
TRANSIENT_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})
#: Of those, the codes that mean "no primary now" (a step-down or an election), not "no server".
_NO_PRIMARY_CODES = frozenset({91, 189, 10107, 11600, 11602, 13435, 13436})
_TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")
_AUTH_CODES = frozenset({11, 13, 18})  # UserNotFound, Unauthorized, AuthenticationFailed
#: How often (ms) the client checks its servers; 500 is pymongo's minimum.
HEARTBEAT_MS = 500
#: The shortest attempt: an attempt with less time left still gets this long.
_MIN_ATTEMPT = 0.05
#: server URI -> when a call last gave up on it as unreachable (forgotten when it answers again)
_GONE: dict[str, float] = {}
_GONE_SECONDS = 10.0


def _codes(e: PyMongoError) -> list[Any]:
    """The server codes an error carries (a bulk write's per-document and write-concern errors too)."""
    if isinstance(e, BulkWriteError):
        details = e.details or {}
        return ([x.get("code") for x in details.get("writeErrors", []) if x.get("code") != 11000]
                + [x.get("code") for x in details.get("writeConcernErrors", [])])
    return [e.code] if isinstance(e, OperationFailure) else []


def is_transient(e: BaseException) -> bool:
    """Whether a driver error says "try again" (see the module docstring); False for any other error."""
    if isinstance(e, (AutoReconnect, ConnectionFailure)):  # network errors, no primary, no server in time
        return True
    if not isinstance(e, PyMongoError):
        return False
    if getattr(e, "timeout", False) or any(e.has_error_label(label) for label in _TRANSIENT_LABELS):
        return True
    codes = _codes(e)
    return bool(codes) and all(c in TRANSIENT_CODES for c in codes)


def short_error(e: BaseException) -> str:
    """A driver error in one short line, password-free (pymongo appends whole topology descriptions)."""
    text = redact_uri(str(e)) or type(e).__name__
    for cut in (" (configured timeouts", ", Timeout:", ", Topology Description", ", full error:"):
        text = text.split(cut)[0]
    codes = [c for c in _codes(e) if c is not None] if isinstance(e, PyMongoError) else []
    return f"{type(e).__name__}: {text[:300]}" + (f" (code {', '.join(map(str, codes))})" if codes else "")


def drop_tracebacks(error: Optional[BaseException]) -> None:
    """Detach the tracebacks (and so the frames) of a handled ``error`` and of the errors chained to it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__context__ or error.__cause__


def _uri_sets(uri: str, option: str) -> bool:
    """Whether a MongoDB URI sets ``option`` itself (options are case-insensitive)."""
    query = uri.partition("?")[2].lower()
    return any(part.partition("=")[0] == option.lower() for part in query.split("&"))


class Connection:
    """One cache's connection: a lazily made per-process client, and :meth:`call`.

    Thread-safe (pymongo clients are); picklable (the client is not pickled).
    """

    def __init__(self, config: WireheadConfig, uri: Optional[str] = None, *,
                 resolve: Optional[Callable[[], str]] = None) -> None:
        """``uri``: the resolved server URI; ``None`` for the config's.  ``resolve``: finds the embedded
        server's URI, when the config names no server: called on first use without ``uri``, and again when
        the server stops answering (a shared local server restarted on a new port); default
        :func:`wirehead.server.shared_uri`."""
        self.config = config
        self._uri = uri if uri is not None else config.uri
        self._resolve = resolve
        # only a URI found through the shared-server record is looked up again (not a private server's)
        self._follows = resolve is not None or (uri is None and config.uri is None)
        self._client: Optional[pymongo.MongoClient] = None
        self._pid: Optional[int] = None
        self._lock = threading.Lock()
        self._ever_connected = False
        #: set by a generator or manager to its stop event: a call that retries an unavailable server gives up
        #: (:class:`~wirehead.errors.RetryAbandoned`) once it is set, instead of retrying out its deadline
        self.interrupt: Optional[Any] = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _pid=None, _lock=None, interrupt=None)
        if state.get("_resolve") is not None:
            state["_resolve"] = None  # resolvers may be local functions; the default one is used after pickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- where the server is ----------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """Whether the server was found through the shared embedded server's record."""
        return self._follows

    def _resolve_embedded(self) -> str:
        if self._resolve is not None:
            return self._resolve()
        from .server import shared_uri  # deferred: the server module is only needed without a configured server

        return shared_uri()

    @property
    def uri(self) -> str:
        """The server URI: the one given, the config's, or the shared embedded server's (started on first use)."""
        if self._uri is None:
            self._uri = self._resolve_embedded()
        return self._uri

    @property
    def found(self) -> bool:
        """Whether the server's URI is known (given, configured, or found once); no lookup."""
        return self._uri is not None

    @property
    def redacted_uri(self) -> str:
        """The URI with any password hidden."""
        return redact_uri(self._uri or self.config.uri) or "<embedded local server>"

    def _follow_embedded(self) -> bool:
        """The embedded server stopped answering: look for it again (it may run on a new port now).
        Returns True when the URI changed (the client is remade)."""
        if not self.embedded:
            return False
        try:
            fresh = self._resolve_embedded()
        except Exception as e:  # noqa: BLE001 - not found (yet): keep retrying the old address
            log.debug("the embedded server could not be found again: %s", e)
            return False
        if fresh == self._uri:
            return False
        log.warning("the embedded local server moved from %s to %s; reconnecting", self._uri, fresh)
        with self._lock:
            old, self._client, self._uri = self._client, None, fresh
        if old is not None and self._pid == os.getpid():
            with pymongo.timeout(0.5):
                old.close()
        return True

    # -- the client -----------------------------------------------------------------
    @property
    def client(self) -> pymongo.MongoClient:
        """This process's client, made on first use (and again after a fork).

        Raises:
            StoreError: the URI or a TLS option is invalid.
        """
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    ms = int(self.config.connect_timeout * 1000)
                    uri = self.uri  # may find (or start) the embedded server; its errors are its own
                    options: dict[str, Any] = dict(
                        serverSelectionTimeoutMS=ms, connectTimeoutMS=ms,
                        socketTimeoutMS=int(max(self.config.connect_timeout, self.config.retry_deadline) * 1000),
                        appname="wirehead", retryReads=False)  # our own retries keep the deadline
                    if not _uri_sets(uri, "heartbeatFrequencyMS"):
                        options["heartbeatFrequencyMS"] = HEARTBEAT_MS
                    try:
                        self._client = pymongo.MongoClient(uri, **options)
                    except (ConfigurationError, ValueError, OSError) as e:
                        raise StoreError(f"invalid MongoDB URI or TLS option in {self.redacted_uri}: "
                                         f"{short_error(e)}; fix MONGO_URI (or MONGOHOST/PORT)") from None
                    self._pid = os.getpid()
        return self._client

    @property
    def connected(self) -> bool:
        """Whether this process holds a client now (it is made on first use and dropped by :meth:`close`)."""
        return self._client is not None and self._pid == os.getpid()

    def gone_lately(self) -> bool:
        """Whether a call of this process gave up on this server as unreachable in the last few seconds."""
        found = _GONE.get(self._uri or "")
        return found is not None and time.monotonic() - found < _GONE_SECONDS

    def close(self) -> None:
        """Close this process's client (it is remade on next use).  Bounded: a server that is gone cannot
        hold it up."""
        if self.connected:
            assert self._client is not None
            if self.gone_lately():
                # closing ends the client's server sessions, which waits for server selection (0.5 s at least,
                # each client) on a server just found gone: drop them (the server expires them).  pymongo has
                # no public way to do so; without the private hook the close waits its 0.5 s.
                pop = getattr(getattr(self._client, "_topology", None), "pop_all_sessions", None)
                if pop is not None:
                    pop()
            with pymongo.timeout(0.5):
                self._client.close()
        self._client = None

    # -- calls ----------------------------------------------------------------------
    def call(self, what: str, fn: Callable[[], T], deadline: Optional[float] = None) -> T:
        """Run ``fn`` (one operation of the protocol, idempotent) with retries while the server is away.

        Ends within ``deadline`` seconds (default: RETRY_DEADLINE once this connection reached the server,
        CONNECT_TIMEOUT before): every attempt, server selection included, is bounded by the time left
        (at least a few ms), and by CONNECT_TIMEOUT while the client knows no server it can use, and the
        pause between attempts too.

        Raises:
            StoreUnavailable: transient errors until the deadline; the message says how long it waited.
            StoreError: the server refused (permanent), at once.
        """
        if self._uri is None:  # the shared embedded server's start (and first user) has its own deadline
            self.uri  # noqa: B018 - resolved (started) before this call's clock runs
        deadline_s = deadline if deadline is not None else (
            self.config.retry_deadline if self._ever_connected else self.config.connect_timeout)
        start = time.monotonic()
        end = start + deadline_s
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            left = end - time.monotonic()
            if not (self._ever_connected and self._writable()):
                # no server to use now (not found yet, gone, or no primary): this attempt may wait CONNECT_TIMEOUT
                # for one, then the next looks again (and follows the embedded server); an attempt on a usable
                # server gets all the time left (a large read or write may take long)
                left = min(left, self.config.connect_timeout)
            try:
                with pymongo.timeout(max(left, _MIN_ATTEMPT)):
                    result = fn()
            except (PyMongoError, BSONError) as e:
                # the driver's error is named in the message (password-free), never chained on: its text and
                # attributes may hold the URI's credentials
                if not is_transient(e):
                    error = self._refused(what, e)
                    drop_tracebacks(e)
                    raise error from None
                left = end - time.monotonic()
                if self._interrupted(0):  # stopped: before the deadline's error, which would read as a failure
                    self._abandon(what, e, time.monotonic() - start, attempt)
                if left <= 0:
                    _GONE[self._uri or ""] = time.monotonic()
                    error = StoreUnavailable(self._gave_up(what, e, deadline_s, time.monotonic() - start, attempt))
                    drop_tracebacks(e)
                    raise error from None
                drop_tracebacks(e)  # retried: keep no caller frames alive through it
                if self.embedded and self._follow_embedded():
                    continue  # the shared local server was restarted elsewhere: retry there at once
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("%s: server %s %s (%s); retrying for up to %.1f s", what, self.redacted_uri,
                                "has no primary" if self._no_primary(e) else "unreachable", short_error(e), left)
                if self._interrupted(min(delay, max(left, 0.01))):
                    self._abandon(what, e, time.monotonic() - start, attempt)
                delay = min(delay * 2, 1.0) * (0.75 + 0.5 * random.random())
                continue
            self._ever_connected = True
            if _GONE:
                _GONE.pop(self._uri or "", None)  # it answers again
            return result

    def _writable(self) -> bool:
        """Whether this process's client knows a server it can write to now (no wait, no round trip)."""
        return self.connected and self.client.topology_description.has_writable_server()

    def _no_primary(self, e: BaseException) -> bool:
        """Whether ``e`` means the server answers but no primary accepts the operation (a step-down, an
        election), rather than no server at all."""
        if isinstance(e, NotPrimaryError) or any(c in _NO_PRIMARY_CODES for c in _codes(e)):  # type: ignore[arg-type]
            return True
        if isinstance(e, ServerSelectionTimeoutError) and self._client is not None:
            kinds = {s.server_type_name for s in self._client.topology_description.server_descriptions().values()}
            return bool(kinds - {"Unknown"})  # a server answered its heartbeat, yet none was selectable
        return False

    def _interrupted(self, pause: float) -> bool:
        """Pause ``pause`` seconds between attempts, or less when :attr:`interrupt` is set: whether it is."""
        if self.interrupt is None:
            time.sleep(pause)
            return False
        return self.interrupt.wait(pause) if pause > 0 else self.interrupt.is_set()

    def _abandon(self, what: str, e: PyMongoError, waited: float, attempts: int) -> NoReturn:
        """Raise :class:`RetryAbandoned` for a call stopped while it retried ``e`` (its traceback dropped)."""
        error = RetryAbandoned(f"{what}: stopped while MongoDB at {self.redacted_uri} was unavailable (waited "
                               f"{waited:.1f} s, {attempts} attempts; last error: {short_error(e)})")
        drop_tracebacks(e)
        raise error from None

    def _gave_up(self, what: str, e: PyMongoError, deadline_s: float, waited: float, attempts: int) -> str:
        head = (f"MongoDB at {self.redacted_uri} did not answer {what} within {deadline_s:g} s "
                f"(waited {waited:.1f} s, {attempts} attempts); last error: {short_error(e)}. ")
        if self._no_primary(e):
            return head + ("The server answers but no primary accepted the operation (a step-down or an "
                           "election lasted longer): raise RETRY_DEADLINE to ride through longer failovers.")
        if not self._ever_connected:
            return head + ("Is the server running and reachable? Check MONGOHOST/PORT/MONGO_URI, or raise "
                           "CONNECT_TIMEOUT for a slow network.")
        return head + ("The server was reached before: is it still running, and the network up? Raise "
                       "RETRY_DEADLINE to ride through longer outages.")

    def _refused(self, what: str, e: Exception) -> StoreError:
        codes = set(_codes(e)) if isinstance(e, PyMongoError) else set()
        if codes & _AUTH_CODES or "auth" in str(e).lower():
            return StoreError(
                f"MongoDB at {self.redacted_uri} refused {what}: authentication failed or not authorised "
                f"({short_error(e)}). Check USERNAME/PASSWORD, authSource in MONGO_URI, and the user's roles "
                f"on database {self.config.dbname!r}.")
        if isinstance(e, OperationFailure):
            return StoreError(
                f"MongoDB at {self.redacted_uri} refused {what}: {short_error(e)}. This is not a passing "
                f"fault, so it is not retried: check that the server is a MongoDB of version 4.4 or later (or "
                f"SecantusDB) and that nothing else writes to database {self.config.dbname!r}.")
        return StoreError(
            f"the MongoDB driver refused {what} on {self.redacted_uri}: {short_error(e)}. Check MONGO_URI's "
            f"options and the documents written (a sample must fit the server's limits).")
