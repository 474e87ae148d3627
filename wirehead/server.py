"""LocalMongo: the embedded default, a local MongoDB-compatible server.

A config with no MONGOHOST and no MONGO_URI uses a local server, the way
``ray.init()`` starts a local cluster.  :class:`LocalMongo` runs a real
``mongod`` when one is on PATH, otherwise ``secantusd-py`` (SecantusDB, a
MongoDB-compatible server on WiredTiger, installed by ``pip install
wirehead[local]``).  Either way it listens on 127.0.0.1 (or the address it is
given), on a free port, and is stopped as a whole process group.

Other users of the machine can reach any port on 127.0.0.1, so the server requires
authentication: a random credential, made on the data directory's first use and kept in
``<data>/credential.json`` (mode 0600, in a 0700 directory), is the one user of the server
(``root`` on ``admin``); :attr:`LocalMongo.uri` carries it, so whoever gets the URI from this
module needs no set-up.  The user is created once, by a start without access control that
listens on 127.0.0.1 only for as long as ``createUser`` takes and is then checked to hold no
other user (see :meth:`LocalMongo._provision`).

Processes on one machine that use the embedded default meet on ONE shared
server: :func:`shared_uri` starts it on first use and records its URI (with the
credential), pid and the pid's start time in ``$WIREHEAD_HOME/server.json``
(default ``~/.wirehead``; mode 0600); later processes connect to it; a record
whose process is gone (its pid dead or reused by another process) is replaced.
``wirehead server status`` shows it and ``wirehead server stop`` stops it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import secrets
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
from urllib.parse import quote_plus

from .config import redact_uri
from .errors import ServerNotFound, StoreUnavailable, WaitTimeout
from .isolation import isolated
from .safefs import UnsafePath, open_private, private_dir, read_private, write_private
from .supervise import flock_within, process_start, same_process, signal_recorded

__all__ = ["LocalMongo", "find_engine", "free_port", "ping_uri", "shared_uri", "shared_record", "stop_shared", "wirehead_home",
           "read_credential", "USER", "CREDENTIAL_FILE"]

log = logging.getLogger(__name__)

ENGINES = ("mongod", "secantus")
#: The one user of a local server with access control, and the file of its credential in the data directory.
USER = "wirehead"
CREDENTIAL_FILE = "credential.json"
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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_credential(dbpath: "os.PathLike[str] | str") -> Optional[dict[str, Any]]:
    """The credential of the local server whose data is in ``dbpath`` (``{"user", "password", "provisioned"}``),
    or None when it has none yet.  A job on another node that shares the directory connects with
    ``mongodb://<user>:<password>@<host>:<port>/`` (quote both with ``urllib.parse.quote_plus``).

    Raises:
        UnsafePath: the file is a link or another user's (see :mod:`wirehead.safefs`).
        ValueError: the file is not a credential.
    """
    try:
        cred = json.loads(read_private(Path(dbpath) / CREDENTIAL_FILE))
    except FileNotFoundError:
        return None
    if not (isinstance(cred, dict) and isinstance(cred.get("user"), str) and isinstance(cred.get("password"), str)
            and cred["user"] and cred["password"]):
        raise ValueError(f"{Path(dbpath) / CREDENTIAL_FILE} is not a wirehead server credential; remove it and the "
                         f"data directory's users will be made again")
    return cred


class LocalMongo:
    """A local MongoDB-compatible server process on 127.0.0.1.

    Use as a context manager (``with LocalMongo() as server: server.uri``) or call
    :meth:`start` and :meth:`stop`.  With ``dbpath=None`` the data lives in a
    temporary directory removed on :meth:`stop`; a given ``dbpath`` is kept and a
    later server started on it finds the data intact.

    A server this process started is stopped when the process exits, unless
    ``detached=True`` (the shared server), which outlives its starter.

    With ``auth=True`` (the default) the server requires authentication: its one
    user's random credential lives in ``<dbpath>/credential.json`` (0600) and
    :attr:`uri` carries it; ``auth=False`` runs it without access control (any
    local user can then read and change it).  ``host`` is the address it listens
    on (default 127.0.0.1; another address, e.g. a cluster node's, only with auth).

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
        auth: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be > 0 seconds, got {startup_timeout!r}")
        if not auth and not host.startswith("127."):
            raise ValueError(f"a server without authentication listens on loopback only, got host={host!r}; "
                             f"use auth=True")
        self.auth = auth
        self.host = host
        self._credential: Optional[dict[str, Any]] = None
        self._auth_now = False  # whether the process running now requires authentication
        self.engine_request = engine
        self.port = port
        self.startup_timeout = float(startup_timeout)
        self.detached = detached
        self._given_dbpath = Path(dbpath) if dbpath is not None else None
        self._tmpdir: Optional[str] = None  # a temporary data directory this object removes
        self.dbpath: Optional[Path] = None
        self.engine: Optional[str] = None
        self.process: Optional[subprocess.Popen] = None
        self._log_file: Any = None

    # -- lifecycle -------------------------------------------------------------
    @property
    def uri(self) -> str:
        """``mongodb://wirehead:<password>@HOST:PORT/`` of the running server (``mongodb://HOST:PORT/``
        with ``auth=False``); it holds the password: log :func:`wirehead.config.redact_uri` of it.

        Raises:
            RuntimeError: the server is not running.
        """
        if not self.running:
            raise RuntimeError("LocalMongo is not running; call start() first")
        return self._uri(self.host, self._auth_now)

    def _uri(self, host: str, credential: bool) -> str:
        cred = self._credential if credential else None
        auth = f"{quote_plus(cred['user'])}:{quote_plus(cred['password'])}@" if cred else ""
        return f"mongodb://{auth}{host}:{self.port}/"

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
        self.dbpath.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self.dbpath)  # 0700: the data and the credential are this user's alone
        if self.auth:
            self._credential = read_credential(self.dbpath)
            if self._credential is None:
                self._credential = {"user": USER, "password": secrets.token_urlsafe(24), "provisioned": False}
                write_private(self.dbpath / CREDENTIAL_FILE, json.dumps(self._credential))
            if not self._credential.get("provisioned"):
                self._provision(exe)
        self._launch(exe, auth=self.auth)
        if self.auth and _ask(self.uri, "connectionStatus", timeout=max(10.0, self.startup_timeout / 2)) == {}:
            self._kill()
            raise RuntimeError(f"the local server in {self.dbpath} refuses its credential "
                               f"({self.dbpath / CREDENTIAL_FILE}); remove that file to create its user again")
        if not self.detached:
            _LIVE.add(self)
        log.info("started %s at %s (pid %s, data in %s)", self.engine, redact_uri(self.uri), self.pid, self.dbpath)
        return self

    def _launch(self, exe: str, auth: bool) -> None:
        """Start the server (with access control or not) and wait for it; a few free ports are tried."""
        self._auth_now = auth
        fixed_port = self.port is not None
        host = self.host if auth else "127.0.0.1"
        for attempt in range(3):
            if not fixed_port:
                self.port = free_port(host)
            try:
                self._spawn(exe, host)
                self._wait_ready(host)
                return
            except RuntimeError:
                self._kill()
                if fixed_port or attempt == 2:
                    raise
                log.info("local server failed to start on port %s; trying another port", self.port)

    def _provision(self, exe: str) -> None:
        """Create the server's one user (the credential's) in its data directory.

        Neither engine can create a first user while it requires authentication, so the server runs
        once without it, on 127.0.0.1 only and just long enough for ``createUser``.  A local user who
        connected in that window could have created a user of their own: on a data directory that held
        nothing before, any user but ours fails the start (nothing of this user's was there to read).
        """
        assert self.dbpath is not None and self._credential is not None
        fresh = not (self.dbpath / "wt").exists() and not any(self.dbpath.glob("*.wt"))
        port = self.port
        self._launch(exe, auth=False)
        try:
            found = _admin(self._uri("127.0.0.1", False), self._credential, fresh)
        finally:
            # the user is on disk (fsync): no graceful shutdown (seconds) is needed; start() checks it is there
            self._kill(hard=True)
            self.port = port  # a fixed port stays; a free one is drawn again
        if found:
            raise RuntimeError(f"while the server in {self.dbpath} ran without access control to create its user, "
                               f"someone else created user(s) {found}: not starting it (another local user connected "
                               f"in that second); remove {self.dbpath} and try again")
        self._credential["provisioned"] = True
        write_private(self.dbpath / CREDENTIAL_FILE, json.dumps(self._credential))
        log.info("created the user of the local server in %s (credential in %s)", self.dbpath,
                 self.dbpath / CREDENTIAL_FILE)

    def _command(self, exe: str, host: str = "127.0.0.1") -> list[str]:
        assert self.dbpath is not None
        auth = ["--auth"] if self._auth_now else []
        if self.engine == "mongod":
            return [exe, "--bind_ip", host, "--port", str(self.port), "--dbpath", str(self.dbpath),
                    "--nounixsocket", "--quiet", *auth]
        return [exe, "--host", host, "--port", str(self.port), "--storage-path", str(self.dbpath / "wt"),
                "--standalone", "--log-level", "WARNING", *auth]

    def _spawn(self, exe: str, host: str = "127.0.0.1") -> None:
        assert self.log_path is not None
        self._log_file = os.fdopen(open_private(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")
        command = self._command(exe, host)
        if not self.detached:  # a private server never outlives its owner, even one killed by SIGKILL
            # the temporary directory goes with the server (the run that creates its user is killed with its
            # watchdog at once, so the directory and its credential stay for the next run)
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

    def _wait_ready(self, host: str = "127.0.0.1") -> None:
        deadline = time.monotonic() + self.startup_timeout
        uri = self._uri(host, self._auth_now)
        while True:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise RuntimeError(f"{self.engine} exited with code {code} during start-up; "
                                   f"log {self.log_path}:\n{self._log_tail()}")
            # a cheap unauthenticated ping first (answered, or refused, at once once it listens), then one
            # serverStatus with time for the authentication handshake (seconds on a loaded machine)
            status = _ask(self._uri(host, False), "ping", timeout=0.5)
            if status is not None and self._auth_now:
                status = _ask(uri, "serverStatus", timeout=max(5.0, deadline - time.monotonic()))
            elif status is not None:
                status = _ask(uri, "serverStatus", timeout=2.0)
            if status is not None:
                # ours runs without access control while its user is made: one that refuses is another server
                provisioning = self.auth and not self._auth_now
                if (status or not provisioning) and self._answered_by_ours(status.get("pid")):
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

    def _kill(self, timeout: float = 10.0, hard: bool = False) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None and hard:  # nothing to keep (see _provision): at once
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
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
def _home() -> Path:
    """The wirehead home, made with mode 0700 when missing (its parents as usual) and checked to be this
    user's (see :func:`wirehead.safefs.private_dir`)."""
    home = wirehead_home()
    home.parent.mkdir(parents=True, exist_ok=True)
    private_dir(home)
    return home


def _state_file() -> Path:
    return wirehead_home() / "server.json"


#: Most seconds a script waits for another that starts or stops the shared server (a start may take three
#: tries of ``startup_timeout``); after that it names the process that holds the lock (paused or stuck).
_LOCK_SECONDS = 3 * 60.0 + 30.0


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """This user's shared-server lock (``server.lock`` in the wirehead home), held while the shared server
    is started or stopped; the file names its holder's pid."""
    path = _home() / "server.lock"
    with os.fdopen(open_private(path, os.O_RDWR | os.O_CREAT), "r+") as lock:
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


@isolated  # a caller's pymongo.timeout() must not cut the start-up short: its own timeouts bound it
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


@isolated  # a caller's pymongo.timeout() must not cut the start-up short: its own timeouts bound it
def _admin(uri: str, credential: dict[str, Any], fresh: bool, timeout: float = 30.0) -> list[str]:
    """Create (or update the password of) the user of ``credential`` as ``root`` on ``admin`` of the server at
    ``uri`` (running without access control); return the other users found when the data was ``fresh``."""
    import pymongo
    from pymongo.errors import OperationFailure

    ms = int(timeout * 1000)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms)
    try:
        user, pwd = credential["user"], credential["password"]
        try:
            client.admin.command("createUser", user, pwd=pwd, roles=[{"role": "root", "db": "admin"}])
        except OperationFailure as e:
            if "already exists" not in str(e):
                raise
            client.admin.command("updateUser", user, pwd=pwd, roles=[{"role": "root", "db": "admin"}])
        client.admin.command("fsync")  # on disk before the process is killed
        if not fresh:
            return []
        users = client.admin.command("usersInfo", {"forAllDBs": True}).get("users", [])
        return sorted(f"{u.get('user')}@{u.get('db')}" for u in users
                      if (u.get("user"), u.get("db")) != (user, "admin"))
    finally:
        with pymongo.timeout(0.5):
            client.close()


def _read_record() -> Optional[dict[str, Any]]:
    try:
        record = json.loads(read_private(_state_file()))
    except UnsafePath as e:
        log.warning("ignoring the shared server record: %s", e)
        return None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _record_alive(record: Optional[dict[str, Any]]) -> bool:
    """Whether the process a record names is still the one it recorded (pid and start time)."""
    return record is not None and same_process(record.get("pid"), record.get("start"))


def _drop_stale(record: dict[str, Any]) -> None:
    """Remove the record of a shared server whose process is gone (or whose pid another process has now)."""
    log.info("the shared local server record (pid %s) is stale: that process no longer runs; removing %s",
             record.get("pid"), _state_file())
    with contextlib.suppress(OSError):
        _state_file().unlink()


def _registry(create: bool = False) -> Optional[Path]:
    """Per-user list of running shared servers, outside any wirehead home (which a user may delete):
    ``$TMPDIR/wirehead-<uid>/shared-servers``, both directories made 0700 and checked to be this user's.
    None when missing (``create=False``) or not safely this user's (said in a warning: never trusted)."""
    top = Path(tempfile.gettempdir()) / f"wirehead-{os.geteuid()}"
    try:
        private_dir(top, create=create)
        return Path(private_dir(top / "shared-servers", create=create))
    except UnsafePath as e:
        log.warning("not using the list of shared servers: %s", e)
    except OSError:
        pass
    return None


def _register(record: dict[str, Any]) -> None:
    reg = _registry(create=True)
    if reg is not None:
        entry = {k: record[k] for k in ("pid", "start", "engine", "dbpath", "started")}
        write_private(reg / f"{record['pid']}.json", json.dumps({**entry, "uri": redact_uri(record["uri"]),
                                                                 "home": str(wirehead_home())}))


def _terminate(pid: int, start: Any, timeout: float = 10.0) -> None:
    """SIGTERM the process group of the recorded server ``(pid, start)``, SIGKILL after ``timeout`` seconds;
    nothing when that process no longer runs (its pid may be another process's now)."""
    if not signal_recorded(pid, start, signal.SIGTERM, group=True, what="the shared local server"):
        return
    deadline = time.monotonic() + timeout
    while same_process(pid, start) and time.monotonic() < deadline:
        time.sleep(0.1)
    if same_process(pid, start):
        log.warning("the shared local server pid %s did not stop within %.0f s; killing it", pid, timeout)
        signal_recorded(pid, start, signal.SIGKILL, group=True, what="the shared local server")


def _stop_orphaned() -> list[dict[str, Any]]:
    """Stop shared servers whose wirehead home was deleted while they ran (their record and data are gone,
    so no script could find them and `wirehead server stop` could not see them).  Returns their records."""
    stopped = []
    reg = _registry()
    for path in sorted(reg.glob("*.json")) if reg is not None else []:
        try:
            record = json.loads(read_private(path))
            pid, start = int(record["pid"]), record["start"]
        except UnsafePath as e:
            log.warning("skipping a shared server record: %s", e)
            continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not same_process(pid, start):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if Path(record.get("dbpath", "")).exists():
            continue  # its home (or at least its data) is still there: not an orphan
        log.warning("stopping the shared local server pid %s (%s): its wirehead home %s was deleted while it ran",
                    pid, record.get("uri"), record.get("home"))
        _terminate(pid, start)
        with contextlib.suppress(OSError):
            path.unlink()
        stopped.append(record)
    return stopped


def shared_record() -> Optional[dict[str, Any]]:
    """The shared server's record (``uri``, ``pid``, ``start``, ``engine``, ``dbpath``, ``started``) if its
    process (the recorded pid with the recorded start time) runs and answers.  ``uri`` holds the credential."""
    record = _read_record()
    if not _record_alive(record):
        return None
    assert record is not None
    if not ping_uri(record.get("uri", ""), timeout=2.0):
        return None
    return record


def _refuse_frozen() -> None:
    """A recorded shared server whose process lives but does not answer (frozen, e.g. SIGSTOPped) holds
    its data directory: a second server there would fail ("resource busy").  Say so instead.  A record
    whose process is gone is removed."""
    record = _read_record()
    if record is None:
        return
    if not _record_alive(record):
        _drop_stale(record)
        return
    raise StoreUnavailable(
        f"the shared local server (pid {record.get('pid')}, {redact_uri(record.get('uri'))}) is running but does "
        f"not answer (frozen or overloaded?); resume it (kill -CONT {record.get('pid')}) or stop it with "
        f"`wirehead server stop`, then try again")


def shared_uri(startup_timeout: float = 60.0) -> str:
    """URI of this user's shared local server (with its credential), starting it if none is alive.

    Safe to call from many processes at once: a file lock makes one of them
    start the server and the others wait for and reuse its record.

    Raises:
        ServerNotFound, WaitTimeout, RuntimeError: as :meth:`LocalMongo.start`.
        UnsafePath: the wirehead home or a file in it is another user's or a link.
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
        record = {"uri": server.uri, "pid": server.pid, "start": process_start(server.pid or -1),
                  "engine": server.engine, "dbpath": str(server.dbpath), "started": time.time()}
        write_private(_state_file(), json.dumps(record))
        _register(record)
        log.info("started the shared local server at %s (pid %s); stop it with `wirehead server stop`",
                 redact_uri(server.uri), server.pid)
        return server.uri


def stop_shared(timeout: float = 10.0) -> Optional[dict[str, Any]]:
    """Stop this user's shared local server; return its record, or ``None`` if none ran.

    A record whose process no longer runs (its pid dead, or reused by another process) is removed without
    a signal to anything."""
    with _locked():
        record = _read_record()
        if record is None:
            orphans = _stop_orphaned()  # a server whose home was deleted is stopped too
            return orphans[0] if orphans else None
        pid = record.get("pid")
        if not _record_alive(record):
            _drop_stale(record)
            return None
        _terminate(pid, record.get("start"), timeout)  # type: ignore[arg-type]
        with contextlib.suppress(OSError):
            _state_file().unlink()
        reg = _registry()
        if reg is not None:
            with contextlib.suppress(OSError):
                (reg / f"{pid}.json").unlink()
        return record
