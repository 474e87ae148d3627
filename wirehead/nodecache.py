"""Node cache: one copy of the read generation's stored sample bytes per node, shared by its readers.

Every reading process on a node (DataLoader workers, forked or spawned; several trainer processes;
DDP ranks) attaches to the same *segment* for the read generation, so each sample is fetched from the
server once per node and kept in memory once.  A segment is three plain files in this user's directory
``/dev/shm/wirehead-<uid>/`` (tmpfs: shared memory that survives fork and spawn and needs no
``multiprocessing.resource_tracker``), named ``<cache>-g<generation>-<members>.{lock,idx,data}``:
``<cache>`` hashes the server URI (its password left out: no secret, nor a hash of one, in a name), DBNAME
and collections, ``<members>`` the generation's member list (so a recreated database never meets an old
segment).

Other users of the node: the directory is made with mode 0700 and checked after it is made (a real
directory, this user's, closed to others; see :mod:`wirehead.safefs`), so no other user can list, read,
plant or replace a file in it; every file is opened without following links and checked to be this
user's.  A directory of that name made by someone else is refused with a warning (each process then
caches its own samples); a file that is not this user's is skipped with a log line, never used.

- ``.data``: the samples' manifests (JSON) and stored bytes, appended as they arrive, at most
  NODE_CACHE_MB per generation (space is reserved with ``posix_fallocate`` before it is written, so a
  full ``/dev/shm`` is an error code, never a SIGBUS), and at most half of the space ``/dev/shm`` has free
  when the segment is made (:data:`FREE_SHARE`): a small ``/dev/shm`` keeps room for DataLoader workers.
- ``.idx``: a header and one 40-byte entry per slot of the generation: empty, claimed (by a pid, at a
  time), ready (offset, size) or does-not-fit.  Changed only under an exclusive ``flock`` of the file.
- ``.lock``: every user holds a shared ``flock`` on it while attached.  The kernel drops the lock
  when the process ends, however it ends (SIGKILL included), so "nobody holds it" is "every user is
  gone".  Whoever takes it exclusively deletes the segment: its *watcher*, a small process that the
  segment's creator starts (in a session of its own, so a notebook interrupt or a job's process-group
  kill does not reach it) and that blocks on the exclusive lock, so the segment goes as soon as its last
  user is gone, however that user ended; and, without waiting, a user that detaches (the last one out),
  a reader that moves to a newer generation (older segments nobody uses), every process that attaches
  (:func:`sweep` of all segments of this user) and ``wirehead clean``: even when the watcher was killed
  too, the files of a dead segment never outlive the next reader on the node.

A sample is fetched by the process that *claims* it; others wait for it (polling the entry, up to
CONNECT_TIMEOUT) and take the claim over when its claimer is dead or late.  Ready entries never change,
so a read is one memcpy of the stored bytes into a fresh array (or, for a DataLoader's batch, a
copy-on-write mapping of a large sample's pages: no copy unless the caller writes).
What does not fit is read per process (the reader's own READER_CACHE_MB cache, else from the server).
Without a usable directory (no ``/dev/shm``, not writable) or with NODE_CACHE_MB: 0, :func:`attach`
returns None after one log line and readers use their per-process caches.

Scope: processes of one user that see the same ``/dev/shm`` and the same pid namespace (a container
shared by the ranks of a node); claims by pids of another namespace are taken over after the wait.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import mmap
import multiprocessing.util
import os
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .config import redact_uri
from .safefs import UnsafePath, open_private, private_dir
from .supervise import flock_within, pid_alive

__all__ = ["NodeCache", "attach", "sweep", "segments", "node_cache_dir", "user_dir", "DIR_ENV",
           "READY", "MINE", "BUSY", "NOFIT"]

log = logging.getLogger(__name__)

#: Internal: the directory of the node cache (default /dev/shm), for tests and odd machines.
DIR_ENV = "WIREHEAD_NODE_CACHE_DIR"
_DEFAULT_DIR = "/dev/shm"

_MAGIC = b"WHNODE01"
_HEADER = struct.Struct("<8sqqqq")  # magic, slots, capacity, bytes used, full
_ENTRY = struct.Struct("<iidqqq")  # state, pid, claimed at (time.time), offset, stored bytes, manifest bytes
_EMPTY, _CLAIMED, _READY, _NOFIT = 0, 1, 2, 3
_ALIGN = 64
#: Samples this large are read as copy-on-write mappings rather than copied (smaller ones are copied: a
#: mapping each would spend the process's map count, vm.max_map_count, on samples a memcpy reads at once).
_PRIVATE_MIN = 1 << 20
_SUFFIXES = (".data", ".idx", ".lock")  # deletion order: the lock file goes last

#: :meth:`NodeCache.acquire` answers: in the segment; claimed by the caller (fetch and publish it);
#: claimed by another reader (wait); not in the segment and never will be (read it per process).
READY, MINE, BUSY, NOFIT = "ready", "mine", "busy", "nofit"

_said: set[str] = set()
_open: "weakref.WeakSet[NodeCache]" = weakref.WeakSet()


def node_cache_dir() -> str:
    """The directory of the node cache: ``$WIREHEAD_NODE_CACHE_DIR`` or ``/dev/shm``."""
    return os.environ.get(DIR_ENV) or _DEFAULT_DIR


def user_dir(directory: Optional[str] = None, *, create: bool = False) -> str:
    """This user's directory of node cache files in ``directory`` (default :func:`node_cache_dir`):
    ``<directory>/wirehead-<uid>``, made (``create``) with mode 0700 and checked to be this user's.

    Raises:
        UnsafePath: it is a link, not a directory, or another user's.
        OSError: it cannot be made, or (``create=False``) does not exist.
    """
    return private_dir(os.path.join(directory or node_cache_dir(), f"wirehead-{os.geteuid()}"), create=create)


def cache_key(uri: str, dbname: str, collections: Sequence[str]) -> str:
    """The ``<cache>`` part of segment names: a hash of the server (its URI with any password left out),
    database and collections."""
    return hashlib.sha1("|".join([redact_uri(uri) or "", dbname, *collections]).encode()).hexdigest()[:12]


def segments(key: Optional[str] = None, directory: Optional[str] = None) -> list[str]:
    """Names of this user's node cache files (all caches, or the one of ``key``) in its directory in
    ``directory`` (see :func:`user_dir`); none when that directory is missing or not safely this user's."""
    start = f"{key}-" if key else ""
    try:
        return sorted(n for n in os.listdir(user_dir(directory)) if n.startswith(start) and n.endswith(_SUFFIXES))
    except OSError:
        return []


def _say_once(level: int, what: str, message: str, *args: Any) -> None:
    if what not in _said:
        _said.add(what)
        log.log(level, message, *args)


def attach(config: Any, uri: str, gen: Any, claim_seconds: Optional[float] = None) -> "Optional[NodeCache]":
    """This process's attachment to the node cache segment of generation ``gen`` (a ``GenDoc``), or
    None when the node cache is off (NODE_CACHE_MB: 0) or unusable here (one log line per process).

    Sweeps dead segments of this user first (see :func:`sweep`).
    """
    mb = int(config.node_cache_mb)
    if mb <= 0:
        _say_once(logging.INFO, "off", "NODE_CACHE_MB is 0: each reading process caches its own samples "
                  "(READER_CACHE_MB)")
        return None
    directory = node_cache_dir()
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: no way to reserve shared pages safely
        _say_once(logging.INFO, "unsupported", "this platform cannot reserve shared memory files: each reading "
                  "process caches its own samples (READER_CACHE_MB)")
        return None
    if not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        _say_once(logging.WARNING, "unusable", "the node cache directory %s is missing or not writable: each "
                  "reading process caches its own samples (READER_CACHE_MB); set NODE_CACHE_MB: 0 to "
                  "silence this", directory)
        return None
    capacity = mb * 1024 * 1024
    if gen.stored_bytes > 0:  # no more than the generation needs (manifests included)
        capacity = min(capacity, gen.stored_bytes + gen.n * (4096 + _ALIGN))
    key = cache_key(uri, config.dbname, (config.write_collection, config.read_collection))
    for attempt in range(3):
        try:
            mine = user_dir(directory, create=True)
            sweep(directory)
            capacity = _within_free_space(directory, capacity, mb)  # for a segment made now (else its own)
            return NodeCache(mine, key, gen.gen, gen.members, capacity,
                             float(config.connect_timeout if claim_seconds is None else claim_seconds))
        except UnsafePath as e:
            _say_once(logging.WARNING, "unsafe", "the node cache is not used (%s): each reading process caches "
                      "its own samples (READER_CACHE_MB)", e)
            return None
        except OSError as e:
            if isinstance(e, FileNotFoundError) and attempt < 2:
                continue  # the last user out of another segment removed the emptied directory meanwhile: again
            _say_once(logging.WARNING, "failed", "the node cache in %s cannot be used (%s): each reading process "
                      "caches its own samples (READER_CACHE_MB)", directory, e)
            return None
    return None  # not reached: the last attempt returns


#: The share of the free space of the node cache's file system that one generation's segment may take, when it is
#: created: the rest stays for what else uses ``/dev/shm`` (DataLoader workers hand batches over through it).
FREE_SHARE = 0.5


def _within_free_space(directory: str, capacity: int, mb: int) -> int:
    """``capacity``, lowered to :data:`FREE_SHARE` of what ``directory``'s file system has free now (checked for
    each generation: a small ``/dev/shm``, such as Docker's 64 MiB, is never filled by the node cache)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return capacity
    room = int(st.f_bavail * st.f_frsize * FREE_SHARE)
    if room >= capacity:
        return capacity
    _say_once(logging.INFO, "small", "node cache: %s has %d MiB free: a generation's node cache takes at most "
                  "%d%% of it (%d MiB, below NODE_CACHE_MB %d), leaving room for DataLoader workers",
                  directory, (room / FREE_SHARE) // 2**20, FREE_SHARE * 100, room >> 20, mb)
    return max(0, room)


def sweep(directory: Optional[str] = None, key: Optional[str] = None) -> int:
    """Delete this user's node cache segments that no live process uses; returns how many.

    ``key``: only that cache's.  A segment is in use while a process holds a shared lock on its ``.lock``
    file (the kernel drops it when the process dies).
    """
    try:
        directory = user_dir(directory)
    except OSError:
        return 0  # none made yet, or not safely this user's (attach says so)
    removed = 0
    names = segments(key, os.path.dirname(directory))
    locks = {n[:-5] for n in names if n.endswith(".lock")}
    for base in sorted(locks):
        path = os.path.join(directory, base)
        try:
            fd = open_private(path + ".lock", os.O_RDWR)
        except UnsafePath as e:  # only this user can make files here: a copy or restore by hand
            _say_once(logging.WARNING, "foreign:" + path, "node cache: skipping %s", e)
            continue
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # in use
            if _same_file(fd, path + ".lock"):
                _unlink(path)
                removed += 1
        finally:
            os.close(fd)
    # files of a segment whose lock file is gone (a sweeper killed between its unlinks), after a minute
    for n in names:
        base, _, suffix = n.rpartition(".")
        if base not in locks and "." + suffix in _SUFFIXES[:2]:
            p = os.path.join(directory, n)
            try:
                st = os.lstat(p)
                if st.st_uid == os.geteuid() and time.time() - st.st_mtime > 60:
                    os.unlink(p)
            except OSError:
                pass
    if removed:
        log.debug("node cache: removed %d unused segment(s) in %s", removed, directory)
    return removed


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


def _unlink(base: str) -> None:
    """Delete a segment's files, and this user's directory once it holds nothing else (no file is left on
    the node; the next reader makes the directory again)."""
    for suffix in _SUFFIXES:
        try:
            os.unlink(base + suffix)
        except FileNotFoundError:
            pass
        except OSError as e:  # not ours to delete (a file of another user): skipped, never a crash
            _say_once(logging.WARNING, "unlink:" + base, "node cache: cannot delete %s%s (%s); skipping it",
                      base, suffix, e)
    with contextlib.suppress(OSError):  # not empty: other segments live there
        os.rmdir(os.path.dirname(base))


#: The watcher of one segment, run as ``python -I -S -c _WATCHER <base>``: it forks once (so no process
#: waits to reap it), then waits for an exclusive lock of ``<base>.lock``, which the kernel grants only
#: when every user has let go of it, however each ended (SIGKILL included), and deletes the segment.
#: It repeats :func:`_same_file` and :func:`_unlink` in a few lines on purpose: importing nothing of wirehead
#: (nor numpy), it starts in milliseconds and holds a few MB for as long as the segment lives.
_WATCHER = """
import fcntl, os, sys
base = sys.argv[1]
if os.fork():
    os._exit(0)
os.setsid()
try:
    fd = os.open(base + ".lock", os.O_RDWR | os.O_NOFOLLOW)
except OSError:
    os._exit(0)
fcntl.flock(fd, fcntl.LOCK_EX)
try:
    st, mine = os.stat(base + ".lock"), os.fstat(fd)
    same = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
except OSError:
    same = False
if same:
    for suffix in (".data", ".idx", ".lock"):
        try:
            os.unlink(base + suffix)
        except OSError:
            pass
    try:
        os.rmdir(os.path.dirname(base))
    except OSError:
        pass
"""


#: Started watcher processes not yet reaped: each forks the watcher and exits at once (see ``_WATCHER``).
_starters: list[subprocess.Popen] = []
_starters_lock = threading.Lock()


def _start_watcher(base: str) -> None:
    """Start the process that deletes segment ``base`` once its last user is gone (see ``_WATCHER``).

    Called by the process that creates the segment, while it holds its shared lock.  It returns once the
    starter process runs, not when that has forked the watcher: an interpreter's start-up (10-15 ms) is not
    spent on a read (this is the first read of each generation), and the starter goes on even if this
    process is killed now.  Starters that exited are reaped by the next call.  Where no process can be
    started, segments of dead users are still deleted by the next reader on the node (:func:`sweep`) and by
    ``wirehead clean``.
    """
    with _starters_lock:
        for proc in [p for p in _starters if p.poll() is not None]:
            _starters.remove(proc)
            if proc.returncode:
                _say_once(logging.INFO, "watcher", "node cache: a watcher's starter exited with %s; the next "
                          "reader on this node deletes segments whose users are gone", proc.returncode)
    try:
        env = {k: os.environ[k] for k in ("PATH", "LD_LIBRARY_PATH") if k in os.environ}  # nothing of the job's
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHER, base], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, env=env,
                                cwd="/")
    except (OSError, subprocess.SubprocessError) as e:
        _say_once(logging.INFO, "watcher", "node cache: no watcher process for %s (%s); the next reader on "
                  "this node deletes it when its users are gone", base, e)
        return
    with _starters_lock:
        _starters.append(proc)


def _write_all(fd: int, pieces: Iterable[Any], offset: int) -> None:
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while len(view):
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n


def _read_into(fd: int, buf: np.ndarray, offset: int) -> None:
    view = memoryview(buf).cast("B")
    while len(view):
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            raise OSError(errno.EIO, "node cache segment is shorter than its index says")
        view, offset = view[n:], offset + n


class _Files:
    """The open descriptors of one attachment; closed by :meth:`NodeCache.close`, at exit or in a forked child."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.pid = os.getpid()
        self.lock = self.idx = self.data = -1
        self.mapped: Any = None  # the data file mapped read-only, False where it cannot be

    def close(self, sweep_own: bool) -> None:
        mapped, self.mapped = self.mapped, None
        if mapped:
            try:
                mapped.close()
            except BufferError:  # a view is alive (an exception's traceback): the mapping goes with it
                pass
        for name in ("data", "idx"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)
        fd, self.lock = self.lock, -1
        if fd < 0:
            return
        try:
            if sweep_own and os.getpid() == self.pid:
                try:  # the last user out deletes the segment
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if _same_file(fd, self.base + ".lock"):
                        _unlink(self.base)
                except OSError:
                    pass
        finally:
            os.close(fd)


def _detach(files: _Files) -> None:
    if files.pid == os.getpid():
        files.close(sweep_own=True)


class NodeCache:
    """This process's attachment to one generation's segment of the node cache.  Thread-safe.

    Entries are claimed, published and read by sample id (a member of the generation).  A ready entry
    never changes until the segment is deleted, which cannot happen while this attachment is open.
    Every method raises ``OSError`` only for a broken segment file (callers then read from the server).
    """

    def __init__(self, directory: str, key: str, gen: int, members: Sequence[str], capacity: int,
                 claim_seconds: float) -> None:
        """Attach to (or create) the segment of generation ``gen`` in ``directory``: this user's directory
        (:func:`user_dir`), whose files no other user can plant or replace."""
        self.key = key
        self.gen = gen
        self.members = tuple(members)
        self.claim_seconds = claim_seconds
        mhash = hashlib.sha1("\n".join(self.members).encode()).hexdigest()[:8]
        self.base = os.path.join(directory, f"{key}-g{gen}-{mhash}")
        self._slots = {sid: i for i, sid in enumerate(self.members)}
        self._ready: dict[str, tuple[int, int, Any]] = {}  # sid -> (offset of bytes, stored bytes, meta)
        self._tlock = threading.Lock()
        self._pid = os.getpid()
        self.full = False
        self._files = _Files(self.base)
        try:
            self._open(len(self.members), capacity)
        except BaseException:
            self._files.close(sweep_own=True)
            raise
        self._finalizer = multiprocessing.util.Finalize(self, _detach, args=(self._files,), exitpriority=10)
        _open.add(self)

    def _open(self, n: int, capacity: int) -> None:
        f = self._files
        for _ in range(100):
            fd = open_private(self.base + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:  # a sweeper holds it exclusively only while it deletes
                flock_within(fd, fcntl.LOCK_SH, self.claim_seconds, self.base + ".lock")
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.base + ".lock"):
                f.lock = fd
                break
            os.close(fd)  # swept between our open and our lock: make a new one
        else:
            raise OSError(errno.EAGAIN, f"could not attach to {self.base}.lock")
        f.idx = open_private(self.base + ".idx", os.O_RDWR | os.O_CREAT, 0o600)
        f.data = open_private(self.base + ".data", os.O_RDWR | os.O_CREAT, 0o600)
        with self._mutex():
            head = os.pread(f.idx, _HEADER.size, 0)
            created = len(head) < _HEADER.size or head[:8] != _MAGIC
            if created:
                os.ftruncate(f.idx, _HEADER.size + n * _ENTRY.size)  # zeros: every entry empty
                os.ftruncate(f.data, capacity)  # sparse: pages are reserved as samples arrive
                os.pwrite(f.idx, _HEADER.pack(_MAGIC, n, capacity, 0, 0), 0)
                self.capacity = capacity
            else:
                _, slots, self.capacity, _, full = _HEADER.unpack(head)
                if slots != n:
                    raise OSError(errno.EINVAL, f"{self.base}.idx holds {slots} slots, the generation {n}")
                self.full = bool(full)
        if created:
            _start_watcher(self.base)  # outside the index lock: other readers need not wait for it

    # -- locking and entries ---------------------------------------------------------
    class _Mutex:
        def __init__(self, cache: "NodeCache") -> None:
            self.cache = cache

        def __enter__(self) -> None:
            self.cache._tlock.acquire()
            try:
                flock_within(self.cache._files.idx, fcntl.LOCK_EX, self.cache.claim_seconds, self.cache.base + ".idx")
            except BaseException:
                self.cache._tlock.release()
                raise

        def __exit__(self, *exc: Any) -> None:
            try:
                fcntl.flock(self.cache._files.idx, fcntl.LOCK_UN)
            finally:
                self.cache._tlock.release()

    def _mutex(self) -> "NodeCache._Mutex":
        if self._files.idx < 0:
            raise OSError(errno.EBADF, f"node cache segment {self.base} is closed")
        return NodeCache._Mutex(self)

    def _entry(self, slot: int) -> tuple[int, int, float, int, int, int]:
        return _ENTRY.unpack(os.pread(self._files.idx, _ENTRY.size, _HEADER.size + slot * _ENTRY.size))

    def _set(self, slot: int, *entry: Any) -> None:
        os.pwrite(self._files.idx, _ENTRY.pack(*entry), _HEADER.size + slot * _ENTRY.size)

    # -- the protocol ----------------------------------------------------------------
    def acquire(self, sids: Sequence[str]) -> dict[str, str]:
        """For each sample id: READY, MINE (claimed now by this process: fetch it, then :meth:`publish`
        or :meth:`release` it), BUSY (another reader fetches it: :meth:`wait`) or NOFIT."""
        out: dict[str, str] = {}
        found: list[tuple[str, int, int, int]] = []
        now = time.time()
        me = os.getpid()
        with self._mutex():
            for sid in sids:
                if sid in self._ready:
                    out[sid] = READY
                    continue
                slot = self._slots[sid]
                state, pid, since, offset, size, metalen = self._entry(slot)
                if state == _READY:
                    out[sid] = READY
                    found.append((sid, offset, size, metalen))
                elif state == _NOFIT:
                    out[sid] = NOFIT
                elif state == _CLAIMED and now - since < self.claim_seconds and pid_alive(pid):
                    out[sid] = BUSY
                elif self.full:
                    self._set(slot, _NOFIT, 0, 0.0, 0, 0, 0)
                    out[sid] = NOFIT
                else:  # empty, or its claimer is dead or late: ours now
                    self._set(slot, _CLAIMED, me, now, 0, 0, 0)
                    out[sid] = MINE
        for sid, offset, size, metalen in found:
            meta = json.loads(os.pread(self._files.data, metalen, offset))
            self._ready[sid] = (offset + metalen, size, meta)
        return out

    def publish(self, sid: str, meta: Any, chunks: Sequence[Any], size: int) -> bool:
        """Store a sample this process claimed; False when it does not fit (its entry then says so) or
        the claim was taken over meanwhile (then the other reader's copy counts)."""
        try:
            head = json.dumps(meta).encode()
        except (TypeError, ValueError):
            self.release(sid)
            return False
        slot, me, need = self._slots[sid], os.getpid(), len(head) + size
        with self._mutex():
            state, pid, since, _, _, _ = self._entry(slot)
            if state != _CLAIMED or pid != me:
                return False
            _, _, capacity, used, _ = _HEADER.unpack(os.pread(self._files.idx, _HEADER.size, 0))
            offset = -(-used // _ALIGN) * _ALIGN
            fits = offset + need <= capacity
            if fits:
                try:  # reserve the pages now: a full /dev/shm is ENOSPC here, never a SIGBUS later
                    os.posix_fallocate(self._files.data, offset, need)
                except OSError as e:
                    log.info("node cache %s is full at %d MiB (%s); later samples are read per process",
                             self.base, offset >> 20, e)
                    fits = False
            if not fits:
                self.full = True
                os.pwrite(self._files.idx, _HEADER.pack(_MAGIC, len(self.members), capacity, used, 1), 0)
                self._set(slot, _NOFIT, 0, 0.0, 0, 0, 0)
                return False
            os.pwrite(self._files.idx, _HEADER.pack(_MAGIC, len(self.members), capacity, offset + need, 0), 0)
            self._set(slot, _CLAIMED, me, since, offset, 0, 0)
        _write_all(self._files.data, [head, *chunks], offset)
        with self._mutex():
            state, pid, _, at, _, _ = self._entry(slot)
            if state != _CLAIMED or pid != me or at != offset:
                return False  # taken over while we wrote: the bytes stay unused until the segment goes
            self._set(slot, _READY, 0, 0.0, offset, size, len(head))
        self._ready[sid] = (offset + len(head), size, meta)
        return True

    def release(self, sid: str) -> None:
        """Give up a claim (the sample could not be fetched whole): another reader may try."""
        slot = self._slots[sid]
        with self._mutex():
            state, pid, _, _, _, _ = self._entry(slot)
            if state == _CLAIMED and pid == os.getpid():
                self._set(slot, _EMPTY, 0, 0.0, 0, 0, 0)

    def wait(self, sids: Sequence[str], deadline: float) -> None:
        """Return when an entry of ``sids`` is no longer claimed by a live, punctual reader, or at
        ``deadline`` (``time.monotonic()``)."""
        pause = 0.001
        while time.monotonic() < deadline:
            with self._mutex():
                now = time.time()
                for sid in sids:
                    state, pid, since, _, _, _ = self._entry(self._slots[sid])
                    if state != _CLAIMED or now - since >= self.claim_seconds or not pid_alive(pid):
                        return
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.02)

    def ready(self) -> int:
        """How many samples of the generation the segment holds now."""
        return self.usage()[0]

    def usage(self) -> tuple[int, int]:
        """``(samples, stored bytes)`` the segment holds now (ready entries, by every reader of the node)."""
        with self._mutex():
            raw = os.pread(self._files.idx, len(self.members) * _ENTRY.size, _HEADER.size)
        ready = [e for e in _ENTRY.iter_unpack(raw) if e[0] == _READY]
        return len(ready), sum(e[4] for e in ready)

    def read(self, sid: str, mapped: bool = False) -> tuple[Any, np.ndarray]:
        """``(meta, stored bytes)`` of a READY sample: a fresh writable array, one copy (a memcpy from the
        shared pages mapped read-only; ``preadv`` where they cannot be mapped).

        ``mapped``: a sample of at least ``_PRIVATE_MIN`` bytes is a copy-on-write mapping of its shared
        pages instead (no copy: a page is copied only if the caller writes to it; its ready bytes never
        change).  For callers that drop it soon (a DataLoader collates it into a batch): while the
        mapping lives, the whole segment stays in memory, also after the generation retires."""
        offset, size, meta = self._ready[sid]
        if mapped and size >= _PRIVATE_MIN:
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            try:
                pages = mmap.mmap(self._files.data, offset - start + size, mmap.MAP_PRIVATE,
                                  mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
            except (OSError, ValueError) as e:
                log.debug("node cache %s: no private mapping of %s (%s); copying it", self.base, sid, e)
            else:
                return meta, np.frombuffer(pages, dtype=np.uint8, count=size, offset=offset - start)
        buf = np.empty(size, dtype=np.uint8)
        mapped = self._map()
        if mapped is not None:
            buf[:] = np.frombuffer(mapped, dtype=np.uint8, count=size, offset=offset)
        else:
            _read_into(self._files.data, buf, offset)
        return meta, buf

    def _map(self) -> Optional[mmap.mmap]:
        """The data file mapped read-only (made once; its size never changes, so no access faults)."""
        if self._files.mapped is None and self.capacity > 0:
            with self._tlock:
                if self._files.mapped is None:
                    try:
                        self._files.mapped = mmap.mmap(self._files.data, self.capacity, mmap.MAP_SHARED,
                                                       mmap.PROT_READ)
                    except (OSError, ValueError) as e:
                        log.debug("node cache %s cannot be mapped (%s); reading it with preadv", self.base, e)
                        self._files.mapped = False
        return self._files.mapped or None

    def close(self) -> None:
        """Detach; the last user out deletes the segment.  Idempotent."""
        self._finalizer()

    def __repr__(self) -> str:
        return f"NodeCache({self.base!r}, capacity={self.capacity})"


def _after_fork_in_child() -> None:
    """A forked child does not own its parent's attachments: close the inherited descriptors (the
    parent keeps its locks) so that the child's own attachments decide when segments go."""
    for cache in list(_open):
        f = cache._files
        f.mapped = None  # the child's copy of the mapping goes with the objects that hold it
        for name in ("data", "idx", "lock"):
            fd = getattr(f, name)
            if fd >= 0:
                setattr(f, name, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass
    _open.clear()
    global _starters_lock
    _starters_lock = threading.Lock()  # another thread may have held it at the fork
    _starters.clear()  # the parent's children: not this process's to reap


os.register_at_fork(after_in_child=_after_fork_in_child)
