"""LocalMongo: the embedded default, a local MongoDB-compatible server.

A config with no MONGOHOST and no MONGO_URI uses a local server, the way
``ray.init()`` starts a local cluster.  :class:`LocalMongo` runs a real
``mongod`` when one is on PATH, otherwise ``secantusd-py`` (SecantusDB, a
MongoDB-compatible server on WiredTiger, installed by ``pip install
wirehead[local]``).  Either way it listens on 127.0.0.1 only, on a free port,
and is stopped as a whole process group.

Processes on one machine that use the embedded default meet on ONE shared
server: :func:`shared_uri` starts it on first use and records its URI and pid
in ``$WIREHEAD_HOME/server.json`` (default ``~/.wirehead``); later processes
connect to it; a record whose pid is dead is replaced.  ``wirehead server
status`` shows it and ``wirehead server stop`` stops it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Iterator, Optional

from .errors import ServerNotFound, StoreUnavailable, WaitTimeout
from .supervise import flock_within, pid_alive

__all__ = ["LocalMongo", "find_engine", "free_port", "ping_uri", "shared_uri", "shared_record", "stop_shared", "wirehead_home"]

log = logging.getLogger(__name__)

ENGINES = ("mongod", "secantus")
_LIVE: "weakref.WeakSet[LocalMongo]" = weakref.WeakSet()


def wirehead_home() -> Path:
    """The per-user directory of the shared server: ``$WIREHEAD_HOME`` or ``~/.wirehead``."""
    return Path(os.environ.get("WIREHEAD_HOME") or Path.home() / ".wirehead")


def find_engine(engine: str = "auto") -> tuple[str, str]:
    """Return ``(engine name, executable path)`` of the server to run.

    ``engine`` is ``"auto"`` (``mongod`` when on PATH, else SecantusDB), ``"mongod"``
    or ``"secantus"``.

    Raises:
        ServerNotFound: no suitable executable is installed.
    """
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine must be 'auto', 'mongod' or 'secantus', got {engine!r}")
    if engine in ("auto", "mongod"):
        path = shutil.which("mongod")
        if path:
            return "mongod", path
        if engine == "mongod":
            raise ServerNotFound("engine='mongod' was asked for but no mongod is on PATH; install MongoDB "
                                 "(e.g. conda install -c conda-forge mongodb) or use engine='auto'")
    candidates = [shutil.which("secantusd-py"), str(Path(sys.executable).parent / "secantusd-py")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return "secantus", path
    raise ServerNotFound(
        "no local MongoDB-compatible server found: neither mongod nor secantusd-py is installed. "
        "Install the embedded server with `pip install 'wirehead[local]'`, or put mongod on PATH, "
        "or set MONGOHOST / MONGO_URI / $WIREHEAD_MONGO_URI to an existing server."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalMongo:
    """A local MongoDB-compatible server process on 127.0.0.1.

    Use as a context manager (``with LocalMongo() as server: server.uri``) or call
    :meth:`start` and :meth:`stop`.  With ``dbpath=None`` the data lives in a
    temporary directory removed on :meth:`stop`; a given ``dbpath`` is kept and a
    later server started on it finds the data intact.

    A server this process started is stopped when the process exits, unless
    ``detached=True`` (the shared server), which outlives its starter.

    Not thread-safe: start and stop it from one thread.
    """

    def __init__(
        self,
        dbpath: Optional[os.PathLike | str] = None,
        *,
        port: Optional[int] = None,
        engine: str = "auto",
        startup_timeout: float = 60.0,
        detached: bool = False,
        host: str = "127.0.0.1",
        auth: bool = False,
    ) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be > 0 seconds, got {startup_timeout!r}")
        self.engine_request = engine
        self.port = port
        self.startup_timeout = float(startup_timeout)
        self.detached = detached
        self.host = host  # a cluster node's private address for a server other nodes use (examples/slurm)
        self.auth = auth  # require authentication (users created beforehand, e.g. through 127.0.0.1)
        self._given_dbpath = Path(dbpath) if dbpath is not None else None
        self._tmpdir: Optional[str] = None  # a temporary data directory this object removes
        self.dbpath: Optional[Path] = None
        self.engine: Optional[str] = None
        self.process: Optional[subprocess.Popen] = None
        self._log_file: Any = None

    # -- lifecycle -------------------------------------------------------------
    @property
    def uri(self) -> str:
        """``mongodb://HOST:PORT/`` of the running server (HOST: 127.0.0.1 unless ``host`` was given).

        Raises:
            RuntimeError: the server is not running.
        """
        if not self.running:
            raise RuntimeError("LocalMongo is not running; call start() first")
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def pid(self) -> Optional[int]:
        """The server's process id, or ``None`` when not started."""
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Optional[Path]:
        """The server's log file (inside its data directory)."""
        return self.dbpath / "server.log" if self.dbpath else None

    def start(self) -> "LocalMongo":
        """Start the server and wait until it answers ``ping``.

        Raises:
            ServerNotFound: no server executable is installed.
            WaitTimeout: it did not answer within ``startup_timeout`` seconds (it is stopped).
            RuntimeError: it exited during start-up (the message holds its log's tail).
        """
        if self.running:
            return self
        self.engine, exe = find_engine(self.engine_request)
        if self._given_dbpath is not None:
            self.dbpath = self._given_dbpath
        else:
            self._tmpdir = tempfile.mkdtemp(prefix="wirehead-mongo-")
            self.dbpath = Path(self._tmpdir)
        self.dbpath.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        for attempt in range(3):
            if not fixed_port:
                self.port = free_port()
            try:
                self._spawn(exe)
                self._wait_ready()
                break
            except RuntimeError:
                self._kill()
                if fixed_port or attempt == 2:
                    raise
                log.info("local server failed to start on port %s; trying another port", self.port)
        if not self.detached:
            _LIVE.add(self)
        log.info("started %s at %s (pid %s, data in %s)", self.engine, self.uri, self.pid, self.dbpath)
        return self

    def _command(self, exe: str) -> list[str]:
        assert self.dbpath is not None
        auth = ["--auth"] if self.auth else []
        if self.engine == "mongod":
            return [exe, "--bind_ip", self.host, "--port", str(self.port), "--dbpath", str(self.dbpath),
                    "--nounixsocket", "--quiet", *auth]
        return [exe, "--host", self.host, "--port", str(self.port), "--storage-path", str(self.dbpath / "wt"),
                "--standalone", "--log-level", "WARNING", *auth]

    def _spawn(self, exe: str) -> None:
        assert self.log_path is not None
        self._log_file = open(self.log_path, "ab")
        command = self._command(exe)
        if not self.detached:  # a private server never outlives its owner, even one killed by SIGKILL
            rmdir = ["--rmdir", self._tmpdir] if self._tmpdir is not None else []
            command = [sys.executable, "-m", "wirehead._watchdog", str(os.getpid()), *rmdir, "--", *command]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=str(self.dbpath),
            start_new_session=True,  # its own process group: stop() ends all of it
        )

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        uri = f"mongodb://{self.host}:{self.port}/"
        while True:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise RuntimeError(f"{self.engine} exited with code {code} during start-up; "
                                   f"log {self.log_path}:\n{self._log_tail()}")
            status = _ask(uri, "serverStatus", timeout=0.5)
            if status is not None:
                if self._answered_by_ours(status.get("pid")):
                    return
                # another server holds the port (two starts drew the same free port, or PORT is taken):
                # ours could not bind, and talking to the stranger would be worse than failing
                raise RuntimeError(f"port {self.port} is answered by another server (pid {status.get('pid')}), "
                                   f"not the {self.engine} started here; choose another PORT or stop that server")
            if time.monotonic() > deadline:
                self._kill()
                raise WaitTimeout(f"{self.engine} on port {self.port} did not answer ping within "
                                  f"{self.startup_timeout:.0f} s; log {self.log_path}:\n{self._log_tail()}")
            time.sleep(0.1)

    def _answered_by_ours(self, pid: Any) -> bool:
        """Whether the process that answered (its ``serverStatus`` pid) is the one started here: the
        process itself or one of its process group (the watchdog's server).  No pid reported (an engine
        without it, or a server with access control that refused to say): trusted."""
        if not isinstance(pid, int) or self.process is None:
            return True
        try:
            return pid == self.process.pid or os.getpgid(pid) == self.process.pid
        except (ProcessLookupError, PermissionError):
            return False

    def _kill(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            # only the process we started: the watchdog (which stops its server, waits for it and reaps it),
            # or the detached server itself.  Signalling the whole group would hit the server twice.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s pid %s did not stop within %.0f s; killing it", self.engine, proc.pid, timeout)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if proc is not None:
            # children that ignored SIGTERM are gone with the group too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``timeout``).

        A temporary data directory is removed; a given one is kept.  Safe to call twice.
        """
        self._kill(timeout)
        _LIVE.discard(self)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if self.process is not None:
            log.info("stopped %s (pid %s)", self.engine, self.process.pid)

    def __enter__(self) -> "LocalMongo":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.uri}" if self.running else "stopped"
        return f"LocalMongo(engine={self.engine or self.engine_request!r}, {state}, dbpath={str(self.dbpath)!r})"


@atexit.register
def _stop_owned_servers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):  # noqa: BLE001 - at exit: every server gets its turn
            server.stop(timeout=5)


# -- the shared server of one user ------------------------------------------------
def _state_file() -> Path:
    return wirehead_home() / "server.json"


#: Most seconds a script waits for another that starts or stops the shared server (a start may take three
#: tries of ``startup_timeout``); after that it names the process that holds the lock (paused or stuck).
_LOCK_SECONDS = 3 * 60.0 + 30.0


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """This user's shared-server lock (``server.lock`` in the wirehead home), held while the shared server
    is started or stopped; the file names its holder's pid."""
    home = wirehead_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "server.lock"
    with open(path, "a+") as lock:
        try:
            flock_within(lock.fileno(), fcntl.LOCK_EX, _LOCK_SECONDS, str(path))
        except OSError as e:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise WaitTimeout(
                f"{path} was held for {_LOCK_SECONDS:g} s by pid {holder}, which starts or stops the shared "
                f"local server and is paused or stuck; resume it (kill -CONT {holder}) or end it, then try "
                f"again") from e
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ping_uri(uri: str, timeout: float = 1.0) -> bool:
    """Whether a server at ``uri`` answers ``ping`` within ``timeout`` seconds."""
    return _ask(uri, "ping", timeout) is not None


def _ask(uri: str, command: str, timeout: float) -> Optional[dict[str, Any]]:
    """The server's answer to admin ``command``: ``{}`` when it refused it (e.g. a server with access control
    asked ``serverStatus`` without credentials: it answered all the same), ``None`` when no answer came within
    ``timeout`` seconds."""
    if not uri:
        return None
    # the one pymongo use outside wirehead.store (which owns the driver): kept local to these admin commands, so the
    # module's imports show that it runs servers and does not speak the protocol
    import pymongo
    from pymongo.errors import OperationFailure, PyMongoError

    ms = max(1, int(timeout * 1000))
    client = None
    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms)
        return dict(client.admin.command(command))
    except OperationFailure:
        return {}
    except (PyMongoError, ValueError):
        return None
    finally:
        if client is not None:
            with pymongo.timeout(0.5):
                client.close()


def _read_record() -> Optional[dict[str, Any]]:
    try:
        record = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _registry() -> Path:
    """Per-user list of running shared servers, outside any wirehead home (which a user may delete)."""
    return Path(tempfile.gettempdir()) / f"wirehead-{os.getuid()}" / "shared-servers"


def _register(record: dict[str, Any]) -> None:
    reg = _registry()
    reg.mkdir(parents=True, exist_ok=True, mode=0o700)
    (reg / f"{record['pid']}.json").write_text(json.dumps({**record, "home": str(wirehead_home())}))


def _terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a server's process group, SIGKILL after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid, reap=True) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid, reap=True):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _stop_orphaned() -> list[dict[str, Any]]:
    """Stop shared servers whose wirehead home was deleted while they ran (their record and data are gone,
    so no script could find them and `wirehead server stop` could not see them).  Returns their records."""
    stopped = []
    reg = _registry()
    for path in sorted(reg.glob("*.json")) if reg.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not pid_alive(pid, reap=True):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if Path(record.get("dbpath", "")).exists():
            continue  # its home (or at least its data) is still there: not an orphan
        log.warning("stopping the shared local server pid %s (%s): its wirehead home %s was deleted while it ran",
                    pid, record.get("uri"), record.get("home"))
        _terminate(pid)
        with contextlib.suppress(OSError):
            path.unlink()
        stopped.append(record)
    return stopped


def shared_record() -> Optional[dict[str, Any]]:
    """The shared server's record (``uri``, ``pid``, ``engine``, ``dbpath``, ``started``) if it is alive."""
    record = _read_record()
    if record is None or not pid_alive(int(record.get("pid", -1)), reap=True):
        return None
    if not ping_uri(record.get("uri", ""), timeout=2.0):
        return None
    return record


def _refuse_frozen() -> None:
    """A recorded shared server whose process lives but does not answer (frozen, e.g. SIGSTOPped) holds
    its data directory: a second server there would fail ("resource busy").  Say so instead."""
    record = _read_record()
    if record is None or not pid_alive(int(record.get("pid", -1)), reap=True):
        return
    raise StoreUnavailable(
        f"the shared local server (pid {record.get('pid')}, {record.get('uri')}) is running but does not answer "
        f"(frozen or overloaded?); resume it (kill -CONT {record.get('pid')}) or stop it with "
        f"`wirehead server stop`, then try again")


def shared_uri(startup_timeout: float = 60.0) -> str:
    """URI of this user's shared local server, starting it if none is alive.

    Safe to call from many processes at once: a file lock makes one of them
    start the server and the others wait for and reuse its record.

    Raises:
        ServerNotFound, WaitTimeout, RuntimeError: as :meth:`LocalMongo.start`.
    """
    record = shared_record()
    if record:
        return record["uri"]
    with _locked():
        record = shared_record()  # another process may have won the race
        if record:
            return record["uri"]
        _refuse_frozen()
        _stop_orphaned()
        server = LocalMongo(wirehead_home() / "data", detached=True, startup_timeout=startup_timeout).start()
        record = {"uri": server.uri, "pid": server.pid, "engine": server.engine,
                  "dbpath": str(server.dbpath), "started": time.time()}
        tmp = _state_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(_state_file())
        _register(record)
        log.info("started the shared local server at %s (pid %s); stop it with `wirehead server stop`",
                 server.uri, server.pid)
        return server.uri


def stop_shared(timeout: float = 10.0) -> Optional[dict[str, Any]]:
    """Stop this user's shared local server; return its record, or ``None`` if none ran."""
    with _locked():
        try:
            record = json.loads(_state_file().read_text())
        except (OSError, ValueError):
            orphans = _stop_orphaned()  # a server whose home was deleted is stopped too
            return orphans[0] if orphans else None
        pid = int(record.get("pid", -1))
        if pid_alive(pid, reap=True):
            _terminate(pid, timeout)
        with contextlib.suppress(OSError):
            _state_file().unlink()
        with contextlib.suppress(OSError):
            (_registry() / f"{pid}.json").unlink()
        return record
